"""LinkSocks codec properties: round trips for every message type, and fuzzing (only ProtocolError or a valid message)."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hatchway.linksocks import protocol as p
from hatchway.linksocks.protocol import (
    Auth,
    AuthResponse,
    Connect,
    Connector,
    ConnectorResponse,
    ConnectResponse,
    Data,
    Disconnect,
    Log,
    Opaque,
    Partners,
    ProtocolError,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ids = st.binary(min_size=16, max_size=16)
versions = st.integers(0x00, 0x0F)
ports = st.integers(0, 65535)
# Any text whose UTF-8 form fits in 255 bytes survives unchanged.
short_text = st.text(max_size=255).filter(lambda t: len(t.encode()) <= 255)
nonempty_short_text = short_text.filter(bool)
optional_text = st.none() | nonempty_short_text


def bytes_like(max_size: int = 2048):
    return st.binary(max_size=max_size)


auth = st.builds(Auth, short_text, st.booleans(), ids)
auth_response = st.one_of(
    st.builds(AuthResponse, st.just(True), st.none(), optional_text),
    st.builds(AuthResponse, st.just(False), optional_text, st.none()),
)
connect = st.one_of(
    st.builds(Connect, st.just(p.TCP), ids, short_text, ports, st.booleans()),
    st.builds(Connect, st.just(p.UDP), ids, resume=st.booleans()),
)
sequences = st.integers(0, 2**64 - 1)
data = st.one_of(
    st.builds(Data, st.just(p.TCP), ids, bytes_like(), st.integers(0, 255), sequence=sequences),
    st.builds(
        Data, st.just(p.UDP), ids, bytes_like(), st.integers(0, 255), short_text, ports, short_text, ports, sequences
    ),
)
connect_response = st.one_of(
    st.builds(ConnectResponse, st.just(True), ids),
    st.builds(ConnectResponse, st.just(False), ids, optional_text),
)
disconnect = st.builds(Disconnect, ids, optional_text)
connector = st.builds(Connector, ids, short_text, st.sampled_from([p.ADD, p.REMOVE]))
connector_response = st.one_of(
    st.builds(ConnectorResponse, ids, st.just(True), st.none(), optional_text),
    st.builds(ConnectorResponse, ids, st.just(False), optional_text, st.none()),
)
log = st.builds(Log, st.sampled_from(["trace", "debug", "info", "warn", "error"]) | st.text(), st.text())
partners = st.builds(Partners, st.integers(-(2**63), 2**63 - 1))
json_opaque = st.builds(
    lambda t, body, extra: Opaque(t, struct.pack("!I", len(body)) + body + extra),
    st.integers(p.MsgType.DIRECT_CAPABILITIES, p.MsgType.CHANNEL_DATA_ACK),
    st.binary(max_size=64),
    st.binary(max_size=8),
)
unknown_opaque = st.builds(Opaque, st.just(0) | st.integers(0x12, 0xFF), st.binary(max_size=64))

messages = st.one_of(
    auth,
    auth_response,
    connect,
    data,
    connect_response,
    disconnect,
    connector,
    connector_response,
    log,
    partners,
    json_opaque,
    unknown_opaque,
)


def plain(msg):
    """Data payloads decode as memoryviews; compare their bytes."""
    if isinstance(msg, Data):
        fields = {f: getattr(msg, f) for f in msg.__struct_fields__}
        fields["data"] = bytes(msg.data)
        return Data(**fields)
    return msg


@FAST
@given(messages, versions)
def test_every_message_round_trips(message, version):
    assert p.decode(p.encode(message, version)) == (version, plain(message))


@FAST
@given(st.text(min_size=1, max_size=400), ids)
def test_long_strings_come_back_truncated_to_255_bytes(text, cid):
    _, got = p.decode(p.encode(Disconnect(cid, text)))
    expected = p.truncate_text(text)
    assert len(expected) <= 255
    assert (got.error or "").encode() == expected
    assert text.encode().startswith(expected)


@FAST
@given(ids, bytes_like(), sequences)
def test_data_header_is_the_prefix_of_encoded_data(cid, payload, sequence):
    wire = p.encode(Data(p.TCP, cid, payload, sequence=sequence))
    assert wire.startswith(p.data_header(cid, len(payload)) + payload)


def assert_valid_or_protocol_error(wire: bytes) -> None:
    try:
        version, msg = p.decode(wire)
    except ProtocolError:
        return
    assert 0 <= version <= 0x0F
    assert isinstance(msg, (Auth, AuthResponse, Connect, Data, ConnectResponse, Disconnect, Connector,
                            ConnectorResponse, Log, Partners, Opaque))  # fmt: skip
    # Whatever decodes re-encodes, and re-decodes to the same message.
    assert plain(p.decode(p.encode(msg, version))[1]) == plain(msg)
    if isinstance(msg, Data) and msg.compression == p.COMPRESSION_GZIP:
        try:
            p.data_payload(msg)
        except ProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
@example(b"\x01\x04\x01" + b"\x00" * 16 + b"\x01\x00\x00\x00\x00")
@example(b"\x01\x09\x00\x00\x00\x0b{\"msg\":\"\xff\"}")
def test_random_bytes_decode_or_raise_protocol_error(wire):
    assert_valid_or_protocol_error(wire)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0x0F), st.integers(0, 0x14), st.binary(max_size=80))
def test_random_payloads_of_every_type_decode_or_raise_protocol_error(version, mtype, body):
    assert_valid_or_protocol_error(bytes((version, mtype)) + body)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_mutated_valid_messages_decode_or_raise_protocol_error(message, draw):
    wire = bytearray(p.encode(message))
    for _ in range(draw.draw(st.integers(1, 4))):
        action = draw.draw(st.sampled_from(["flip", "cut", "extend"]))
        if action == "flip" and wire:
            i = draw.draw(st.integers(0, len(wire) - 1))
            wire[i] = draw.draw(st.integers(0, 255))
        elif action == "cut":
            del wire[draw.draw(st.integers(0, len(wire))) :]
        else:
            wire += draw.draw(st.binary(min_size=1, max_size=8))
    assert_valid_or_protocol_error(bytes(wire))


@FAST
@given(st.binary(max_size=256))
def test_random_gzip_bodies_raise_only_protocol_error(body):
    try:
        p.data_payload(Data(p.TCP, b"\x00" * 16, body, compression=1))
    except ProtocolError:
        pass
