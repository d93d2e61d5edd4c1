"""The socket bridge over a local pipe pair: a fake ``docker`` runs the real socket server (spec 13.5),
and a real ssh-agent (Debian openssh-client) answers ``ssh-add -l`` from the container side (cases 55-57, 75,
77, 89)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from hatchway.hostproxy.bridge import BridgeError, HostBridge
from helpers import wait_until_blocking


@pytest.fixture
def fake_docker(tmp_path: Any) -> str:
    """``docker exec -i <id> CMD...`` runs CMD here (with this process's environment)."""
    path = tmp_path / "docker"
    path.write_text('#!/bin/sh\n[ "$1" = exec ] && [ "$2" = -i ] || exit 2\nshift 3\nexec "$@"\n')
    path.chmod(0o755)
    return str(path)


SERVER = [sys.executable, "-m", "hatchway.hostproxy", "socket-server"]


@pytest.fixture
def ssh_agent(tmp_path: Any) -> Iterator[tuple[str, str]]:
    """A real ssh-agent with one ed25519 key; yields (socket, the key's fingerprint line)."""
    sock = str(tmp_path / "agent.sock")
    key = str(tmp_path / "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bridge-test-key", "-f", key], check=True)
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        wait_until_blocking(lambda: os.path.exists(sock) and subprocess.run(
            ["ssh-add", "-l"], env=env, capture_output=True).returncode in (0, 1), what="ssh-agent answers")
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
        listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True, check=True).stdout.decode().strip()
        yield sock, listed
    finally:
        agent.terminate()
        agent.wait()


def container_env(monkeypatch: pytest.MonkeyPatch, entries: list[dict[str, str]]) -> None:
    monkeypatch.setenv("CLAWKER_REMOTE_SOCKETS", json.dumps(entries))


async def test_ssh_add_lists_the_host_agents_keys(tmp_path: Any, fake_docker: str, ssh_agent: tuple[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    host_sock, listed = ssh_agent
    inside = str(tmp_path / "ctr-home" / ".ssh" / "agent.sock")
    container_env(monkeypatch, [{"path": inside, "type": "ssh-agent"}])
    bridge = HostBridge([fake_docker, "exec", "-i", "ctr", *SERVER], ssh_socket=host_sock)
    await bridge.start()
    try:
        assert stat.S_IMODE(os.stat(inside).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(inside)).st_mode) == 0o700
        for _ in range(3):  # several streams, one after another
            proc = await asyncio.create_subprocess_exec("ssh-add", "-l", env={**os.environ, "SSH_AUTH_SOCK": inside},
                                                        stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert proc.returncode == 0 and out.decode().strip() == listed and "bridge-test-key" in listed
        procs = [await asyncio.create_subprocess_exec("ssh-add", "-l", env={**os.environ, "SSH_AUTH_SOCK": inside},
                                                      stdout=asyncio.subprocess.PIPE) for _ in range(5)]
        outs = await asyncio.gather(*(p.communicate() for p in procs))  # concurrent streams
        assert all(o.decode().strip() == listed for o, _ in outs)
        assert bridge.proto.streams == {} or all(s for s in bridge.proto.streams)  # closed streams forgotten
    finally:
        await bridge.stop()
        await bridge.stop()  # twice is safe


async def test_immediate_eof_fails_start(tmp_path: Any) -> None:
    bridge = HostBridge(["true"])
    with pytest.raises(BridgeError, match="bridge exited before READY"):
        await bridge.start()


async def test_missing_socket_list_is_an_error(fake_docker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAWKER_REMOTE_SOCKETS", raising=False)
    with pytest.raises(BridgeError, match="bridge exited before READY"):
        await HostBridge([fake_docker, "exec", "-i", "c", *SERVER]).start()


async def test_gpg_entry_without_host_key_reaches_ready(tmp_path: Any, fake_docker: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    gnupg = tmp_path / "home" / ".gnupg"
    container_env(monkeypatch, [{"path": str(gnupg / "S.gpg-agent"), "type": "gpg-agent"},
                                {"path": str(tmp_path / "home" / ".ssh" / "agent.sock"), "type": "ssh-agent"}])
    bridge = HostBridge([fake_docker, "exec", "-i", "c", *SERVER], pubkey=b"")  # no GPG key on the host
    await bridge.start()
    try:
        assert stat.S_IMODE(os.stat(gnupg).st_mode) == 0o700
        for name, content in (("pubring.kbx", b""), ("gpg.conf", b"no-autostart\n"),
                              ("gpg-agent.conf", b"no-grab\ndisable-scdaemon\n")):
            assert (gnupg / name).read_bytes() == content
            assert stat.S_IMODE(os.stat(gnupg / name).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(gnupg / "S.gpg-agent").st_mode) == 0o600
        # no gpg socket on the host: the stream is closed, the bridge goes on
        reader, writer = await asyncio.open_unix_connection(str(gnupg / "S.gpg-agent"))
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    finally:
        await bridge.stop()


async def test_upstream_host_without_pubkey_fails_within_timeout(tmp_path: Any, fake_docker: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that never sends PUBKEY (upstream's deadlock): the container gives up, Start fails; no hang."""
    from hatchway.hostproxy.socketserver import serve_sockets

    monkeypatch.setenv("CLAWKER_REMOTE_SOCKETS", json.dumps([{"path": str(tmp_path / "g" / "S"), "type": "gpg-agent"}]))
    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    try:
        code = await serve_sockets(stdin=to_server_r, stdout=from_server_w, pubkey_timeout=0.2)
        assert code == 1
        written = os.read(from_server_r, 4096)
        assert written[4] == 6 and b"no PUBKEY" in written  # an ERROR frame
    finally:
        for fd in (to_server_r, to_server_w, from_server_r, from_server_w):
            os.close(fd)


def test_ssh_agent_check(ssh_agent: tuple[str, str], tmp_path: Any) -> None:
    from hatchway.hostproxy.bridge import check_ssh_agent

    assert check_ssh_agent({}) == "SSH_AUTH_SOCK is not set"
    assert "not reachable" in (check_ssh_agent({"SSH_AUTH_SOCK": str(tmp_path / "none.sock")}) or "")
    assert check_ssh_agent({"SSH_AUTH_SOCK": ssh_agent[0]}) is None


def test_widen_pipe_gives_a_frame_sized_pipe() -> None:
    import fcntl

    from hatchway.common.pump import widen_pipe
    from hatchway.hostproxy.bridgelink import PIPE_SIZE

    r, w = os.pipe()
    try:
        assert widen_pipe(w, PIPE_SIZE) is True
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) >= PIPE_SIZE  # one pipe buffer, seen from both ends
        assert widen_pipe(-1, PIPE_SIZE) is False  # not a descriptor: left alone, no error
    finally:
        os.close(r)
        os.close(w)
