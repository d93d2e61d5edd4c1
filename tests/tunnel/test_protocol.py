"""The tunnel wire codec (tunnel.md section 5; acceptance cases 1-3) and its robustness."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.tunnel import protocol
from hatchway.tunnel.protocol import HEADER_SIZE, Message, MsgType, Proto, ProtocolError

types = st.sampled_from(list(MsgType))
protos = st.sampled_from(list(Proto))
client_ids = st.integers(min_value=0, max_value=0xFFFFFFFF)
ports = st.integers(min_value=0, max_value=0xFFFF)


def test_case1_connect_header_roundtrip():
    raw = protocol.connect(Proto.TCP, 12345, 8080)
    assert len(raw) == HEADER_SIZE
    message = protocol.decode(raw)
    assert (message.type, message.proto, message.client_id, message.port) == (MsgType.CONNECT, Proto.TCP, 12345, 8080)
    assert bytes(message.payload) == b""


def test_case2_data_message_is_header_plus_payload():
    raw = protocol.data_header(Proto.TCP, 42) + b"hello"
    assert len(raw) == 13
    message = protocol.decode(raw)
    assert message.type is MsgType.DATA
    assert message.client_id == 42
    assert bytes(message.payload) == b"hello"


def test_case3_fields_are_big_endian():
    assert protocol.connect(Proto.TCP, 1, 8080) == bytes.fromhex("0100000000011f90")
    assert protocol.header(MsgType.PONG, Proto.UDP, 0x01020304, 0x0506) == bytes.fromhex("0701010203040506")


def test_reply_helpers_carry_port_zero_and_tcp_for_error_and_pong():
    assert protocol.connected(Proto.UDP, 7) == bytes.fromhex("0201000000070000")
    assert protocol.close(Proto.TCP, 7) == bytes.fromhex("0400000000070000")
    assert protocol.pong(9) == bytes.fromhex("0700000000090000")
    assert protocol.error(5, "Connection refused (os error 111)") == (
        bytes.fromhex("0500000000050000") + b"Connection refused (os error 111)"
    )


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "too short"),
        (b"\x01\x00", "too short"),
        (b"\x01\x00\x00\x00\x00\x01\x1f", "too short"),
        (bytes.fromhex("0900000000010000"), "unknown message type 0x09"),
        (bytes.fromhex("0000000000010000"), "unknown message type 0x00"),
        (bytes.fromhex("0107000000011f90"), "unknown protocol 0x07"),
    ],
)
def test_malformed_messages_raise_protocol_error(raw, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(raw)


def test_decoded_payload_is_a_view_not_a_copy():
    raw = bytearray(protocol.data_header(Proto.TCP, 1) + b"abc")
    message = protocol.decode(raw)
    raw[HEADER_SIZE] = ord("x")
    assert bytes(message.payload) == b"xbc"


def test_with_client_id_rewrites_only_the_id():
    raw = protocol.data_header(Proto.UDP, 1) + b"payload"
    rewritten = protocol.with_client_id(raw, 0xDEADBEEF)
    assert rewritten[:2] == raw[:2] and rewritten[6:] == raw[6:]
    assert protocol.decode(rewritten).client_id == 0xDEADBEEF


@given(types, protos, client_ids, ports, st.binary(max_size=2048))
def test_encode_decode_roundtrip(mtype, proto, client_id, port, payload):
    raw = protocol.encode(Message(mtype, proto, client_id, port, payload))
    assert len(raw) == HEADER_SIZE + len(payload)
    assert struct.unpack_from("!BBIH", raw) == (mtype, proto, client_id, port)
    message = protocol.decode(raw)
    assert (message.type, message.proto, message.client_id, message.port) == (mtype, proto, client_id, port)
    assert bytes(message.payload) == payload


@given(st.binary(max_size=64))
def test_decode_accepts_or_rejects_arbitrary_bytes_cleanly(raw):
    try:
        message = protocol.decode(raw)
    except ProtocolError:
        assert len(raw) < HEADER_SIZE or raw[0] not in range(1, 8) or raw[1] not in (0, 1)
        return
    assert len(raw) >= HEADER_SIZE
    assert protocol.encode(message) == raw
