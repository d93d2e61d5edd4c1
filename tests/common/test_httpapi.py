"""common.httpapi: Go-style JSON bodies, token auth, multi-address serving, hostile-client hardening."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import aiohttp
import msgspec
import pytest
from aiohttp import web

from hatchway.common.httpapi import (
    ApiError,
    HttpServer,
    TcpAddress,
    TokenAuth,
    UnixAddress,
    decode_json,
    fold_keys,
    json_errors,
    json_response,
    read_json,
    serve_app,
)
from helpers import wait_until

TIMEOUT = 10.0


# ------------------------------------------------------------------ JSON


class Inner(msgspec.Struct):
    port: int = 0
    labels: dict[str, str] = {}


class Body(msgspec.Struct):
    token: str
    reverse_token: str = ""
    allow_manage_connector: bool = False
    inner: Inner | None = None
    items: list[Inner] = []


def test_fold_keys_follows_go_encoding_json():
    raw = {
        "TOKEN": "t",
        "Reverse_Token": "r",
        "unknown": 1,
        "allow_manage_connector": None,  # null: the default stays
        "Inner": {"PORT": 5, "Labels": {"KeepCase": "v"}},
        "ITEMS": [{"Port": 1}, {"port": 2}],
    }
    assert fold_keys(raw, Body) == {
        "token": "t",
        "reverse_token": "r",
        "inner": {"port": 5, "labels": {"KeepCase": "v"}},  # map keys keep their case
        "items": [{"port": 1}, {"port": 2}],
    }
    # keys for the same field: the later one wins, as in Go's decoder; a later null changes nothing
    assert fold_keys({"Token": "first", "token": "second"}, Body) == {"token": "second"}
    assert fold_keys({"token": "first", "TOKEN": "second", "ToKeN": None}, Body) == {"token": "second"}


def test_decode_json_into_struct_and_errors():
    body = decode_json(b'{"Token": "abc", "Inner": {"Port": 7}}', Body)
    assert body == Body("abc", inner=Inner(7))
    for bad in (b"{", b'{"token": 5}', b"[]", b'{"reverse_token": "x"}', b"\xff"):
        with pytest.raises(ApiError) as info:
            decode_json(bad, Body)
        assert info.value.status == 400


async def test_json_handlers_errors_and_auth_end_to_end(tmp_path):
    async def create(request: web.Request) -> web.Response:
        body = await read_json(request, Body, limit=64)
        if body.token == "taken":
            raise ApiError(409, "token exists")
        return json_response({"ok": True, "token": body.token}, 201)

    async def health(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    app = web.Application(middlewares=[json_errors(), TokenAuth(["k1", "k2"]).middleware])
    app.router.add_post("/token", create)
    app.router.add_get("/health", health)
    async with HttpServer(app, [TcpAddress("127.0.0.1", 0)]) as server:
        host, port = server.addresses[0]
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as response:
                assert response.status == 200 and await response.json() == {"status": "ok"}
            for headers, query in [({}, {}), ({"X-API-Key": "nope"}, {}), ({"Authorization": "Basic k1"}, {})]:
                async with http.post(f"{base}/token", json={"token": "a"}, headers=headers, params=query) as response:
                    assert response.status == 401
                    assert await response.json() == {"error": "unauthorized"}
            for headers, query in [
                ({"X-API-Key": "k1"}, {}),
                ({"Authorization": "Bearer k2"}, {}),
                ({}, {"token": "k1"}),
                ({"X-API-Key": "wrong", "Authorization": "bearer k1"}, {}),
            ]:
                async with http.post(f"{base}/token", data=b'{"TOKEN": "a"}', headers=headers, params=query) as response:
                    assert response.status == 201, (headers, query)
                    assert await response.read() == b'{"ok":true,"token":"a"}\n'
            auth = {"X-API-Key": "k1"}
            async with http.post(f"{base}/token", json={"token": "taken"}, headers=auth) as response:
                assert (response.status, await response.json()) == (409, {"error": "token exists"})
            async with http.post(f"{base}/token", data=b"{not json", headers=auth) as response:
                assert response.status == 400 and (await response.json())["error"].startswith("invalid request body")
            async with http.post(f"{base}/token", json={"token": "x" * 100}, headers=auth) as response:
                assert response.status == 413


async def test_token_auth_go_agent_rules():
    """The Go agent's rule: Authorization wins when present (exact "Bearer "), else ?token=; 401 text body."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    auth = TokenAuth(
        ["s3cret"], header=None, first_only=True, exact_scheme=True,
        deny=lambda request: web.Response(status=401, text="unauthorized\n"),
    )
    app = web.Application(middlewares=[auth.middleware])
    app.router.add_get("/ws", ok)
    async with HttpServer(app, [TcpAddress("127.0.0.1", 0)]) as server:
        host, port = server.addresses[0]
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:
            cases = [
                ({"Authorization": "Bearer s3cret"}, "/ws", 200),
                ({}, "/ws?token=s3cret", 200),
                ({"Authorization": "bearer s3cret"}, "/ws", 401),  # case-sensitive scheme
                ({"Authorization": "Bearer wrong"}, "/ws?token=s3cret", 401),  # the header wins
                ({}, "/unknown", 401),  # auth before routing
                ({}, "/health", 404),  # exempt, then routed
            ]
            for headers, path, status in cases:
                async with http.get(base + path, headers=headers) as response:
                    assert response.status == status, (headers, path)
                    if status == 401:
                        assert await response.text() == "unauthorized\n"


def test_token_auth_needs_a_token():
    with pytest.raises(ValueError):
        TokenAuth(["", ""])


# ------------------------------------------------------------------ serving on several addresses


def busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def get_text(url: str, connector: aiohttp.BaseConnector | None = None) -> str:
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as response:
            return await response.text()


async def test_serve_any_survives_one_failing_address_tcp_and_unix(tmp_path):
    blocker = busy_port()
    taken = blocker.getsockname()[1]
    path = str(tmp_path / "api.sock")
    try:
        server = await serve_app(
            hello_app(),
            [TcpAddress("127.0.0.1", taken), TcpAddress("127.0.0.1", 0), UnixAddress(path, mode=0o600)],
        )
        try:
            assert [a for a, _ in server.failures] == [TcpAddress("127.0.0.1", taken)]
            tcp = [a for a in server.addresses if isinstance(a, tuple)]
            assert len(tcp) == 1 and server.addresses[-1] == path
            assert await get_text(f"http://127.0.0.1:{tcp[0][1]}/") == "hello"
            assert await get_text("http://unix/", aiohttp.UnixConnector(path)) == "hello"
            assert os.stat(path).st_mode & 0o777 == 0o600
        finally:
            await server.aclose()
        assert not os.path.exists(path)
    finally:
        blocker.close()


async def test_serve_all_fails_and_releases_what_it_bound(tmp_path):
    blocker = busy_port()
    taken = blocker.getsockname()[1]
    free = busy_port()
    free_port = free.getsockname()[1]
    free.close()
    try:
        with pytest.raises(OSError):
            await serve_app(hello_app(), [TcpAddress("127.0.0.1", free_port), TcpAddress("127.0.0.1", taken)], require="all")
        with socket.socket() as again:  # the first address was released
            again.bind(("127.0.0.1", free_port))
        with pytest.raises(OSError, match="could not listen on any address"):
            await serve_app(hello_app(), [TcpAddress("127.0.0.1", taken), UnixAddress(str(tmp_path / "no/such/dir.sock"))])
    finally:
        blocker.close()


# ------------------------------------------------------------------ hostile clients


async def half_sent_requests(host: str, port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        conns.append((reader, writer))
    return conns


async def test_slowloris_cannot_lock_out_real_clients():
    """Issue #6 item 8: 1,100 half-sent requests (default cap 256): every real request still succeeds."""
    attackers_count = 1100
    async with HttpServer(hello_app(), [TcpAddress("127.0.0.1", 0)], header_timeout=60.0) as server:
        cap = server.guard.max_unauthenticated
        host, port = server.addresses[0]
        attackers = await half_sent_requests(host, port, attackers_count)
        try:
            await wait_until(lambda: server.guard.evicted == attackers_count - cap, what="oldest slow connections evicted")
            assert server.guard.unauthenticated == cap
            for _ in range(20):
                assert await asyncio.wait_for(get_text(f"http://{host}:{port}/"), TIMEOUT) == "hello"
            closed = 0
            for reader, _ in attackers[: attackers_count - cap]:  # the oldest were closed to make room
                answer = await asyncio.wait_for(reader.read(), TIMEOUT)
                closed += answer.startswith(b"HTTP/1.1 503") or answer == b""
            assert closed == attackers_count - cap
        finally:
            for _, writer in attackers:
                writer.close()


async def test_header_timeout_closes_a_slow_client_but_not_a_finished_one():
    async with HttpServer(hello_app(), [TcpAddress("127.0.0.1", 0)], header_timeout=0.3) as server:
        host, port = server.addresses[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/") as response:  # a kept-alive client, head sent in time
                assert await response.text() == "hello"
            (slow_reader, slow_writer), = await half_sent_requests(host, port, 1)
            assert await asyncio.wait_for(slow_reader.read(), TIMEOUT) == b""  # closed by the deadline, no answer
            slow_writer.close()
            # the kept-alive connection is older than the slow one, yet the deadline spared it
            assert server.guard.timed_out == 1
            async with http.get(f"http://{host}:{port}/") as response:
                assert await response.text() == "hello"
        assert server.guard.timed_out == 1


async def test_authenticated_connections_do_not_count():
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[TokenAuth(["key"]).middleware])
    app.router.add_get("/", ok)
    async with HttpServer(app, [TcpAddress("127.0.0.1", 0)], max_unauthenticated=5) as server:
        host, port = server.addresses[0]
        async with aiohttp.ClientSession(headers={"X-API-Key": "key"}) as http:
            async with http.get(f"http://{host}:{port}/") as response:
                assert await response.text() == "ok"
            assert server.guard.unauthenticated == 0  # the kept-alive connection authenticated
            attackers = await half_sent_requests(host, port, 10)
            await wait_until(lambda: server.guard.evicted == 5)
            async with http.get(f"http://{host}:{port}/") as response:  # the authenticated one survived
                assert await response.text() == "ok"
            for _, writer in attackers:
                writer.close()


async def test_malformed_requests_log_one_line_without_traceback(caplog):
    async with HttpServer(hello_app(), [TcpAddress("127.0.0.1", 0)]) as server:
        host, port = server.addresses[0]
        with caplog.at_level(logging.DEBUG, logger="hatchway.common.httpapi.server"):
            for _ in range(30):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET / HTTP/1.1\r\nBad\x1b[31mHeader\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), TIMEOUT)
                assert answer.split(b" ", 2)[1] == b"400"
                writer.close()
        records = [r for r in caplog.records if r.name == "hatchway.common.httpapi.server"]
        assert len(records) == 1, [r.getMessage() for r in records]
        record = records[0]
        assert record.levelno == logging.WARNING and record.exc_info is None and record.exc_text is None
        message = record.getMessage()
        assert "\n" not in message and "\x1b" not in message
        assert "Error handling request" in message and "BadHttpMessage" in message


async def test_websocket_and_large_bodies_pass_through_the_guard():
    """The guard wraps aiohttp's protocol: upgrades, flow control and big transfers still work."""
    blob = os.urandom(4 << 20)

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=8 << 20)
        await ws.prepare(request)
        async for message in ws:
            await ws.send_bytes(message.data)
        return ws

    async def download(request: web.Request) -> web.Response:
        return web.Response(body=blob)

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/blob", download)
    async with HttpServer(app, [TcpAddress("127.0.0.1", 0)], header_timeout=0.5) as server:
        host, port = server.addresses[0]
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"http://{host}:{port}/ws", max_msg_size=8 << 20) as ws:
                await ws.send_bytes(blob)
                echoed = await asyncio.wait_for(ws.receive_bytes(), TIMEOUT)
                assert echoed == blob
                # a slow client opened now times out; by then the upgraded connection has idled past
                # the same deadline, and it is not cut
                (slow_reader, slow_writer), = await half_sent_requests(host, port, 1)
                await wait_until(lambda: server.guard.timed_out == 1, what="the slow client's deadline")
                assert await asyncio.wait_for(slow_reader.read(), TIMEOUT) == b""
                slow_writer.close()
                await ws.send_bytes(b"still here")
                assert await asyncio.wait_for(ws.receive_bytes(), TIMEOUT) == b"still here"
            async with http.get(f"http://{host}:{port}/blob") as response:
                assert await response.read() == blob
        assert server.guard.timed_out == 1


async def test_unauthenticated_byte_budget():
    """#6 item 7: before authenticating, a connection may send at most max_unauthenticated_bytes."""
    received: list[int] = []

    async def upload(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(text="stored")

    app = web.Application(middlewares=[TokenAuth(["key"], exempt=("/open",)).middleware])
    app.router.add_post("/open", upload)
    app.router.add_post("/auth", upload)
    budget = 64 * 1024
    async with HttpServer(app, [TcpAddress("127.0.0.1", 0)], max_unauthenticated_bytes=budget) as server:
        host, port = server.addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        body = os.urandom(budget * 2)
        writer.write(b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        try:  # cut, no answer (a reset when our unread bytes were still queued at the server)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        except ConnectionResetError:
            pass
        writer.close()
        assert server.guard.over_budget == 1 and received == []
        async with aiohttp.ClientSession(headers={"X-API-Key": "key"}) as http:
            async with http.post(f"http://{host}:{port}/auth", data=b"small") as response:
                assert await response.text() == "stored"  # authenticates the kept-alive connection
            async with http.post(f"http://{host}:{port}/auth", data=body) as response:
                assert await response.text() == "stored"  # past the budget, but authenticated
        assert received == [5, len(body)] and server.guard.over_budget == 1
