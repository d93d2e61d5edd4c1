"""The aiohttp internals hatchway relies on: an upgrade that moves one fails HERE, not as a silent stall.

pyproject.toml pins aiohttp to the minor these tests pass on. Each test names the
hatchway code that depends on the internal it checks; public replacements are
used everywhere else (``protocol.writing_paused``, ``ws.get_extra_info("socket")``,
``HttpServer.addresses``).
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol

from hatchway.common import wsconn
from hatchway.common.httpapi import TcpAddress, serve_app

TESTED_MINOR = (3, 14)


def test_the_installed_aiohttp_is_the_tested_minor():
    major, minor = (int(x) for x in aiohttp.__version__.split(".")[:2])
    assert (major, minor) == TESTED_MINOR, (
        f"aiohttp {aiohttp.__version__}: re-check every test in this file, then move TESTED_MINOR and the pin"
    )


def test_websocket_mask_is_the_rfc_6455_xor():
    """wsconn.WebSocketSink masks client frames with aiohttp._websocket.helpers.websocket_mask."""
    from aiohttp._websocket.helpers import websocket_mask

    mask = bytes([0x37, 0xFA, 0x21, 0x3D])
    payload = bytearray(b"Hello, world!")
    websocket_mask(mask, payload)
    assert payload == bytearray(b ^ mask[i % 4] for i, b in enumerate(b"Hello, world!"))


async def _pair():
    server_side: asyncio.Future[web.WebSocketResponse] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def handler(request):
        ws = await wsconn.accept(request)
        server_side.set_result(ws)
        await release.wait()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = await serve_app(app, [TcpAddress("127.0.0.1", 0)])
    bound = runner.addresses
    session = wsconn.client_session()
    client = await wsconn.dial(session, f"ws://127.0.0.1:{bound[0][1]}/ws")
    server = await asyncio.wait_for(server_side, 5)

    async def close():
        release.set()
        await client.close()
        await session.close()
        await runner.aclose()

    return runner, client, server, close


async def test_websocket_writer_internals_on_both_sides():
    """WebSocketSink reads ws._writer.transport / .protocol / .use_mask and awaits protocol._drain_helper()."""
    runner, client, server, close = await _pair()
    try:
        for ws, masked in ((client, True), (server, False)):
            writer = ws._writer
            assert writer is not None
            for method in ("writelines", "get_write_buffer_size", "set_write_buffer_limits", "is_closing", "abort"):
                assert callable(getattr(writer.transport, method)), method
            assert isinstance(writer.protocol, BaseProtocol)
            assert writer.use_mask is masked
            protocol = writer.protocol
            assert protocol.writing_paused is False  # public
            protocol.pause_writing()
            assert protocol.writing_paused is True
            drain = asyncio.ensure_future(protocol._drain_helper())
            await asyncio.sleep(0)
            assert not drain.done()
            protocol.resume_writing()
            await asyncio.wait_for(drain, 5)
    finally:
        await close()


async def test_drain_helper_raises_connection_error_when_the_connection_is_lost():
    """WebSocketSink._wait_resume treats ConnectionError as "resume" (its listeners must not stay paused)."""
    runner, client, server, close = await _pair()
    try:
        protocol = client._writer.protocol
        protocol.pause_writing()
        drain = asyncio.ensure_future(protocol._drain_helper())
        await asyncio.sleep(0)
        client._writer.transport.abort()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(drain, 5)
    finally:
        await close()


async def test_public_socket_and_addresses():
    """set_ws_nodelay uses ws.get_extra_info("socket"); HttpServer reports the bound addresses."""
    runner, client, server, close = await _pair()
    try:
        for ws in (client, server):
            sock = ws.get_extra_info("socket")
            assert sock is not None and sock.family == socket.AF_INET
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        host, port = runner.addresses[0][:2]
        assert host == "127.0.0.1" and port > 0
    finally:
        await close()


async def test_client_session_retry_connection_flag():
    """tunnel/client.py sets ClientSession._retry_connection = False (one attempt is one dial)."""
    async with aiohttp.ClientSession() as session:
        assert session._retry_connection is True
        assert "_retry_connection" in aiohttp.ClientSession.ATTRS


def test_max_msg_size_cannot_change_after_prepare():
    """muxsession's docstring: the C reader keeps max_msg_size in a C field (no pre-auth limit switch)."""
    from aiohttp._websocket import reader

    reader_class = reader.WebSocketReader
    if reader_class.__module__.endswith("reader_c"):
        assert not hasattr(reader_class, "_max_msg_size")
