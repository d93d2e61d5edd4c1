"""The status API's own HTTP/1.x server (sidecar/statusapi.py): the sans-I/O request side with golden vectors and
hypothesis (any split of the bytes gives the same requests), and the asyncio driver on a real socket: keep-alive
rules, HEAD, pipelining, malformed and oversize heads, bodies, the head timeout and shutdown with open connections."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.common.httpproxy import HttpProxyError
from hatchway.sidecar import statusapi
from hatchway.sidecar.statusapi import Request, StatusRequests, StatusServer

PIPELINE = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /status?full=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            b"HEAD http://127.0.0.1:9090/health HTTP/1.0\r\n\r\n"
            b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"DELETE /status HTTP/1.1\r\nConnection: close\r\n\r\n")
EXPECTED = [Request("GET", "/health", True), Request("POST", "/status", True), Request("HEAD", "/health", False),
            Request("GET", "/x", True), Request("DELETE", "/status", False)]


def test_golden_pipeline() -> None:
    requests = StatusRequests()
    assert requests.feed(PIPELINE) == EXPECTED
    assert not requests.mid_request


@given(st.lists(st.integers(min_value=1, max_value=len(PIPELINE) - 1), unique=True, max_size=12))
def test_any_split_gives_the_same_requests(cuts: list[int]) -> None:
    requests = StatusRequests()
    got: list[Request] = []
    bounds = [0, *sorted(cuts), len(PIPELINE)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        got += requests.feed(PIPELINE[a:b])
    assert got == EXPECTED


def test_body_in_progress_is_mid_request() -> None:
    requests = StatusRequests()
    assert requests.feed(b"PUT /health HTTP/1.1\r\nContent-Length: 4\r\n\r\nab") == []
    assert requests.mid_request
    assert requests.feed(b"cd") == [Request("PUT", "/health", True)]
    assert not requests.mid_request
    assert requests.feed(b"GE") == [] and requests.mid_request


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /health\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET /health HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    ("GET /health HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode("latin-1"), 400),  # a digit, not ASCII
    (b"GET /health HTTP/1.1\r\nX: " + b"a" * 70_000, 431),
])
def test_bad_heads(raw: bytes, status: int) -> None:
    with pytest.raises(HttpProxyError) as err:
        StatusRequests().feed(raw)
    assert err.value.status == status


class Backend:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.called = asyncio.Event()

    async def status(self) -> object:
        self.called.set()
        await self.release.wait()
        raise RuntimeError("not now")


async def exchange(port: int, data: bytes, *, read_until_eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 10) if read_until_eof else b""
    finally:
        writer.close()
        await writer.wait_closed()


def statuses(raw: bytes) -> list[str]:
    return re.findall(r"HTTP/1\.1 (\d{3})", raw.decode("latin-1"))


async def test_server_answers_in_order_and_keeps_go_headers() -> None:
    backend = Backend()
    backend.release.set()
    async with StatusServer(backend, "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        port = server.addresses[0][1]
        raw = await exchange(port, PIPELINE)
    assert statuses(raw) == ["200", "500", "200"]  # the HTTP/1.0 HEAD without keep-alive ends the connection
    first = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert re.fullmatch(r"HTTP/1\.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        r"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", first), first
    assert b"failed to get status: not now\n" in raw
    head_answer = raw.split(b"HTTP/1.1 ")[3]
    assert head_answer.endswith(b"\r\n\r\n") and b"Connection: close" in head_answer  # HEAD: no body; 1.0: close


async def test_keep_alive_http10_and_pipelined_requests_after_it() -> None:
    backend = Backend()
    backend.release.set()
    async with StatusServer(backend, "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        raw = await exchange(server.addresses[0][1], PIPELINE.split(b"HEAD", 1)[0] + PIPELINE.split(b"HTTP/1.0\r\n\r\n", 1)[1])
    assert statuses(raw) == ["200", "500", "404", "500"]


async def test_malformed_head_gets_400_and_a_close_other_connections_unaffected() -> None:
    backend = Backend()
    backend.release.set()
    async with StatusServer(backend, "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        port = server.addresses[0][1]
        bad = await exchange(port, b"NOT A REQUEST\r\n\r\n")
        good = await exchange(port, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert statuses(bad) == ["400"] and statuses(good) == ["200"]


async def test_head_timeout_closes_a_silent_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statusapi, "HEAD_TIMEOUT", 0.2)
    async with StatusServer(Backend(), "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        raw = await exchange(server.addresses[0][1], b"GET /hea")
    assert raw == b""


async def test_close_aborts_connections_and_pending_status_calls() -> None:
    backend = Backend()  # never released: /status waits
    server = StatusServer(backend, "127.0.0.1", 0)  # type: ignore[arg-type]
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[0][1])
    writer.write(b"GET /status HTTP/1.1\r\n\r\n")
    await writer.drain()
    await backend.called.wait()
    assert len(server.tasks) == 1
    await server.aclose()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert len(server.tasks) == 0 and not server.connections
    writer.close()
    await server.aclose()  # twice is fine


async def test_half_closed_client_gets_its_answers_then_the_close() -> None:
    """A client that sends its requests and shuts its write side (``curl``-style one-shots, ``nc -N``) gets every
    answer and then the server's close at once, not after the idle timeout."""
    backend = Backend()
    backend.release.set()
    async with StatusServer(backend, "127.0.0.1", 0) as server:  # type: ignore[arg-type]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.addresses[0][1])
        writer.write(b"GET /health HTTP/1.1\r\n\r\nGET /status HTTP/1.1\r\n\r\n")
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert statuses(raw) == ["200", "500"]
