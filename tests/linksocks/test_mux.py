"""linksocks/mux.py without sockets: channel states, the byte ledger, the ledger wire extension."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.linksocks import protocol as p
from hatchway.linksocks.mux import (
    ChannelEvent,
    ChannelState,
    InvalidTransition,
    Ledger,
    StreamGap,
    transition,
)
from hatchway.linksocks.protocol import Connect, ConnectResponse, Data

CID = bytes.fromhex("00112233445566778899aabbccddeeff")


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# ------------------------------------------------------------------ states


@pytest.mark.parametrize(
    "state, event, after",
    [
        (ChannelState.CONNECTING, ChannelEvent.CONNECTED, ChannelState.OPEN),
        (ChannelState.OPEN, ChannelEvent.LINK_LOST, ChannelState.SUSPENDED),
        (ChannelState.SUSPENDED, ChannelEvent.RESUME_SENT, ChannelState.RESUMING),
        (ChannelState.RESUMING, ChannelEvent.RESUMED, ChannelState.OPEN),
        (ChannelState.RESUMING, ChannelEvent.LINK_LOST, ChannelState.SUSPENDED),
        (ChannelState.SUSPENDED, ChannelEvent.RESUMED, ChannelState.OPEN),
        (ChannelState.CONNECTING, ChannelEvent.RESUMED, ChannelState.CONNECTING),
        (ChannelState.OPEN, ChannelEvent.CLOSED, ChannelState.CLOSED),
        (ChannelState.CLOSED, ChannelEvent.CONNECTED, ChannelState.CLOSED),
    ],
)
def test_transitions(state, event, after):
    assert transition(state, event) is after


def test_a_connecting_channel_cannot_be_resumed_by_us():
    with pytest.raises(InvalidTransition):
        transition(ChannelState.CONNECTING, ChannelEvent.RESUME_SENT)


@given(st.lists(st.sampled_from(list(ChannelEvent)), max_size=30))
def test_closed_is_final_and_every_path_stays_in_the_state_set(events):
    state = ChannelState.CONNECTING
    for event in events:
        try:
            state = transition(state, event)
        except InvalidTransition:
            continue
        assert isinstance(state, ChannelState)
        if event is ChannelEvent.CLOSED:
            assert state is ChannelState.CLOSED
    if ChannelEvent.CLOSED in events:
        assert state is ChannelState.CLOSED


# ------------------------------------------------------------------ ledger, golden


def drain(ledger: Ledger) -> list[tuple[int, bytes]]:
    out = []
    while (item := ledger.next_unsent()) is not None:
        end, chunk = item
        out.append((end, bytes(chunk)))
        ledger.transmitted(end)
    return out


def test_ledger_numbers_chunks_by_their_end_offset():
    ledger = Ledger()
    ledger.record(b"abc")
    ledger.record(b"defg")
    assert drain(ledger) == [(3, b"abc"), (7, b"defg")]
    assert ledger.unacked == 7


def test_ack_forgets_whole_chunks_only():
    ledger = Ledger()
    for chunk in (b"abc", b"defg", b"hi"):
        ledger.record(chunk)
    drain(ledger)
    ledger.on_ack(5)  # inside "defg": it stays
    ledger.rewind(5)
    assert drain(ledger) == [(7, b"fg"), (9, b"hi")]
    ledger.on_ack(9)
    ledger.rewind(9)
    assert drain(ledger) == []


def test_rewind_resends_what_the_peer_lacks():
    ledger = Ledger()
    ledger.record(b"0123456789")
    drain(ledger)
    ledger.rewind(4)
    assert drain(ledger) == [(10, b"456789")]


def test_rewind_beyond_what_was_sent_or_before_what_was_kept_is_a_gap():
    ledger = Ledger()
    ledger.record(b"0123456789")
    drain(ledger)
    with pytest.raises(StreamGap):
        ledger.rewind(11)
    ledger.on_ack(10)
    with pytest.raises(StreamGap):
        ledger.rewind(3)


def test_a_ledger_that_keeps_nothing_cannot_resend():
    ledger = Ledger(keep=False)
    ledger.record(b"abcdef")
    assert drain(ledger) == [(6, b"abcdef")]
    with pytest.raises(StreamGap):
        ledger.rewind(2)


def test_window_fills_and_acks_reopen_it():
    ledger = Ledger(window=8)
    ledger.record(b"12345678")
    drain(ledger)
    assert ledger.window_full
    ledger.on_ack(4)
    assert not ledger.window_full


def test_accept_in_order_duplicate_overlap_and_hole():
    ledger = Ledger()
    assert ledger.accept(4, 4) == 0  # bytes 0..4
    assert ledger.accept(4, 4) == 4  # the same again: all skipped
    assert ledger.accept(4, 6) == 2  # 2..6 overlaps 2 bytes
    assert ledger.received == 6
    assert ledger.accept(3, 0) == 0  # unnumbered: in order
    assert ledger.received == 9
    with pytest.raises(StreamGap):
        ledger.accept(2, 20)


def test_acks_every_so_many_bytes():
    ledger = Ledger(ack_every=10)
    ledger.accept(6, 6)
    assert ledger.ack_due() == 0
    ledger.accept(6, 12)
    assert ledger.ack_due() == 12
    assert ledger.ack_due() == 0


def test_an_ack_for_bytes_never_sent_is_a_gap():
    ledger = Ledger()
    ledger.record(b"ab")
    with pytest.raises(StreamGap):
        ledger.on_ack(3)


# ------------------------------------------------------------------ ledger, properties


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=30),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=6),
    ack_every=st.integers(1, 64),
)
def test_any_cut_and_resume_delivers_every_byte_once_in_order(chunks, cuts, ack_every):
    """Sender and receiver ledgers; the wire loses an arbitrary tail at each cut; Resume repairs it."""
    sender, receiver = Ledger(window=1 << 30), Ledger(ack_every=ack_every)
    stream = b"".join(chunks)
    delivered = bytearray()
    in_flight: list[tuple[int, bytes]] = []
    pending_cuts = sorted(cuts)
    step = 0

    def deliver(end: int, data: bytes) -> None:
        skip = receiver.accept(len(data), end)
        delivered.extend(data[skip:])
        ack = receiver.ack_due()
        if ack:
            sender.on_ack(ack)

    for chunk in chunks:
        sender.record(chunk)
        in_flight.extend(drain(sender))
        step += 1
        while pending_cuts and pending_cuts[0][0] % (len(chunks) + 1) <= step:
            _, keep = pending_cuts.pop(0)
            arrived = in_flight[: keep % (len(in_flight) + 1)]
            in_flight = []
            for end, data in arrived:
                deliver(end, data)
            sender.rewind(receiver.received)  # the Resume exchange
            in_flight.extend(drain(sender))
    for end, data in in_flight:
        deliver(end, data)
    assert bytes(delivered) == stream
    assert sender.sent == receiver.received == len(stream)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 20)), max_size=40))
def test_receiver_never_delivers_past_a_hole(messages):
    receiver = Ledger()
    for start, size in messages:
        before = receiver.received
        try:
            skip = receiver.accept(size, start + size)
        except StreamGap:
            assert start > before
            assert receiver.received == before
            continue
        assert start <= before
        assert receiver.received == max(before, start + size)
        assert skip == min(size, before - start)


# ------------------------------------------------------------------ the wire extension, golden


def test_connect_with_the_ledger_extension():
    wire = p.encode(Connect(p.TCP, CID, "h", 80, False, 0))
    assert wire == h("01", "03", "01", CID.hex(), "01", "68", "0050", "00", "687701", "0000000000000000")
    assert p.decode(wire) == (1, Connect(p.TCP, CID, "h", 80, False, 0))
    resume = p.encode(Connect(p.TCP, CID, "h", 80, True, 0x0102030405))
    assert resume.endswith(h("01", "687701", "0000000102030405"))
    assert p.decode(resume)[1].received == 0x0102030405


def test_udp_connect_with_the_ledger_extension():
    wire = p.encode(Connect(p.UDP, CID, resume=True, received=7))
    assert wire == h("01", "03", "02", CID.hex(), "01", "687701", "0000000000000007")
    assert p.decode(wire)[1] == Connect(p.UDP, CID, resume=True, received=7)


def test_connect_response_with_the_ledger_extension():
    wire = p.encode(ConnectResponse(True, CID, received=9))
    assert wire == h("01", "05", "01", CID.hex(), "687701", "0000000000000009")
    assert p.decode(wire)[1] == ConnectResponse(True, CID, received=9)


def test_without_the_magic_trailing_bytes_are_not_an_extension():
    plain = p.encode(Connect(p.TCP, CID, "h", 80, True)) + b"xyz0123456789"
    assert p.decode(plain)[1] == Connect(p.TCP, CID, "h", 80, True)
    assert p.decode(p.encode(ConnectResponse(True, CID)) + b"\x00" * 11)[1] == ConnectResponse(True, CID)


def test_an_ack_is_a_zero_length_data_with_a_sequence():
    wire = p.data_header(CID, 0) + p.sequence_trailer(1 << 20)
    assert wire == h("01", "04", "01", CID.hex(), "00", "00000000", "0000000000100000")
    assert p.decode(wire)[1] == Data(p.TCP, CID, b"", sequence=1 << 20)


def test_a_half_close_is_a_zero_length_data_flagged_0x80_with_the_end_offset():
    wire = p.data_header(CID, 0, compression=p.HALF_CLOSE) + p.sequence_trailer(42)
    assert wire == h("01", "04", "01", CID.hex(), "80", "00000000", "000000000000002a")
    assert p.decode(wire)[1] == Data(p.TCP, CID, b"", p.HALF_CLOSE, sequence=42)


def test_repeated_rewinds_inside_chunks_keep_the_accounting_exact():
    ledger = Ledger()
    for chunk in (b"abcd", b"efgh", b"ijkl"):
        ledger.record(chunk)
    drain(ledger)
    ledger.rewind(6)  # inside "efgh"
    assert drain(ledger) == [(8, b"gh"), (12, b"ijkl")]
    ledger.rewind(2)  # inside "abcd", after the split
    assert drain(ledger) == [(4, b"cd"), (6, b"ef"), (8, b"gh"), (12, b"ijkl")]
    ledger.on_ack(12)
    assert ledger.unacked == 0 and ledger.next_unsent() is None


# -- per-channel decisions (mux.on_data / on_disconnect / on_connect_response): the rules channel.py acts on
from hatchway.linksocks import mux as m  # noqa: E402


def test_data_from_an_upstream_peer_ignores_its_sequence() -> None:
    ledger = m.Ledger(keep=False)
    step = m.on_data(ledger, 5, 123456, peer_ledger=False, half_close=False)
    assert step == m.Inbound(m.InboundKind.DELIVER, 0, 0, 0)
    assert ledger.received == 5
    assert m.on_data(ledger, 0, 99, peer_ledger=False, half_close=True).kind is m.InboundKind.EMPTY


def test_data_from_a_ledger_peer_golden() -> None:
    ledger = m.Ledger(ack_every=8)
    assert m.on_data(ledger, 5, 5, peer_ledger=True, half_close=False) == m.Inbound(m.InboundKind.DELIVER, 5, 0, 0)
    # overlaps a re-send: skip the 3 bytes already delivered, and 10 >= 8 delivered -> acknowledge 10
    assert m.on_data(ledger, 8, 10, peer_ledger=True, half_close=False) == m.Inbound(m.InboundKind.DELIVER, 10, 3, 10)
    assert m.on_data(ledger, 4, 10, peer_ledger=True, half_close=False) == m.Inbound(m.InboundKind.DUPLICATE, 10)
    gap = m.on_data(ledger, 4, 20, peer_ledger=True, half_close=False)
    assert (gap.kind, gap.end, gap.reason) == (m.InboundKind.GAP, 16, "bytes 10..16 never arrived")
    assert ledger.received == 10
    assert m.on_data(ledger, 0, 10, peer_ledger=True, half_close=True) == m.Inbound(m.InboundKind.HALF_CLOSE, 10)
    assert m.on_data(ledger, 0, 7, peer_ledger=True, half_close=False) == m.Inbound(m.InboundKind.ACK, 7)


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30), st.data())
@settings(max_examples=200, deadline=None)
def test_data_delivers_every_byte_once_in_order(sizes: list[int], data: st.DataObject) -> None:
    """Messages re-sent from any earlier offset (a Resume) never deliver a byte twice or skip one."""
    stream = bytes(i % 251 for i in range(sum(sizes)))
    ends, end = [], 0
    for size in sizes:
        end += size
        ends.append(end)
    ledger = m.Ledger()
    delivered = bytearray()
    index = 0
    while index < len(ends):
        start = ends[index - 1] if index else 0
        step = m.on_data(ledger, ends[index] - start, ends[index], peer_ledger=True, half_close=False)
        assert step.kind in (m.InboundKind.DELIVER, m.InboundKind.DUPLICATE)
        if step.kind is m.InboundKind.DELIVER:
            delivered += stream[start + step.skip:ends[index]]
        index += 1
        if data.draw(st.booleans()):  # a Resume: the sender goes back to some earlier message
            index = data.draw(st.integers(min_value=0, max_value=index))
    assert bytes(delivered) == stream


@pytest.mark.parametrize(
    ("state", "error", "peer_ledger", "remote_eof", "expected"),
    [
        (ChannelState.RESUMING, None, False, False, m.DisconnectStep.RESUME_REFUSED),
        (ChannelState.OPEN, "channel expired", True, True, m.DisconnectStep.RESUME_REFUSED),
        (ChannelState.OPEN, "connection reset by peer", True, True, m.DisconnectStep.FAR_END_FAILED),
        (ChannelState.OPEN, "EOF", True, False, m.DisconnectStep.TRUNCATED),
        (ChannelState.OPEN, None, True, False, m.DisconnectStep.TRUNCATED),
        (ChannelState.OPEN, None, True, True, m.DisconnectStep.CLEAN),
        (ChannelState.OPEN, "EOF", False, False, m.DisconnectStep.CLEAN),
    ],
)
def test_disconnect_steps(state, error, peer_ledger, remote_eof, expected) -> None:
    step = m.on_disconnect(state, error, peer_ledger=peer_ledger, remote_eof=remote_eof, eof_text="EOF",
                           expired_text="channel expired")
    assert step is expected


def _response(state=ChannelState.OPEN, *, closing=False, established=False, resumed=False, peer_ledger=False,
              offer_ledger=False, success=True, received=None):
    return m.on_connect_response(state, closing=closing, established=established, resumed=resumed,
                                 peer_ledger=peer_ledger, offer_ledger=offer_ledger, success=success,
                                 received=received)


def test_connect_response_steps() -> None:
    assert _response(closing=True, success=False) is m.ResponseStep.IGNORE
    assert _response(ChannelState.RESUMING, offer_ledger=True, received=7) is m.ResponseStep.PEER_RESUMED
    assert _response(established=True, peer_ledger=True, received=0) is m.ResponseStep.PEER_RESUMED
    # Go <= 1.9 / pywssocks dialed again instead of resuming: never mix two streams
    assert _response(established=True, resumed=True) is m.ResponseStep.NOT_RESUMABLE
    assert _response(success=False) is m.ResponseStep.FAILED
    assert _response() is m.ResponseStep.ESTABLISHED
    assert _response(offer_ledger=True, received=0) is m.ResponseStep.ESTABLISHED  # fast open, first answer
