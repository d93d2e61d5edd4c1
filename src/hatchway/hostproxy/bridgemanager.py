"""Host-side lifecycle of per-container socket bridges (spec 8.3): one detached ``bridge`` process each.

``ensure_bridge`` is idempotent (the in-memory table, then the PID file, then a
spawn); the spawned process writes ``<state>/pids/<container>.pid`` itself and
the manager waits for it. Before a bridge is signalled its command line is
checked to name the container (no PID-reuse kill, Linux ``/proc``).
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import subprocess

from .manager import LOG_ROTATE, ManagerError, daemon_command
from .pidfile import is_alive, read_pid
from .statedir import StatePaths

__all__ = ["BridgeManager"]

SPAWN_WAIT = 5.0
SPAWN_POLL = 0.1


def _names(pid: int, container: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return container.encode() in f.read().split(b"\0")
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # no /proc (macOS): trust the PID file
    except OSError:
        return False


class BridgeManager:
    def __init__(self, state_dir: str | None = None, *, command: list[str] | None = None,
                 spawn_wait: float = SPAWN_WAIT) -> None:
        self.paths = StatePaths(state_dir)
        self.command = command
        self.spawn_wait = spawn_wait
        self.bridges: dict[str, int] = {}

    def pid_file(self, container: str) -> str:
        if not container or "/" in container or container.startswith("."):
            raise ValueError(f"bad container id {container!r}")
        return os.path.join(os.path.dirname(self.paths.pid_file), f"{container}.pid")

    async def ensure_bridge(self, container: str, gpg: bool = False) -> int:
        pid = self.bridges.get(container, 0)
        if is_alive(pid):
            return pid
        pid_file = self.pid_file(container)
        pid = read_pid(pid_file)
        if is_alive(pid) and _names(pid, container):
            self.bridges[container] = pid
            return pid
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        child = self._spawn(container, pid_file, gpg)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spawn_wait
        while loop.time() < deadline:
            pid = read_pid(pid_file)
            if pid:
                self.bridges[container] = pid
                return pid
            if child.poll() is not None:
                break
            await asyncio.sleep(SPAWN_POLL)
        if child.poll() is None:
            child.terminate()
        await asyncio.get_running_loop().run_in_executor(None, child.wait)
        raise ManagerError(f"timeout waiting for the bridge PID file {pid_file} after {self.spawn_wait:g}s")

    def _spawn(self, container: str, pid_file: str, gpg: bool) -> subprocess.Popen[bytes]:
        log_file = os.path.join(os.path.dirname(self.paths.log_file), "socketbridge.log")
        try:
            if os.path.getsize(log_file) > LOG_ROTATE:
                os.replace(log_file, log_file + ".1")
        except OSError:
            pass
        argv = [*(self.command or daemon_command()), "bridge", "--container", container, "--pid-file", pid_file]
        if gpg:
            argv.append("--gpg")
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                    cwd=self.paths.root)
        finally:
            os.close(fd)

    def stop_bridge(self, container: str) -> None:
        pid_file = self.pid_file(container)
        pid = self.bridges.pop(container, 0) or read_pid(pid_file)
        if is_alive(pid) and _names(pid, container):
            os.kill(pid, signal.SIGTERM)
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass

    def stop_all(self) -> None:
        pids_dir = os.path.dirname(self.paths.pid_file)
        for path in glob.glob(os.path.join(pids_dir, "*.pid")):
            name = os.path.basename(path)[:-4]
            if name != "hostproxy":
                self.stop_bridge(name)
