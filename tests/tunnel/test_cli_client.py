"""The tunnel client as a process, launched with its real flags (acceptance cases 4-8, 34, 36, 37).

Each client runs as ``python3 -m hatchway.tunnel ...`` on the same event loop
flavour as the test (``HATCHWAY_LOOP``), logs to a file, and is stopped by its
PID at the end.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_runner import FakeRunner
from local_services import closed_port

from hatchway.tunnel.args import build_parser
from hatchway.tunnel.cli import client_log_level
from hatchway.tunnel.protocol import MsgType
from helpers import wait_until

SRC = str(Path(__file__).resolve().parents[2] / "src")
UPGRADE_HEADERS = {"host", "upgrade", "connection", "sec-websocket-version", "sec-websocket-key"}


def plain_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "LOG_LEVEL", "RUNNER_URL", "CONTAINER_ID")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def client_env(**extra):
    env = plain_env(**extra)
    if "uvloop" not in type(asyncio.get_running_loop()).__module__:
        env["HATCHWAY_LOOP"] = "asyncio"
    return env


class ClientProcess:
    def __init__(self, tmp_path, *args, **env):
        self.args = args
        self.env = env
        self.log_path = tmp_path / f"client-{os.getpid()}-{id(self)}.log"
        self.proc = None
        self.started_at = 0.0

    async def start(self):
        self.started_at = asyncio.get_running_loop().time()
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hatchway.tunnel", *self.args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=client_env(**self.env),
            )
        return self

    @property
    def log(self):
        return self.log_path.read_text(errors="replace")

    async def wait(self, timeout):
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def stop(self):
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


@pytest.fixture
async def runner():
    fake = await FakeRunner().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def launch(tmp_path):
    processes = []

    async def start(*args, **env):
        process = await ClientProcess(tmp_path, *args, **env).start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        await process.stop()


async def test_case4_7_8_url_rule_handshake_headers_and_liveness(runner, launch):
    client = await launch("--runner-url", f"{runner.url}/", "--container-id", "bench", "--log-level", "warn")
    peer = await runner.next_tunnel(timeout=10)
    assert peer.raw_path == "/ws/tunnel/bench"  # case 4: slash stripped, no query added
    assert peer.query_string == ""
    # Case 7: a bare RFC 6455 upgrade: no subprotocol, no extensions, no auth, no User-Agent/Origin.
    assert {name.decode().lower() for name in peer.header_names} == UPGRADE_HEADERS
    await peer.ping(3)
    await peer.expect(MsgType.PONG, 3)
    # Case 8: still alive 1 s after start.
    await asyncio.sleep(max(0.0, client.started_at + 1.0 - asyncio.get_running_loop().time()))
    assert client.proc.returncode is None
    assert "warn" not in client.log.lower()  # a plain base URL draws no warning


async def test_case5_env_vars_instead_of_flags_and_rust_log_wins(runner, launch):
    client = await launch(
        RUNNER_URL=runner.url, CONTAINER_ID="env-id", RECONNECT_DELAY="0", MAX_RECONNECT="0",
        LOG_LEVEL="error", RUST_LOG="info",
    )
    peer = await runner.next_tunnel(timeout=10)
    assert peer.raw_path == "/ws/tunnel/env-id"
    await peer.close()  # reconnect-delay 0 from the env: the next tunnel follows at once
    await runner.next_tunnel(timeout=5)
    assert "tunnel connected" in client.log  # an INFO line: RUST_LOG=info beat LOG_LEVEL=error


def test_case5_env_vars_fill_every_client_option():
    environ = {"RUNNER_URL": "ws://r:1", "CONTAINER_ID": "c", "RECONNECT_DELAY": "7", "MAX_RECONNECT": "3",
               "LOG_LEVEL": "debug"}
    args = build_parser(environ).parse_args([])
    assert (args.runner_url, args.container_id, args.reconnect_delay, args.max_reconnect, args.log_level) == (
        "ws://r:1", "c", 7, 3, "debug")
    args = build_parser(environ).parse_args(["-r", "ws://x:2", "-c", "d", "--reconnect-delay", "1"])
    assert (args.runner_url, args.container_id, args.reconnect_delay) == ("ws://x:2", "d", 1)


def test_case5_rust_log_overrides_log_level(monkeypatch):
    args = build_parser({}).parse_args(["-r", "ws://r:1", "-c", "c", "--log-level", "warn"])
    monkeypatch.delenv("RUST_LOG", raising=False)
    assert client_log_level(args) == "warn"
    monkeypatch.setenv("RUST_LOG", "tunnel_client=debug")
    assert client_log_level(args) == "tunnel_client=debug"


def test_case5_help_version_and_missing_flags():
    env = {**os.environ, "PYTHONPATH": SRC}
    for flag in ("-h", "--help"):
        shown = subprocess.run([sys.executable, "-m", "hatchway.tunnel", flag], env=env, capture_output=True,
                               text=True, timeout=30)
        assert shown.returncode == 0
        assert all(opt in shown.stdout for opt in ("--runner-url", "--container-id", "--reconnect-delay",
                                                    "--max-reconnect", "--log-level", "RUNNER_URL"))
    for flag in ("-V", "--version"):
        shown = subprocess.run([sys.executable, "-m", "hatchway.tunnel", flag], env=env, capture_output=True,
                               text=True, timeout=30)
        assert shown.returncode == 0 and shown.stdout.startswith("hatchway-tunnel ")
    env.pop("RUNNER_URL", None)
    env.pop("CONTAINER_ID", None)
    missing = subprocess.run([sys.executable, "-m", "hatchway.tunnel"], env=env, capture_output=True, text=True,
                             timeout=30)
    assert missing.returncode == 2 and "--runner-url" in missing.stderr


async def test_case6_runner_url_with_a_path_gets_it_doubled_and_a_warning(runner, launch):
    client = await launch("-r", f"{runner.url}/ws/tunnel/", "-c", "bench", "--log-level", "info")
    peer = await runner.next_tunnel(timeout=10)
    assert peer.raw_path == "/ws/tunnel/ws/tunnel/bench"
    await peer.ping(1)
    await peer.expect(MsgType.PONG, 1)
    assert "WARNING" in client.log and "has a path or query" in client.log


async def test_case34_reconnect_delay_after_a_server_side_close(runner, launch):
    runner.behaviour = "close"
    await launch("-r", runner.url, "-c", "bench", "--reconnect-delay", "1")
    tunnels = [await runner.next_tunnel(timeout=10)]
    for _ in range(2):
        tunnels.append(await runner.next_tunnel(timeout=5))
    for before, after in zip(tunnels, tunnels[1:], strict=False):
        await before.wait_ended()
        gap = after.accepted_at - before.ended_at
        assert 0.95 <= gap <= 1.5, gap


async def test_case36_gives_up_after_max_reconnect_failures_plus_one_delay(launch):
    port = closed_port()
    client = await launch("-r", f"ws://127.0.0.1:{port}", "-c", "bench", "--max-reconnect", "3",
                          "--reconnect-delay", "1")
    rc = await client.wait(timeout=15)
    elapsed = asyncio.get_running_loop().time() - client.started_at
    assert rc == 1
    assert client.log.count("cannot connect") == 3  # three attempts, one second apart
    assert 3.0 <= elapsed <= 6.0  # three delays (the last one after the third attempt), plus start-up


async def test_case37_successful_handshakes_reset_the_counter(runner, launch):
    runner.behaviour = "close"
    client = await launch("-r", runner.url, "-c", "bench", "--max-reconnect", "1", "--reconnect-delay", "0")
    for _ in range(5):
        await runner.next_tunnel(timeout=10)
    assert client.proc.returncode is None


async def test_sigterm_closes_the_websocket_with_a_close_frame_and_exits_0(runner, launch):
    client = await launch("-r", runner.url, "-c", "bench")
    peer = await runner.next_tunnel(timeout=10)
    await peer.ping(1)
    await peer.expect(MsgType.PONG, 1)  # up and serving
    client.proc.send_signal(signal.SIGTERM)
    assert await client.wait(timeout=10) == 0
    await peer.wait_ended()
    assert peer.client_close_code == 1000


# --- drop-in fidelity (issue 11) and start-up (issue 7) --------------------------------------------------------


@pytest.mark.parametrize("level", ["DEBUG", "warning", "info,tunnel=debug", "Trace", "tunnel_client=warn"])
def test_log_level_takes_any_tracing_filter(level):
    args = build_parser({}).parse_args(["-r", "ws://r:1", "-c", "c", "--log-level", level])
    assert args.log_level == level
    assert build_parser({"LOG_LEVEL": level}).parse_args(["-r", "ws://r:1", "-c", "c"]).log_level == level


def test_token_and_log_format_options():
    args = build_parser({"HATCHWAY_TUNNEL_TOKEN": "envtok", "HATCHWAY_LOG_FORMAT": "JSON"}).parse_args(
        ["-r", "ws://r:1", "-c", "c"])
    assert (args.token, args.log_format) == ("envtok", "json")
    args = build_parser({}).parse_args(["-r", "ws://r:1", "-c", "c", "--token", "t", "--log-format", "text"])
    assert (args.token, args.log_format) == ("t", "text")
    runner = build_parser({"HATCHWAY_RUNNER_ALLOW_TOKENLESS_TUNNELS": "yes"}).parse_args(["runner", "--token", "t"])
    assert (runner.token, runner.allow_tokenless_tunnels, runner.log_format) == ("t", True, "text")
    assert build_parser({}).parse_args(["runner"]).allow_tokenless_tunnels is False


def test_a_client_variable_does_not_break_the_runner():
    broken = {"MAX_RECONNECT": "abc", "RECONNECT_DELAY": "x"}
    assert build_parser(broken).parse_args(["runner", "--port", "1"]).port == 1
    with pytest.raises(SystemExit) as exc:
        build_parser(broken).parse_args(["-r", "ws://r:1", "-c", "c"])
    assert exc.value.code == 2


def imported(log):
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("argv", [["--version"], ["-V"], ["--help"], ["runner", "--help"], ["forward", "--help"]])
def test_version_and_help_import_no_networking(argv):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "hatchway.tunnel", *argv], capture_output=True,
                         text=True, timeout=60, env=plain_env())
    assert out.returncode == 0
    modules = imported(out.stderr)
    assert "hatchway.tunnel.cli" in modules
    assert not {"aiohttp", "ssl", "asyncio", "socket", "msgspec", "uvloop"} & modules


SERVER_MACHINERY = {"aiohttp.web", "aiohttp.web_app", "aiohttp.web_ws", "hatchway.common.wsserver", "hatchway.common.httpapi"}
CLIENT_MACHINERY = {"hatchway.common.wsclient", "hatchway.common.reconnect", "hatchway.tunnel.client",
                    "hatchway.tunnel.session"}


@pytest.mark.parametrize(("module", "forbidden"), [
    ("hatchway.tunnel.client", SERVER_MACHINERY),
    ("hatchway.tunnel.forward", SERVER_MACHINERY),
    ("hatchway.tunnel.runner", CLIENT_MACHINERY),
])
def test_each_side_imports_only_its_own_websocket_half(module, forbidden):
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, timeout=60, env=plain_env())
    assert out.returncode == 0, out.stderr[-2000:]
    modules = imported(out.stderr)
    assert module in modules and "hatchway.common.wsconn" in modules
    assert not forbidden & modules


def test_usage_error_exits_2():
    out = subprocess.run([sys.executable, "-m", "hatchway.tunnel", "-r", "ws://r:1", "-c", "c", "--bogus"],
                         capture_output=True, text=True, timeout=60, env=plain_env())
    assert out.returncode == 2 and "--bogus" in out.stderr


async def test_client_run_logs_json_and_imports_no_runner(runner, tmp_path):
    log_path = tmp_path / "json-client.log"
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "importtime", "-m", "hatchway.tunnel", "-r", runner.url, "-c", "bench",
            "--log-level", "WARNING", "--log-format", "json",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=client_env())
    try:
        await runner.next_tunnel(timeout=10)
        await wait_until(lambda: '"ready":true' in log_path.read_text(), what="the JSON READY line")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log_path.read_text()
    modules = imported(text)
    assert "hatchway.tunnel.client" in modules
    assert not {"hatchway.tunnel.runner", "hatchway.tunnel.forward", "hatchway.tunnel.registry"} & modules
    assert not SERVER_MACHINERY & modules  # a client run imports no server half
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(entry.get("ready") for entry in entries)
    assert not [entry for entry in entries if entry["level"] == "info" and not entry.get("ready")]  # WARNING applied
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)


async def test_token_flag_and_env_send_a_bearer_header(runner, launch):
    await launch("-r", runner.url, "-c", "bench", "--token", "flagtok")
    peer = await runner.next_tunnel(timeout=10)
    assert peer.headers.get("Authorization") == "Bearer flagtok"
    await launch("-r", runner.url, "-c", "bench2", HATCHWAY_TUNNEL_TOKEN="envtok")
    peer = await runner.next_tunnel(timeout=10)
    assert peer.headers.get("Authorization") == "Bearer envtok"
