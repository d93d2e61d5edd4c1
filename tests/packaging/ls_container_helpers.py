"""Helpers of tests/packaging/test_linksocks_container.py: the LinkSocks Go peer (from
tests/linksocks/ls_harness.py), a containerised program whose log goes to a file, a TCP echo
service on loopback and a SHA-256-checked transfer through a SOCKS5 proxy."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib: make tests/linksocks importable (its conftest does the same).
_LINKSOCKS_TESTS = str(Path(__file__).resolve().parents[1] / "linksocks")
if _LINKSOCKS_TESTS not in sys.path:
    sys.path.insert(0, _LINKSOCKS_TESTS)

import ls_harness
from pkgtest_helpers import wait_for  # noqa: F401  (re-exported for the tests)

PEER110_PACKAGES = ["linksocks==1.10.1", "pywssocks==1.5.1"]


def peer110() -> ls_harness.Peer:
    """The linksocks 1.10.1 venv: $HATCHWAY_PEER110, else .venv-peer110 (created when missing)."""
    path = os.environ.get("HATCHWAY_PEER110") or os.path.join(ls_harness.REPO, ".venv-peer110")
    return ls_harness.Peer(ls_harness.ensure_peer_venv(path, PEER110_PACKAGES))


class Container:
    """``docker run --rm --name NAME ...`` in the foreground: the container's output goes to a file,
    so the READY line can be read without polling the daemon and the log survives the container."""

    def __init__(self, docker, name: str, args: list[str], log: Path):
        self.docker, self.name, self.log = docker, name, log
        with open(log, "wb") as out:  # the docker client keeps its own descriptor
            self.proc = subprocess.Popen(docker.cmd("run", "--rm", "--name", name, *args), env=docker.env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"container {self.name} exited {self.proc.returncode}:\n{self.output()[-3000:]}")

    def wait_ready(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """Wait for the program's ``READY ...`` line (lifecycle.announce_ready) matching ``pattern``."""
        regex = re.compile(pattern)
        return wait_for(lambda: regex.search(self.output()), f"{pattern!r} from container {self.name}",
                        timeout, alive=[self.check_running])

    def uids(self) -> list[str]:
        """Real, effective, saved and filesystem uid of the container's main process."""
        pid = self.docker.run("inspect", "-f", "{{.State.Pid}}", self.name).stdout.decode().strip()
        status = Path(f"/proc/{pid}/status").read_text()
        return next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))

    def stop(self) -> int | None:
        """docker stop (SIGTERM, then SIGKILL after 10 s); returns the container's exit code."""
        if self.proc.poll() is None:
            self.docker.run("stop", "-t", "10", self.name, check=False, timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.docker.run("rm", "-f", self.name, check=False, timeout=60)
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class EchoService:
    """A TCP echo on 127.0.0.1 (the transfer's destination); records the bytes echoed per connection."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.echoed: list[int] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket):
        n, buf = 0, bytearray(256 * 1024)
        view = memoryview(buf)
        try:
            with conn:
                while True:
                    k = conn.recv_into(buf)
                    if k == 0:
                        break
                    conn.sendall(view[:k])
                    n += k
        except OSError as exc:
            self.errors.append(exc)
        self.echoed.append(n)

    def close(self):
        """Stop accepting (shutdown wakes the blocked accept(); close alone does not) and join."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for thread in self.threads:
            thread.join(timeout=30)


def socks5_connect(proxy_port: int, host: str, port: int, timeout: float) -> socket.socket:
    sock, _ = ls_harness.socks_connect(proxy_port, host, port, timeout=timeout)
    return sock


def echo_transfer(proxy_port: int, target_port: int, payload: bytes, timeout: float = 60.0) -> tuple[float, int, str]:
    """SOCKS5 CONNECT to the echo, send ``payload`` from a thread while this one reads and hashes
    what comes back. Returns (seconds, bytes received, SHA-256 hex of them)."""
    sock = socks5_connect(proxy_port, "127.0.0.1", target_port, timeout)
    errors: list[BaseException] = []
    t0 = time.monotonic()
    with sock:

        def send():
            try:
                sock.sendall(payload)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        digest, n, buf = hashlib.sha256(), 0, bytearray(256 * 1024)
        deadline = t0 + timeout
        while n < len(payload):
            assert time.monotonic() < deadline, f"transfer not done in {timeout} s ({n} of {len(payload)} bytes back)"
            k = sock.recv_into(buf)
            assert k, f"connection closed after {n} of {len(payload)} echoed bytes"
            digest.update(memoryview(buf)[:k])
            n += k
        sender.join(timeout=max(1.0, deadline - time.monotonic()))
        assert not sender.is_alive(), "the sender did not finish"
        assert errors == [], errors
        return time.monotonic() - t0, n, digest.hexdigest()
