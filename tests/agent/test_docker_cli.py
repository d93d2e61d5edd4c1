"""The real ``docker`` CLI (Debian docker.io) against a small Engine-API exec endpoint that bridges through
hatchway's client library to a running agent: ``docker exec -i`` and, under a pseudo-terminal,
``docker exec -it``: output, stdin, exit codes, error text and resize arrive as Docker users expect."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import struct
import termios
from collections.abc import AsyncIterator

import pytest
from agentproc import AgentProcess
from engineapi import EngineApi

from hatchway.agent.client import AgentClient
from helpers import wait_until

DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker") or "docker"


@pytest.fixture
async def engine(tmp_path) -> AsyncIterator[tuple[EngineApi, dict[str, str]]]:
    async with AgentProcess(["-addr", "127.0.0.1:0", "-keep-alive", "--", "sleep", "300"], token="t") as agent:
        async with AgentClient.connect(agent.addr, "t") as client:
            path = str(tmp_path / "docker.sock")
            async with EngineApi(client, path) as api:
                env = dict(os.environ, DOCKER_HOST=f"unix://{path}", DOCKER_CONFIG=str(tmp_path / "cfg"))
                yield api, env


async def docker(env: dict[str, str], *args: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        DOCKER, *args, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_docker_exec_i(engine) -> None:
    api, env = engine
    assert await docker(env, "exec", "-i", "c1", "sh", "-c", "cat; echo err >&2; exit 5",
                        stdin=b"hello stdin\n") == (5, b"hello stdin\n", b"err\n")
    assert await docker(env, "exec", "c1", "sh", "-c", "cat; echo done") == (0, b"done\n", b"")  # no -i: no stdin
    code, out, err = await docker(env, "exec", "c1", "no-such-command")
    assert code == 127 and b'exec: "no-such-command": executable file not found in $PATH' in err
    code, _, _ = await docker(env, "exec", "c1", "sh", "-c", "kill -TERM $$")
    assert code == 143
    code, out, _ = await docker(env, "exec", "-e", "A=b", "-w", "/tmp", "-u", "nobody", "c1", "sh", "-c",
                                "echo $A $(pwd) $(id -un)")
    assert (code, out) == (0, b"b /tmp nobody\n")
    big = os.urandom(3 * 1024 * 1024)
    code, out, _ = await docker(env, "exec", "-i", "c1", "cat", stdin=big)
    assert code == 0 and out == big
    assert any("/exec/" in r and r.endswith("/json") for r in api.requests)


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def test_docker_exec_it_under_a_pty(engine) -> None:
    api, env = engine
    master, slave = os.openpty()
    set_size(slave, 40, 120)
    proc = await asyncio.create_subprocess_exec(
        DOCKER, "exec", "-it", "c1", "sh", "-c",
        "tty -s && echo is-a-tty; stty size; read x; stty size; read y; echo got:$y; exit 6",
        env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    loop = asyncio.get_running_loop()
    output = bytearray()
    grew = asyncio.Event()

    def readable() -> None:
        try:
            output.extend(os.read(master, 65536))
        except OSError:
            loop.remove_reader(master)
        grew.set()

    loop.add_reader(master, readable)
    try:
        async def until(text: bytes) -> None:
            while text not in output:
                grew.clear()
                await asyncio.wait_for(grew.wait(), 20)

        await until(b"40 120")
        assert b"is-a-tty" in output
        set_size(master, 50, 100)
        proc.send_signal(signal.SIGWINCH)
        await wait_until(lambda: (100, 50) in api.resizes, what="the CLI's resize")
        os.write(master, b"\r")
        await until(b"50 100")
        os.write(master, b"abc\r")
        await until(b"got:abc")
        assert await asyncio.wait_for(proc.wait(), 20) == 6
    finally:
        loop.remove_reader(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
