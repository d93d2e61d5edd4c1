"""Dialing, declared: what a dialer, a resolver and a UDP association promise, and the error they raise.

This module is the contract between whoever needs a connection (the proxy
front end, a program's dialing side) and whoever makes it (the direct and
upstream-proxy dialers in :mod:`.dialer`, LinkSocks channels, the sidecar's
tailnet backend). It imports no front end; from the relay only the transport shape.

* :class:`Dialer`: ``await dialer.open(host, port, client)`` returns a
  :class:`Connected`: a connected transport plus the bytes that already
  arrived on it (for example a target's greeting that rode along with an
  upstream proxy's reply). The caller attaches its own protocol with
  :meth:`Connected.attach`, which replays those bytes and any end of stream
  or loss that happened before. ``dialer.associate(client)`` opens a
  :class:`UdpAssociation`.
* :class:`Resolver`: host name to addresses; :class:`SystemResolver` is
  ``getaddrinfo``. A tailnet backend plugs its own in.
* :class:`ProxyError`: the one failure type. It carries the SOCKS5 reply and
  the HTTP status to answer with, and a message in the words upstream peers
  use (Go's ``dial tcp 127.0.0.1:1: connect: connection refused``).
* :class:`ClientNegotiation`: the sans-I/O client side of an upstream proxy
  handshake (SOCKS5 and HTTP CONNECT implement it).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from . import socks5
from .relay import RelayEnd as Transport  # what a dialer hands over: a TCP transport or a multiplexed channel

__all__ = [
    "ClientNegotiation",
    "Connected",
    "Dialer",
    "HandoffProtocol",
    "ProxyError",
    "Resolver",
    "SystemResolver",
    "UdpAssociation",
    "lookup_error_text",
]

Buffer = bytes | bytearray | memoryview


class ProxyError(Exception):
    """A target the dialer could not (or must not) reach.

    ``reply`` is the SOCKS5 reply code (see :class:`.socks5.Rep`); an HTTP
    client gets ``http_status`` when given, else 403 for 0x02 and 502 for the
    rest, with ``message`` as the body.
    """

    def __init__(self, reply: int, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(message or socks5.reply_text(reply))
        self.reply = reply
        self.message = message or socks5.reply_text(reply)
        self.http_status = http_status

    @property
    def status(self) -> int:
        if self.http_status is not None:
            return self.http_status
        return 403 if self.reply == socks5.Rep.NOT_ALLOWED else 502


# --------------------------------------------------------------- the connected transport


class HandoffProtocol(asyncio.Protocol):
    """Holds a freshly connected transport until its real protocol is attached.

    Reading is paused as soon as the transport is connected, so at most one
    read is held; an end of stream or a loss is remembered and replayed by
    :meth:`Connected.attach`.
    """

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self.held = bytearray()
        self.eof = False
        self.lost = False
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(Transport, transport)
        self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.held += data

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc

    def connected(self, leftover: bytes = b"") -> Connected:
        """The result of a dial through this handoff (``leftover``: bytes read before it)."""
        transport = self.transport
        if transport is None:
            raise ProxyError(socks5.Rep.GENERAL_FAILURE, "dialer returned without a connection")
        return Connected(transport, leftover, adopt=self._adopt)

    def _adopt(self, protocol: asyncio.Protocol, leftover: bytes) -> None:
        """Move the transport to ``protocol``, replaying what this handoff saw."""
        transport = self.transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(cast(asyncio.BaseTransport, transport))
        held, self.held = leftover + bytes(self.held), bytearray()
        if held:
            protocol.data_received(held)
        if self.lost:
            if self.eof:
                protocol.eof_received()
            protocol.connection_lost(self.error)
            return
        if self.eof and not protocol.eof_received():
            transport.close()
        transport.resume_reading()


class Connected:
    """A dialed connection: ``transport`` plus ``leftover`` bytes that already arrived.

    Call :meth:`attach` exactly once to give the transport its protocol, or
    :meth:`close` to give it up. How a protocol is attached depends on the
    transport, so a dialer may pass ``adopt(protocol, leftover)``: the
    default follows asyncio (``set_protocol``, ``connection_made``,
    ``data_received(leftover)``, ``resume_reading``); a multiplexed channel
    whose ``set_protocol`` already calls ``connection_made`` passes its own.
    """

    __slots__ = ("_adopt", "leftover", "transport")

    def __init__(
        self,
        transport: Transport,
        leftover: bytes = b"",
        *,
        adopt: Callable[[asyncio.Protocol, bytes], None] | None = None,
    ) -> None:
        self.transport = transport
        self.leftover = leftover
        self._adopt = adopt

    def attach(self, protocol: asyncio.Protocol) -> None:
        """Give the transport ``protocol`` and deliver ``leftover`` to it."""
        leftover, self.leftover = self.leftover, b""
        if self._adopt is not None:
            self._adopt(protocol, leftover)
            return
        self.transport.set_protocol(protocol)
        protocol.connection_made(cast(asyncio.BaseTransport, self.transport))
        if leftover:
            protocol.data_received(leftover)
        self.transport.resume_reading()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


# --------------------------------------------------------------- declared protocols


class UdpAssociation(Protocol):
    """The dialer's half of a SOCKS5 UDP association."""

    def send(self, host: str, port: int, data: bytes) -> None:
        """A datagram from the SOCKS client toward ``host:port``."""

    def set_receiver(self, deliver: Callable[[str, int, bytes], None]) -> None:
        """Where replies go: ``deliver(source_host, source_port, data)``."""

    def close(self) -> None:
        """End the association (idempotent)."""


@runtime_checkable
class Dialer(Protocol):
    """Makes connections for a front end or a program's dialing side."""

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        """Connect to ``host:port`` for ``client``, or raise :class:`ProxyError`.

        Returning means success (fast open is the dialer's business: it may
        return before the far side confirmed). If cancelled, it must leave
        no connection behind.
        """
        ...

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        """Open a UDP association for a SOCKS5 UDP ASSOCIATE, or raise ProxyError(0x07)."""
        ...


class Resolver(Protocol):
    """Host name to addresses, for TCP or UDP."""

    async def resolve(self, host: str, port: int, *, kind: socket.SocketKind = socket.SOCK_STREAM, family: int = 0) -> list[tuple[int, str]]:
        """``[(family, address), ...]`` in the order to try, or raise :class:`ProxyError` (0x04)."""
        ...


class ClientNegotiation(Protocol):
    """The sans-I/O client side of an upstream proxy handshake.

    Send :meth:`initial`; feed what the proxy sends to :meth:`receive_data`
    and send :meth:`data_to_send`. Then ``done`` (``leftover`` holds the
    target's first bytes) or ``error`` is set.
    """

    def initial(self) -> bytes: ...
    def receive_data(self, data: Buffer) -> None: ...
    def data_to_send(self) -> bytes: ...
    @property
    def done(self) -> bool: ...
    @property
    def error(self) -> Exception | None: ...
    @property
    def leftover(self) -> bytes: ...


# --------------------------------------------------------------- the system resolver


def lookup_error_text(host: str, exc: socket.gaierror) -> str:
    """Go's resolver failure: ``dial tcp: lookup nosuch.example: no such host``."""
    if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
        reason = "no such host"
    else:
        reason = (exc.strerror or str(exc)).lower()
    return f"dial tcp: lookup {host}: {reason}"


class SystemResolver:
    """``getaddrinfo`` through the running loop; IP literals are returned as they are."""

    async def resolve(self, host: str, port: int, *, kind: socket.SocketKind = socket.SOCK_STREAM, family: int = 0) -> list[tuple[int, str]]:
        if socks5.address_type(host) != socks5.ATYP_DOMAIN:
            return [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=kind)
        except socket.gaierror as exc:
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, lookup_error_text(host, exc)) from None
        except (UnicodeError, ValueError):  # not a valid host name (IDNA label rules, NUL, ...)
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"dial tcp: lookup {host}: no such host") from None
        return [(int(af), str(sockaddr[0])) for af, _, _, _, sockaddr in infos]
