"""One multiplexed TCP stream of the tunnel client, relayed to 127.0.0.1:port.

Life of a stream (tunnel.md sections 5.3 and 7; the rules are the
:class:`~hatchway.tunnel.mux.ClientMux`'s, this class does the I/O):

* CONNECT arrives: the session creates a :class:`TcpStream` for the mux's
  stream *before* dialing, so DATA that arrives meanwhile is held (early DATA).
  Held bytes count against ``--buffer-limit``; past it the slow-consumer
  policy applies (block the tunnel's read loop until the dial ends, or reset).
* The dial succeeds: CONNECTED is sent, then the relay joins the channel and
  the local socket, then the held bytes are written.
* The dial fails: ERROR with the OS error text, and the id is forgotten (D2).
* The service closes: CLOSE is sent and the id forgotten (D2), as upstream
  (a FIN cannot tell a half-close from a close).
* A zero-length DATA (the user's EOF, hatchway's half-close) half-closes the
  service's socket (``write_eof``): the service sees EOF, answers, closes.
* The runner sends CLOSE: queued bytes are delivered, the socket is closed
  (the service sees EOF) and nothing more is sent for the id (D3). That holds
  while dialing too: CONNECT, DATA, CLOSE back to back deliver the DATA.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable

from hatchway.common.gate import InboundGate
from hatchway.common.neterr import rust_io_error
from hatchway.common.relay import Pump, Relay
from hatchway.common.sink import MessageSink, SinkClosed

from .channel import TunnelChannel
from .mux import ClientMux, DialOutcome, Stream

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
LOCAL_HOST_V6 = "::1"


async def dial_local(factory: Callable[[], Pump], port: int, timeout: float, ipv6_fallback: bool) -> asyncio.Transport:
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


class TcpStream(TunnelChannel):
    """The tunnel side of one TCP stream; the local socket is the relay's other end."""

    def __init__(self, writer: MessageSink, gate: InboundGate, stream: Stream, mux: ClientMux, buffer_limit: int) -> None:
        # early DATA is held until the dial ends; past buffer_limit the slow-consumer policy applies
        super().__init__(writer, gate, stream, mux, hold_limit=buffer_limit)
        # few attributes: the port is the stream's, the limit is hold_limit (past 30 attributes CPython stops
        # sharing an instance's dict keys: ~1.3 KB more per stream)
        self.mux = mux
        self.relay: Relay | None = None
        self.local: asyncio.Transport | None = None

    def remote_closed(self, error: str | None = None) -> None:
        if self.protocol is None and error is None and not self.is_closing():
            return  # a runner CLOSE while dialing: the mux recorded it; the dial's outcome decides (D3)
        super().remote_closed(error)

    # -- dial
    async def open(self, timeout: float, ipv6_fallback: bool) -> None:
        limit = self.hold_limit
        assert limit is not None
        relay = Relay(high_water=limit, low_water=max(limit // 4, 1))
        try:
            transport = await dial_local(relay.back, self.stream.port, timeout, ipv6_fallback)
        except (OSError, TimeoutError) as exc:
            self._dial_failed(exc)
            return
        outcome, message = self.mux.dialed(self.stream)
        if outcome is DialOutcome.ABORT or self.is_closing() or message is not None and not self._send(message):
            transport.abort()  # reset while dialing, or the tunnel is gone
            self.fail(None)
            return
        self.relay = relay
        self.local = transport
        self.set_protocol(relay.front())
        relay.join()
        self.start()  # hands over the held early bytes; the early-data pause ends here
        if outcome is DialOutcome.DELIVER_AND_CLOSE:
            super().remote_closed(None)

    def _dial_failed(self, exc: OSError | TimeoutError) -> None:
        if isinstance(exc, TimeoutError) and exc.errno is None:
            exc = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
        text = rust_io_error(exc)
        message = self.mux.failed(self.stream, text)
        if message is not None and not self.is_closing():
            log.info("connection %d: cannot connect to 127.0.0.1:%d: %s", self.client_id, self.stream.port, text)
            self._send(message)
        self.fail(None)

    def _send(self, message: bytes) -> bool:
        if self.writer is None:
            return False
        try:
            self.writer.send(message)
        except SinkClosed:
            return False
        return True
