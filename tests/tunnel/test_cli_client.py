"""The tunnel client as a process, launched with its real flags (acceptance cases 4-8, 34, 36, 37).

Each client runs as ``python3 -m hatchway.tunnel ...`` on the same event loop
flavour as the test (``HATCHWAY_LOOP``), logs to a file, and is stopped by its
PID at the end.
"""

import asyncio
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

SRC = str(Path(__file__).resolve().parents[2] / "src")
UPGRADE_HEADERS = {"host", "upgrade", "connection", "sec-websocket-version", "sec-websocket-key"}


def client_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "LOG_LEVEL", "RUNNER_URL", "CONTAINER_ID")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if "uvloop" not in type(asyncio.get_running_loop()).__module__:
        env["HATCHWAY_LOOP"] = "asyncio"
    env.update(extra)
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
    for before, after in zip(tunnels, tunnels[1:]):
        await before.wait_ended()
        gap = after.accepted_at - before.ended_at
        assert 0.95 <= gap <= 1.5, gap


async def test_case36_gives_up_after_max_reconnect_failures_plus_one_delay(launch):
    port = closed_port()
    client = await launch("-r", f"ws://127.0.0.1:{port}", "-c", "bench", "--max-reconnect", "3",
                          "--reconnect-delay", "1")
    rc = await client.wait(timeout=15)
    elapsed = asyncio.get_running_loop().time() - client.started_at
    assert rc != 0
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
