"""``hatchway-tunnel forward TASK_ID REMOTE_PORT``: the user-side forwarder (tunnel.md 16).

One WebSocket to ``{base}/ws/forward/{task_id}/{remote_port}?proto=tcp|udp``
(the KohakuRiver host, or a runner directly), a text handshake (``CONNECTED``
within 10 s, or ``Error: ...``), then a local listener whose connections are
multiplexed over that WebSocket. Ids start at 1 and only go up.

TCP: each accepted connection gets the next id; CONNECT is sent at once and
local bytes follow as DATA without waiting for CONNECTED. The relay is the
common :class:`~hatchway.common.relay.Relay` between the local socket and a
:class:`~hatchway.tunnel.channel.TunnelChannel`. Local EOF sends CLOSE (the
protocol has no half-close); CLOSE from the far side closes the local socket
after its buffered bytes are written; ERROR aborts it and is logged as a
warning with its text.

Slow local readers (no CLI-side head-of-line blocking). Every local socket
buffers what the far side sends it, up to ``buffer_limit`` bytes. Past that:

* ``reset`` (default): only that connection is closed (CLOSE to the far side,
  local socket aborted). The WebSocket is never stopped for one connection,
  so the other connections never wait.
* ``block``: the WebSocket read loop waits until that connection drains
  (upstream behaviour: every connection waits for the slowest). While it
  waits, WebSocket pongs are not read either, so a local reader stalled for
  longer than about 1.5 heartbeats ends the whole forward channel.

Memory is bounded per connection by ``buffer_limit`` (default 16 MiB, what
upstream's 256-message queue can hold); UDP datagrams are dropped, not
queued, while the WebSocket is full.

UDP lives in :mod:`hatchway.tunnel.forward_udp`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
from typing import Any, Protocol as TypingProtocol

import aiohttp
from aiohttp import WSMsgType

from hatchway.common.channel import InboundGate, SlowConsumerPolicy
from hatchway.common.lifecycle import Service, announce_ready, setup_logging
from hatchway.common.relay import Relay
from hatchway.common.wsconn import ConnectionGone, MessageWriter, client_session, dial

from . import protocol
from .channel import TunnelChannel
from .protocol import HEADER_SIZE, MAX_CLIENT_ID, MsgType, Proto

log = logging.getLogger("hatchway.tunnel.forward")

HANDSHAKE_TIMEOUT = 10.0
GATE_POLL = 0.5  # while blocked on a slow local reader, how often to check the WebSocket
DEFAULT_HEARTBEAT = 20.0
DEFAULT_BUFFER_LIMIT = 16 * 1024 * 1024  # upstream buffers up to 256 x 64 KiB per connection
DEFAULT_UDP_IDLE_TIMEOUT = 300.0
DEFAULT_STALL_TIMEOUT = 10.0  # block policy: a local reader that drains nothing this long is reset

_unpack_header = struct.Struct("!BBIH").unpack_from
_DATA = int(MsgType.DATA)
_CLOSE = int(MsgType.CLOSE)
_ERROR = int(MsgType.ERROR)
_CONNECTED = int(MsgType.CONNECTED)


class ForwardError(Exception):
    """The forward channel could not be set up; ``str()`` is the text to show the user."""


class Endpoint(TypingProtocol):
    """What the dispatcher needs from one id's local end (a TCP channel or a UDP flow)."""

    client_id: int

    def feed(self, data: bytes | memoryview) -> None: ...
    def remote_closed(self, error: str | None = None) -> None: ...
    def link_lost(self) -> None: ...


def forward_url(server: str, task_id: str, remote_port: int, proto: str = "tcp") -> str:
    """``{base}/ws/forward/{task_id}/{port}?proto=...``; ``server`` is a ws(s):// base URL or host[:port]."""
    base = server if "://" in server else f"ws://{server}"
    return f"{base.rstrip('/')}/ws/forward/{task_id}/{remote_port}?proto={proto}"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _Acceptor(asyncio.Protocol):
    """Protocol for a freshly accepted local socket: hands it to the forwarder at once."""

    def __init__(self, forwarder: "Forwarder") -> None:
        self.forwarder = forwarder

    def connection_made(self, transport: Any) -> None:
        self.forwarder._accepted(transport)


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
        slow_consumer: str = "block",
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
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
        self.policy = SlowConsumerPolicy(slow_consumer)
        self.buffer_limit = max(int(buffer_limit), 64 * 1024)
        self.handshake_timeout = handshake_timeout
        self.heartbeat = heartbeat or None
        self.endpoints: dict[int, Endpoint] = {}
        self.opened = 0  # ids allocated so far
        self._next_id = 1
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._writer: MessageWriter | None = None
        self._gate = InboundGate(self.policy, stall_timeout)
        self._server: asyncio.AbstractServer | None = None
        self._udp: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ setup
    async def start(self) -> None:
        try:
            await self._open_channel()
            self._writer = MessageWriter(self._ws)  # type: ignore[arg-type]
            await self._listen()
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.ensure_future(self._read_loop())

    async def _open_channel(self) -> None:
        self._session = client_session()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await dial(
                self._session, self.url, heartbeat=self.heartbeat, timeout=self.handshake_timeout, headers=headers
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise ForwardError(f"Error: WebSocket handshake with {self.url} failed: {exc.status} {exc.message}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ForwardError(f"Error: cannot connect to {self.url}: {exc}") from None
        except asyncio.TimeoutError:
            raise ForwardError(f"Error: Timeout connecting to {self.url}") from None
        try:
            msg = await self._ws.receive(timeout=self.handshake_timeout)
        except asyncio.TimeoutError:
            raise ForwardError("Error: Timeout waiting for CONNECTED") from None
        if msg.type is WSMsgType.TEXT:
            if msg.data == "CONNECTED":
                return
            raise ForwardError(msg.data if msg.data.startswith("Error") else f"Error: unexpected reply {msg.data!r}")
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise ForwardError(f"Error: connection closed before CONNECTED (code {self._ws.close_code})")
        raise ForwardError(f"Error: expected CONNECTED, got a {msg.type.name.lower()} message")

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

                self._udp = UdpForward(self)
                self.local_port = await self._udp.start(self.local_host, self.local_port)
        except OSError as exc:
            raise ForwardError(
                f"Error: cannot listen on {self.local_host}:{self.local_port}/{self.proto}: {exc.strerror or exc}"
            ) from None

    # ------------------------------------------------------------------ ids and the table
    def allocate_id(self) -> int:
        client_id = self._next_id
        while client_id in self.endpoints:  # only after a wrap past 2**32 - 1
            client_id = client_id + 1 if client_id < MAX_CLIENT_ID else 1
        self._next_id = client_id + 1 if client_id < MAX_CLIENT_ID else 1
        self.opened += 1
        return client_id

    def forget(self, endpoint: Endpoint) -> None:
        if self.endpoints.get(endpoint.client_id) is endpoint:
            del self.endpoints[endpoint.client_id]

    def send(self, *parts: bytes | memoryview) -> bool:
        """Send one message on the forward channel; False when it is gone."""
        if self._writer is None:
            return False
        try:
            self._writer.send(*parts)
        except ConnectionGone:
            return False
        return True

    @property
    def writer(self) -> MessageWriter:
        assert self._writer is not None
        return self._writer

    # ------------------------------------------------------------------ TCP
    def _accepted(self, transport: asyncio.Transport) -> None:
        if self._closing or self._writer is None:
            transport.abort()
            return
        client_id = self.allocate_id()
        if not self.send(protocol.connect(Proto.TCP, client_id, self.remote_port)):
            transport.abort()
            return
        channel = TunnelChannel(self._writer, self._gate, client_id, Proto.TCP, forget=self.forget)
        self.endpoints[client_id] = channel
        relay = Relay(high_water=self.buffer_limit, low_water=self.buffer_limit // 4)
        relay.adopt(relay.front(), transport)
        channel.set_protocol(relay.back())
        relay.join()
        channel.start()
        log.debug("connection %d from %s", client_id, transport.get_extra_info("peername"))

    # ------------------------------------------------------------------ inbound
    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        gate = self._gate
        try:
            while True:
                if gate.blocked and not await self._wait_gate():
                    break
                msg = await ws.receive()
                if msg.type is WSMsgType.BINARY:
                    self._dispatch(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    log.debug("ignoring a text message: %.80r", msg.data)
                else:
                    break
        finally:
            self._link_down()

    async def _wait_gate(self) -> bool:
        """Block policy: wait for the slow local reader; False when the WebSocket died meanwhile."""
        while self._gate.blocked:
            if self.writer.closed:
                return False
            try:
                await asyncio.wait_for(self._gate.wait_open(), GATE_POLL)
            except asyncio.TimeoutError:
                pass
        return True

    def _dispatch(self, data: bytes) -> None:
        if len(data) < HEADER_SIZE:
            return
        type_, _proto, client_id, _port = _unpack_header(data)
        endpoint = self.endpoints.get(client_id)
        if endpoint is None:
            return
        if type_ == _DATA:
            if len(data) > HEADER_SIZE:
                endpoint.feed(memoryview(data)[HEADER_SIZE:])
        elif type_ == _CLOSE:
            endpoint.remote_closed(None)
        elif type_ == _ERROR:
            text = bytes(data[HEADER_SIZE:]).decode("utf-8", "replace")
            log.warning("connection %d: %s", client_id, text)
            endpoint.remote_closed(text or "error")
        elif type_ == _CONNECTED:
            log.debug("connection %d: connected", client_id)

    def _link_down(self) -> None:
        if not self._closing:
            code = self._ws.close_code if self._ws is not None else None
            log.error("the forward channel closed (code %s)", code)
        for endpoint in list(self.endpoints.values()):
            endpoint.link_lost()
        self.endpoints.clear()
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

    async def close(self) -> None:
        self._closing = True
        self._stop_listening()
        if self._ws is not None and not self._ws.closed:
            try:
                await asyncio.wait_for(self._ws.close(), 2.0)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
            except asyncio.TimeoutError:
                self._reader.cancel()
        else:
            self._link_down()
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def run_from_args(args: Any) -> int:
    """``hatchway-tunnel forward``: forward until the channel ends or SIGTERM/SIGINT."""
    setup_logging(args.log_level)
    server = args.url or f"ws://{_host_for_url(args.server_host)}:{args.server_port}"
    forwarder = Forwarder(
        server,
        args.task_id,
        args.remote_port,
        local_port=args.local_port,
        local_host=args.local_host,
        proto=args.proto,
        token=args.token,
        udp_idle_timeout=args.udp_idle_timeout,
        slow_consumer=args.slow_consumer,
        stall_timeout=args.stall_timeout,
        buffer_limit=getattr(args, "buffer_limit", DEFAULT_BUFFER_LIMIT),
    )
    try:
        await forwarder.start()
    except ForwardError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 1
    try:
        announce_ready(f"forward {forwarder.local_host}:{forwarder.local_port}")
        log.info(
            "forwarding %s:%d/%s -> %s port %d", forwarder.local_host, forwarder.local_port,
            forwarder.proto, args.task_id, args.remote_port,
        )
        await forwarder.wait_closed()
        return 1  # the far side ended the forward channel
    finally:
        await forwarder.close()
