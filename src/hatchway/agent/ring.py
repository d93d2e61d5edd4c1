"""The main process's output history: one interleaved, stream-tagged ring, sans-I/O.

Upstream keeps one 1 MiB ring per stream and replays stdout, then stderr,
losing their interleaving. :class:`OutputRing` keeps the chunks of both
streams in arrival order (a sequence number per chunk) and, per stream,
exactly the most recent ``per_stream`` bytes (1,048,576 by default, as
upstream). :meth:`OutputRing.replay` gives them back merged in order, in
pieces of at most 32 KiB.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PER_STREAM", "STDERR", "STDOUT", "OutputRing"]

STDOUT = 1
STDERR = 2
PER_STREAM = 1024 * 1024


class _Stream:
    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, bytes]] = deque()
        self.size = 0


class OutputRing:
    def __init__(self, per_stream: int = PER_STREAM) -> None:
        self.per_stream = per_stream
        self._streams = {STDOUT: _Stream(), STDERR: _Stream()}
        self._seq = 0
        self.written = {STDOUT: 0, STDERR: 0}

    def append(self, stream: int, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        limit = self.per_stream
        chunk = bytes(data[-limit:]) if len(data) > limit else bytes(data)
        self.written[stream] += len(data)
        state = self._streams[stream]
        self._seq += 1
        state.chunks.append((self._seq, chunk))
        state.size += len(chunk)
        chunks = state.chunks
        while state.size > limit:
            seq, first = chunks[0]
            excess = state.size - limit
            if len(first) <= excess:
                chunks.popleft()
                state.size -= len(first)
            else:
                chunks[0] = (seq, first[excess:])
                state.size -= excess

    def size(self, stream: int) -> int:
        return self._streams[stream].size

    def replay(self, piece: int = 32 * 1024) -> list[tuple[int, bytes]]:
        """Every kept chunk as (stream, bytes), in arrival order, split into pieces of at most ``piece`` bytes."""
        tagged = [(seq, STDOUT, data) for seq, data in self._streams[STDOUT].chunks]
        tagged += [(seq, STDERR, data) for seq, data in self._streams[STDERR].chunks]
        tagged.sort(key=lambda item: item[0])
        out: list[tuple[int, bytes]] = []
        for _, stream, data in tagged:
            if out and out[-1][0] == stream and len(out[-1][1]) + len(data) <= piece:
                out[-1] = (stream, out[-1][1] + data)
                continue
            for start in range(0, len(data), piece):
                out.append((stream, data[start : start + piece]))
        return out
