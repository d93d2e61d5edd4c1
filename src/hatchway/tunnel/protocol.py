"""KohakuRiver tunnel wire format, sans-I/O (tunnel.md section 5).

Every tunnel message is one binary WebSocket message: an 8-byte big-endian
header ``type:u8 proto:u8 client_id:u32 port:u16`` followed by the payload.
There is no length field; the WebSocket message carries the length.

This module imports no asyncio. :func:`parse_header` is the one header parser
every side uses (the multiplexers in :mod:`hatchway.tunnel.mux`); ``decode``
turns a whole message into a :class:`Message` and ``encode``/``header`` turn
fields back into bytes.
"""

from __future__ import annotations

import enum
import struct

import msgspec

HEADER_SIZE = 8
MAX_CLIENT_ID = 0xFFFFFFFF
MAX_DATA_PAYLOAD = 65536  # what the upstream client sends per DATA (one local read)

_HEADER = struct.Struct("!BBIH")
pack_header = _HEADER.pack
unpack_header = _HEADER.unpack_from  # raw fields of the first 8 bytes; struct.error when shorter


class MsgType(enum.IntEnum):
    CONNECT = 0x01
    CONNECTED = 0x02
    DATA = 0x03
    CLOSE = 0x04
    ERROR = 0x05
    PING = 0x06
    PONG = 0x07


class Proto(enum.IntEnum):
    TCP = 0x00
    UDP = 0x01


class ProtocolError(ValueError):
    """A message that cannot be parsed; the receiver drops it and keeps the tunnel."""


class Message(msgspec.Struct, frozen=True, gc=False):
    type: MsgType
    proto: Proto
    client_id: int
    port: int = 0
    payload: bytes | memoryview = b""


_TYPES = {int(t): t for t in MsgType}
_PROTOS = {int(p): p for p in Proto}


def parse_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """``(type, proto, client_id, port)`` of one message; ProtocolError when it is too short or the
    protocol byte is neither TCP nor UDP. The type is returned raw: what an unknown type means is
    each receiver's decision."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"message too short: {len(data)} bytes")
    fields: tuple[int, int, int, int] = unpack_header(data)
    if fields[1] > 1:
        raise ProtocolError(f"unknown protocol 0x{fields[1]:02x}")
    return fields


def header(type: MsgType, proto: Proto, client_id: int, port: int = 0) -> bytes:
    return pack_header(type, proto, client_id, port)


def encode(message: Message) -> bytes:
    return pack_header(message.type, message.proto, message.client_id, message.port) + bytes(message.payload)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one message. The payload is a zero-copy view into ``data``."""
    type_, proto, client_id, port = parse_header(data)
    mtype = _TYPES.get(type_)
    if mtype is None:
        raise ProtocolError(f"unknown message type 0x{type_:02x}")
    return Message(mtype, _PROTOS[proto], client_id, port, memoryview(data)[HEADER_SIZE:])


def with_client_id(data: bytes | bytearray | memoryview, client_id: int) -> bytes:
    """The same message with its client_id field rewritten (the runner's remapping)."""
    view = memoryview(data)
    return b"".join((view[:2], client_id.to_bytes(4, "big"), view[6:]))


# Convenience constructors for the messages both sides send.
def connect(proto: Proto, client_id: int, port: int) -> bytes:
    return pack_header(MsgType.CONNECT, proto, client_id, port)


def connected(proto: Proto, client_id: int) -> bytes:
    return pack_header(MsgType.CONNECTED, proto, client_id, 0)


def data_header(proto: Proto, client_id: int) -> bytes:
    return pack_header(MsgType.DATA, proto, client_id, 0)


def close(proto: Proto, client_id: int) -> bytes:
    return pack_header(MsgType.CLOSE, proto, client_id, 0)


def error(client_id: int, text: str, proto: Proto = Proto.TCP) -> bytes:
    return pack_header(MsgType.ERROR, proto, client_id, 0) + text.encode("utf-8", "replace")


def ping(client_id: int = 0) -> bytes:
    return pack_header(MsgType.PING, Proto.TCP, client_id, 0)


def pong(client_id: int) -> bytes:
    return pack_header(MsgType.PONG, Proto.TCP, client_id, 0)
