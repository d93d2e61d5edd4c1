"""The requesting side of a channel: the proxy front's Dialer over LinkSocks.

Used by the forward client and connector (local SOCKS port) and by the server
in reverse mode (SOCKS port per reverse token). For every SOCKS/HTTP request
it picks a link (waiting up to 10 s for one, else SOCKS reply 0x03), creates
the channel and registers it *before* sending Connect, then waits up to 15 s
for ConnectResponse (failure or timeout: reply 0x04). With fast open it
returns right after sending Connect and tears the channel down later if the
dial fails (linksocks.md sections 7, 8, 11).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hatchway.common import socks5
from hatchway.common.dialing import Connected, ProxyError

from . import protocol
from .channel import ChannelTable, TcpChannel
from .protocol import ConnectResponse
from .target_dialer import ACCESS_DENIED
from .udp import UdpRequest

log = logging.getLogger(__name__)

LINK_WAIT = 10.0
CONNECT_WAIT = 15.0  # the dialer's 10 s connect timeout + 5 s

PickLink = Callable[[float], Awaitable[Any]]


def _adopt(channel: TcpChannel, protocol_: asyncio.BaseProtocol, leftover: bytes) -> None:
    channel.set_protocol(protocol_)
    if leftover:
        channel.feed(leftover)
    # the front end joins its relay in this same step (no await between attach and join): from here on a pause
    # is a slow local reader, and the held bytes go to the relay, which keeps them until it is joined
    channel.start()


def reply_for_refusal(error: str | None) -> int:
    """SOCKS reply for a failed ConnectResponse: 0x02 when the dialer's access rules refused it, else 0x04."""
    if error and error.startswith(ACCESS_DENIED):
        return int(socks5.Rep.NOT_ALLOWED)
    return int(socks5.Rep.HOST_UNREACHABLE)


class ChannelDialer:
    """Implements ``hatchway.common.dialing.Dialer`` by opening LinkSocks channels (a channel dialer)."""

    def __init__(
        self,
        table: ChannelTable,
        pick_link: PickLink,
        *,
        fast_open: bool = False,
        link_wait: float = LINK_WAIT,
        connect_wait: float = CONNECT_WAIT,
        no_link_error: str = "no WebSocket connection available",
    ) -> None:
        self.table = table
        self.pick_link = pick_link
        self.fast_open = fast_open
        self.link_wait = link_wait
        self.connect_wait = connect_wait
        self.no_link_error = no_link_error

    async def _link(self) -> Any:
        link = await self.pick_link(self.link_wait)
        if link is None:
            raise ProxyError(socks5.Rep.NETWORK_UNREACHABLE, self.no_link_error, http_status=503)
        return link

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        """A channel to ``host:port`` through the peer (common.dialing.Dialer); ProxyError when refused."""
        channel = await self._channel(host, port)
        return Connected(channel, adopt=lambda protocol, leftover: _adopt(channel, protocol, leftover))

    async def _channel(self, host: str, port: int) -> TcpChannel:
        link = await self._link()
        channel = TcpChannel(self.table, protocol.new_channel_id(), link, host, port)
        try:
            link.send(channel.connect_message())
        except ConnectionError:
            channel.link_lost()
            raise ProxyError(socks5.Rep.NETWORK_UNREACHABLE, "WebSocket closed", http_status=503) from None
        if self.fast_open:
            channel.expect_connect_response(self.connect_wait)
            return channel
        channel.connect_waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.connect_wait):
                response: ConnectResponse = await channel.connect_waiter
        except TimeoutError:
            channel.abort()
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"connect to {host}:{port} timed out") from None
        except asyncio.CancelledError:
            channel.abort()
            raise
        finally:
            channel.connect_waiter = None
        if not response.success:
            channel.fail()
            raise ProxyError(reply_for_refusal(response.error), response.error or "connect failed")
        channel.established = True
        return channel

    async def associate(self, client: tuple[str, int]) -> UdpRequest:
        link = await self._link()
        association = UdpRequest(self.table, protocol.new_channel_id(), link)
        try:
            link.send(association.connect_message())
        except ConnectionError:
            association.link_lost()
            raise ProxyError(socks5.Rep.NETWORK_UNREACHABLE, "WebSocket closed") from None
        if self.fast_open:
            return association
        association.connect_waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.connect_wait):
                response = await association.connect_waiter
        except TimeoutError:
            association.close()
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, "UDP associate timed out") from None
        except asyncio.CancelledError:
            association.close()
            raise
        if not response.success:
            association._forget()
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, response.error or "UDP associate failed")
        return association
