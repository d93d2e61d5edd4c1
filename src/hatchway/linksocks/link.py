"""One authenticated LinkSocks WebSocket: send, read and dispatch, keepalive.

A :class:`Link` wraps an aiohttp WebSocket (client or server side) after
authentication. Sending is synchronous (``MessageWriter``): control messages
go through :meth:`Link.send`, Data through :meth:`Link.send_data` as header +
payload without concatenation, split at ``max_payload`` bytes.

:meth:`Link.serve` runs the read loop until the WebSocket ends. Before each
read it waits on the :class:`InboundGate` (a channel whose local socket is
full holds the loop: backpressure instead of dropping). Every message is
decoded and handed to ``dispatch(link, message)``. Keepalive, as Go 1.10.3
does it on both sides: a ping every ``ping_interval`` seconds, and a read
deadline of ``read_timeout`` seconds re-armed by any message or pong.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType

from hatchway.common.gate import DEFAULT_STALL_TIMEOUT, InboundGate
from hatchway.common.tasks import TaskSet
from hatchway.common.wsconn import ConnectionGone, MessageWriter, close_politely

from . import protocol
from .options import LinkOptions
from .protocol import ProtocolError

if TYPE_CHECKING:
    from .channel import Endpoint
from .tokens import Role

log = logging.getLogger(__name__)

MAX_MSG_SIZE = protocol.MAX_MESSAGE + 64 * 1024  # a 32 MiB payload plus its header and trailers
PING_INTERVAL = 30.0
READ_TIMEOUT = 60.0
_TCP_ESTABLISHED = 1  # tcpi_state in Linux's struct tcp_info
GATE_POLL = 0.25  # while the gate holds the read loop, look this often whether the WebSocket died
_CLOSED_TYPES = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)

Dispatch = Callable[["Link", Any], None]
TRACE = 5


def tcp_established(sock: Any) -> bool:
    """True unless the kernel says the TCP connection is no longer established (peer reset or FIN)."""
    if sock is None:
        return True
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except (OSError, AttributeError, ValueError):
        return True
    return bool(info) and info[0] == _TCP_ESTABLISHED


def describe(message: Any) -> str:
    """A short text for a trace line: type, channel id, sizes."""
    name = type(message).__name__
    channel_id = getattr(message, "channel_id", None)
    parts = [name]
    if channel_id is not None:
        parts.append(protocol.uuid_text(channel_id))
    data = getattr(message, "data", None)
    if data is not None:
        parts.append(f"{len(data)} bytes")
    return " ".join(parts)


def _traced(dispatch: Dispatch) -> Dispatch:
    def traced(link: Link, message: Any) -> None:
        log.log(TRACE, "%s: recv %s", link.name, describe(message))
        dispatch(link, message)

    return traced


class Link:
    """An authenticated WebSocket carrying LinkSocks messages."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse | aiohttp.web.WebSocketResponse,
        *,
        gate: InboundGate | None = None,
        version: int = protocol.VERSION_DEFAULT,
        max_payload: int = 1024 * 1024,
        ping_interval: float = PING_INTERVAL,
        read_timeout: float = READ_TIMEOUT,
        name: str = "link",
    ) -> None:
        self.ws = ws
        self.writer = MessageWriter(ws)
        # block policy with a stall timeout: one local reader that stopped cannot freeze the link's other channels
        self.gate = gate if gate is not None else InboundGate(stall_timeout=DEFAULT_STALL_TIMEOUT)
        self.version = version
        self.max_payload = max(1, max_payload)
        self.ping_interval = ping_interval
        self.read_timeout = read_timeout
        self.name = name
        self.channels: set[Endpoint] = set()  # endpoints whose messages this link carries
        self.closed = False
        self.close_reason = ""
        self.peer_version: int | None = None
        # set by the server once the peer authenticated (a client's own links keep None)
        self.token: str | None = None
        self.role: Role | None = None
        self.pool_key: str | None = None  # providers: the pool they serve (the reverse or internal token)
        self._tasks = TaskSet(f"link {name}", logger=log)

    @classmethod
    def with_options(cls, ws: Any, options: LinkOptions, name: str) -> Link:
        """A link configured from the server's or the client's options (their shared :class:`LinkOptions`)."""
        return cls(
            ws,
            gate=InboundGate(stall_timeout=options.stall_timeout),
            version=options.wire_version,
            max_payload=options.buffer_size,
            ping_interval=options.ping_interval,
            read_timeout=options.read_timeout,
            name=name,
        )

    def __repr__(self) -> str:
        return f"<Link {self.name}>"

    # -- sending
    def send(self, message: Any) -> None:
        """Encode and send one control message; raises ConnectionGone when the link is down."""
        self.writer.send(protocol.encode(message, self.version))

    def try_send(self, message: Any) -> bool:
        """Send, ignoring a link that is already gone."""
        try:
            self.send(message)
        except ConnectionGone:
            return False
        return True

    def send_data(self, channel_id: bytes, payload: bytes | bytearray | memoryview, sequence: int = 0) -> None:
        """One or more TCP Data messages carrying ``payload`` (never compressed).

        ``sequence`` (ledger channels): the stream offset of the payload's end,
        sent in each message's Sequence trailer (per piece when split).
        """
        size = len(payload)
        limit = self.max_payload
        send = self.writer.send
        version = self.version
        if size <= limit:
            if sequence:
                send(protocol.data_header(channel_id, size, version), payload, protocol.sequence_trailer(sequence))
            else:
                send(protocol.data_header(channel_id, size, version), payload)
            return
        view = memoryview(payload)
        for start in range(0, size, limit):
            piece = view[start : start + limit]
            header = protocol.data_header(channel_id, len(piece), version)
            if sequence:
                send(header, piece, protocol.sequence_trailer(sequence - size + start + len(piece)))
            else:
                send(header, piece)

    def send_half_close(self, channel_id: bytes, offset: int) -> None:
        """Ledger half-close: no more bytes after ``offset`` in this direction (the reply may still come)."""
        header = protocol.data_header(channel_id, 0, self.version, compression=protocol.HALF_CLOSE)
        self.writer.send(header, protocol.sequence_trailer(offset))

    def send_ack(self, channel_id: bytes, offset: int) -> None:
        """Ledger acknowledgement: a zero-length Data whose Sequence is the count of delivered bytes."""
        self.writer.send(protocol.data_header(channel_id, 0, self.version), protocol.sequence_trailer(offset))

    def send_udp(
        self,
        channel_id: bytes,
        payload: bytes | memoryview,
        address: str = "",
        port: int = 0,
        target_address: str = "",
        target_port: int = 0,
    ) -> None:
        header = protocol.data_header(channel_id, len(payload), self.version, protocol.UDP)
        trailer = protocol.udp_trailer(address, port, target_address, target_port)
        self.writer.send(header, payload, trailer)

    @property
    def alive(self) -> bool:
        return not self.closed and not self.writer.closed

    # -- reading
    async def serve(self, dispatch: Dispatch) -> None:
        """Read and dispatch until the WebSocket ends; then close it."""
        if log.isEnabledFor(TRACE):  # -dd: every received message (checked once, not per message)
            dispatch = _traced(dispatch)
        keepalive = self._tasks.spawn(self._keepalive(), name="keepalive") if self.ping_interval > 0 else None
        try:
            await self._read_loop(dispatch)
        finally:
            self.closed = True
            if keepalive is not None:
                keepalive.cancel()
            await self.aclose()
            self.writer.close()
            await self._tasks.aclose()

    async def _read_loop(self, dispatch: Dispatch) -> None:
        ws = self.ws
        gate = self.gate
        timeout = self.read_timeout if self.read_timeout > 0 else None
        decode = protocol.decode
        while not self.closed:
            if gate.blocked and not await self._gate_or_gone():
                self.close_reason = "connection lost"
                return
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                self.close_reason = f"nothing received for {self.read_timeout:g} s"
                log.warning("%s: %s, closing", self.name, self.close_reason)
                return
            kind = msg.type
            if kind is WSMsgType.BINARY:
                try:
                    version, message = decode(msg.data)
                except ProtocolError as exc:
                    self.close_reason = f"protocol error: {exc}"
                    log.warning("%s: %s, closing", self.name, self.close_reason)
                    return
                self.peer_version = version
                try:
                    dispatch(self, message)
                except Exception:  # a bug must not take the process down: end this link only
                    log.exception("%s: failed to handle %s", self.name, type(message).__name__)
                    self.close_reason = f"internal error handling {type(message).__name__}"
                    return
            elif kind is WSMsgType.PING:
                try:
                    await ws.pong(msg.data)
                except (ConnectionError, RuntimeError):
                    return
            elif kind is WSMsgType.PONG:
                continue
            elif kind in _CLOSED_TYPES:
                self.close_reason = "closed by peer" if kind is not WSMsgType.ERROR else f"error: {ws.exception()}"
                return
            else:  # text frames are not part of the protocol
                log.debug("%s: ignoring a %s message", self.name, kind.name)

    async def _gate_or_gone(self) -> bool:
        """Wait for the gate to open; False when the WebSocket died meanwhile (noticed within GATE_POLL)."""
        return await self.gate.wait_until_open(self._alive_now, GATE_POLL)

    def _alive_now(self) -> bool:
        """Is the connection still up, without reading from it? (A stalled reader does not read.)"""
        if self.writer.closed:
            return False
        return tcp_established(self.ws.get_extra_info("socket"))

    async def _keepalive(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.ping_interval)
                if self.writer.closed:
                    return
                await self.ws.ping()
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    def close(self) -> None:
        """Ask the read loop to end (the WebSocket is closed by :meth:`serve`)."""
        if self.closed:
            return
        self.closed = True
        if not self.writer.transport_lost:
            self._tasks.spawn(self.aclose(), name="close")

    async def aclose(self) -> None:
        """Close the WebSocket politely (no data frame after our Close; 2 s for the peer's, then abort)."""
        self.closed = True
        await close_politely(self.ws, self.writer)
