"""UDP channels (SOCKS5 UDP ASSOCIATE), linksocks.md section 10.

* :class:`UdpRequest`, requester side: the proxy front's ``UdpAssociation``.
  Each datagram from the SOCKS client becomes Data{udp, TargetAddr, TargetPort};
  replies (Data{udp, Addr, Port}) go to the front's receiver.
* :class:`UdpDial`, dialer side: one UDP socket on ``[::]:0`` (fallback
  ``0.0.0.0:0``) per channel; every datagram it receives goes back as
  Data{udp, Addr = source, Port = source port}.

UDP channels are not resumed after a WebSocket drop; they end with the link.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Callable

from . import protocol
from .channel import EOF_TEXT, ChannelTable
from .protocol import Disconnect

log = logging.getLogger("hatchway.linksocks.udp")

RESOLVE_CACHE_MAX = 256


def _plain_ip(host: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4``; anything else unchanged."""
    if host.startswith("::ffff:"):
        rest = host[7:]
        if "." in rest:
            return rest
    return host


class UdpRequest:
    """Requester side of one UDP association."""

    def __init__(self, table: ChannelTable, channel_id: bytes, link: Any) -> None:
        self.id = channel_id
        self.table = table
        self.link = link
        self.connect_waiter: asyncio.Future[Any] | None = None
        self._deliver: Callable[[str, int, bytes], None] | None = None
        self._closed = False
        table.add(channel_id, self)
        link.channels.add(self)

    def connect_message(self, resume: bool = False) -> protocol.Connect:
        return protocol.Connect(protocol.UDP, self.id, resume=resume)

    # -- UdpAssociation
    def send(self, host: str, port: int, data: bytes) -> None:
        if self._closed:
            return
        try:
            self.link.send_udp(self.id, data, target_address=host, target_port=port)
        except ConnectionError:
            self._forget()

    def set_receiver(self, deliver: Callable[[str, int, bytes], None]) -> None:
        self._deliver = deliver

    def close(self) -> None:
        if self._closed:
            return
        self.link.try_send(Disconnect(self.id, EOF_TEXT))
        self._forget()

    # -- dispatcher events
    def on_data(self, link: Any, message: protocol.Data) -> None:
        if self._deliver is None:
            return
        try:
            payload = protocol.data_payload(message)
        except protocol.ProtocolError as exc:
            log.warning("udp channel: %s", exc)
            return
        self._deliver(message.address, message.port, bytes(payload))

    def on_connect_response(self, link: Any, message: protocol.ConnectResponse) -> None:
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def on_disconnect(self, link: Any, message: Disconnect) -> None:
        self.on_connect_response(link, protocol.ConnectResponse(False, self.id, message.error or "disconnected"))
        self._forget()

    def link_lost(self) -> None:
        self.on_connect_response(self.link, protocol.ConnectResponse(False, self.id, "WebSocket closed"))
        self._forget()

    def suspend(self) -> None:
        self.link_lost()

    def _forget(self) -> None:
        self._closed = True
        self.table.remove(self.id, self)
        self.link.channels.discard(self)


class UdpDial(asyncio.DatagramProtocol):
    """Dialer side of one UDP association: a local UDP socket relaying for the requester."""

    def __init__(self, table: ChannelTable, channel_id: bytes, link: Any) -> None:
        self.id = channel_id
        self.table = table
        self.link = link
        self.transport: asyncio.DatagramTransport | None = None
        self._v6 = False
        self._closed = False
        self._queued: list[protocol.Data] = []
        self._resolved: dict[str, str] = {}
        table.add(channel_id, self)
        link.channels.add(self)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("::", 0))
            self._v6 = True
        except OSError:
            transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("0.0.0.0", 0))
        if self._closed:
            transport.close()
            return
        queued, self._queued = self._queued, []
        for message in queued:
            self.on_data(self.link, message)

    # -- DatagramProtocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._closed:
            return
        try:
            self.link.send_udp(self.id, data, address=_plain_ip(addr[0]), port=addr[1])
        except ConnectionError:
            self.close_local()

    def error_received(self, exc: Exception) -> None:
        log.debug("udp channel: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # -- dispatcher events
    def on_data(self, link: Any, message: protocol.Data) -> None:
        if self._closed:
            return
        if self.transport is None:
            self._queued.append(message)
            return
        try:
            payload = bytes(protocol.data_payload(message))
        except protocol.ProtocolError as exc:
            log.warning("udp channel: %s", exc)
            return
        host, port = message.target_address, message.target_port
        address = self._literal(host)
        if address is not None:
            self._sendto(payload, address, port)
        else:
            asyncio.ensure_future(self._resolve_and_send(payload, host, port))

    def _literal(self, host: str) -> str | None:
        cached = self._resolved.get(host)
        if cached is not None:
            return cached
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        return str(ip)

    def _sendto(self, payload: bytes, address: str, port: int) -> None:
        if self.transport is None:
            return
        if self._v6 and ":" not in address:
            address = "::ffff:" + address
        try:
            self.transport.sendto(payload, (address, port))
        except (OSError, ValueError) as exc:
            log.debug("udp channel: send to %s:%d failed: %s", address, port, exc)

    async def _resolve_and_send(self, payload: bytes, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.debug("udp channel: cannot resolve %s: %s", host, exc)
            return
        families = (socket.AF_INET, socket.AF_INET6) if self._v6 else (socket.AF_INET,)
        for family, _, _, _, sockaddr in infos:
            if family in families:
                if len(self._resolved) < RESOLVE_CACHE_MAX:
                    self._resolved[host] = sockaddr[0]
                self._sendto(payload, sockaddr[0], port)
                return

    def on_disconnect(self, link: Any, message: Disconnect) -> None:
        self.close_local()

    def on_connect_response(self, link: Any, message: Any) -> None:
        pass

    def link_lost(self) -> None:
        self.close_local()

    def suspend(self) -> None:
        self.close_local()

    def rebind(self, link: Any) -> None:
        self.link.channels.discard(self)
        self.link = link
        link.channels.add(self)

    def close_local(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.table.remove(self.id, self)
        self.link.channels.discard(self)
        self._queued.clear()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Local end finished: tell the requester."""
        if not self._closed:
            self.link.try_send(Disconnect(self.id, EOF_TEXT))
        self.close_local()
