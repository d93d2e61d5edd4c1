"""The hatchway-agent release image (FROM scratch, dist/hatchway-agent.tar) on the private dockerd, as
PID 1 of the container with a static busybox (Debian busybox-static) as its main process: exec works
through the client library, orphans are reaped, ``docker stop`` reaches the main process as SIGTERM
through the agent, and the container's exit code is the main process's."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from pathlib import Path

import pytest
from pkgtest_helpers import VERSION, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))

from hatchway.agent.client import AgentClient  # noqa: E402

pytestmark = [pytest.mark.container]

IMAGE = f"hatchway/agent:{VERSION}"
TOKEN = "container-token"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
MAIN = ("trap '/busybox echo got TERM; exit 7' TERM; /busybox echo main-ready; "
        "while :; do /busybox sleep 1 & wait $!; done")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def agent_image(dockerd, image_archive):
    out = dockerd.run("load", "-i", str(image_archive("agent")), timeout=300).stdout.decode()
    assert f"Loaded image: {IMAGE}" in out, out
    return dockerd


def zombies_and_orphans(ps_text: str) -> tuple[int, int]:
    """(zombies, processes other than PID 1 and the main shell) from `cat /proc/[0-9]*/stat`."""
    zombies = others = 0
    for line in ps_text.splitlines():
        if not line.strip():
            continue
        pid = int(line.split()[0])
        state = line.rsplit(")", 1)[1].split()[0]
        zombies += state == "Z"
        others += pid != 1
    return zombies, others


async def exercise(port: int) -> None:
    async with AgentClient.connect(f"127.0.0.1:{port}", TOKEN) as client:
        hello = await client.collect(["/busybox", "echo", "hello from exec"])
        assert (hello.stdout, hello.code) == (b"hello from exec\n", 0)
        pid1 = await client.collect(["/busybox", "cat", "/proc/1/cmdline"])
        assert b"hatchway-agent" in pid1.stdout or b"-keep-alive" in pid1.stdout
        env = await client.collect(["/busybox", "env"])
        assert TOKEN.encode() not in env.stdout
        for _ in range(10):  # each leaves an orphan for PID 1; our own children keep their codes
            result = await client.collect(["/busybox", "sh", "-c", "(/busybox sleep 0.3 </dev/null >/dev/null 2>&1 &); exit 42"])
            assert result.code == 42
        assert (await client.collect(["/busybox", "sh", "-c", "kill -KILL $$"])).code == 137
        tty = await client.exec(["/busybox", "sh", "-c", "tty -s && echo tty-ok"], tty=True)
        out = b"".join([chunk.data async for chunk in tty.events()])
        assert out == b"tty-ok\r\n" and tty.code == 0
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            ps = await client.collect(["/busybox", "sh", "-c", "cat /proc/[0-9]*/stat"])
            zombies, others = zombies_and_orphans(ps.stdout.decode())
            # left: the main shell, its sleep, and the sh running this very check (plus its cat)
            if zombies == 0 and others <= 4:
                break
            assert asyncio.get_running_loop().time() < deadline, f"orphans not reaped: {ps.stdout.decode()}"
            await client.collect(["/busybox", "sleep", "0.2"])


def test_agent_as_pid1_in_a_container(agent_image) -> None:
    docker = agent_image
    port = free_port()
    name = f"hw-agent-{port}"
    docker.run("create", "--name", name, "--network", "host", "-e", f"SOCKERLESS_AGENT_TOKEN={TOKEN}", IMAGE,
               "-addr", f"127.0.0.1:{port}", "-keep-alive", "--", "/busybox", "sh", "-c", MAIN)
    try:
        docker.run("cp", BUSYBOX, f"{name}:/busybox")
        docker.run("start", name)
        wait_for(lambda: b"READY agent" in docker.run("logs", name, check=False).stderr, "the agent READY line", 60)
        asyncio.run(exercise(port))
        docker.run("stop", "-t", "20", name, timeout=60)
        code = docker.run("inspect", "-f", "{{.State.ExitCode}}", name).stdout.decode().strip()
        logs = docker.run("logs", name, check=False)
        assert code == "7", logs.stderr.decode()[-3000:]
        assert b"got TERM" in logs.stdout and b"main-ready" in logs.stdout
        assert TOKEN.encode() not in logs.stderr
    finally:
        docker.run("rm", "-f", name, check=False)
