import asyncio
import os

import aiohttp
from aiohttp import web

from hatchway.common import wsconn
from hatchway.common.httpapi import TcpAddress, serve_app
from helpers import wait_until


class Listener:
    def __init__(self):
        self.events = []
        self.resumed = asyncio.Event()

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")
        self.resumed.set()


async def start_server(handler):
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = await serve_app(app, [TcpAddress("127.0.0.1", 0)])
    bound = runner.addresses
    return runner, f"ws://127.0.0.1:{bound[0][1]}/ws"


def collecting_handler(count):
    """A server handler that records every message; ``done`` is set after ``count`` of them."""
    received = []
    done = asyncio.Event()

    async def handler(request):
        ws = await wsconn.accept(request)
        async for msg in ws:
            received.append((msg.type, msg.data))
            if len(received) == count:
                done.set()
        return ws

    return handler, received, done


async def test_client_writer_masks_and_joins_parts():
    handler, received, done = collecting_handler(3)
    runner, url = await start_server(handler)
    async with wsconn.client_session() as session:
        ws = await wsconn.dial(session, url)
        writer = wsconn.MessageWriter(ws)
        big = os.urandom(70000)
        writer.send(b"ab", memoryview(b"cd"))
        writer.send(big)
        writer.send(b"")
        await asyncio.wait_for(done.wait(), 5)
        await ws.close()
    await runner.aclose()
    assert received == [(aiohttp.WSMsgType.BINARY, b"abcd"), (aiohttp.WSMsgType.BINARY, big), (aiohttp.WSMsgType.BINARY, b"")]


async def test_server_writer_sends_unmasked_messages():
    payload = os.urandom(300)

    async def handler(request):
        ws = await wsconn.accept(request)
        wsconn.MessageWriter(ws).send(payload[:100], payload[100:])
        await ws.receive()
        return ws

    runner, url = await start_server(handler)
    async with wsconn.client_session() as session:
        ws = await wsconn.dial(session, url)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == payload
        await ws.close()
    await runner.aclose()


async def test_writer_pauses_listeners_when_peer_stops_reading_and_resumes_after():
    release = asyncio.Event()
    total = 0
    got_all = asyncio.Event()
    chunk = os.urandom(65536)
    count = 1024

    async def handler(request):
        nonlocal total
        ws = await wsconn.accept(request)
        await release.wait()
        async for msg in ws:
            total += len(msg.data)
            if total == count * len(chunk):
                got_all.set()
        return ws

    runner, url = await start_server(handler)
    async with wsconn.client_session() as session:
        ws = await wsconn.dial(session, url)
        writer = wsconn.MessageWriter(ws, high_water=1 << 20, low_water=1 << 18)
        listener = Listener()
        writer.add_listener(listener)
        sent = 0
        while not writer.paused and sent < count:
            writer.send(chunk)
            sent += 1
            await asyncio.sleep(0)  # let the loop flush to the socket
        assert writer.paused and listener.events == ["pause"]
        release.set()
        await asyncio.wait_for(listener.resumed.wait(), 10)
        assert listener.events == ["pause", "resume"]
        while sent < count:
            await writer.drained()
            writer.send(chunk)
            sent += 1
        await asyncio.wait_for(got_all.wait(), 20)
        await ws.close()
    await runner.aclose()


async def test_sink_sends_text_messages_and_nothing_after_mark_closing():
    from hatchway.common.sink import MessageSink, SinkClosed

    handler, received, done = collecting_handler(2)
    runner, url = await start_server(handler)
    async with wsconn.client_session() as session:
        ws = await wsconn.dial(session, url)
        sink = wsconn.WebSocketSink(ws)
        assert isinstance(sink, MessageSink) and wsconn.MessageWriter is wsconn.WebSocketSink
        sink.send_text("héllo ", b"world")
        sink.send(b"\x00")
        await asyncio.wait_for(done.wait(), 5)
        closing = asyncio.ensure_future(wsconn.close_politely(ws, sink))
        await wait_until(lambda: ws.closed, what="our Close frame is sent")  # aiohttp waits for the peer's now
        assert sink.closed
        try:
            sink.send(b"after close")
        except SinkClosed:
            pass
        else:
            raise AssertionError("a data frame was sent after our Close")
        await asyncio.wait_for(closing, 5)
    await runner.aclose()
    assert received == [(aiohttp.WSMsgType.TEXT, "héllo world"), (aiohttp.WSMsgType.BINARY, b"\x00")]


async def test_send_many_frames_each_message_in_one_write_both_sides():
    # WebSocketSink.send_many (the agent's 256 KB read cut into 32 KiB messages): masked from the client,
    # plain from the server, text or binary, every message intact and in order
    big = os.urandom(70000)
    messages = [(b"a", memoryview(b"bc")), (big,), (b"",), (b"x" * 200,)]
    handler, received, done = collecting_handler(len(messages))
    runner, url = await start_server(handler)
    async with wsconn.client_session() as session:
        ws = await wsconn.dial(session, url)
        wsconn.WebSocketSink(ws).send_many(messages)
        await asyncio.wait_for(done.wait(), 5)
        await ws.close()
    await runner.aclose()
    assert received == [(aiohttp.WSMsgType.BINARY, b"".join(m)) for m in messages]

    async def server(request):
        ws = await wsconn.accept(request)
        wsconn.WebSocketSink(ws).send_many([(b'{"a":', b"1}"), (b'"' + b"y" * 70000 + b'"',)], text=True)
        await ws.receive()
        return ws

    runner, url = await start_server(server)
    async with wsconn.client_session() as session:
        ws = await wsconn.dial(session, url)
        first = await asyncio.wait_for(ws.receive(), 5)
        second = await asyncio.wait_for(ws.receive(), 5)
        assert (first.type, first.data) == (aiohttp.WSMsgType.TEXT, '{"a":1}')
        assert (second.type, second.data) == (aiohttp.WSMsgType.TEXT, '"' + "y" * 70000 + '"')
        await ws.close()
    await runner.aclose()
