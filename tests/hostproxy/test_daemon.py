"""Daemon lifecycle as real processes (cases 39-45, 71, 72, 78-81) and the Manager (37-38)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from fake_engine import FakeEngine

from hatchway.hostproxy.pidfile import DaemonLock, get_daemon_pid, is_alive, lock_holder, read_pid, stop_daemon
from helpers import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemons:
    def __init__(self, tmp_path: Any) -> None:
        self.state = tmp_path / "state"
        self.procs: list[asyncio.subprocess.Process] = []
        self.env = {**os.environ, "CLAWKER_STATE_DIR": str(self.state)}

    async def spawn(self, port: int, *extra: str, docker: str | None = None) -> asyncio.subprocess.Process:
        env = dict(self.env)
        if docker is not None:
            env["DOCKER_HOST"] = f"unix://{docker}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hatchway.hostproxy", "serve", "--port", str(port), "--bind", "127.0.0.1", *extra,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    @property
    def pid_file(self) -> str:
        return str(self.state / "pids" / "hostproxy.pid")

    async def ready(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "daemon exited before READY"
            if line.startswith(b"READY"):
                return

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


@pytest_asyncio.fixture
async def daemons(tmp_path: Any) -> AsyncIterator[Daemons]:
    d = Daemons(tmp_path)
    yield d
    await d.close()


async def health(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/health") as r:
            return dict(await r.json())


async def test_spawn_health_sigterm_removes_pid_file(daemons: Daemons) -> None:
    port = free_port()
    proc = await daemons.spawn(port, "--no-watch")
    await daemons.ready(proc)
    assert await health(port) == {"status": "ok", "service": "clawker-host-proxy"}
    assert read_pid(daemons.pid_file) == proc.pid and os.stat(daemons.pid_file).st_mode & 0o777 == 0o600
    proc.send_signal(signal.SIGTERM)
    assert await wait_until(proc.wait(), what="daemon exit") == 0
    assert not os.path.exists(daemons.pid_file)


async def test_second_daemon_exits_1_and_leaves_the_first_intact(daemons: Daemons) -> None:
    port = free_port()
    first = await daemons.spawn(port, "--no-watch")
    await daemons.ready(first)
    second = await daemons.spawn(port, "--no-watch")
    assert await wait_until(second.wait(), what="second daemon exit") == 1
    assert read_pid(daemons.pid_file) == first.pid and lock_holder(str(daemons.state / "pids" / "hostproxy.lock")) \
        == first.pid
    assert await health(port) == {"status": "ok", "service": "clawker-host-proxy"}
    assert stop_daemon(daemons.pid_file)
    assert await wait_until(first.wait(), what="first daemon exit") == 0


async def test_two_started_at_once_exactly_one_runs(daemons: Daemons) -> None:
    port = free_port()
    a, b = await asyncio.gather(daemons.spawn(port, "--no-watch"), daemons.spawn(port, "--no-watch"))

    def one_exited() -> bool:
        return a.returncode is not None or b.returncode is not None

    done, _ = await asyncio.wait([asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())],
                                 return_when=asyncio.FIRST_COMPLETED, timeout=20)
    assert one_exited()
    loser, winner = (a, b) if a.returncode is not None else (b, a)
    assert loser.returncode == 1 and winner.returncode is None
    await daemons.ready(winner)
    assert read_pid(daemons.pid_file) == winner.pid


async def test_bind_failure_exits_1_without_touching_another_pid_file(daemons: Daemons, tmp_path: Any) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        proc = await daemons.spawn(held.getsockname()[1], "--no-watch")
        assert await wait_until(proc.wait(), what="exit") == 1
        assert not os.path.exists(daemons.pid_file)  # its own file is removed, and only its own
    finally:
        held.close()


@pytest_asyncio.fixture
async def fake(tmp_path: Any) -> AsyncIterator[tuple[FakeEngine, str]]:
    engine = FakeEngine()
    path = str(tmp_path / "docker.sock")
    await engine.start(path)
    yield engine, path
    await engine.aclose()


TIMING = ("--grace-period", "0.2", "--poll-interval", "0.1", "--max-consecutive-errs", "3")


async def test_stays_up_while_an_agent_runs_then_exits(daemons: Daemons, fake: tuple[FakeEngine, str]) -> None:
    engine, path = fake
    agent = engine.add("a", dev__clawker__managed="true", dev__clawker__purpose="agent")
    proc = await daemons.spawn(free_port(), *TIMING, docker=path)
    await daemons.ready(proc)
    await wait_until(lambda: engine.requests >= 4, what="several polls while the agent runs")
    assert proc.returncode is None
    engine.stop(agent)
    assert await wait_until(proc.wait(), what="idle exit") == 0
    assert not os.path.exists(daemons.pid_file)


async def test_monitoring_and_firewall_do_not_keep_it_alive(daemons: Daemons, fake: tuple[FakeEngine, str]) -> None:
    engine, path = fake
    engine.add("m", dev__clawker__managed="true", dev__clawker__purpose="monitoring")
    engine.add("f", dev__clawker__managed="true", dev__clawker__purpose="firewall")
    proc = await daemons.spawn(free_port(), *TIMING, docker=path)
    assert await wait_until(proc.wait(), what="idle exit") == 0


async def test_exits_after_consecutive_docker_errors(daemons: Daemons, fake: tuple[FakeEngine, str]) -> None:
    engine, path = fake
    engine.add("a", dev__clawker__managed="true", dev__clawker__purpose="agent")
    engine.fail_next(1000)
    proc = await daemons.spawn(free_port(), *TIMING, docker=path)
    assert await wait_until(proc.wait(), what="exit after errors") == 0
    assert 3 <= engine.requests


async def test_invalid_flags_exit_1(daemons: Daemons) -> None:
    for extra in (("--poll-interval", "0"), ("--grace-period", "-1"), ("--max-consecutive-errs", "0")):
        proc = await daemons.spawn(free_port(), *extra)
        assert await proc.wait() == 1
    proc = await daemons.spawn(0)
    assert await proc.wait() == 1


# ---------------------------------------------------------------- PID files (sans process spawning)


def test_pid_file_parsing_and_liveness(tmp_path: Any) -> None:
    path = tmp_path / "p.pid"
    for text, pid in (("123\n", 123), ("  42 ", 42), ("garbage", 0), ("", 0), ("-5", 0)):
        path.write_text(text)
        assert read_pid(str(path)) == pid
    assert read_pid(str(tmp_path / "missing")) == 0
    assert is_alive(os.getpid()) and not is_alive(999999999) and not is_alive(0) and not is_alive(-1)
    path.write_text(f"{os.getpid()}\n")
    assert get_daemon_pid(str(path)) == os.getpid()  # trailing newline still reads as running
    path.write_text("999999999")
    assert get_daemon_pid(str(path)) == 0


def test_stop_daemon_missing_stale_and_foreign(tmp_path: Any) -> None:
    pid_file = tmp_path / "hostproxy.pid"
    assert stop_daemon(str(pid_file)) is False
    pid_file.write_text("999999999")
    assert stop_daemon(str(pid_file)) is False and not pid_file.exists()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text(str(sleeper.pid))  # a live process that is not the daemon (no lock held)
        assert stop_daemon(str(pid_file)) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_write_release_round_trip(tmp_path: Any) -> None:
    lock = DaemonLock(str(tmp_path / "l.lock"), str(tmp_path / "p.pid"))
    assert lock.acquire()
    lock.write_pid()
    assert read_pid(str(tmp_path / "p.pid")) == os.getpid()
    lock.release()
    assert not (tmp_path / "p.pid").exists()


async def test_manager(tmp_path: Any, daemons: Daemons) -> None:
    from hatchway.hostproxy.manager import Manager

    with pytest.raises(ValueError):
        Manager(port=0)
    assert Manager().proxy_url() == "http://host.docker.internal:18374"
    port = free_port()
    manager = Manager(port=port, state_dir=str(daemons.state), extra_args=["--no-watch", "--bind", "127.0.0.1"])
    assert not await manager.is_running()
    await manager.stop()  # no-op
    await manager.ensure_running()
    assert await manager.is_running() and await health(port) == {"status": "ok", "service": "clawker-host-proxy"}
    await manager.ensure_running()  # idempotent
    pid = read_pid(daemons.pid_file)
    assert manager.stop_daemon()
    await wait_until(lambda: not os.path.exists(daemons.pid_file), what="daemon removed its PID file")
    # the detached daemon is this test's child: reap it (a CLI would have exited long before)
    _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_token_revoked_on_die_event_and_minted_by_cli(daemons: Daemons, fake: tuple[FakeEngine, str]) -> None:
    """Case 91: a token minted by `hatchway-hostproxy token` works, and stops working after its container's die."""
    engine, path = fake
    agent = engine.add("a", dev__clawker__managed="true", dev__clawker__purpose="agent")
    other = engine.add("b", dev__clawker__managed="true", dev__clawker__purpose="agent")
    minted = {}
    for c in (agent, other):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hatchway.hostproxy", "token", "--container", c.id, "--git-host", "github.com",
            env=daemons.env, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        minted[c.id] = out.decode().strip()
    tokens = daemons.state / "hostproxy" / "tokens.json"
    assert os.stat(tokens).st_mode & 0o777 == 0o600
    port = free_port()
    proc = await daemons.spawn(port, "--grace-period", "600", docker=path)
    await daemons.ready(proc)

    async def status(token: str) -> int:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/callback/register", json={"port": 0},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status

    assert await status(minted[agent.id]) == 400  # admitted (then the port is refused)
    await wait_until(lambda: engine.streams > 0, what="the daemon subscribed to events")
    engine.stop(agent)
    await wait_until(_poll_status(status, minted[agent.id], 401), what="token revoked after die")
    assert await status(minted[other.id]) == 400
    proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def _poll_status(status: Any, token: str, wanted: int) -> bool:
    """Until a request with ``token`` answers ``wanted`` (the event reaches the daemon asynchronously)."""
    while await status(token) != wanted:
        await asyncio.sleep(0.02)  # request pacing, bounded by the caller's wait_until deadline
    return True


async def test_status_and_stop_commands(daemons: Daemons) -> None:
    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hatchway.hostproxy", *args,
                                                    env=daemons.env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    assert await cli("status") == (0, "Host proxy daemon is not running\n")
    port = free_port()
    proc = await daemons.spawn(port, "--no-watch")
    await daemons.ready(proc)
    assert await cli("status") == (0, f"Host proxy daemon is running (PID: {proc.pid})\n")
    code, out = await cli("stop", "--wait", "10s")
    assert code == 0 and out == "Stop signal sent to host proxy daemon\nHost proxy daemon stopped\n"
    assert await proc.wait() == 0
    assert await cli("stop") == (0, "Host proxy daemon is not running\n")


async def test_idle_daemon_runs_one_thread(daemons: Daemons) -> None:
    """Binding 127.0.0.1 does not go through getaddrinfo, whose libuv thread pool would stay for good (RSS)."""
    proc = await daemons.spawn(free_port(), "--no-watch")
    await daemons.ready(proc)
    assert os.listdir(f"/proc/{proc.pid}/task") == [str(proc.pid)]


def test_engine_client_imports_aiohttp_only_when_used() -> None:
    """The engine client loads aiohttp (its client half: 2.8 MB of the static daemon's RSS) at its first Docker
    call, so a daemon without the watcher never does (the static build's aiohttp package import is lazy)."""
    code = ("import asyncio, sys, hatchway.hostproxy.engine as e, hatchway.hostproxy.watcher\n"
            "assert 'aiohttp' not in sys.modules, sorted(m for m in sys.modules if 'aiohttp' in m)\n"
            "async def main():\n"
            "    engine = e.EngineClient('/nonexistent.sock')\n"
            "    try:\n"
            "        await engine.list_containers()\n"
            "    except e.DockerError:\n"
            "        pass\n"
            "    await engine.close()\n"
            "asyncio.run(main())\n"
            "assert 'aiohttp.client' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
