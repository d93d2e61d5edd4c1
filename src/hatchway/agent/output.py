"""Output of a session as ``stdout``/``stderr`` messages: the write end of a one-way pump.

A child's pipe (or PTY master) is read by a :class:`~hatchway.common.pump.OneWayPump`
whose target is an :class:`OutputWriter`: every read becomes messages of at
most 32 KiB on the connection's sink. The pump follows the sink's flow control
(reading the pipe stops while the WebSocket is full: backpressure, never a
drop). When the peer is gone the writer keeps accepting and discards, so a
dead client never blocks the child (upstream's rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hatchway.common.sink import Buffer, FlowListener, MessageSink, SinkClosed

from .protocol import CHUNK, encode_output, output_prefix

__all__ = ["OutputWriter", "TextSink"]


class TextSink(MessageSink, Protocol):
    """A message sink that also sends text messages (``WebSocketSink``)."""

    def send_text(self, *parts: Buffer | str) -> None: ...


class OutputWriter:
    """A ``WriteEnd`` turning bytes into ``stdout``/``stderr`` messages for one session id."""

    def __init__(self, sink: TextSink, stream: str, ident: str,
                 on_end: Callable[[Exception | None], None] | None = None,
                 flow: FlowListener | None = None) -> None:
        self.sink = sink
        self.prefix = output_prefix(stream, ident)
        self.sent = 0
        self.discarded = 0
        self._on_end = on_end
        self._flow = flow
        self._ended = False
        if flow is not None:
            sink.add_listener(flow)
            if sink.paused:
                flow.pause_writing()

    def write(self, data: Buffer) -> None:
        sink = self.sink
        if sink.closed:
            self.discarded += len(data)
            return
        prefix = self.prefix
        try:
            if len(data) <= CHUNK:
                sink.send_text(*encode_output(prefix, data))
            else:
                view = memoryview(data)
                for start in range(0, len(view), CHUNK):
                    sink.send_text(*encode_output(prefix, view[start : start + CHUNK]))
        except SinkClosed:
            self.discarded += len(data)
            return
        self.sent += len(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._end(None)

    def close(self) -> None:
        self._end(None)

    def abort(self) -> None:
        self._end(ConnectionResetError("the output source failed"))

    def is_closing(self) -> bool:
        return self._ended

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def _end(self, exc: Exception | None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._flow is not None:
            self.sink.remove_listener(self._flow)
        if self._on_end is not None:
            self._on_end(exc)
