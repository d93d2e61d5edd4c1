"""``hatchway-tunnel forward TASK_ID REMOTE_PORT``: the user-side forwarder (tunnel.md 16).

One WebSocket to ``{base}/ws/forward/{task_id}/{remote_port}?proto=tcp|udp``
(the KohakuRiver host, or a runner directly), a text handshake (``CONNECTED``
within 10 s, or ``Error: ...``), then a local listener whose connections are
multiplexed over that WebSocket. Ids start at 1 and only go up.

TCP: each accepted connection gets the next id; CONNECT is sent at once and
local bytes follow as DATA without waiting for CONNECTED (the ids and the
message rules are :class:`~hatchway.tunnel.mux.ForwardMux`'s). The relay is
the common :class:`~hatchway.common.relay.Relay` between the local socket and
a :class:`~hatchway.tunnel.channel.TunnelChannel`. A local EOF is sent on as
a zero-length DATA (hatchway's half-close) and the stream stays open so the
reply still arrives (issue #6 item 15); the far side's half-close
half-closes the local socket. The stream ends when the far side closes it,
the local socket fails, or (a peer that ignores the EOF) the far side stays
silent for ``eof_linger`` seconds after it. CLOSE from the far side closes the local socket after its
buffered bytes are written; ERROR, the loss of the WebSocket or a stall reset
resets it (never a clean FIN: issue #6 item 4), and ERROR's text is logged.

Slow local readers. Every local socket buffers what the far side sends it, up
to ``buffer_limit`` bytes. Past that:

* ``block`` (default, upstream behaviour): the WebSocket read loop waits until
  that connection drains; a reader that drains nothing for ``stall_timeout``
  seconds is reset so the others go on.
* ``reset``: only that connection is reset (CLOSE to the far side). The
  WebSocket is never stopped for one connection.

Memory is bounded per connection by ``buffer_limit`` (default 16 MiB, what
upstream's 256-message queue can hold); UDP datagrams are dropped, not
queued, while the WebSocket is full.

UDP lives in :mod:`hatchway.tunnel.forward_udp`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp

from hatchway.common.gate import Drainable, InboundGate, SlowConsumerPolicy
from hatchway.common.lifecycle import Service
from hatchway.common.muxsession import EndKind, MuxSession, SessionEnded
from hatchway.common.relay import Relay
from hatchway.common.tasks import TaskSet
from hatchway.common.wsclient import client_session, dial
from hatchway.common.wsconn import WebSocketSink

from .channel import REPLY_LINGER, TunnelChannel
from .forward_streams import ForwardStreams
from .mux import ForwardError, ForwardMux
from .protocol import Proto
from .urls import forward_url

if TYPE_CHECKING:
    from .forward_udp import UdpForward

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
DEFAULT_HEARTBEAT = 20.0
DEFAULT_BUFFER_LIMIT = 16 * 1024 * 1024  # upstream buffers up to 256 x 64 KiB per connection
DEFAULT_UDP_IDLE_TIMEOUT = 300.0
DEFAULT_STALL_TIMEOUT = 10.0  # block policy: a local reader that drains nothing this long is reset


class _Acceptor(asyncio.Protocol):
    """Protocol for a freshly accepted local socket: hands it to the forwarder at once."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.forwarder.accepted(transport)  # type: ignore[arg-type]


class Forwarder(Service):
    """``async with Forwarder(server, task_id, remote_port) as fwd:`` forwards ``fwd.local_port``.

    ``server`` is a base URL (``ws://runner:8001``, ``wss://host``) or ``host[:port]``.
    """

    def __init__(
        self,
        server: str,
        task_id: str,
        remote_port: int,
        *,
        local_port: int | None = None,
        local_host: str = "127.0.0.1",
        proto: str = "tcp",
        token: str | None = None,
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        slow_consumer: str | SlowConsumerPolicy = SlowConsumerPolicy.BLOCK,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        eof_linger: float | None = REPLY_LINGER,
    ) -> None:
        if proto not in ("tcp", "udp"):
            raise ValueError(f"proto must be 'tcp' or 'udp', not {proto!r}")
        self.url = forward_url(server, task_id, remote_port, proto)
        self.task_id = task_id
        self.remote_port = remote_port
        self.local_host = local_host
        self.local_port = remote_port if local_port is None else local_port
        self.proto = proto
        self.token = token or None
        self.udp_idle_timeout = udp_idle_timeout
        self.policy = SlowConsumerPolicy.parse(slow_consumer)
        self.buffer_limit = max(int(buffer_limit), 64 * 1024)
        self.handshake_timeout = handshake_timeout
        self.heartbeat = heartbeat or None
        self.eof_linger = eof_linger  # far-side silence after a user's EOF before the stream is reset
        self.mux = ForwardMux(remote_port)
        self.streams = ForwardStreams(self.mux)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._writer: WebSocketSink | None = None
        self._reading: MuxSession | None = None
        self.gate = InboundGate(self.policy, stall_timeout)
        self._server: asyncio.AbstractServer | None = None
        self._udp: UdpForward | None = None
        self._tasks = TaskSet("forward channel", logger=log)
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        try:
            await self._open_channel()
            await self._listen()
        except BaseException:
            await self.aclose()
            raise
        self._reader = self._tasks.spawn(self._read_loop(), name="forward read loop")

    async def _open_channel(self) -> None:
        self._http = client_session()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await dial(
                self._http, self.url, heartbeat=self.heartbeat, timeout=self.handshake_timeout, headers=headers
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise ForwardError(f"Error: WebSocket handshake with {self.url} failed: {exc.status} {exc.message}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ForwardError(f"Error: cannot connect to {self.url}: {exc}") from None
        except TimeoutError:
            raise ForwardError(f"Error: Timeout connecting to {self.url}") from None
        self._writer = self.streams.sink = WebSocketSink(self._ws)
        self._reading = MuxSession(self._ws, self, sink=self._writer, gate=self.gate, name="forward channel")
        try:
            first = await self._reading.receive_message(self.handshake_timeout)
        except SessionEnded as exc:
            if exc.ended.kind is EndKind.HANDSHAKE_TIMEOUT:
                raise ForwardError("Error: Timeout waiting for CONNECTED") from None
            raise ForwardError(f"Error: connection closed before CONNECTED (code {self._ws.close_code})") from None
        ForwardMux.handshake(first)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.proto == "tcp":
                self._server = await loop.create_server(
                    lambda: _Acceptor(self), self.local_host, self.local_port, reuse_address=True
                )
                self.local_port = self._server.sockets[0].getsockname()[1]
            else:
                from .forward_udp import UdpForward

                self._udp = UdpForward(self.streams, self.udp_idle_timeout)
                self.local_port = await self._udp.start(self.local_host, self.local_port)
        except OSError as exc:
            raise ForwardError(
                f"Error: cannot listen on {self.local_host}:{self.local_port}/{self.proto}: {exc.strerror or exc}"
            ) from None

    # ------------------------------------------------------------------ TCP
    def accepted(self, transport: asyncio.Transport) -> None:
        if self._closing or self._writer is None:
            transport.abort()
            return
        stream = self.streams.open_stream(Proto.TCP)
        if stream is None:
            transport.abort()
            return
        # the user's EOF goes on as a zero-length DATA and the stream stays open: a user that sends, shuts
        # down its write side and waits for the reply still gets it (issue #6 item 15)
        channel = TunnelChannel(self._writer, self.gate, stream, self.mux, half_close=True, eof_linger=self.eof_linger)
        relay = Relay(high_water=self.buffer_limit, low_water=self.buffer_limit // 4)
        relay.adopt(relay.front(), transport)
        channel.set_protocol(relay.back())
        relay.join()
        channel.start()
        log.debug("connection %d from %s", stream.client_id, transport.get_extra_info("peername"))

    # ------------------------------------------------------------------ inbound
    async def _read_loop(self) -> None:
        assert self._reading is not None
        try:
            await self._reading.run()
        finally:
            self._link_down()

    # -- the MuxSession's handler
    def binary_received(self, data: bytes) -> Drainable | None:
        self.streams.receive(data)
        return None

    def text_received(self, text: str) -> Drainable | None:
        log.debug("ignoring a text message: %.80r", text)
        return None

    def _link_down(self) -> None:
        if not self._closing:
            code = self._ws.close_code if self._ws is not None else None
            log.error("the forward channel closed (code %s)", code)
        self.streams.lost()
        self.gate.close()
        self._stop_listening()
        if not self.done.done():
            self.done.set_result(None)

    # ------------------------------------------------------------------ shutdown
    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()

    async def wait_closed(self) -> None:
        """Until the forward channel ends (the far side closed it, or close() was called)."""
        await asyncio.shield(self.done)

    async def aclose(self) -> None:
        self._closing = True
        self._stop_listening()
        if self._reading is not None:
            await self._reading.close()  # no data frame after our Close; the peer's within 2 s, else abort
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
            except TimeoutError:
                pass
            await self._tasks.aclose()
        else:
            self._link_down()
        if self._server is not None:
            await self._server.wait_closed()
        if self._http is not None:
            await self._http.close()
            self._http = None
