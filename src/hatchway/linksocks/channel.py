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
* the ConnectResponse waiter of the requester side;
* the byte ledger (``mux.Ledger``) with a hatchway peer: Data carries its end
  offset, the receiver acknowledges, the sender keeps what is unacknowledged
  and re-sends from the peer's count on Resume; a hole or an impossible
  count fails the channel loudly (reset), never a silent gap.

Every channel is registered in a :class:`~.channel_table.ChannelTable` keyed
by the 16-byte channel id; messages are routed by id across all links of a peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hatchway.common.channel import Channel
from hatchway.common.sink import MessageSink, SinkClosed

from . import mux, protocol
from .channel_table import CHANNEL_EXPIRED, EOF_TEXT, ChannelTable, Endpoint, ResumableEndpoint
from .mux import ChannelEvent, ChannelState, DisconnectStep, InboundKind, Ledger, ResponseStep, StreamGap, transition
from .protocol import Connect, ConnectResponse, Disconnect

__all__ = [
    "CHANNEL_EXPIRED", "EOF_TEXT", "HOLD_LIMIT", "RESUME_PROBE", "RESUME_WAIT",
    "ChannelTable", "Endpoint", "ResumableEndpoint", "TcpChannel",
]  # fmt: skip

log = logging.getLogger(__name__)

HOLD_LIMIT = 1024 * 1024  # bytes held for a channel whose local end is not connected yet
RESUME_PROBE = 0.5  # after Connect(Resume = 1), hold new data this long for an objection from an upstream dialer
RESUME_WAIT = 15.0  # a hatchway dialer answers a Resume within this, else the channel fails
_AWAY = (ChannelState.SUSPENDED, ChannelState.RESUMING)


class TcpChannel(Channel):
    """One TCP connection multiplexed over a Link; the relay's transport on the WebSocket side.

    ``offer_ledger``: a requester offers the ledger extension in its Connect;
    a dialer passes whether the Connect carried it (then the peer is hatchway).
    """

    resumable = True

    def __init__(
        self,
        table: ChannelTable,
        channel_id: bytes,
        link: Any,
        address: str = "",
        port: int = 0,
        *,
        offer_ledger: bool = True,
        peer_ledger: bool = False,
    ) -> None:
        super().__init__(link.writer, link.gate, started=False, hold_limit=HOLD_LIMIT)
        self.id = channel_id
        self.table = table
        self.link = link
        self.address = address
        self.port = port
        self.connect_waiter: asyncio.Future[ConnectResponse] | None = None
        self.state = ChannelState.CONNECTING
        self.established = False
        self.suspended_at = 0.0
        self.resumed = False  # a Resume was sent to a peer not known to keep a ledger
        self.offer_ledger = offer_ledger
        self.peer_ledger = peer_ledger  # the peer numbers its Data and acknowledges ours
        self.ledger = Ledger(keep=offer_ledger or peer_ledger)
        self._writer_paused = False
        self._flow_paused = False
        self._local_eof = False  # our local end sent EOF (told to a ledger peer as a half-close)
        self._remote_eof = False
        self._cut = False  # reset at a WebSocket cut (an upstream peer): its id is told to the peer's next link
        self._probe_timer: asyncio.TimerHandle | None = None
        self._gap_timer: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        table.add(channel_id, self)
        link.channels.add(self)

    @property
    def name(self) -> str:  # type: ignore[override]
        return protocol.uuid_text(self.id)

    @property
    def suspended(self) -> bool:
        return self.state is ChannelState.SUSPENDED

    def _event(self, event: ChannelEvent) -> None:
        self.state = transition(self.state, event)

    def connect_message(self, resume: bool = False) -> Connect:
        received = self.ledger.received if self.offer_ledger else None
        return Connect(protocol.TCP, self.id, self.address, self.port, resume, received)

    # -- wire encoding
    def _send_data(self, writer: MessageSink, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.link.send_data(self.id, data)

    def _send_close(self, writer: MessageSink, reason: str | None) -> None:
        if reason is None and self.peer_ledger and not self._local_eof:
            # a clean end tells a ledger peer where the stream ends, so it can tell a complete stream from a cut one
            self._local_eof = True
            self.link.send_half_close(self.id, self.ledger.sent)
        self.link.send(Disconnect(self.id, reason or EOF_TEXT))

    def _forget(self) -> None:
        self.state = ChannelState.CLOSED
        self.table.remove(self.id, self)
        self.link.channels.discard(self)
        self.link.writer.remove_listener(self)
        self.ledger = Ledger(keep=False)
        self._held.clear()
        for timer in (self._timer, self._probe_timer, self._gap_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._probe_timer = self._gap_timer = None
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(ConnectResponse(False, self.id, "channel closed"))

    # -- transport interface, adjusted
    def set_protocol(self, protocol_: Any) -> None:
        """The relay's Pump; flow control toward it goes through :meth:`_update_flow`."""
        self.protocol = protocol_
        protocol_.connection_made(self)
        if self.started:
            self._flush_held()
        if self.state is ChannelState.CONNECTING:
            self._event(ChannelEvent.CONNECTED)
        self.link.writer.add_listener(self)
        self._update_flow()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        ledger = self.ledger
        size = len(data)
        if not size:
            return
        if not ledger.keep and self.state is ChannelState.OPEN and ledger.sent_on_wire == ledger.sent:
            try:  # an upstream peer, nothing queued: straight out
                self.link.send_data(self.id, data)
            except SinkClosed:
                ledger.record(bytes(data))
                self.suspend()
                return
            ledger.pass_through(size)
            self.sent += size
            return
        ledger.record(data if type(data) is bytes else bytes(data))
        if self.state is ChannelState.OPEN:
            self._transmit()
        if ledger.window_full:
            self._update_flow()

    # -- half-close (#6 item 15): only a ledger peer understands it; upstream's wire has none
    def can_write_eof(self) -> bool:
        return self.peer_ledger

    def write_eof(self) -> None:
        """Local EOF: a ledger peer is told (its target gets EOF, the reply still comes); else the channel ends."""
        if not self.peer_ledger:
            self.close()
            return
        if self._closing or self._local_eof:
            return
        self._local_eof = True
        if self.state is ChannelState.OPEN:
            self._send_half_close()

    def _send_half_close(self) -> None:
        try:
            self.link.send_half_close(self.id, self.ledger.sent)
        except SinkClosed:
            self.suspend()  # sent again after the Resume (_carry_on)

    def _on_half_close(self, end: int) -> None:
        if end != self.ledger.received:
            self._fail(f"half-close at {end}, but {self.ledger.received} bytes arrived")
            return
        if not self._remote_eof:
            self._remote_eof = True
            self.remote_eof()

    def _transmit(self) -> None:
        """Send what the ledger has not put on the wire yet (numbered when the peer keeps a ledger)."""
        ledger = self.ledger
        numbered = self.peer_ledger
        link = self.link
        while True:
            item = ledger.next_unsent()
            if item is None:
                return
            end, chunk = item
            try:
                link.send_data(self.id, chunk, end if numbered else 0)
            except SinkClosed:
                self.suspend()
                return
            ledger.transmitted(end)
            self.sent = ledger.sent_on_wire

    # -- flow control: the link's writer (we are its listener), the window, suspension
    def pause_writing(self) -> None:
        self._writer_paused = True
        self._update_flow()

    def resume_writing(self) -> None:
        self._writer_paused = False
        self._update_flow()

    def _update_flow(self) -> None:
        """Stop reading the local socket while the writer is full, the link is gone or the window is full."""
        protocol_ = self.protocol
        if protocol_ is None:
            return
        paused = (
            self._writer_paused
            or self.state is not ChannelState.OPEN
            or self.ledger.window_full
        )
        if paused != self._flow_paused and not (paused and self._closing):
            self._flow_paused = paused
            if paused:
                protocol_.pause_writing()
            else:
                protocol_.resume_writing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.address, self.port)
        return super().get_extra_info(name, default)

    # -- events from the dispatcher
    def on_data(self, link: Any, message: protocol.Data) -> None:
        if self.state in _AWAY and not self.peer_ledger and link.alive:
            # a peer without the ledger carrying on over its new WebSocket (Go <= 1.10.1): what was in flight
            # at the cut may be gone and nothing can tell; reset rather than deliver after a possible hole
            self._move_to(link)
            self._fail(mux.UNPROVABLE)
            return
        try:
            payload = protocol.data_payload(message)
        except protocol.ProtocolError as exc:
            log.warning("channel %s: %s", self.name, exc)
            self.reset(str(exc))
            return
        size = len(payload)
        if size and self._lost:
            return
        step = mux.on_data(self.ledger, size, message.sequence, peer_ledger=self.peer_ledger,
                           half_close=message.compression == protocol.HALF_CLOSE)
        kind = step.kind
        if kind is InboundKind.DELIVER:
            self.feed(memoryview(payload)[step.skip:] if step.skip else payload)
            if step.ack and self.state is ChannelState.OPEN:
                try:
                    self.link.send_ack(self.id, step.ack)
                except SinkClosed:
                    pass
        elif kind is InboundKind.ACK:
            self._on_ack(step.end)
        elif kind is InboundKind.HALF_CLOSE:
            self._on_half_close(step.end)
        elif kind is InboundKind.GAP:
            # Bytes beyond a gap: right after a Resume the far end's newer data can overtake the re-sent
            # part (agent mode: two links). They are not delivered (nor acknowledged, so the sender keeps
            # them and re-sends them); the gap must close within RESUME_WAIT, else the channel fails.
            self._await_gap(step.end, step.reason)

    def _await_gap(self, start: int, reason: str) -> None:
        if self._gap_timer is not None:
            return
        received = self.ledger.received

        def check() -> None:
            self._gap_timer = None
            if not self._closing and self.ledger.received <= received:
                self._fail(f"data lost: {reason}")

        self._gap_timer = asyncio.get_running_loop().call_later(RESUME_WAIT, check)

    def _on_ack(self, offset: int) -> None:
        ledger = self.ledger
        was_full = ledger.window_full
        try:
            ledger.on_ack(offset)
        except StreamGap as exc:
            self._fail(str(exc))
            return
        if was_full and not ledger.window_full:
            self._update_flow()

    def _fail(self, reason: str) -> None:
        """Loudly: the peer gets a Disconnect with the reason, the local socket a reset."""
        if self._closing:
            return
        log.warning("channel %s: %s; resetting it", self.name, reason)
        self.reset(reason)

    def on_disconnect(self, link: Any, message: Disconnect) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(ConnectResponse(False, self.id, message.error or "disconnected"))
        error = message.error
        step = mux.on_disconnect(self.state, error, peer_ledger=self.peer_ledger, remote_eof=self._remote_eof,
                                 eof_text=EOF_TEXT, expired_text=CHANNEL_EXPIRED)
        if step is DisconnectStep.RESUME_REFUSED:
            self.fail(ConnectionResetError(f"Resume refused: {error or 'disconnected'}"))
        elif step is DisconnectStep.FAR_END_FAILED:
            self.remote_closed(error)  # the far end failed (reset, aborted, stalled): the local end is reset too
        elif step is DisconnectStep.TRUNCATED:
            self.remote_closed("closed before the end of the stream arrived")
        else:
            self.remote_closed(None)  # drain what was received, then close

    def on_connect_response(self, link: Any, message: ConnectResponse) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            self._learn_peer(message)
            waiter.set_result(message)
            return
        step = mux.on_connect_response(
            self.state, closing=self._closing, established=self.established, resumed=self.resumed,
            peer_ledger=self.peer_ledger, offer_ledger=self.offer_ledger, success=message.success,
            received=message.received,
        )
        if step is ResponseStep.PEER_RESUMED:
            assert message.received is not None
            self._learn_peer(message)
            self._peer_resumed(message.received)
        elif step is ResponseStep.NOT_RESUMABLE:
            log.warning("channel %s: the peer does not support Resume; closing the channel", self.name)
            self.reset("Resume not supported by the peer")
        elif step is ResponseStep.FAILED:
            log.info("channel %s: connect to %s:%d failed: %s", self.name, self.address, self.port, message.error)
            self.reset(message.error or "connect failed")
        elif step is ResponseStep.ESTABLISHED:
            self._learn_peer(message)
            self.established = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _learn_peer(self, message: ConnectResponse) -> None:
        self.peer_ledger = mux.learn_peer(self.ledger, success=message.success, received=message.received,
                                          offer_ledger=self.offer_ledger, peer_ledger=self.peer_ledger)

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
        if self._closing or self.state is ChannelState.SUSPENDED:
            return
        if not mux.resumable_after_cut(self.ledger):
            self._cut = True  # the grace keeper Disconnects this id on the peer's next link
            log.debug("channel %s: %s; resetting it", self.name, mux.UNPROVABLE)
            self.fail(ConnectionResetError(mux.UNPROVABLE))
            self.link.channels.add(self)  # listed until the link's loss reaches the grace keeper (cut_id)
            return
        self._event(ChannelEvent.LINK_LOST)
        self.suspended_at = time.monotonic()
        self.link.writer.remove_listener(self)
        self._writer_paused = False
        self._cancel_probe()
        self._update_flow()
        if self._paused_reading:
            self.gate.resume(self)
        # stays in link.channels: the link's loss hands it to the grace keeper

    def _move_to(self, link: Any) -> None:
        if self.state is not ChannelState.SUSPENDED:
            self.link.writer.remove_listener(self)
            if self._paused_reading:
                self.gate.resume(self)
        self.link.channels.discard(self)
        self.link = link
        self.writer = link.writer
        self.gate = link.gate
        link.channels.add(self)
        if self._paused_reading:
            self.gate.pause(self)

    def rebind(self, link: Any, probe: float = 0.0) -> None:
        """Carry on over ``link`` after a Resume.

        The requester (``probe`` > 0, it just sent Connect with Resume = 1)
        waits for the dialer's answer before sending anything: a hatchway
        dialer answers with its byte count (then whatever it lacks is re-sent);
        an upstream dialer without Resume answers with a fresh ConnectResponse
        (it dialed again) and the channel is reset before any byte reaches that
        second connection; Go 1.10 answers nothing, so after ``probe`` seconds
        the channel carries on as upstream does.
        """
        if self._closing:
            return
        self._move_to(link)
        if probe > 0:
            self._event(ChannelEvent.RESUME_SENT)
            self.resumed = not self.peer_ledger
            wait = RESUME_WAIT if self.peer_ledger else probe
            self._cancel_probe()
            self._probe_timer = asyncio.get_running_loop().call_later(wait, self._resume_unanswered)
            self._update_flow()
            return
        self._event(ChannelEvent.RESUMED)
        self._carry_on()

    def cut_id(self) -> bytes | None:
        return self.id if self._cut else None

    def resume_from_peer(self, link: Any, peer_received: int | None) -> None:
        """Dialer side: the requester sent Connect(Resume = 1) on ``link``, with its byte count if it keeps a ledger."""
        if self._closing:
            return
        step = mux.on_resume_request(self.state, self.ledger, peer_ledger=self.peer_ledger,
                                     peer_received=peer_received)
        self._move_to(link)
        if step.kind is mux.ResumeKind.AWAIT_DIAL:
            return  # the ConnectResponse (with our count) goes out on ``link`` when the dial is done
        if step.kind is not mux.ResumeKind.ANSWER:
            self._fail(step.reason)  # REFUSE: a requester without a count cannot say what it has
            return
        try:
            link.send(ConnectResponse(True, self.id, received=step.answer))
        except SinkClosed:
            self.suspend()
            return
        self.ledger.ack_sent = step.answer
        self._event(ChannelEvent.RESUMED)
        self._carry_on()

    def _peer_resumed(self, peer_received: int) -> None:
        """Requester side: the dialer answered our Resume (or, in agent mode, the far end resumed)."""
        self._cancel_probe()
        try:
            self.ledger.rewind(peer_received)
        except StreamGap as exc:
            self._fail(f"cannot resume: {exc}")
            return
        self.resumed = False
        if self.state is not ChannelState.SUSPENDED:
            self._event(ChannelEvent.RESUMED)
            self._carry_on()

    def _resume_unanswered(self) -> None:
        self._probe_timer = None
        if self._closing or self.state is not ChannelState.RESUMING:
            return
        if self.peer_ledger:
            self._fail(f"no answer to Resume within {RESUME_WAIT:g} s")
            return
        # an upstream dialer that ignores Resume (Go 1.10) would carry on after whatever was lost in flight
        self._fail(mux.UNPROVABLE)

    def _cancel_probe(self) -> None:
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None

    def _carry_on(self) -> None:
        self._transmit()
        if self._local_eof and self.state is ChannelState.OPEN:
            self._send_half_close()  # again after a Resume: the first may have been lost with the link
        if self.protocol is not None and self.state is ChannelState.OPEN:
            self._writer_paused = False
            self.link.writer.add_listener(self)  # pauses us again if the writer is full
            self._update_flow()

    def expire(self) -> None:
        """The grace period ended without a rebind."""
        if self.state is ChannelState.SUSPENDED and not self._closing:
            self.fail(ConnectionResetError("WebSocket lost and not resumed"))

    def link_lost(self) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(ConnectResponse(False, self.id, "WebSocket closed"))
        super().link_lost()
