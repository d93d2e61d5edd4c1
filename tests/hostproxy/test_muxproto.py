"""The socket bridge's protocol without sockets: golden vectors, framing errors, close rules (cases 58, 76)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.hostproxy.muxproto import (
    CLOSE,
    DATA,
    MAX_DATA,
    MAX_FRAME,
    OPEN,
    PUBKEY,
    READY,
    BridgeProtocol,
    Closed,
    Data,
    Failed,
    FrameError,
    Opened,
    PubKey,
    Ready,
    encode_frame,
    message,
)


def test_golden_vectors() -> None:
    assert encode_frame(DATA, 42, b"hello") == bytes.fromhex("0000000a" "01" "0000002a") + b"hello"
    assert encode_frame(OPEN, 1, b"ssh-agent") == bytes.fromhex("0000000e" "02" "00000001") + b"ssh-agent"
    assert encode_frame(READY, 0) == bytes.fromhex("00000005" "05" "00000000")


def pair() -> tuple[BridgeProtocol, BridgeProtocol]:
    return BridgeProtocol("host"), BridgeProtocol("container")


def wire(msg: bytes) -> bytes:
    return len(msg).to_bytes(4, "big") + msg


def test_open_data_round_trip_and_close_without_ping_pong() -> None:
    host, ctr = pair()
    stream, msg = ctr.open_stream("ssh-agent")
    assert stream == 1 and host.receive_data(wire(msg)) == [Opened(1, "ssh-agent")]
    ctr.streams[42] = "ssh-agent"
    host.streams[42] = "ssh-agent"
    assert host.receive_data(wire(ctr.data_header(42) + b"hello")) == [Data(42, b"hello")]
    close = ctr.close(1)
    assert close is not None and ctr.close(1) is None
    assert host.receive_data(wire(close)) == [Closed(1)]
    (answer,) = host.messages_to_send()
    assert answer == message(CLOSE, 1)
    assert ctr.receive_data(wire(answer)) == [] and ctr.messages_to_send() == []  # the stream is gone: no answer


def test_framing_errors_and_ignored_frames() -> None:
    host, _ = pair()
    with pytest.raises(FrameError, match="message too short"):
        host.receive_data(b"\x00\x00\x00\x04" + b"\x01\x00\x00\x00")
    with pytest.raises(FrameError, match="message too large"):
        BridgeProtocol("host").receive_data((1 << 20 | 1).to_bytes(4, "big") + b"\x01")
    fresh = BridgeProtocol("host")
    assert fresh.receive_data(encode_frame(99, 0, b"x") + encode_frame(DATA, 7, b"lost")) == []
    assert fresh.receive_data(encode_frame(READY, 0)) == [Ready()]
    assert fresh.receive_data(encode_frame(6, 0, b"boom")) == [Failed("boom")]
    ctr = BridgeProtocol("container")
    assert ctr.receive_data(encode_frame(PUBKEY, 0, b"")) == [PubKey(b"")]
    assert ctr.receive_data(encode_frame(READY, 0)) == []  # not meaningful for this side: ignored


def test_stream_cap_and_bad_types_refused() -> None:
    host = BridgeProtocol("host", max_streams=2)
    frames = b"".join(encode_frame(OPEN, i, b"ssh-agent") for i in (1, 2, 3)) + encode_frame(OPEN, 4, b"shell")
    assert [type(e) for e in host.receive_data(frames)] == [Opened, Opened]
    assert host.messages_to_send() == [message(CLOSE, 3), message(CLOSE, 4)] and host.refused == 2


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 50))
def test_any_split_gives_the_same_events(payloads: list[bytes], cut: int) -> None:
    stream = b"".join(encode_frame(DATA, 5, p) for p in payloads)
    whole = BridgeProtocol("host")
    whole.streams[5] = "ssh-agent"
    expected = whole.receive_data(stream)
    split = BridgeProtocol("host")
    split.streams[5] = "ssh-agent"
    got = []
    for i in range(0, len(stream), cut):
        got += split.receive_data(stream[i:i + cut])
    assert got == expected == [Data(5, p) for p in payloads]


def test_large_data_frames_from_a_reused_receive_buffer() -> None:
    """Payloads up to MAX_DATA (one 256 KiB socket read) survive any split, fed from one buffer overwritten
    after every call (as a reader reusing its receive buffer would): received payloads are not views of it."""
    payloads = [bytes([i]) * size for i, size in enumerate((MAX_DATA, 1, MAX_DATA - 7, 65536 + 9))]
    wire = b"".join(encode_frame(DATA, 9, p) for p in payloads)
    assert len(encode_frame(DATA, 9, payloads[0])) - 4 <= MAX_FRAME  # the largest DATA a peer accepts
    host = BridgeProtocol("host")
    host.streams[9] = "ssh-agent"
    received: list[Data] = []
    scratch = bytearray(100_003)
    with memoryview(scratch) as view:
        for start in range(0, len(wire), len(scratch)):
            chunk = wire[start:start + len(scratch)]
            scratch[:len(chunk)] = chunk
            received += [e for e in host.receive_data(view[:len(chunk)]) if isinstance(e, Data)]
            scratch[:] = b"\xee" * len(scratch)
    assert [bytes(e.payload) for e in received] == payloads
