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
from typing import Protocol

from hatchway.common.sink import Buffer

from .mux import Stream
from .protocol import Proto

log = logging.getLogger(__name__)

Address = tuple[str, int] | tuple[str, int, int, int]


class StreamOpener(Protocol):
    """What the UDP side needs from its forwarder (the narrow mux interface)."""

    def open_stream(self, proto: Proto) -> Stream | None: ...
    def finished(self, stream: Stream) -> bytes | None: ...
    def release(self, stream: Stream) -> None: ...
    def send(self, *parts: Buffer) -> bool: ...
    @property
    def congested(self) -> bool: ...


class UdpSource:
    """One local source address and its tunnel stream."""

    __slots__ = ("owner", "stream", "client_id", "addr", "last", "timer")

    def __init__(self, owner: UdpForward, stream: Stream, addr: Address) -> None:
        self.owner = owner
        self.stream = stream
        self.client_id = stream.client_id
        self.addr = addr
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        stream.endpoint = self

    # -- the stream's local end (mux.StreamEnd)
    def feed(self, data: bytes | memoryview) -> None:
        self.owner.reply(self, data)

    def remote_closed(self, error: str | None = None) -> None:
        self.owner.drop(self)

    def link_lost(self) -> None:
        self.owner.drop(self)


class UdpForward(asyncio.DatagramProtocol):
    """The local UDP socket of a forwarder and its source-address table."""

    def __init__(self, forwarder: StreamOpener, idle_timeout: float) -> None:
        self.forwarder = forwarder
        self.idle_timeout = idle_timeout
        self.sources: dict[Address, UdpSource] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0  # datagrams dropped because the WebSocket was full
        self._loop = asyncio.get_running_loop()

    async def start(self, host: str, port: int) -> int:
        self.transport, _ = await self._loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        bound: int = self.transport.get_extra_info("sockname")[1]
        return bound

    # -- local datagrams
    def datagram_received(self, data: bytes, addr: Address) -> None:
        fwd = self.forwarder
        source = self.sources.get(addr)
        if source is None:
            source = self._open(addr)
            if source is None:
                return
        source.last = self._loop.time()
        if fwd.congested:
            self.dropped += 1
            return
        if not fwd.send(source.stream.data_header, data):
            self.drop(source)

    def error_received(self, exc: Exception) -> None:
        log.debug("local UDP socket error: %s", exc)

    def _open(self, addr: Address) -> UdpSource | None:
        stream = self.forwarder.open_stream(Proto.UDP)
        if stream is None:
            return None
        source = UdpSource(self, stream, addr)
        self.sources[addr] = source
        source.last = self._loop.time()
        if self.idle_timeout and self.idle_timeout > 0:
            source.timer = self._loop.call_at(source.last + self.idle_timeout, self._check_idle, source)
        log.debug("udp flow %d from %s", source.client_id, addr)
        return source

    # -- far side
    def reply(self, source: UdpSource, data: bytes | memoryview) -> None:
        if self.transport is None or self.sources.get(source.addr) is not source:
            return
        source.last = self._loop.time()
        self.transport.sendto(data, source.addr)

    def drop(self, source: UdpSource) -> None:
        """Forget a source (no message is sent)."""
        if self.sources.get(source.addr) is source:
            del self.sources[source.addr]
        self.forwarder.release(source.stream)
        if source.timer is not None:
            source.timer.cancel()
            source.timer = None

    def _check_idle(self, source: UdpSource) -> None:
        source.timer = None
        if self.sources.get(source.addr) is not source:
            return
        deadline = source.last + self.idle_timeout
        if self._loop.time() < deadline:
            source.timer = self._loop.call_at(deadline, self._check_idle, source)
            return
        log.debug("udp flow %d from %s idle, releasing it", source.client_id, source.addr)
        message = self.forwarder.finished(source.stream)
        if message is not None:
            self.forwarder.send(message)
        self.drop(source)

    def close(self) -> None:
        for source in list(self.sources.values()):
            self.drop(source)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
