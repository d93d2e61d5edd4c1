"""The status API (``-statusport``): ``/health`` and ``/status`` on 127.0.0.1, any method, Go's exact bytes.

* ``/health``: 200 ``text/plain; charset=utf-8``, body ``OK`` (no newline).
* ``/status``: 200 ``application/json``, compact JSON plus ``\\n``; 500
  ``failed to get status: <err>`` when the backend cannot say.
* anything else: Go's ``404 page not found``.

Two endpoints do not need aiohttp's server (about 4.5 MB of an idle sidecar's RSS and 40 ms of its start, with
arkitekt-gateway's wrapper passing ``-statusport`` by default). :class:`StatusRequests` is the HTTP/1.x request
side, sans-I/O on common's head reader (bytes in, requests out: heads, bodies skipped, pipelining, keep-alive
rules); :class:`StatusServer` is its thin asyncio driver: one request at a time per connection, a head timeout, an
idle timeout and a cap on connections, headers as Go's net/http writes them (sorted, with ``Date``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import cast

import msgspec

from ..common.httpproxy import HEAD_LIMIT, HeadReader, HttpProxyError, RequestHead, parse_request_head
from ..common.lifecycle import Service
from ..common.listen import bound_socket
from ..common.tasks import TaskSet
from .backend import Backend

__all__ = ["HEAD_TIMEOUT", "IDLE_TIMEOUT", "MAX_CONNECTIONS", "Request", "StatusRequests", "StatusServer",
           "answer", "status_server"]

HEAD_TIMEOUT = 10.0  # a request head must be complete this long after its first byte is awaited
IDLE_TIMEOUT = 75.0  # a kept-alive connection with no request
MAX_CONNECTIONS = 256  # loopback only; beyond this a new connection is closed at once

_TEXT = "text/plain; charset=utf-8"


class Request(msgspec.Struct, frozen=True):
    method: str
    path: str
    keep_alive: bool


class StatusRequests:
    """Requests out of a connection's bytes (sans-I/O). ``feed`` returns the complete requests in order; a
    malformed head raises :class:`HttpProxyError` (answer it and close). A request's body (Content-Length) is
    read and dropped; a chunked body is refused (501), as nothing here takes one."""

    def __init__(self, limit: int = HEAD_LIMIT) -> None:
        self.limit = limit
        self._reader = HeadReader(limit)
        self._skip = 0  # body bytes still to drop
        self._pending: Request | None = None  # its head is read, its body not yet
        self._partial = False  # some bytes of the next head are in

    @property
    def mid_request(self) -> bool:
        """Some bytes of a request are in (a head under way or a body being dropped)."""
        return self._pending is not None or self._partial

    def feed(self, data: bytes) -> list[Request]:
        out: list[Request] = []
        while data:
            if self._pending is not None:
                take = min(self._skip, len(data))
                self._skip -= take
                data = data[take:]
                if self._skip:
                    break
                out.append(self._pending)
                self._pending = None
                continue
            raw = self._reader.feed(data)
            self._partial = raw is None
            if raw is None:
                break
            data = self._reader.leftover
            self._reader = HeadReader(self.limit)
            head = parse_request_head(raw)
            request, self._skip = _request(head)
            if self._skip:
                self._pending = request
            else:
                out.append(request)
        return out


def _request(head: RequestHead) -> tuple[Request, int]:
    if head.get("Transfer-Encoding") is not None:
        raise HttpProxyError(501, "chunked request bodies are not supported")
    length = head.get("Content-Length")
    size = 0
    if length is not None:
        if not (length.isascii() and length.isdigit()):  # "²".isdigit() is True, int("²") fails
            raise HttpProxyError(400, "bad Content-Length")
        size = int(length)
    target = head.target
    if target.startswith(("http://", "https://")):  # absolute-form: the path after the authority
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    path = target.split("?", 1)[0].split("#", 1)[0]
    tokens = {t.strip().lower() for t in (head.get("Connection") or "").split(",")}
    keep = "keep-alive" in tokens if head.version == "HTTP/1.0" else "close" not in tokens
    return Request(head.method.upper(), path, keep), size


def http_date(now: float | None = None) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))


def response_bytes(request: Request | None, status: int, body: bytes, content_type: str, *, nosniff: bool = False,
                   close: bool = False) -> bytes:
    """A response as Go's net/http writes it: headers sorted, ``Date``, no body for HEAD."""
    headers = [("Content-Length", str(len(body))), ("Content-Type", content_type), ("Date", http_date())]
    if nosniff:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if close:
        headers.insert(0, ("Connection", "close"))
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if request is not None and request.method == "HEAD" else head + body


async def answer(backend: Backend, request: Request) -> bytes:
    """The response to one request (keep-alive as the request asked)."""
    close = not request.keep_alive
    if request.path == "/health":
        return response_bytes(request, 200, b"OK", _TEXT, close=close)
    if request.path == "/status":
        try:
            status = await backend.status()
        except Exception as exc:
            return response_bytes(request, 500, f"failed to get status: {exc}\n".encode(), _TEXT, nosniff=True,
                                  close=close)
        return response_bytes(request, 200, status.encode(), "application/json", close=close)
    return response_bytes(request, 404, b"404 page not found\n", _TEXT, nosniff=True, close=close)


class _Connection(asyncio.Protocol):
    def __init__(self, server: StatusServer) -> None:
        self.server = server
        self.requests = StatusRequests()
        self.queue: list[Request] = []
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.eof = False  # the client has finished sending: answer what it asked, then close
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport
        if len(self.server.connections) >= MAX_CONNECTIONS:
            transport.abort()
            return
        self.server.connections.add(self)
        self._arm(HEAD_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        try:
            self.queue += self.requests.feed(data)
        except HttpProxyError as exc:
            self._fail(exc)
            return
        if self.requests.mid_request:
            self._arm(HEAD_TIMEOUT)
        self._next()

    def eof_received(self) -> bool:
        self.eof = True
        return self.busy or bool(self.queue)  # keep the write side open to answer what was asked

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._disarm()
        self.transport = None

    def _next(self) -> None:
        if self.busy or not self.queue or self.transport is None:
            return
        self.busy = True
        self._disarm()
        self.transport.pause_reading()  # one request at a time: pipelined ones wait in the queue
        self.server.tasks.spawn(self._serve(self.queue.pop(0)), name="status request")

    async def _serve(self, request: Request) -> None:
        data = await answer(self.server.backend, request)
        transport = self.transport
        self.busy = False
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if not request.keep_alive or (self.eof and not self.queue):
            transport.close()
            return
        if self.queue:
            self._next()
            return
        transport.resume_reading()
        self._arm(HEAD_TIMEOUT if self.requests.mid_request else IDLE_TIMEOUT)

    def _fail(self, exc: HttpProxyError) -> None:
        if self.transport is not None:
            body = f"{exc.status} {exc.message}\n".encode()
            self.transport.write(response_bytes(None, exc.status, body, _TEXT, nosniff=True, close=True))
            self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.transport is not None and not self.busy:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class StatusServer(Service):
    """The status API on ``host:port`` (an IP literal); ``addresses`` holds the bound ``(host, port)``."""

    def __init__(self, backend: Backend, host: str, port: int) -> None:
        self.backend = backend
        self.host, self.port = host, port
        self.addresses: list[tuple[str, int]] = []
        self.connections: set[_Connection] = set()
        self.tasks = TaskSet("status API")
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = bound_socket(self.host, self.port)
        factory: Callable[[], asyncio.Protocol] = lambda: _Connection(self)  # noqa: E731
        if sock is None:
            self._server = await loop.create_server(factory, self.host, self.port)
        else:
            self._server = await loop.create_server(factory, sock=sock)
        bound = self._server.sockets[0].getsockname()
        self.addresses = [(str(bound[0]), int(bound[1]))]

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self.connections):
            connection.abort()
        await self.tasks.aclose()
        if server is not None:
            await server.wait_closed()


def status_server(backend: Backend, port: int) -> StatusServer:
    """The status API server on ``127.0.0.1:port`` (not started)."""
    return StatusServer(backend, "127.0.0.1", port)
