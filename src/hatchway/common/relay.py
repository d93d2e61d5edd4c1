"""The one relay primitive: a bidirectional byte pump between two transports.

Either end is an ``asyncio.Transport`` (a TCP socket) or anything that speaks
the same small interface, such as a channel multiplexed over a WebSocket (see
``hatchway.common.channel``). A :class:`Pump` is the ``asyncio.Protocol`` on
one end; it hands every chunk its transport receives straight to the other
end's ``write``, with no queue of its own.

Backpressure: when a transport's write buffer passes its high-water mark the
transport calls ``pause_writing`` on its protocol, and that Pump pauses
*reading on the other end*; ``resume_writing`` resumes it. Buffers are
therefore bounded by the write-buffer limits of each end.

Close propagation (no silent loss, issue #6 items 4 and 15):

* EOF on one end becomes ``write_eof`` on the other (a TCP half-close) when
  that end takes it, else a close. A multiplexed channel takes it when its
  wire has a half-close, or when it is the accepting side of a wire without
  one (``keep_open_on_eof``): then the channel stays open so the reply still
  arrives, and the relay ends when the far side closes.
* A clean loss of one end (``connection_lost(None)``) closes the other once
  its buffer drains: the application sees a FIN, a real end of stream.
* A failed loss (``connection_lost(exc)``: a reset, a dead link, a stall
  reset) *resets* the other end with :func:`reset_transport`: SO_LINGER
  {1, 0} and abort, so a TCP application gets ECONNRESET, never a clean FIN.
  (asyncio's and uvloop's ``abort()`` alone send a FIN when nothing is unread.)
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Protocol

READ_MAX = 256 * 1024  # never ask uvloop for more per read (packaging.md 5.4)
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class RelayEnd(Protocol):
    """What the relay needs from either end (a subset of ``asyncio.Transport``)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def write_eof(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


_LINGER_RESET = struct.pack("ii", 1, 0)


def reset_transport(transport: Any) -> None:
    """Abort ``transport`` so that its peer sees an error: a TCP RST, never a FIN.

    A TCP socket gets SO_LINGER {on, 0 s} first, so closing it sends RST on
    asyncio and uvloop alike. Other ends (a multiplexed channel) are simply
    aborted: their ``abort`` tells the far side the stream failed.
    """
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()


def set_nodelay(transport: Any) -> None:
    """TCP_NODELAY on a transport's socket, if it has a TCP socket."""
    sock = transport.get_extra_info("socket") if hasattr(transport, "get_extra_info") else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Pump(asyncio.Protocol):
    """Protocol for one end of a relay; feeds the other end.

    Bytes that arrive before the other end is attached are held (the reading
    side is paused meanwhile, so at most one read is held).
    """

    __slots__ = ("_eof", "_error", "_held", "_lost", "_writing_paused", "peer", "received", "relay", "transport")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: RelayEnd | None = None
        self.peer: Pump | None = None
        self.received = 0
        self._held: list[bytes | memoryview] = []
        self._eof = False
        self._lost = False
        self._error: Exception | None = None
        self._writing_paused = False

    # -- wiring
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        set_nodelay(transport)
        if hasattr(transport, "set_write_buffer_limits"):
            transport.set_write_buffer_limits(self.relay.high_water, self.relay.low_water)
        if self.peer is None or self.peer.transport is None:
            transport.pause_reading()

    def attach(self, peer: Pump) -> None:
        """Called once both ends exist: flush held bytes and start reading."""
        self.peer = peer
        target = peer.transport
        assert target is not None and self.transport is not None
        for chunk in self._held:
            target.write(chunk)
        self._held.clear()
        if self._eof:
            self._send_eof()
        elif self._lost:
            if self._error is not None:
                reset_transport(target)
            else:
                target.close()
        elif not peer._writing_paused:
            self.transport.resume_reading()

    # -- data path
    def data_received(self, data: bytes | memoryview) -> None:  # a channel hands over views of its messages
        self.received += len(data)
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self._held.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self.peer is not None and self.peer.transport is not None:
            self._send_eof()
        return True  # keep our write side open for the other direction

    def _send_eof(self) -> None:
        assert self.peer is not None and self.peer.transport is not None
        target = self.peer.transport
        if target.is_closing():
            return
        if target.can_write_eof():
            target.write_eof()
            if self.peer._eof:  # both directions finished
                self.transport.close()  # type: ignore[union-attr]
                target.close()
        else:
            target.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if exc is None:
                peer.transport.close()
            else:
                reset_transport(peer.transport)
        self.relay._end_lost(self, exc)

    # -- flow control: our transport's buffer is full, so stop the peer reading
    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.peer is not None and self.peer.transport is not None and not self.peer._eof:
            self.peer.transport.resume_reading()


class Relay:
    """Two Pumps joined together; ``done`` resolves when both ends are lost.

    Typical use with a listening server::

        relay = Relay()
        server = await loop.create_server(relay.front, ...)      # one relay per connection
        await loop.create_connection(relay.back, host, port)
        relay.join()
        await relay.done
    """

    def __init__(self, high_water: int = HIGH_WATER, low_water: int = LOW_WATER) -> None:
        self.high_water = high_water
        self.low_water = low_water
        self.a = Pump(self)
        self.b = Pump(self)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None
        self._lost = 0

    def front(self) -> Pump:
        return self.a

    def back(self) -> Pump:
        return self.b

    def adopt(self, pump: Pump, transport: Any) -> None:
        """Move an already connected transport (e.g. after a proxy handshake) into the relay."""
        transport.set_protocol(pump)
        pump.connection_made(transport)

    def join(self) -> None:
        """Both transports are connected: start pumping in both directions."""
        self.a.attach(self.b)
        self.b.attach(self.a)

    @property
    def bytes_a_to_b(self) -> int:
        return self.a.received

    @property
    def bytes_b_to_a(self) -> int:
        return self.b.received

    def abort(self) -> None:
        """Reset both ends: each application sees an error, not a clean end of stream."""
        for pump in (self.a, self.b):
            if pump.transport is not None:
                reset_transport(pump.transport)

    def _end_lost(self, pump: Pump, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = exc
        self._lost += 1
        other = self.b if pump is self.a else self.a
        if other.transport is None:
            self._lost += 1  # the other end never connected
        if self._lost >= 2 and not self.done.done():
            self.done.set_result(None)
