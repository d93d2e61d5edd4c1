"""The host proxy daemon: singleton lock and PID file, the server, the idle watcher, token revocation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from hatchway.common.lifecycle import announce_ready
from hatchway.common.tasks import TaskSet

from .engine import DockerError, EngineClient
from .pidfile import DaemonLock
from .server import HostProxyServer, ServerConfig
from .statedir import StatePaths
from .tokens import TokenRegistry
from .watcher import ContainerLister, WatchEnd, Watcher

__all__ = ["Daemon", "DaemonConfig"]

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 5.0


class DaemonConfig(msgspec.Struct, kw_only=True):
    port: int = 18374
    poll_interval: float = 30.0
    grace_period: float = 60.0
    max_consecutive_errs: int = 10
    watch: bool = True

    def validate(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"invalid port {self.port}: must be between 1 and 65535")
        if self.poll_interval <= 0:
            raise ValueError("poll interval must be positive")
        if self.grace_period < 0:
            raise ValueError("grace period must not be negative")
        if self.max_consecutive_errs <= 0:
            raise ValueError("max consecutive errors must be positive")


class Daemon:
    def __init__(self, config: DaemonConfig, server_config: ServerConfig, *, paths: StatePaths | None = None,
                 lister: ContainerLister | None = None, server: HostProxyServer | None = None) -> None:
        config.validate()
        self.config = config
        self.paths = paths or StatePaths()
        self.lock = DaemonLock(self.paths.lock_file, self.paths.pid_file)
        server_config.port = config.port
        if not server_config.neutral_dir:
            server_config.neutral_dir = self.paths.neutral_dir
        self.server = server or HostProxyServer(server_config, tokens=TokenRegistry(self.paths.tokens_file))
        self.lister = lister
        self.ended: WatchEnd | None = None

    async def run(self) -> int:
        if not self.lock.acquire():
            log.error("another host proxy daemon holds %s; not starting", self.lock.lock_file)
            return 1
        try:
            self.lock.write_pid()
            try:
                await self.server.start()
            except OSError as exc:
                log.error("cannot start the host proxy: %s", exc)
                return 1
            lister = self.lister
            if lister is None and self.config.watch:
                lister = EngineClient()
            async with TaskSet("daemon", logger=log) as tasks:
                watch: asyncio.Task[WatchEnd] | None = None
                if lister is not None and self.config.watch:
                    watcher = Watcher(lister, grace_period=self.config.grace_period,
                                      poll_interval=self.config.poll_interval,
                                      max_consecutive_errs=self.config.max_consecutive_errs)
                    watch = tasks.spawn(watcher.run(), name="watcher")
                    if isinstance(lister, EngineClient):
                        tasks.spawn(self._revoke_on_death(lister), name="token revocation")
                announce_ready(f"host proxy on port {self.server.port}", port=self.server.port)
                try:
                    if watch is not None:
                        self.ended = await watch
                        log.info("exiting: %s", self.ended.value)
                    else:
                        await asyncio.Event().wait()
                finally:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self.server.aclose()), SHUTDOWN_BUDGET)
                    if lister is not None:
                        await lister.close()
            return 0
        finally:
            self.lock.release()

    async def _revoke_on_death(self, engine: EngineClient) -> None:
        """Revoke a container's tokens on its die/destroy event (reconnecting while the daemon runs)."""
        filters = {"type": ["container"], "event": ["die", "destroy"]}
        while True:
            try:
                async for event in engine.events(filters):
                    if event.container_id and self.server.tokens.revoke_container(event.container_id):
                        log.info("tokens of container %s revoked (%s)", event.container_id[:12], event.Action)
            except DockerError as exc:
                log.debug("docker events: %s", exc)
            await asyncio.sleep(self.config.poll_interval)
