"""LinkSocks binary wire format, sans-I/O (linksocks.md sections 4 and 5).

Every LinkSocks message is one binary WebSocket message: ``Version(1) Type(1)``
followed by a type-specific payload. Integers are big-endian, strings carry a
1-byte length, UUIDs are 16 raw bytes, JSON messages carry a 4-byte length.

:func:`decode` turns one message into ``(version, Message)``; :func:`encode`
turns a message back into bytes. The Data hot path has two extra helpers:
:func:`data_header` (the 24-byte header, so the sender writes header + payload
without concatenating) and :func:`data_payload` (gunzip with a 32 MiB cap).

Decoding conventions:

* any version byte whose high nibble is 0 is accepted; others are a
  :class:`ProtocolError`;
* unknown types and the direct-mode types 0x0B-0x11 come back as
  :class:`Opaque` (the raw payload after the 2 header bytes);
* trailing bytes after a complete message are ignored; optional trailing
  fields (Resume, Sequence, AuthResponse token/error, Disconnect error) are
  detected by the remaining length, as Go does;
* optional text fields that are absent or empty decode to ``None``;
* text is decoded as UTF-8 with ``surrogateescape``, so any bytes a peer sends
  survive a decode/encode round trip unchanged.

Encoding truncates every string field to 255 bytes at a UTF-8 character
boundary (Go writes the length byte unchecked and corrupts the frame).
"""

from __future__ import annotations

import enum
import hashlib
import struct
import uuid
import zlib
from collections.abc import Callable

import msgspec

VERSION_DEFAULT = 0x01
MAX_STRING = 255
MAX_MESSAGE = 32 * 1024 * 1024

TCP = 1
UDP = 2

ADD = 1
REMOVE = 2

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
# hatchway's ledger extension: a zero-length TCP Data with this Compression byte and a Sequence is a
# half-close ("no more bytes after offset Sequence"); only sent to a peer that answered the extension
HALF_CLOSE = 0x80

DATA_HEADER_SIZE = 24
SEQUENCE_SIZE = 8

# hatchway's ledger extension (see mux.py): after Connect's Resume byte and after a successful
# ConnectResponse's channel id: this magic, then the receiver's byte count (u64). Upstream parsers
# ignore trailing bytes, so only a hatchway peer sees it, and only a hatchway peer answers with it.
LEDGER_MAGIC = b"hw\x01"
LEDGER_EXT_SIZE = len(LEDGER_MAGIC) + 8

CLIENT_HELLO_PREFIX = "linksocks_client_hello:"
SERVER_HELLO_PREFIX = "linksocks_server_hello:"

_TEXT_ERRORS = "surrogateescape"


class ProtocolError(ValueError):
    """A message that cannot be encoded or parsed."""


class MsgType(enum.IntEnum):
    AUTH = 0x01
    AUTH_RESPONSE = 0x02
    CONNECT = 0x03
    DATA = 0x04
    CONNECT_RESPONSE = 0x05
    DISCONNECT = 0x06
    CONNECTOR = 0x07
    CONNECTOR_RESPONSE = 0x08
    LOG = 0x09
    PARTNERS = 0x0A
    DIRECT_CAPABILITIES = 0x0B
    DIRECT_RENDEZVOUS = 0x0C
    DIRECT_STATUS = 0x0D
    CHANNEL_BIND = 0x0E
    CHANNEL_MIGRATE = 0x0F
    CHANNEL_MIGRATE_ACK = 0x10
    CHANNEL_DATA_ACK = 0x11


# --------------------------------------------------------------------------- messages


class Auth(msgspec.Struct, frozen=True, gc=False):
    token: str
    reverse: bool
    instance: bytes


class AuthResponse(msgspec.Struct, frozen=True, gc=False):
    success: bool
    error: str | None = None
    token: str | None = None


class Connect(msgspec.Struct, frozen=True, gc=False):
    protocol: int
    channel_id: bytes
    address: str = ""
    port: int = 0
    resume: bool = False
    received: int | None = None  # hatchway extension (ledger): bytes the requester has received


class Data(msgspec.Struct, frozen=True, gc=False):
    protocol: int
    channel_id: bytes
    data: bytes | memoryview
    compression: int = COMPRESSION_NONE
    address: str = ""
    port: int = 0
    target_address: str = ""
    target_port: int = 0
    sequence: int = 0


class ConnectResponse(msgspec.Struct, frozen=True, gc=False):
    success: bool
    channel_id: bytes
    error: str | None = None
    received: int | None = None  # hatchway extension (ledger): bytes the dialer has received


class Disconnect(msgspec.Struct, frozen=True, gc=False):
    channel_id: bytes
    error: str | None = None


class Connector(msgspec.Struct, frozen=True, gc=False):
    channel_id: bytes
    token: str
    operation: int


class ConnectorResponse(msgspec.Struct, frozen=True, gc=False):
    channel_id: bytes
    success: bool
    error: str | None = None
    token: str | None = None


class Log(msgspec.Struct, frozen=True, gc=False):
    level: str = ""
    msg: str = ""


class Partners(msgspec.Struct, frozen=True, gc=False):
    count: int = 0


class Opaque(msgspec.Struct, frozen=True, gc=False):
    """A message hatchway does not interpret: ``payload`` is everything after the 2 header bytes."""

    type: int
    payload: bytes


Message = (
    Auth | AuthResponse | Connect | Data | ConnectResponse | Disconnect | Connector | ConnectorResponse | Log | Partners
    | Opaque
)

# --------------------------------------------------------------------------- ids and small helpers


def new_channel_id() -> bytes:
    """A random version-4 UUID as 16 raw bytes (what Go generates)."""
    return uuid.uuid4().bytes


def uuid_text(raw: bytes) -> str:
    """16 raw bytes -> canonical dashed lower-case UUID text."""
    if len(raw) != 16:
        raise ProtocolError(f"a UUID is 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes=bytes(raw)))


def uuid_raw(text: str) -> bytes:
    """UUID text (dashed, plain hex, braces or urn:uuid:) -> 16 raw bytes."""
    try:
        return uuid.UUID(text).bytes
    except (ValueError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"invalid UUID {text!r}") from exc


def token_hash(token: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 token: the ``token`` query parameter of URL-query auth."""
    return hashlib.sha256(token.encode("utf-8", _TEXT_ERRORS)).hexdigest()


def is_hello_log(msg: object) -> bool:
    """True for the direct-mode hello Log messages a relay-only peer must ignore."""
    return isinstance(msg, Log) and msg.msg.startswith((CLIENT_HELLO_PREFIX, SERVER_HELLO_PREFIX))


def truncate_text(text: str) -> bytes:
    """UTF-8 bytes of ``text``, cut to at most 255 bytes without splitting a character."""
    try:
        raw = text.encode("utf-8", _TEXT_ERRORS)
    except (UnicodeEncodeError, AttributeError) as exc:
        raise ProtocolError(f"string field is not encodable text: {text!r}") from exc
    if len(raw) <= MAX_STRING:
        return raw
    cut = MAX_STRING
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return raw[:cut]


def _pack_text(text: str) -> bytes:
    raw = truncate_text(text)
    return bytes((len(raw),)) + raw


# --------------------------------------------------------------------------- encoding

_HEAD = struct.Struct("!BB")
_DATA_HEADER = struct.Struct("!BBB16sBI")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


def _uuid16(raw: bytes, what: str) -> bytes:
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) != 16:
        raise ProtocolError(f"{what} must be 16 raw bytes")
    return bytes(raw)


def _pack(fmt: struct.Struct, *values: object) -> bytes:
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise ProtocolError(f"value out of range: {exc}") from exc


def _head(version: int, mtype: int) -> bytes:
    return _pack(_HEAD, version, mtype)


def _byte(value: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ProtocolError(f"byte value out of range: {value!r}")
    return bytes((value,))


def _flag(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def sequence_trailer(sequence: int) -> bytes:
    """The optional 8-byte Sequence after a TCP Data payload."""
    return _pack(_U64, sequence)


def data_header(
    channel_id: bytes, length: int, version: int = VERSION_DEFAULT, protocol: int = TCP, compression: int = 0
) -> bytes:
    """The 24-byte header of an uncompressed Data message carrying ``length`` payload bytes.

    For TCP the message is exactly header + payload. For UDP append
    :func:`udp_trailer` after the payload.
    """
    try:
        if len(channel_id) == 16:
            return _DATA_HEADER.pack(version, 4, protocol, channel_id, compression, length)
    except (struct.error, TypeError) as exc:
        raise ProtocolError(f"cannot build Data header: {exc}") from exc
    raise ProtocolError("channel_id must be 16 raw bytes")


def udp_trailer(address: str = "", port: int = 0, target_address: str = "", target_port: int = 0) -> bytes:
    """The address pairs that follow the payload of every UDP Data message."""
    return _pack_text(address) + _pack(_U16, port) + _pack_text(target_address) + _pack(_U16, target_port)


def _encode_auth(m: Auth, version: int) -> bytes:
    return b"".join(
        (_head(version, MsgType.AUTH), _pack_text(m.token), _flag(m.reverse), _uuid16(m.instance, "instance"))
    )


def _encode_auth_response(m: AuthResponse, version: int) -> bytes:
    parts = [_head(version, MsgType.AUTH_RESPONSE), _flag(m.success)]
    if not m.success:
        parts.append(_pack_text(m.error or ""))
    elif m.token:
        parts.append(_pack_text(m.token))
    return b"".join(parts)


def _encode_connect(m: Connect, version: int) -> bytes:
    parts = [_head(version, MsgType.CONNECT), _byte(m.protocol), _uuid16(m.channel_id, "channel_id")]
    if m.protocol == TCP:
        parts.append(_pack_text(m.address))
        parts.append(_pack(_U16, m.port))
    elif m.protocol != UDP:
        raise ProtocolError(f"unknown protocol {m.protocol}")
    if m.received is not None:
        parts.append(b"\x01" if m.resume else b"\x00")
        parts.append(LEDGER_MAGIC + _pack(_U64, m.received))
    elif m.resume:
        parts.append(b"\x01")
    return b"".join(parts)


def _encode_data(m: Data, version: int) -> bytes:
    header = _pack(
        _DATA_HEADER, version, MsgType.DATA, m.protocol, _uuid16(m.channel_id, "channel_id"), m.compression, len(m.data)
    )
    parts = [header, m.data]
    if m.protocol == UDP:
        parts.append(udp_trailer(m.address, m.port, m.target_address, m.target_port))
    elif m.protocol != TCP:
        raise ProtocolError(f"unknown protocol {m.protocol}")
    if m.sequence:
        parts.append(_pack(_U64, m.sequence))
    return b"".join(parts)


def _encode_connect_response(m: ConnectResponse, version: int) -> bytes:
    parts = [_head(version, MsgType.CONNECT_RESPONSE), _flag(m.success), _uuid16(m.channel_id, "channel_id")]
    if not m.success:
        parts.append(_pack_text(m.error or ""))
    elif m.received is not None:
        parts.append(LEDGER_MAGIC + _pack(_U64, m.received))
    return b"".join(parts)


def _encode_disconnect(m: Disconnect, version: int) -> bytes:
    parts = [_head(version, MsgType.DISCONNECT), _uuid16(m.channel_id, "channel_id")]
    if m.error:
        parts.append(_pack_text(m.error))
    return b"".join(parts)


def _encode_connector(m: Connector, version: int) -> bytes:
    if m.operation not in (ADD, REMOVE):
        raise ProtocolError(f"invalid connector operation {m.operation}")
    return b"".join(
        (
            _head(version, MsgType.CONNECTOR),
            _uuid16(m.channel_id, "channel_id"),
            _pack_text(m.token),
            _byte(m.operation),
        )
    )


def _encode_connector_response(m: ConnectorResponse, version: int) -> bytes:
    parts = [_head(version, MsgType.CONNECTOR_RESPONSE), _uuid16(m.channel_id, "channel_id"), _flag(m.success)]
    if not m.success:
        parts.append(_pack_text(m.error or ""))
    elif m.token:
        parts.append(_pack_text(m.token))
    return b"".join(parts)


def _encode_json(mtype: int) -> Callable[[msgspec.Struct, int], bytes]:
    def encode_json(m: msgspec.Struct, version: int) -> bytes:
        try:
            body = msgspec.json.encode(m)
        except (msgspec.EncodeError, TypeError, UnicodeEncodeError) as exc:
            raise ProtocolError(f"cannot encode {type(m).__name__}: {exc}") from exc
        return _head(version, mtype) + _pack(_U32, len(body)) + body

    return encode_json


def _encode_opaque(m: Opaque, version: int) -> bytes:
    if MsgType.AUTH <= m.type <= MsgType.PARTNERS:
        raise ProtocolError(f"type 0x{m.type:02x} has its own message class, not Opaque")
    return _head(version, m.type) + bytes(m.payload)


_ENCODERS: dict[type, Callable[..., bytes]] = {
    Auth: _encode_auth,
    AuthResponse: _encode_auth_response,
    Connect: _encode_connect,
    Data: _encode_data,
    ConnectResponse: _encode_connect_response,
    Disconnect: _encode_disconnect,
    Connector: _encode_connector,
    ConnectorResponse: _encode_connector_response,
    Log: _encode_json(MsgType.LOG),
    Partners: _encode_json(MsgType.PARTNERS),
    Opaque: _encode_opaque,
}


def encode(msg: Message, version: int = VERSION_DEFAULT) -> bytes:
    """Serialise one message. Strings are truncated to 255 bytes; Data is never compressed here."""
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise ProtocolError(f"not a LinkSocks message: {type(msg).__name__}")
    try:
        return encoder(msg, version)
    except (TypeError, AttributeError) as exc:  # a field of the wrong type
        raise ProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- decoding


def _need(n: int, end: int, what: str) -> None:
    if n < end:
        raise ProtocolError(f"{what}: message truncated ({n} bytes, need {end})")


def _text(view: memoryview, off: int, n: int, what: str) -> tuple[str, int]:
    """Read a length-prefixed string at ``off``; return it and the offset after it."""
    _need(n, off + 1, what)
    end = off + 1 + view[off]
    _need(n, end, what)
    return str(view[off + 1 : end], "utf-8", _TEXT_ERRORS), end


def _optional_text(view: memoryview, off: int, n: int, what: str) -> str | None:
    """A trailing optional string: absent (no bytes left) or empty -> None."""
    if n <= off:
        return None
    text, _ = _text(view, off, n, what)
    return text or None


def _protocol(value: int) -> int:
    if value != TCP and value != UDP:
        raise ProtocolError(f"unknown protocol 0x{value:02x}")
    return value


def _parse_auth(view: memoryview, n: int) -> Auth:
    token, off = _text(view, 2, n, "Auth")
    _need(n, off + 17, "Auth")
    return Auth(token, view[off] != 0, bytes(view[off + 1 : off + 17]))


def _parse_auth_response(view: memoryview, n: int) -> AuthResponse:
    _need(n, 3, "AuthResponse")
    if view[2]:
        return AuthResponse(True, token=_optional_text(view, 3, n, "AuthResponse token"))
    return AuthResponse(False, error=_optional_text(view, 3, n, "AuthResponse error"))


def _parse_connect(view: memoryview, n: int) -> Connect:
    _need(n, 19, "Connect")
    protocol = _protocol(view[2])
    channel_id = bytes(view[3:19])
    if protocol == UDP:
        return Connect(UDP, channel_id, resume=n > 19 and view[19] != 0, received=_ledger_ext(view, 20, n))
    address, off = _text(view, 19, n, "Connect address")
    _need(n, off + 2, "Connect port")
    port = _U16.unpack_from(view, off)[0]
    resume = n > off + 2 and view[off + 2] != 0
    return Connect(TCP, channel_id, address, port, resume, _ledger_ext(view, off + 3, n))


def _ledger_ext(view: memoryview, off: int, n: int) -> int | None:
    """hatchway's ledger extension at ``off``, if present."""
    if n - off >= LEDGER_EXT_SIZE and view[off : off + 3] == LEDGER_MAGIC:
        return int(_U64.unpack_from(view, off + 3)[0])
    return None


def _parse_data(view: memoryview, n: int) -> Data:
    _need(n, DATA_HEADER_SIZE, "Data")
    _, _, protocol, channel_id, compression, length = _DATA_HEADER.unpack_from(view)
    end = DATA_HEADER_SIZE + length
    _need(n, end, "Data payload")
    payload = view[DATA_HEADER_SIZE:end]
    if protocol == TCP:
        sequence = _U64.unpack_from(view, end)[0] if n - end >= SEQUENCE_SIZE else 0
        return Data(TCP, channel_id, payload, compression, sequence=sequence)
    _protocol(protocol)
    address, off = _text(view, end, n, "UDP Data address")
    _need(n, off + 2, "UDP Data port")
    port = _U16.unpack_from(view, off)[0]
    target_address, off = _text(view, off + 2, n, "UDP Data target address")
    _need(n, off + 2, "UDP Data target port")
    target_port = _U16.unpack_from(view, off)[0]
    off += 2
    sequence = _U64.unpack_from(view, off)[0] if n - off >= SEQUENCE_SIZE else 0
    return Data(UDP, channel_id, payload, compression, address, port, target_address, target_port, sequence)


def _parse_connect_response(view: memoryview, n: int) -> ConnectResponse:
    _need(n, 19, "ConnectResponse")
    success = view[2] != 0
    channel_id = bytes(view[3:19])
    if success:
        return ConnectResponse(True, channel_id, received=_ledger_ext(view, 19, n))
    error, _ = _text(view, 19, n, "ConnectResponse error")
    return ConnectResponse(False, channel_id, error or None)


def _parse_disconnect(view: memoryview, n: int) -> Disconnect:
    _need(n, 18, "Disconnect")
    return Disconnect(bytes(view[2:18]), _optional_text(view, 18, n, "Disconnect error"))


def _parse_connector(view: memoryview, n: int) -> Connector:
    _need(n, 18, "Connector")
    token, off = _text(view, 18, n, "Connector token")
    _need(n, off + 1, "Connector operation")
    operation = view[off]
    if operation != ADD and operation != REMOVE:
        raise ProtocolError(f"invalid connector operation 0x{operation:02x}")
    return Connector(bytes(view[2:18]), token, operation)


def _parse_connector_response(view: memoryview, n: int) -> ConnectorResponse:
    _need(n, 19, "ConnectorResponse")
    channel_id = bytes(view[2:18])
    if view[18]:
        return ConnectorResponse(channel_id, True, token=_optional_text(view, 19, n, "ConnectorResponse token"))
    error, _ = _text(view, 19, n, "ConnectorResponse error")
    return ConnectorResponse(channel_id, False, error=error or None)


def _json_body(view: memoryview, n: int, what: str) -> memoryview:
    _need(n, 6, what)
    end = 6 + _U32.unpack_from(view, 2)[0]
    _need(n, end, what)
    return view[6:end]


def _parse_json(cls: type[Log] | type[Partners], what: str) -> Callable[[memoryview, int], Message]:
    decoder: msgspec.json.Decoder[Log | Partners] = msgspec.json.Decoder(cls)

    def parse_json(view: memoryview, n: int) -> Message:
        body = _json_body(view, n, what)
        try:
            try:
                return decoder.decode(body)
            except UnicodeDecodeError:  # Go's encoding/json replaces invalid UTF-8 with U+FFFD
                return decoder.decode(str(body, "utf-8", "replace").encode())
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"{what}: bad JSON: {exc}") from exc

    return parse_json


def _parse_opaque_json(view: memoryview, n: int) -> Opaque:
    _json_body(view, n, f"message type 0x{view[1]:02x}")
    return Opaque(view[1], bytes(view[2:n]))


_PARSERS: dict[int, Callable[[memoryview, int], Message]] = {
    MsgType.AUTH: _parse_auth,
    MsgType.AUTH_RESPONSE: _parse_auth_response,
    MsgType.CONNECT: _parse_connect,
    MsgType.DATA: _parse_data,
    MsgType.CONNECT_RESPONSE: _parse_connect_response,
    MsgType.DISCONNECT: _parse_disconnect,
    MsgType.CONNECTOR: _parse_connector,
    MsgType.CONNECTOR_RESPONSE: _parse_connector_response,
    MsgType.LOG: _parse_json(Log, "Log"),
    MsgType.PARTNERS: _parse_json(Partners, "Partners"),
    **{t: _parse_opaque_json for t in range(MsgType.DIRECT_CAPABILITIES, MsgType.CHANNEL_DATA_ACK + 1)},
}
_PARSERS = {int(k): v for k, v in _PARSERS.items()}


def decode(data: bytes | bytearray | memoryview) -> tuple[int, Message]:
    """Parse one message into ``(version, message)``.

    A Data payload is a zero-copy memoryview into ``data``; the caller must not
    mutate ``data`` while the payload is in use.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    n = len(view)
    if n < 2:
        raise ProtocolError(f"message too short: {n} bytes")
    version = view[0]
    if version & 0xF0:
        raise ProtocolError(f"unsupported protocol major version: 0x{version:02x}")
    parser = _PARSERS.get(view[1])
    if parser is None:
        return version, Opaque(view[1], bytes(view[2:]))
    return version, parser(view, n)


def data_payload(msg: Data) -> bytes | memoryview:
    """The payload bytes of a Data message: gunzipped if Compression = 1, else ``msg.data`` unchanged."""
    if msg.compression != COMPRESSION_GZIP:
        return msg.data
    return gunzip_capped(msg.data)


def gunzip_capped(compressed: bytes | memoryview, cap: int = MAX_MESSAGE) -> bytes:
    """Decompress a (possibly multi-member) gzip stream, refusing output beyond ``cap`` bytes."""
    chunks: list[bytes] = []
    total = 0
    rest: bytes | memoryview = compressed
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            chunk = inflater.decompress(rest, cap - total + 1)
        except zlib.error as exc:
            raise ProtocolError(f"gzip decompression failed: {exc}") from exc
        total += len(chunk)
        if total > cap:
            raise ProtocolError(f"decompressed Data exceeds {cap} bytes")
        chunks.append(chunk)
        if not inflater.eof:
            raise ProtocolError("gzip decompression failed: unexpected end of stream")
        rest = inflater.unused_data
        if not rest:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
