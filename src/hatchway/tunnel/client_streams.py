"""The streams of one tunnel connection on the client, sans-I/O: the :class:`~hatchway.tunnel.mux.ClientMux` and
the sink its messages go to.

The session's read loop hands every binary message from the runner to
:meth:`ClientStreams.receive`; everything but opening a local socket is
decided here: DATA goes to the stream's local end (a zero-copy view), a
zero-length DATA half-closes it (the user's EOF),
CLOSE ends it, PING is answered, ignored and malformed messages are logged
(escaped). A CONNECT comes back as the stream the driver must open.
No sockets, no asyncio.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .mux import ClientMux, Closed, HalfClosed, Ignored, Opened, ProtocolError, Received, Reply, Stream

if TYPE_CHECKING:
    from hatchway.common.sink import MessageSink

log = logging.getLogger("hatchway.tunnel.session")


class ClientStreams:
    """What a tunnel connection does with the runner's messages; ``sink`` carries the answers."""

    __slots__ = ("mux", "sink")

    def __init__(self, mux: ClientMux, sink: MessageSink) -> None:
        self.mux = mux
        self.sink = sink

    def receive(self, data: bytes) -> Stream | None:
        """One binary message from the runner; returns a stream to open (a CONNECT), else None."""
        try:
            event = self.mux.receive(data)
        except ProtocolError as exc:
            log.warning("dropping a message: %s", exc)
            return None
        if event is None:
            return None
        if type(event) is Received:
            endpoint = event.stream.endpoint
            if endpoint is not None:
                endpoint.feed(event.payload)
        elif type(event) is HalfClosed:
            if event.stream.endpoint is not None:
                event.stream.endpoint.remote_eof()  # the service's socket is half-closed
        elif type(event) is Opened:
            return event.stream
        elif type(event) is Closed:
            if event.stream.endpoint is not None:
                event.stream.endpoint.remote_closed()
        elif type(event) is Reply:
            self.send(event.message)
        elif type(event) is Ignored:
            log.warning("%s", event.reason)
        return None

    def send(self, message: bytes) -> bool:
        """Send one message to the runner; False when the tunnel is gone."""
        try:
            self.sink.send(message)
        except ConnectionError:  # the sink's SinkClosed
            return False
        return True

    def lost(self) -> None:
        """The tunnel is gone: every stream's local end is reset (nobody ended them on purpose)."""
        for stream in self.mux.lost():
            if stream.endpoint is not None:
                stream.endpoint.link_lost()
