"""The runner's routing state: tunnel connections by container id, and id routes.

A :class:`TunnelLink` is one tunnel connection (one WebSocket on
``/ws/tunnel/{container_id}``). A :class:`Route` ties one logical connection
to both sides: ``(forward channel, CLI id)`` on the user side and
``(tunnel link, tunnel id)`` on the container side. Tunnel ids are allocated
by the registry, monotonically and runner-wide, so no id is ever reused while
an upstream client might still hold it (D1, D2). The registry unregisters by
identity (D4).
"""

from __future__ import annotations

import asyncio
from typing import Any

from hatchway.common.wsconn import MessageWriter

from .protocol import MAX_CLIENT_ID


class Route:
    """One logical connection, as seen from both ends of the runner."""

    __slots__ = ("link", "tunnel_id", "forward", "cli_id", "proto")

    def __init__(self, link: "TunnelLink", tunnel_id: int, forward: Any, cli_id: int, proto: int) -> None:
        self.link = link
        self.tunnel_id = tunnel_id
        self.forward = forward  # the ForwardChannel (runner.py)
        self.cli_id = cli_id
        self.proto = proto


class TunnelLink:
    """One tunnel connection and the routes currently running through it."""

    def __init__(self, container_id: str, ws: Any, writer: MessageWriter, peer: str = "?") -> None:
        self.container_id = container_id
        self.ws = ws
        self.writer = writer
        self.peer = peer
        self.routes: dict[int, Route] = {}
        self.closed = False
        self.ended = asyncio.Event()  # set once the link's handler has finished and unregistered

    @property
    def alive(self) -> bool:
        return not self.closed and not self.writer.closed

    def __repr__(self) -> str:
        return f"<TunnelLink {self.container_id} from {self.peer} routes={len(self.routes)}>"


class TunnelRegistry:
    """container_id -> the current tunnel link; last registration wins."""

    def __init__(self) -> None:
        self._links: dict[str, TunnelLink] = {}
        self._next_id = 1
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def register(self, link: TunnelLink) -> TunnelLink | None:
        """Make ``link`` current for its container id; returns the link it replaces (left open)."""
        previous = self._links.get(link.container_id)
        self._links[link.container_id] = link
        for waiter in self._waiters.pop(link.container_id, ()):
            if not waiter.done():
                waiter.set_result(None)
        return previous

    def unregister(self, link: TunnelLink) -> bool:
        """Remove the registration only if it still points at ``link`` (fixes D4)."""
        if self._links.get(link.container_id) is link:
            del self._links[link.container_id]
            return True
        return False

    def get(self, container_id: str) -> TunnelLink | None:
        """The live tunnel link for ``container_id``, resolved at send time (fixes D5)."""
        link = self._links.get(container_id)
        if link is None or not link.alive:
            return None
        return link

    async def wait_registered(self, container_id: str, *, other_than: TunnelLink | None = None) -> TunnelLink:
        """Wait until a live link (other than ``other_than``) is registered for ``container_id``."""
        while True:
            link = self.get(container_id)
            if link is not None and link is not other_than:
                return link
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(container_id, []).append(waiter)
            try:
                await waiter
            finally:
                waiters = self._waiters.get(container_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)

    def links(self) -> list[TunnelLink]:
        return list(self._links.values())

    def allocate_id(self) -> int:
        """The next tunnel id: monotonic, never reused within 2**32 - 1 connections."""
        tunnel_id = self._next_id
        self._next_id = tunnel_id + 1 if tunnel_id < MAX_CLIENT_ID else 1
        return tunnel_id
