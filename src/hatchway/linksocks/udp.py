"""UDP channels (SOCKS5 UDP ASSOCIATE), linksocks.md section 10.

* :class:`UdpRequest`, requester side: the proxy front's ``UdpAssociation``.
  Each datagram from the SOCKS client becomes Data{udp, TargetAddr, TargetPort};
  replies (Data{udp, Addr, Port}) go to the front's receiver.
* :class:`UdpDial`, dialer side: common's ``DirectUdpAssociation`` (one UDP
  socket on ``[::]:0``, fallback ``0.0.0.0:0``) per channel; every datagram it
  receives goes back as Data{udp, Addr = source, Port = source port}. The
  dialer's access rules apply to every datagram (upstream applies them to TCP only).

UDP channels are not resumed after a WebSocket drop; they end with the link.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hatchway.common import socks5
from hatchway.common.dialer import SYSTEM_RESOLVER, DirectUdpAssociation, is_ip_literal
from hatchway.common.dialing import ProxyError
from hatchway.common.logsafe import escape

from . import protocol
from .access import AccessRules

if TYPE_CHECKING:
    import asyncio
from .channel_table import EOF_TEXT, ChannelTable
from .protocol import Disconnect

log = logging.getLogger(__name__)

class UdpRequest:
    """Requester side of one UDP association."""

    resumable = False  # UDP associations end with their link

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


class _RuleResolver:
    """Resolves like the system resolver, keeping only the addresses the access rules allow."""

    def __init__(self, rules: AccessRules, on_refused: Callable[[str, int], None]) -> None:
        self.rules = rules
        self.on_refused = on_refused

    async def resolve(
        self, host: str, port: int, *, kind: socket.SocketKind = socket.SOCK_STREAM, family: int = 0
    ) -> list[tuple[int, str]]:
        found = await SYSTEM_RESOLVER.resolve(host, port, kind=kind, family=family)
        allowed = [(fam, address) for fam, address in found if self.rules.allows(host, port, [address])]
        if not allowed:
            self.on_refused(host, port)
            raise ProxyError(socks5.Rep.NOT_ALLOWED, f"{host}:{port} is not allowed")
        return allowed


class UdpDial:
    """Dialer side of one UDP association: common's :class:`DirectUdpAssociation` relaying for the requester.

    The access rules (server dial rules, a provider's ``--access-rule``) apply to
    every datagram's destination; a refused datagram is dropped (upstream sends it).
    """

    resumable = False

    def __init__(self, table: ChannelTable, channel_id: bytes, link: Any, rules: AccessRules | None = None) -> None:
        self.id = channel_id
        self.table = table
        self.link = link
        self.rules = rules if rules else None
        self.association: DirectUdpAssociation | None = None
        self.refused = 0  # datagrams dropped by the access rules
        self._closed = False
        self._queued: list[protocol.Data] = []
        table.add(channel_id, self)
        link.channels.add(self)

    async def open(self) -> None:
        resolver = _RuleResolver(self.rules, self._refused) if self.rules is not None else SYSTEM_RESOLVER
        association = await DirectUdpAssociation.open(resolver)
        if self._closed:
            association.close()
            return
        association.set_receiver(self._reply)
        self.association = association
        queued, self._queued = self._queued, []
        for message in queued:
            self.on_data(self.link, message)

    def _reply(self, host: str, port: int, data: bytes) -> None:
        if self._closed:
            return
        try:
            self.link.send_udp(self.id, data, address=host, port=port)
        except ConnectionError:
            self.close_local()

    # -- dispatcher events
    def on_data(self, link: Any, message: protocol.Data) -> None:
        if self._closed:
            return
        if self.association is None:
            self._queued.append(message)
            return
        try:
            payload = bytes(protocol.data_payload(message))
        except protocol.ProtocolError as exc:
            log.warning("udp channel: %s", exc)
            return
        host, port = message.target_address, message.target_port
        rules = self.rules
        if rules is not None and is_ip_literal(host) and not rules.allows(host, port, [host]):
            self._refused(host, port)
            return
        self.association.send(host, port, payload)  # a name is checked once resolved (_RuleResolver)

    def _refused(self, host: str, port: int) -> None:
        self.refused += 1
        log.debug("udp channel: datagram to %s:%d refused by the access rules", escape(host, 64), port)

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
        if self.association is not None:
            self.association.close()

    def close(self) -> None:
        """Local end finished: tell the requester."""
        if not self._closed:
            self.link.try_send(Disconnect(self.id, EOF_TEXT))
        self.close_local()
