"""Test peers for the runner endpoint and the forward CLI, speaking the real wire protocol.

* :class:`RawPeer`: a raw aiohttp WebSocket that plays either a tunnel client
  (``/ws/tunnel/{id}``) or a forward CLI (``/ws/forward/...``), so tests can
  assert exact messages.
* Local services on 127.0.0.1: TCP echo, a TCP service that stops reading,
  a UDP echo.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp import web

from hatchway.tunnel import protocol
from hatchway.tunnel.protocol import Message, MsgType, Proto

TIMEOUT = 10.0


class RawPeer:
    """One raw WebSocket (client or server side) with helpers to send and receive tunnel messages."""

    def __init__(self, session: aiohttp.ClientSession | None, ws: Any) -> None:
        self.session = session
        self.ws = ws

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> RawPeer:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, compress=0, max_msg_size=0, **kwargs)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def text(self, timeout: float = TIMEOUT) -> str:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        return msg.data

    async def recv(self, timeout: float = TIMEOUT) -> Message:
        """The next binary message, decoded (payload copied to bytes)."""
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is aiohttp.WSMsgType.BINARY:
                m = protocol.decode(msg.data)
                return Message(m.type, m.proto, m.client_id, m.port, bytes(m.payload))
            if msg.type is aiohttp.WSMsgType.TEXT:
                continue
            raise ConnectionError(f"WebSocket ended: {msg.type.name} code={self.ws.close_code}")

    async def recv_until(self, predicate: Any, timeout: float = TIMEOUT) -> list[Message]:
        """Receive messages until ``predicate(msg)``; returns all of them, the matching one last."""
        got: list[Message] = []
        async with asyncio.timeout(timeout):
            while True:
                m = await self.recv(timeout=None)
                got.append(m)
                if predicate(m):
                    return got

    async def send(self, *parts: bytes) -> None:
        await self.ws.send_bytes(b"".join(parts))

    async def wait_closed(self, timeout: float = TIMEOUT) -> int | None:
        """Read (and drop) until the WebSocket ends; returns the close code."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        if self.session is not None:
            await self.session.close()


class FakeForwardServer:
    """A stand-in for the host/runner ``/ws/forward`` route that hands each channel to the test.

    It answers the handshake with ``reply`` (``CONNECTED`` or an ``Error: ...`` text,
    or None to stay silent) and then exposes the server-side WebSocket as a
    :class:`RawPeer`, so a test sees the forward CLI's exact messages.
    """

    def __init__(self, reply: str | None = "CONNECTED", close_code: int = 1011) -> None:
        self.reply = reply
        self.close_code = close_code
        self.requests: list[Any] = []
        self.channels: asyncio.Queue[RawPeer] = asyncio.Queue()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._done: asyncio.Future[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        self.requests.append(request)
        ws = web.WebSocketResponse(compress=False, max_msg_size=0)
        await ws.prepare(request)
        if self.reply is None:
            await self._done  # type: ignore[misc]
            return ws
        await ws.send_str(self.reply)
        if self.reply != "CONNECTED":
            await ws.close(code=self.close_code)
            return ws
        peer = RawPeer(None, _ServerSide(ws, request.transport))
        self.channels.put_nowait(peer)
        await peer.ws.ended.wait()
        return ws

    async def __aenter__(self) -> FakeForwardServer:
        self._done = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get("/ws/forward/{cid}/{port}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._done is not None
        self._done.set_result(None)
        while not self.channels.empty():
            await self.channels.get_nowait().close()
        await self._runner.cleanup()

    async def channel(self, timeout: float = TIMEOUT) -> RawPeer:
        return await asyncio.wait_for(self.channels.get(), timeout)


class _ServerSide:
    """A server WebSocketResponse with the client-side names RawPeer uses.

    A background task keeps reading (as a real server does), so close
    handshakes complete promptly; ``receive`` takes messages from its queue.
    """

    def __init__(self, ws: web.WebSocketResponse, transport: Any) -> None:
        self._ws = ws
        self.transport = transport  # the TCP transport, for tests that cut the connection
        self.ended = asyncio.Event()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self._ws.receive()
                self._inbox.put_nowait(msg)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return
        finally:
            self.ended.set()

    async def receive(self, timeout: float | None = None) -> Any:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def send_bytes(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def send_str(self, text: str) -> None:
        await self._ws.send_str(text)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self, **kwargs: Any) -> None:
        await self._ws.close(**kwargs)
        await asyncio.wait_for(self.ended.wait(), TIMEOUT)


async def open_tunnel(base: str, container_id: str, **kwargs: Any) -> RawPeer:
    return await RawPeer.open(f"{base}/ws/tunnel/{container_id}", **kwargs)


async def open_forward(base: str, container_id: str, port: int, proto: str = "tcp", **kwargs: Any) -> RawPeer:
    """A raw forward channel that has passed the ``CONNECTED`` handshake."""
    peer = await RawPeer.open(f"{base}/ws/forward/{container_id}/{port}?proto={proto}", **kwargs)
    text = await peer.text()
    assert text == "CONNECTED", text
    return peer


def data(proto: Proto, client_id: int, payload: bytes) -> bytes:
    return protocol.data_header(proto, client_id) + payload


# ---------------------------------------------------------------------- local services
class TcpService:
    """A TCP server on 127.0.0.1 running ``handler(reader, writer)`` per connection."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted_event = asyncio.Event()

    async def __aenter__(self) -> TcpService:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.writers.append(writer)
            self.accepted_event.set()
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1024 * 1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(256 * 1024):
        writer.write(chunk)
        await writer.drain()


def tagged_echo(tag: bytes) -> Any:
    """An echo that prefixes every chunk with ``tag`` (to tell services apart)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(tag + chunk)
            await writer.drain()

    return handler


class UdpEcho(asyncio.DatagramProtocol):
    """UDP echo on 127.0.0.1; records the source addresses it saw."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.sources: set[Any] = set()
        self.port = 0

    async def __aenter__(self) -> UdpEcho:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.transport is not None
        self.transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sources.add(addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class UdpClient(asyncio.DatagramProtocol):
    """A local UDP client with an inbox of received datagrams."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    @classmethod
    async def connect(cls, port: int) -> UdpClient:
        loop = asyncio.get_running_loop()
        client = cls()
        await loop.create_datagram_endpoint(lambda: client, remote_addr=("127.0.0.1", port))
        return client

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(data)

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(payload)

    async def recv(self, timeout: float = TIMEOUT) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


from helpers import wait_until  # noqa: E402,F401  (the one wait helper; re-exported for the tunnel tests)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = [
    "MsgType",
    "Proto",
    "FakeForwardServer",
    "RawPeer",
    "TcpService",
    "UdpClient",
    "UdpEcho",
    "data",
    "echo_handler",
    "free_port",
    "open_forward",
    "open_tunnel",
    "tagged_echo",
    "wait_until",
]
