"""The proxy front end: one listener for SOCKS5 and HTTP proxy clients.

Each accepted connection is sniffed on its first byte: 0x05 is SOCKS5
(:class:`.socks5.ServerNegotiation`), an ASCII upper-case letter is an HTTP
proxy request (:class:`.httpproxy.ServerNegotiation`, optional), anything
else is closed. Both negotiations are sans-I/O; this module is their driver.
After the handshake the target goes to a :class:`~.dialing.Dialer`, which
returns a connected transport; the front end answers the client, puts both
transports into a relay (:mod:`.relay`) and joins it. Bytes the client sent
after its request, and bytes the target sent before the relay took over, are
never lost: they are held and flushed into the relay.

Usage::

    async with ProxyFront(DirectDialer(), "127.0.0.1", 1080) as front:
        print(front.bound)          # [("127.0.0.1", 1080)]
        await asyncio.Event().wait()
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from . import httpproxy, socks5
from .dialing import Dialer, ProxyError, UdpAssociation
from .lifecycle import Service
from .listen import bound_socket
from .logsafe import escape
from .relay import READ_MAX, Relay
from .tasks import TaskSet

log = logging.getLogger(__name__)

DEFAULT_REALM = "proxy"
UDP_BIND_HOST = "127.0.0.1"  # only local SOCKS clients may use UDP (linksocks.md section 10)

EntryRule = Callable[[str, int], bool]
RequestHook = Callable[[tuple[str, int], httpproxy.ProxyRequest], None]
HttpRefusal = Callable[[httpproxy.ProxyRequest, ProxyError], bytes]


__all__ = ["DEFAULT_REALM", "Dialer", "FrontConnection", "ProxyError", "ProxyFront", "UdpAssociation"]


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
    * ``realm``: the ``Proxy-Authenticate`` realm of a 407 answer.
    * ``unsupported_command_reply``: the reply for BIND and unknown commands
      (default 0x07, RFC 1928); None closes the connection without a reply
      (as upstream LinkSocks does).
    * ``on_http_request(client, request)``: called for each HTTP proxy request
      once its head is read, before the dial (a program's access log line).
    * ``http_refusal(request, error)``: the bytes to answer an HTTP proxy
      request whose dial failed (default: ``httpproxy.response(error.status,
      error.message)``); lets a program keep its upstream's exact answers.
    * ``socks``: accept SOCKS5 (default); False with ``http`` makes an HTTP-only proxy.
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
        entry_allowed: EntryRule | None = None,
        handshake_timeout: float = 30.0,
        realm: str = DEFAULT_REALM,
        unsupported_command_reply: int | None = socks5.Rep.COMMAND_NOT_SUPPORTED,
        on_http_request: RequestHook | None = None,
        http_refusal: HttpRefusal | None = None,
        socks: bool = True,
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
        self.on_http_request = on_http_request
        self.http_refusal = http_refusal
        self.socks = socks
        self.bound: list[tuple[str, int]] = []
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[FrontConnection] = set()
        self._tasks = TaskSet("proxy front", logger=log)

    @property
    def active(self) -> int:
        """Client connections open right now (negotiating, dialing, relaying or UDP control)."""
        return len(self._connections)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` (a connection's dial) as a task this front end owns."""
        return self._tasks.spawn(work, name=name)

    def forget(self, connection: FrontConnection) -> None:
        self._connections.discard(connection)

    def track(self, connection: FrontConnection) -> None:
        self._connections.add(connection)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        hosts = self.host if self.host else None
        # one IP literal (the usual 127.0.0.1): bound here, so uvloop's resolver thread pool never starts
        sock = bound_socket(hosts, self.port) if isinstance(hosts, str) else None
        if sock is not None:
            self._server = await loop.create_server(lambda: FrontConnection(self), sock=sock, backlog=1024)
        else:
            self._server = await loop.create_server(
                lambda: FrontConnection(self), hosts, self.port, reuse_address=True, backlog=1024
            )
        self.bound = [sock.getsockname()[:2] for sock in self._server.sockets]
        log.debug("proxy front listening on %s", self.bound)

    async def aclose(self) -> None:
        """Stop listening and abort every open client connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        await self._tasks.aclose()
        self._tasks = TaskSet("proxy front", logger=log)  # the front end may be started again
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
        self._http: httpproxy.ServerNegotiation | None = None
        self._held: list[bytes] = []
        self._held_size = 0
        self._eof = False
        self._timer: asyncio.TimerHandle | None = None
        self._udp: _UdpRelay | None = None

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.front.track(self)
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
        if first == socks5.VERSION and self.front.socks:
            self._socks = socks5.ServerNegotiation(*(self.front.credentials or (None, None)))
            self.stage = _Stage.SOCKS
        elif self.front.http and 0x41 <= first <= 0x5A:
            self._http = httpproxy.ServerNegotiation(*(self.front.credentials or (None, None)), realm=self.front.realm)
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
            log.debug("%s: SOCKS5 handshake failed: %s", self._who(), escape(negotiation.error))
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
        negotiation = self._http
        assert negotiation is not None
        negotiation.receive_data(data)
        if negotiation.phase is httpproxy.Phase.FAILED:
            assert negotiation.error is not None
            log.debug("%s: HTTP proxy request refused: %s %s", self._who(), negotiation.error.status, escape(negotiation.error.message))
            self._send_and_close(negotiation.data_to_send())
        elif negotiation.phase is httpproxy.Phase.DONE:
            self._stop_timer()
            request = negotiation.request
            assert request is not None
            if self.front.on_http_request is not None:
                try:
                    self.front.on_http_request(self.client, request)
                except Exception:  # a program's hook must not break the connection
                    log.exception("%s: on_http_request hook failed", self._who())
            if not self._entry_allowed(request.host, request.port):
                log.debug("%s: HTTP proxy request refused: 403 blocked by access rules", self._who())
                self._send_and_close(httpproxy.response(403, "blocked by access rules"))
                return
            self._begin_dial(negotiation.leftover, self._dial_http(request))

    def _entry_allowed(self, host: str, port: int) -> bool:
        return _allowed(self.front.entry_allowed, host, port)

    # ------------------------------------------------------------ dialing
    def _begin_dial(self, leftover: bytes, work: Coroutine[Any, Any, None]) -> None:
        self.stage = _Stage.DIALING
        if leftover:
            self._hold(leftover)
        self.task = self.front.spawn(work, name=f"dial for {self._who()}")

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size >= READ_MAX and self.transport is not None:
            self.transport.pause_reading()

    async def _dial(self, host: str, port: int) -> Relay | None:
        """Ask the dialer; on success return a relay whose back end holds the target's transport."""
        try:
            connected = await self.front.dialer.open(host, port, self.client)
        except (ProxyError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.warning("%s: dialer failed for %s: %s", self._who(), escape(httpproxy.join_host_port(host, port)), escape(repr(exc)))
            raise ProxyError(socks5.Rep.GENERAL_FAILURE, str(exc) or type(exc).__name__) from exc
        if self.stage is _Stage.CLOSED:  # the client left while we dialed
            connected.close()
            return None
        relay = Relay()
        connected.attach(relay.back())  # the front end adopts the target's transport into its relay
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
            refusal = self.front.http_refusal
            self._send_and_close(httpproxy.response(exc.status, exc.message) if refusal is None else refusal(request, exc))
            return
        if relay is None:
            return
        if request.tunnel:
            self._start_relay(relay, httpproxy.CONNECT_ESTABLISHED)
        else:
            target = relay.back().transport
            assert target is not None
            target.write(httpproxy.origin_request(request))
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
        relay.done.add_done_callback(lambda _: self.front.forget(self))

    # ------------------------------------------------------------ UDP ASSOCIATE
    async def _associate(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            association = await self.front.dialer.associate(self.client)
        except ProxyError as exc:
            self._refuse_socks(exc)
            return
        except Exception as exc:
            log.warning("%s: UDP association failed: %s", self._who(), escape(repr(exc)))
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
        log.debug("%s: SOCKS5 reply 0x%02x: %s", self._who(), exc.reply, escape(exc.message))
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
            self.front.forget(self)
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
        self.front.forget(self)

    def _who(self) -> str:
        return httpproxy.join_host_port(*self.client)


def _allowed(check: Callable[[str, int], bool] | None, host: str, port: int) -> bool:
    """Apply an entry rule; a rule that raises blocks (and is logged) instead of breaking the connection."""
    if check is None:
        return True
    try:
        return bool(check(host, port))
    except Exception:
        log.exception("entry rule failed for %s", escape(httpproxy.join_host_port(host, port)))
        return False


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
            log.debug("UDP datagram from %s dropped: %s", addr, escape(exc))
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
            log.debug("UDP reply from %s:%s dropped: %s", escape(host), port, escape(exc))
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
