"""Dynamic callback listeners: one short-lived HTTP server per registered port, on host loopback."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable

from aiohttp import web

from hatchway.common.httpapi import HttpServer, TcpAddress
from hatchway.common.tasks import TaskSet

__all__ = ["DynamicListeners", "ListenerError"]

log = logging.getLogger(__name__)

CLOSE_BUDGET = 0.5  # seconds for a graceful close, then the sockets are closed anyway


class ListenerError(Exception):
    pass


class DynamicListeners:
    """Port -> listening server; ``app_for(port)`` builds each port's aiohttp app."""

    def __init__(self, app_for: Callable[[int], web.Application], *,
                 hosts: tuple[str, ...] = ("127.0.0.1", "::1"), read_timeout: float = 10.0) -> None:
        self._app_for = app_for
        self.hosts = hosts
        self.read_timeout = read_timeout
        self._servers: dict[int, HttpServer] = {}
        self._closing: dict[int, asyncio.Task[None]] = {}
        self._tasks = TaskSet("callback listeners", logger=log)

    def __contains__(self, port: int) -> bool:
        return port in self._servers

    @property
    def ports(self) -> list[int]:
        return list(self._servers)

    async def start(self, port: int) -> HttpServer:
        if port in self._servers:
            raise ListenerError(f"listener for port {port} already exists")
        closing = self._closing.get(port)
        if closing is not None:
            await closing
        server = HttpServer(
            self._app_for(port),
            [TcpAddress(host, port) for host in self.hosts],
            require="any",
            header_timeout=self.read_timeout,
            keepalive_timeout=self.read_timeout,
            shutdown_timeout=CLOSE_BUDGET,
            bind_failure_level=logging.DEBUG,
        )
        self._servers[port] = server  # reserved before the await: a concurrent start fails
        try:
            await server.start()
            busy = [(a, e) for a, e in server.failures if e.errno == errno.EADDRINUSE]
            if busy:  # another process holds the port on one family: the browser might reach it, not us
                await server.aclose()
                raise OSError(errno.EADDRINUSE, "address in use")
        except OSError as exc:
            self._servers.pop(port, None)
            failure = server.failures[0] if server.failures else None
            if failure is not None:
                address, error = failure
                raise ListenerError(
                    f"listen tcp {address}: bind: {(error.strerror or str(error)).lower()}"
                ) from None
            raise ListenerError(str(exc)) from None
        return server

    def stop(self, port: int) -> None:
        """Close ``port``'s listener in the background (from a synchronous hook)."""
        server = self._servers.pop(port, None)
        if server is None:
            return
        self._closing[port] = self._tasks.spawn(self._close(port, server), name=f"close listener {port}")

    async def _close(self, port: int, server: HttpServer) -> None:
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.aclose(), CLOSE_BUDGET * 2)
        finally:
            self._closing.pop(port, None)

    async def wait_closed(self, port: int) -> None:
        task = self._closing.get(port)
        if task is not None:
            await asyncio.shield(task)

    async def aclose(self) -> None:
        for port in list(self._servers):
            self.stop(port)
        await self._tasks.join()
        await self._tasks.aclose()
