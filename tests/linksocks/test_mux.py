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
