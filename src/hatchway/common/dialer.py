"""Dialing targets: directly, or through an upstream SOCKS5 / HTTP CONNECT proxy.

:func:`open_tcp` is the one primitive: "connect to host:port (maybe through
the upstream proxy) and attach this protocol". It is what the front end's
dialers use, and what a program's dialing side (LinkSocks server in forward
mode, provider in reverse mode) uses without a front end. Failures raise
:class:`~.proxyfront.ProxyError` with a SOCKS5 reply code and the error text
Go's net package would print (``dial tcp 127.0.0.1:1: connect: connection
refused``), which LinkSocks peers show to their users.

Upstream URLs (linksocks.md section 14): ``socks5://user:pass@host:port``
(default port 1080) and ``http://user:pass@host:port`` (default port 8080,
``CONNECT`` with Basic auth). Only TCP goes through the upstream proxy; UDP
associations are direct, as upstream LinkSocks does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec

from . import httpproxy, socks5
from .neterr import go_dial_error
from .proxyfront import Dialer, ProxyError, UdpAssociation
from .relay import Pump

log = logging.getLogger("hatchway.dialer")

DIAL_TIMEOUT = 10.0
DEFAULT_PORTS = {"socks5": 1080, "http": 8080}

P = TypeVar("P", bound=asyncio.BaseProtocol)

# --------------------------------------------------------------- upstream URLs


class UpstreamProxy(msgspec.Struct, frozen=True):
    scheme: str  # "socks5" or "http"
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def address(self) -> str:
        return httpproxy.join_host_port(self.host, self.port)


def parse_upstream(url: str) -> UpstreamProxy:
    """``socks5://[user:pass@]host[:port]`` or ``http://…``; raises ValueError."""
    parts = urlsplit(url if "://" in url else f"socks5://{url}")
    scheme = parts.scheme.lower()
    if scheme in ("socks5h", "socks"):
        scheme = "socks5"
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported upstream proxy scheme {parts.scheme!r} (use socks5:// or http://)")
    if not parts.hostname:
        raise ValueError(f"upstream proxy URL {url!r} has no host")
    port = parts.port or DEFAULT_PORTS[scheme]  # .port raises ValueError when out of range
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return UpstreamProxy(scheme, parts.hostname, port, username, password)


# --------------------------------------------------------------- error texts and codes


def reply_for(exc: BaseException) -> int:
    """The SOCKS5 reply for a failed dial (RFC 1928 section 6)."""
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return socks5.Rep.CONNECTION_REFUSED
    if code == errno.ENETUNREACH:
        return socks5.Rep.NETWORK_UNREACHABLE
    return socks5.Rep.HOST_UNREACHABLE


def lookup_error_text(host: str, exc: socket.gaierror) -> str:
    """Go's resolver failure: ``dial tcp: lookup nosuch.example: no such host``."""
    if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
        reason = "no such host"
    else:
        reason = (exc.strerror or str(exc)).lower()
    return f"dial tcp: lookup {host}: {reason}"


def is_ip_literal(host: str) -> bool:
    return socks5.address_type(host) != socks5.ATYP_DOMAIN


# --------------------------------------------------------------- direct TCP


async def _resolve(host: str, port: int) -> list[tuple[int, str]]:
    if is_ip_literal(host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return [(family, host)]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, lookup_error_text(host, exc)) from None
    except (UnicodeError, ValueError):  # not a valid host name (IDNA label rules, NUL, ...)
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"dial tcp: lookup {host}: no such host") from None
    return [(family, sockaddr[0]) for family, _, _, _, sockaddr in infos]


async def _connect_direct(host: str, port: int, protocol_factory: Callable[[], P]) -> tuple[asyncio.Transport, P]:
    """Try each resolved address in turn; the first failure names the error (as Go does)."""
    loop = asyncio.get_running_loop()
    first: tuple[OSError, str] | None = None
    for family, address in await _resolve(host, port):
        try:
            return await loop.create_connection(protocol_factory, address, port, family=family)  # type: ignore[return-value]
        except OSError as exc:
            if first is None:
                first = (exc, address)
    assert first is not None
    exc, address = first
    raise ProxyError(reply_for(exc), go_dial_error(exc, "tcp", httpproxy.join_host_port(address, port)))


# --------------------------------------------------------------- proxy handshakes


class _Handshake(asyncio.Protocol):
    """Drives a sans-I/O client negotiation on a fresh connection to the upstream proxy."""

    def __init__(self, negotiation: Any, fail: Callable[[Exception], ProxyError]) -> None:
        self.negotiation = negotiation
        self.fail = fail
        self.transport: asyncio.Transport | None = None
        self.finished: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.negotiation.initial())

    def data_received(self, data: bytes) -> None:
        if self.finished.done():
            return
        negotiation = self.negotiation
        negotiation.receive_data(data)
        out = negotiation.data_to_send()
        if out:
            assert self.transport is not None
            self.transport.write(out)
        if negotiation.error is not None:
            self.finished.set_exception(self.fail(negotiation.error))
        elif _negotiation_done(negotiation):
            assert self.transport is not None
            self.transport.pause_reading()  # the target's bytes belong to the next protocol
            self.finished.set_result(negotiation.leftover)

    def eof_received(self) -> bool:
        self._lost(ConnectionResetError("proxy closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc or ConnectionResetError("proxy closed the connection"))

    def _lost(self, exc: Exception) -> None:
        if not self.finished.done():
            self.finished.set_exception(self.fail(exc))


def _negotiation_done(negotiation: Any) -> bool:
    if isinstance(negotiation, socks5.ClientNegotiation):
        return negotiation.phase is socks5.Phase.DONE
    return bool(negotiation.done)


def _socks5_failure(exc: Exception) -> ProxyError:
    if isinstance(exc, socks5.Socks5Error) and str(exc).startswith("connection failed"):
        return ProxyError(exc.reply, f"socks5 connect error: {exc}")
    return ProxyError(socks5.Rep.GENERAL_FAILURE, f"socks5 handshake error: {exc}")


def _http_failure(exc: Exception) -> ProxyError:
    if isinstance(exc, httpproxy.HttpProxyError):
        reply = socks5.Rep.NOT_ALLOWED if exc.status == 403 else socks5.Rep.HOST_UNREACHABLE
        return ProxyError(reply, exc.message)
    return ProxyError(socks5.Rep.HOST_UNREACHABLE, f"read CONNECT response error: {exc}")


async def _connect_via(
    proxy: UpstreamProxy, host: str, port: int, protocol_factory: Callable[[], P]
) -> tuple[asyncio.Transport, P]:
    if proxy.scheme == "socks5":
        negotiation: Any = socks5.ClientNegotiation(host, port, proxy.username, proxy.password)
        fail = _socks5_failure
    else:
        negotiation = httpproxy.ConnectNegotiation(host, port, proxy.username, proxy.password)
        fail = _http_failure
    try:
        transport, handshake = await _connect_direct(proxy.host, proxy.port, lambda: _Handshake(negotiation, fail))
    except ProxyError as exc:
        raise ProxyError(exc.reply, f"connect to proxy error: {exc.message}") from None
    try:
        leftover = await handshake.finished
    except BaseException:
        transport.abort()
        raise
    protocol = protocol_factory()
    transport.set_protocol(protocol)
    transport.resume_reading()
    protocol.connection_made(transport)
    if leftover:
        protocol.data_received(leftover)  # type: ignore[attr-defined]
    return transport, protocol


# --------------------------------------------------------------- the primitive


async def open_tcp(
    host: str,
    port: int,
    protocol_factory: Callable[[], P],
    *,
    upstream: str | UpstreamProxy | None = None,
    timeout: float = DIAL_TIMEOUT,
) -> tuple[asyncio.Transport, P]:
    """Connect to ``host:port`` (through ``upstream`` when given) and attach a protocol.

    Raises :class:`ProxyError` (reply code + Go-style text) on any failure,
    including the ``timeout`` (``dial tcp host:port: i/o timeout``, 0x04).
    """
    proxy = parse_upstream(upstream) if isinstance(upstream, str) else upstream
    if not 0 < port <= 0xFFFF:
        raise ProxyError(socks5.Rep.GENERAL_FAILURE, f"invalid port number: {port}")
    try:
        async with asyncio.timeout(timeout):
            if proxy is None:
                return await _connect_direct(host, port, protocol_factory)
            return await _connect_via(proxy, host, port, protocol_factory)
    except TimeoutError:
        text = go_dial_error(TimeoutError(), "tcp", httpproxy.join_host_port(host, port))
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, text) from None


# --------------------------------------------------------------- UDP


def _unmapped(address: str) -> str:
    """``::ffff:1.2.3.4`` (from a dual-stack socket) as ``1.2.3.4``."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


class DirectUdpAssociation(asyncio.DatagramProtocol):
    """One UDP socket on ``[::]:0`` (fallback ``0.0.0.0:0``) that sends for a SOCKS client."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.dual_stack = False
        self._deliver: Callable[[str, int, bytes], None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls) -> "DirectUdpAssociation":
        loop = asyncio.get_running_loop()
        association = cls()
        try:
            await loop.create_datagram_endpoint(lambda: association, local_addr=("::", 0))
            association.dual_stack = True
        except OSError:
            await loop.create_datagram_endpoint(lambda: association, local_addr=("0.0.0.0", 0))
        return association

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def set_receiver(self, deliver: Callable[[str, int, bytes], None]) -> None:
        self._deliver = deliver

    def send(self, host: str, port: int, data: bytes) -> None:
        if self.transport is None:
            return
        if is_ip_literal(host):
            self._send_to(host, port, data)
        else:
            task = asyncio.ensure_future(self._resolve_and_send(host, port, data))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _send_to(self, address: str, port: int, data: bytes) -> None:
        if self.transport is None:
            return
        is_v6 = ":" in address
        if self.dual_stack and not is_v6:
            address = "::ffff:" + address
        elif is_v6 and not self.dual_stack:
            return  # an IPv4-only socket cannot reach it
        try:
            self.transport.sendto(data, (address, port))
        except (OSError, ValueError, OverflowError) as exc:
            log.debug("UDP send to %s:%s failed: %s", address, port, exc)

    async def _resolve_and_send(self, host: str, port: int, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        family = 0 if self.dual_stack else socket.AF_INET
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError, ValueError) as exc:
            log.debug("UDP target %r unresolved: %s", host, exc)
            return
        self._send_to(infos[0][4][0], port, data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._deliver is not None:
            self._deliver(_unmapped(addr[0]), addr[1], data)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP association socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def close(self) -> None:
        for task in self._pending:
            task.cancel()
        if self.transport is not None:
            self.transport.close()


# --------------------------------------------------------------- dialers


class DirectDialer:
    """Dials targets with plain TCP (10 s timeout); UDP associations are direct."""

    def __init__(self, timeout: float = DIAL_TIMEOUT) -> None:
        self.timeout = timeout
        self.upstream: UpstreamProxy | None = None

    async def connect(self, host: str, port: int, pump: Pump, client: tuple[str, int]) -> None:
        await open_tcp(host, port, lambda: pump, upstream=self.upstream, timeout=self.timeout)

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        try:
            return await DirectUdpAssociation.open()
        except OSError as exc:
            raise ProxyError(socks5.Rep.GENERAL_FAILURE, f"listen udp: {exc}") from None


class UpstreamProxyDialer(DirectDialer):
    """Dials every TCP target through an upstream SOCKS5 or HTTP CONNECT proxy.

    UDP does not go through the upstream proxy: with ``udp_direct`` (the
    LinkSocks behaviour) associations are direct, otherwise refused with 0x07.
    """

    def __init__(self, upstream: str | UpstreamProxy, timeout: float = DIAL_TIMEOUT, *, udp_direct: bool = True) -> None:
        super().__init__(timeout)
        self.upstream = parse_upstream(upstream) if isinstance(upstream, str) else upstream
        self.udp_direct = udp_direct

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        if not self.udp_direct:
            raise ProxyError(socks5.Rep.COMMAND_NOT_SUPPORTED, "UDP is not supported through the upstream proxy")
        return await super().associate(client)


def dialer_for(upstream_url: str | None, timeout: float = DIAL_TIMEOUT) -> Dialer:
    """A DirectDialer, or an UpstreamProxyDialer when an upstream URL is given (ValueError if bad)."""
    if not upstream_url:
        return DirectDialer(timeout)
    return UpstreamProxyDialer(upstream_url, timeout)


__all__ = [
    "DIAL_TIMEOUT",
    "DirectDialer",
    "DirectUdpAssociation",
    "UpstreamProxy",
    "UpstreamProxyDialer",
    "dialer_for",
    "open_tcp",
    "parse_upstream",
    "reply_for",
]
