"""The dialing side of a channel: answer Connect by dialing the target.

Used by the server in forward mode and by a provider (linksocks.md section 7).
On Connect the channel is created and registered *at once*, so Data that
arrives while the dial is in flight is kept (bounded, see ``TcpChannel``);
Data that arrived even before the Connect is taken from the orphan buffer.
The dial goes directly or through the upstream proxy (``-x``) with a 10 s
timeout; ConnectResponse carries Go's error text on failure.

A Connect with Resume = 1 re-attaches a live channel to the link it came on
and never dials; for an unknown channel it is answered with Disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from hatchway.common import dialer as dialing
from hatchway.common.dialing import ProxyError
from hatchway.common.neterr import go_dial_error
from hatchway.common.relay import Relay
from hatchway.common.tasks import TaskSet

from . import protocol
from .channel import CHANNEL_EXPIRED, ChannelTable, TcpChannel
from .orphans import OrphanBuffer
from .protocol import Connect, ConnectResponse, Disconnect
from .routing import ConnectStep, connect_step, replay_early
from .udp import UdpDial

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0
ACCESS_DENIED = "access denied"  # a ConnectResponse error starting with this is a dial-rule refusal (SOCKS 0x02)



def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TargetDialer:
    """Dials targets for Connect messages arriving on links."""

    def __init__(
        self,
        table: ChannelTable,
        orphans: OrphanBuffer,
        *,
        upstream: str | None = None,
        dial_timeout: float = DIAL_TIMEOUT,
    ) -> None:
        self.table = table
        self.orphans = orphans
        self.upstream = upstream
        self.dial_timeout = dial_timeout
        self._tasks = TaskSet("dials", logger=log)
        self.dials = 0  # Connect messages answered by dialing (statistics, tests)

    def on_connect(self, link: Any, message: Connect, rules: Any = None) -> None:
        """``rules``: the dial access rules (``AccessRules``) for this peer, if any."""
        channel_id = message.channel_id
        existing = self.table.get(channel_id)
        step = connect_step(message, existing is not None)
        if step is ConnectStep.RESUME:
            log.debug("channel %s resumed on %s", protocol.uuid_text(channel_id), link.name)
            if isinstance(existing, TcpChannel):
                existing.resume_from_peer(link, message.received)
            elif isinstance(existing, UdpDial):
                existing.rebind(link)
            else:
                link.try_send(Disconnect(channel_id, CHANNEL_EXPIRED))
            return
        if step is ConnectStep.EXPIRED:
            link.try_send(Disconnect(channel_id, CHANNEL_EXPIRED))
            return
        if step is ConnectStep.DUPLICATE:
            log.debug("duplicate Connect for channel %s ignored", protocol.uuid_text(channel_id))
            return
        if step is ConnectStep.OPEN_UDP:
            endpoint: Any = UdpDial(self.table, channel_id, link, rules)
            work = self._open_udp(endpoint)
        else:
            ledger = message.received is not None  # a hatchway requester: number, acknowledge, re-send on Resume
            endpoint = TcpChannel(self.table, channel_id, link, message.address, message.port,
                                  offer_ledger=ledger, peer_ledger=ledger)
            work = self._dial(endpoint, rules)
        replay_early(endpoint, link, self.orphans.take(channel_id))
        self._tasks.spawn(work)

    async def _dial(self, channel: TcpChannel, rules: Any) -> None:
        host, port = channel.address, channel.port
        if rules and not await allowed_by(rules, host, port):
            self._refuse(channel, f"{ACCESS_DENIED}: {join_host_port(host, port)} is not allowed")
            return
        if not 0 < port < 65536:
            self._refuse(channel, f"invalid port number: {port}")
            return
        relay = Relay()
        self.dials += 1
        try:
            transport, _ = await dialing.open_tcp(
                host, port, relay.back, upstream=self.upstream, timeout=self.dial_timeout
            )
        except ProxyError as exc:
            self._refuse(channel, exc.message)
            return
        except (TimeoutError, OSError) as exc:
            self._refuse(channel, go_dial_error(exc, "tcp", join_host_port(host, port)))
            return
        except asyncio.CancelledError:
            channel.abort()
            raise
        if channel.is_closing() or channel.suspended:
            transport.abort()
            if not channel.is_closing():
                channel.expire()
            return
        received = channel.ledger.received if channel.peer_ledger else None
        try:
            channel.link.send(ConnectResponse(True, channel.id, received=received))
        except ConnectionError:
            transport.abort()
            channel.link_lost()
            return
        channel.established = True
        channel.set_protocol(relay.front())
        relay.join()
        channel.start()  # hands over the data held while dialing; pauses are now a slow local reader

    def _refuse(self, channel: TcpChannel, error: str) -> None:
        log.debug("connect to %s:%d failed: %s", channel.address, channel.port, error)
        if not channel.is_closing():
            channel.link.try_send(ConnectResponse(False, channel.id, error))
        channel.fail()

    async def _open_udp(self, endpoint: UdpDial) -> None:
        try:
            await endpoint.open()
        except OSError as exc:  # neither [::]:0 nor 0.0.0.0:0 could be bound
            endpoint.link.try_send(ConnectResponse(False, endpoint.id, f"listen udp: {exc}"))
            endpoint.close_local()
            return
        endpoint.link.try_send(ConnectResponse(True, endpoint.id))

    async def close(self) -> None:
        await self._tasks.aclose()


async def allowed_by(rules: Any, host: str, port: int) -> bool:
    """Check access rules, resolving ``host`` first when the rules need its addresses."""
    addresses: list[str] = []
    if rules.needs_addresses(host, port):
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        addresses = [str(info[4][0]) for info in infos]
    return bool(rules.allows(host, port, addresses))
