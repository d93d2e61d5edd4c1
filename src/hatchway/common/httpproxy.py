"""HTTP proxy requests and responses (RFC 9110/9112), sans-I/O.

The proxy side: :class:`HeadReader` collects a request head incrementally
(at most :data:`HEAD_LIMIT` bytes, else 431), :func:`parse_request_head`
turns it into a :class:`RequestHead`, :func:`proxy_target` tells a
``CONNECT host:port`` tunnel from an absolute-form ``http://`` request
(``https://`` and origin-form get 400), :func:`origin_request` rewrites the
latter for the origin server, and the ``*_response`` builders produce the
proxy's own answers.

Forwarding model: the front end sends the rewritten head to the origin, then
relays every following byte raw in both directions. So the hop-by-hop headers
are removed, but the body framing headers (``Content-Length``,
``Transfer-Encoding``) are kept even though RFC 9110 lists
``Transfer-Encoding`` as hop-by-hop: the body goes out exactly as it came in,
so its framing must go with it. ``Connection: close`` makes the origin end the
exchange after one response.

:class:`ServerNegotiation` is all of that as one sans-I/O object (head, auth,
407, classification), the twin of ``socks5.ServerNegotiation``.

The client side (dialing through an upstream HTTP proxy):
:func:`build_connect` and :class:`ConnectNegotiation`.

Malformed input raises :class:`HttpProxyError` (``status`` is the answer to
send) and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import enum
import http
import re

import msgspec

HEAD_LIMIT = 64 * 1024
CONNECT_DEFAULT_PORT = 443
HTTP_DEFAULT_PORT = 80

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"

# Removed before forwarding (compared lower-case); every "proxy-*" header goes too.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te", "trailer", "trailers", "upgrade"}
)
# Never removed, even when Connection names them: the body is relayed raw.
BODY_FRAMING = frozenset({"content-length", "transfer-encoding"})

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[0-9]")
_STATUS_LINE = re.compile(rb"(HTTP/[0-9]\.[0-9]) ([0-9]{3})(?: (.*))?")


class HttpProxyError(Exception):
    """A request the proxy cannot serve; answer with ``status`` and the message as the body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHead(msgspec.Struct, frozen=True):
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The first value of a header (case-insensitive), or None."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None


class ProxyRequest(msgspec.Struct, frozen=True):
    """What the client asked for: a tunnel (CONNECT) or one forwarded http:// request."""

    head: RequestHead
    host: str
    port: int
    tunnel: bool
    path: str = ""  # origin-form target (forwarded requests)


class ResponseHead(msgspec.Struct, frozen=True):
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]

    @property
    def status_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}".rstrip()


Buffer = bytes | bytearray | memoryview

# --------------------------------------------------------------- head framing


def find_head_end(buf: Buffer, start: int = 0) -> int | None:
    """Index just past the blank line that ends a head (CRLF or bare LF), or None."""
    if isinstance(buf, memoryview):
        buf = bytes(buf)
    pos = start
    while (lf := buf.find(b"\n", pos)) >= 0:
        nxt = lf + 1
        if buf[nxt : nxt + 1] == b"\n":
            return nxt + 1
        if buf[nxt : nxt + 2] == b"\r\n":
            return nxt + 2
        pos = nxt
    return None


class HeadReader:
    """Collects one head from a byte stream; ``leftover`` is what followed it."""

    def __init__(self, limit: int = HEAD_LIMIT) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._scanned = 0
        self.head: bytes | None = None

    @property
    def leftover(self) -> bytes:
        return bytes(self._buffer) if self.head is not None else b""

    def feed(self, data: Buffer) -> bytes | None:
        """Add bytes; return the complete raw head once it is there (raises 431 when too large)."""
        if self.head is not None:
            self._buffer += data
            return self.head
        self._buffer += data
        end = find_head_end(self._buffer, max(0, self._scanned - 2))
        if end is None:
            if len(self._buffer) > self.limit:
                raise HttpProxyError(431, "Request Header Fields Too Large")
            self._scanned = len(self._buffer)
            return None
        if end > self.limit:
            raise HttpProxyError(431, "Request Header Fields Too Large")
        self.head = bytes(self._buffer[:end])
        del self._buffer[:end]
        return self.head


# --------------------------------------------------------------- parsing


def _lines(raw: bytes) -> list[bytes]:
    lines = raw.split(b"\n")
    while lines and lines[-1] in (b"", b"\r"):
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpProxyError(400, "obsolete header line folding")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpProxyError(400, "malformed header line")
        value = value.strip(b" \t")
        if b"\r" in value or b"\x00" in value or b"\n" in value:
            raise HttpProxyError(400, "invalid character in header value")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return headers


def parse_request_head(raw: bytes) -> RequestHead:
    lines = _lines(raw)
    if not lines:
        raise HttpProxyError(400, "empty request")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[1]:
        raise HttpProxyError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpProxyError(400, "malformed request method")
    if not _VERSION.fullmatch(version):
        raise HttpProxyError(400, "unsupported HTTP version")
    if any(byte < 0x21 or byte == 0x7F for byte in target):
        raise HttpProxyError(400, "malformed request target")
    return RequestHead(method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), _parse_headers(lines[1:]))


def parse_response_head(buf: Buffer, limit: int = HEAD_LIMIT) -> tuple[ResponseHead, int] | None:
    """A response head at the start of ``buf``: ``(head, consumed)`` or None (need more)."""
    end = find_head_end(buf)
    if end is None:
        if len(buf) > limit:
            raise HttpProxyError(502, "response head too large")
        return None
    lines = _lines(bytes(buf[:end]))
    match = _STATUS_LINE.fullmatch(lines[0]) if lines else None
    if match is None:
        raise HttpProxyError(502, "malformed response status line")
    version, status, reason = match.groups()
    try:
        headers = _parse_headers(lines[1:])
    except HttpProxyError as exc:
        raise HttpProxyError(502, f"malformed response: {exc.message}") from None
    head = ResponseHead(version.decode("ascii"), int(status), (reason or b"").decode("latin-1"), headers)
    return head, end


# --------------------------------------------------------------- targets


def split_host_port(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default port) a bare host, as (host, port)."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise HttpProxyError(400, f"invalid target {authority!r}")
        host, rest = authority[1:close], authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise HttpProxyError(400, f"invalid target {authority!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.rpartition(":")
        if not colon:
            host, port_text = authority, None
        elif ":" in host:
            raise HttpProxyError(400, f"invalid target {authority!r}")
    if not host:
        raise HttpProxyError(400, f"invalid target {authority!r}")
    if port_text is None or port_text == "":
        if default_port is None or port_text == "":
            raise HttpProxyError(400, f"missing port in target {authority!r}")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) <= 0xFFFF:
        raise HttpProxyError(400, f"invalid port in target {authority!r}")
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_target(head: RequestHead) -> ProxyRequest:
    """Classify a proxy request; raises HttpProxyError(400) for what a proxy does not serve."""
    if head.method == "CONNECT":
        host, port = split_host_port(head.target, CONNECT_DEFAULT_PORT)
        return ProxyRequest(head, host, port, tunnel=True)
    scheme, sep, rest = head.target.partition("://")
    if not sep:
        raise HttpProxyError(400, "Absolute-form request URL required")
    scheme = scheme.lower()
    if scheme == "https":
        raise HttpProxyError(400, "Use CONNECT for HTTPS targets")
    if scheme != "http":
        raise HttpProxyError(400, f"unsupported URL scheme {scheme!r}")
    slash = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:slash], rest[slash:]
    authority = authority.rpartition("@")[2]  # drop userinfo
    path = path.partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    host, port = split_host_port(authority, HTTP_DEFAULT_PORT)
    return ProxyRequest(head, host, port, tunnel=False, path=path)


# --------------------------------------------------------------- authentication


def authorized(head: RequestHead, username: str, password: str) -> bool:
    """Does ``Proxy-Authorization: Basic`` carry exactly these credentials? (constant time)"""
    value = head.get("Proxy-Authorization")
    if value is None:
        return False
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, colon, secret = decoded.partition(b":")
    import hmac  # only when credentials are checked: hmac imports hashlib/OpenSSL digests (~0.9 MiB RSS)

    user_ok = hmac.compare_digest(user, username.encode("utf-8"))
    pass_ok = hmac.compare_digest(secret, password.encode("utf-8"))
    return bool(colon) and user_ok and pass_ok


def basic_credentials(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


# --------------------------------------------------------------- server negotiation


class Phase(enum.Enum):
    HEAD = "head"  # reading the request head
    DONE = "done"  # ``request`` is set; the caller dials and answers
    FAILED = "failed"  # send data_to_send(), then close


class ServerNegotiation:
    """The proxy side of an HTTP proxy request, sans-I/O (the twin of ``socks5.ServerNegotiation``).

    Feed client bytes to :meth:`receive_data`, send :meth:`data_to_send`,
    then look at ``phase``: DONE means ``request`` is a classified
    :class:`ProxyRequest` (CONNECT tunnel or absolute-form ``http://``) and
    ``leftover`` holds the bytes that followed the head; FAILED means close
    after sending (the answer is 400, 407 with ``Proxy-Authenticate: Basic
    realm=...``, or 431; ``error`` says why). With both ``username`` and
    ``password`` set, ``Proxy-Authorization: Basic`` must carry them
    (compared in constant time).
    """

    def __init__(
        self, username: str | None = None, password: str | None = None, *, realm: str = "proxy", limit: int = HEAD_LIMIT
    ) -> None:
        self._credentials = (username, password) if username and password else None
        self.realm = realm
        self._reader = HeadReader(limit)
        self.phase = Phase.HEAD
        self.request: ProxyRequest | None = None
        self.error: HttpProxyError | None = None
        self._out = b""

    @property
    def leftover(self) -> bytes:
        return self._reader.leftover if self.phase is Phase.DONE else b""

    def data_to_send(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def receive_data(self, data: Buffer) -> None:
        if self.phase is not Phase.HEAD:
            if self.phase is Phase.DONE:
                self._reader.feed(data)
            return
        try:
            raw = self._reader.feed(data)
            if raw is None:
                return
            head = parse_request_head(raw)
            if self._credentials is not None and not authorized(head, *self._credentials):
                self._fail(HttpProxyError(407, "Proxy authentication required"), auth_required_response(self.realm))
                return
            self.request = proxy_target(head)
        except HttpProxyError as exc:
            self._fail(exc, response(exc.status, exc.message))
            return
        self.phase = Phase.DONE

    def _fail(self, exc: HttpProxyError, answer: bytes) -> None:
        self.error = exc
        self.phase = Phase.FAILED
        self._out += answer


# --------------------------------------------------------------- forwarding


def forwarded_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers (and those Connection names), keeping body framing."""
    named: set[str] = set()
    for key, value in headers:
        if key.lower() in ("connection", "proxy-connection"):
            named.update(token.strip().lower() for token in value.split(","))
    drop = (HOP_BY_HOP | named) - BODY_FRAMING
    return [(k, v) for k, v in headers if k.lower() not in drop and not k.lower().startswith("proxy-")]


def origin_request(request: ProxyRequest) -> bytes:
    """The head to send to the origin: origin-form target, Host from the URL, ``Connection: close``."""
    head = request.head
    host = f"[{request.host}]" if ":" in request.host else request.host
    if request.port != HTTP_DEFAULT_PORT:
        host = f"{host}:{request.port}"
    lines = [f"{head.method} {request.path} {head.version}", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in forwarded_headers(head.headers) if k.lower() != "host"]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------- responses


def response(status: int, body: str = "", headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete plain-text response that ends the connection."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    payload = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers or ()]
    lines += ["Content-Type: text/plain; charset=utf-8", "Connection: close", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def error_response(status: int, message: str) -> bytes:
    return response(status, message)


def auth_required_response(realm: str) -> bytes:
    realm = realm.replace("\\", "\\\\").replace('"', '\\"')
    return response(407, "Proxy authentication required", [("Proxy-Authenticate", f'Basic realm="{realm}"')])


# --------------------------------------------------------------- client side


def build_connect(host: str, port: int, username: str | None = None, password: str | None = None) -> bytes:
    authority = join_host_port(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if username and password:
        lines.append(f"Proxy-Authorization: {basic_credentials(username, password)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class ConnectNegotiation:
    """The client side of ``CONNECT`` through an upstream HTTP proxy.

    Send :meth:`initial`; feed what the proxy sends to :meth:`receive_data`.
    ``done`` becomes true on a 2xx answer (``leftover`` holds the first target
    bytes); ``error`` is set on anything else.
    """

    def __init__(
        self, host: str, port: int, username: str | None = None, password: str | None = None, *,
        error_body_limit: int = 0,
    ) -> None:
        self._request = build_connect(host, port, username, password)
        self._buffer = bytearray()
        self.response: ResponseHead | None = None
        self.error: HttpProxyError | None = None
        self.done = False
        # > 0: a refusal with a Content-Length up to this size is read whole, and its body (the proxy's own
        # error text, e.g. arkitekt-mesh's "nosuch:80: no peer named nosuch on the mesh") becomes the message.
        self.error_body_limit = error_body_limit
        self._body_wanted = -1

    def initial(self) -> bytes:
        return self._request

    def data_to_send(self) -> bytes:
        return b""

    @property
    def leftover(self) -> bytes:
        return bytes(self._buffer) if self.done else b""

    def receive_data(self, data: Buffer) -> None:
        self._buffer += data
        if self.done or self.error is not None:
            return
        if self._body_wanted >= 0:
            self._finish_refusal()
            return
        try:
            parsed = parse_response_head(self._buffer)
        except HttpProxyError as exc:
            self.error = exc
            return
        if parsed is None:
            return
        head, used = parsed
        del self._buffer[:used]
        self.response = head
        if 200 <= head.status < 300:
            self.done = True
            return
        length = head_content_length(head) if self.error_body_limit > 0 else None
        if length is not None and 0 < length <= self.error_body_limit:
            self._body_wanted = length
            self._finish_refusal()
            return
        self.error = HttpProxyError(head.status, f"HTTP CONNECT failed: {head.status_line}")

    def _finish_refusal(self) -> None:
        if len(self._buffer) < self._body_wanted or self.response is None:
            return
        body = bytes(self._buffer[: self._body_wanted]).decode("utf-8", "replace").strip()
        del self._buffer[: self._body_wanted]
        head = self.response
        self.error = HttpProxyError(head.status, body or f"HTTP CONNECT failed: {head.status_line}")


def head_content_length(head: ResponseHead) -> int | None:
    """The Content-Length of a response head, or None (absent or not a number)."""
    for key, value in head.headers:
        if key.lower() == "content-length":
            return int(value) if value.strip().isdigit() else None
    return None

