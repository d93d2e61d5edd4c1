"""Output of a session as ``stdout``/``stderr`` messages: the write end of a one-way pump.

A child's pipe (or PTY master) is read by a :class:`~hatchway.common.pump.OneWayPump`
whose target is the :class:`~hatchway.common.pump.SinkWriter` made by
:func:`output_writer`: every read becomes messages of at most 32 KiB
(:data:`~.protocol.CHUNK`) on the connection's sink, as text frames. The pump
follows the sink's flow control (reading the pipe stops while the WebSocket is
full: backpressure, never a drop). When the peer is gone the writer keeps
accepting and discards, so a dead client never blocks the child (upstream's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from hatchway.common.pump import SinkWriter
from hatchway.common.sink import Buffer, MessageSink

from .protocol import CHUNK, encode_output, output_prefix

__all__ = ["TextSink", "output_writer"]


class TextSink(MessageSink, Protocol):
    """A message sink that also sends text messages (``WebSocketSink``)."""

    def send_text(self, *parts: Buffer | str) -> None: ...
    def send_many(self, messages: Sequence[Sequence[Buffer]], *, text: bool = False) -> None: ...


def output_writer(sink: TextSink, stream: str, ident: str,
                  on_end: Callable[[Exception | None], None] | None = None) -> SinkWriter:
    """A ``WriteEnd`` turning bytes into ``stdout``/``stderr`` text messages for session ``ident``."""
    return SinkWriter(sink, on_end, max_message=CHUNK, encode=partial(encode_output, output_prefix(stream, ident)),
                      send=sink.send_text, discard_when_closed=True, send_many=partial(sink.send_many, text=True))
