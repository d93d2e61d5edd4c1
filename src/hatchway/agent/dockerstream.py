"""Docker's multiplexed stream framing (``application/vnd.docker.multiplexed-stream``), sans-I/O.

Non-TTY exec/attach output travels as frames: 1 byte stream type (0 stdin,
1 stdout, 2 stderr, 3 system error), 3 zero bytes, a big-endian uint32
payload length, then the payload. TTY streams are raw bytes
(``application/vnd.docker.raw-stream``).
"""

from __future__ import annotations

import struct

__all__ = ["RAW_STREAM", "MULTIPLEXED_STREAM", "STDERR", "STDIN", "STDOUT", "SYSTEMERR", "FrameReader", "frame_header"]

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
_HEADER = struct.Struct(">BxxxI")


def frame_header(stream: int, length: int) -> bytes:
    return _HEADER.pack(stream, length)


class FrameReader:
    """Bytes in, ``(stream, payload)`` frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        while len(buffer) >= 8:
            stream, length = _HEADER.unpack_from(buffer)
            if len(buffer) < 8 + length:
                break
            frames.append((stream, bytes(buffer[8 : 8 + length])))
            del buffer[: 8 + length]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)
