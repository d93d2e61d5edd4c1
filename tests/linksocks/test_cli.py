"""The hatchway-linksocks command line: flags, defaults, LINKSOCKS_* variables, processes (cases 22, 51, 54, 55)."""

import json
import subprocess
import urllib.error
import urllib.request

import pytest

import ls_harness as h
from hatchway.linksocks import Server
from hatchway.linksocks.args import argv_with_mode, build_parser


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
        "LINKSOCKS_FASTOPEN": "1", "LINKSOCKS_URL": "ws://e:1", "LINKSOCKS_RETRY_AUTH": "yes",
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


def test_version_subcommand():
    out = subprocess.run(h.hatchway_argv("version"), capture_output=True, text=True, timeout=30,
                         env={**__import__("os").environ, **h.HATCHWAY_ENV})
    assert out.returncode == 0 and out.stdout.startswith("hatchway-linksocks version ")


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
    h.wait_until(lambda: retrying.output().count("invalid token") >= 2, 20, "a second attempt")
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


def test_api_key_creates_no_tokens_and_refuses_access_rules(procs):
    refused = procs.hatchway("server", "-k", "key", "--access-rule", "1.2.3.4:80", name="refused")
    assert refused.popen.wait(30) == 2
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
