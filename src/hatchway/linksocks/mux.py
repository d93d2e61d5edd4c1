"""Sans-I/O channel state for LinkSocks: named states and the byte ledger that makes Resume exact.

Nothing here does I/O or imports asyncio; the asyncio channel (``channel.py``)
feeds events in and acts on what comes out. Tested without sockets
(``tests/linksocks/test_mux.py``).

**Why a ledger.** When a WebSocket is cut, whatever was in flight on it (the
sender's transport buffer, both kernels' socket buffers, the receiver's
unread frames: easily 6-16 MB) is gone. Upstream's Resume re-attaches the
channel and carries on, so the stream silently gets a hole. Between two
hatchway peers each TCP channel therefore keeps a ledger:

* every Data message carries the byte offset of its *end* in the Sequence
  trailer that the wire format already has (linksocks.md 5.2);
* the receiver acknowledges what it has delivered with a zero-length Data
  whose Sequence is that count, every ``ACK_EVERY`` bytes;
* the sender keeps what was sent but not yet acknowledged (at most
  ``WINDOW`` bytes: beyond it the local socket is not read, which bounds the
  memory) and, on Resume, re-sends from the offset the peer reports;
* the receiver drops bytes it already has (a duplicate) and fails the
  channel loudly when a message starts beyond what it has (a hole).

The capability is offered per channel in an extension after the Connect's
Resume byte and confirmed in the ConnectResponse (see ``protocol.py``): a Go
or pywssocks peer ignores the extension, answers without it, and the channel
runs as upstream does (``Ledger.keep = False``).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import NamedTuple

WINDOW = 16 * 1024 * 1024  # unacknowledged bytes kept for a re-send; beyond it the local socket is not read
ACK_EVERY = 256 * 1024  # the receiver acknowledges after this many delivered bytes


class ChannelState(enum.Enum):
    """The life of one channel, as one value instead of seven booleans."""

    CONNECTING = "connecting"  # Connect sent (requester) or dial in flight (dialer)
    OPEN = "open"  # data flows
    SUSPENDED = "suspended"  # the link is gone; waiting (grace) for a Resume
    RESUMING = "resuming"  # Resume sent; new data waits for the peer's answer
    CLOSED = "closed"  # ended; nothing more is sent or delivered


class ChannelEvent(enum.Enum):
    CONNECTED = "connected"
    LINK_LOST = "link lost"
    RESUME_SENT = "resume sent"
    RESUMED = "resumed"
    CLOSED = "closed"


_TRANSITIONS: dict[tuple[ChannelState, ChannelEvent], ChannelState] = {
    (ChannelState.CONNECTING, ChannelEvent.CONNECTED): ChannelState.OPEN,
    (ChannelState.CONNECTING, ChannelEvent.LINK_LOST): ChannelState.SUSPENDED,
    (ChannelState.CONNECTING, ChannelEvent.RESUMED): ChannelState.CONNECTING,
    (ChannelState.OPEN, ChannelEvent.LINK_LOST): ChannelState.SUSPENDED,
    (ChannelState.OPEN, ChannelEvent.RESUME_SENT): ChannelState.RESUMING,
    (ChannelState.OPEN, ChannelEvent.RESUMED): ChannelState.OPEN,
    (ChannelState.OPEN, ChannelEvent.CONNECTED): ChannelState.OPEN,
    (ChannelState.SUSPENDED, ChannelEvent.RESUME_SENT): ChannelState.RESUMING,
    (ChannelState.SUSPENDED, ChannelEvent.RESUMED): ChannelState.OPEN,
    (ChannelState.SUSPENDED, ChannelEvent.LINK_LOST): ChannelState.SUSPENDED,
    (ChannelState.RESUMING, ChannelEvent.RESUMED): ChannelState.OPEN,
    (ChannelState.RESUMING, ChannelEvent.CONNECTED): ChannelState.OPEN,
    (ChannelState.RESUMING, ChannelEvent.LINK_LOST): ChannelState.SUSPENDED,
    (ChannelState.RESUMING, ChannelEvent.RESUME_SENT): ChannelState.RESUMING,
}


class InvalidTransition(Exception):
    pass


def transition(state: ChannelState, event: ChannelEvent) -> ChannelState:
    """The one transition function. CLOSED absorbs everything; CLOSED is reachable from anywhere."""
    if event is ChannelEvent.CLOSED or state is ChannelState.CLOSED:
        return ChannelState.CLOSED
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} in state {state.value}") from None


class StreamGap(Exception):
    """Bytes the peer says it sent are not here and cannot be recovered: the channel must fail."""


class Ledger:
    """Byte accounting of one channel, both directions.

    Outbound: ``record`` every chunk from the local socket, ``next_unsent``/
    ``transmitted`` as chunks go out, ``on_ack`` when the peer confirms,
    ``rewind`` on Resume. Inbound: ``accept`` for every Data, ``ack_due``
    tells when to acknowledge.
    """

    __slots__ = (
        "keep", "sent", "sent_on_wire", "acked", "_replay", "_replay_start", "_pending",
        "received", "ack_sent", "window", "ack_every",
    )  # fmt: skip

    def __init__(self, keep: bool = True, window: int = WINDOW, ack_every: int = ACK_EVERY) -> None:
        self.keep = keep  # False once the peer is known not to acknowledge (an upstream peer)
        self.window = window
        self.ack_every = ack_every
        self.sent = 0  # bytes taken from the local socket (offset of the end)
        self.sent_on_wire = 0  # bytes handed to a link
        self.acked = 0  # bytes the peer confirmed
        self._replay: deque[bytes | memoryview] = deque()  # on the wire, not acknowledged: [_replay_start, sent_on_wire)
        self._replay_start = 0
        self._pending: deque[bytes | memoryview] = deque()  # not on the wire yet: [sent_on_wire, sent)
        self.received = 0  # bytes delivered to the local socket
        self.ack_sent = 0

    # -- outbound (every step O(1) per chunk; only a Resume walks the kept chunks)
    def record(self, data: bytes) -> None:
        """A chunk from the local socket, to be sent after everything recorded before it."""
        self._pending.append(data)
        self.sent += len(data)

    def next_unsent(self) -> tuple[int, memoryview | bytes] | None:
        """(end offset, bytes) of the next piece not yet on the wire, or None."""
        if not self._pending:
            return None
        chunk = self._pending[0]
        return self.sent_on_wire + len(chunk), chunk

    def transmitted(self, end: int) -> None:
        """The piece :meth:`next_unsent` returned (ending at ``end``) is on the wire."""
        chunk = self._pending.popleft()
        self.sent_on_wire = end
        if self.keep:
            self._replay.append(chunk)
        else:
            self._replay_start = end

    def pass_through(self, size: int) -> None:
        """Fast path of a channel that keeps nothing and has nothing queued: ``size`` bytes sent at once."""
        self.sent += size
        self.sent_on_wire = self.sent
        self._replay_start = self.sent

    def _trim(self, offset: int) -> None:
        replay = self._replay
        start = self._replay_start
        while replay and start + len(replay[0]) <= offset:
            start += len(replay.popleft())
        self._replay_start = start

    @property
    def unacked(self) -> int:
        return self.sent - self.acked if self.keep else self.sent - self.sent_on_wire

    @property
    def window_full(self) -> bool:
        return self.sent - self.acked >= self.window if self.keep else self.sent - self.sent_on_wire >= self.window

    def on_ack(self, offset: int) -> None:
        """The peer has delivered ``offset`` bytes: forget them."""
        if offset <= self.acked:
            return
        if offset > self.sent:
            raise StreamGap(f"the peer acknowledges {offset} bytes, only {self.sent} were sent")
        self.acked = offset
        self._trim(offset)

    def rewind(self, peer_received: int) -> None:
        """Resume: the peer has exactly ``peer_received`` bytes; re-send from there.

        Nothing is forgotten here (only acknowledgements do that): in agent
        mode a later Resume from the far end may ask for older bytes.
        """
        if peer_received > self.sent:
            raise StreamGap(f"the peer claims {peer_received} bytes, only {self.sent} were sent")
        if peer_received > self.sent_on_wire:
            raise StreamGap(f"the peer claims {peer_received} bytes, only {self.sent_on_wire} were put on the wire")
        if peer_received < self._replay_start:
            raise StreamGap(f"{self._replay_start - peer_received} bytes lost in flight were not kept")
        # move what the peer lacks from the replay back in front of the pending chunks
        replay, pending = self._replay, self._pending
        end = self.sent_on_wire
        while replay and end - len(replay[-1]) >= peer_received:
            chunk = replay.pop()
            end -= len(chunk)
            pending.appendleft(chunk)
        if end > peer_received:  # a chunk straddles the peer's count: split it, re-send its tail
            view = memoryview(replay.pop())
            head = len(view) - (end - peer_received)
            replay.append(view[:head])
            pending.appendleft(view[head:])
        self.sent_on_wire = peer_received

    def stop_keeping(self) -> None:
        """The peer does not take part: keep only what is not on the wire yet."""
        self.keep = False
        self._replay.clear()
        self._replay_start = self.sent_on_wire

    # -- inbound
    def accept(self, size: int, end: int) -> int:
        """A Data of ``size`` bytes whose Sequence is ``end`` (0: none, in order).

        Returns how many leading bytes to skip (``size`` for a full duplicate).
        Raises :class:`StreamGap` when the message starts beyond what was received.
        """
        received = self.received
        if end == 0:
            self.received = received + size
            return 0
        start = end - size
        if start > received:
            raise StreamGap(f"bytes {received}..{start} never arrived")
        if end <= received:
            return size
        self.received = end
        return received - start

    def ack_due(self) -> int:
        """The offset to acknowledge now, or 0."""
        if self.received - self.ack_sent >= self.ack_every:
            self.ack_sent = self.received
            return self.received
        return 0


# -- per-channel decisions: the asyncio channel (channel.py) asks, then acts

UNPROVABLE = "data lost: WebSocket cut and the peer keeps no byte ledger"


def resumable_after_cut(ledger: Ledger) -> bool:
    """May a channel outlive a cut WebSocket (suspend, then Resume)?

    Only when the Resume can be proven lossless: the ledger is kept (the peer
    confirmed it, or, still connecting, it was offered and the answer will
    tell). Without it, bytes in flight at the cut (either direction, several
    MB) can be gone and neither end can tell, so the channel is reset instead
    (issue #6 item 3: never a hole, never a silent carry-on).
    """
    return ledger.keep


class DisconnectStep(enum.Enum):
    """What a Disconnect from the peer means for the channel."""

    RESUME_REFUSED = "resume refused"  # lose without a word: what the peer had in flight is gone
    FAR_END_FAILED = "far end failed"  # the far end was reset/aborted: reset the local end too
    TRUNCATED = "truncated"  # a ledger peer closed before announcing the end: bytes may be missing
    CLEAN = "clean"  # drain what arrived, then close


def on_disconnect(
    state: ChannelState, error: str | None, *, peer_ledger: bool, remote_eof: bool, eof_text: str, expired_text: str
) -> DisconnectStep:
    """Classify a Disconnect (``eof_text``/``expired_text``: the wire's clean-end and expired-channel words)."""
    if state is ChannelState.RESUMING or error == expired_text:
        return DisconnectStep.RESUME_REFUSED
    if error is not None and error != eof_text:
        return DisconnectStep.FAR_END_FAILED
    if peer_ledger and not remote_eof:
        return DisconnectStep.TRUNCATED
    return DisconnectStep.CLEAN


class ResponseStep(enum.Enum):
    """What an (unawaited) ConnectResponse means for the channel."""

    IGNORE = "ignore"  # the channel is already closing
    PEER_RESUMED = "peer resumed"  # the dialer answered our Resume with its byte count: rewind and carry on
    NOT_RESUMABLE = "not resumable"  # the dialer took our Resume for a new connection: reset, never mix two streams
    FAILED = "failed"  # fast open: the dial failed after all
    ESTABLISHED = "established"  # fast open: the dial succeeded


def on_connect_response(
    state: ChannelState,
    *,
    closing: bool,
    established: bool,
    resumed: bool,
    peer_ledger: bool,
    offer_ledger: bool,
    success: bool,
    received: int | None,
) -> ResponseStep:
    """Classify a ConnectResponse that no open() is waiting for (fast open, or an answer to a Resume)."""
    if closing:
        return ResponseStep.IGNORE
    if success and received is not None and (resumed or peer_ledger or offer_ledger):
        if state is ChannelState.RESUMING or established:
            return ResponseStep.PEER_RESUMED
    if resumed and established:
        return ResponseStep.NOT_RESUMABLE
    if not success:
        return ResponseStep.FAILED
    return ResponseStep.ESTABLISHED


class InboundKind(enum.Enum):
    """What a received Data message is."""

    HALF_CLOSE = "half-close"  # the far end's EOF at ``end`` (ledger peers only)
    ACK = "ack"  # the peer delivered ``end`` bytes of ours
    EMPTY = "empty"  # a zero-length Data without meaning: nothing to do
    DUPLICATE = "duplicate"  # re-sent after a Resume, already delivered
    GAP = "gap"  # starts beyond what arrived: hold back, the re-send must close the gap
    DELIVER = "deliver"  # hand ``payload[skip:]`` to the local end, then send ``ack`` if non-zero


class Inbound(NamedTuple):
    kind: InboundKind
    end: int = 0
    skip: int = 0
    ack: int = 0
    reason: str = ""


def on_data(ledger: Ledger, size: int, sequence: int, *, peer_ledger: bool, half_close: bool) -> Inbound:
    """Account one Data of ``size`` bytes in ``ledger`` and say what to do with it.

    ``sequence``: the message's Sequence trailer, meaningful only from a ledger
    peer (an upstream peer's Sequence means something else and is ignored).
    """
    end = sequence if peer_ledger else 0
    if not size:
        if not end:
            return Inbound(InboundKind.EMPTY)
        return Inbound(InboundKind.HALF_CLOSE if half_close else InboundKind.ACK, end)
    try:
        skip = ledger.accept(size, end)
    except StreamGap as exc:
        return Inbound(InboundKind.GAP, end - size, reason=str(exc))
    if skip >= size:
        return Inbound(InboundKind.DUPLICATE, end)
    return Inbound(InboundKind.DELIVER, end, skip, ledger.ack_due() if peer_ledger else 0)


class ResumeKind(enum.Enum):
    """What a dialer does with a requester's Connect(Resume = 1) for a live channel."""

    REFUSE = "refuse"  # no byte count (or no ledger here): cannot be proven lossless, reset
    AWAIT_DIAL = "await dial"  # still dialing: the ConnectResponse with our count goes out when the dial is done
    FAILED = "failed"  # the count is impossible or bytes it lacks were not kept: reset
    ANSWER = "answer"  # rewound: answer ConnectResponse(received = ``answer``), then re-send what it lacks


class ResumeRequest(NamedTuple):
    kind: ResumeKind
    answer: int = 0
    reason: str = ""


def on_resume_request(
    state: ChannelState, ledger: Ledger, *, peer_ledger: bool, peer_received: int | None
) -> ResumeRequest:
    """Dialer side of a Resume; on ANSWER the ledger has been rewound to ``peer_received``."""
    if peer_received is None or not peer_ledger:
        return ResumeRequest(ResumeKind.REFUSE, reason=UNPROVABLE)
    if state is ChannelState.CONNECTING:
        return ResumeRequest(ResumeKind.AWAIT_DIAL)
    try:
        ledger.rewind(peer_received)
    except StreamGap as exc:
        return ResumeRequest(ResumeKind.FAILED, reason=f"cannot resume: {exc}")
    return ResumeRequest(ResumeKind.ANSWER, ledger.received)


def learn_peer(ledger: Ledger, *, success: bool, received: int | None, offer_ledger: bool, peer_ledger: bool) -> bool:
    """A ConnectResponse tells whether the dialer keeps the ledger; returns the new ``peer_ledger``.

    An upstream dialer answers without a count: it neither numbers nor acknowledges, so nothing is kept for it.
    """
    if not success:
        return peer_ledger
    if received is not None and offer_ledger:
        return True
    if not peer_ledger and ledger.keep:
        ledger.stop_keeping()
    return peer_ledger
