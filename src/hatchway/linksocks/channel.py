"""A LinkSocks TCP channel: one proxied connection carried over a Link.

:class:`TcpChannel` is the LinkSocks subclass of the shared
:class:`~hatchway.common.channel.Channel` (Data and Disconnect encoding). The
same class serves the requester (SOCKS side) and the dialer (target side).

Beyond the shared channel it adds:

* rebinding to another Link (Resume after a WebSocket drop): while its link
  is gone the channel is *suspended*: the local socket stops being read (the
  relay's pause), nothing is dropped, and a chunk that could not be sent is
  kept until the channel is rebound or the grace period ends;
* a bound on data that arrives before the local end is connected: past
  ``HOLD_LIMIT`` bytes the link's read loop is held (no unbounded buffer);
* the ConnectResponse waiter of the requester side.

Every channel is registered in a :class:`ChannelTable` keyed by the 16-byte
channel id; messages are routed by id across all links of a peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from hatchway.common.channel import Channel
from hatchway.common.wsconn import ConnectionGone, MessageWriter

from . import protocol
from .protocol import Connect, ConnectResponse, Disconnect

log = logging.getLogger("hatchway.linksocks.channel")

HOLD_LIMIT = 1024 * 1024  # bytes held for a channel whose local end is not connected yet
RESUME_PROBE = 0.5  # after Connect(Resume = 1), hold new data this long for an objection from the dialer
EOF_TEXT = "EOF"


class ChannelTable:
    """Channel id -> endpoint, plus a short memory of recently closed ids."""

    RECENT_MAX = 4096

    def __init__(self) -> None:
        self.endpoints: dict[bytes, Any] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()

    def get(self, channel_id: bytes) -> Any:
        return self.endpoints.get(channel_id)

    def add(self, channel_id: bytes, endpoint: Any) -> None:
        self.endpoints[channel_id] = endpoint
        self._recent.pop(channel_id, None)

    def remove(self, channel_id: bytes, endpoint: Any) -> None:
        if self.endpoints.get(channel_id) is endpoint:
            del self.endpoints[channel_id]
            recent = self._recent
            recent[channel_id] = None
            if len(recent) > self.RECENT_MAX:
                recent.popitem(last=False)

    def recently_closed(self, channel_id: bytes) -> bool:
        return channel_id in self._recent

    def __len__(self) -> int:
        return len(self.endpoints)

    def __contains__(self, channel_id: bytes) -> bool:
        return channel_id in self.endpoints


class TcpChannel(Channel):
    """One TCP connection multiplexed over a Link; the relay's transport on the WebSocket side."""

    resumable = True

    def __init__(self, table: ChannelTable, channel_id: bytes, link: Any, address: str = "", port: int = 0) -> None:
        super().__init__(link.writer, link.gate)
        self.id = channel_id
        self.table = table
        self.link = link
        self.address = address
        self.port = port
        self.connect_waiter: asyncio.Future[ConnectResponse] | None = None
        self.established = False
        self.suspended = False
        self.suspended_at = 0.0
        self.resumed = False
        self._probing = False
        self._probe_timer: asyncio.TimerHandle | None = None
        self._pending: list[bytes] = []
        self._held_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        table.add(channel_id, self)
        link.channels.add(self)

    @property
    def name(self) -> str:  # type: ignore[override]
        return protocol.uuid_text(self.id)

    def connect_message(self, resume: bool = False) -> Connect:
        return Connect(protocol.TCP, self.id, self.address, self.port, resume)

    # -- wire encoding
    def _send_data(self, writer: MessageWriter, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.link.send_data(self.id, data)

    def _send_close(self, writer: MessageWriter, reason: str | None) -> None:
        self.link.send(Disconnect(self.id, reason or EOF_TEXT))

    def _forget(self) -> None:
        self.table.remove(self.id, self)
        self.link.channels.discard(self)
        self._pending.clear()
        self._held.clear()
        for timer in (self._timer, self._probe_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._probe_timer = None
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(ConnectResponse(False, self.id, "channel closed"))

    # -- transport interface, adjusted
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if self.suspended or self._probing:
            self._pending.append(bytes(data))
            return
        self.sent += len(data)
        try:
            self._send_data(self.link.writer, data)
        except ConnectionGone:
            self.sent -= len(data)
            self._pending.append(bytes(data))
            self.suspend()

    def pause_reading(self) -> None:
        """Honoured once the relay is joined (a pause before that is the relay's wiring, not a slow reader)."""
        protocol_ = self.protocol
        if protocol_ is not None and getattr(protocol_, "peer", True) is None:
            return
        super().pause_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.address, self.port)
        return super().get_extra_info(name, default)

    # -- events from the dispatcher
    def feed(self, data: bytes | memoryview) -> None:
        if self.protocol is None and not self._lost:
            self._held_bytes += len(data)
            if self._held_bytes > HOLD_LIMIT and not self._paused_reading:
                self._paused_reading = True  # released by the relay's resume_reading at join, or at loss
                self.gate.pause(self)
        super().feed(data)

    def on_data(self, link: Any, message: protocol.Data) -> None:
        if self.suspended and link.alive:
            # a peer without Resume (Go <= 1.10.1) simply carries on over its new WebSocket
            self.rebind(link)
        try:
            payload = protocol.data_payload(message)
        except protocol.ProtocolError as exc:
            log.warning("channel %s: %s", self.name, exc)
            self.reset(str(exc))
            return
        if payload:
            self.feed(payload)

    def on_disconnect(self, link: Any, message: Disconnect) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(ConnectResponse(False, self.id, message.error or "disconnected"))
        self.remote_closed(None)  # always drain what was received, then close

    def on_connect_response(self, link: Any, message: ConnectResponse) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        if self.resumed and self.established and not self._closing:
            # the dialer took our Resume for a new connection (Go <= 1.9, pywssocks): never mix two streams
            log.warning("channel %s: the peer does not support Resume; closing the channel", self.name)
            self.reset("Resume not supported by the peer")
            return
        if not message.success and not self._closing:  # fast open: the dial failed after all
            log.info("channel %s: connect to %s:%d failed: %s", self.name, self.address, self.port, message.error)
            self.reset(message.error or "connect failed")
            return
        self.established = self.established or message.success
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def expect_connect_response(self, timeout: float) -> None:
        """Fast open: tear the channel down unless a successful ConnectResponse arrives in time."""
        self._timer = asyncio.get_running_loop().call_later(timeout, self._connect_timed_out)

    def _connect_timed_out(self) -> None:
        self._timer = None
        if not self.established and not self._closing:
            log.info("channel %s: no ConnectResponse from the peer, closing", self.name)
            self.reset("connect timeout")

    # -- link loss and Resume
    def suspend(self) -> None:
        """The link is gone: stop reading the local socket and keep the channel for a rebind."""
        if self.suspended or self._closing:
            return
        self.suspended = True
        self.suspended_at = asyncio.get_running_loop().time()
        if self.protocol is not None:
            self.link.writer.remove_listener(self.protocol)
            self.protocol.pause_writing()
        if self._paused_reading:
            self.gate.resume(self)
        # stays in link.channels: the link's loss hands it to the grace keeper

    def rebind(self, link: Any, probe: float = 0.0) -> None:
        """Carry on over ``link`` after a Resume: flush what was kept and read the local socket again.

        ``probe`` > 0 (the requester, which just sent Connect with Resume = 1)
        holds new data that long first: a dialer without Resume support answers
        with a fresh ConnectResponse (it dialed again) and the channel is reset
        before any byte reaches that second connection.
        """
        if self._closing:
            return
        was_suspended = self.suspended
        if not was_suspended and self.protocol is not None:
            self.link.writer.remove_listener(self.protocol)
        if not was_suspended and self._paused_reading:
            self.gate.resume(self)
        self.link.channels.discard(self)
        self.link = link
        self.writer = link.writer
        self.gate = link.gate
        link.channels.add(self)
        self.suspended = False
        if self._paused_reading:
            self.gate.pause(self)
        if probe > 0:
            self.resumed = True
            self._probing = True
            self._probe_timer = asyncio.get_running_loop().call_later(probe, self._resume_confirmed)
            return
        self._carry_on()

    def _resume_confirmed(self) -> None:
        self._probe_timer = None
        self._probing = False
        if not self._closing and not self.suspended:
            self._carry_on()

    def _carry_on(self) -> None:
        pending, self._pending = self._pending, []
        for chunk in pending:
            self.write(chunk)
        if self.protocol is not None and not self.suspended:
            self.link.writer.add_listener(self.protocol)  # pauses the protocol again if the writer is full
            if not self.link.writer.paused:
                self.protocol.resume_writing()

    def expire(self) -> None:
        """The grace period ended without a rebind."""
        if self.suspended and not self._closing:
            self._closing = True
            self._lose(ConnectionResetError("WebSocket lost and not resumed"))

    def link_lost(self) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(ConnectResponse(False, self.id, "WebSocket closed"))
        super().link_lost()
