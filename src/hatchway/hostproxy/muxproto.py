"""The socket bridge's wire protocol ("muxrpc" v1), sans-I/O: bytes in, events and messages out.

A frame is ``u32 length | u8 type | u32 stream | payload`` (big-endian), with
``length = 5 + len(payload)``. The length prefix is the common
length-prefixed framing (:class:`~hatchway.common.sink.FrameDecoder` in,
:class:`~hatchway.common.sink.LengthPrefixedSink` out); this object owns the
rest: message types, the stream table, the close rule that stops a CLOSE
ping-pong, the stream cap, and the handshake phase.

Messages handed out (``messages_to_send`` and the return values of the verbs)
are frames *without* the length prefix; the sink adds it. :func:`encode_frame`
gives a whole frame (golden vectors, tests).
"""

from __future__ import annotations

import enum
import struct

import msgspec

from hatchway.common.sink import FrameDecoder

__all__ = [
    "CLOSE", "DATA", "ERROR", "MAX_DATA", "MAX_FRAME", "OPEN", "PUBKEY", "READY",
    "BridgeProtocol", "Closed", "Data", "Event", "Failed", "FrameError", "Opened", "Phase", "PubKey", "Ready",
    "encode_frame", "message",
]

DATA, OPEN, CLOSE, PUBKEY, READY, ERROR = 1, 2, 3, 4, 5, 6
MAX_FRAME = 1 << 20  # largest length value accepted
# DATA payloads written at most this large: one socket read (uvloop reads up to 256 KiB) is one frame.
# Upstream writes 64 KiB payloads but reads any frame up to MAX_FRAME, so larger ones are compatible.
MAX_DATA = 256 * 1024
SOCKET_TYPES = ("ssh-agent", "gpg-agent")
_HEADER = struct.Struct("!BI")


class FrameError(Exception):
    """A malformed frame: the bridge connection ends with this text."""


def message(kind: int, stream: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, stream) + payload


def encode_frame(kind: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack("!I", 5 + len(payload)) + message(kind, stream, payload)


class Opened(msgspec.Struct, frozen=True):
    stream: int
    kind: str


class Data(msgspec.Struct, frozen=True):
    stream: int
    payload: bytes | memoryview  # received: a view into the frame (no copy); compares equal to bytes


class Closed(msgspec.Struct, frozen=True):
    stream: int


class PubKey(msgspec.Struct, frozen=True):
    keyring: bytes


class Ready(msgspec.Struct, frozen=True):
    pass


class Failed(msgspec.Struct, frozen=True):
    message: str


Event = Opened | Data | Closed | PubKey | Ready | Failed


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    READY = "ready"


class BridgeProtocol:
    """One side of a bridge connection: ``role`` is ``"host"`` (dials agents) or ``"container"`` (opens streams)."""

    def __init__(self, role: str, *, max_streams: int = 64) -> None:
        if role not in ("host", "container"):
            raise ValueError(f"role must be host or container, not {role!r}")
        self.role = role
        self.max_streams = max_streams
        self.phase = Phase.HANDSHAKE
        self.streams: dict[int, str] = {}
        self._next = 1
        self._decoder = FrameDecoder(max_message=MAX_FRAME)
        self._outbox: list[bytes] = []
        self.refused = 0  # OPENs refused by the stream cap

    # -- input
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        try:
            frames = self._decoder.feed(data)
        except ValueError:
            raise FrameError("message too large") from None
        events: list[Event] = []
        for frame in frames:
            if len(frame) < 5:
                raise FrameError("message too short")
            kind, stream = _HEADER.unpack_from(frame)
            if kind == DATA:  # the hot path: the payload stays in the frame's bytes
                if stream in self.streams:
                    events.append(Data(stream, memoryview(frame)[5:]))
                continue  # unknown stream: dropped
            event = self._handle(kind, stream, frame[5:])
            if event is not None:
                events.append(event)
        return events

    def _handle(self, kind: int, stream: int, payload: bytes) -> Event | None:
        if kind == CLOSE:
            if self.streams.pop(stream, None) is None:
                return None  # never answer a CLOSE for a stream we do not have: no ping-pong
            self._outbox.append(message(CLOSE, stream))
            return Closed(stream)
        if self.role == "host":
            if kind == OPEN:
                kind_text = payload.decode("ascii", "replace")
                if stream in self.streams or len(self.streams) >= self.max_streams or kind_text not in SOCKET_TYPES:
                    self.refused += 1
                    self._outbox.append(message(CLOSE, stream))
                    return None
                self.streams[stream] = kind_text
                return Opened(stream, kind_text)
            if kind == READY:
                self.phase = Phase.READY
                return Ready()
            if kind == ERROR:
                return Failed(payload.decode("utf-8", "replace"))
            return None
        if kind == PUBKEY:
            return PubKey(payload)
        return None  # unknown types are ignored

    def messages_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    # -- verbs (each returns the message to send)
    def open_stream(self, kind: str) -> tuple[int, bytes]:
        """Container side: a new stream for a client of ``kind``'s socket."""
        stream = self._next
        self._next = (self._next % 0xFFFFFFFF) + 1
        self.streams[stream] = kind
        return stream, message(OPEN, stream, kind.encode("ascii"))

    def data_header(self, stream: int) -> bytes:
        return _HEADER.pack(DATA, stream)

    def close(self, stream: int) -> bytes | None:
        """Our end of ``stream`` finished: the CLOSE to send, or None when the stream is already gone."""
        if self.streams.pop(stream, None) is None:
            return None
        return message(CLOSE, stream)

    def pubkey(self, keyring: bytes) -> bytes:
        return message(PUBKEY, 0, keyring)

    def ready(self) -> bytes:
        self.phase = Phase.READY
        return message(READY, 0)

    def error(self, text: str) -> bytes:
        return message(ERROR, 0, text.encode("utf-8", "replace"))
