"""The runner's registry of tunnel links by container id, and the two link kinds.

A :class:`TunnelLink` is one WebSocket on ``/ws/tunnel/{container_id}``, a
:class:`ForwardLink` one on ``/ws/forward/{container_id}/{port}``. Each *is*
the routing state the sans-I/O :class:`~hatchway.tunnel.mux.Router` works on
(a :class:`~hatchway.tunnel.mux.TunnelSide` / ``ForwardSide``) plus the
WebSocket and its sink the runner's driver sends on.

Registration rules (issue #6 items 1 and 2; D4):

* Every registration of a container id is kept, newest last; the current one
  is the newest that is still alive. When it goes away the id goes back to the
  newest registration still alive, so the real container stays reachable.
* A live registration is never replaced by another peer's: when the runner
  has a token, a new registration is refused while a live one holds the id,
  unless both presented the same credential (the token). Tokenless
  registrations (admitted only under the compatibility switch) can never
  replace a live one. A runner without a token keeps upstream's
  last-registration-wins (anyone may register; there is nothing to compare).
* Unregistering is by identity (D4).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from hatchway.common.wsconn import WebSocketSink

from .mux import ForwardSide, TunnelSide
from .protocol import Proto


class TunnelLink(TunnelSide):
    """One tunnel connection: its routing state, WebSocket and sink."""

    __slots__ = ("ws", "sink", "peer", "credential", "ended")

    def __init__(
        self, container_id: str, ws: web.WebSocketResponse, sink: WebSocketSink, peer: str, credential: str | None
    ) -> None:
        super().__init__(container_id)
        self.ws = ws
        self.sink = sink
        self.peer = peer
        self.credential = credential  # the token it presented, or None
        self.ended = asyncio.Event()  # set once its handler has finished and unregistered

    @property
    def live(self) -> bool:
        return self.alive and not self.sink.closed

    def __repr__(self) -> str:
        return f"<TunnelLink {self.container_id!r} from {self.peer} routes={len(self.routes)}>"


class ForwardLink(ForwardSide):
    """One forward channel: its routing state, WebSocket and sink (``congested`` follows the sink)."""

    __slots__ = ("ws", "sink", "peer")

    def __init__(
        self, container_id: str, port: int, proto: Proto, ws: web.WebSocketResponse, sink: WebSocketSink, peer: str
    ) -> None:
        super().__init__(container_id, port, proto)
        self.ws = ws
        self.sink = sink
        self.peer = peer
        sink.add_listener(self)

    # -- the sink's flow listener: the router's reset policy reads ``congested``
    def pause_writing(self) -> None:
        self.congested = True

    def resume_writing(self) -> None:
        self.congested = False

    def __repr__(self) -> str:
        return f"<ForwardLink {self.container_id!r}:{self.port}/{self.proto.name.lower()} from {self.peer}>"


class TunnelRegistry:
    """container_id -> its tunnel links; see the module docstring for the rules."""

    def __init__(self, *, guarded: bool = False) -> None:
        self.guarded = guarded  # the runner has a token: registrations need matching credentials to replace
        self._links: dict[str, list[TunnelLink]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def register(self, link: TunnelLink) -> bool:
        """Make ``link`` current for its container id; False when a live registration may not be replaced."""
        current = self.get(link.container_id)
        if self.guarded and current is not None:
            if link.credential is None or current.credential != link.credential:
                return False
        self._links.setdefault(link.container_id, []).append(link)
        for waiter in self._waiters.pop(link.container_id, ()):
            if not waiter.done():
                waiter.set_result(None)
        return True

    def replaces(self, link: TunnelLink) -> bool:
        """Whether an earlier live registration exists for ``link``'s id (for the log line)."""
        return any(other is not link and other.live for other in self._links.get(link.container_id, ()))

    def unregister(self, link: TunnelLink) -> bool:
        """Remove ``link`` (by identity, D4); the id falls back to the newest live registration left."""
        links = self._links.get(link.container_id)
        if links is None or link not in links:
            return False
        links.remove(link)
        if not links:
            del self._links[link.container_id]
        return True

    def get(self, container_id: str) -> TunnelLink | None:
        """The current live tunnel link for ``container_id``, resolved at send time (D5)."""
        for link in reversed(self._links.get(container_id, ())):
            if link.live:
                return link
        return None

    async def wait_registered(self, container_id: str, *, other_than: TunnelLink | None = None) -> TunnelLink:
        """Wait until a live link (other than ``other_than``) is current for ``container_id``."""
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
        return [link for links in self._links.values() for link in links]
