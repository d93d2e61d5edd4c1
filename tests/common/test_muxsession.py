"""MuxSession: the one WebSocket read loop (dispatch, gate, keepalive, deadline, end classification, close)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web

from hatchway.common import wsconn
from hatchway.common.gate import InboundGate
from hatchway.common.httpapi import TcpAddress, serve_app
from hatchway.common.muxsession import (
    EndKind,
    MuxSession,
    ProtocolViolation,
    SessionEnded,
)
from hatchway.common.sink import SinkClosed
from helpers import wait_until


class Recorder:
    def __init__(self, fail_on: bytes | None = None, bug_on: bytes | None = None) -> None:
        self.binary: list[bytes] = []
        self.text: list[str] = []
        self.fail_on = fail_on
        self.bug_on = bug_on
        self.got = asyncio.Event()

    def binary_received(self, data: bytes):
        if data == self.fail_on:
            raise ProtocolViolation("bad message")
        if data == self.bug_on:
            raise KeyError("bug")
        self.binary.append(data)
        self.got.set()

    def text_received(self, text: str):
        self.text.append(text)
        self.got.set()


@contextlib.asynccontextmanager
async def peer(script, *, autoping=True):
    """A server whose handler runs ``script(ws)``; yields a connected client WebSocket."""
    server_done = asyncio.get_running_loop().create_future()

    async def handler(request):
        ws = await wsconn.accept(request, autoping=autoping)
        try:
            await script(ws)
        finally:
            if not server_done.done():
                server_done.set_result(None)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = await serve_app(app, [TcpAddress("127.0.0.1", 0)])
    bound = runner.addresses
    session = wsconn.client_session()
    try:
        ws = await wsconn.dial(session, f"ws://127.0.0.1:{bound[0][1]}/ws", autoping=False)
        yield ws
        await ws.close()
        await asyncio.wait_for(server_done, 10)
    finally:
        await session.close()
        await runner.aclose()


async def test_dispatches_binary_and_text_then_reports_the_peers_close():
    async def script(ws):
        await ws.send_bytes(b"one")
        await ws.send_str("two")
        await ws.close(code=4001)

    async with peer(script) as ws:
        handler = Recorder()
        ended = await asyncio.wait_for(MuxSession(ws, handler).run(), 10)
    assert handler.binary == [b"one"] and handler.text == ["two"]
    assert ended.kind is EndKind.PEER_CLOSED and ended.code == 4001


async def test_read_deadline_ends_a_silent_session():
    release = asyncio.Event()

    async def script(ws):
        await release.wait()

    async with peer(script) as ws:
        ended = await asyncio.wait_for(MuxSession(ws, Recorder(), read_timeout=0.1).run(), 10)
        release.set()
    assert ended.kind is EndKind.READ_TIMEOUT


async def test_protocol_violation_ends_the_session_and_a_bug_only_when_asked():
    async def script(ws):
        await ws.send_bytes(b"bug")
        await ws.send_bytes(b"ok")
        await ws.send_bytes(b"bad")
        await ws.receive()

    async with peer(script) as ws:
        handler = Recorder(fail_on=b"bad", bug_on=b"bug")
        ended = await asyncio.wait_for(MuxSession(ws, handler, survive_handler_errors=True).run(), 10)
    assert ended.kind is EndKind.PROTOCOL_ERROR and ended.detail == "bad message"
    assert handler.binary == [b"ok"]

    async with peer(script) as ws:
        ended = await asyncio.wait_for(MuxSession(ws, Recorder(bug_on=b"bug")).run(), 10)
    assert ended.kind is EndKind.INTERNAL_ERROR


class Holder:
    name = "holder"

    def reset(self, reason: str) -> None:
        raise AssertionError("not reset")


async def test_a_socket_that_dies_while_the_gate_is_closed_is_noticed():
    release = asyncio.Event()

    async def script(ws):
        await ws.send_bytes(b"first")
        await release.wait()

    gate = InboundGate()

    class Pauser(Recorder):
        def binary_received(self, data: bytes):
            gate.pause(Holder())  # dispatching fills a stalled local consumer: the read loop is held
            return super().binary_received(data)

    async with peer(script) as ws:
        handler = Pauser()
        session = MuxSession(ws, handler, gate=gate)
        run = asyncio.ensure_future(session.run())
        await wait_until(handler.got)
        assert gate.blocked
        session.sink.abort()  # the connection dies under the blocked loop
        ended = await asyncio.wait_for(run, 10)
        release.set()
    assert ended.kind is EndKind.LOST_WHILE_BLOCKED


async def test_close_is_polite_and_no_data_frame_follows_our_close():
    received: list[aiohttp.WSMsgType] = []

    async def script(ws):
        async for msg in ws:
            received.append(msg.type)

    async with peer(script) as ws:
        session = MuxSession(ws, Recorder())
        run = asyncio.ensure_future(session.run())
        session.sink.send(b"before")
        closing = asyncio.ensure_future(session.close())
        await wait_until(lambda: ws.closed, what="our Close frame is sent")
        with pytest.raises(SinkClosed):
            session.sink.send(b"after")
        await asyncio.wait_for(closing, 10)
        ended = await asyncio.wait_for(run, 10)
    assert ended.kind is EndKind.LOCAL_CLOSE
    assert received == [aiohttp.WSMsgType.BINARY]


async def test_handshake_message_pings_answered_and_deadline():
    async def script(ws):
        await ws.ping(b"p")
        await ws.send_str("CONNECTED")
        await ws.receive()

    async with peer(script) as ws:
        session = MuxSession(ws, Recorder())
        assert await session.receive_message(5) == "CONNECTED"
        with pytest.raises(SessionEnded) as info:
            await session.receive_message(0.05)
        assert info.value.ended.kind is EndKind.HANDSHAKE_TIMEOUT


async def test_keepalive_pings_the_peer():
    pinged = asyncio.Event()

    async def script(ws):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.PING:
                pinged.set()
                await ws.pong(msg.data)
                return

    async with peer(script, autoping=False) as ws:
        session = MuxSession(ws, Recorder(), ping_interval=0.01)
        run = asyncio.ensure_future(session.run())
        await wait_until(pinged)
        await session.close()
        ended = await asyncio.wait_for(run, 10)
    assert ended.kind is EndKind.LOCAL_CLOSE


async def test_close_soon_from_a_callback_ends_the_session_and_close_awaits_the_same_close():
    async def script(ws):
        await ws.send_bytes(b"stop")
        async for _ in ws:
            pass

    async with peer(script) as ws:
        session: MuxSession

        class Stopper(Recorder):
            def binary_received(self, data: bytes):
                session.close_soon()  # synchronous, from inside dispatch
                with pytest.raises(SinkClosed):
                    session.sink.send(b"too late")
                return None

        session = MuxSession(ws, Stopper())
        ended = await asyncio.wait_for(session.run(), 10)
        await asyncio.wait_for(session.close(), 10)
    assert ended.kind is EndKind.LOCAL_CLOSE
