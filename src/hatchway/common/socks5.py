"""SOCKS5 wire codec (RFC 1928, RFC 1929 username/password), sans-I/O.

Pure functions from bytes to :mod:`msgspec` Structs and back, plus two small
state machines that drive a whole negotiation without doing any I/O:

* :class:`ServerNegotiation` - the proxy side: greeting, method selection,
  optional username/password check, request. Feed it what the client sent,
  send what :meth:`~ServerNegotiation.data_to_send` returns.
* :class:`ClientNegotiation` - the client side (dialing through an upstream
  SOCKS5 proxy).

Every ``parse_*`` function takes a buffer (``bytes``, ``bytearray`` or
``memoryview``) that starts at the message and returns ``(message, consumed)``,
or ``None`` when the buffer does not yet hold a whole message - so a peer that
sends one byte at a time works. Malformed input raises :class:`Socks5Error`,
and nothing else: its ``reply`` is the reply code a server should answer with.
Hosts are text: dotted IPv4, compressed IPv6 (``::1``), or a domain name
(decoded as UTF-8 with ``surrogateescape``, so any byte string round-trips).
"""

from __future__ import annotations

import enum
import socket
import struct

import msgspec

VERSION = 0x05
USERPASS_VERSION = 0x01

METHOD_NO_AUTH = 0x00
METHOD_GSSAPI = 0x01
METHOD_USERPASS = 0x02
METHOD_NO_ACCEPTABLE = 0xFF

CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04


class Rep(enum.IntEnum):
    """Reply codes of RFC 1928 section 6."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


REPLY_TEXT = {
    Rep.SUCCEEDED: "succeeded",
    Rep.GENERAL_FAILURE: "general SOCKS server failure",
    Rep.NOT_ALLOWED: "connection not allowed by ruleset",
    Rep.NETWORK_UNREACHABLE: "network unreachable",
    Rep.HOST_UNREACHABLE: "host unreachable",
    Rep.CONNECTION_REFUSED: "connection refused",
    Rep.TTL_EXPIRED: "TTL expired",
    Rep.COMMAND_NOT_SUPPORTED: "command not supported",
    Rep.ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}


def reply_text(code: int) -> str:
    try:
        return REPLY_TEXT[Rep(code)]
    except ValueError:
        return f"unknown reply code {code}"


class Socks5Error(Exception):
    """Malformed or unacceptable SOCKS5 input; ``reply`` is the code to answer with."""

    def __init__(self, message: str, reply: int = Rep.GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


# --------------------------------------------------------------- messages


class Greeting(msgspec.Struct, frozen=True):
    """Client -> server: VER NMETHODS METHODS."""

    methods: bytes


class MethodSelection(msgspec.Struct, frozen=True):
    """Server -> client: VER METHOD."""

    method: int


class UserPassAuth(msgspec.Struct, frozen=True):
    """Client -> server (RFC 1929): VER ULEN UNAME PLEN PASSWD."""

    username: str
    password: str


class UserPassStatus(msgspec.Struct, frozen=True):
    """Server -> client (RFC 1929): VER STATUS; status 0 is success."""

    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0


class Request(msgspec.Struct, frozen=True):
    """Client -> server: VER CMD RSV ATYP DST.ADDR DST.PORT."""

    command: int
    host: str
    port: int


class Reply(msgspec.Struct, frozen=True):
    """Server -> client: VER REP RSV ATYP BND.ADDR BND.PORT."""

    reply: int
    host: str = "0.0.0.0"
    port: int = 0


class UdpDatagram(msgspec.Struct, frozen=True):
    """A UDP ASSOCIATE datagram: RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA."""

    host: str
    port: int
    data: bytes
    frag: int = 0


Buffer = bytes | bytearray | memoryview

# --------------------------------------------------------------- addresses


def _text(raw: Buffer) -> str:
    return bytes(raw).decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise Socks5Error(f"cannot encode {text!r}: {exc.reason}") from None


def parse_address(buf: Buffer, offset: int) -> tuple[str, int, int] | None:
    """Parse ATYP DST.ADDR DST.PORT at ``offset``: ``(host, port, end)`` or None (need more)."""
    if len(buf) <= offset:
        return None
    atyp = buf[offset]
    start = offset + 1
    if atyp == ATYP_IPV4:
        end = start + 4
        if len(buf) < end + 2:
            return None
        host = socket.inet_ntop(socket.AF_INET, bytes(buf[start:end]))
    elif atyp == ATYP_IPV6:
        end = start + 16
        if len(buf) < end + 2:
            return None
        host = socket.inet_ntop(socket.AF_INET6, bytes(buf[start:end]))
    elif atyp == ATYP_DOMAIN:
        if len(buf) <= start:
            return None
        length = buf[start]
        if length == 0:
            raise Socks5Error("empty domain name", Rep.GENERAL_FAILURE)
        start += 1
        end = start + length
        if len(buf) < end + 2:
            return None
        host = _text(buf[start:end])
    else:
        raise Socks5Error(f"unsupported address type {atyp}", Rep.ADDRESS_TYPE_NOT_SUPPORTED)
    port = (buf[end] << 8) | buf[end + 1]
    return host, port, end + 2


def address_type(host: str) -> int:
    """The ATYP that ``host`` is sent with: IPv4 and IPv6 literals, else a domain name."""
    for family, atyp in ((socket.AF_INET, ATYP_IPV4), (socket.AF_INET6, ATYP_IPV6)):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return atyp
    return ATYP_DOMAIN


def build_address(host: str, port: int) -> bytes:
    """ATYP DST.ADDR DST.PORT for a host (IP literal or domain name)."""
    if not 0 <= port <= 0xFFFF:
        raise Socks5Error(f"port {port} out of range")
    atyp = address_type(host)
    if atyp == ATYP_IPV4:
        raw = socket.inet_pton(socket.AF_INET, host)
        return bytes((ATYP_IPV4,)) + raw + struct.pack("!H", port)
    if atyp == ATYP_IPV6:
        raw = socket.inet_pton(socket.AF_INET6, host)
        return bytes((ATYP_IPV6,)) + raw + struct.pack("!H", port)
    name = _raw(host)
    if not 1 <= len(name) <= 255:
        raise Socks5Error(f"domain name must be 1..255 bytes, got {len(name)}")
    return bytes((ATYP_DOMAIN, len(name))) + name + struct.pack("!H", port)


# --------------------------------------------------------------- greeting / method


def parse_greeting(buf: Buffer) -> tuple[Greeting, int] | None:
    if len(buf) < 2:
        return None
    if buf[0] != VERSION:
        raise Socks5Error(f"unsupported SOCKS version {buf[0]}")
    count = buf[1]
    if count == 0:
        raise Socks5Error("no authentication methods offered")
    if len(buf) < 2 + count:
        return None
    return Greeting(bytes(buf[2 : 2 + count])), 2 + count


def build_greeting(methods: bytes | list[int] | tuple[int, ...]) -> bytes:
    methods = bytes(methods)
    if not 1 <= len(methods) <= 255:
        raise Socks5Error("a greeting offers 1..255 methods")
    return bytes((VERSION, len(methods))) + methods


def _parse_two_bytes(buf: Buffer, version: int, what: str) -> int | None:
    """VER VALUE: the shape the method selection and the username/password status share."""
    if len(buf) < 2:
        return None
    if buf[0] != version:
        raise Socks5Error(f"unsupported {what} version {buf[0]}")
    return buf[1]


def parse_method_selection(buf: Buffer) -> tuple[MethodSelection, int] | None:
    method = _parse_two_bytes(buf, VERSION, "SOCKS")
    return None if method is None else (MethodSelection(method), 2)


def build_method_selection(method: int) -> bytes:
    return bytes((VERSION, method))


# --------------------------------------------------------------- RFC 1929


def parse_userpass(buf: Buffer) -> tuple[UserPassAuth, int] | None:
    if len(buf) < 2:
        return None
    if buf[0] != USERPASS_VERSION:
        raise Socks5Error(f"unsupported username/password version {buf[0]}")
    ulen = buf[1]
    if len(buf) < 3 + ulen:
        return None
    plen = buf[2 + ulen]
    end = 3 + ulen + plen
    if len(buf) < end:
        return None
    return UserPassAuth(_text(buf[2 : 2 + ulen]), _text(buf[3 + ulen : end])), end


def build_userpass(username: str, password: str) -> bytes:
    user = _raw(username)
    pw = _raw(password)
    if len(user) > 255 or len(pw) > 255:
        raise Socks5Error("username and password are at most 255 bytes each")
    return bytes((USERPASS_VERSION, len(user))) + user + bytes((len(pw),)) + pw


def parse_userpass_status(buf: Buffer) -> tuple[UserPassStatus, int] | None:
    status = _parse_two_bytes(buf, USERPASS_VERSION, "username/password")
    return None if status is None else (UserPassStatus(status), 2)


def build_userpass_status(ok: bool) -> bytes:
    return bytes((USERPASS_VERSION, 0x00 if ok else 0x01))


# --------------------------------------------------------------- request / reply


def _parse_command_frame(buf: Buffer, what: str) -> tuple[int, str, int, int] | None:
    """VER CMD/REP RSV ATYP ADDR PORT: the shape requests and replies share."""
    if len(buf) < 4:
        return None
    if buf[0] != VERSION:
        raise Socks5Error(f"unsupported SOCKS version {buf[0]} in {what}")
    parsed = parse_address(buf, 3)
    if parsed is None:
        return None
    host, port, end = parsed
    return buf[1], host, port, end


def parse_request(buf: Buffer) -> tuple[Request, int] | None:
    frame = _parse_command_frame(buf, "request")
    if frame is None:
        return None
    command, host, port, end = frame
    return Request(command, host, port), end


def build_request(command: int, host: str, port: int) -> bytes:
    return bytes((VERSION, command, 0x00)) + build_address(host, port)


def parse_reply(buf: Buffer) -> tuple[Reply, int] | None:
    frame = _parse_command_frame(buf, "reply")
    if frame is None:
        return None
    reply, host, port, end = frame
    return Reply(reply, host, port), end


def build_reply(reply: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    return bytes((VERSION, reply, 0x00)) + build_address(host, port)


# --------------------------------------------------------------- UDP


def parse_udp_datagram(buf: Buffer) -> UdpDatagram:
    """A whole datagram (UDP keeps message boundaries, so there is no "need more")."""
    if len(buf) < 4:
        raise Socks5Error("UDP datagram too short")
    if buf[0] != 0 or buf[1] != 0:
        raise Socks5Error("UDP datagram reserved bytes are not zero")
    parsed = parse_address(buf, 3)
    if parsed is None:
        raise Socks5Error("UDP datagram header truncated")
    host, port, end = parsed
    return UdpDatagram(host, port, bytes(buf[end:]), buf[2])


def build_udp_datagram(host: str, port: int, data: Buffer, frag: int = 0) -> bytes:
    return b"".join((bytes((0, 0, frag)), build_address(host, port), data))


# --------------------------------------------------------------- server negotiation


class Phase(enum.Enum):
    GREETING = "greeting"
    AUTH = "auth"
    REQUEST = "request"
    DONE = "done"  # request parsed: the caller answers it with build_reply
    FAILED = "failed"  # send data_to_send(), then close


class _Negotiation:
    """What both sides of the handshake share: bytes in, ``_step()`` until it needs more, bytes out."""

    def __init__(self) -> None:
        self.phase = Phase.GREETING
        self.error: Socks5Error | None = None
        self._buffer = bytearray()
        self._out = bytearray()

    @property
    def leftover(self) -> bytes:
        return bytes(self._buffer) if self.phase is Phase.DONE else b""

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive_data(self, data: Buffer) -> None:
        self._buffer += data
        if self.phase in (Phase.DONE, Phase.FAILED):
            return
        try:
            while self._step():
                pass
        except Socks5Error as exc:
            self._fail(exc)

    def _fail(self, exc: Socks5Error) -> None:
        self.error = exc
        self.phase = Phase.FAILED

    def _step(self) -> bool:
        """Handle one message from the buffer; False when it needs more bytes or the phase is final."""
        raise NotImplementedError


class ServerNegotiation(_Negotiation):
    """The proxy side of a SOCKS5 handshake, up to and including the request.

    With both ``username`` and ``password`` set, method 0x02 is required
    (0xFF when the client does not offer it); otherwise method 0x00 is
    required. Credentials are compared in constant time.

    After :meth:`receive_data`: send :meth:`data_to_send`; then look at
    ``phase``: DONE means ``request`` is set and ``leftover`` holds bytes the
    client sent after it; FAILED means close after sending (``error`` says
    why). A malformed request yields the failure reply itself
    (0x01, or 0x08 for an unknown address type).
    """

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        super().__init__()
        self._credentials = None
        if username and password:
            self._credentials = (_raw(username), _raw(password))
        self.request: Request | None = None
        self.username: str | None = None

    def _fail(self, exc: Socks5Error, answer: bytes | None = None) -> None:
        super()._fail(exc)
        if answer is None:
            answer = build_reply(exc.reply) if exc.reply else b""
        self._out += answer

    def _consume(self, parsed: tuple[object, int] | None) -> object | None:
        if parsed is None:
            return None
        message, used = parsed
        del self._buffer[:used]
        return message

    def _step(self) -> bool:
        if self.phase is Phase.GREETING:
            return self._on_greeting()
        if self.phase is Phase.AUTH:
            return self._on_auth()
        if self.phase is Phase.REQUEST:
            return self._on_request()
        return False

    def _on_greeting(self) -> bool:
        greeting = self._consume(parse_greeting(self._buffer))
        if greeting is None:
            return False
        assert isinstance(greeting, Greeting)
        wanted = METHOD_NO_AUTH if self._credentials is None else METHOD_USERPASS
        if wanted not in greeting.methods:
            self._fail(Socks5Error("no acceptable authentication method"), build_method_selection(METHOD_NO_ACCEPTABLE))
            return False
        self._out += build_method_selection(wanted)
        self.phase = Phase.AUTH if wanted == METHOD_USERPASS else Phase.REQUEST
        return True

    def _on_auth(self) -> bool:
        try:
            auth = self._consume(parse_userpass(self._buffer))
        except Socks5Error as exc:
            self._fail(exc, build_userpass_status(False))
            return False
        if auth is None:
            return False
        assert isinstance(auth, UserPassAuth) and self._credentials is not None
        import hmac  # only when credentials are checked: hmac imports hashlib/OpenSSL digests (~0.9 MiB RSS)

        user_ok = hmac.compare_digest(_raw(auth.username), self._credentials[0])
        pass_ok = hmac.compare_digest(_raw(auth.password), self._credentials[1])
        if not (user_ok and pass_ok):
            self._fail(Socks5Error("authentication failed"), build_userpass_status(False))
            return False
        self.username = auth.username
        self._out += build_userpass_status(True)
        self.phase = Phase.REQUEST
        return True

    def _on_request(self) -> bool:
        request = self._consume(parse_request(self._buffer))
        if request is None:
            return False
        assert isinstance(request, Request)
        self.request = request
        self.phase = Phase.DONE
        return False


# --------------------------------------------------------------- client negotiation


class ClientNegotiation(_Negotiation):
    """The client side: dial ``host:port`` through a SOCKS5 proxy.

    Send :meth:`initial` first, then for every chunk received call
    :meth:`receive_data` and send :meth:`data_to_send`. ``phase`` becomes DONE
    (``reply`` is the success reply, ``leftover`` holds bytes the target sent
    right after it) or FAILED (``error`` says why; its ``reply`` is the proxy's
    reply code, or 0x01 for a negotiation failure).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        command: int = CMD_CONNECT,
    ) -> None:
        super().__init__()
        self._request = build_request(command, host, port)
        self._auth = build_userpass(username, password) if username and password else None
        self.reply: Reply | None = None

    def initial(self) -> bytes:
        return build_greeting((METHOD_USERPASS,) if self._auth else (METHOD_NO_AUTH,))

    @property
    def done(self) -> bool:
        """The proxy accepted the request (``phase`` is DONE)."""
        return self.phase is Phase.DONE

    def _step(self) -> bool:
        if self.phase is Phase.GREETING:
            parsed = parse_method_selection(self._buffer)
            if parsed is None:
                return False
            del self._buffer[: parsed[1]]
            method = parsed[0].method
            if method == METHOD_USERPASS and self._auth is not None:
                self._out += self._auth
                self.phase = Phase.AUTH
            elif method == METHOD_NO_AUTH:
                self._out += self._request
                self.phase = Phase.REQUEST
            else:
                raise Socks5Error(f"unsupported auth method: {method}")
            return True
        if self.phase is Phase.AUTH:
            parsed_status = parse_userpass_status(self._buffer)
            if parsed_status is None:
                return False
            del self._buffer[: parsed_status[1]]
            if not parsed_status[0].ok:
                raise Socks5Error("authentication failed")
            self._out += self._request
            self.phase = Phase.REQUEST
            return True
        if self.phase is Phase.REQUEST:
            parsed_reply = parse_reply(self._buffer)
            if parsed_reply is None:
                return False
            del self._buffer[: parsed_reply[1]]
            reply = parsed_reply[0]
            if reply.reply != Rep.SUCCEEDED:
                raise Socks5Error(f"connection failed: {reply.reply}", reply.reply)
            self.reply = reply
            self.phase = Phase.DONE
        return False
