"""The proxy front end: one listener for SOCKS5 and HTTP proxy clients.

Each accepted connection is sniffed on its first byte: 0x05 is SOCKS5
(:mod:`.socks5`), an ASCII upper-case letter is an HTTP proxy request
(:mod:`.httpproxy`, optional), anything else is closed. After the handshake
the target goes to a :class:`Dialer`, which connects something to the relay's
back end Pump; the front end then answers the client and joins the relay
(:mod:`.relay`). Bytes the client sent after its request are never lost: they
are held and flushed into the relay.

Usage::

    async with ProxyFront(DirectDialer(), "127.0.0.1", 1080) as front:
        print(front.bound)          # [("127.0.0.1", 1080)]
        await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .lifecycle import Service
from . import httpproxy, socks5
from .relay import READ_MAX, Pump, Relay

log = logging.getLogger("hatchway.proxyfront")

DEFAULT_REALM = "LinkSocks"
UDP_BIND_HOST = "127.0.0.1"  # only local SOCKS clients may use UDP (linksocks.md section 10)


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


class UdpAssociation(Protocol):
    """The dialer's half of a SOCKS5 UDP association."""

    def send(self, host: str, port: int, data: bytes) -> None:
        """A datagram from the SOCKS client toward ``host:port``."""

    def set_receiver(self, deliver: Callable[[str, int, bytes], None]) -> None:
        """Where replies go: ``deliver(source_host, source_port, data)``."""

    def close(self) -> None:
        """End the association (idempotent)."""


class Dialer(Protocol):
    async def connect(self, host: str, port: int, pump: Pump, client: tuple[str, int]) -> None:
        """Connect something to ``pump`` (the relay's back end Pump) or raise ProxyError.

        E.g. ``await loop.create_connection(lambda: pump, host, port)``, or a
        multiplexed Channel via ``channel.set_protocol(pump)``. Returning means
        success: the front end then sends the success reply and joins the
        relay. Fast open is the dialer's business: it may return before the
        remote side confirmed. If it is cancelled (the client went away) it
        must not leave a connection behind.
        """

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        """Open a UDP association for a SOCKS5 UDP ASSOCIATE, or raise ProxyError(0x07)."""


class _Stage(enum.Enum):
    SNIFF = "sniff"
    SOCKS = "socks"
    HTTP = "http"
    DIALING = "dialing"  # request taken; waiting for the dialer, holding client bytes
    RELAYING = "relaying"  # the transport now belongs to the relay
    UDP = "udp"  # the TCP connection controls a UDP association
    CLOSED = "closed"


class ProxyFront(Service):
    """SOCKS5 (RFC 1928/1929) and HTTP proxy listener that hands targets to a dialer.

    * ``host``: one address or several (``None``/``""`` = all interfaces);
      ``port`` 0 picks one, see ``bound``.
    * ``username`` and ``password``: when both are set, SOCKS5 requires method
      0x02 and HTTP requires ``Proxy-Authorization: Basic`` (else 407).
    * ``http``: accept HTTP proxy requests on the same port.
    * ``entry_allowed(host, port)``: False answers 0x02 / HTTP 403 (and drops
      such UDP datagrams).
    * ``handshake_timeout``: seconds from accept until the request is read.
    * ``unsupported_command_reply``: the reply for BIND and unknown commands;
      None closes the connection without a reply (as LinkSocks does).
    """

    def __init__(
        self,
        dialer: Dialer,
        host: str | Sequence[str] | None,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        http: bool = True,
        entry_allowed: Callable[[str, int], bool] | None = None,
        handshake_timeout: float = 30.0,
        realm: str = DEFAULT_REALM,
        unsupported_command_reply: int | None = None,
    ) -> None:
        self.dialer = dialer
        self.host = host
        self.port = port
        self.credentials = (username, password) if username and password else None
        self.http = http
        self.entry_allowed = entry_allowed
        self.handshake_timeout = handshake_timeout
        self.realm = realm
        self.unsupported_command_reply = unsupported_command_reply
        self.bound: list[tuple[str, int]] = []
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[FrontConnection] = set()

    @property
    def active(self) -> int:
        """Client connections open right now (negotiating, dialing, relaying or UDP control)."""
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        hosts: Any = self.host if self.host else None
        self._server = await loop.create_server(
            lambda: FrontConnection(self), hosts, self.port, reuse_address=True, backlog=1024
        )
        self.bound = [sock.getsockname()[:2] for sock in self._server.sockets]
        log.debug("proxy front listening on %s", self.bound)

    async def close(self) -> None:
        """Stop listening and abort every open client connection."""
        if self._server is not None:
            self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class FrontConnection(asyncio.Protocol):
    """One client connection from accept until the relay (or UDP association) takes over."""

    def __init__(self, front: ProxyFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] = ("", 0)
        self.stage = _Stage.SNIFF
        self.task: asyncio.Task[None] | None = None
        self.relay: Relay | None = None
        self._socks: socks5.ServerNegotiation | None = None
        self._http: httpproxy.HeadReader | None = None
        self._held: list[bytes] = []
        self._held_size = 0
        self._eof = False
        self._timer: asyncio.TimerHandle | None = None
        self._udp: _UdpRelay | None = None

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.front._connections.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.front.handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        stage = self.stage
        if stage is _Stage.SNIFF:
            stage = self._sniff(data[0])
            if stage is _Stage.CLOSED:
                return
        if stage is _Stage.SOCKS:
            self._on_socks_bytes(data)
        elif stage is _Stage.HTTP:
            self._on_http_bytes(data)
        elif stage is _Stage.DIALING:
            self._hold(data)
        # UDP: the control connection carries nothing; its bytes are discarded.

    def eof_received(self) -> bool:
        if self.stage is _Stage.DIALING:
            self._eof = True
            return True  # keep the write side for the reply; the relay forwards the EOF
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stage is _Stage.RELAYING:
            return
        self._finish()

    # ------------------------------------------------------------ sniffing and handshakes
    def _sniff(self, first: int) -> _Stage:
        if first == socks5.VERSION:
            self._socks = socks5.ServerNegotiation(*(self.front.credentials or (None, None)))
            self.stage = _Stage.SOCKS
        elif self.front.http and 0x41 <= first <= 0x5A:
            self._http = httpproxy.HeadReader()
            self.stage = _Stage.HTTP
        else:
            log.debug("%s: first byte 0x%02x is neither SOCKS5 nor HTTP; closing", self._who(), first)
            self._close()
        return self.stage

    def _on_socks_bytes(self, data: bytes) -> None:
        negotiation = self._socks
        assert negotiation is not None and self.transport is not None
        negotiation.receive_data(data)
        out = negotiation.data_to_send()
        if out:
            self.transport.write(out)
        if negotiation.phase is socks5.Phase.FAILED:
            log.debug("%s: SOCKS5 handshake failed: %s", self._who(), negotiation.error)
            self._close()
        elif negotiation.phase is socks5.Phase.DONE:
            assert negotiation.request is not None
            self._on_socks_request(negotiation.request, negotiation.leftover)

    def _on_socks_request(self, request: socks5.Request, leftover: bytes) -> None:
        self._stop_timer()
        if request.command == socks5.CMD_CONNECT:
            if not self._entry_allowed(request.host, request.port):
                self._refuse_socks(ProxyError(socks5.Rep.NOT_ALLOWED, "blocked by access rules"))
                return
            self._begin_dial(leftover, self._dial_socks(request.host, request.port))
        elif request.command == socks5.CMD_UDP_ASSOCIATE:
            self._begin_dial(b"", self._associate())
        else:
            log.debug("%s: SOCKS5 command %d not supported", self._who(), request.command)
            reply = self.front.unsupported_command_reply
            if reply is None:
                self._close()
            else:
                self._refuse_socks(ProxyError(reply))

    def _on_http_bytes(self, data: bytes) -> None:
        reader = self._http
        assert reader is not None
        try:
            raw = reader.feed(data)
            if raw is None:
                return
            self._stop_timer()
            request = self._http_request(raw)
        except httpproxy.HttpProxyError as exc:
            log.debug("%s: HTTP proxy request refused: %s %s", self._who(), exc.status, exc.message)
            self._send_and_close(httpproxy.error_response(exc.status, exc.message))
            return
        if request is None:
            return
        self._begin_dial(reader.leftover, self._dial_http(request))

    def _http_request(self, raw: bytes) -> httpproxy.ProxyRequest | None:
        head = httpproxy.parse_request_head(raw)
        credentials = self.front.credentials
        if credentials is not None and not httpproxy.authorized(head, *credentials):
            self._send_and_close(httpproxy.auth_required_response(self.front.realm))
            return None
        request = httpproxy.proxy_target(head)
        if not self._entry_allowed(request.host, request.port):
            raise httpproxy.HttpProxyError(403, "blocked by access rules")
        return request

    def _entry_allowed(self, host: str, port: int) -> bool:
        return _allowed(self.front.entry_allowed, host, port)

    # ------------------------------------------------------------ dialing
    def _begin_dial(self, leftover: bytes, work: Any) -> None:
        self.stage = _Stage.DIALING
        if leftover:
            self._hold(leftover)
        self.task = asyncio.ensure_future(work)

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= READ_MAX and self.transport is not None:
            self.transport.pause_reading()

    async def _dial(self, host: str, port: int) -> Relay | None:
        """Ask the dialer; on success return the relay whose back end is connected."""
        relay = Relay()
        back = relay.back()
        try:
            await self.front.dialer.connect(host, port, back, self.client)
        except (ProxyError, asyncio.CancelledError):
            _close_end(back)
            raise
        except Exception as exc:
            _close_end(back)
            log.warning("%s: dialer failed for %s: %r", self._who(), httpproxy.join_host_port(host, port), exc)
            raise ProxyError(socks5.Rep.GENERAL_FAILURE, str(exc) or type(exc).__name__) from exc
        if back.transport is None:
            raise ProxyError(socks5.Rep.GENERAL_FAILURE, "dialer returned without a connection")
        if self.stage is _Stage.CLOSED:  # the client left while we dialed
            _close_end(back)
            return None
        return relay

    async def _dial_socks(self, host: str, port: int) -> None:
        try:
            relay = await self._dial(host, port)
        except ProxyError as exc:
            self._refuse_socks(exc)
            return
        if relay is not None:
            self._start_relay(relay, socks5.build_reply(socks5.Rep.SUCCEEDED))

    async def _dial_http(self, request: httpproxy.ProxyRequest) -> None:
        try:
            relay = await self._dial(request.host, request.port)
        except ProxyError as exc:
            self._send_and_close(httpproxy.error_response(exc.status, exc.message))
            return
        if relay is None:
            return
        if request.tunnel:
            self._start_relay(relay, httpproxy.CONNECT_ESTABLISHED)
        else:
            assert relay.back().transport is not None
            relay.back().transport.write(httpproxy.origin_request(request))
            self._start_relay(relay, b"")

    def _start_relay(self, relay: Relay, reply: bytes) -> None:
        """Answer the client, move its transport into the relay with the held bytes, join."""
        transport = self.transport
        assert transport is not None
        if reply:
            transport.write(reply)
        self.stage = _Stage.RELAYING
        self.relay = relay
        front = relay.front()
        relay.adopt(front, transport)
        for chunk in self._held:
            front.data_received(chunk)
        self._held.clear()
        if self._eof:
            front.eof_received()
        relay.join()
        relay.done.add_done_callback(lambda _: self.front._connections.discard(self))

    # ------------------------------------------------------------ UDP ASSOCIATE
    async def _associate(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            association = await self.front.dialer.associate(self.client)
        except ProxyError as exc:
            self._refuse_socks(exc)
            return
        except Exception as exc:
            log.warning("%s: UDP association failed: %r", self._who(), exc)
            self._refuse_socks(ProxyError(socks5.Rep.GENERAL_FAILURE, str(exc)))
            return
        try:
            _, udp = await loop.create_datagram_endpoint(
                lambda: _UdpRelay(association, self.front.entry_allowed), local_addr=(UDP_BIND_HOST, 0)
            )
        except OSError as exc:
            association.close()
            self._refuse_socks(ProxyError(socks5.Rep.GENERAL_FAILURE, f"UDP bind failed: {exc}"))
            return
        except asyncio.CancelledError:
            association.close()
            raise
        if self.stage is _Stage.CLOSED:
            udp.close()
            return
        self._udp = udp
        association.set_receiver(udp.deliver)
        host, port = udp.local_address
        assert self.transport is not None
        self.transport.write(socks5.build_reply(socks5.Rep.SUCCEEDED, host, port))
        self.stage = _Stage.UDP
        self._held.clear()
        self.transport.resume_reading()  # watch the control connection for its close

    # ------------------------------------------------------------ endings
    def _refuse_socks(self, exc: ProxyError) -> None:
        log.debug("%s: SOCKS5 reply 0x%02x: %s", self._who(), exc.reply, exc.message)
        self._send_and_close(socks5.build_reply(exc.reply))

    def _send_and_close(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
        self._close()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        log.debug("%s: handshake timed out", self._who())
        self.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._finish()

    def abort(self) -> None:
        """Tear this connection down at once, whatever stage it is in."""
        if self.relay is not None:
            self.relay.abort()
            self.front._connections.discard(self)
            return
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        """The client connection is over (not called once the relay owns it)."""
        if self.stage is _Stage.CLOSED:
            return
        self.stage = _Stage.CLOSED
        self._stop_timer()
        self._held.clear()
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self.front._connections.discard(self)

    def _who(self) -> str:
        return httpproxy.join_host_port(*self.client)


def _allowed(check: Callable[[str, int], bool] | None, host: str, port: int) -> bool:
    """Apply an entry rule; a rule that raises blocks (and is logged) instead of breaking the connection."""
    if check is None:
        return True
    try:
        return bool(check(host, port))
    except Exception:
        log.exception("entry rule failed for %s", httpproxy.join_host_port(host, port))
        return False


def _close_end(pump: Pump) -> None:
    if pump.transport is not None and not pump.transport.is_closing():
        pump.transport.close()


class _UdpRelay(asyncio.DatagramProtocol):
    """The 127.0.0.1 UDP socket a SOCKS client sends its datagrams to."""

    def __init__(self, association: UdpAssociation, entry_allowed: Callable[[str, int], bool] | None) -> None:
        self.association = association
        self.entry_allowed = entry_allowed
        self.transport: asyncio.DatagramTransport | None = None
        self.client_address: Any = None
        self.local_address: tuple[str, int] = ("", 0)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.local_address = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            datagram = socks5.parse_udp_datagram(data)
        except socks5.Socks5Error as exc:
            log.debug("UDP datagram from %s dropped: %s", addr, exc)
            return
        self.client_address = addr  # replies go to the last address the client used
        if not _allowed(self.entry_allowed, datagram.host, datagram.port):
            return
        self.association.send(datagram.host, datagram.port, datagram.data)

    def deliver(self, host: str, port: int, data: bytes) -> None:
        """A reply from ``host:port``: wrap it in a SOCKS UDP header for the client."""
        if self.transport is None or self.client_address is None:
            return
        try:
            packet = socks5.build_udp_datagram(host, port, data)
        except socks5.Socks5Error as exc:
            log.debug("UDP reply from %s:%s dropped: %s", host, port, exc)
            return
        self.transport.sendto(packet, self.client_address)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP relay socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.association.close()

    def close(self) -> None:
        """Close the socket; ``connection_lost`` then closes the association."""
        if self.transport is not None:
            self.transport.close()
