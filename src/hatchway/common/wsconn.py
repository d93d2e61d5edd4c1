"""WebSocket helpers shared by both ends on aiohttp: a synchronous message sink, a polite close.

The side-specific halves live apart so a run imports only its own:
:mod:`hatchway.common.wsclient` (``client_session``, ``dial``) and
:mod:`hatchway.common.wsserver` (``accept``; serving is
:class:`hatchway.common.httpapi.HttpServer`). Their old names here
(``wsconn.dial``, ``wsconn.client_session``, ``wsconn.accept``) still work and
import the half on first use.

aiohttp does the handshake, the frame parsing, ping/pong and close. What it
lacks for a multiplexer is a way to send a message from inside a Protocol
callback (``data_received`` cannot await) with flow control across many
channels. :class:`WebSocketSink` adds that (it is the WebSocket
:class:`~hatchway.common.sink.MessageSink`): it frames messages itself (masking
on the client side, as RFC 6455 requires) and writes them straight to the
connection's transport, then tells its listeners to pause when the transport's
buffer passes the high-water mark and to resume when it drains.

aiohttp internals used here and nowhere else in src/ (each one is checked by
tests/common/test_aiohttp_contract.py, so an upgrade that moves one fails a
test instead of stalling a link):

* ``aiohttp._websocket.helpers.websocket_mask``: the C masking routine;
* ``ws._writer`` and its ``transport``, ``protocol`` and ``use_mask``: where the
  frames go;
* ``BaseProtocol._drain_helper()``: the wait for the buffer to drain.

Public API is used for the rest: ``protocol.writing_paused`` and
``ws.get_extra_info("socket")``. Serving is :class:`hatchway.common.httpapi.HttpServer`.

RFC 6455 section 5.5.1: no data frame may follow our own Close frame.
:func:`close_politely` marks the sink closing before it calls ``ws.close()``,
and :meth:`WebSocketSink.send` raises :class:`ConnectionGone` from then on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp._websocket.helpers import websocket_mask as _mask

from .relay import HIGH_WATER, LOW_WATER
from .sink import Buffer, FlowListener, SinkClosed, TransportSink
from .tasks import TaskSet

__all__ = [
    "AnyWebSocket",
    "ConnectionGone",
    "FlowListener",
    "MessageWriter",
    "WebSocketSink",
    "accept",
    "client_session",
    "close_politely",
    "dial",
    "frame_header",
    "set_ws_nodelay",
]

log = logging.getLogger(__name__)

MAX_MESSAGE_DEFAULT = 64 * 1024 * 1024
CLOSE_TIMEOUT = 2.0  # how long a polite close waits for the peer's Close frame
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_PACK_1 = struct.Struct("!BB").pack
_PACK_2 = struct.Struct("!BBH").pack
_PACK_8 = struct.Struct("!BBQ").pack
_rand32 = random.Random(os.urandom(16)).getrandbits

if TYPE_CHECKING:
    from aiohttp import web

    from .wsclient import client_session, dial
    from .wsserver import accept

    AnyWebSocket = aiohttp.ClientWebSocketResponse | web.WebSocketResponse

ConnectionGone = SinkClosed  # the name tunnel/ and linksocks/ import


def frame_header(length: int, masked: bool, opcode: int = _OP_BINARY) -> bytes:
    """The header of one final (unfragmented) frame of ``length`` payload bytes."""
    first = 0x80 | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return _PACK_1(first, length | mask_bit)
    if length < 65536:
        return _PACK_2(first, 126 | mask_bit, length)
    return _PACK_8(first, 127 | mask_bit, length)


class WebSocketSink(TransportSink):
    """Send binary (or text) messages on an established aiohttp WebSocket without awaiting."""

    def __init__(
        self,
        ws: AnyWebSocket,
        *,
        high_water: int = HIGH_WATER * 4,
        low_water: int = LOW_WATER * 4,
    ) -> None:
        writer = ws._writer
        if writer is None:
            raise RuntimeError("WebSocket is not prepared")
        super().__init__(writer.transport)
        self._ws = ws
        self._protocol: Any = writer.protocol
        self._masked: bool = writer.use_mask
        self._transport.set_write_buffer_limits(high_water, low_water)
        self._tasks = TaskSet("websocket sink", logger=log)

    # -- sending
    def send(self, *parts: Buffer, opcode: int = _OP_BINARY) -> None:
        """Send ``parts`` joined as one (binary) message. Raises ConnectionGone when closed or closing."""
        # the hot path: kept inline (no helper call, no per-message allocation beyond the frame header)
        transport = self._transport
        if self._closing or transport.is_closing():
            raise ConnectionGone("WebSocket is closed or closing")
        length = 0
        for part in parts:
            length += len(part)
        if self._masked:
            mask = _rand32(32).to_bytes(4, "big")
            payload = bytearray().join(parts)
            _mask(mask, payload)
            transport.writelines((frame_header(length, True, opcode) + mask, payload))
        else:
            transport.writelines((frame_header(length, False, opcode), *parts))
        self.sent_messages += 1
        if self._protocol.writing_paused and not self._flow.paused:
            self._pause()

    def send_many(self, messages: Sequence[Sequence[Buffer]], *, text: bool = False) -> None:
        """Send each item of ``messages`` (its parts joined) as one message, all in one transport write.

        A pump that read 256 KiB and cut it into 32 KiB messages hands them over in one call: one
        ``writelines`` (one syscall) instead of one per message. Raises ConnectionGone when closed or closing.
        """
        transport = self._transport
        if self._closing or transport.is_closing():
            raise ConnectionGone("WebSocket is closed or closing")
        opcode = _OP_TEXT if text else _OP_BINARY
        out: list[Buffer] = []
        masked = self._masked
        for parts in messages:
            length = 0
            for part in parts:
                length += len(part)
            if masked:
                mask = _rand32(32).to_bytes(4, "big")
                payload = bytearray().join(parts)
                _mask(mask, payload)
                out += (frame_header(length, True, opcode) + mask, payload)
            else:
                out.append(frame_header(length, False, opcode))
                out += parts
        transport.writelines(out)
        self.sent_messages += len(messages)
        if self._protocol.writing_paused and not self._flow.paused:
            self._pause()

    def send_text(self, *parts: Buffer | str) -> None:
        """Send ``parts`` (UTF-8 text, or bytes already encoded) joined as one text message."""
        self.send(*(p.encode() if isinstance(p, str) else p for p in parts), opcode=_OP_TEXT)

    def send_message(self, message: Buffer) -> None:
        self.send(message)

    def _pause(self) -> None:
        self._flow.pause()
        self._tasks.spawn(self._wait_resume(), name="websocket sink drain")

    async def _wait_resume(self) -> None:
        try:
            await self._protocol._drain_helper()
        except (ConnectionError, asyncio.CancelledError):
            pass
        self._flow.resume()

    def close(self) -> None:
        self._tasks.cancel()
        super().close()


MessageWriter = WebSocketSink  # the old name, kept while tunnel/ and linksocks/ move


async def close_politely(ws: AnyWebSocket, sink: WebSocketSink | None = None, timeout: float = CLOSE_TIMEOUT) -> None:
    """Send our Close (no data frame after it), wait ``timeout`` s for the peer's, else abort."""
    if sink is not None:
        sink.mark_closing()
    if ws.closed:
        return
    try:
        async with asyncio.timeout(timeout):
            await ws.close()
    except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError):
        if sink is not None:
            sink.abort()
        else:
            _abort_ws(ws)


def _abort_ws(ws: AnyWebSocket) -> None:
    writer = ws._writer
    if writer is not None and not writer.transport.is_closing():
        writer.transport.abort()


def set_ws_nodelay(ws: AnyWebSocket) -> None:
    sock = ws.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


_MOVED = {"client_session": "wsclient", "dial": "wsclient", "accept": "wsserver"}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """The old names, imported on first use so neither side pays for the other."""
        import importlib

        if name == "AnyWebSocket":
            from aiohttp import web

            return aiohttp.ClientWebSocketResponse | web.WebSocketResponse
        home = _MOVED.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{__package__}.{home}"), name)
