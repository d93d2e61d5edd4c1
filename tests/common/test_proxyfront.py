"""The proxy front end with real clients (curl) and a raw-socket SOCKS5 client.

linksocks.md section 22 cases 30-33 as seen from the front end: methods and
credentials, address types, commands, reply codes, the HTTP proxy on the same
port, UDP ASSOCIATE, and one bad connection never disturbing the others.
"""

import asyncio
import hashlib
import logging
import os
import socket
import struct

import pytest

from hatchway.common import socks5
from hatchway.common.dialer import DirectDialer
from hatchway.common.dialing import ProxyError
from hatchway.common.httpproxy import HEAD_LIMIT, parse_response_head
from hatchway.common.proxyfront import ProxyFront
from helpers import wait_until

TIMEOUT = 5.0
CURL_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

# ------------------------------------------------------------------ helpers


async def start_echo(host="127.0.0.1"):
    async def handle(reader, writer):
        try:
            while data := await reader.read(256 * 1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, host, 0)
    return server, server.sockets[0].getsockname()[1]


class HttpTarget:
    """An origin server that records each request head and body, then answers ``hello``."""

    def __init__(self):
        self.requests = asyncio.Queue()
        self.server = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        await self.requests.put((head, body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    async def next_request(self):
        return await asyncio.wait_for(self.requests.get(), TIMEOUT)

    def close(self):
        self.server.close()


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def curl(*args):
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", str(TIMEOUT), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CURL_ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 2)
    return proc.returncode, out, err


async def connect(front, host="127.0.0.1"):
    port = next(p for h, p in front.bound if (":" in h) == (":" in host))
    return await asyncio.open_connection(host, port)


async def read_exact(reader, n):
    return await asyncio.wait_for(reader.readexactly(n), TIMEOUT)


async def read_all(reader):
    """Everything until EOF; a reset counts as the end too."""
    try:
        return await asyncio.wait_for(reader.read(-1), TIMEOUT)
    except ConnectionResetError:
        return b""


async def socks_connect(front, host, port, *, credentials=None, extra=b""):
    """Raw SOCKS5 CONNECT; returns (reader, writer, reply code)."""
    reader, writer = await connect(front)
    if credentials:
        writer.write(b"\x05\x01\x02" + socks5.build_userpass(*credentials))
    else:
        writer.write(b"\x05\x01\x00")
    writer.write(socks5.build_request(socks5.CMD_CONNECT, host, port) + extra)
    method = await read_exact(reader, 2)
    assert method == (b"\x05\x02" if credentials else b"\x05\x00")
    if credentials:
        assert await read_exact(reader, 2) == b"\x01\x00"
    reply = await read_exact(reader, 10)
    return reader, writer, reply[1]


class RecordingDialer(DirectDialer):
    def __init__(self):
        super().__init__()
        self.targets = []
        self.association_closed = asyncio.Event()

    async def open(self, host, port, client):
        self.targets.append((host, port, client))
        return await super().open(host, port, client)

    async def associate(self, client):
        association = await super().associate(client)
        close = association.close

        def recording_close():
            self.association_closed.set()
            close()

        association.close = recording_close
        return association


@pytest.fixture
async def echo():
    server, port = await start_echo()
    yield port
    server.close()


@pytest.fixture
async def target():
    http_target = await HttpTarget().start()
    yield http_target
    http_target.close()


# ------------------------------------------------------------------ SOCKS5 with curl


async def test_curl_socks5_hostname_and_local_resolve(target):
    dialer = RecordingDialer()
    async with ProxyFront(dialer, "127.0.0.1", 0) as front:
        port = front.bound[0][1]
        code, out, err = await curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://localhost:{target.port}/a")
        assert (code, out) == (0, b"hello"), err
        code, out, err = await curl("--socks5", f"127.0.0.1:{port}", f"http://127.0.0.1:{target.port}/b")
        assert (code, out) == (0, b"hello"), err
    assert [(h, p) for h, p, _ in dialer.targets] == [("localhost", target.port), ("127.0.0.1", target.port)]
    assert dialer.targets[0][2][0] == "127.0.0.1"  # the client address reaches the dialer


async def test_curl_socks5_with_credentials(target):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="user", password="s3cret") as front:
        port = front.bound[0][1]
        code, out, err = await curl("--socks5-hostname", f"user:s3cret@127.0.0.1:{port}", f"http://127.0.0.1:{target.port}/")
        assert (code, out) == (0, b"hello"), err
        code, out, _ = await curl("--socks5-hostname", f"user:wrong@127.0.0.1:{port}", f"http://127.0.0.1:{target.port}/")
        assert code != 0 and out == b""


# ------------------------------------------------------------------ SOCKS5 raw (case 30, 31)


async def test_credentials_required_client_offering_only_no_auth_gets_0xff():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="u", password="p") as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00")
        assert await read_all(reader) == b"\x05\xff"
        writer.close()


async def test_right_credentials_01_00_wrong_01_01(echo):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="u", password="p") as front:
        reader, writer, code = await socks_connect(front, "127.0.0.1", echo, credentials=("u", "p"))
        assert code == 0
        writer.write(b"ping")
        assert await read_exact(reader, 4) == b"ping"
        writer.close()
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x02" + socks5.build_userpass("u", "x"))
        assert await read_all(reader) == b"\x05\x02\x01\x01"
        writer.close()


async def test_ipv6_address_type_is_passed_as_text():
    server, port = await start_echo("::1")
    dialer = RecordingDialer()
    async with ProxyFront(dialer, "127.0.0.1", 0) as front:
        reader, writer, code = await socks_connect(front, "::1", port)
        assert code == 0
        writer.write(b"over v6")
        assert await read_exact(reader, 7) == b"over v6"
        writer.close()
    assert dialer.targets[0][:2] == ("::1", port)
    server.close()


async def test_success_reply_is_bnd_zero():
    server, port = await start_echo()
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00" + socks5.build_request(1, "127.0.0.1", port))
        assert await read_exact(reader, 12) == b"\x05\x00" + b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        writer.close()
    server.close()


async def test_unsupported_address_type_gets_0x08():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00\x05\x01\x00\x05\x00\x00")
        assert await read_all(reader) == b"\x05\x00" + socks5.build_reply(0x08)
        writer.close()


async def test_bind_answers_0x07_by_default_or_closes_without_reply_when_configured():
    request = b"\x05\x01\x00" + socks5.build_request(socks5.CMD_BIND, "127.0.0.1", 80)
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, unsupported_command_reply=None) as front:  # LinkSocks' way
        reader, writer = await connect(front)
        writer.write(request)
        assert await read_all(reader) == b"\x05\x00"
        writer.close()
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(request)
        assert await read_all(reader) == b"\x05\x00" + socks5.build_reply(0x07)
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50",  # wrong version in the request
        b"\x05\x01\x00\x03\x00\x00\x50",  # empty domain name
    ],
    ids=["version-4", "empty-domain"],
)
async def test_malformed_request_gets_0x01(request_bytes):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00" + request_bytes)
        assert await read_all(reader) == b"\x05\x00" + socks5.build_reply(0x01)
        writer.close()


async def test_blocked_by_entry_rule_gets_0x02_and_http_403(echo):
    dialer = RecordingDialer()
    async with ProxyFront(dialer, "127.0.0.1", 0, entry_allowed=lambda host, port: port != echo) as front:
        reader, writer, code = await socks_connect(front, "127.0.0.1", echo)
        assert code == 0x02
        assert await read_all(reader) == b""
        writer.close()
        reader, writer = await connect(front)
        writer.write(f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n".encode())
        head, _ = parse_response_head(await read_all(reader))
        assert head.status == 403
        writer.close()
    assert dialer.targets == []


async def test_entry_rule_that_raises_blocks(echo):
    def broken_rule(host, port):
        raise RuntimeError("rule bug")

    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, entry_allowed=broken_rule) as front:
        _, writer, code = await socks_connect(front, "127.0.0.1", echo)
        assert code == 0x02
        writer.close()


async def test_client_half_close_after_request_is_relayed(echo, target):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00" + socks5.build_request(1, "127.0.0.1", echo) + b"last words")
        writer.write_eof()
        assert await read_all(reader) == b"\x05\x00" + socks5.build_reply(0) + b"last words"
        writer.close()
        reader, writer = await connect(front)
        writer.write(f"GET http://127.0.0.1:{target.port}/eof HTTP/1.1\r\n\r\n".encode())
        writer.write_eof()
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
        writer.close()


async def test_first_byte_neither_socks5_nor_http_closes():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        for first in (b"\x16\x03\x01\x00", b"\x04\x01\x00\x50", b"get http://x/ HTTP/1.1\r\n\r\n"):
            reader, writer = await connect(front)
            writer.write(first)
            assert await read_all(reader) == b""
            writer.close()
        await wait_until(lambda: front.active == 0)


async def test_http_disabled_closes_http_clients():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, http=False) as front:
        reader, writer = await connect(front)
        writer.write(b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n")
        assert await read_all(reader) == b""
        writer.close()


async def test_byte_by_byte_handshake_and_early_data_are_not_lost(echo):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        handshake = b"\x05\x02\x00\x02" + socks5.build_request(1, "127.0.0.1", echo)
        for i in range(len(handshake)):
            writer.write(handshake[i : i + 1])
            await writer.drain()
        assert await read_exact(reader, 12) == b"\x05\x00" + socks5.build_reply(0)
        writer.close()
        # request and payload in one write, before the reply: the payload is held, then relayed
        reader, writer, code = await socks_connect(front, "127.0.0.1", echo, extra=b"optimistic")
        assert code == 0
        assert await read_exact(reader, 10) == b"optimistic"
        writer.close()


async def test_connection_refused_gets_0x05():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer, code = await socks_connect(front, "127.0.0.1", closed_port())
        assert code == socks5.Rep.CONNECTION_REFUSED
        assert await read_all(reader) == b""
        writer.close()


class FailingDialer:
    def __init__(self, exc):
        self.exc = exc

    async def open(self, host, port, client):
        raise self.exc

    async def associate(self, client):
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ProxyError(0x03, "no WebSocket available"), 0x03),
        (ProxyError(0x04, "dial tcp 10.0.0.1:80: i/o timeout"), 0x04),
        (RuntimeError("dialer bug"), 0x01),
    ],
    ids=["no-websocket", "timeout", "dialer-bug"],
)
async def test_dialer_errors_become_reply_codes(exc, code):
    async with ProxyFront(FailingDialer(exc), "127.0.0.1", 0) as front:
        _, writer, reply = await socks_connect(front, "example.com", 80)
        assert reply == code
        writer.close()
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00" + socks5.build_request(socks5.CMD_UDP_ASSOCIATE, "0.0.0.0", 0))
        assert await read_all(reader) == b"\x05\x00" + socks5.build_reply(code)
        writer.close()


async def test_handshake_timeout_closes_silent_and_partial_clients():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, handshake_timeout=0.2) as front:
        silent_reader, silent_writer = await connect(front)
        partial_reader, partial_writer = await connect(front)
        partial_writer.write(b"\x05\x02\x00")
        assert await read_all(silent_reader) == b""
        assert await read_all(partial_reader) == b""
        silent_writer.close()
        partial_writer.close()
        await wait_until(lambda: front.active == 0)


class StuckDialer:
    def __init__(self):
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def open(self, host, port, client):
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def associate(self, client):
        raise ProxyError(0x07)


async def test_client_reset_while_dialing_cancels_the_dial():
    dialer = StuckDialer()
    async with ProxyFront(dialer, "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00" + socks5.build_request(1, "example.com", 80))
        await asyncio.wait_for(dialer.entered.wait(), TIMEOUT)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        await asyncio.wait_for(dialer.cancelled.wait(), TIMEOUT)
        await wait_until(lambda: front.active == 0)


async def test_close_aborts_active_connections(echo):
    front = ProxyFront(DirectDialer(), "127.0.0.1", 0)
    await front.start()
    reader, writer, code = await socks_connect(front, "127.0.0.1", echo)
    assert code == 0 and front.active == 1
    await front.close()
    assert await read_all(reader) == b""
    assert front.active == 0
    writer.close()


async def test_bad_connections_do_not_disturb_a_live_one(echo):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, handshake_timeout=0.3) as front:
        reader, writer, code = await socks_connect(front, "127.0.0.1", echo)
        assert code == 0
        bad_inputs = [b"\x16\x03", b"\x05\x00", b"\x05\x01\x00\x09\x09", b"GET / HTTP/1.1\r\n\r\n", b"\x05\x01\x00\x05\x01\x00\x01"]
        bad = []
        for data in bad_inputs:
            bad_reader, bad_writer = await connect(front)
            bad_writer.write(data)
            bad.append((bad_reader, bad_writer))
        for bad_reader, bad_writer in bad:
            await read_all(bad_reader)
            bad_writer.close()
        writer.write(b"still alive")
        assert await read_exact(reader, 11) == b"still alive"
        await wait_until(lambda: front.active == 1)
        writer.close()
        await wait_until(lambda: front.active == 0)


async def test_listens_on_several_hosts_with_port_zero(echo):
    async with ProxyFront(DirectDialer(), ["127.0.0.1", "::1"], 0) as front:
        assert sorted(h for h, _ in front.bound) == ["127.0.0.1", "::1"]
        assert all(p > 0 for _, p in front.bound)
        reader, writer = await connect(front, "::1")
        writer.write(b"\x05\x01\x00" + socks5.build_request(1, "127.0.0.1", echo) + b"v6 client")
        assert await read_exact(reader, 12) == b"\x05\x00" + socks5.build_reply(0)
        assert await read_exact(reader, 9) == b"v6 client"
        writer.close()


async def test_64_mib_round_trip_keeps_sha256(echo):
    payload = os.urandom(64 * 1024 * 1024)
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer, code = await socks_connect(front, "127.0.0.1", echo)
        assert code == 0

        async def send():
            view = memoryview(payload)
            for start in range(0, len(view), 1024 * 1024):
                writer.write(view[start : start + 1024 * 1024])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        digest = hashlib.sha256()
        received = 0
        while chunk := await asyncio.wait_for(reader.read(1024 * 1024), 20):
            digest.update(chunk)
            received += len(chunk)
        await sender
        assert received == len(payload)
        assert digest.digest() == hashlib.sha256(payload).digest()
        writer.close()


# ------------------------------------------------------------------ HTTP proxy (case 32)


async def test_curl_absolute_get_strips_hop_by_hop_headers(target):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="user", password="pw") as front:
        port = front.bound[0][1]
        code, out, err = await curl(
            "-x", f"http://user:pw@127.0.0.1:{port}",
            "-H", "Proxy-Connection: keep-alive", "-H", "Keep-Alive: timeout=5", "-H", "TE: trailers",
            "-H", "Connection: X-Private", "-H", "X-Private: secret", "-H", "X-Keep: yes",
            "--data", "hello=1",
            f"http://127.0.0.1:{target.port}/path?q=1",
        )
        assert (code, out) == (0, b"hello"), err
        head, body = await target.next_request()
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /path?q=1 HTTP/1.1"
    names = [line.split(":")[0].lower() for line in lines[1:] if line]
    assert f"Host: 127.0.0.1:{target.port}" in lines
    assert "Connection: close" in lines and names.count("connection") == 1
    for dropped in ("proxy-connection", "proxy-authorization", "keep-alive", "te", "x-private"):
        assert dropped not in names
    assert "X-Keep: yes" in lines and "Content-Length: 7" in lines
    assert body == b"hello=1"


async def test_raw_absolute_request_with_body_in_the_same_packet(target):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(
            f"PUT http://127.0.0.1:{target.port}/up HTTP/1.1\r\nContent-Length: 5\r\n\r\nbytes".encode()
        )
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"hello")
        head, body = await target.next_request()
        assert head.startswith(b"PUT /up HTTP/1.1\r\n") and body == b"bytes"
        writer.close()


async def test_curl_connect_tunnel(target):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="user", password="pw") as front:
        port = front.bound[0][1]
        code, out, err = await curl("-p", "-x", f"http://user:pw@127.0.0.1:{port}", f"http://127.0.0.1:{target.port}/t")
        assert (code, out) == (0, b"hello"), err
        head, _ = await target.next_request()
        assert head.startswith(b"GET /t HTTP/1.1\r\n")


async def test_connect_with_early_bytes(echo):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nHost: x\r\n\r\nearly".encode())
        assert await read_exact(reader, 39) == b"HTTP/1.1 200 Connection Established\r\n\r\n"
        assert await read_exact(reader, 5) == b"early"
        writer.close()


async def test_proxy_auth_required_gets_407(target):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0, username="user", password="pw", realm="LinkSocks") as front:
        port = front.bound[0][1]
        for proxy in (f"http://127.0.0.1:{port}", f"http://user:bad@127.0.0.1:{port}"):
            code, out, _ = await curl("-i", "-x", proxy, f"http://127.0.0.1:{target.port}/")
            assert code == 0
            head, _ = parse_response_head(out)
            assert head.status == 407
            assert ("Proxy-Authenticate", 'Basic realm="LinkSocks"') in head.headers
        assert target.requests.empty()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET https://example.com/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /origin-form HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
        (b"GET http://x/ HTTP/1.1\r\nBroken header\r\n\r\n", 400),
        (b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * (HEAD_LIMIT - 26), 431),  # one byte over, no end
    ],
    ids=["https-absolute", "origin-form", "bad-header", "head-too-large"],
)
async def test_http_requests_refused_with_status(request_bytes, status):
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(request_bytes)
        head, _ = parse_response_head(await read_all(reader))
        assert head.status == status
        writer.close()


async def test_http_dial_failure_gets_502_with_the_error_text():
    async with ProxyFront(DirectDialer(), "127.0.0.1", 0) as front:
        port = closed_port()
        for request in (f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n", f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"):
            reader, writer = await connect(front)
            writer.write(request.encode())
            answer = await read_all(reader)
            head, used = parse_response_head(answer)
            assert head.status == 502
            assert answer[used:] == f"dial tcp 127.0.0.1:{port}: connect: connection refused".encode()
            writer.close()


async def test_proxy_error_http_status_override():
    async with ProxyFront(FailingDialer(ProxyError(0x03, "no backend", http_status=503)), "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        answer = await read_all(reader)
        head, used = parse_response_head(answer)
        assert (head.status, answer[used:]) == (503, b"no backend")
        writer.close()


# ------------------------------------------------------------------ UDP ASSOCIATE (case 33)


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


async def test_udp_associate_round_trip_and_close():
    loop = asyncio.get_running_loop()
    echo4, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    echo6, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("::1", 0))
    port4 = echo4.get_extra_info("sockname")[1]
    port6 = echo6.get_extra_info("sockname")[1]
    dialer = RecordingDialer()
    async with ProxyFront(dialer, "127.0.0.1", 0) as front:
        reader, writer = await connect(front)
        writer.write(b"\x05\x01\x00" + socks5.build_request(socks5.CMD_UDP_ASSOCIATE, "0.0.0.0", 0))
        assert await read_exact(reader, 2) == b"\x05\x00"
        reply, _ = socks5.parse_reply(await read_exact(reader, 10))
        assert reply.reply == 0 and reply.host == "127.0.0.1" and reply.port > 0
        client, protocol = await loop.create_datagram_endpoint(UdpClient, local_addr=("127.0.0.1", 0))
        for host, port in (("127.0.0.1", port4), ("::1", port6)):
            client.sendto(socks5.build_udp_datagram(host, port, b"ping"), (reply.host, reply.port))
            data, source = await asyncio.wait_for(protocol.received.get(), TIMEOUT)
            assert source[:2] == (reply.host, reply.port)
            assert socks5.parse_udp_datagram(data) == socks5.UdpDatagram(host, port, b"echo:ping")
        garbage_then_valid = [b"\x00", socks5.build_udp_datagram("127.0.0.1", port4, b"after garbage", frag=1)]
        for packet in garbage_then_valid:
            client.sendto(packet, (reply.host, reply.port))
        data, _ = await asyncio.wait_for(protocol.received.get(), TIMEOUT)
        assert socks5.parse_udp_datagram(data).data == b"echo:after garbage"  # FRAG ignored
        assert front.active == 1
        writer.close()  # closing the control connection ends the association
        await asyncio.wait_for(dialer.association_closed.wait(), TIMEOUT)
        await wait_until(lambda: front.active == 0)
        client.close()
    echo4.close()
    echo6.close()



async def test_wire_values_are_escaped_in_logs(caplog):
    """#6 item 11: a target name with a terminal escape and a newline cannot forge or colour a log line."""
    evil = "x\x1b[31m\nFORGED"
    async with ProxyFront(FailingDialer(ProxyError(0x04, f"dial tcp: lookup {evil}: no such host")), "127.0.0.1", 0) as front:
        with caplog.at_level(logging.DEBUG, logger="hatchway.common.proxyfront"):
            _, writer, reply = await socks_connect(front, evil, 80)
            assert reply == 0x04
            writer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "hatchway.common.proxyfront"]
    assert any("x\\x1b[31m\\nFORGED" in line for line in lines), lines
    assert not any("\x1b" in line or "\n" in line for line in lines)


async def test_http_request_hook_and_refusal_hook():
    """The sidecar's hooks: an access-log callback per HTTP request, and its own answer for a failed dial."""
    seen = []

    def hook(client, request):
        seen.append((request.head.method, request.host, request.port))
        raise RuntimeError("a broken hook does not break the connection")

    def refusal(request, error):
        return b"HTTP/1.1 502 Bad Gateway\r\n\r\n" if request.tunnel else b"HTTP/1.1 502 Bad Gateway\r\n\r\nProxy Error: " + error.message.encode()

    dialer = FailingDialer(ProxyError(0x05, "connection refused"))
    async with ProxyFront(dialer, "127.0.0.1", 0, on_http_request=hook, http_refusal=refusal) as front:
        for raw, answer in [
            (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 502 Bad Gateway\r\n\r\n"),
            (b"GET http://example.com/x HTTP/1.1\r\n\r\n", b"HTTP/1.1 502 Bad Gateway\r\n\r\nProxy Error: connection refused"),
        ]:
            reader, writer = await connect(front)
            writer.write(raw)
            assert await read_all(reader) == answer
            writer.close()
    assert seen == [("CONNECT", "example.com", 443), ("GET", "example.com", 80)]
