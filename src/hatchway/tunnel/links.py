"""The runner's two link kinds: the routing state the :class:`~hatchway.tunnel.mux.Router` works on
(a :class:`~hatchway.tunnel.mux.TunnelSide` / ``ForwardSide``) plus the WebSocket and sink the
runner sends on. A :class:`TunnelLink` is one WebSocket on ``/ws/tunnel/{container_id}``, a
:class:`ForwardLink` one on ``/ws/forward/{container_id}/{port}``.
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
    sink: WebSocketSink

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
    sink: WebSocketSink

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
