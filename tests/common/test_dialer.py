"""Dialers: direct TCP with Go-style errors, upstream SOCKS5 / HTTP CONNECT proxies, UDP associations.

The upstream proxies in these tests are hatchway's own front end, with credentials.
"""

import asyncio
import os
import socket

import pytest

from hatchway.common import socks5
from hatchway.common.dialer import (
    DirectDialer,
    DirectUdpAssociation,
    UpstreamProxy,
    UpstreamProxyDialer,
    dialer_for,
    lookup_error_text,
    open_tcp,
    parse_upstream,
    reply_for,
)
from hatchway.common.dialing import ProxyError
from hatchway.common.proxyfront import ProxyFront

TIMEOUT = 5.0
CURL_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class Collector(asyncio.Protocol):
    """A plain protocol (not a relay Pump) that queues what it receives."""

    def __init__(self):
        self.received = asyncio.Queue()
        self.transport = None
        self.closed = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received.put_nowait(data)

    def connection_lost(self, exc):
        self.closed.set()

    async def read(self, n):
        data = b""
        while len(data) < n:
            data += await asyncio.wait_for(self.received.get(), TIMEOUT)
        return data


async def start_banner_echo(banner=b"BANNER "):
    """A target that greets first (so its bytes may ride along with a proxy's reply), then echoes."""

    async def handle(reader, writer):
        writer.write(banner)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
async def target():
    server, port = await start_banner_echo()
    yield port
    server.close()


@pytest.fixture
async def upstream():
    """hatchway's own front end with credentials, acting as the upstream proxy."""
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="up user", password="p@ss:w") as front:
        yield front.bound[0][1]


def upstream_url(scheme, port, user="up%20user", password="p%40ss%3Aw"):
    return f"{scheme}://{user}:{password}@127.0.0.1:{port}"


# ------------------------------------------------------------------ URLs and factories


def test_parse_upstream_defaults_and_credentials():
    assert parse_upstream("socks5://u:p@proxy.example") == UpstreamProxy("socks5", "proxy.example", 1080, "u", "p")
    assert parse_upstream("http://proxy.example") == UpstreamProxy("http", "proxy.example", 8080)
    assert parse_upstream("socks5h://[::1]:9050") == UpstreamProxy("socks5", "::1", 9050)
    assert parse_upstream("http://a%3Ab:c%40d@h:3128") == UpstreamProxy("http", "h", 3128, "a:b", "c@d")
    for bad in ("ftp://h", "socks5://", "http://h:99999"):
        with pytest.raises(ValueError):
            parse_upstream(bad)


def test_dialer_for():
    assert type(dialer_for(None)) is DirectDialer
    assert type(dialer_for("")) is DirectDialer
    dialer = dialer_for("http://u:p@127.0.0.1")
    assert isinstance(dialer, UpstreamProxyDialer) and dialer.upstream.port == 8080


def test_error_texts_and_codes():
    refused = ConnectionRefusedError(111, "Connection refused")
    assert reply_for(refused) == socks5.Rep.CONNECTION_REFUSED
    assert reply_for(OSError(101, "Network is unreachable")) == socks5.Rep.NETWORK_UNREACHABLE
    assert reply_for(OSError(113, "No route to host")) == socks5.Rep.HOST_UNREACHABLE
    assert reply_for(TimeoutError()) == socks5.Rep.HOST_UNREACHABLE
    nonexistent = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert lookup_error_text("nosuch.example", nonexistent) == "dial tcp: lookup nosuch.example: no such host"


# ------------------------------------------------------------------ direct


async def test_open_tcp_direct_attaches_the_protocol(target):
    transport, protocol = await open_tcp("localhost", target, Collector)  # tries every address of localhost
    assert await protocol.read(7) == b"BANNER "
    transport.write(b"ping")
    assert await protocol.read(4) == b"ping"
    transport.close()


async def test_open_tcp_refused_has_go_text_and_0x05():
    port = closed_port()
    with pytest.raises(ProxyError) as info:
        await open_tcp("127.0.0.1", port, Collector)
    assert info.value.reply == socks5.Rep.CONNECTION_REFUSED
    assert info.value.message == f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    with pytest.raises(ProxyError) as info:
        await open_tcp("::1", port, Collector)
    assert info.value.message.startswith(f"dial tcp [::1]:{port}: ")


async def test_open_tcp_unknown_name():
    with pytest.raises(ProxyError) as info:
        await open_tcp("nosuch.invalid", 80, Collector)
    assert info.value.reply == socks5.Rep.HOST_UNREACHABLE
    assert info.value.message.startswith("dial tcp: lookup nosuch.invalid: ")


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..b", "bad\udc80name"], ids=["long-label", "empty-label", "surrogate"])
async def test_open_tcp_invalid_host_names_are_proxy_errors(host):
    with pytest.raises(ProxyError) as info:
        await open_tcp(host, 80, Collector)
    assert info.value.reply == socks5.Rep.HOST_UNREACHABLE
    assert info.value.message.endswith(": no such host")


async def test_open_tcp_rejects_port_zero():
    with pytest.raises(ProxyError):
        await open_tcp("127.0.0.1", 0, Collector)


# ------------------------------------------------------------------ through an upstream proxy


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_open_tcp_through_upstream_with_credentials(scheme, upstream, target):
    transport, protocol = await open_tcp("127.0.0.1", target, Collector, upstream=upstream_url(scheme, upstream))
    assert await protocol.read(7) == b"BANNER "  # the target's first bytes are not lost
    transport.write(b"through " + scheme.encode())
    assert await protocol.read(8 + len(scheme)) == b"through " + scheme.encode()
    transport.close()
    await asyncio.wait_for(protocol.closed.wait(), TIMEOUT)


@pytest.mark.parametrize(
    ("scheme", "reply", "message"),
    [
        ("socks5", socks5.Rep.GENERAL_FAILURE, "socks5 handshake error: authentication failed"),
        ("http", socks5.Rep.HOST_UNREACHABLE, "HTTP CONNECT failed: HTTP/1.1 407 Proxy Authentication Required"),
    ],
)
async def test_upstream_wrong_credentials(scheme, reply, message, upstream, target):
    with pytest.raises(ProxyError) as info:
        await open_tcp("127.0.0.1", target, Collector, upstream=upstream_url(scheme, upstream, password="nope"))
    assert (info.value.reply, info.value.message) == (reply, message)


@pytest.mark.parametrize(
    ("scheme", "reply", "message"),
    [
        ("socks5", socks5.Rep.CONNECTION_REFUSED, "socks5 connect error: connection failed: 5"),
        ("http", socks5.Rep.HOST_UNREACHABLE, "HTTP CONNECT failed: HTTP/1.1 502 Bad Gateway"),
    ],
)
async def test_upstream_cannot_reach_target(scheme, reply, message, upstream):
    with pytest.raises(ProxyError) as info:
        await open_tcp("127.0.0.1", closed_port(), Collector, upstream=upstream_url(scheme, upstream))
    assert (info.value.reply, info.value.message) == (reply, message)


async def test_upstream_proxy_down():
    port = closed_port()
    with pytest.raises(ProxyError) as info:
        await open_tcp("example.com", 80, Collector, upstream=f"socks5://127.0.0.1:{port}")
    assert info.value.reply == socks5.Rep.CONNECTION_REFUSED
    assert info.value.message == f"connect to proxy error: dial tcp 127.0.0.1:{port}: connect: connection refused"


async def test_silent_upstream_times_out_with_go_text():
    accepted = asyncio.Event()

    async def mute(reader, writer):
        accepted.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ProxyError) as info:
        await open_tcp("10.1.2.3", 80, Collector, upstream=f"http://127.0.0.1:{port}", timeout=0.3)
    assert accepted.is_set()
    assert (info.value.reply, info.value.message) == (socks5.Rep.HOST_UNREACHABLE, "dial tcp 10.1.2.3:80: i/o timeout")
    server.close()


async def curl(*args):
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", str(TIMEOUT), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CURL_ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 2)
    return proc.returncode, out, err


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_front_end_chained_to_an_upstream_proxy(scheme, upstream):
    async def origin(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nchained")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(origin, "127.0.0.1", 0)
    origin_port = server.sockets[0].getsockname()[1]
    async with ProxyFront(UpstreamProxyDialer(upstream_url(scheme, upstream)), "127.0.0.1", 0) as front:
        port = front.bound[0][1]
        for args in (["--socks5-hostname", f"127.0.0.1:{port}"], ["-x", f"http://127.0.0.1:{port}"]):
            code, out, err = await curl(*args, f"http://127.0.0.1:{origin_port}/")
            assert (code, out) == (0, b"chained"), err
    server.close()


# ------------------------------------------------------------------ UDP


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


async def test_direct_udp_association_ipv4_ipv6_and_names():
    loop = asyncio.get_running_loop()
    name_address = (await loop.getaddrinfo("localhost", None, type=socket.SOCK_DGRAM))[0][4][0]
    echoes = []
    for address in ("127.0.0.1", "::1", name_address):
        transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=(address, 0))
        echoes.append(transport)
    association = await DirectUdpAssociation.open()
    received = asyncio.Queue()
    association.set_receiver(lambda host, port, data: received.put_nowait((host, port, data)))
    cases = [("127.0.0.1", echoes[0], "127.0.0.1"), ("::1", echoes[1], "::1"), ("localhost", echoes[2], name_address)]
    for host, echo, source in cases:
        port = echo.get_extra_info("sockname")[1]
        association.send(host, port, b"hi " + host.encode())
        assert await asyncio.wait_for(received.get(), TIMEOUT) == (source, port, b"echo:hi " + host.encode())
    association.close()
    association.close()  # idempotent
    for echo in echoes:
        echo.close()


async def test_upstream_dialer_udp_is_direct_or_refused():
    association = await UpstreamProxyDialer("http://127.0.0.1:1").associate(("127.0.0.1", 1))
    association.close()
    with pytest.raises(ProxyError) as info:
        await UpstreamProxyDialer("http://127.0.0.1:1", udp_direct=False).associate(("127.0.0.1", 1))
    assert info.value.reply == socks5.Rep.COMMAND_NOT_SUPPORTED
