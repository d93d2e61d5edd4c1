"""The hatchway-linksocks command line: flags, defaults, LINKSOCKS_* variables, processes (cases 22, 51, 54, 55)."""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import ls_harness as h
import pytest

from hatchway.linksocks import Server
from hatchway.linksocks.args import argv_with_mode, build_parser
from helpers import wait_until_blocking


def parse(argv, environ=None):
    environ = environ or {}
    return build_parser(environ).parse_args(argv_with_mode(argv, environ))


def test_server_defaults():
    args = parse(["server"])
    assert (args.ws_host, args.ws_port, args.token, args.connector_token) == ("0.0.0.0", 8765, None, None)
    assert (args.socks_host, args.socks_port, args.buffer_size) == ("127.0.0.1", 9870, 1048576)
    assert not any((args.reverse, args.connector_autonomy, args.socks_nowait, args.fast_open))
    assert (args.debug, args.api_key, args.upstream_proxy) == (0, None, None)
    assert (args.connector_wait_provider, args.transport_grace, args.wire_version) == (5.0, 30.0, 1)


def test_server_every_flag():
    args = parse(["server", "-H", "127.0.0.1", "-P", "1", "-t", "T", "-c", "C", "-a", "-b", "4096", "-r",
                  "-s", "::1", "-p", "2", "-n", "u", "-w", "p", "-i", "-dd", "-k", "K", "-x", "socks5://h:1",
                  "-f", "--connector-wait-provider", "7s", "--transport-grace", "1m",
                  "--access-rule", "10.0.0.0/8:22", "--access-rule", "1.2.3.4:80",
                  "--direct-enable", "--direct-rendezvous-udp", "--direct-rendezvous-host", "x",
                  "--direct-rendezvous-port", "3", "--wire-version", "0x02"])
    assert (args.ws_host, args.ws_port, args.token, args.connector_token, args.buffer_size) == (
        "127.0.0.1", 1, "T", "C", 4096)
    assert args.connector_autonomy and args.reverse and args.socks_nowait and args.fast_open
    assert (args.socks_host, args.socks_port, args.socks_username, args.socks_password) == ("::1", 2, "u", "p")
    assert (args.debug, args.api_key, args.upstream_proxy) == (2, "K", "socks5://h:1")
    assert (args.connector_wait_provider, args.transport_grace) == (7.0, 60.0)
    assert args.access_rule == ["10.0.0.0/8:22", "1.2.3.4:80"] and args.wire_version == 2


@pytest.mark.parametrize("command", ["client", "provider", "connector"])
def test_client_defaults_and_flags(command):
    args = parse([command])
    assert (args.token, args.url, args.socks_host, args.socks_port, args.threads) == (
        "anonymous", "ws://localhost:8765", "127.0.0.1", 9870, 1)
    assert not any((args.reverse, args.socks_no_wait, args.no_reconnect, args.retry_auth, args.no_env_proxy))
    assert args.direct_mode == "auto" and args.transport_grace == 30.0
    args = parse([command, "-t", "T", "-u", "h:1", "-r", "-c", "C", "-s", "0.0.0.0", "-p", "5", "-n", "u",
                  "-w", "p", "-i", "-R", "--retry-auth", "-d", "-T", "4", "-x", "http://p:8", "-f", "-E",
                  "--transport-grace", "0", "--access-rule", "*:443", "--direct-mode", "relay-only",
                  "--direct-discovery", "server", "--direct-host-candidates", "never", "--stun-server", "s:1",
                  "--direct-only-action", "refuse", "--direct-upnp", "--direct-upnp-lease", "30m",
                  "--direct-upnp-keep", "--direct-upnp-external-port", "9", "-b", "65536"])
    assert (args.token, args.url, args.connector_token, args.socks_port, args.threads) == ("T", "h:1", "C", 5, 4)
    assert args.reverse and args.socks_no_wait and args.no_reconnect and args.retry_auth and args.no_env_proxy
    assert (args.debug, args.upstream_proxy, args.transport_grace, args.buffer_size) == (1, "http://p:8", 0.0, 65536)


def test_environment_variables():
    env = {
        "LINKSOCKS_WEBSOCKET_HOST": "127.0.0.2", "LINKSOCKS_WEBSOCKET_PORT": "1234", "LINKSOCKS_TOKEN": "envtok",
        "LINKSOCKS_CONNECTOR_TOKEN": "envconn", "LINKSOCKS_CONNECTOR_AUTONOMY": "true",
        "LINKSOCKS_SOCKS_HOST": "127.0.0.3", "LINKSOCKS_SOCKS_PORT": "4321", "LINKSOCKS_SOCKS_USERNAME": "eu",
        "LINKSOCKS_SOCKS_PASSWORD": "ep", "LINKSOCKS_API_KEY": "ek", "LINKSOCKS_UPSTREAM_PROXY": "socks5://u:1",
        "LINKSOCKS_FASTOPEN": "1", "LINKSOCKS_URL": "ws://e:1", "LINKSOCKS_RETRY_AUTH": "true",
    }
    server = parse(["server"], env)
    assert (server.ws_host, server.ws_port, server.token, server.connector_token) == (
        "127.0.0.2", 1234, "envtok", "envconn")
    assert server.connector_autonomy and server.fast_open
    assert (server.socks_host, server.socks_port, server.socks_username, server.socks_password) == (
        "127.0.0.3", 4321, "eu", "ep")
    assert (server.api_key, server.upstream_proxy) == ("ek", "socks5://u:1")
    client = parse(["client"], env)
    assert (client.token, client.url, client.retry_auth, client.fast_open) == ("envtok", "ws://e:1", True, True)
    assert parse(["client", "-t", "flag"], env).token == "flag"  # the command line wins


@pytest.mark.parametrize("mode,command", [("server", "server"), ("client", "client"), ("forward", "client"),
                                          ("connector", "connector"), ("provider", "provider"),
                                          ("reverse", "provider")])
def test_linksocks_mode_selects_the_subcommand(mode, command):
    assert parse([], {"LINKSOCKS_MODE": mode}).command == command
    assert parse(["-t", "x"], {"LINKSOCKS_MODE": mode}).command == command
    assert parse(["server"], {"LINKSOCKS_MODE": mode}).command == "server"


def run(*argv, env=None):
    return subprocess.run(h.hatchway_argv(*argv), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **h.HATCHWAY_ENV, **(env or {})})


GO_VERSION = re.compile(r"hatchway-linksocks version v\d+\.\d+\.\d+\S* linux/(amd64|arm64|386|arm|ppc64le|s390x|riscv64)\n")


@pytest.mark.parametrize("argv", [["version"], ["--version"]])
def test_version_in_gos_shape(argv):
    out = run(*argv)
    assert out.returncode == 0 and GO_VERSION.fullmatch(out.stdout), out.stdout
    assert "glibc" not in out.stdout and "musl" not in out.stdout


def test_no_arguments_print_the_help_and_exit_0():
    out = run(env={"LINKSOCKS_MODE": ""})
    assert out.returncode == 0 and out.stdout.startswith("usage: hatchway-linksocks") and out.stderr == ""


@pytest.mark.parametrize("argv,start", [
    (["server", "--bogus"], "Error: unknown flag: --bogus"),
    (["client", "-Z"], "Error: unknown shorthand flag: 'Z' in -Z"),
    (["server", "-P", "abc"], 'Error: invalid argument "abc" for "-P, --ws-port" flag'),
    (["bogus"], 'Error: unknown command "bogus" for "hatchway-linksocks"'),
    (["client", "--transport-grace", "30"], 'Error: invalid argument "30" for "--transport-grace" flag: time: '
                                            "missing unit"),
    (["client", "--direct-mode", "bogus"], 'Error: invalid argument "bogus" for "--direct-mode" flag'),
    (["client", "--fast-open=yes"], 'Error: invalid argument "yes" for "--fast-open" flag'),
    (["server", "-k", "key", "--access-rule", "1.2.3.4:80"], "Error: --access-rule cannot be used together"),
])
def test_usage_errors_are_one_line_and_exit_1(argv, start):
    out = run(*argv)
    assert out.returncode == 1
    assert out.stderr.startswith(start) and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""


def test_booleans_take_true_and_false():
    assert parse(["client", "--fast-open=true"]).fast_open is True
    assert parse(["client", "--fast-open=false"], {"LINKSOCKS_FASTOPEN": "true"}).fast_open is False
    assert parse(["server", "-r=false", "-a=true"]).reverse is False
    assert parse(["client", "--retry-auth=True", "-R=1"]).no_reconnect is True


def test_durations_need_a_unit():
    assert parse(["client", "--transport-grace", "1m30s"]).transport_grace == 90.0
    assert parse(["server", "--connector-wait-provider", "0"]).connector_wait_provider == 0.0


@pytest.mark.parametrize("argv", [["client", "--help"], ["--help"], ["--version"], ["version"], ["help", "client"]])
def test_another_subcommands_broken_variable_breaks_nothing_else(argv):
    broken = {"LINKSOCKS_WEBSOCKET_PORT": "abc", "LINKSOCKS_API_KEY": "k"}
    assert run(*argv, env=broken).returncode == 0
    assert parse(["client"], broken).socks_port == 9870


def test_a_broken_variable_of_the_running_subcommand_is_one_line_naming_it():
    out = run("server", env={"LINKSOCKS_WEBSOCKET_PORT": "abc"})
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "LINKSOCKS_WEBSOCKET_PORT" in out.stderr and "--ws-port" in out.stderr
    out = run("client", "-R", env={"LINKSOCKS_FASTOPEN": "yes"})
    assert out.returncode == 1 and "LINKSOCKS_FASTOPEN" in out.stderr and 'parsing "yes"' in out.stderr


def test_help_command_and_completion():
    out = run("help", "server")
    assert out.returncode == 0 and out.stdout.startswith("usage: hatchway-linksocks server")
    assert "Examples:" in out.stdout
    for shell in ("bash", "zsh", "fish", "powershell"):
        out = run("completion", shell)
        assert out.returncode == 0 and "ws-port" in out.stdout and "provider" in out.stdout, shell


def test_help_documents_ready_exit_status_and_examples():
    out = run("--help")
    assert "READY" in out.stdout and "Exit status:" in out.stdout and "Examples:" in out.stdout
    assert "--log-format" in run("server", "--help").stdout


def imported(log):
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("argv", [["--version"], ["version"], ["--help"], ["server", "--help"], ["help", "client"]])
def test_version_and_help_import_no_networking(argv):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "hatchway.linksocks", *argv], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **h.HATCHWAY_ENV})
    assert out.returncode == 0
    modules = imported(out.stderr)
    assert "hatchway.linksocks.cli" in modules  # the probe sees the program's imports
    assert not {"aiohttp", "ssl", "asyncio", "socket", "msgspec", "uvloop"} & modules


def test_a_server_run_imports_no_client_machinery(procs):
    port = h.free_port()
    server = procs.start([sys.executable, "-X", "importtime", "-m", "hatchway.linksocks", "server", "-H", "127.0.0.1",
                          "-P", str(port), "-t", "t"], "server", dict(h.HATCHWAY_ENV))
    server.wait_output("READY linksocks server")
    assert server.stop() == 0
    modules = imported(server.output())
    assert "hatchway.linksocks.server" in modules
    assert not {"hatchway.linksocks.client", "hatchway.common.reconnect"} & modules


def test_a_client_that_gives_up_ends_with_one_error_line_and_imports_no_server(procs):
    port = h.free_port()  # nothing listens there
    client = procs.start([sys.executable, "-X", "importtime", "-m", "hatchway.linksocks", "client", "-R", "-u",
                          f"ws://127.0.0.1:{port}", "-p", str(h.free_port())], "client", dict(h.HATCHWAY_ENV))
    assert client.popen.wait(30) == 1
    log = client.output()
    modules = imported(log)
    assert "hatchway.linksocks.client" in modules
    # the server's token registry and its API belong to a server run (link.py needs tokens.Role only for typing)
    assert not {"hatchway.linksocks.server", "hatchway.linksocks.api", "hatchway.linksocks.tokens",
                "hatchway.linksocks.api_bodies", "hatchway.linksocks.connector_relay"} & modules
    last = [line for line in log.splitlines() if not line.startswith("import time:")][-1]
    assert "ERROR" in last and f"cannot connect to ws://127.0.0.1:{port}" in last
    assert "ssl:default" not in last


def test_json_logs_and_ready_line(procs):
    port = h.free_port()
    server = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(port), "-t", "t", "--log-format", "JSON",
                            name="json")
    server.wait_output('"ready":true')
    assert server.stop() == 0
    entries = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    ready = next(entry for entry in entries if entry.get("ready"))
    assert ready["msg"] == f"READY linksocks server ws://127.0.0.1:{port}"
    assert (ready["role"], ready["url"]) == ("server", f"ws://127.0.0.1:{port}")
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)


def test_cli_server_serves_a_go_client(procs, peer110, target):
    ws_port, socks = h.free_port(), h.free_port()
    server = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "clitok", name="server")
    server.wait_output("READY linksocks server")
    procs.start(peer110.linksocks("client", "-t", "clitok", "-u", f"ws://127.0.0.1:{ws_port}", "-s", "127.0.0.1",
                                  "-p", str(socks), "--direct-mode", "relay-only"), "go-client")
    h.wait_port(socks, 30)
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    assert server.stop() == 0  # SIGTERM: graceful, exit 0


def test_linksocks_mode_provider_from_the_environment(procs, eng, target):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    socks = h.free_port()
    eng.sync(server.add_reverse_token, "envrev", port=socks)
    procs.hatchway(name="provider", env={"LINKSOCKS_MODE": "provider", "LINKSOCKS_TOKEN": "envrev",
                                          "LINKSOCKS_URL": f"ws://127.0.0.1:{server.ws_address[1]}"})
    h.wait_port(socks, 30)
    assert h.echo_roundtrip(socks, target.port, b"from env") == b"from env"


def test_wrong_token_exits_unless_retry_auth(procs, eng):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    url = f"ws://127.0.0.1:{server.ws_address[1]}"
    failing = procs.hatchway("client", "-t", "nope", "-u", url, "-p", str(h.free_port()), name="failing")
    assert failing.popen.wait(30) == 1
    assert "invalid token" in failing.output()
    retrying = procs.hatchway("client", "-t", "nope", "-u", url, "--retry-auth", "-p", str(h.free_port()),
                              name="retrying")
    wait_until_blocking(lambda: retrying.output().count("invalid token") >= 2, timeout=20, what="a second attempt")
    assert retrying.alive()


def test_no_reconnect_client_exits_when_the_server_goes(procs, target):
    ws_port = h.free_port()
    server = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "t", name="server")
    server.wait_output("READY")
    client = procs.hatchway("client", "-t", "t", "-u", f"ws://127.0.0.1:{ws_port}", "-p", str(h.free_port()),
                            "-R", name="client")
    client.wait_output("READY")
    server.stop()
    assert client.popen.wait(30) == 0


def test_api_key_creates_no_tokens(procs):
    ws_port = h.free_port()
    server = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-k", "key", "-t", "ignored",
                            name="api")
    server.wait_output("READY")
    request = urllib.request.Request(f"http://127.0.0.1:{ws_port}/api/status", headers={"X-API-Key": "key"})
    with urllib.request.urlopen(request, timeout=10) as response:
        status = json.loads(response.read())
    assert status["tokens"] == [] and status["direct"] == {"enabled": False}
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        urllib.request.urlopen(f"http://127.0.0.1:{ws_port}/api/status", timeout=10)
    assert unauthorized.value.code == 401
    with urllib.request.urlopen(f"http://127.0.0.1:{ws_port}/", timeout=10) as response:
        assert b"/api/*" in response.read()


def test_a_busy_port_is_one_error_line_and_exit_1(procs):
    port = h.free_port()
    first = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(port), "-t", "t", name="first")
    first.wait_output("READY")
    second = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(port), "-t", "t", name="second")
    assert second.popen.wait(30) == 1
    assert second.output().strip().splitlines()[-1].endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert first.stop() == 0


def test_tokens_the_user_gave_are_logged_as_fingerprints(procs):
    port = h.free_port()
    given = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(port), "-t", "secret-token-1", "-r", "-c",
                           "secret-conn-2", "-p", str(h.free_port()), name="given")
    given.wait_output("READY")
    assert given.stop() == 0
    log = given.output()
    assert "secret-token-1" not in log and "secret-conn-2" not in log and log.count("token: sha256:") == 2
    port = h.free_port()
    generated = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(port), name="generated")
    generated.wait_output("READY")
    assert generated.stop() == 0
    assert re.search(r"token: (?!sha256:)\S{16}$", generated.output(), re.MULTILINE)  # the only way to learn it


def test_stall_timeout_option():
    assert parse(["server"]).stall_timeout == 10.0
    assert parse(["client", "--stall-timeout", "2s"]).stall_timeout == 2.0
    assert parse(["client"], {"HATCHWAY_LINKSOCKS_STALL_TIMEOUT": "0"}).stall_timeout == 0.0
