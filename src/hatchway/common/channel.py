"""A channel multiplexed over a message sink, shaped like a transport for the relay.

The tunnel (8-byte header, u32 id) and LinkSocks (16-byte channel id) both
carry many TCP connections over one WebSocket; the host proxy's socket bridge
carries them over a pipe. Each program subclasses :class:`Channel` with its
own ``_send_data`` and ``_send_close`` (the wire encoding, plus ``_send_eof``
when its wire has a half-close); the lifecycle, flow control and relay
plumbing live here once. The channel is transport-neutral: it sends through a
:class:`~hatchway.common.sink.MessageSink` and holds its read loop through an
:class:`~hatchway.common.gate.InboundGate`.

Directions, seen from the relay:

* ``write(data)`` sends a data message on the sink; when the sink's buffer is
  full it calls ``pause_writing`` on every channel's protocol, which pauses
  the local sockets feeding it.
* ``feed(data)`` is called by the program's dispatcher for each inbound data
  message and hands it to the protocol (a relay ``Pump``) at once.
* ``pause_reading()`` is called when the local socket this channel writes into
  is full; the gate applies the slow-consumer policy.

Life and end:

* ``started``: a channel built with ``started=False`` ignores
  ``pause_reading`` (the relay's wiring pauses an end until it is joined) and
  holds inbound data until :meth:`start`, called right after ``relay.join()``.
  Data that arrives before then is held up to ``hold_limit`` bytes; past it
  the slow-consumer policy applies to the read loop.
* Half-close is a capability of the wire (``half_close``): with it, a local
  EOF is sent on (``_send_eof``) and :meth:`remote_eof` delivers the far
  side's. Without it the wire cannot say "no more from me, but go on", and a
  local EOF means one of two things, which only the program knows:

  - on the accepting side (the user's application sent its request and shut
    down its write side, waiting for the reply): ``keep_open_on_eof=True``
    keeps the channel open so the reply still arrives; the channel ends when
    the far side closes (issue #6 item 15), or when the far side has sent
    nothing for ``eof_linger`` seconds while the local end is not full: then
    the channel is reset (the far side gets its close, so a service that
    waits for EOF ends; the local end gets an RST, never a clean FIN).
    Without that bound, a user that *closed* (on the wire the same as a
    half-close) talking to a service that waits for EOF (an echo service)
    holds its connection open forever in every process on the path.
    ``eof_linger=None`` waits for the far side without a bound.
    With ``half_close`` too, the EOF is sent on and ``eof_linger`` is only the
    fallback for a far side that ignores the wire's EOF (an older peer): it
    normally answers with its own EOF or close long before;
  - on the dialing side (the service finished: the far application reads to
    end of stream): the default closes the channel, as Go's peers do.
* No silent loss: :meth:`reset`, :meth:`link_lost` and :meth:`fail` with an
  error hand the relay a ``ConnectionResetError``, so the local application is
  reset (RST), never given a clean FIN. Only :meth:`remote_closed` without an
  error is a real end of stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .gate import InboundGate, SlowConsumerPolicy
from .sink import Buffer, MessageSink, SinkClosed

__all__ = ["EOF_LINGER", "Channel", "ChannelProtocol", "InboundGate", "SlowConsumerPolicy"]

EOF_LINGER = 0.5  # seconds of far-side silence after a kept-open local EOF (socat's -t default)

log = logging.getLogger(__name__)


class ChannelProtocol(Protocol):
    """What a channel drives: an ``asyncio.Protocol`` (in practice a relay Pump)."""

    def connection_made(self, transport: Any) -> None: ...
    def data_received(self, data: bytes | memoryview) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class Channel:
    """One multiplexed connection; implements the relay's ``RelayEnd`` interface."""

    name: str = "?"

    def __init__(
        self,
        writer: MessageSink | None,
        gate: InboundGate,
        *,
        half_close: bool = False,
        keep_open_on_eof: bool = False,
        started: bool = True,
        hold_limit: int | None = None,
        eof_linger: float | None = EOF_LINGER,
    ) -> None:
        self.writer = writer
        self.gate = gate
        self.half_close = half_close
        self.keep_open_on_eof = keep_open_on_eof
        self.hold_limit = hold_limit
        self.eof_linger = eof_linger
        self._linger: asyncio.TimerHandle | None = None  # (few attributes: past 30, CPython stops sharing dict keys)
        self.protocol: ChannelProtocol | None = None
        self._closing = False
        self._lost = False
        self._paused_reading = False
        self._hold_paused = False  # the gate is held because too much early data is held
        self._joined = started
        self._eof_sent = False
        self._eof_held = False  # the far side's EOF, arrived before start()
        self._held: list[bytes] = []  # inbound data not yet handed to the protocol
        self._early_bytes = 0
        self.sent = 0
        self.received = 0
        self._extra: dict[str, Any] = {}

    @property
    def sink(self) -> MessageSink | None:
        return self.writer

    # -- wire encoding, supplied by the program
    def _send_data(self, writer: MessageSink, data: Buffer) -> None:
        raise NotImplementedError

    def _send_close(self, writer: MessageSink, reason: str | None) -> None:
        raise NotImplementedError

    def _send_eof(self, writer: MessageSink) -> None:
        """Tell the far side our local end sent EOF (only called when ``half_close``)."""
        raise NotImplementedError

    def _forget(self) -> None:
        """Remove this channel from the program's table (called once, at loss)."""

    # -- start
    @property
    def started(self) -> bool:
        return self._joined

    def start(self) -> None:
        """The relay is joined: hand over held data; from now on a pause is a real slow-consumer signal."""
        if self._joined:
            return
        self._joined = True
        if self.protocol is not None:
            self._flush_held()

    def _flush_held(self) -> None:
        protocol = self.protocol
        assert protocol is not None
        held, self._held = self._held, []
        self._early_bytes = 0
        if self._hold_paused:
            self._hold_paused = False
            self.resume_reading()  # delivering the held bytes re-pauses if the local end is full
        for chunk in held:
            if self._lost:
                return
            protocol.data_received(chunk)
        if self._eof_held and not self._lost:
            self._eof_held = False
            protocol.eof_received()

    # -- transport interface used by the relay
    def set_protocol(self, protocol: ChannelProtocol) -> None:
        self.protocol = protocol
        if self.writer is not None:
            self.writer.add_listener(protocol)
        protocol.connection_made(self)
        if self._joined:
            self._flush_held()

    def get_protocol(self) -> ChannelProtocol | None:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: Buffer) -> None:
        if self._closing or self.writer is None:
            return
        self.sent += len(data)
        try:
            self._send_data(self.writer, data)
        except SinkClosed:
            self._lose(ConnectionResetError("the link closed"))

    def can_write_eof(self) -> bool:
        """True when a local EOF is not a close: the wire half-closes, or the channel waits for the reply."""
        return self.half_close or self.keep_open_on_eof

    def write_eof(self) -> None:
        """Local EOF: sent on when the wire can half-close; with ``keep_open_on_eof`` the channel stays open."""
        if not self.half_close:
            if not self.keep_open_on_eof:
                self.close()
            else:
                self._arm_linger()
            return
        if self._closing or self._eof_sent or self.writer is None:
            return
        self._eof_sent = True
        try:
            self._send_eof(self.writer)
        except SinkClosed:
            self._lose(ConnectionResetError("the link closed"))
            return
        if self.keep_open_on_eof:  # a far side that may not understand the wire's EOF: bounded by the linger
            self._arm_linger()

    def _arm_linger(self) -> None:
        if self.eof_linger is not None and self._linger is None and not self._closing:
            self._linger = asyncio.get_running_loop().call_later(self.eof_linger, self._linger_check, self.received)

    def _linger_check(self, mark: int) -> None:
        """After a kept-open local EOF: reset when the far side stayed silent for ``eof_linger``."""
        self._linger = None
        if self._closing:
            return
        if self.received != mark or self._paused_reading:  # the reply is still flowing
            assert self.eof_linger is not None
            self._linger = asyncio.get_running_loop().call_later(self.eof_linger, self._linger_check, self.received)
            return
        self.reset("local end closed, far side silent")

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return self.writer.buffered if self.writer is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Limits belong to the shared sink; per-channel limits are ignored."""

    def pause_reading(self) -> None:
        if self._joined and not self._paused_reading and not self._closing:
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
        """Local side failed: tell the peer (with a reason) and end."""
        self._close("aborted", exc=None)

    def reset(self, reason: str) -> None:
        """Tear down just this channel, telling the peer and resetting the local end."""
        self._close(reason, exc=ConnectionResetError(reason))

    def fail(self, exc: Exception | None = None) -> None:
        """End without sending a close (the far side already knows, or cannot be told).

        ``exc`` reaches the protocol: an error resets the local end, None is a clean end.
        """
        self._closing = True
        self._lose(exc)

    def _close(self, reason: str | None, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        if self.writer is not None and not self.writer.closed:
            try:
                self._send_close(self.writer, reason)
            except SinkClosed:
                pass
        self._lose(exc)

    # -- events from the program's dispatcher
    def feed(self, data: bytes | memoryview) -> None:
        """Inbound data for this channel."""
        if self._lost:
            return
        self.received += len(data)
        if self.protocol is None or not self._joined:
            self._hold(data)
        else:
            self.protocol.data_received(data)

    def _hold(self, data: bytes | memoryview) -> None:
        self._held.append(bytes(data))
        limit = self.hold_limit
        if limit is None:
            return
        self._early_bytes += len(data)
        if self._early_bytes > limit and not self._paused_reading and not self._closing:
            self._hold_paused = True  # released by start()/set_protocol, or at loss
            self._paused_reading = True
            self.gate.pause(self)

    @property
    def held_bytes(self) -> int:
        """Inbound bytes held until the local end is connected (counted when ``hold_limit`` is set)."""
        return self._early_bytes

    def remote_eof(self) -> None:
        """The far side half-closed (wires with a half-close only); held until start() like data."""
        if self._lost:
            return
        if self.protocol is None or not self._joined:
            self._eof_held = True
            return
        self.protocol.eof_received()

    def remote_closed(self, error: str | None = None) -> None:
        """The peer closed the channel: close locally without answering (reset when ``error``)."""
        if self._closing:
            self._lose(None)
            return
        self._closing = True
        self._lose(None if error is None else ConnectionResetError(error))

    def link_lost(self) -> None:
        """The link carrying this channel is gone: the local end is reset."""
        self._closing = True
        self._lose(ConnectionResetError("the link closed"))

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._hold_paused = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._paused_reading:
            self._paused_reading = False
            self.gate.resume(self)
        if self.writer is not None and self.protocol is not None:
            self.writer.remove_listener(self.protocol)
        protocol = self.protocol
        held: list[bytes] = []
        if protocol is not None:  # (with no protocol yet, the owner may still deliver self._held)
            held, self._held = self._held, []
        self._forget()
        if protocol is not None:
            if exc is None:  # a clean end delivers what arrived before it
                for chunk in held:
                    protocol.data_received(chunk)
            asyncio.get_running_loop().call_soon(protocol.connection_lost, exc)
