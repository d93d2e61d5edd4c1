"""hatchway-hostproxy against the private dockerd (spec 13.3 layer 3):

* the Engine API contract suite (tests/hostproxy/engine_contract.py) runs against the real engine with
  labelled busybox containers, exactly as it runs against the fake engine, so the fake stays honest;
* ``docker exec -i`` carries binary data with NUL bytes unchanged (case 74);
* the socket bridge through ``docker exec -i`` of the static helper binary (dist/hatchway-hostproxy in a
  FROM scratch image with static busybox): ``ssh-add -l`` on the container's agent socket (reached from
  the host through a bind mount) lists the host ssh-agent's key;
* the daemon, pointed at the real engine, exits once its last agent container stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pkgtest_helpers import REPO, wait_for

pytestmark = [pytest.mark.container]

sys.path.insert(0, str(REPO / "tests" / "hostproxy"))
from engine_contract import run_contract  # noqa: E402

IMAGE = "hatchway-hostproxy-test:latest"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
LONG = ["/busybox", "sleep", "3600"]


@pytest.fixture(scope="module")
def hp_image(dockerd, static_binary) -> Any:
    """FROM scratch: static busybox + the static hatchway-hostproxy, classic builder, no pull."""
    ctx = Path(tempfile.mkdtemp(prefix="hostproxy-image-"))
    try:
        shutil.copy(BUSYBOX, ctx / "busybox")
        shutil.copy(static_binary("hostproxy"), ctx / "hatchway-hostproxy")
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY busybox /busybox\nCOPY hatchway-hostproxy "
                                        "/usr/local/bin/hatchway-hostproxy\n")
        dockerd.run("build", "-q", "-t", IMAGE, str(ctx), env={**dockerd.env, "DOCKER_BUILDKIT": "0"}, timeout=300)
    finally:
        shutil.rmtree(ctx)
    return dockerd


@pytest.fixture
def containers(hp_image) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    if made:
        hp_image.run("rm", "-f", *made, timeout=120, check=False)


def run_labelled(docker: Any, made: list[str], name: str, labels: dict[str, str], *extra: str) -> str:
    args = ["run", "-d", "--network", "none"]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    cid = docker.run(*args, *extra, IMAGE, *LONG).stdout.decode().strip()
    made.append(cid)
    return cid


def socket_path(docker: Any) -> str:
    return str(docker.host).removeprefix("unix://")


async def test_engine_contract_against_real_dockerd(hp_image, containers) -> None:
    async def make(name: str, labels: dict[str, str], running: bool) -> str:
        cid = run_labelled(hp_image, containers, name, labels)
        if not running:
            hp_image.run("stop", "-t", "0", cid)
        return cid

    await run_contract(socket_path(hp_image), make)


def test_docker_exec_carries_nul_bytes(hp_image, containers) -> None:
    cid = run_labelled(hp_image, containers, "cat", {})
    data = bytes(range(256)) * 512 + b"\0\0\0"
    out = subprocess.run([*hp_image.cmd("exec", "-i", cid, "/busybox", "cat")], input=data, env=hp_image.env,
                         capture_output=True, timeout=60, check=True).stdout
    assert out == data


@pytest.fixture
def ssh_agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    sock = str(tmp_path / "agent.sock")
    key = str(tmp_path / "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "container-bridge-key", "-f", key], check=True)
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        wait_for(lambda: os.path.exists(sock) and subprocess.run(["ssh-add", "-l"], env=env,
                                                                 capture_output=True).returncode in (0, 1),
                 "ssh-agent answers", timeout=20)
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
        yield sock, subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, check=True).stdout.decode().strip()
    finally:
        agent.terminate()
        agent.wait()


async def test_bridge_through_docker_exec(hp_image, containers, ssh_agent, tmp_path: Path) -> None:
    from hatchway.hostproxy.bridge import HostBridge

    host_sock, listed = ssh_agent
    shared = tmp_path / "shared"
    shared.mkdir()
    entries = json.dumps([{"path": "/sockets/agent.sock", "type": "ssh-agent"}])
    cid = run_labelled(hp_image, containers, "bridge", {}, "-v", f"{shared}:/sockets",
                       "-e", f"CLAWKER_REMOTE_SOCKETS={entries}")
    os.environ["DOCKER_HOST"] = hp_image.host
    try:
        bridge = HostBridge([*hp_image.cmd("exec", "-i", cid, "/usr/local/bin/hatchway-hostproxy", "socket-server")],
                            ssh_socket=host_sock, ready_timeout=60)
        await bridge.start()
        try:
            proc = await asyncio.create_subprocess_exec(
                "ssh-add", "-l", env={**os.environ, "SSH_AUTH_SOCK": str(shared / "agent.sock")},
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert proc.returncode == 0 and out.decode().strip() == listed
        finally:
            await bridge.stop()
    finally:
        os.environ.pop("DOCKER_HOST", None)


def test_daemon_exits_when_the_last_agent_stops(hp_image, containers, tmp_path: Path) -> None:
    agent = run_labelled(hp_image, containers, "agent", {"dev.clawker.managed": "true", "dev.clawker.purpose": "agent"})
    run_labelled(hp_image, containers, "mon", {"dev.clawker.managed": "true", "dev.clawker.purpose": "monitoring"})
    env = {**os.environ, "DOCKER_HOST": hp_image.host, "CLAWKER_STATE_DIR": str(tmp_path / "state")}
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen([sys.executable, "-m", "hatchway.hostproxy", "serve", "--port", str(port), "--bind",
                               "127.0.0.1", "--grace-period", "0.2", "--poll-interval", "0.2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert daemon.stdout is not None
        assert daemon.stdout.readline().startswith(b"READY")
        wait_for(lambda: os.path.exists(tmp_path / "state" / "pids" / "hostproxy.pid"), "PID file", timeout=20)
        assert daemon.poll() is None
        hp_image.run("stop", "-t", "0", agent)
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
