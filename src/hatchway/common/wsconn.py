"""WebSocket helpers on aiohttp: dialing, serving, and a synchronous message writer.

aiohttp does the handshake, the frame parsing, ping/pong and close. What it
lacks for a multiplexer is a way to send a binary message from inside a
Protocol callback (``data_received`` cannot await) with flow control across
many channels. :class:`MessageWriter` adds that: it frames messages itself
(masking on the client side, as RFC 6455 requires) and writes them straight to
the connection's transport, then tells its listeners to pause when the
transport's buffer passes the high-water mark and to resume when it drains.

Everything that touches aiohttp internals lives in this file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
from typing import Any, Iterable, Protocol

import aiohttp
from aiohttp import web

try:  # aiohttp's C masking routine; the pure-Python fallback is its own.
    from aiohttp._websocket.helpers import websocket_mask as _mask
except ImportError:  # pragma: no cover - very old aiohttp
    from aiohttp.http_websocket import _websocket_mask as _mask  # type: ignore[attr-defined,no-redef]

from .relay import HIGH_WATER, LOW_WATER

log = logging.getLogger("hatchway.ws")

MAX_MESSAGE_DEFAULT = 64 * 1024 * 1024
_OP_BINARY = 0x2
_PACK_1 = struct.Struct("!BB").pack
_PACK_2 = struct.Struct("!BBH").pack
_PACK_8 = struct.Struct("!BBQ").pack
_rand32 = random.Random(os.urandom(16)).getrandbits


class FlowListener(Protocol):
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class ConnectionGone(ConnectionError):
    """The WebSocket's transport is closed; nothing more can be sent."""


def frame_header(length: int, masked: bool, opcode: int = _OP_BINARY) -> bytes:
    """The header of one final (unfragmented) frame of ``length`` payload bytes."""
    first = 0x80 | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return _PACK_1(first, length | mask_bit)
    if length < 65536:
        return _PACK_2(first, 126 | mask_bit, length)
    return _PACK_8(first, 127 | mask_bit, length)


class MessageWriter:
    """Send binary messages on an established aiohttp WebSocket without awaiting."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
        *,
        high_water: int = HIGH_WATER * 4,
        low_water: int = LOW_WATER * 4,
    ) -> None:
        writer = ws._writer  # type: ignore[union-attr]
        if writer is None:
            raise RuntimeError("WebSocket is not prepared")
        self._ws = ws
        self._transport: asyncio.Transport = writer.transport
        self._protocol: Any = writer.protocol
        self._masked: bool = writer.use_mask
        self._transport.set_write_buffer_limits(high_water, low_water)
        self._listeners: set[FlowListener] = set()
        self.paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._watcher: asyncio.Task[None] | None = None
        self.sent_messages = 0

    # -- sending
    def send(self, *parts: bytes | bytearray | memoryview) -> None:
        """Send ``parts`` joined as one binary message. Raises ConnectionGone when closed."""
        transport = self._transport
        if transport.is_closing():
            raise ConnectionGone("WebSocket transport is closed")
        length = 0
        for part in parts:
            length += len(part)
        if self._masked:
            mask = _rand32(32).to_bytes(4, "big")
            payload = bytearray().join(parts)
            _mask(mask, payload)
            transport.writelines((frame_header(length, True) + mask, payload))
        else:
            transport.writelines((frame_header(length, False), *parts))
        self.sent_messages += 1
        if not self.paused and self._protocol._paused:
            self._pause()

    def send_message(self, message: bytes | bytearray | memoryview) -> None:
        self.send(message)

    @property
    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    @property
    def closed(self) -> bool:
        return self._transport.is_closing()

    # -- flow control
    def add_listener(self, listener: FlowListener) -> None:
        self._listeners.add(listener)
        if self.paused:
            listener.pause_writing()

    def remove_listener(self, listener: FlowListener) -> None:
        self._listeners.discard(listener)

    async def drained(self) -> None:
        """Wait until the transport's buffer is below the low-water mark."""
        if self.paused:
            await self._resumed.wait()

    def _pause(self) -> None:
        self.paused = True
        self._resumed.clear()
        for listener in list(self._listeners):
            listener.pause_writing()
        self._watcher = asyncio.ensure_future(self._wait_resume())

    async def _wait_resume(self) -> None:
        try:
            await self._protocol._drain_helper()
        except (ConnectionError, asyncio.CancelledError):
            pass
        self.paused = False
        self._resumed.set()
        for listener in list(self._listeners):
            listener.resume_writing()

    def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
        self._listeners.clear()


def set_ws_nodelay(ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
    writer = ws._writer  # type: ignore[union-attr]
    sock = writer.transport.get_extra_info("socket") if writer is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def client_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A session whose connector sets TCP_NODELAY and does not pool WebSockets."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0, ssl=kwargs.pop("ssl", True))
    return aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",), **kwargs)


async def dial(
    session: aiohttp.ClientSession,
    url: str,
    *,
    heartbeat: float | None = None,
    max_msg_size: int = MAX_MESSAGE_DEFAULT,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    proxy: str | None = None,
    autoping: bool = True,
) -> aiohttp.ClientWebSocketResponse:
    """Open a WebSocket: no compression offered, no subprotocol, TCP_NODELAY set.

    ``autoping=False`` hands PING/PONG frames to the reader (which must answer
    pings), for programs that run their own keepalive and read deadline.
    """
    ws = await _ws_connect(session, url, heartbeat, max_msg_size, timeout, headers, proxy, autoping)
    set_ws_nodelay(ws)
    return ws


async def _ws_connect(
    session: aiohttp.ClientSession,
    url: str,
    heartbeat: float | None,
    max_msg_size: int,
    timeout: float,
    headers: dict[str, str] | None,
    proxy: str | None,
    autoping: bool = True,
) -> aiohttp.ClientWebSocketResponse:
    async with asyncio.timeout(timeout):
        return await session.ws_connect(
            url,
            compress=0,
            autoping=autoping,
            heartbeat=heartbeat,
            max_msg_size=max_msg_size,
            headers=headers,
            proxy=proxy,
        )


async def accept(
    request: web.Request,
    *,
    heartbeat: float | None = None,
    max_msg_size: int = MAX_MESSAGE_DEFAULT,
    autoping: bool = True,
) -> web.WebSocketResponse:
    """Upgrade a request: permessage-deflate declined, TCP_NODELAY set (``autoping`` as in :func:`dial`)."""
    ws = web.WebSocketResponse(compress=False, heartbeat=heartbeat, max_msg_size=max_msg_size, autoping=autoping)
    await ws.prepare(request)
    set_ws_nodelay(ws)
    return ws


async def serve_app(
    app: web.Application, host: str | Iterable[str], port: int, *, reuse_address: bool = True
) -> tuple[web.AppRunner, list[tuple[str, int]]]:
    """Start ``app`` on host:port (port 0 picks one); returns the runner and bound addresses."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    hosts = [host] if isinstance(host, str) else list(host)
    bound: list[tuple[str, int]] = []
    for one in hosts:
        site = web.TCPSite(runner, one, port, reuse_address=reuse_address, backlog=4096)
        await site.start()
        server = site._server  # type: ignore[attr-defined]
        for sock in server.sockets:
            bound.append(sock.getsockname()[:2])
    return runner, bound
