"""One TCP connection of the tunnel client: a TunnelChannel relayed to 127.0.0.1:port.

Life of a connection (tunnel.md sections 5.3 and 7):

* CONNECT arrives: the session creates a :class:`TcpConnection` and registers
  it *before* dialing, so DATA that arrives meanwhile is held (early DATA).
  Held bytes count against ``--buffer-limit``; past it the slow-consumer
  policy applies (block the tunnel's read loop until the dial ends, or reset).
* The dial succeeds: CONNECTED is sent, then the relay joins the channel and
  the local socket, then the held bytes are written.
* The dial fails: ERROR with the OS error text, and the entry is dropped (D2).
* The service closes: CLOSE is sent and the entry dropped (D2).
* The runner sends CLOSE: queued bytes are delivered, the socket is closed
  (the service sees EOF) and nothing more is sent for the id (D3). That holds
  while dialing too: CONNECT, DATA, CLOSE back to back deliver the DATA.

Outbound DATA payloads are capped at 65,536 bytes (a local read may be larger:
it is sliced, without copying).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import TYPE_CHECKING, Any

from hatchway.common.channel import Channel
from hatchway.common.neterr import rust_io_error
from hatchway.common.relay import Relay
from hatchway.common.wsconn import ConnectionGone, MessageWriter

from . import protocol
from .channel import TunnelChannel
from .protocol import MAX_DATA_PAYLOAD, Proto

if TYPE_CHECKING:
    from .session import TunnelSession

log = logging.getLogger("hatchway.tunnel.client")

LOCAL_HOST = "127.0.0.1"
LOCAL_HOST_V6 = "::1"


async def dial_local(factory: Any, port: int, timeout: float, ipv6_fallback: bool) -> asyncio.Transport:
    """Connect to 127.0.0.1:port (then ::1 if that is refused and the fallback is on)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout or None):
            transport, _ = await loop.create_connection(factory, LOCAL_HOST, port)
        return transport
    except ConnectionRefusedError as refused:
        if not ipv6_fallback:
            raise
        try:
            async with asyncio.timeout(timeout or None):
                transport, _ = await loop.create_connection(factory, LOCAL_HOST_V6, port)
        except OSError:
            raise refused from None
        log.debug("connection to port %d: 127.0.0.1 refused, connected to [::1]", port)
        return transport


class TcpConnection(TunnelChannel):
    """The tunnel side of one TCP connection; the local socket is the relay's other end."""

    def __init__(self, session: "TunnelSession", client_id: int, port: int) -> None:
        super().__init__(session.writer, session.gate, client_id, Proto.TCP, forget=session.forget)
        self.port = port
        self.limit = session.options.buffer_limit
        self.relay: Relay | None = None
        self.local: asyncio.Transport | None = None
        self._early = 0
        self._deliver_held = False  # a runner CLOSE came while dialing: deliver early bytes, then close

    # -- outbound: at most 64 KiB per DATA
    def _send_data(self, writer: MessageWriter, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        if size <= MAX_DATA_PAYLOAD:
            if size:
                writer.send(self._data_header, data)
            return
        view = memoryview(data)
        header = self._data_header
        for start in range(0, size, MAX_DATA_PAYLOAD):
            writer.send(header, view[start : start + MAX_DATA_PAYLOAD])

    # -- inbound
    def feed(self, data: bytes | memoryview) -> None:
        if self.protocol is not None:
            Channel.feed(self, data)
            return
        Channel.feed(self, data)  # held until the dial finishes
        if not self._lost:
            self._early += len(data)
            if self._early > self.limit:
                Channel.pause_reading(self)  # the slow-consumer policy, before the relay exists

    def remote_closed(self, error: str | None = None) -> None:
        if self.protocol is None and not self._lost:
            self._deliver_held = bool(self._held)  # as for an open connection (D3): queued bytes go out
        super().remote_closed(error)

    # -- dial
    async def open(self, timeout: float, ipv6_fallback: bool) -> None:
        relay = Relay(high_water=self.limit, low_water=max(self.limit // 4, 1))
        try:
            transport = await dial_local(relay.back, self.port, timeout, ipv6_fallback)
        except (OSError, TimeoutError) as exc:
            self._dial_failed(exc)
            return
        if self._lost:  # runner CLOSE, a reset or the tunnel's end while dialing: nothing more is sent
            if self._deliver_held:
                transport.writelines(self._held)
            self._held = []
            transport.close()
            return
        self._start(relay, transport)

    def _dial_failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError) and getattr(exc, "errno", None) is None:
            exc = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
        text = rust_io_error(exc)
        if self._lost:
            return
        log.info("connection %d: cannot connect to 127.0.0.1:%d: %s", self.client_id, self.port, text)
        self._closing = True
        self._send(protocol.error(self.client_id, text))
        self._lose(None)

    def _start(self, relay: Relay, transport: asyncio.Transport) -> None:
        self.relay = relay
        self.local = transport
        if not self._send(protocol.connected(Proto.TCP, self.client_id)):
            transport.abort()
            self._lose(None)
            return
        held, self._held = self._held, []
        front = relay.front()
        self.set_protocol(front)
        relay.join()
        self.start()
        if self._paused_reading:  # the early-data pause ends here; writing the held bytes re-pauses if needed
            self.resume_reading()
        for chunk in held:
            front.data_received(chunk)

    def _send(self, message: bytes) -> bool:
        try:
            self.writer.send(message)  # type: ignore[union-attr]
        except ConnectionGone:
            return False
        return True
