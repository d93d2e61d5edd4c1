"""One tunnel connection of the client: the WebSocket read loop and the connection table.

The read loop decodes each binary message's 8-byte header in place and
dispatches it (tunnel.md section 5.3, with hatchway's fixes):

* CONNECT: a new TCP connection or UDP flow; a duplicate id is ignored.
* DATA: fed to the connection as a zero-copy view; unknown ids are dropped.
* CLOSE: the connection delivers what is queued, closes, and is forgotten.
* PING: answered with PONG(TCP, same id, port 0, empty) whatever it carried.
* CONNECTED, ERROR, PONG from the runner, short messages, unknown types or
  protos, and text messages: a warning, nothing else.

Before reading the next message the loop passes the :class:`InboundGate`,
which holds it while a local consumer is too slow (``block`` policy). When the
WebSocket ends every connection is dropped and its service sees EOF.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import aiohttp

from hatchway.common.channel import InboundGate, SlowConsumerPolicy
from hatchway.common.neterr import rust_io_error
from hatchway.common.wsconn import ConnectionGone, MessageWriter

from . import protocol
from .connection import TcpConnection
from .options import ClientOptions
from .protocol import HEADER_SIZE, MsgType, Proto
from .udp import UdpFlow, open_udp_socket

log = logging.getLogger("hatchway.tunnel.client")

_unpack_header = struct.Struct("!BBIH").unpack_from
_CONNECT = int(MsgType.CONNECT)
_DATA = int(MsgType.DATA)
_CLOSE = int(MsgType.CLOSE)
_PING = int(MsgType.PING)
_TCP = int(Proto.TCP)
_UDP = int(Proto.UDP)
_IGNORED = {int(MsgType.CONNECTED): "CONNECTED", int(MsgType.ERROR): "ERROR", int(MsgType.PONG): "PONG"}
_BINARY = aiohttp.WSMsgType.BINARY
_TEXT = aiohttp.WSMsgType.TEXT

GATE_POLL = 0.5  # while blocked, how often to check that the WebSocket is still alive
CLOSE_TIMEOUT = 2.0  # how long a polite close waits for the runner's close frame


class TunnelSession:
    """Runs one established tunnel WebSocket until it ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: ClientOptions) -> None:
        self.ws = ws
        self.options = options
        self.writer = MessageWriter(ws)
        self.gate = InboundGate(SlowConsumerPolicy(options.slow_consumer), options.stall_timeout)
        self.connections: dict[int, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_unknown = -1
        self.ended = False

    # -- read loop
    async def run(self) -> None:
        """Read and dispatch messages until the WebSocket ends."""
        receive = self.ws.receive
        dispatch = self.dispatch
        gate = self.gate
        while True:
            if gate.blocked and not await self._wait_gate():
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

    async def _wait_gate(self) -> bool:
        """Wait for the gate to open; False when the WebSocket died meanwhile."""
        while self.gate.blocked:
            try:
                await asyncio.wait_for(self.gate.wait_open(), GATE_POLL)
            except TimeoutError:
                if self.writer.closed or self.ws.closed:
                    return False
        return True

    def dispatch(self, data: bytes) -> None:
        """Handle one binary message from the runner."""
        if len(data) < HEADER_SIZE:
            log.warning("dropping a %d-byte message (shorter than the 8-byte header)", len(data))
            return
        mtype, proto, client_id, port = _unpack_header(data)
        if proto != _TCP and proto != _UDP:
            log.warning("dropping a message with unknown protocol 0x%02x", proto)
            return
        if mtype == _DATA:
            conn = self.connections.get(client_id)
            if conn is None:
                self._unknown_id(client_id, "DATA")
            elif len(data) > HEADER_SIZE:
                conn.feed(memoryview(data)[HEADER_SIZE:])
        elif mtype == _CONNECT:
            self._on_connect(proto, client_id, port)
        elif mtype == _CLOSE:
            conn = self.connections.get(client_id)
            if conn is None:
                self._unknown_id(client_id, "CLOSE")
            else:
                conn.remote_closed()
        elif mtype == _PING:
            self._send(protocol.pong(client_id))
        elif mtype in _IGNORED:
            log.warning("ignoring %s for id %d from the runner", _IGNORED[mtype], client_id)
        else:
            log.warning("dropping a message with unknown type 0x%02x", mtype)

    def _unknown_id(self, client_id: int, what: str) -> None:
        if client_id != self._last_unknown:  # one warning per run of messages for a gone id
            self._last_unknown = client_id
            log.warning("dropping %s for unknown id %d", what, client_id)

    # -- connections
    def _on_connect(self, proto: int, client_id: int, port: int) -> None:
        if client_id in self.connections:
            log.warning("ignoring a duplicate CONNECT for id %d", client_id)
            return
        if self._last_unknown == client_id:
            self._last_unknown = -1
        if proto == _TCP:
            conn = TcpConnection(self, client_id, port)
            self.connections[client_id] = conn
            self.spawn(conn.open(self.options.connect_timeout, self.options.ipv6_fallback))
        else:
            self._open_udp(client_id, port)

    def _open_udp(self, client_id: int, port: int) -> None:
        try:
            sock = open_udp_socket(port)
        except OSError as exc:
            text = rust_io_error(exc)
            log.info("udp %d: cannot open a socket to 127.0.0.1:%d: %s", client_id, port, text)
            self._send(protocol.error(client_id, text))
            return
        flow = UdpFlow(self, client_id, port, sock)
        self.connections[client_id] = flow
        self._send(protocol.connected(Proto.UDP, client_id))
        self.spawn(flow.open())

    def forget(self, conn: Any) -> None:
        """Drop a connection from the table (if that id still maps to it)."""
        if self.connections.get(conn.client_id) is conn:
            del self.connections[conn.client_id]

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, message: bytes) -> None:
        try:
            self.writer.send(message)
        except ConnectionGone:
            pass

    # -- end
    async def close(self) -> None:
        """Drop every connection (services see EOF) and close the WebSocket politely."""
        if self.ended:
            return
        self.ended = True
        for conn in list(self.connections.values()):
            conn.link_lost()
        self.connections.clear()
        for task in list(self._tasks):
            task.cancel()
        self.writer.close()
        if not self.ws.closed:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.ws.close()
            except (TimeoutError, OSError, aiohttp.ClientError):
                pass
