"""A tiny multiplexer for tests of Channel, the gate, the relay and both session drivers.

Each side is a :class:`WireMux` (a ``MessageHandler``) carrying messages of
``kind(1) + channel id(1) + payload``: O = open (the other side dials its
target), D = data, E = EOF (only when the wire has half-close), C = close
(payload: error text, empty = clean end). It runs over either driver:

* ``"framed"``: a :class:`FramedSession` on each end of a unix socketpair
  (length-prefixed frames, ``LengthPrefixedSink``);
* ``"websocket"``: a :class:`MuxSession` on each end of a real aiohttp
  WebSocket on 127.0.0.1 (``WebSocketSink``).

``relay_through(...)`` builds the whole path:
client -> TCP listener -> Relay -> channel (side A) == wire == channel
(side B) -> Relay -> TCP target.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from hatchway.common import wsconn
from hatchway.common.channel import Channel
from hatchway.common.framedsession import FramedSession
from hatchway.common.gate import InboundGate
from hatchway.common.httpapi import TcpAddress, serve_app
from hatchway.common.muxhandler import ProtocolViolation
from hatchway.common.muxsession import MuxSession
from hatchway.common.relay import Relay
from hatchway.common.sink import Buffer, MessageSink

TRANSPORTS = ("framed", "websocket")


async def read_until_end(reader: asyncio.StreamReader) -> tuple[bytes, Exception | None]:
    """All bytes until EOF; returns (bytes, the error that ended the stream or None for a clean EOF)."""
    got = bytearray()
    try:
        while data := await reader.read(65536):
            got += data
    except ConnectionError as exc:
        return bytes(got), exc
    return bytes(got), None


class WireChannel(Channel):
    def __init__(self, mux: WireMux, cid: int, **kwargs: Any) -> None:
        assert mux.sink is not None
        super().__init__(mux.sink, mux.gate, half_close=mux.half_close, **kwargs)
        self.mux = mux
        self.cid = bytes([cid])
        self.name = str(cid)
        mux.channels[cid] = self

    def _send_data(self, writer: MessageSink, data: Buffer) -> None:
        writer.send(b"D" + self.cid, data)

    def _send_close(self, writer: MessageSink, reason: str | None) -> None:
        writer.send(b"C" + self.cid, (reason or "").encode())

    def _send_eof(self, writer: MessageSink) -> None:
        writer.send(b"E" + self.cid)

    def _forget(self) -> None:
        self.mux.channels.pop(self.cid[0], None)


class WireMux:
    def __init__(self, gate: InboundGate, half_close: bool, target: tuple[str, int] | None = None,
                 relay_limit: int = 1 << 20, keep_open: bool = True) -> None:
        self.gate = gate
        self.half_close = half_close
        self.target = target
        self.relay_limit = relay_limit
        self.keep_open = keep_open
        self.sink: MessageSink | None = None
        self.channels: dict[int, WireChannel] = {}
        self.relays: list[Relay] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.cut: Any = None  # drops the link under the channels (set by the driver)

    # -- MessageHandler
    def binary_received(self, message: bytes) -> None:
        kind, cid = message[0:1], message[1]
        if kind == b"O":
            self._open(cid)
            return None
        channel = self.channels.get(cid)
        if channel is None:
            return None
        if kind == b"D":
            channel.feed(memoryview(message)[2:])
        elif kind == b"E":
            channel.remote_eof()
        elif kind == b"C":
            channel.remote_closed(message[2:].decode() or None)
        return None

    def text_received(self, text: str) -> None:
        raise ProtocolViolation("text message")

    def link_lost(self) -> None:
        for channel in list(self.channels.values()):
            channel.link_lost()

    # -- the dialing side
    def _open(self, cid: int) -> None:
        channel = WireChannel(self, cid, started=False, hold_limit=self.relay_limit)
        task = asyncio.ensure_future(self._dial(channel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _dial(self, channel: WireChannel) -> None:
        assert self.target is not None
        relay = Relay(high_water=self.relay_limit, low_water=self.relay_limit // 4)
        self.relays.append(relay)
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(relay.back, *self.target)
        except OSError as exc:
            channel.reset(str(exc))
            return
        if channel.is_closing():  # closed while dialing (this test wire delivers nothing then)
            transport.close()
            return
        channel.set_protocol(relay.front())
        relay.join()
        channel.start()

    # -- the listening side
    def accept(self, cid: int) -> asyncio.Protocol:
        """Protocol factory body for a TCP listener: one relay and channel per connection."""
        mux = self

        class Acceptor(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                relay = Relay(high_water=mux.relay_limit, low_water=mux.relay_limit // 4)
                mux.relays.append(relay)
                channel = WireChannel(mux, cid, started=False, keep_open_on_eof=mux.keep_open)
                assert mux.sink is not None
                mux.sink.send(b"O" + channel.cid)
                relay.adopt(relay.front(), transport)
                channel.set_protocol(relay.back())
                relay.join()
                channel.start()

        return Acceptor()

    async def stop_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class WirePath:
    def __init__(self, a: WireMux, b: WireMux, server: asyncio.AbstractServer) -> None:
        self.a, self.b, self.server = a, b, server
        self.port = server.sockets[0].getsockname()[1]
        self.closers: list[Any] = []

    async def close(self) -> None:
        self.server.close()
        for closer in self.closers:
            await closer()
        for mux in (self.a, self.b):
            await mux.stop_tasks()
        await self.server.wait_closed()


async def _framed(a: WireMux, b: WireMux, path_closers: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    sa, sb = socket.socketpair()
    sessions = []
    for mux, sock in ((a, sa), (b, sb)):
        session = FramedSession(mux, gate=mux.gate)
        await loop.create_unix_connection(lambda s=session: s, sock=sock)
        mux.sink = session.sink
        session.ended.add_done_callback(lambda _, m=mux: m.link_lost())
        sessions.append(session)
    a.cut = sessions[0].transport.abort  # type: ignore[union-attr]

    async def close() -> None:
        for session in sessions:
            await session.aclose()
        await asyncio.gather(*(s.ended for s in sessions))

    path_closers.append(close)


async def _websocket(a: WireMux, b: WireMux, path_closers: list[Any]) -> None:
    ready = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = await wsconn.accept(request)
        session = MuxSession(ws, b, gate=b.gate)
        b.sink = session.sink
        ready.set()
        try:
            await session.run()
        finally:
            b.link_lost()
            await session.close()
        return ws

    app = web.Application()
    app.router.add_get("/mux", handler)
    runner = await serve_app(app, [TcpAddress("127.0.0.1", 0)])
    bound = runner.addresses
    http = wsconn.client_session()
    ws = await wsconn.dial(http, f"ws://127.0.0.1:{bound[0][1]}/mux")
    client = MuxSession(ws, a, gate=a.gate)
    a.sink = client.sink
    a.cut = client.sink.abort
    await ready.wait()

    async def run_client() -> None:
        try:
            await client.run()
        finally:
            a.link_lost()

    reader = asyncio.ensure_future(run_client())

    async def close() -> None:
        await client.close()
        await reader
        await http.close()
        await runner.aclose()

    path_closers.append(close)


async def relay_through(target_port: int, *, transport: str = "framed", half_close: bool = False,
                        gate_a: InboundGate | None = None, relay_limit: int = 1 << 20,
                        keep_open: bool = True) -> WirePath:
    a = WireMux(gate_a or InboundGate(), half_close, relay_limit=relay_limit, keep_open=keep_open)
    b = WireMux(InboundGate(), half_close, target=("127.0.0.1", target_port), relay_limit=relay_limit)
    closers: list[Any] = []
    await (_framed if transport == "framed" else _websocket)(a, b, closers)
    ids = iter(range(1, 256))
    server = await asyncio.get_running_loop().create_server(lambda: a.accept(next(ids)), "127.0.0.1", 0)
    path = WirePath(a, b, server)
    path.closers = closers
    return path


@contextlib.asynccontextmanager
async def served(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], **options: Any
) -> AsyncIterator[WirePath]:
    """A TCP service running ``handle``, reachable through the whole path (``relay_through(**options)``)."""
    target = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        path = await relay_through(target.sockets[0].getsockname()[1], **options)
        try:
            yield path
        finally:
            await path.close()
    finally:
        target.close()
