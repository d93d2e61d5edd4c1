"""A channel multiplexed over a WebSocket, shaped like a transport for the relay.

The tunnel (8-byte header, u32 id) and LinkSocks (16-byte channel id) both
carry many TCP connections over one WebSocket. Each program subclasses
:class:`Channel` with its own ``_send_data`` and ``_send_close`` (the wire
encoding); the lifecycle, flow control and relay plumbing live here once.

Directions, seen from the relay:

* ``write(data)`` sends a data message on the WebSocket (``MessageWriter``);
  when the WebSocket's buffer is full the writer calls ``pause_writing`` on
  every channel's protocol, which pauses the local sockets feeding it.
* ``feed(data)`` is called by the program's dispatcher for each inbound data
  message and hands it to the protocol (a relay ``Pump``) at once.
* ``pause_reading()`` is called when the local socket this channel writes into
  is full. Per the slow-consumer policy the :class:`InboundGate` either holds
  the WebSocket's read loop until the channel drains (``block``: nothing is
  dropped, memory stays bounded) or resets just this channel (``reset``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from .wsconn import ConnectionGone, MessageWriter

log = logging.getLogger("hatchway.channel")


class SlowConsumerPolicy(str, enum.Enum):
    BLOCK = "block"
    RESET = "reset"


class InboundGate:
    """Holds a WebSocket's read loop while any channel it feeds is paused (block policy).

    ``stall_timeout`` (block policy, seconds, 0 = never) bounds how long one
    channel may hold the gate without draining: a consumer that is slow but
    reads keeps resuming and is never reset; one that stopped reading is reset
    after that long, and the other channels go on.
    """

    def __init__(self, policy: SlowConsumerPolicy = SlowConsumerPolicy.BLOCK, stall_timeout: float = 0.0) -> None:
        self.policy = SlowConsumerPolicy(policy)
        self.stall_timeout = stall_timeout
        self._paused: dict[Channel, asyncio.TimerHandle | None] = {}
        self._open = asyncio.Event()
        self._open.set()

    def pause(self, channel: "Channel") -> None:
        if self.policy is SlowConsumerPolicy.RESET:
            log.warning("channel %s: local consumer too slow, resetting it", channel.name)
            channel.reset("slow consumer")
            return
        timer = None
        if self.stall_timeout > 0:
            timer = asyncio.get_running_loop().call_later(self.stall_timeout, self._stalled, channel)
        self._paused[channel] = timer
        self._open.clear()

    def resume(self, channel: "Channel") -> None:
        timer = self._paused.pop(channel, None)
        if timer is not None:
            timer.cancel()
        if not self._paused:
            self._open.set()

    def _stalled(self, channel: "Channel") -> None:
        if channel in self._paused:
            self._paused[channel] = None
            log.warning("channel %s: local consumer read nothing for %.0f s, resetting it", channel.name, self.stall_timeout)
            channel.reset("stalled consumer")

    @property
    def blocked(self) -> bool:
        return not self._open.is_set()

    async def wait_open(self) -> None:
        """Await before reading the next WebSocket message."""
        if not self._open.is_set():
            await self._open.wait()


class Channel:
    """One multiplexed connection; implements the relay's ``RelayEnd`` interface."""

    name: str = "?"

    def __init__(self, writer: MessageWriter | None, gate: InboundGate) -> None:
        self.writer = writer
        self.gate = gate
        self.protocol: Any = None
        self._closing = False
        self._lost = False
        self._paused_reading = False
        self._held: list[bytes] = []  # inbound data that arrived before a protocol was set
        self.sent = 0
        self.received = 0
        self._extra: dict[str, Any] = {}

    # -- wire encoding, supplied by the program
    def _send_data(self, writer: MessageWriter, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _send_close(self, writer: MessageWriter, reason: str | None) -> None:
        raise NotImplementedError

    def _forget(self) -> None:
        """Remove this channel from the program's table (called once, at loss)."""

    # -- transport interface used by the relay
    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol
        if self.writer is not None:
            self.writer.add_listener(protocol)
        protocol.connection_made(self)
        held, self._held = self._held, []
        for chunk in held:
            protocol.data_received(chunk)

    def get_protocol(self) -> Any:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.writer is None:
            return
        self.sent += len(data)
        try:
            self._send_data(self.writer, data)
        except ConnectionGone:
            self._lose(ConnectionResetError("WebSocket closed"))

    def can_write_eof(self) -> bool:
        return False  # the wire protocols have no half-close

    def write_eof(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return self.writer.buffered if self.writer is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Limits belong to the shared WebSocket writer; per-channel limits are ignored."""

    def pause_reading(self) -> None:
        if not self._paused_reading and not self._closing:
            self._paused_reading = True
            self.gate.pause(self)

    def resume_reading(self) -> None:
        if self._paused_reading:
            self._paused_reading = False
            self.gate.resume(self)

    def is_reading(self) -> bool:
        return not self._paused_reading

    def close(self) -> None:
        """Local side finished: tell the peer, then report the loss to the protocol."""
        self._close(None, exc=None)

    def abort(self) -> None:
        self._close("aborted", exc=None)

    def reset(self, reason: str) -> None:
        """Tear down just this channel, telling the peer and the local end."""
        self._close(reason, exc=ConnectionResetError(reason))

    def _close(self, reason: str | None, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        if self.writer is not None and not self.writer.closed:
            try:
                self._send_close(self.writer, reason)
            except ConnectionGone:
                pass
        self._lose(exc)

    # -- events from the program's dispatcher
    def feed(self, data: bytes | memoryview) -> None:
        """Inbound data for this channel."""
        if self._lost:
            return
        self.received += len(data)
        if self.protocol is None:
            self._held.append(bytes(data))
        else:
            self.protocol.data_received(data)

    def remote_closed(self, error: str | None = None) -> None:
        """The peer closed the channel: close locally without answering."""
        if self._closing:
            self._lose(None)
            return
        self._closing = True
        self._lose(None if error is None else ConnectionResetError(error))

    def link_lost(self) -> None:
        """The WebSocket carrying this channel is gone."""
        self._closing = True
        self._lose(ConnectionResetError("WebSocket closed"))

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        if self._paused_reading:
            self._paused_reading = False
            self.gate.resume(self)
        if self.writer is not None and self.protocol is not None:
            self.writer.remove_listener(self.protocol)
        self._forget()
        if self.protocol is not None:
            protocol = self.protocol
            asyncio.get_running_loop().call_soon(protocol.connection_lost, exc)
