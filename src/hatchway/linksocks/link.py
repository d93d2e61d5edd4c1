"""One authenticated LinkSocks WebSocket: send, read and dispatch, keepalive.

A :class:`Link` wraps an aiohttp WebSocket (client or server side) after
authentication. Sending is synchronous (``WebSocketSink``): control messages
go through :meth:`Link.send`, Data through :meth:`Link.send_data` as header +
payload without concatenation, split at ``max_payload`` bytes.

:meth:`Link.serve` runs common's one read loop (:class:`MuxSession`) until
the WebSocket ends: before each read it waits on the :class:`InboundGate` (a
channel whose local socket is full holds the loop: backpressure instead of
dropping; a reader stalled past the stall timeout is reset), noticing a dead
connection meanwhile; every message is decoded and handed to
``dispatch(link, message)``. Keepalive, as Go 1.10.3 does it on both sides: a
ping every ``ping_interval`` seconds, and a read deadline of ``read_timeout``
seconds re-armed by any message or pong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from hatchway.common.gate import DEFAULT_STALL_TIMEOUT, InboundGate
from hatchway.common.muxsession import EndKind, MuxSession, ProtocolViolation
from hatchway.common.sink import SinkClosed
from hatchway.common.tasks import TaskSet
from hatchway.common.wsconn import WebSocketSink

from . import protocol
from .options import LinkOptions
from .protocol import ProtocolError
from .routing import describe

if TYPE_CHECKING:
    from .channel_table import Endpoint
    from .tokens import Role

log = logging.getLogger(__name__)

MAX_MSG_SIZE = protocol.MAX_MESSAGE + 64 * 1024  # a 32 MiB payload plus its header and trailers
PING_INTERVAL = 30.0
READ_TIMEOUT = 60.0

Dispatch = Callable[["Link", Any], None]
TRACE = 5


def call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    """The running loop's ``call_later``, looked up when called (GraceKeeper's scheduler)."""
    return asyncio.get_running_loop().call_later(delay, callback)


async def pick_within(
    pick: Callable[[], Link | None], changed: asyncio.Event, timeout: float, stop: Callable[[], bool] = lambda: False
) -> Link | None:
    """``pick()`` until it returns a link, re-trying each time ``changed`` is set, for at most ``timeout`` s.

    None when the deadline passes (or ``stop()`` says the owner is closing) first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        link = pick()
        if link is not None:
            return link
        remaining = deadline - loop.time()
        if remaining <= 0 or stop():
            return None
        changed.clear()
        try:
            async with asyncio.timeout(remaining):
                await changed.wait()
        except TimeoutError:
            return None


def _ignore(link: Link, message: Any) -> None:
    """Dispatch before :meth:`Link.serve` (never called: the session only reads from serve on)."""


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
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        version: int = protocol.VERSION_DEFAULT,
        max_payload: int = 1024 * 1024,
        ping_interval: float = PING_INTERVAL,
        read_timeout: float = READ_TIMEOUT,
        name: str = "link",
    ) -> None:
        self.ws = ws
        self.writer = WebSocketSink(ws)
        # block policy with a stall timeout: one local reader that stopped cannot freeze the link's other channels;
        # while it holds the read loop, MuxSession watches the socket's TCP state (common/liveness.py)
        self.gate = gate if gate is not None else InboundGate(stall_timeout=stall_timeout)
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
        self._dispatch: Dispatch = _ignore
        self.session = MuxSession(
            ws, self, sink=self.writer, gate=self.gate, ping_interval=ping_interval, read_timeout=read_timeout, name=name
        )

    @classmethod
    def with_options(cls, ws: Any, options: LinkOptions, name: str) -> Link:
        """A link configured from the server's or the client's options (their shared :class:`LinkOptions`)."""
        return cls(
            ws,
            stall_timeout=options.stall_timeout,
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
        """Encode and send one control message; raises SinkClosed when the link is down."""
        self.writer.send(protocol.encode(message, self.version))

    def try_send(self, message: Any) -> bool:
        """Send, ignoring a link that is already gone."""
        try:
            self.send(message)
        except SinkClosed:
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

    # -- reading: common's one read loop (gate with liveness, keepalive, read deadline, polite close)
    async def serve(self, dispatch: Dispatch) -> None:
        """Read and dispatch until the WebSocket ends; then close it."""
        if log.isEnabledFor(TRACE):  # -dd: every received message (checked once, not per message)
            dispatch = _traced(dispatch)
        self._dispatch = dispatch
        try:
            ended = await self.session.run()
            self.close_reason = str(ended)
            if ended.kind in (EndKind.READ_TIMEOUT, EndKind.PROTOCOL_ERROR, EndKind.INTERNAL_ERROR):
                log.warning("%s: %s, closing", self.name, ended)
        finally:
            self.closed = True
            await self.aclose()
            await self._tasks.aclose()

    # MessageHandler (common.muxhandler): called by the session for each message
    def binary_received(self, data: bytes) -> None:
        try:
            version, message = protocol.decode(data)
        except ProtocolError as exc:
            raise ProtocolViolation(f"protocol error: {exc}") from None
        self.peer_version = version
        self._dispatch(self, message)

    def text_received(self, text: str) -> None:
        log.debug("%s: ignoring a text message (not part of the protocol)", self.name)

    async def receive_message(self, timeout: float) -> bytes | str:
        """Handshake phase (authentication): the next message; raises SessionEnded (a ConnectionError)."""
        return await self.session.receive_message(timeout)

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
        await self.session.close()
