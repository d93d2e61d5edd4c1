"""One tunnel connection of the client: the asyncio driver of a :class:`~hatchway.tunnel.mux.ClientMux`.

The common :class:`~hatchway.common.muxsession.MuxSession` reads the
WebSocket (the one read loop, with its gate and liveness checks); this class
is its handler: it hands each binary message to
:class:`~hatchway.tunnel.client_streams.ClientStreams` (sans-I/O: the mux's
events reach the streams' local ends, PING is answered, bad messages are
logged; the rules live in the mux, tunnel.md section 5.3 with hatchway's
fixes) and opens what it asks for: dial 127.0.0.1:port (a
:class:`TcpStream`) or open a UDP flow.

Before reading the next message the loop passes the :class:`InboundGate`,
which holds it while a local consumer is too slow (``block`` policy). When the
WebSocket ends every stream is dropped and its service is reset (nobody ended
those connections on purpose: issue #6 item 4).
"""

from __future__ import annotations

import logging

import aiohttp

from hatchway.common.gate import Drainable, InboundGate
from hatchway.common.muxsession import EndKind, MuxSession
from hatchway.common.neterr import rust_io_error
from hatchway.common.tasks import TaskSet
from hatchway.common.wsconn import WebSocketSink

from .client_streams import ClientStreams
from .mux import ClientMux, Stream
from .options import ClientOptions
from .protocol import Proto
from .tcp_stream import TcpStream
from .udp import UdpFlow, open_udp_socket

log = logging.getLogger(__name__)


CLOSE_TIMEOUT = 2.0  # how long a polite close waits for the runner's close frame


class TunnelSession:
    """Runs one established tunnel WebSocket until it ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: ClientOptions) -> None:
        self.ws = ws
        self.options = options
        self.mux = ClientMux()
        self.sink = WebSocketSink(ws)
        self.client_streams = ClientStreams(self.mux, self.sink)
        self.gate = InboundGate(options.slow_consumer, options.stall_timeout)
        self.tasks = TaskSet("tunnel session", logger=log)
        self.reader = MuxSession(
            ws, self, sink=self.sink, gate=self.gate, name="tunnel", survive_handler_errors=True,
            close_timeout=CLOSE_TIMEOUT,
        )
        self.ended = False

    @property
    def streams(self) -> dict[int, Stream]:
        """Live streams by id (the mux's table)."""
        return self.mux.streams

    async def run(self) -> None:
        """Read and dispatch messages until the WebSocket ends."""
        ended = await self.reader.run()
        if ended.kind is EndKind.LOST_WHILE_BLOCKED:
            log.warning("tunnel lost while a local consumer was blocking it")
        elif ended.kind is EndKind.CONNECTION_LOST and ended.detail:
            log.warning("tunnel error: %s", ended)

    # -- the MuxSession's handler
    def binary_received(self, data: bytes) -> Drainable | None:
        self.dispatch(data)
        return None

    def text_received(self, text: str) -> Drainable | None:
        log.warning("ignoring a text message from the runner (%d chars)", len(text))
        return None

    def dispatch(self, data: bytes) -> None:
        """Handle one binary message from the runner (the rules are ClientStreams'); open what it asks for."""
        stream = self.client_streams.receive(data)
        if stream is not None:
            self._open(stream)

    # -- streams
    def _open(self, stream: Stream) -> None:
        options = self.options
        if stream.proto is Proto.TCP:
            tcp = TcpStream(self.sink, self.gate, stream, self.mux, options.buffer_limit)
            self.tasks.spawn(tcp.open(options.connect_timeout, options.ipv6_fallback), name=f"dial {stream.port}")
            return
        try:
            sock = open_udp_socket(stream.port)
        except OSError as exc:
            text = rust_io_error(exc)
            log.info("udp %d: cannot open a socket to 127.0.0.1:%d: %s", stream.client_id, stream.port, text)
            message = self.mux.failed(stream, text)
            if message is not None:
                self.client_streams.send(message)
            return
        flow = UdpFlow(
            self.sink, stream, self.mux, sock,
            buffer_limit=options.buffer_limit, idle_timeout=options.udp_idle_timeout,
        )
        message = self.mux.connected(stream)
        if message is not None:
            self.client_streams.send(message)
        self.tasks.spawn(flow.open(), name=f"udp {stream.port}")

    # -- end
    async def close(self) -> None:
        """Drop every stream (services see EOF) and close the WebSocket politely."""
        if self.ended:
            return
        self.ended = True
        self.client_streams.lost()
        self.tasks.cancel(close=True)
        self.gate.close()
        await self.reader.close()
        await self.tasks.aclose()
