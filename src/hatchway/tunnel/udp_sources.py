"""The forward CLI's UDP source table, sans-I/O: one tunnel stream per local source address.

The first datagram from a new address opens a stream (CONNECT goes out, then
a DATA per datagram, without waiting for CONNECTED). Every datagram either
way counts as activity; a source idle for ``idle_timeout`` seconds is
released (CLOSE). CLOSE or ERROR from the far side, or the link's loss,
forgets a source without a message; the next datagram from that address
opens a new stream. Time is passed in (``now``): this module keeps no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hatchway.common.sink import Buffer

from .mux import Stream
from .protocol import Proto

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
    """One local source address and its tunnel stream; the stream's local end (mux.StreamEnd)."""

    __slots__ = ("table", "stream", "client_id", "addr", "last", "handle")

    def __init__(self, table: UdpSources, stream: Stream, addr: Address, now: float) -> None:
        self.table = table
        self.stream = stream
        self.client_id = stream.client_id
        self.addr = addr
        self.last = now
        self.handle: object = None  # the driver's idle timer
        stream.endpoint = self

    def feed(self, data: bytes | memoryview) -> None:
        self.table.reply(self, data)

    def remote_closed(self, error: str | None = None) -> None:
        self.table.drop(self)

    def remote_eof(self) -> None:
        """Never sent for UDP (a zero-length DATA is an empty datagram there)."""

    def link_lost(self) -> None:
        self.table.drop(self)


class UdpSources:
    """Source address -> :class:`UdpSource`; the driver supplies ``send_to(data, addr)`` and the clock."""

    def __init__(
        self,
        opener: StreamOpener,
        idle_timeout: float,
        send_to: Callable[[bytes | memoryview, Address], None],
        clock: Callable[[], float],
        on_drop: Callable[[UdpSource], None] = lambda source: None,
    ) -> None:
        self.opener = opener
        self.idle_timeout = idle_timeout
        self.send_to = send_to
        self.clock = clock
        self.on_drop = on_drop  # the driver cancels the source's timer here
        self.by_addr: dict[Address, UdpSource] = {}
        self.dropped = 0  # datagrams dropped because the WebSocket was full

    def datagram(self, data: bytes, addr: Address) -> UdpSource | None:
        """A local datagram: DATA on its source's stream (a new stream for a new address).

        Returns the source when it is new (the driver arms its idle timer), else None.
        """
        now = self.clock()
        source = self.by_addr.get(addr)
        new = None
        if source is None:
            stream = self.opener.open_stream(Proto.UDP)
            if stream is None:
                return None
            source = new = UdpSource(self, stream, addr, now)
            self.by_addr[addr] = source
        source.last = now
        if self.opener.congested:
            self.dropped += 1  # UDP is lossy: a full WebSocket drops, it does not queue
        elif not self.opener.send(source.stream.data_header, data):
            self.drop(source)
        return new

    def reply(self, source: UdpSource, data: bytes | memoryview) -> None:
        if self.by_addr.get(source.addr) is not source:
            return
        source.last = self.clock()
        self.send_to(data, source.addr)

    def idle_check(self, source: UdpSource) -> float | None:
        """At a timer: release the source if idle (CLOSE) and return None, else the next deadline."""
        if self.by_addr.get(source.addr) is not source:
            return None
        deadline = source.last + self.idle_timeout
        if self.clock() < deadline:
            return deadline
        message = self.opener.finished(source.stream)
        if message is not None:
            self.opener.send(message)
        self.drop(source)
        return None

    def drop(self, source: UdpSource) -> None:
        """Forget a source (no message is sent)."""
        if self.by_addr.get(source.addr) is source:
            del self.by_addr[source.addr]
        self.opener.release(source.stream)
        self.on_drop(source)

    def clear(self) -> None:
        for source in list(self.by_addr.values()):
            self.drop(source)
