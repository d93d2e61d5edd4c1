"""The agent as one embeddable service: server or reverse mode, main process, health checks.

``async with Agent(AgentConfig(...)) as agent: code = await agent.wait()``.

When the main process exits (both modes, Docker's semantics): its output is
drained, every attacher gets its ``exit``, every connection is closed
politely after it, and :meth:`Agent.wait` returns the main process's code
(128+N for signal N), which the CLI exits with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

import msgspec

from hatchway.common.lifecycle import Fatal, Service
from hatchway.common.reaper import Reaper
from hatchway.common.tasks import TaskSet

from .health import HealthChecker, HealthConfig
from .mainproc import MainProcess
from .protocol import HealthState
from .runtime import AgentRuntime
from .spawn import ChildSpec, SpawnError, child_environment

if TYPE_CHECKING:
    from hatchway.common.httpapi import HttpServer

    from .reverse import ReverseDialer

__all__ = ["Agent", "AgentConfig"]

log = logging.getLogger("hatchway.agent")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGWINCH)


# Agents embedded without a reaper of their own share one per process: a SIGCHLD handler is process-wide,
# and several reapers installed and removed out of order would leave a stale one behind.
_SHARED_REAPER = Reaper()
_shared_users: dict[asyncio.AbstractEventLoop, int] = {}


def _use_shared_reaper(loop: asyncio.AbstractEventLoop, delta: int) -> None:
    count = _shared_users.get(loop, 0) + delta
    if count > 0:
        if delta > 0 and count == 1:
            _SHARED_REAPER.install(loop)
        _shared_users[loop] = count
    else:
        _shared_users.pop(loop, None)
        _SHARED_REAPER.uninstall(loop)


class AgentConfig(msgspec.Struct, kw_only=True):
    addr: str = ":9111"
    callback: str = ""
    keep_alive: bool = False
    argv: list[str] = []
    tty: bool = False
    token: str = ""
    health: HealthConfig | None = None
    reverse_retries: int = 0  # 0: unlimited
    retry_initial: float = 1.0
    retry_max: float = 30.0
    heartbeat: float = 20.0
    copy_output: bool = True  # main process output also to the agent's own stdout/stderr
    environ: dict[str, str] | None = None  # the children's base environment (default: the agent's)


class Agent(Service):
    def __init__(self, config: AgentConfig, *, reaper: Reaper | None = None) -> None:
        self.config = config
        self._own_reaper = reaper is None
        self.reaper = reaper if reaper is not None else _SHARED_REAPER
        environ = dict(os.environ) if config.environ is None else dict(config.environ)
        self.main: MainProcess | None = None
        if config.keep_alive:
            argv = config.argv or ["/bin/sh"]
            self.main = MainProcess(ChildSpec(argv=argv, env=child_environment(environ, tty=config.tty),
                                              tty=config.tty, new_group=False),
                                    self.reaper, copy_output=config.copy_output)
        self.health: HealthChecker | None = None
        if config.health is not None and config.health.enabled:
            self.health = HealthChecker(config.health, self.reaper, environ, on_change=self._health_changed)
        self.runtime = AgentRuntime(self.reaper, environ, main=self.main, health=self.health)
        self.server: HttpServer | None = None
        self.dialer: ReverseDialer | None = None
        self._tasks = TaskSet("agent", logger=log)  # health checks, reverse dialer
        self._main_tasks = TaskSet("agent main process", logger=log)  # closed last: the main process outlives the rest
        self._main_task: asyncio.Task[None] | None = None
        self._dialer_task: asyncio.Task[None] | None = None
        self._done: asyncio.Future[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port) in server mode."""
        assert self.server is not None
        first = self.server.addresses[0]
        assert isinstance(first, tuple)
        return first

    async def start(self) -> Agent:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        if self._own_reaper:
            _use_shared_reaper(loop, +1)
        config = self.config
        if self.main is not None:
            try:
                self.main.start()
            except SpawnError as exc:
                await self._uninstall()
                raise Fatal(f"main process failed to start: {exc.text}") from None
            log.info("main process started", extra={"pid": self.main.pid})
            self._main_task = self._main_tasks.spawn(self._run_main(self.main), name="main process")
        if self.health is not None:
            self._tasks.spawn(self.health.run(), name="health checks")
        if config.callback:
            from hatchway.common.reconnect import Backoff  # the reconnect loop: only a reverse-mode run loads it

            from .reverse import ReverseDialer

            self.dialer = ReverseDialer(config.callback, self.runtime, token=config.token,
                                        limit=config.reverse_retries, heartbeat=config.heartbeat,
                                        backoff=Backoff(initial=config.retry_initial, factor=2.0,
                                                        maximum=config.retry_max, jitter=0.2))
            self._dialer_task = self._tasks.spawn(self._run_dialer(self.dialer), name="reverse dialer")
        else:
            from hatchway.common.httpapi import HttpServer  # aiohttp.web: only a server-mode run loads it

            from .server import build_app, parse_addr

            try:
                address = parse_addr(config.addr)
            except ValueError as exc:
                await self.aclose()
                raise Fatal(str(exc)) from None
            self.server = HttpServer(build_app(self.runtime, config.token), [address], require="all")
            try:
                await self.server.start()
            except OSError as exc:
                await self.aclose()
                raise Fatal(f"listen tcp {config.addr}: {exc.strerror or exc}") from None
        return self

    def _health_changed(self, report: HealthState) -> None:
        for connection in list(self.runtime.connections):
            connection.push_health(report)

    def _fail(self, exc: BaseException) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    async def _run_main(self, main: MainProcess) -> None:
        try:
            code = await main.run()
        except Exception as exc:  # reported through wait()
            self._fail(exc)
            return
        await self._finish(code)

    async def _finish(self, code: int) -> None:
        """Attachers got their exit (main.run told them); close every connection after it; report."""
        await asyncio.gather(*(c.attachers_done(5.0) for c in list(self.runtime.connections)))
        if self._dialer_task is not None:
            self._dialer_task.cancel()
        await asyncio.gather(*(c.close() for c in list(self.runtime.connections)), return_exceptions=True)
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    async def _run_dialer(self, dialer: ReverseDialer) -> None:
        from hatchway.common.reconnect import GaveUp

        try:
            await dialer.run()
        except GaveUp as exc:
            self._fail(Fatal(f"reverse connect failed: {exc}"))
        except Exception as exc:  # reported through wait()
            self._fail(exc)

    async def wait(self) -> int:
        """The main process's exit code once it exited and everything was delivered (never without one)."""
        assert self._done is not None, "start() first"
        return await asyncio.shield(self._done)

    def forward_signal(self, signum: int) -> bool:
        """A signal to the agent: forwarded to the main process (True) or a request to stop (False)."""
        main = self.main
        if main is not None and not main.exited:
            log.info("forwarding %s to the main process", signal.Signals(signum).name)
            main.signal(signum)
            return True
        return signum not in (signal.SIGTERM, signal.SIGINT)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._tasks.aclose()
        if self.server is not None:
            await self.server.aclose()
        await asyncio.gather(*(c.close() for c in list(self.runtime.connections)), return_exceptions=True)
        if self.main is not None and self._main_task is not None and not self._main_task.done():
            self.main.kill()
            await self._main_tasks.join()
        await self._main_tasks.aclose()
        await self.runtime.tasks.aclose()
        await self._uninstall()

    async def _uninstall(self) -> None:
        if self._own_reaper and self._loop is not None:
            self._own_reaper = False
            _use_shared_reaper(self._loop, -1)

