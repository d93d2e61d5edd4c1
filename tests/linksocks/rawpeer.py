"""A scripted LinkSocks peer over aiohttp, for wire-level tests of hatchway's server and client.

It speaks the protocol message by message (hatchway's codec encodes and
decodes), answers pings, and exposes everything it receives.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from hatchway.linksocks import protocol


class RawPeer:
    """A WebSocket client speaking raw LinkSocks messages."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.pings = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        reverse: bool = False,
        query: bool = True,
        instance: bytes | None = None,
        extra_query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        compress: int = 0,
    ) -> RawPeer:
        session = aiohttp.ClientSession()
        params: dict[str, str] = {}
        if token is not None and query:
            params = {"token": protocol.token_hash(token), "reverse": "true" if reverse else "false",
                      "instance": str(uuid.UUID(bytes=instance or uuid.uuid4().bytes))}
        params.update(extra_query or {})
        ws = await session.ws_connect(url, params=params, autoping=False, max_msg_size=64 << 20,
                                      headers=headers, compress=compress)
        peer = cls(session, ws)
        if token is not None and not query:
            await peer.send(protocol.Auth(token, reverse, instance or uuid.uuid4().bytes))
        return peer

    async def send(self, message: Any, version: int = protocol.VERSION_DEFAULT) -> None:
        await self.ws.send_bytes(protocol.encode(message, version))

    async def send_raw(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def recv_raw(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.BINARY:
                    return msg.data
                if msg.type is WSMsgType.PING:
                    self.pings += 1
                    await self.ws.pong(msg.data)
                    continue
                if msg.type is WSMsgType.PONG:
                    continue
                raise ConnectionError(f"WebSocket ended: {msg.type.name}")

    async def recv(self, timeout: float = 10.0) -> Any:
        return protocol.decode(await self.recv_raw(timeout))[1]

    async def recv_type(self, kind: type, timeout: float = 10.0) -> Any:
        """The next message of ``kind``, skipping others (Partners, Log, ...)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                if isinstance(message, kind):
                    return message

    async def closed(self, timeout: float = 10.0) -> bool:
        """True once the server ended the WebSocket (messages before that are discarded)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self.ws.receive()
                    if msg.type is WSMsgType.PING:
                        self.pings += 1
                        await self.ws.pong(msg.data)
                    elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                        return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


class RawServer:
    """A scripted LinkSocks server: ``handler(ws, request)`` runs per WebSocket at /socket."""

    def __init__(self, handler: Any, autoping: bool = True) -> None:
        self.handler = handler
        self.autoping = autoping
        self.requests: list[web.Request] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        ws = web.WebSocketResponse(autoping=self.autoping, max_msg_size=64 << 20)
        await ws.prepare(request)
        try:
            await self.handler(ws, request)
        finally:
            await ws.close()
        return ws

    async def start(self, extra_routes: list[Any] = ()) -> RawServer:
        app = web.Application()
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/socket/{tail:.*}", self._socket)
        app.router.add_routes(extra_routes)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def read_message(ws: web.WebSocketResponse, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.BINARY:
                return protocol.decode(msg.data)[1]
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                raise ConnectionError("closed")


async def send_message(ws: web.WebSocketResponse, message: Any, version: int = protocol.VERSION_DEFAULT) -> None:
    await ws.send_bytes(protocol.encode(message, version))
