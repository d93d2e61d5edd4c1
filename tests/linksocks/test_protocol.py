"""LinkSocks codec: golden vectors written out by hand from linksocks.md 5.1/5.2, and the edge rules of 4 and 5.3."""

from __future__ import annotations

import gzip
import struct
import uuid

import pytest

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

CID_TEXT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
CID_HEX = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def h(*parts: str) -> bytes:
    """Hex pieces (spaces allowed) -> bytes; keeps each field of a vector on its own line."""
    return bytes.fromhex("".join(parts).replace(" ", ""))


def ascii_hex(text: str) -> str:
    return text.encode().hex()


# (message, version, expected bytes) — every field spelled out per the spec tables.
GOLDEN = [
    pytest.param(
        Auth("tok", True, CID),
        0x01,
        h("01", "01", "03", ascii_hex("tok"), "01", CID_HEX),
        id="auth-reverse",
    ),
    pytest.param(
        Auth("", False, CID),
        0x02,
        h("02", "01", "00", "00", CID_HEX),
        id="auth-empty-token-v2",
    ),
    pytest.param(AuthResponse(True), 0x01, h("01", "02", "01"), id="auth-response-ok"),
    pytest.param(
        AuthResponse(True, token="abc"),
        0x01,
        h("01", "02", "01", "03", ascii_hex("abc")),
        id="auth-response-ok-token",
    ),
    pytest.param(
        AuthResponse(False, "invalid token"),
        0x02,
        h("02", "02", "00", "0d", ascii_hex("invalid token")),
        id="auth-response-fail-v2",
    ),
    pytest.param(
        Connect(p.TCP, CID, "example.com", 443),
        0x01,
        h("01", "03", "01", CID_HEX, "0b", ascii_hex("example.com"), "01bb"),
        id="connect-tcp",
    ),
    pytest.param(
        Connect(p.TCP, CID, "::1", 8080, resume=True),
        0x02,
        h("02", "03", "01", CID_HEX, "03", ascii_hex("::1"), "1f90", "01"),
        id="connect-tcp-resume-v2",
    ),
    pytest.param(Connect(p.UDP, CID), 0x01, h("01", "03", "02", CID_HEX), id="connect-udp"),
    pytest.param(Connect(p.UDP, CID, resume=True), 0x01, h("01", "03", "02", CID_HEX, "01"), id="connect-udp-resume"),
    pytest.param(
        Data(p.TCP, CID, b"hello"),
        0x01,
        h("01", "04", "01", CID_HEX, "00", "00000005", ascii_hex("hello")),
        id="data-tcp",
    ),
    pytest.param(
        Data(p.TCP, CID, b"", sequence=0x0102030405060708),
        0x02,
        h("02", "04", "01", CID_HEX, "00", "00000000", "0102030405060708"),
        id="data-tcp-sequence-v2",
    ),
    pytest.param(
        Data(p.UDP, CID, b"\x00\xff", target_address="8.8.8.8", target_port=53),
        0x01,
        h("01", "04", "02", CID_HEX, "00", "00000002", "00ff", "00", "0000", "07", ascii_hex("8.8.8.8"), "0035"),
        id="data-udp-request",
    ),
    pytest.param(
        Data(p.UDP, CID, b"x", address="10.0.0.1", port=5353),
        0x02,
        h("02", "04", "02", CID_HEX, "00", "00000001", "78", "08", ascii_hex("10.0.0.1"), "14e9", "00", "0000"),
        id="data-udp-reply-v2",
    ),
    pytest.param(
        ConnectResponse(True, CID),
        0x01,
        h("01", "05", "01", CID_HEX),
        id="connect-response-ok",
    ),
    pytest.param(
        ConnectResponse(False, CID, "refused"),
        0x02,
        h("02", "05", "00", CID_HEX, "07", ascii_hex("refused")),
        id="connect-response-fail-v2",
    ),
    pytest.param(Disconnect(CID), 0x01, h("01", "06", CID_HEX), id="disconnect"),
    pytest.param(Disconnect(CID, "EOF"), 0x02, h("02", "06", CID_HEX, "03", ascii_hex("EOF")), id="disconnect-eof-v2"),
    pytest.param(
        Connector(CID, "ctok", p.ADD),
        0x01,
        h("01", "07", CID_HEX, "04", ascii_hex("ctok"), "01"),
        id="connector-add",
    ),
    pytest.param(Connector(CID, "", p.REMOVE), 0x02, h("02", "07", CID_HEX, "00", "02"), id="connector-remove-empty-v2"),
    pytest.param(
        ConnectorResponse(CID, True, token="0123456789abcdef"),
        0x01,
        h("01", "08", CID_HEX, "01", "10", ascii_hex("0123456789abcdef")),
        id="connector-response-ok-token",
    ),
    pytest.param(ConnectorResponse(CID, True), 0x01, h("01", "08", CID_HEX, "01"), id="connector-response-ok"),
    pytest.param(
        ConnectorResponse(CID, False, "Unauthorized connector management attempt"),
        0x02,
        h("02", "08", CID_HEX, "00", "29", ascii_hex("Unauthorized connector management attempt")),
        id="connector-response-fail-v2",
    ),
    pytest.param(
        Log("debug", "hi"),
        0x01,
        h("01", "09", "0000001c", ascii_hex('{"level":"debug","msg":"hi"}')),
        id="log",
    ),
    pytest.param(Partners(3), 0x02, h("02", "0a", "0000000b", ascii_hex('{"count":3}')), id="partners-v2"),
    pytest.param(Opaque(0x7F, b"\x01\x02"), 0x01, h("01", "7f", "0102"), id="opaque-unknown"),
    pytest.param(
        Opaque(0x11, h("00000002", ascii_hex("{}"))),
        0x02,
        h("02", "11", "00000002", ascii_hex("{}")),
        id="opaque-channel-data-ack",
    ),
]


@pytest.mark.parametrize(("message", "version", "wire"), GOLDEN)
def test_encode_matches_golden_bytes(message, version, wire):
    assert p.encode(message, version) == wire


@pytest.mark.parametrize(("message", "version", "wire"), GOLDEN)
def test_decode_golden_bytes(message, version, wire):
    got_version, got = p.decode(wire)
    assert got_version == version
    assert normalised(got) == normalised(message)


def normalised(msg):
    """Data payloads decode as memoryviews; compare their bytes."""
    if isinstance(msg, Data):
        return msg.__class__(**{f: getattr(msg, f) for f in msg.__struct_fields__ if f != "data"}, data=bytes(msg.data))
    return msg


def test_default_version_is_0x01():
    assert p.VERSION_DEFAULT == 0x01
    assert p.encode(Disconnect(CID))[0] == 0x01
    assert p.data_header(CID, 0)[0] == 0x01


def test_configured_version_is_on_every_message():
    for message, _, _ in (param.values for param in GOLDEN):
        assert p.encode(message, 0x02)[0] == 0x02


def test_field_order_connect_response_vs_connector_response():
    # ConnectResponse: Success then ChannelID; ConnectorResponse: ChannelID then Success.
    assert p.encode(ConnectResponse(True, CID))[2:] == b"\x01" + CID
    assert p.encode(ConnectorResponse(CID, True))[2:] == CID + b"\x01"


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize("version", [0x00, 0x01, 0x02, 0x0F])
def test_any_major_zero_version_is_accepted(version):
    assert p.decode(bytes([version, 0x06]) + CID) == (version, Disconnect(CID))


@pytest.mark.parametrize("version", [0x10, 0x11, 0x21, 0xFF])
def test_other_major_versions_are_rejected(version):
    with pytest.raises(ProtocolError, match="major"):
        p.decode(bytes([version, 0x06]) + CID)


# --------------------------------------------------------------------------- leniency (5.3)


TRAILING_OK = [
    Auth("t", False, CID),
    AuthResponse(False, "x"),
    Connect(p.TCP, CID, "h", 1, resume=True),
    ConnectResponse(True, CID),
    ConnectResponse(False, CID, "e"),
    Disconnect(CID, "EOF"),
    Connector(CID, "c", p.ADD),
    ConnectorResponse(CID, False, "e"),
    Log("info", "m"),
    Partners(1),
]


@pytest.mark.parametrize("message", TRAILING_OK, ids=lambda m: type(m).__name__)
def test_trailing_bytes_after_a_complete_message_are_ignored(message):
    assert p.decode(p.encode(message) + b"\xaa\xbb\xcc")[1] == message


def test_tcp_data_trailing_bytes_shorter_than_a_sequence_are_ignored():
    _, msg = p.decode(p.encode(Data(p.TCP, CID, b"abc")) + b"\x01\x02\x03")
    assert bytes(msg.data) == b"abc" and msg.sequence == 0


def test_udp_data_with_sequence_trailer():
    msg = Data(p.UDP, CID, b"q", target_address="::1", target_port=53, sequence=99)
    _, got = p.decode(p.encode(msg))
    assert got.sequence == 99 and got.target_address == "::1" and bytes(got.data) == b"q"


def test_data_with_sequence_trailer_keeps_payload_unchanged():
    wire = h("01", "04", "01", CID_HEX, "00", "00000003", "616263", "00000000000000ff")
    _, msg = p.decode(wire)
    assert bytes(p.data_payload(msg)) == b"abc"
    assert msg.sequence == 255


def test_zero_sequence_is_not_sent():
    assert len(p.encode(Data(p.TCP, CID, b"abc", sequence=0))) == 24 + 3


def test_resume_byte_zero_means_no_resume():
    _, msg = p.decode(h("01", "03", "01", CID_HEX, "01", "68", "0050", "00"))
    assert msg == Connect(p.TCP, CID, "h", 80, resume=False)


def test_any_nonzero_bool_is_true():
    assert p.decode(h("01", "05", "7f", CID_HEX))[1] == ConnectResponse(True, CID)
    assert p.decode(h("01", "03", "02", CID_HEX, "ff"))[1].resume is True


def test_empty_optional_texts_decode_to_none():
    assert p.decode(h("01", "06", CID_HEX, "00"))[1] == Disconnect(CID, None)
    assert p.decode(h("01", "02", "00", "00"))[1] == AuthResponse(False, None)
    assert p.decode(h("01", "02", "00"))[1] == AuthResponse(False, None)


def test_failure_without_text_still_writes_the_length_byte():
    # Go's parser requires ErrLen when Success = 0.
    assert p.encode(ConnectResponse(False, CID)) == h("01", "05", "00", CID_HEX, "00")
    assert p.encode(ConnectorResponse(CID, False)) == h("01", "08", CID_HEX, "00", "00")
    assert p.encode(AuthResponse(False)) == h("01", "02", "00", "00")


def test_log_json_accepts_extra_and_missing_fields():
    body = b'{"msg":"linksocks_server_hello:direct_signaling=1","extra":1}'
    _, msg = p.decode(h("01", "09") + struct.pack("!I", len(body)) + body)
    assert msg == Log("", "linksocks_server_hello:direct_signaling=1")


# --------------------------------------------------------------------------- minimum lengths (5.3)

SHORT = [
    pytest.param(h("01"), id="header-only-one-byte"),
    pytest.param(h(""), id="empty"),
    pytest.param(h("01", "01", "03", ascii_hex("tok"), "01", CID_HEX[:-2]), id="auth-instance-short"),
    pytest.param(h("01", "01"), id="auth-no-length"),
    pytest.param(h("01", "02"), id="auth-response-empty"),
    pytest.param(h("01", "02", "00", "05", "6162"), id="auth-response-error-short"),
    pytest.param(h("01", "03", "01", CID_HEX[:-2]), id="connect-16"),
    pytest.param(h("01", "03", "01", CID_HEX), id="connect-tcp-no-address"),
    pytest.param(h("01", "03", "01", CID_HEX, "02", "68"), id="connect-tcp-address-short"),
    pytest.param(h("01", "03", "01", CID_HEX, "01", "68", "00"), id="connect-tcp-port-short"),
    pytest.param(h("01", "04", "01", CID_HEX, "00", "000000"), id="data-21"),
    pytest.param(h("01", "04", "01", CID_HEX, "00", "00000004", "616263"), id="data-payload-short"),
    pytest.param(h("01", "04", "02", CID_HEX, "00", "00000000"), id="data-udp-no-trailer"),
    pytest.param(h("01", "04", "02", CID_HEX, "00", "00000000", "00", "0000"), id="data-udp-no-target"),
    pytest.param(h("01", "04", "02", CID_HEX, "00", "00000000", "00", "0000", "00", "00"), id="data-udp-target-port"),
    pytest.param(h("01", "05", "01", CID_HEX[:-2]), id="connect-response-16"),
    pytest.param(h("01", "05", "00", CID_HEX), id="connect-response-fail-no-error"),
    pytest.param(h("01", "05", "00", CID_HEX, "03", "4546"), id="connect-response-error-short"),
    pytest.param(h("01", "06", CID_HEX[:-2]), id="disconnect-15"),
    pytest.param(h("01", "06", CID_HEX, "04", "454f46"), id="disconnect-error-short"),
    pytest.param(h("01", "07", CID_HEX), id="connector-no-token-length"),
    pytest.param(h("01", "07", CID_HEX, "02", "6162"), id="connector-no-operation"),
    pytest.param(h("01", "08", CID_HEX), id="connector-response-16"),
    pytest.param(h("01", "08", CID_HEX, "00"), id="connector-response-fail-no-error"),
    pytest.param(h("01", "08", CID_HEX, "01", "05", "61"), id="connector-response-token-short"),
    pytest.param(h("01", "09", "000000"), id="log-3"),
    pytest.param(h("01", "09", "00000005", "7b7d"), id="log-body-short"),
    pytest.param(h("01", "0a", "000000"), id="partners-3"),
    pytest.param(h("01", "0b", "000000"), id="direct-capabilities-3"),
    pytest.param(h("01", "11", "00000003", "7b7d"), id="channel-data-ack-body-short"),
]


@pytest.mark.parametrize("wire", SHORT)
def test_messages_below_minimum_length_are_protocol_errors(wire):
    with pytest.raises(ProtocolError):
        p.decode(wire)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(h("01", "03", "03", CID_HEX, "00", "0000"), id="connect-protocol-3"),
        pytest.param(h("01", "04", "00", CID_HEX, "00", "00000000"), id="data-protocol-0"),
        pytest.param(h("01", "07", CID_HEX, "00", "03"), id="connector-operation-3"),
        pytest.param(h("01", "09", "00000002", "5b5d"), id="log-json-array"),
        pytest.param(h("01", "0a", "0000000d", ascii_hex('{"count":"x"}')), id="partners-count-string"),
        pytest.param(h("01", "09", "00000001", "7b"), id="log-bad-json"),
    ],
)
def test_invalid_field_values_are_protocol_errors(wire):
    with pytest.raises(ProtocolError):
        p.decode(wire)


def test_unknown_type_is_opaque_and_kept_raw():
    assert p.decode(h("02", "7f", "deadbeef")) == (2, Opaque(0x7F, h("deadbeef")))
    assert p.decode(h("01", "00")) == (1, Opaque(0, b""))


def test_direct_mode_types_are_opaque():
    body = ascii_hex('{"channel_id":"x","reason":"y"}')
    wire = h("02", "0f", "0000001f", body)
    assert p.decode(wire) == (2, Opaque(0x0F, wire[2:]))


# --------------------------------------------------------------------------- strings


def test_strings_are_truncated_to_255_bytes():
    wire = p.encode(ConnectResponse(False, CID, "e" * 1000))
    assert wire[19] == 255 and len(wire) == 20 + 255
    assert p.decode(wire)[1].error == "e" * 255


@pytest.mark.parametrize("prefix_len", [252, 253, 254])
def test_truncation_never_splits_a_utf8_character(prefix_len):
    text = "a" * prefix_len + "\u20ac" * 3  # the euro sign is 3 bytes
    raw = p.truncate_text(text)
    assert len(raw) <= 255
    decoded = raw.decode("utf-8")  # strict: a split character would raise
    assert text.startswith(decoded)
    assert len(raw) == prefix_len + 3 * ((255 - prefix_len) // 3)


def test_truncation_of_four_byte_characters():
    raw = p.truncate_text("\U0001f600" * 100)
    assert len(raw) == 252 and raw.decode("utf-8") == "\U0001f600" * 63


def test_exactly_255_bytes_is_not_truncated():
    assert p.truncate_text("z" * 255) == b"z" * 255


def test_non_utf8_bytes_survive_a_round_trip():
    wire = h("01", "06", CID_HEX, "03", "ff", "fe", "41")
    _, msg = p.decode(wire)
    assert p.encode(msg) == wire


def test_unencodable_text_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        p.encode(Disconnect(CID, "\ud800"))


# --------------------------------------------------------------------------- encode validation


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(Disconnect(b"short"), id="channel-id-5-bytes"),
        pytest.param(Auth("t", False, b"\x00" * 15), id="instance-15-bytes"),
        pytest.param(Connect(3, CID), id="connect-protocol-3"),
        pytest.param(Connect(p.TCP, CID, "h", 65536), id="port-too-big"),
        pytest.param(Data(7, CID, b""), id="data-protocol-7"),
        pytest.param(Data(p.TCP, CID, b"", compression=256), id="data-compression-256"),
        pytest.param(Data(p.TCP, CID, b"", sequence=-1), id="negative-sequence"),
        pytest.param(Connector(CID, "t", 9), id="connector-operation-9"),
        pytest.param(Opaque(p.MsgType.DATA, b""), id="opaque-for-a-known-type"),
        pytest.param(Opaque(256, b""), id="opaque-type-256"),
        pytest.param(Data(p.TCP, CID, None), id="data-payload-none"),
        pytest.param(Connect(p.TCP, CID, None, 80), id="address-none"),
        pytest.param(Disconnect(CID, 42), id="error-not-text"),
        pytest.param(Log("info", object()), id="log-msg-not-json"),
    ],
)
def test_encoding_invalid_messages_raises_protocol_error(message):
    with pytest.raises(ProtocolError):
        p.encode(message)


def test_encode_rejects_non_messages():
    with pytest.raises(ProtocolError):
        p.encode("not a message")


def test_encode_rejects_out_of_range_version():
    with pytest.raises(ProtocolError):
        p.encode(Disconnect(CID), 256)


# --------------------------------------------------------------------------- Data hot path


def test_data_header_plus_payload_equals_encoded_data():
    payload = bytes(range(256)) * 3
    assert p.data_header(CID, len(payload)) + payload == p.encode(Data(p.TCP, CID, payload))
    assert p.data_header(CID, len(payload), 0x02) + payload == p.encode(Data(p.TCP, CID, payload), 0x02)
    assert len(p.data_header(CID, 0)) == p.DATA_HEADER_SIZE == 24


def test_udp_header_payload_trailer_equals_encoded_data():
    msg = Data(p.UDP, CID, b"dgram", address="1.2.3.4", port=9, target_address="", target_port=0)
    wire = p.data_header(CID, 5, protocol=p.UDP) + b"dgram" + p.udp_trailer("1.2.3.4", 9)
    assert wire == p.encode(msg)


def test_decoded_payload_is_a_zero_copy_view():
    wire = bytearray(p.encode(Data(p.TCP, CID, b"abcdef")))
    _, msg = p.decode(wire)
    assert isinstance(msg.data, memoryview)
    wire[24] = ord("X")  # the view sees the buffer it was cut from
    assert bytes(msg.data) == b"Xbcdef"
    assert p.data_payload(msg) is msg.data


def test_decode_accepts_memoryview_input():
    wire = p.encode(Data(p.TCP, CID, b"xyz"))
    _, msg = p.decode(memoryview(wire))
    assert bytes(msg.data) == b"xyz"


def test_gzip_data_is_decompressed():
    original = b"linksocks " * 10000
    msg = Data(p.TCP, CID, gzip.compress(original), compression=p.COMPRESSION_GZIP)
    _, got = p.decode(p.encode(msg))
    assert got.compression == 1
    assert p.data_payload(got) == original


def test_multi_member_gzip_is_decompressed():
    body = gzip.compress(b"one-") + gzip.compress(b"two")
    assert p.data_payload(Data(p.TCP, CID, body, compression=1)) == b"one-two"


def test_gzip_output_is_capped_at_32_mib():
    bomb = gzip.compress(b"\x00" * (p.MAX_MESSAGE + 1), compresslevel=9)
    assert len(bomb) < 64 * 1024
    with pytest.raises(ProtocolError, match="exceeds"):
        p.data_payload(Data(p.TCP, CID, bomb, compression=1))


def test_gzip_output_of_exactly_32_mib_is_allowed():
    body = gzip.compress(b"\x00" * p.MAX_MESSAGE, compresslevel=1)
    assert len(p.data_payload(Data(p.TCP, CID, body, compression=1))) == p.MAX_MESSAGE


def test_cap_applies_across_gzip_members():
    half = gzip.compress(b"\x00" * (p.MAX_MESSAGE // 2 + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        p.data_payload(Data(p.TCP, CID, half + half, compression=1))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not gzip at all", id="garbage"),
        pytest.param(gzip.compress(b"hello world")[:-6], id="truncated"),
        pytest.param(gzip.compress(b"hello") + b"junk", id="trailing-junk"),
    ],
)
def test_bad_gzip_is_a_protocol_error(body):
    with pytest.raises(ProtocolError):
        p.data_payload(Data(p.TCP, CID, body, compression=1))


# --------------------------------------------------------------------------- helpers


def test_uuid_raw_bytes_are_the_hex_of_the_canonical_text():
    assert p.uuid_raw(CID_TEXT) == CID
    assert p.uuid_text(CID) == CID_TEXT
    assert p.uuid_raw(CID_TEXT.upper()) == CID
    assert p.uuid_raw(CID_HEX) == CID


@pytest.mark.parametrize("text", ["", "zz", CID_TEXT + "0", "not-a-uuid"])
def test_uuid_raw_rejects_bad_text(text):
    with pytest.raises(ProtocolError):
        p.uuid_raw(text)


def test_uuid_text_rejects_wrong_length():
    with pytest.raises(ProtocolError):
        p.uuid_text(b"\x00" * 15)


def test_new_channel_ids_are_random_v4_uuids():
    ids = {p.new_channel_id() for _ in range(100)}
    assert len(ids) == 100
    for raw in ids:
        assert len(raw) == 16 and uuid.UUID(bytes=raw).version == 4


def test_token_hash_is_lower_case_sha256_hex():
    # sha256("abc") from FIPS 180-2, appendix B.1
    assert p.token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert len(p.token_hash("\u00e9")) == 64


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (Log("debug", "linksocks_client_hello:direct_signaling=1;protocol_version=0x02"), True),
        (Log("debug", "linksocks_server_hello:direct_signaling=1"), True),
        (Log("info", "hello linksocks_client_hello:"), False),
        (Log("debug", "linksocks_client_hello"), False),
        (Partners(1), False),
        (None, False),
    ],
)
def test_is_hello_log(message, expected):
    assert p.is_hello_log(message) is expected


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((b"short", 1), id="channel-id-5-bytes"),
        pytest.param((CID, -1), id="negative-length"),
        pytest.param((CID, 2**32), id="length-too-big"),
        pytest.param((CID, 1, 0x100), id="version-256"),
        pytest.param((None, 1), id="no-channel-id"),
    ],
)
def test_data_header_rejects_bad_input(args):
    with pytest.raises(ProtocolError):
        p.data_header(*args)
