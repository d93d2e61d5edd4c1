"""The runner-side endpoint: ``/ws/tunnel/{container_id}`` and ``/ws/forward/{container_id}/{port}``.

Tunnel clients dial ``/ws/tunnel/{container_id}``; users (the forward CLI,
directly or through the KohakuRiver host) open ``/ws/forward/...``. The
endpoint relays 8-byte-header messages between the two, reading only the
header: payloads are passed on as memoryviews, never copied (tunnel.md 14).

The rules live in sans-I/O modules: routing, id remapping (D1, D2), the
port check (D10), tunnel loss (D5) and the reset policy in
:class:`~hatchway.tunnel.mux.Router`; who may register a container id (D4,
issue #6 items 1-2) in :mod:`~hatchway.tunnel.registry`; the token and the
forward refusals in :mod:`~hatchway.tunnel.access`. This module reads the
WebSockets (through the common :class:`~hatchway.common.muxsession.MuxSession`),
hands each message to the router and sends what it returns. Tunnel links are
heartbeated (D16), so a dead tunnel is not reported ``CONNECTED``. With a
token, ``/ws/tunnel`` without it gets HTTP 401 before any WebSocket exists
(``allow_tokenless_tunnels`` admits upstream clients, with a warning). Served
by :class:`~hatchway.common.httpapi.HttpServer`: a deadline on request heads,
a cap on connections that have not passed their checks (issue #6 items 7-8).

Backpressure: each forward WebSocket has its own sink (writes to one user never
queue behind another's); which reader waits for which sink is
:meth:`~hatchway.tunnel.mux.Router.deliver`'s decision.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from hatchway.common.gate import Drainable, SlowConsumerPolicy
from hatchway.common.httpapi import GUARD_KEY, HttpServer, TcpAddress
from hatchway.common.lifecycle import Service
from hatchway.common.logsafe import escape
from hatchway.common.muxsession import MuxSession
from hatchway.common.sink import SinkClosed
from hatchway.common.tasks import TaskSet
from hatchway.common.wsconn import WebSocketSink
from hatchway.common.wsserver import accept

from .access import (
    CLOSE_POLICY,
    PROTO_NAMES,
    TEXT_CONNECTED,
    TEXT_TAKEN,
    Admission,
    forward_refusal,
    presented_token,
    tunnel_admission,
)
from .link_handlers import ForwardHandler, TunnelHandler
from .links import ForwardLink, TunnelLink
from .mux import Output, Router, not_connected_text
from .registry import TunnelRegistry

log = logging.getLogger(__name__)

DEFAULT_PORT = 8001
DEFAULT_HEARTBEAT = 20.0
DEFAULT_BUFFER_LIMIT = 4 * 1024 * 1024
CLOSE_GOING_AWAY = 1001
REFUSAL_MAX_MESSAGE = 4096  # a refused WebSocket never needs to read more than a Close frame
PRE_AUTH_BYTES = 64 * 1024  # what a connection may send before it passed its checks (issue #6 item 7)


__all__ = ["DEFAULT_PORT", "ENDPOINT_KEY", "Runner", "TunnelEndpoint", "make_app", "not_connected_text"]


class TunnelEndpoint:
    """The two WebSocket routes and the routing between them; install into any aiohttp app."""

    def __init__(
        self,
        *,
        token: str | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        slow_consumer: str | SlowConsumerPolicy = SlowConsumerPolicy.BLOCK,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        allow_tokenless_tunnels: bool = False,
    ) -> None:
        policy = SlowConsumerPolicy.parse(slow_consumer)
        self.token = token or None
        self.heartbeat = heartbeat or None
        self.allow_tokenless_tunnels = allow_tokenless_tunnels
        self.buffer_limit = max(int(buffer_limit), 64 * 1024)
        self.router = Router(reset_slow=policy is SlowConsumerPolicy.RESET)
        self.registry: TunnelRegistry[TunnelLink] = TunnelRegistry(
            guarded=self.token is not None, on_register=self._registered
        )
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.forwards: set[ForwardLink] = set()
        self._sessions: set[MuxSession] = set()
        if self.token is not None and allow_tokenless_tunnels:
            log.warning("tunnel clients without the token are admitted (compatibility switch): "
                        "anyone who reaches this runner can register a container id nobody holds")

    # ------------------------------------------------------------------ registration waits
    def _registered(self, container_id: str) -> None:
        for waiter in self._waiters.pop(container_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_registered(self, container_id: str, *, other_than: TunnelLink | None = None) -> TunnelLink:
        """Until a live link (other than ``other_than``) is current for ``container_id``."""
        while True:
            link = self.registry.get(container_id)
            if link is not None and link is not other_than:
                return link
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(container_id, []).append(waiter)
            try:
                await waiter
            finally:
                waiters = self._waiters.get(container_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)

    def install(self, app: web.Application, prefix: str = "") -> None:
        app.router.add_get(prefix + "/ws/tunnel/{container_id}", self.handle_tunnel)
        app.router.add_get(prefix + "/ws/forward/{container_id}/{port}", self.handle_forward)
        app.on_shutdown.append(self._on_shutdown)

    # ------------------------------------------------------------------ sending what the router says
    def deliver(self, outputs: list[Output]) -> Drainable | None:
        """Send each output; returns the sink the reading side should wait for (the rule is Router.deliver's)."""
        return self.router.deliver(outputs)

    # ------------------------------------------------------------------ auth
    def _presented(self, request: web.Request) -> str | None:
        """The token the request carries, if it is the right one."""
        return presented_token(self.token, request.headers.get("Authorization", ""), request.query.get("token"))

    @staticmethod
    def _authenticated(request: web.Request) -> None:
        """The connection passed its checks: it no longer counts against the unauthenticated cap."""
        guard = request.app.get(GUARD_KEY)
        if guard is not None and request.transport is not None:
            guard.authenticated(request.transport)

    # ------------------------------------------------------------------ tunnel side
    async def handle_tunnel(self, request: web.Request) -> web.StreamResponse:
        container_id = request.match_info["container_id"]
        peer = str(request.remote)
        credential = self._presented(request)
        admission = tunnel_admission(self.token, credential, allow_tokenless=self.allow_tokenless_tunnels)
        if admission is Admission.REFUSE:
            log.warning("tunnel refused: container=%s from %s: missing or wrong token", escape(container_id), peer)
            return web.Response(status=401, text="unauthorized", headers={"WWW-Authenticate": "Bearer"})
        if admission is Admission.ADMIT_WITHOUT_TOKEN:
            log.warning("tunnel without a token admitted: container=%s from %s", escape(container_id), peer)
        self._authenticated(request)  # before the upgrade: its first frames must not count as pre-auth bytes
        ws = await accept(request, heartbeat=self.heartbeat)
        link = TunnelLink(container_id, ws, WebSocketSink(ws), peer, credential)
        replacing = self.registry.replaces(link)
        if not self.registry.register(link):
            log.warning("tunnel refused: container=%s from %s: the id is held by a live tunnel",
                        escape(container_id), peer)
            await _refuse(ws, TEXT_TAKEN, CLOSE_POLICY)
            return ws
        log.info("tunnel connected: container=%s from %s%s", escape(container_id), peer,
                 " (replacing an older tunnel)" if replacing else "")
        session = MuxSession(ws, TunnelHandler(self.router, link), sink=link.sink, name=f"tunnel {escape(container_id)}",
                             survive_handler_errors=True)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)
            link.alive = False
            self.registry.unregister(link)
            lost = self.router.tunnel_ended(link)
            self.deliver(lost)
            if lost:
                log.info("container=%s: %d connection(s) lost with the tunnel", escape(container_id), len(lost))
            await session.close()
            link.ended.set()
            log.info("tunnel disconnected: container=%s from %s", escape(container_id), peer)
        return ws

    # ------------------------------------------------------------------ user side
    async def handle_forward(self, request: web.Request) -> web.StreamResponse:
        container_id = request.match_info["container_id"]
        refusal = self._check_forward(request, container_id)
        if refusal is not None:
            text, code = refusal
            ws = await accept(request, max_msg_size=REFUSAL_MAX_MESSAGE)
            log.info("forward refused: container=%s from %s: %s", escape(container_id), request.remote, escape(text))
            await _refuse(ws, text, code)
            return ws
        self._authenticated(request)
        ws = await accept(request, heartbeat=self.heartbeat)
        port = int(request.match_info["port"])
        proto = PROTO_NAMES[request.query.get("proto", "tcp").lower()]
        sink = WebSocketSink(ws, high_water=self.buffer_limit, low_water=self.buffer_limit // 4)
        link = ForwardLink(container_id, port, proto, ws, sink, str(request.remote))
        session = MuxSession(ws, ForwardHandler(self.router, self.registry, link), sink=sink, name=repr(link), survive_handler_errors=True)
        self.forwards.add(link)
        self._sessions.add(session)
        try:
            sink.send_text(TEXT_CONNECTED)
            log.info("forward channel opened: container=%s port=%d/%s from %s",
                     escape(container_id), port, proto.name.lower(), link.peer)
            await session.run()
        except SinkClosed:
            pass
        finally:
            self._sessions.discard(session)
            self.forwards.discard(link)
            self.deliver(self.router.forward_ended(link))
            await session.close()
            log.info("forward channel closed: container=%s port=%d from %s", escape(container_id), port, link.peer)
        return ws

    def _check_forward(self, request: web.Request, container_id: str) -> tuple[str, int] | None:
        return forward_refusal(
            container_id, request.match_info["port"], request.query.get("proto", "tcp"),
            authorized=self.token is None or self._presented(request) is not None,
            tunnel_live=self.registry.get(container_id) is not None,
        )

    # ------------------------------------------------------------------ shutdown
    async def close(self, timeout: float = 1.0) -> None:
        """Close every WebSocket this endpoint serves (going away); abort those that do not answer."""
        sessions = list(self._sessions)
        if not sessions:
            return
        for session in sessions:
            session.sink.mark_closing()
        async with TaskSet("runner shutdown", logger=log) as closing:
            for session in sessions:
                closing.spawn(session.ws.close(code=CLOSE_GOING_AWAY, message=b"runner shutting down"),
                              name=f"close {session.name}")
            _, pending = await asyncio.wait(list(closing), timeout=timeout)
            for session in sessions:
                if not session.ws.closed:
                    session.sink.abort()
            if pending:
                await asyncio.wait(pending, timeout=timeout)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()


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
    slow_consumer: str | SlowConsumerPolicy = SlowConsumerPolicy.BLOCK,
    buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    allow_tokenless_tunnels: bool = False,
    app: web.Application | None = None,
) -> web.Application:
    """An aiohttp app serving both routes (or add them to ``app``); the endpoint is ``app[ENDPOINT_KEY]``."""
    endpoint = TunnelEndpoint(
        token=token, heartbeat=heartbeat, slow_consumer=slow_consumer, buffer_limit=buffer_limit,
        allow_tokenless_tunnels=allow_tokenless_tunnels,
    )
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
        slow_consumer: str | SlowConsumerPolicy = SlowConsumerPolicy.BLOCK,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        allow_tokenless_tunnels: bool = False,
        **serving: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.app = make_app(
            token=token, heartbeat=heartbeat, slow_consumer=slow_consumer, buffer_limit=buffer_limit,
            allow_tokenless_tunnels=allow_tokenless_tunnels,
        )
        self.endpoint = self.app[ENDPOINT_KEY]
        # HttpServer options: header_timeout, max_unauthenticated, max_unauthenticated_bytes, ...
        self._serving: dict[str, Any] = {"max_unauthenticated_bytes": PRE_AUTH_BYTES, **serving}
        self.server: HttpServer | None = None

    @property
    def registry(self) -> TunnelRegistry[TunnelLink]:
        return self.endpoint.registry

    async def wait_registered(self, container_id: str, *, other_than: TunnelLink | None = None) -> TunnelLink:
        return await self.endpoint.wait_registered(container_id, other_than=other_than)

    @property
    def url(self) -> str:
        """Base ws:// URL for clients on this machine."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        return f"ws://[{host}]:{self.port}" if ":" in host else f"ws://{host}:{self.port}"

    async def start(self) -> None:
        server = HttpServer(self.app, [TcpAddress(self.host, self.port)], require="all", **self._serving)
        await server.start()
        self.server = server
        first = server.addresses[0]
        assert isinstance(first, tuple)
        self.port = first[1]

    async def aclose(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await self.endpoint.close()
            await server.aclose()
