"""The runner-side endpoint: ``/ws/tunnel/{container_id}`` and ``/ws/forward/{container_id}/{port}``.

Tunnel clients dial ``/ws/tunnel/{container_id}``; users (the forward CLI,
directly or through the KohakuRiver host) open ``/ws/forward/...``. The
endpoint relays 8-byte-header messages between the two, reading only the
header: payloads are passed on as memoryviews, never copied (tunnel.md 14).

Beyond upstream:

* ids are remapped per forward channel to runner-wide, monotonically
  allocated tunnel ids, and rewritten both ways (D1, D2);
* the tunnel is resolved by container id at CONNECT time, so forward channels
  survive a tunnel reconnect (D5); routes through a tunnel that ends get
  ERROR ``Container tunnel disconnected`` (D5);
* tunnel links are unregistered by identity (D4) and heartbeated (D16;
  forward channels too), so a dead tunnel is not reported ``CONNECTED``;
* a CONNECT whose port differs from the URL port gets ERROR (D10);
* an optional token guards ``/ws/forward`` only (the upstream tunnel client
  sends none): ``Authorization: Bearer TOKEN`` or ``?token=TOKEN``; a missing
  or wrong token gets the text ``Error: unauthorized`` and close code 1008.

Backpressure. Each forward WebSocket has its own MessageWriter, so writes to
one user never queue behind another's. ``buffer_limit`` bounds the bytes
buffered toward one forward WebSocket; when it is reached the slow-consumer
policy applies:

* ``block`` (default; no data is ever dropped): the tunnel's read loop waits
  until that forward channel drains below a quarter of the limit. Other
  forward channels on the same container wait too, exactly as TCP
  backpressure would make them; a forward channel that stays frozen is
  eventually ended by its WebSocket heartbeat, which releases the tunnel.
* ``reset``: DATA for a route whose forward channel is over the limit resets
  just that route: CLOSE to the container, ERROR ``Slow consumer ...`` to the
  user. The tunnel never waits for a user.

The other direction (users -> container) always blocks: a forward channel's
read loop waits while the tunnel's writer is over its high-water mark.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import struct
from typing import Any

from aiohttp import WSMsgType, web

from hatchway.common.lifecycle import Fatal, Service, announce_ready, setup_logging
from hatchway.common.wsconn import ConnectionGone, MessageWriter, accept, serve_app

from .protocol import HEADER_SIZE, MsgType, Proto, pack_header
from .registry import Route, TunnelLink, TunnelRegistry

log = logging.getLogger("hatchway.tunnel.runner")

DEFAULT_PORT = 8001
DEFAULT_HEARTBEAT = 20.0
DEFAULT_BUFFER_LIMIT = 4 * 1024 * 1024
DRAIN_POLL = 0.5  # while a read loop waits for a writer, how often it checks its own WebSocket
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011

_unpack_header = struct.Struct("!BBIH").unpack_from
_CONNECT = int(MsgType.CONNECT)
_CONNECTED = int(MsgType.CONNECTED)
_DATA = int(MsgType.DATA)
_CLOSE = int(MsgType.CLOSE)
_ERROR = int(MsgType.ERROR)
_PING = int(MsgType.PING)
_PROTOS = (int(Proto.TCP), int(Proto.UDP))
_PROTO_NAMES = {"tcp": Proto.TCP, "udp": Proto.UDP}

TEXT_CONNECTED = "CONNECTED"
TEXT_UNAUTHORIZED = "Error: unauthorized"
ERROR_TUNNEL_LOST = "Container tunnel disconnected"
ERROR_SEND_FAILED = "Tunnel send failed"
ERROR_SLOW_CONSUMER = "Slow consumer: forward channel buffer full, connection reset"


def not_connected_text(container_id: str) -> str:
    return f"Container tunnel not connected (container={container_id})"


class ForwardChannel:
    """One WebSocket on ``/ws/forward/{container_id}/{port}`` and the routes it opened."""

    def __init__(self, container_id: str, port: int, proto: Proto, ws: Any, writer: MessageWriter, peer: str) -> None:
        self.container_id = container_id
        self.port = port
        self.proto = proto
        self.ws = ws
        self.writer = writer
        self.peer = peer
        self.routes: dict[int, Route] = {}  # CLI id -> route
        self.closed = False

    def __repr__(self) -> str:
        return f"<ForwardChannel {self.container_id}:{self.port}/{self.proto.name.lower()} from {self.peer}>"


class TunnelEndpoint:
    """The two WebSocket routes and the routing between them; install into any aiohttp app."""

    def __init__(
        self,
        *,
        token: str | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        slow_consumer: str = "block",
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        if slow_consumer not in ("block", "reset"):
            raise ValueError(f"slow_consumer must be 'block' or 'reset', not {slow_consumer!r}")
        self.token = token or None
        self.heartbeat = heartbeat or None
        self.reset_slow = slow_consumer == "reset"
        self.buffer_limit = max(int(buffer_limit), 64 * 1024)
        self.registry = TunnelRegistry()
        self.forwards: set[ForwardChannel] = set()
        self._sockets: dict[web.WebSocketResponse, Any] = {}  # -> its TCP transport

    def install(self, app: web.Application, prefix: str = "") -> None:
        app.router.add_get(prefix + "/ws/tunnel/{container_id}", self.handle_tunnel)
        app.router.add_get(prefix + "/ws/forward/{container_id}/{port}", self.handle_forward)
        app.on_shutdown.append(self._on_shutdown)

    # ------------------------------------------------------------------ tunnel side
    async def handle_tunnel(self, request: web.Request) -> web.StreamResponse:
        container_id = request.match_info["container_id"]
        ws = await accept(request, heartbeat=self.heartbeat)
        link = TunnelLink(container_id, ws, MessageWriter(ws), peer=str(request.remote))
        replaced = self.registry.register(link)
        log.info(
            "tunnel connected: container=%s from %s%s",
            container_id, link.peer, " (replacing an older tunnel)" if replaced is not None else "",
        )
        self._sockets[ws] = request.transport
        try:
            await self._tunnel_loop(link)
        finally:
            self._sockets.pop(ws, None)
            link.closed = True
            self.registry.unregister(link)
            self._tunnel_ended(link)
            link.writer.close()
            link.ended.set()
            await ws.close()
            log.info("tunnel disconnected: container=%s from %s", container_id, link.peer)
        return ws

    async def _tunnel_loop(self, link: TunnelLink) -> None:
        ws = link.ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.BINARY:
                waiting_on = self._from_tunnel(link, msg.data)
                if waiting_on is not None and waiting_on.writer.paused:
                    await wait_drained(waiting_on.writer, link.writer)  # block policy: this user is slow
            elif kind is WSMsgType.TEXT:
                log.debug("container=%s: ignoring a text message from the tunnel client", link.container_id)
            else:
                return

    def _from_tunnel(self, link: TunnelLink, data: bytes) -> ForwardChannel | None:
        """Route one message from the container; returns the forward channel to wait for (block policy)."""
        if len(data) < HEADER_SIZE:
            log.debug("container=%s: dropping a %d-byte message", link.container_id, len(data))
            return None
        type_, proto, tunnel_id, port = _unpack_header(data)
        if type_ == _DATA or type_ == _CONNECTED:
            route = link.routes.get(tunnel_id)
            if route is None:
                return None  # late DATA for a forgotten id (D3): ignored
            forward = route.forward
            if type_ == _DATA and self.reset_slow and forward.writer.buffered >= self.buffer_limit:
                self._reset_route(route)
                return None
            self._to_user(forward, type_, proto, route.cli_id, port, data)
            return None if self.reset_slow else forward
        if type_ == _CLOSE or type_ == _ERROR:
            route = link.routes.pop(tunnel_id, None)
            if route is not None:
                self._unroute_user_side(route)
                self._to_user(route.forward, type_, proto, route.cli_id, port, data)
            return None
        return None  # PONG (and anything else a client should not send): ignored

    def _to_user(self, forward: ForwardChannel, type_: int, proto: int, cli_id: int, port: int, data: bytes) -> None:
        if forward.closed:
            return
        head = pack_header(type_, proto, cli_id, port)
        try:
            if len(data) > HEADER_SIZE:
                forward.writer.send(head, memoryview(data)[HEADER_SIZE:])
            else:
                forward.writer.send(head)
        except ConnectionGone:
            pass  # the forward channel is ending; its handler cleans up

    def _error_to_user(self, forward: ForwardChannel, cli_id: int, text: str, proto: int = 0) -> None:
        if forward.closed:
            return
        try:
            forward.writer.send(pack_header(_ERROR, proto, cli_id, 0), text.encode("utf-8", "replace"))
        except ConnectionGone:
            pass

    def _tunnel_ended(self, link: TunnelLink) -> None:
        """Tell users about every id that was routed through a tunnel that is gone."""
        routes = list(link.routes.values())
        link.routes.clear()
        for route in routes:
            self._unroute_user_side(route)
            self._error_to_user(route.forward, route.cli_id, ERROR_TUNNEL_LOST, route.proto)
        if routes:
            log.info("container=%s: %d connection(s) lost with the tunnel", link.container_id, len(routes))

    # ------------------------------------------------------------------ user side
    async def handle_forward(self, request: web.Request) -> web.StreamResponse:
        container_id = request.match_info["container_id"]
        ws = await accept(request, heartbeat=self.heartbeat)
        refusal = self._check_forward(request, container_id)
        if refusal is not None:
            text, code = refusal
            log.info("forward refused: container=%s from %s: %s", container_id, request.remote, text)
            await _refuse(ws, text, code)
            return ws
        port = int(request.match_info["port"])
        proto = _PROTO_NAMES[request.query.get("proto", "tcp").lower()]
        writer = MessageWriter(ws, high_water=self.buffer_limit, low_water=self.buffer_limit // 4)
        forward = ForwardChannel(container_id, port, proto, ws, writer, str(request.remote))
        self._sockets[ws] = request.transport
        self.forwards.add(forward)
        try:
            await ws.send_str(TEXT_CONNECTED)
            log.info("forward channel opened: container=%s port=%d/%s from %s",
                     container_id, port, proto.name.lower(), forward.peer)
            await self._forward_loop(forward)
        except ConnectionError:
            pass
        finally:
            self._sockets.pop(ws, None)
            self.forwards.discard(forward)
            forward.closed = True
            self._forward_ended(forward)
            writer.close()
            await ws.close()
            log.info("forward channel closed: container=%s port=%d from %s", container_id, port, forward.peer)
        return ws

    def _check_forward(self, request: web.Request, container_id: str) -> tuple[str, int] | None:
        if not self._authorized(request):
            return TEXT_UNAUTHORIZED, CLOSE_POLICY
        port_text = request.match_info["port"]
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return f"Error: invalid port {port_text!r}", CLOSE_POLICY
        proto = request.query.get("proto", "tcp").lower()
        if proto not in _PROTO_NAMES:
            return f"Error: invalid proto {proto!r} (expected tcp or udp)", CLOSE_POLICY
        if self.registry.get(container_id) is None:
            return "Error: " + not_connected_text(container_id), CLOSE_INTERNAL
        return None

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer " and hmac.compare_digest(header[7:].strip().encode(), expected):
            return True
        query = request.query.get("token")
        return query is not None and hmac.compare_digest(query.encode(), expected)

    async def _forward_loop(self, forward: ForwardChannel) -> None:
        ws = forward.ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.BINARY:
                link = self._from_user(forward, msg.data)
                if link is not None and link.writer.paused:
                    await wait_drained(link.writer, forward.writer)  # the tunnel is full: stop reading this user
            elif kind is WSMsgType.TEXT:
                log.debug("%r: ignoring a text message", forward)
            else:
                return

    def _from_user(self, forward: ForwardChannel, data: bytes) -> TunnelLink | None:
        """Route one message from a user; returns the tunnel link it was sent on."""
        if len(data) < HEADER_SIZE:
            return None
        type_, proto, cli_id, port = _unpack_header(data)
        if type_ == _DATA:
            route = forward.routes.get(cli_id)
            if route is None:
                return None  # upstream forwards DATA only for active ids
            return self._to_tunnel(route, _DATA, proto, port, data)
        if type_ == _CONNECT:
            return self._connect(forward, proto, cli_id, port)
        if type_ == _CLOSE:
            route = forward.routes.pop(cli_id, None)
            if route is None:
                return None
            if route.link.routes.get(route.tunnel_id) is route:
                del route.link.routes[route.tunnel_id]
            return self._to_tunnel(route, _CLOSE, proto, port, data)
        if type_ == _PING:
            link = self.registry.get(forward.container_id)
            if link is not None:  # upstream forwards it raw; the PONG is ignored
                try:
                    link.writer.send(data)
                except ConnectionGone:
                    return None
            return link
        return None

    def _connect(self, forward: ForwardChannel, proto: int, cli_id: int, port: int) -> TunnelLink | None:
        if proto not in _PROTOS:
            self._error_to_user(forward, cli_id, f"Invalid protocol 0x{proto:02x}")
            return None
        if port != forward.port:
            self._error_to_user(
                forward, cli_id, f"Port mismatch: CONNECT port {port} is not the forwarded port {forward.port}", proto
            )
            return None
        if cli_id in forward.routes:
            log.debug("%r: duplicate CONNECT for id %d ignored", forward, cli_id)
            return None
        link = self.registry.get(forward.container_id)
        if link is None:
            self._error_to_user(forward, cli_id, not_connected_text(forward.container_id), proto)
            return None
        route = Route(link, self.registry.allocate_id(), forward, cli_id, proto)
        link.routes[route.tunnel_id] = route  # the receiver exists before CONNECT leaves
        forward.routes[cli_id] = route
        return self._to_tunnel(route, _CONNECT, proto, port, b"")

    def _to_tunnel(self, route: Route, type_: int, proto: int, port: int, data: bytes) -> TunnelLink | None:
        link = route.link
        head = pack_header(type_, proto, route.tunnel_id, port)
        try:
            if len(data) > HEADER_SIZE:
                link.writer.send(head, memoryview(data)[HEADER_SIZE:])
            else:
                link.writer.send(head)
        except ConnectionGone:
            if type_ != _CLOSE:
                self._fail_route(route, ERROR_SEND_FAILED)
            return None
        return link

    def _forward_ended(self, forward: ForwardChannel) -> None:
        """CLOSE toward the container for every id the user still had open."""
        routes = list(forward.routes.values())
        forward.routes.clear()
        for route in routes:
            link = route.link
            if link.routes.get(route.tunnel_id) is route:
                del link.routes[route.tunnel_id]
            if link.alive:
                try:
                    link.writer.send(pack_header(_CLOSE, route.proto, route.tunnel_id, 0))
                except ConnectionGone:
                    pass

    # ------------------------------------------------------------------ route helpers
    def _unroute_user_side(self, route: Route) -> None:
        if route.forward.routes.get(route.cli_id) is route:
            del route.forward.routes[route.cli_id]

    def _fail_route(self, route: Route, text: str) -> None:
        if route.link.routes.get(route.tunnel_id) is route:
            del route.link.routes[route.tunnel_id]
        self._unroute_user_side(route)
        self._error_to_user(route.forward, route.cli_id, text, route.proto)

    def _reset_route(self, route: Route) -> None:
        """Reset policy: drop one route whose user cannot keep up."""
        log.warning("%r: id %d is not read fast enough, resetting it", route.forward, route.cli_id)
        link = route.link
        self._fail_route(route, ERROR_SLOW_CONSUMER)
        if link.alive:
            try:
                link.writer.send(pack_header(_CLOSE, route.proto, route.tunnel_id, 0))
            except ConnectionGone:
                pass

    # ------------------------------------------------------------------ shutdown
    async def close(self, timeout: float = 1.0) -> None:
        """Close every WebSocket this endpoint serves (going away); abort those that do not answer."""
        sockets = dict(self._sockets)
        if not sockets:
            return
        closing = {
            asyncio.ensure_future(ws.close(code=CLOSE_GOING_AWAY, message=b"runner shutting down")): transport
            for ws, transport in sockets.items()
        }
        _, pending = await asyncio.wait(closing, timeout=timeout)
        for task in pending:
            transport = closing[task]
            if transport is not None:
                transport.abort()
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()


async def wait_drained(writer: MessageWriter, reader_side: MessageWriter) -> None:
    """Wait until ``writer`` drains; give up early when the WebSocket we stopped reading is gone."""
    while writer.paused and not reader_side.closed:
        try:
            await asyncio.wait_for(writer.drained(), DRAIN_POLL)
        except asyncio.TimeoutError:
            pass


async def _refuse(ws: web.WebSocketResponse, text: str, code: int) -> None:
    try:
        await ws.send_str(text)
    except ConnectionError:
        pass
    await ws.close(code=code, message=text.encode()[:120])


ENDPOINT_KEY = web.AppKey("hatchway_tunnel_endpoint", TunnelEndpoint)


def make_app(
    *,
    token: str | None = None,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
    slow_consumer: str = "block",
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    app: web.Application | None = None,
) -> web.Application:
    """An aiohttp app serving both routes (or add them to ``app``); the endpoint is ``app[ENDPOINT_KEY]``."""
    endpoint = TunnelEndpoint(token=token, heartbeat=heartbeat, slow_consumer=slow_consumer, buffer_limit=buffer_limit)
    app = app if app is not None else web.Application()
    endpoint.install(app)
    app[ENDPOINT_KEY] = endpoint
    return app


class Runner(Service):
    """``async with Runner(host, port) as runner:`` serves the endpoint; port 0 picks a free port."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        slow_consumer: str = "block",
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        self.host = host
        self.port = port
        self.app = make_app(token=token, heartbeat=heartbeat, slow_consumer=slow_consumer, buffer_limit=buffer_limit)
        self.endpoint = self.app[ENDPOINT_KEY]
        self._app_runner: web.AppRunner | None = None

    @property
    def registry(self) -> TunnelRegistry:
        return self.endpoint.registry

    @property
    def url(self) -> str:
        """Base ws:// URL for clients on this machine."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        return f"ws://[{host}]:{self.port}" if ":" in host else f"ws://{host}:{self.port}"

    async def start(self) -> None:
        self._app_runner, bound = await serve_app(self.app, self.host, self.port)
        self.port = bound[0][1]

    async def close(self) -> None:
        if self._app_runner is not None:
            await self.endpoint.close()
            await self._app_runner.cleanup()
            self._app_runner = None


async def run_from_args(args: Any) -> int:
    """``hatchway-tunnel runner``: serve until SIGTERM/SIGINT."""
    setup_logging(args.log_level)
    runner = Runner(
        args.host,
        args.port,
        token=args.token,
        heartbeat=args.heartbeat,
        slow_consumer=getattr(args, "slow_consumer", "block"),
        buffer_limit=getattr(args, "buffer_limit", DEFAULT_BUFFER_LIMIT),
    )
    try:
        await runner.start()
    except OSError as exc:
        raise Fatal(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    try:
        announce_ready(f"runner {args.host}:{runner.port}")
        log.info("runner endpoint listening on %s:%d%s", args.host, runner.port,
                 " (token required on /ws/forward)" if args.token else "")
        await asyncio.Event().wait()
    finally:
        await runner.close()
    return 0
