"""Dialers: direct TCP, through an upstream SOCKS5 / HTTP CONNECT proxy, by routing rules; direct UDP.

Each implements :class:`~.dialing.Dialer` (the contract, with :class:`~.dialing.ProxyError`,
lives in :mod:`.dialing`). :func:`open_tcp` is the primitive under them: "connect to
host:port (maybe through the upstream proxy) and attach this protocol". A program's
dialing side (LinkSocks server in forward mode, provider in reverse mode) uses it
without a front end. Failures raise :class:`~.dialing.ProxyError` with a SOCKS5 reply
code and the error text Go's net package would print (``dial tcp 127.0.0.1:1:
connect: connection refused``), which LinkSocks peers show to their users.

Upstream URLs (linksocks.md section 14): ``socks5://user:pass@host:port``
(default port 1080) and ``http://user:pass@host:port`` (default port 8080,
``CONNECT`` with Basic auth). Only TCP goes through the upstream proxy; UDP
associations are direct, as upstream LinkSocks does.

Name resolution goes through a :class:`~.dialing.Resolver` (``getaddrinfo`` by
default). The addresses race as RFC 8305 says (families interleaved, the next
attempt 250 ms after the previous one or at once when it failed; the first
connection wins); when all fail, the first address's error names the failure, as
Go does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

import msgspec

from . import httpproxy, socks5
from .dialing import (
    ClientNegotiation,
    Connected,
    Dialer,
    HandoffProtocol,
    ProxyError,
    Resolver,
    SystemResolver,
    UdpAssociation,
    lookup_error_text,
)
from .logsafe import escape
from .neterr import go_dial_error
from .tasks import TaskSet

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305 "Connection Attempt Delay"
DEFAULT_PORTS = {"socks5": 1080, "http": 8080}
SYSTEM_RESOLVER = SystemResolver()

P = TypeVar("P", bound=asyncio.BaseProtocol)

# --------------------------------------------------------------- upstream URLs


class UpstreamProxy(msgspec.Struct, frozen=True):
    scheme: str  # "socks5" or "http"
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    error_body_limit: int = 0  # http: read a refusal's body (up to this size) as the error text; 0 = status line only

    @property
    def address(self) -> str:
        return httpproxy.join_host_port(self.host, self.port)


def parse_upstream(url: str) -> UpstreamProxy:
    """``socks5://[user:pass@]host[:port]`` or ``http://…``; raises ValueError."""
    from urllib.parse import unquote, urlsplit  # here, not at import: urllib.parse + ipaddress are ~0.4 MiB of RSS

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


# --------------------------------------------------------------- error codes


def reply_for(exc: BaseException) -> int:
    """The SOCKS5 reply for a failed dial (RFC 1928 section 6)."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code == errno.ECONNREFUSED:
        return socks5.Rep.CONNECTION_REFUSED
    if code == errno.ENETUNREACH:
        return socks5.Rep.NETWORK_UNREACHABLE
    return socks5.Rep.HOST_UNREACHABLE


def is_ip_literal(host: str) -> bool:
    return socks5.address_type(host) != socks5.ATYP_DOMAIN


# --------------------------------------------------------------- direct TCP


Attempt = tuple[asyncio.Transport, HandoffProtocol]


def interleave(addresses: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """RFC 8305 order: alternate address families, starting with the first one's."""
    if not addresses:
        return []
    first = addresses[0][0]
    primary = [a for a in addresses if a[0] == first]
    other = [a for a in addresses if a[0] != first]
    out: list[tuple[int, str]] = []
    for i in range(max(len(primary), len(other))):
        out += primary[i : i + 1] + other[i : i + 1]
    return out


async def race(
    candidates: Sequence[tuple[int, str]],
    connect: Callable[[int, str], Coroutine[Any, Any, Attempt]],
    delay: float = HAPPY_EYEBALLS_DELAY,
) -> tuple[Attempt | None, list[tuple[int, OSError]]]:
    """Happy Eyeballs: start the next attempt when the previous one failed or ``delay`` passed.

    Returns the first connection made (the other attempts are cancelled or
    closed) and the failures as ``(candidate index, error)``.
    """
    loop = asyncio.get_running_loop()
    pending: dict[asyncio.Task[Attempt], int] = {}
    failures: list[tuple[int, OSError]] = []
    winner: Attempt | None = None
    started = 0
    start_next = True  # at first, after a failure, and when ``delay`` passed without an answer
    try:
        while winner is None and (started < len(candidates) or pending):
            if start_next and started < len(candidates):
                family, address = candidates[started]
                pending[loop.create_task(connect(family, address), name=f"dial {address}")] = started
                started += 1
            timeout = delay if started < len(candidates) else None
            done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            start_next = not done  # the delay passed without an answer
            for task in done:
                index = pending.pop(task)
                error = task.exception()
                if error is None:
                    if winner is None:
                        winner = task.result()
                    else:
                        task.result()[0].close()
                elif isinstance(error, OSError):
                    failures.append((index, error))
                    start_next = True
                else:
                    if winner is not None:
                        winner[0].close()
                    raise error
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)  # an outer cancellation still propagates from here
        for task in pending:
            if not task.cancelled() and task.exception() is None:
                task.result()[0].close()  # connected just as it was cancelled
    return winner, sorted(failures, key=lambda f: f[0])


async def _connect_direct(
    host: str, port: int, protocol_factory: Callable[[], P], resolver: Resolver
) -> tuple[asyncio.Transport, P]:
    """Race the resolved addresses (Happy Eyeballs); if all fail, the first address's error names it (as Go does)."""
    loop = asyncio.get_running_loop()
    candidates = interleave(await resolver.resolve(host, port))
    if not candidates:
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"dial tcp: lookup {host}: no such host")

    if len(candidates) == 1:  # nothing to race (an IP literal, a single-address name): the cheap path
        family, address = candidates[0]
        try:
            return await loop.create_connection(protocol_factory, address, port, family=family)
        except OSError as exc:
            raise ProxyError(reply_for(exc), go_dial_error(exc, "tcp", httpproxy.join_host_port(address, port))) from None

    async def connect(family: int, address: str) -> Attempt:
        return await loop.create_connection(HandoffProtocol, address, port, family=family)

    winner, failures = await race(candidates, connect)
    if winner is None:
        index, error = failures[0]
        address = candidates[index][1]
        raise ProxyError(reply_for(error), go_dial_error(error, "tcp", httpproxy.join_host_port(address, port)))
    transport, handoff = winner
    protocol = protocol_factory()
    handoff.connected().attach(_as_protocol(protocol))
    return transport, protocol


def _as_protocol(protocol: asyncio.BaseProtocol) -> asyncio.Protocol:
    return cast(asyncio.Protocol, protocol)  # attach only calls the BaseProtocol methods plus data_received/eof_received


# --------------------------------------------------------------- proxy handshakes


class _Handshake(asyncio.Protocol):
    """Drives a sans-I/O client negotiation on a fresh connection to the upstream proxy."""

    def __init__(self, negotiation: ClientNegotiation, fail: Callable[[Exception], ProxyError]) -> None:
        self.negotiation = negotiation
        self.fail = fail
        self.transport: asyncio.Transport | None = None
        self.finished: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        transport.write(self.negotiation.initial())

    def data_received(self, data: bytes) -> None:
        if self.finished.done():
            return
        negotiation = self.negotiation
        negotiation.receive_data(data)
        out = negotiation.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        if negotiation.error is not None:
            self.finished.set_exception(self.fail(negotiation.error))
        elif negotiation.done:
            if self.transport is not None:
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


def _socks5_failure(exc: Exception) -> ProxyError:
    if isinstance(exc, socks5.Socks5Error) and str(exc).startswith("connection failed"):
        return ProxyError(exc.reply, f"socks5 connect error: {exc}")
    return ProxyError(socks5.Rep.GENERAL_FAILURE, f"socks5 handshake error: {exc}")


def _http_failure(exc: Exception) -> ProxyError:
    if isinstance(exc, httpproxy.HttpProxyError):
        reply = socks5.Rep.NOT_ALLOWED if exc.status == 403 else socks5.Rep.HOST_UNREACHABLE
        return ProxyError(reply, exc.message)
    return ProxyError(socks5.Rep.HOST_UNREACHABLE, f"read CONNECT response error: {exc}")


def _negotiation(
    proxy: UpstreamProxy, host: str, port: int
) -> tuple[ClientNegotiation, Callable[[Exception], ProxyError]]:
    if proxy.scheme == "socks5":
        return socks5.ClientNegotiation(host, port, proxy.username, proxy.password), _socks5_failure
    negotiation = httpproxy.ConnectNegotiation(
        host, port, proxy.username, proxy.password, error_body_limit=proxy.error_body_limit
    )
    return negotiation, _http_failure


async def _connect_via(
    proxy: UpstreamProxy, host: str, port: int, protocol_factory: Callable[[], P], resolver: Resolver
) -> tuple[asyncio.Transport, P]:
    negotiation, fail = _negotiation(proxy, host, port)
    try:
        transport, handshake = await _connect_direct(
            proxy.host, proxy.port, lambda: _Handshake(negotiation, fail), resolver
        )
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
    if leftover and isinstance(protocol, asyncio.Protocol):
        protocol.data_received(leftover)
    return transport, protocol


# --------------------------------------------------------------- the primitive


async def open_tcp(
    host: str,
    port: int,
    protocol_factory: Callable[[], P],
    *,
    upstream: str | UpstreamProxy | None = None,
    timeout: float = DIAL_TIMEOUT,
    resolver: Resolver = SYSTEM_RESOLVER,
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
                return await _connect_direct(host, port, protocol_factory, resolver)
            return await _connect_via(proxy, host, port, protocol_factory, resolver)
    except TimeoutError:
        text = go_dial_error(TimeoutError(), "tcp", httpproxy.join_host_port(host, port))
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, text) from None


async def dial(
    host: str,
    port: int,
    *,
    upstream: str | UpstreamProxy | None = None,
    timeout: float = DIAL_TIMEOUT,
    resolver: Resolver = SYSTEM_RESOLVER,
) -> Connected:
    """:func:`open_tcp` as a :class:`~.dialing.Connected` (attach your protocol later)."""
    _, handoff = await open_tcp(host, port, HandoffProtocol, upstream=upstream, timeout=timeout, resolver=resolver)
    return handoff.connected()


# --------------------------------------------------------------- UDP


def _unmapped(address: str) -> str:
    """``::ffff:1.2.3.4`` (from a dual-stack socket) as ``1.2.3.4``."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


class DirectUdpAssociation(asyncio.DatagramProtocol):
    """One UDP socket on ``[::]:0`` (fallback ``0.0.0.0:0``) that sends for a SOCKS client.

    Datagrams to a host name are resolved first (one tracked task each,
    cancelled by :meth:`close`); replies from ``::ffff:a.b.c.d`` are reported
    as ``a.b.c.d``.
    """

    def __init__(self, resolver: Resolver = SYSTEM_RESOLVER) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.dual_stack = False
        self.resolver = resolver
        self._deliver: Callable[[str, int, bytes], None] | None = None
        self._tasks = TaskSet("UDP association", logger=log)

    @classmethod
    async def open(cls, resolver: Resolver = SYSTEM_RESOLVER) -> DirectUdpAssociation:
        loop = asyncio.get_running_loop()
        association = cls(resolver)
        try:
            await loop.create_datagram_endpoint(lambda: association, local_addr=("::", 0))
            association.dual_stack = True
        except OSError:
            await loop.create_datagram_endpoint(lambda: association, local_addr=("0.0.0.0", 0))
        return association

    @property
    def pending(self) -> int:
        """Datagrams waiting for their name to resolve."""
        return len(self._tasks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's are not subclasses

    def set_receiver(self, deliver: Callable[[str, int, bytes], None]) -> None:
        self._deliver = deliver

    def send(self, host: str, port: int, data: bytes) -> None:
        if self.transport is None or self._tasks.closing:  # closed, or closing (the socket not yet released)
            return
        if is_ip_literal(host):
            self._send_to(host, port, data)
        else:
            self._tasks.spawn(self._resolve_and_send(host, port, data), name=f"resolve {host!r}")

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
            log.debug("UDP send to %s:%s failed: %s", escape(address), port, exc)

    async def _resolve_and_send(self, host: str, port: int, data: bytes) -> None:
        family = 0 if self.dual_stack else socket.AF_INET
        try:
            addresses = await self.resolver.resolve(host, port, kind=socket.SOCK_DGRAM, family=family)
        except ProxyError as exc:
            log.debug("UDP target %s unresolved: %s", escape(host), escape(exc.message))
            return
        if addresses:
            self._send_to(addresses[0][1], port, data)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._deliver is not None:
            self._deliver(_unmapped(str(addr[0])), int(addr[1]), data)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP association socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._tasks.cancel(close=True)

    def close(self) -> None:
        self._tasks.cancel(close=True)
        if self.transport is not None:
            self.transport.close()


async def open_udp_association(resolver: Resolver = SYSTEM_RESOLVER) -> DirectUdpAssociation:
    """A :class:`DirectUdpAssociation`; a bind failure is ``ProxyError(0x01, "listen udp: ...")``."""
    try:
        return await DirectUdpAssociation.open(resolver)
    except OSError as exc:
        raise ProxyError(socks5.Rep.GENERAL_FAILURE, f"listen udp: {exc}") from None


# --------------------------------------------------------------- dialers


class DirectDialer:
    """Dials targets with plain TCP (Happy Eyeballs, 10 s timeout); UDP associations are direct."""

    def __init__(self, timeout: float = DIAL_TIMEOUT, *, resolver: Resolver = SYSTEM_RESOLVER) -> None:
        self.timeout = timeout
        self.resolver = resolver
        self.upstream: UpstreamProxy | None = None

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        return await dial(host, port, upstream=self.upstream, timeout=self.timeout, resolver=self.resolver)

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        return await open_udp_association(self.resolver)


class UpstreamProxyDialer(DirectDialer):
    """Dials every TCP target through an upstream SOCKS5 or HTTP CONNECT proxy.

    UDP does not go through the upstream proxy: with ``udp_direct`` (the
    LinkSocks behaviour) associations are direct, otherwise refused with 0x07.
    """

    def __init__(
        self,
        upstream: str | UpstreamProxy,
        timeout: float = DIAL_TIMEOUT,
        *,
        udp_direct: bool = True,
        resolver: Resolver = SYSTEM_RESOLVER,
    ) -> None:
        super().__init__(timeout, resolver=resolver)
        self.upstream = parse_upstream(upstream) if isinstance(upstream, str) else upstream
        self.udp_direct = udp_direct

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        if not self.udp_direct:
            raise ProxyError(socks5.Rep.COMMAND_NOT_SUPPORTED, "UDP is not supported through the upstream proxy")
        return await super().associate(client)


Rule = Callable[[str, int], bool]


class Route(msgspec.Struct, frozen=True):
    """``dialer`` takes the targets for which ``match(host, port)`` is true."""

    match: Rule
    dialer: Dialer


def host_suffix(*suffixes: str) -> Rule:
    """A rule: the host is one of ``suffixes`` or a name under it (``.ts.net`` matches ``a.ts.net``)."""
    wanted = tuple(s.lower().lstrip(".") for s in suffixes)

    def match(host: str, port: int) -> bool:
        name = host.lower().rstrip(".")
        return any(name == s or name.endswith("." + s) for s in wanted)

    return match


class RoutingDialer:
    """Picks a dialer per target: the first route whose rule matches, else ``default``.

    UDP associations go to ``udp`` (default: the default dialer), since a
    UDP association is opened before any target is known.
    """

    def __init__(self, routes: Sequence[Route], default: Dialer, *, udp: Dialer | None = None) -> None:
        self.routes = tuple(routes)
        self.default = default
        self.udp = udp or default

    def dialer_for(self, host: str, port: int) -> Dialer:
        for route in self.routes:
            if route.match(host, port):
                return route.dialer
        return self.default

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        return await self.dialer_for(host, port).open(host, port, client)

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        return await self.udp.associate(client)


def dialer_for(upstream_url: str | None, timeout: float = DIAL_TIMEOUT) -> DirectDialer:
    """A DirectDialer, or an UpstreamProxyDialer when an upstream URL is given (ValueError if bad)."""
    if not upstream_url:
        return DirectDialer(timeout)
    return UpstreamProxyDialer(upstream_url, timeout)


__all__ = [
    "DIAL_TIMEOUT",
    "DirectDialer",
    "DirectUdpAssociation",
    "ProxyError",
    "Route",
    "RoutingDialer",
    "UpstreamProxy",
    "UpstreamProxyDialer",
    "dial",
    "dialer_for",
    "host_suffix",
    "is_ip_literal",
    "lookup_error_text",
    "open_tcp",
    "open_udp_association",
    "parse_upstream",
    "reply_for",
]
