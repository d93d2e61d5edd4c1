"""The runner's handlers of the two link kinds, sans-I/O: a message in, the router's outputs sent on their sinks.

The common :class:`~hatchway.common.muxsession.MuxSession` reads each link's
WebSocket and calls ``binary_received`` / ``text_received`` here; what it gets
back is the sink to wait for before reading on (the slow-consumer decision of
:meth:`~hatchway.tunnel.mux.Router.deliver`). Malformed messages are dropped
(logged at DEBUG, escaped); text messages are ignored.
"""

from __future__ import annotations

import logging
from typing import Protocol

from hatchway.common.logsafe import escape

from .mux import ForwardSide, LinkSink, ProtocolError, Router, TunnelSide

log = logging.getLogger("hatchway.tunnel.runner")


class Tunnels(Protocol):
    """Where a forward link finds its container's current tunnel (the runner's TunnelRegistry)."""

    def get(self, container_id: str) -> TunnelSide | None: ...


class TunnelHandler:
    """Messages from the container on one tunnel link."""

    __slots__ = ("link", "router")

    def __init__(self, router: Router, link: TunnelSide) -> None:
        self.router = router
        self.link = link

    def binary_received(self, data: bytes) -> LinkSink | None:
        try:
            outputs = self.router.from_tunnel(self.link, data)
        except ProtocolError as exc:
            log.debug("container=%s: dropping a message: %s", escape(self.link.container_id), exc)
            return None
        return self.router.deliver(outputs) if outputs else None

    def text_received(self, text: str) -> LinkSink | None:
        log.debug("container=%s: ignoring a text message from the tunnel client", escape(self.link.container_id))
        return None


class ForwardHandler:
    """Messages from a user on one forward link (routed to the container's current tunnel)."""

    __slots__ = ("link", "registry", "router")

    def __init__(self, router: Router, registry: Tunnels, link: ForwardSide) -> None:
        self.router = router
        self.registry = registry
        self.link = link

    def binary_received(self, data: bytes) -> LinkSink | None:
        try:
            outputs = self.router.from_user(self.link, self.registry.get(self.link.container_id), data)
        except ProtocolError:
            return None
        return self.router.deliver(outputs) if outputs else None

    def text_received(self, text: str) -> LinkSink | None:
        log.debug("%r: ignoring a text message", self.link)
        return None
