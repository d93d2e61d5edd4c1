"""HTTP proxy mode through common's front end with the direct backend as Dialer (cases 23-32, D5-D9, D14)."""

from __future__ import annotations

import asyncio
import gzip

from origins import InProcess, Origin, echo, fixed

from hatchway.common.dialing import Connected
from hatchway.sidecar import DirectBackend, DirectScript
from helpers import wait_until

STRIPPED = ["Proxy-Authorization", "Proxy-Connection", "Keep-Alive", "TE", "X-Foo", "Proxy-Foo"]


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def proxy_port(sidecar: object) -> int:
    url: str = sidecar.proxy_url  # type: ignore[attr-defined]
    return int(url.rsplit(":", 1)[1])


async def test_absolute_uri_strips_hop_by_hop_and_proxy_headers(sidecars: InProcess) -> None:
    origin = Origin(echo)
    origin.handler = fixed(b"hello")(origin)
    async with origin:
        sidecar, out = await sidecars.start(script=DirectScript(names={"svc": f"127.0.0.1:{origin.port}"}))
        request = (
            "GET http://svc/path?q=1 HTTP/1.1\r\nHost: svc\r\nProxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\n"
            "Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Foo\r\nX-Foo: bar\r\nKeep-Alive: 300\r\n"
            "TE: trailers\r\nProxy-Foo: 1\r\nX-Kept: yes\r\n\r\n"
        )
        reply = await exchange(proxy_port(sidecar), request.encode())
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nhello")
        head = origin.heads[0].decode()
        assert head.startswith("GET /path?q=1 HTTP/1.1\r\n")
        names = [line.split(":", 1)[0].lower() for line in head.split("\r\n")[1:] if line]
        for header in STRIPPED:
            assert header.lower() not in names, header
        for added in ("accept-encoding", "via", "x-forwarded-for"):
            assert added not in names
        assert "x-kept" in names and "host" in names
        client = out.getvalue().splitlines()[-1]
        assert client.startswith("[127.0.0.1:") and client.endswith("] GET http://svc/path?q=1")


async def test_gzip_body_passes_through_untouched(sidecars: InProcess) -> None:
    body = gzip.compress(b"x" * 1000)
    origin = Origin(echo)
    origin.handler = fixed(body, "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n")(origin)
    async with origin:
        sidecar, _ = await sidecars.start(script=DirectScript(names={"svc": f"127.0.0.1:{origin.port}"}))
        reply = await exchange(proxy_port(sidecar), b"GET http://svc/ HTTP/1.1\r\nHost: svc\r\n\r\n")
    head, _, got = reply.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head and got == body


async def test_streaming_response_flushed_as_it_arrives(sidecars: InProcess) -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()

    async with Origin(slow) as origin:
        sidecar, _ = await sidecars.start(script=DirectScript(names={"svc": f"127.0.0.1:{origin.port}"}))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(sidecar))
        writer.write(b"GET http://svc/events HTTP/1.1\r\nHost: svc\r\n\r\n")
        got = b""
        while b"first" not in got:  # arrives while the origin is still holding the rest
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            assert chunk
            got += chunk
        assert not release.is_set()
        release.set()
        got += await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert got.endswith(b"4\r\nlast\r\n0\r\n\r\n")


async def test_absolute_uri_refused_is_502_proxy_error(sidecars: InProcess) -> None:
    async with Origin(echo) as closed:
        port = closed.port
    sidecar, _ = await sidecars.start()
    reply = await exchange(proxy_port(sidecar), f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert body.startswith(b"Proxy Error: ") and b"refused" in body


async def test_connect_exact_reply_and_relay_with_early_bytes(sidecars: InProcess) -> None:
    async with Origin(echo) as origin:
        sidecar, out = await sidecars.start(script=DirectScript(names={"svc:443": f"127.0.0.1:{origin.port}"}))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port(sidecar))
        # the first payload rides in the same write as the CONNECT head (D8: upstream drops it)
        writer.write(b"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\nearly-bytes")
        expected = b"HTTP/1.1 200 Connection Established\r\n\r\nearly-bytes"
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 10) == expected
        writer.write(b"more")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"more"
        writer.close()
    assert out.getvalue().splitlines()[-1].endswith("] CONNECT svc:443")


async def test_connect_refused_is_bare_502(sidecars: InProcess) -> None:
    async with Origin(echo) as closed:
        port = closed.port
    sidecar, _ = await sidecars.start()
    reply = await exchange(proxy_port(sidecar), f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert reply == b"HTTP/1.1 502 Bad Gateway\r\n\r\n"


async def test_origin_form_and_https_uri_are_400(sidecars: InProcess) -> None:
    """Pinned choice (spec 6.3): like arkitekt-mesh's proxy, a 400, not upstream's 502 'unsupported protocol scheme'."""
    sidecar, _ = await sidecars.start()
    for request in (b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n", b"GET https://svc/ HTTP/1.1\r\nHost: svc\r\n\r\n"):
        reply = await exchange(proxy_port(sidecar), request)
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_unknown_tailnet_name_refused(sidecars: InProcess) -> None:
    """Non-tailnet names are not dialled from the host (decision 8.3, as arkitekt-mesh)."""
    sidecar, _ = await sidecars.start()
    reply = await exchange(proxy_port(sidecar), b"GET http://nosuch/ HTTP/1.1\r\nHost: nosuch\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 502 ")
    assert reply.endswith(b"Proxy Error: nosuch:80: no peer named nosuch on the tailnet\n")


async def test_upgrade_over_absolute_uri_does_not_hang(sidecars: InProcess) -> None:
    """Upgrade is a hop-by-hop header: the origin gets a plain request (Connection: close) and answers it."""
    origin = Origin(echo)
    origin.handler = fixed(b"plain")(origin)
    async with origin:
        sidecar, _ = await sidecars.start(script=DirectScript(names={"svc": f"127.0.0.1:{origin.port}"}))
        reply = await exchange(proxy_port(sidecar), b"GET http://svc/ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\n"
                               b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert reply.endswith(b"plain")
    assert b"upgrade" not in origin.heads[0].lower().split(b"\r\n\r\n")[0].replace(b"sec-websocket", b"")


class Unresponsive(DirectBackend):
    """A target that never answers the dial."""

    def __init__(self) -> None:
        super().__init__()
        self.dials = 0

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        self.dials += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_dial_timeout_bounds_unresponsive_target(sidecars: InProcess) -> None:
    backend = Unresponsive()
    sidecar, _ = await sidecars.start(backend=backend, dial_timeout=0.3)
    reply = await exchange(proxy_port(sidecar), b"GET http://svc/ HTTP/1.1\r\nHost: svc\r\n\r\n")
    assert reply.endswith(b"Proxy Error: dial tcp svc:80: i/o timeout\n")
    reply = await exchange(proxy_port(sidecar), b"CONNECT svc:443 HTTP/1.1\r\n\r\n")
    assert reply == b"HTTP/1.1 502 Bad Gateway\r\n\r\n"
    await wait_until(lambda: backend.dials == 2, what="two dials")
