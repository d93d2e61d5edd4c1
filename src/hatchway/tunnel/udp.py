"""One UDP flow of the tunnel client (tunnel.md section 8).

The socket is bound to 127.0.0.1:0 and connected to 127.0.0.1:port when the
CONNECT arrives, and CONNECTED is sent at once. Each DATA payload is one
datagram to the service; each datagram from the service is one DATA.

Beyond upstream (D11): a receive error (e.g. ICMP port unreachable) sends
CLOSE, a failed socket setup sends ERROR, and a flow idle for
``--udp-idle-timeout`` seconds is released with CLOSE. The hold, drop and
idle rules are :class:`~hatchway.tunnel.udp_flow.UdpFlowState`'s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from hatchway.common.neterr import rust_io_error
from hatchway.common.wsconn import ConnectionGone, MessageWriter

from .mux import ClientMux, Stream
from .udp_flow import UdpFlowState

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"


def open_udp_socket(port: int) -> socket.socket:
    """A non-blocking UDP socket bound to 127.0.0.1:0 and connected to 127.0.0.1:port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((LOCAL_HOST, 0))
        sock.connect((LOCAL_HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


class UdpFlow(asyncio.DatagramProtocol):
    """The tunnel side and the local socket of one UDP client_id."""

    def __init__(
        self,
        writer: MessageWriter,
        stream: Stream,
        mux: ClientMux,
        sock: socket.socket,
        *,
        buffer_limit: int,
        idle_timeout: float,
    ) -> None:
        self.writer = writer
        self.stream = stream
        self.mux = mux
        self.client_id = stream.client_id
        self.port = stream.port
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = sock  # until the transport owns it
        self.idle_timeout = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._header = stream.data_header
        stream.endpoint = self
        self.state = UdpFlowState(buffer_limit, idle_timeout, self._loop.time())
        self._timer: asyncio.TimerHandle | None = None
        self._opening = False

    async def open(self) -> None:
        if self.state.ended:  # a CLOSE came before this task ran: the socket is already closed
            return
        self._opening = True  # from here on the transport owns the socket
        try:
            await self._loop.create_datagram_endpoint(lambda: self, sock=self._sock)
        except OSError as exc:
            log.info("udp %d: socket setup failed: %s", self.client_id, rust_io_error(exc))
            self._finish(notify=True)

    # -- local socket events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.state.ended:
            transport.close()
            return
        self.transport = datagram = cast(asyncio.DatagramTransport, transport)
        self._sock = None
        for one in self.state.take_held():
            datagram.sendto(one)
        if self.idle_timeout > 0:
            self._timer = self._loop.call_later(self.idle_timeout, self._check_idle)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.state.to_runner(self._loop.time(), self.writer.paused):
            return  # ended, or the tunnel is backed up: drop, as a full network would
        try:
            self.writer.send(self._header, data)
        except ConnectionGone:
            pass

    def error_received(self, exc: Exception) -> None:
        log.info("udp %d: %s; closing", self.client_id, rust_io_error(exc))
        self._finish(notify=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(notify=True)

    # -- events from the session's dispatcher
    def feed(self, data: bytes | memoryview) -> None:
        transport = self.transport
        # typeshed lacks get_write_buffer_size on datagram transports
        buffered = 0 if transport is None else cast(asyncio.WriteTransport, transport).get_write_buffer_size()
        if self.state.to_service(data, self._loop.time(), transport is not None, buffered):
            assert transport is not None
            transport.sendto(data)

    def remote_closed(self, error: str | None = None) -> None:
        self._finish(notify=False)

    def remote_eof(self) -> None:
        """Never sent for UDP (a zero-length DATA is an empty datagram there)."""

    def link_lost(self) -> None:
        self._finish(notify=False)

    # -- lifetime
    def _check_idle(self) -> None:
        self._timer = None
        delay = self.state.idle_delay(self._loop.time())
        if delay is None:
            log.info("udp %d: idle for %.0f s, releasing it", self.client_id, self.idle_timeout)
            self._finish(notify=True)
        else:
            self._timer = self._loop.call_later(delay, self._check_idle)

    def _finish(self, notify: bool) -> None:
        if not self.state.end():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        message = self.mux.finished(self.stream) if notify else None
        self.mux.release(self.stream)
        if self.transport is not None:
            self.transport.close()
        elif self._sock is not None and not self._opening:
            self._sock.close()  # never handed to a transport
            self._sock = None
        if message is not None and not self.writer.closed:
            try:
                self.writer.send(message)
            except ConnectionGone:
                pass
