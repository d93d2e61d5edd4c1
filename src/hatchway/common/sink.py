"""A message sink: where a multiplexer sends whole messages, synchronously, with flow control.

A multiplexed channel's ``write`` runs inside a Protocol callback, which
cannot await, so messages are sent with a synchronous :meth:`MessageSink.send`
and backpressure is signalled the way asyncio transports signal it: the sink
calls ``pause_writing`` on every registered :class:`FlowListener` when its
buffer passes the high-water mark and ``resume_writing`` when it drains.

Implementations:

* :class:`hatchway.common.wsconn.WebSocketSink`: binary (and text) WebSocket
  messages on an aiohttp WebSocket (the old ``MessageWriter``);
* :class:`LengthPrefixedSink` (here): length-prefixed frames over any
  ``asyncio.WriteTransport``: a pipe, a unix socket, a PTY.

This module imports no aiohttp. :class:`SinkClosed` is the one error a sink
raises; ``wsconn.ConnectionGone`` is the same class.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Protocol, cast, runtime_checkable

Buffer = bytes | bytearray | memoryview


class SinkClosed(ConnectionError):
    """The sink is closed or closing; nothing more can be sent."""


class FlowListener(Protocol):
    """Told when a sink's buffer passes the high-water mark and when it drains."""

    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


@runtime_checkable
class MessageSink(Protocol):
    """Sends whole messages without awaiting; see the module docstring."""

    def send(self, *parts: Buffer) -> None:
        """Send ``parts`` joined as one message. Raises :class:`SinkClosed`."""
        ...

    @property
    def paused(self) -> bool: ...
    @property
    def buffered(self) -> int: ...
    @property
    def closed(self) -> bool:
        """True once nothing more can be sent (closing, closed or transport lost)."""
        ...

    def add_listener(self, listener: FlowListener) -> None: ...
    def remove_listener(self, listener: FlowListener) -> None: ...
    async def drained(self) -> None: ...
    def mark_closing(self) -> None:
        """From now on :meth:`send` raises: we are about to send our own close."""
        ...

    def close(self) -> None:
        """Forget the listeners and stop watching the transport (the owner closes the transport)."""
        ...


class FlowControl:
    """The listener set and pause state every sink shares."""

    __slots__ = ("_listeners", "_resumed", "paused")

    def __init__(self) -> None:
        self.paused = False
        self._listeners: set[FlowListener] = set()
        self._resumed = asyncio.Event()
        self._resumed.set()

    def add_listener(self, listener: FlowListener) -> None:
        self._listeners.add(listener)
        if self.paused:
            listener.pause_writing()

    def remove_listener(self, listener: FlowListener) -> None:
        self._listeners.discard(listener)

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self._resumed.clear()
        for listener in list(self._listeners):
            listener.pause_writing()

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self._resumed.set()
        for listener in list(self._listeners):
            listener.resume_writing()

    async def drained(self) -> None:
        if self.paused:
            await self._resumed.wait()

    def clear(self) -> None:
        """Forget every listener; wake anyone waiting in :meth:`drained`."""
        self._listeners.clear()
        self._resumed.set()


PREFIX_U32 = struct.Struct("!I")


class TransportSink:
    """What every sink on one write transport shares: state, flow control, the closing mark.

    Subclasses write the framing (:meth:`send`) and say how pause/resume reach
    the :class:`FlowControl` in ``self._flow``.
    """

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._flow = FlowControl()
        self._closing = False
        self.sent_messages = 0

    @property
    def paused(self) -> bool:
        return self._flow.paused

    @property
    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    @property
    def closed(self) -> bool:
        return self._closing or self._transport.is_closing()

    @property
    def transport_lost(self) -> bool:
        """The connection itself is closed (not merely our sending side)."""
        return self._transport.is_closing()

    def add_listener(self, listener: FlowListener) -> None:
        self._flow.add_listener(listener)

    def remove_listener(self, listener: FlowListener) -> None:
        self._flow.remove_listener(listener)

    async def drained(self) -> None:
        """Wait until the transport's buffer is below the low-water mark."""
        await self._flow.drained()

    def mark_closing(self) -> None:
        """From now on :meth:`send` raises (we are about to send our own close)."""
        self._closing = True

    def abort(self) -> None:
        """Drop the connection at once."""
        self._closing = True
        if not self._transport.is_closing():
            self._transport.abort()

    def close(self) -> None:
        """Forget the listeners (the owner closes the transport)."""
        self._closing = True
        self._flow.clear()


class LengthPrefixedSink(TransportSink):
    """Messages as ``length + payload`` frames on a write transport (pipe, unix socket, PTY).

    The transport's flow-control callbacks reach its protocol, not this sink:
    the protocol that owns the transport forwards them to :meth:`pause_writing`,
    :meth:`resume_writing` and :meth:`connection_lost` (a :class:`SinkProtocol`
    does exactly that for a write-only pipe).
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        *,
        prefix: struct.Struct = PREFIX_U32,
        max_message: int | None = None,
    ) -> None:
        super().__init__(transport)
        self._pack = prefix.pack
        self._max = max_message if max_message is not None else (1 << (8 * prefix.size)) - 1

    def send(self, *parts: Buffer) -> None:
        transport = self._transport
        if self._closing or transport.is_closing():
            raise SinkClosed("the frame transport is closed")
        length = 0
        for part in parts:
            length += len(part)
        if length > self._max:
            raise ValueError(f"a {length}-byte message exceeds the frame limit {self._max}")
        transport.writelines((self._pack(length), *parts))
        self.sent_messages += 1

    # -- from the transport's protocol
    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closing = True
        self._flow.resume()  # wake drained() waiters; the next send raises SinkClosed


class SinkProtocol(asyncio.BaseProtocol):
    """The protocol of a write-only transport (``connect_write_pipe``) feeding a LengthPrefixedSink."""

    def __init__(self) -> None:
        self.sink: LengthPrefixedSink | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.WriteTransport subclasses, only alike
        self.sink = LengthPrefixedSink(cast(asyncio.WriteTransport, transport))

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.pause_writing()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink is not None:
            self.sink.connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class FrameDecoder:
    """Sans-I/O reader of length-prefixed frames: bytes in, whole messages out."""

    def __init__(self, *, prefix: struct.Struct = PREFIX_U32, max_message: int = 64 * 1024 * 1024) -> None:
        self._unpack = prefix.unpack_from
        self._size = prefix.size
        self._max = max_message
        self._buffer = bytearray()

    def feed(self, data: Buffer) -> list[bytes]:
        """Add received bytes; return the messages now complete. Raises ValueError on an oversize frame.

        Each message is copied once (out of ``data``, or out of the held partial frame joined with
        ``data``): frames whole inside ``data`` never go through the held buffer.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            source: Buffer = buffer
        else:
            source = data
        out: list[bytes] = []
        start = 0
        size = self._size
        with memoryview(source) as view:
            total = view.nbytes
            while total - start >= size:
                (length,) = self._unpack(view, start)
                if length > self._max:
                    raise ValueError(f"a {length}-byte frame exceeds the limit {self._max}")
                end = start + size + length
                if total < end:
                    break
                out.append(bytes(view[start + size : end]))
                start = end
            if source is not buffer and start < total:
                buffer += view[start:]  # the start of a frame still to come
        if source is buffer and start:
            del buffer[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)
