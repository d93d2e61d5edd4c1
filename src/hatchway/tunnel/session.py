"""One tunnel connection of the client: the asyncio driver of a :class:`~hatchway.tunnel.mux.ClientMux`.

The read loop hands each binary message to the mux and acts on its event
(the rules live in the mux, tunnel.md section 5.3 with hatchway's fixes):

* ``Opened``: dial 127.0.0.1:port (a :class:`TcpStream`) or open a UDP flow;
* ``Received``: feed the stream's local end (a zero-copy view);
* ``Closed``: the runner ended the stream; its local end delivers what is
  queued and closes;
* ``Reply``: send it (PONG);
* ``Ignored`` and malformed messages: a warning, nothing else.

Before reading the next message the loop passes the :class:`InboundGate`,
which holds it while a local consumer is too slow (``block`` policy). When the
WebSocket ends every stream is dropped and its service sees EOF.
"""

from __future__ import annotations

import logging

import aiohttp

from hatchway.common.gate import InboundGate, SlowConsumerPolicy
from hatchway.common.neterr import rust_io_error
from hatchway.common.sink import SinkClosed
from hatchway.common.tasks import TaskSet
from hatchway.common.wsconn import WebSocketSink, close_politely

from .mux import ClientMux, Closed, Ignored, Opened, ProtocolError, Received, Reply, Stream
from .options import ClientOptions
from .protocol import Proto
from .tcp_stream import TcpStream
from .udp import UdpFlow, open_udp_socket

log = logging.getLogger(__name__)

_BINARY = aiohttp.WSMsgType.BINARY
_TEXT = aiohttp.WSMsgType.TEXT

CLOSE_TIMEOUT = 2.0  # how long a polite close waits for the runner's close frame


class TunnelSession:
    """Runs one established tunnel WebSocket until it ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: ClientOptions) -> None:
        self.ws = ws
        self.options = options
        self.mux = ClientMux()
        self.writer = WebSocketSink(ws)
        self.gate = InboundGate(SlowConsumerPolicy(options.slow_consumer), options.stall_timeout)
        self.tasks = TaskSet("tunnel session", logger=log)
        self.ended = False

    @property
    def streams(self) -> dict[int, Stream]:
        """Live streams by id (the mux's table)."""
        return self.mux.streams

    # -- read loop
    async def run(self) -> None:
        """Read and dispatch messages until the WebSocket ends."""
        receive = self.ws.receive
        dispatch = self.dispatch
        gate = self.gate
        while True:
            if gate.blocked and not await gate.wait_until_open(self._alive):
                log.warning("tunnel lost while a local consumer was blocking it")
                return
            msg = await receive()
            if msg.type is _BINARY:
                try:
                    dispatch(msg.data)
                except Exception:  # a bug must not take the tunnel down
                    log.exception("error handling a tunnel message")
            elif msg.type is _TEXT:
                log.warning("ignoring a text message from the runner (%d chars)", len(msg.data))
            else:
                if msg.type is aiohttp.WSMsgType.ERROR:
                    log.warning("tunnel error: %s", msg.data)
                return

    def _alive(self) -> bool:
        return not (self.writer.closed or self.ws.closed)

    def dispatch(self, data: bytes) -> None:
        """Handle one binary message from the runner."""
        try:
            event = self.mux.receive(data)
        except ProtocolError as exc:
            log.warning("dropping a message: %s", exc)
            return
        if event is None:
            return
        if type(event) is Received:
            endpoint = event.stream.endpoint
            if endpoint is not None:
                endpoint.feed(event.payload)
        elif type(event) is Opened:
            self._open(event.stream)
        elif type(event) is Closed:
            if event.stream.endpoint is not None:
                event.stream.endpoint.remote_closed()
        elif type(event) is Reply:
            self._send(event.message)
        elif type(event) is Ignored:
            log.warning("%s", event.reason)

    # -- streams
    def _open(self, stream: Stream) -> None:
        options = self.options
        if stream.proto is Proto.TCP:
            tcp = TcpStream(self.writer, self.gate, stream, self.mux, options.buffer_limit)
            self.tasks.spawn(tcp.open(options.connect_timeout, options.ipv6_fallback), name=f"dial {stream.port}")
            return
        try:
            sock = open_udp_socket(stream.port)
        except OSError as exc:
            text = rust_io_error(exc)
            log.info("udp %d: cannot open a socket to 127.0.0.1:%d: %s", stream.client_id, stream.port, text)
            message = self.mux.failed(stream, text)
            if message is not None:
                self._send(message)
            return
        flow = UdpFlow(
            self.writer, stream, self.mux, sock,
            buffer_limit=options.buffer_limit, idle_timeout=options.udp_idle_timeout,
        )
        message = self.mux.connected(stream)
        if message is not None:
            self._send(message)
        self.tasks.spawn(flow.open(), name=f"udp {stream.port}")

    def _send(self, message: bytes) -> None:
        try:
            self.writer.send(message)
        except SinkClosed:
            pass

    # -- end
    async def close(self) -> None:
        """Drop every stream (services see EOF) and close the WebSocket politely."""
        if self.ended:
            return
        self.ended = True
        for stream in self.mux.lost():
            if stream.endpoint is not None:
                stream.endpoint.link_lost()
        self.tasks.cancel(close=True)
        self.gate.close()
        await close_politely(self.ws, self.writer, CLOSE_TIMEOUT)
        self.writer.close()
        await self.tasks.aclose()
