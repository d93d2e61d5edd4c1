"""The streams of one forward channel, sans-I/O: the :class:`~hatchway.tunnel.mux.ForwardMux` and the sink its
messages go to.

The forwarder's local ends use it to open and end streams (it is the
:class:`~hatchway.tunnel.udp_sources.StreamOpener` of the UDP sources), and
the forwarder's read loop hands it every binary message from the far side:
DATA goes to the stream's local end, a zero-length DATA half-closes it,
CLOSE/ERROR end it (ERROR's text is
logged, escaped), malformed messages are dropped. No sockets, no asyncio.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hatchway.common.logsafe import escape

from .mux import Closed, Connected, ForwardMux, HalfClosed, ProtocolError, Received, Stream
from .protocol import Proto

if TYPE_CHECKING:
    from hatchway.common.sink import Buffer, MessageSink

log = logging.getLogger("hatchway.tunnel.forward")


class ForwardStreams:
    """What a forward channel's local ends and read loop do with its streams; ``sink`` is None until it is open."""

    __slots__ = ("mux", "sink")

    def __init__(self, mux: ForwardMux, sink: MessageSink | None = None) -> None:
        self.mux = mux
        self.sink = sink

    def open_stream(self, proto: Proto) -> Stream | None:
        """A new stream: CONNECT sent; None when the forward channel is gone."""
        stream, connect = self.mux.open(proto)
        if not self.send(connect):
            self.mux.release(stream)
            return None
        return stream

    def finished(self, stream: Stream) -> bytes | None:
        return self.mux.finished(stream)

    def release(self, stream: Stream) -> None:
        self.mux.release(stream)

    @property
    def congested(self) -> bool:
        """The sink is over its high-water mark (UDP drops datagrams meanwhile)."""
        return self.sink is not None and self.sink.paused

    def send(self, *parts: Buffer) -> bool:
        """Send one message on the forward channel; False when it is gone."""
        if self.sink is None:
            return False
        try:
            self.sink.send(*parts)
        except ConnectionError:  # the sink's SinkClosed
            return False
        return True

    def receive(self, data: bytes) -> None:
        """One binary message from the far side."""
        try:
            event = self.mux.receive(data)
        except ProtocolError as exc:
            log.debug("dropping a message: %s", exc)
            return
        if type(event) is Received:
            if event.stream.endpoint is not None:
                event.stream.endpoint.feed(event.payload)
        elif type(event) is HalfClosed:
            if event.stream.endpoint is not None:
                event.stream.endpoint.remote_eof()  # the service half-closed: EOF to the user
        elif type(event) is Closed:
            if event.error is not None:
                log.warning("connection %d: %s", event.stream.client_id, escape(event.error))
            if event.stream.endpoint is not None:
                event.stream.endpoint.remote_closed(event.error)
        elif type(event) is Connected:
            log.debug("connection %d: connected", event.stream.client_id)

    def lost(self) -> None:
        """The forward channel is gone: every stream's local end is reset."""
        for stream in self.mux.lost():
            if stream.endpoint is not None:
                stream.endpoint.link_lost()
