"""The Manager: used by each CLI call; starts the daemon on demand and gives containers the proxy URL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp

from .pidfile import get_daemon_pid, stop_daemon
from .statedir import StatePaths
from .wire import DEFAULT_PORT, SERVICE_NAME

__all__ = ["Manager", "ManagerError"]

SPAWN_WAIT = 3.0
SPAWN_POLL = 0.1
LOG_ROTATE = 10 * 1024 * 1024


class ManagerError(Exception):
    pass


def daemon_command() -> list[str]:
    """``$HATCHWAY_HOSTPROXY_EXECUTABLE`` (or ``$CLAWKER_EXECUTABLE``), else this program."""
    exe = os.environ.get("HATCHWAY_HOSTPROXY_EXECUTABLE") or os.environ.get("CLAWKER_EXECUTABLE")
    if exe:
        return [exe]
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "hatchway.hostproxy"]


class Manager:
    def __init__(self, port: int = DEFAULT_PORT, *, state_dir: str | None = None,
                 extra_args: list[str] | None = None) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"invalid host proxy port {port}: must be between 1 and 65535")
        self.port = port
        self.paths = StatePaths(state_dir)
        self.extra_args = list(extra_args or [])
        self._lock = asyncio.Lock()

    def proxy_url(self) -> str:
        return f"http://host.docker.internal:{self.port}"

    async def _answers_as_clawker(self, timeout: float = 0.5) -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
                async with http.get(f"http://127.0.0.1:{self.port}/health") as r:
                    if r.status != 200:
                        return False
                    body = await r.json(content_type=None)
                    return isinstance(body, dict) and body.get("service") == SERVICE_NAME
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False

    async def is_running(self) -> bool:
        return await self._answers_as_clawker()  # covers "our daemon" (PID + health) and "someone's daemon"

    async def ensure_running(self) -> None:
        async with self._lock:
            if get_daemon_pid(self.paths.pid_file) and await self._answers_as_clawker():
                return
            if await self._answers_as_clawker():
                return
            self._spawn()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SPAWN_WAIT
            while loop.time() < deadline:
                if await self._answers_as_clawker(2.0):
                    return
                await asyncio.sleep(SPAWN_POLL)
            raise ManagerError(f"daemon started but not responding: no healthy answer on port {self.port} "
                               f"within {SPAWN_WAIT:g}s (see {self.paths.log_file})")

    def _spawn(self) -> None:
        log_file = self.paths.log_file
        try:
            if os.path.getsize(log_file) > LOG_ROTATE:
                os.replace(log_file, log_file + ".1")
        except OSError:
            pass
        env = {**os.environ, "CLAWKER_STATE_DIR": self.paths.root}
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            subprocess.Popen(
                [*daemon_command(), "serve", "--port", str(self.port), *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True, env=env,
                cwd=self.paths.root,  # never the project directory
            )
        finally:
            os.close(fd)

    async def stop(self) -> None:
        """Nothing: the daemon stops itself when idle."""

    def stop_daemon(self) -> bool:
        return stop_daemon(self.paths.pid_file, self.paths.lock_file)
