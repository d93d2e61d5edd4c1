"""UDP side of the forward CLI: one tunnel id per local source address (tunnel.md 8, 16; fixes D6).

The first datagram from a new source address allocates the next id and sends
CONNECT(UDP, id, remote_port); every datagram becomes one DATA(UDP, id)
(CONNECT and DATA go out back to back, without waiting for CONNECTED). Each
DATA from the far side is sent as one datagram to the mapped address. A flow
with no traffic either way for ``udp_idle_timeout`` seconds is released with
CLOSE; CLOSE or ERROR from the far side forgets it, and the next datagram from
that address starts a new id.

UDP is lossy by contract, so while the WebSocket's write buffer is over its
high-water mark new datagrams are dropped rather than queued.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import protocol
from .protocol import Proto

if TYPE_CHECKING:
    from .forward import Forwarder

log = logging.getLogger("hatchway.tunnel.forward.udp")


class UdpFlow:
    """One local source address and its tunnel id."""

    __slots__ = ("owner", "client_id", "addr", "last", "timer", "data_header")

    def __init__(self, owner: "UdpForward", client_id: int, addr: Any) -> None:
        self.owner = owner
        self.client_id = client_id
        self.addr = addr
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.data_header = protocol.data_header(Proto.UDP, client_id)

    # -- the dispatcher's interface (see forward.Endpoint)
    def feed(self, data: bytes | memoryview) -> None:
        self.owner.reply(self, data)

    def remote_closed(self, error: str | None = None) -> None:
        self.owner.drop(self)

    def link_lost(self) -> None:
        self.owner.drop(self)


class UdpForward(asyncio.DatagramProtocol):
    """The local UDP socket of a forwarder and its source-address table."""

    def __init__(self, forwarder: "Forwarder") -> None:
        self.forwarder = forwarder
        self.idle_timeout = forwarder.udp_idle_timeout
        self.flows: dict[Any, UdpFlow] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0  # datagrams dropped because the WebSocket was full
        self._loop = asyncio.get_running_loop()

    async def start(self, host: str, port: int) -> int:
        self.transport, _ = await self._loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        return self.transport.get_extra_info("sockname")[1]

    # -- local datagrams
    def datagram_received(self, data: bytes, addr: Any) -> None:
        fwd = self.forwarder
        flow = self.flows.get(addr)
        if flow is None:
            flow = self._open(addr)
            if flow is None:
                return
        flow.last = self._loop.time()
        if fwd.writer.paused:
            self.dropped += 1
            return
        if not fwd.send(flow.data_header, data):
            self.drop(flow)

    def error_received(self, exc: Exception) -> None:
        log.debug("local UDP socket error: %s", exc)

    def _open(self, addr: Any) -> UdpFlow | None:
        fwd = self.forwarder
        flow = UdpFlow(self, fwd.allocate_id(), addr)
        if not fwd.send(protocol.connect(Proto.UDP, flow.client_id, fwd.remote_port)):
            return None
        self.flows[addr] = flow
        fwd.endpoints[flow.client_id] = flow
        flow.last = self._loop.time()
        if self.idle_timeout and self.idle_timeout > 0:
            flow.timer = self._loop.call_at(flow.last + self.idle_timeout, self._check_idle, flow)
        log.debug("udp flow %d from %s", flow.client_id, addr)
        return flow

    # -- far side
    def reply(self, flow: UdpFlow, data: bytes | memoryview) -> None:
        if self.transport is None or self.flows.get(flow.addr) is not flow:
            return
        flow.last = self._loop.time()
        self.transport.sendto(data, flow.addr)

    def drop(self, flow: UdpFlow) -> None:
        """Forget a flow (no message is sent)."""
        if self.flows.get(flow.addr) is flow:
            del self.flows[flow.addr]
        self.forwarder.forget(flow)
        if flow.timer is not None:
            flow.timer.cancel()
            flow.timer = None

    def _check_idle(self, flow: UdpFlow) -> None:
        flow.timer = None
        if self.flows.get(flow.addr) is not flow:
            return
        deadline = flow.last + self.idle_timeout
        if self._loop.time() < deadline:
            flow.timer = self._loop.call_at(deadline, self._check_idle, flow)
            return
        log.debug("udp flow %d from %s idle, releasing it", flow.client_id, flow.addr)
        self.forwarder.send(protocol.close(Proto.UDP, flow.client_id))
        self.drop(flow)

    def close(self) -> None:
        for flow in list(self.flows.values()):
            self.drop(flow)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
