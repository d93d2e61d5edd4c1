"""UDP side of the forward CLI: the local socket of a forwarder (tunnel.md 8, 16; fixes D6).

The rules (one stream per source address, idle expiry, drops while the
WebSocket is full) are :class:`~hatchway.tunnel.udp_sources.UdpSources`'s;
this module owns the socket and the idle timers.
"""

from __future__ import annotations

import asyncio
import logging

from .udp_sources import Address, StreamOpener, UdpSource, UdpSources

log = logging.getLogger(__name__)


class UdpForward(asyncio.DatagramProtocol):
    """The local UDP socket of a forwarder and its source table."""

    def __init__(self, forwarder: StreamOpener, idle_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.sources = UdpSources(forwarder, idle_timeout, self._send_to, self._loop.time, self._cancel_timer)

    async def start(self, host: str, port: int) -> int:
        self.transport, _ = await self._loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        bound: int = self.transport.get_extra_info("sockname")[1]
        return bound

    @property
    def dropped(self) -> int:
        return self.sources.dropped

    def datagram_received(self, data: bytes, addr: Address) -> None:
        new = self.sources.datagram(data, addr)
        if new is not None:
            log.debug("udp flow %d from %s", new.client_id, addr)
            if self.sources.idle_timeout > 0:
                new.handle = self._loop.call_at(new.last + self.sources.idle_timeout, self._check_idle, new)

    def error_received(self, exc: Exception) -> None:
        log.debug("local UDP socket error: %s", exc)

    def _send_to(self, data: bytes | memoryview, addr: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def _check_idle(self, source: UdpSource) -> None:
        source.handle = None
        deadline = self.sources.idle_check(source)
        if deadline is not None:
            source.handle = self._loop.call_at(deadline, self._check_idle, source)
        else:
            log.debug("udp flow %d from %s released", source.client_id, source.addr)

    @staticmethod
    def _cancel_timer(source: UdpSource) -> None:
        if isinstance(source.handle, asyncio.TimerHandle):
            source.handle.cancel()
        source.handle = None

    def close(self) -> None:
        self.sources.clear()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
