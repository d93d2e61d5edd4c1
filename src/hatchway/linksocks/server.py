"""The LinkSocks server: WebSocket endpoint, authentication, roles (sections 3, 6, 12, 13).

One aiohttp application: ``/socket`` (and anything under ``/socket/``)
upgrades to a WebSocket, ``/`` is the banner, ``/api/...`` the management API
when an API key is configured, everything else 404.

After authentication (URL-query SHA-256 token, or a binary Auth message) a
link gets one of three roles, from its token:

* **forward** client: the server dials its Connects (``TargetDialer``);
* **reverse** provider: joins the provider pool of its token (round-robin for
  the token's SOCKS port and for connectors); the server is the requester;
* **connector**: its Connects are relayed to a provider of the pool its token
  maps to (``ConnectorRelay``).

Channels are routed by id across every link. Links of one peer, keyed by
(token, instance), share transport grace: channels of a dropped link wait for
the same peer to come back.

Embedding::

    async with Server(ws_host="127.0.0.1", ws_port=0) as server:
        token = server.add_forward_token()
        print(server.ws_address, token)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hatchway.common import wsconn
from hatchway.common.httpapi import HttpServer, TcpAddress
from hatchway.common.lifecycle import Service
from hatchway.common.logsafe import escape
from hatchway.common.tasks import TaskSet

from . import protocol
from .access import AccessRules
from .channel import RESUME_PROBE, ChannelTable
from .connector_relay import ConnectorRelay
from .grace import GraceKeeper
from .link import MAX_MSG_SIZE, Link, call_later
from .options import ServerOptions as ServerOptions  # the public name (hatchway.linksocks.ServerOptions)
from .options import unknown_options
from .orphans import OrphanBuffer
from .protocol import Auth, AuthResponse, Connect, Connector, ConnectorResponse, Log, Partners
from .routing import route
from .target_dialer import TargetDialer
from .tokens import ReverseToken, Role, TokenError, TokenRegistry
from .urls import addresses_text

if TYPE_CHECKING:  # reverse mode's SOCKS5/HTTP front end is imported by the first reverse token
    from .reverse import ProviderPool, ReverseListener

log = logging.getLogger(__name__)

COMPAT_VERSION = "v1.10.3"
PRE_AUTH_BYTES = 64 * 1024  # an honest client sends its upgrade head and (binary auth) one Auth message before it is authenticated
INVALID_AUTH_MESSAGE = "invalid auth message"


class AuthFailed(Exception):
    pass


def client_ip(request: web.Request) -> str:
    """CF-Connecting-IP, else the first X-Forwarded-For entry, else the peer address (3.4)."""
    headers = request.headers
    forwarded = headers.get("CF-Connecting-IP")
    if forwarded:
        return forwarded.strip()
    chain = headers.get("X-Forwarded-For")
    if chain:
        return chain.split(",")[0].strip()
    return request.remote or "?"


def port_is_free(host: str, port: int) -> bool:
    """Can ``host:port`` be bound right now (SO_REUSEADDR, like the listener)?"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Server(Service):
    """A LinkSocks server embedded in the running event loop."""

    def __init__(self, options: ServerOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            unknown = unknown_options(ServerOptions, kwargs)
            if unknown:
                raise TypeError(f"unknown Server options: {', '.join(unknown)}")
            options = ServerOptions(**kwargs)
        self.options = options
        self.entry_rules = options.entry_rules
        self.dial_rules = options.dial_rules
        self.tokens = TokenRegistry(port_is_free=lambda port: port_is_free(options.socks_host, port))
        self.tokens.add_listener(self)
        self.table = ChannelTable()
        self.orphans = OrphanBuffer()
        self.target_dialer = TargetDialer(self.table, self.orphans, upstream=options.upstream_proxy)
        self.connector_relay = ConnectorRelay(self.table, self.orphans, wait=options.connector_wait)
        self.grace = GraceKeeper(options.transport_grace, call_later)
        self.pools: dict[str, ProviderPool] = {}
        self.listeners: dict[str, ReverseListener] = {}
        self.connectors: dict[str, list[Link]] = {}
        self.links: set[Link] = set()
        self.ws_address: tuple[str, int] | None = None
        self.ws_addresses: list[tuple[str, int]] = []
        self._http: HttpServer | None = None
        self._tasks = TaskSet("server", logger=log)
        self._closed = asyncio.Event()
        self._closing = False

    # ------------------------------------------------------------ lifecycle
    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_get("/socket/{tail:.*}", self._handle_socket)
        app.router.add_get("/", self._handle_root)
        if self.options.api_key or self.options.api_keys:
            from . import api

            api.setup(app, self)
        return app

    async def start(self) -> Server:
        app = self.build_app()
        options = self.options
        http = HttpServer(
            app,
            [TcpAddress(options.ws_host, options.ws_port)],
            require="all",
            header_timeout=options.header_timeout,
            max_unauthenticated=options.max_unauthenticated,
            max_unauthenticated_bytes=PRE_AUTH_BYTES,  # aiohttp's 32 MiB message limit cannot be lowered pre-auth
            backlog=4096,
        )
        await http.start()
        self._http = http
        self.ws_addresses = [address for address in http.addresses if isinstance(address, tuple)]
        self.ws_address = self.ws_addresses[0] if self.ws_addresses else None
        log.info("LinkSocks server listening on %s", addresses_text(self.ws_addresses))
        return self

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        for link in list(self.links):
            link.close()
        if self._http is not None:
            await self._http.aclose()
        await self._tasks.aclose()
        await self.connector_relay.close()
        await self.target_dialer.close()
        for endpoint in list(self.table.endpoints.values()):
            endpoint.link_lost()
        self.grace.close()
        for listener in list(self.listeners.values()):
            await listener.close()
        self.orphans.close()
        self._closed.set()

    @property
    def unauthenticated(self) -> int:
        """Connections open that have not authenticated yet (capped by ``max_unauthenticated``)."""
        return self._http.guard.unauthenticated if self._http is not None else 0

    @property
    def pre_auth_overruns(self) -> int:
        """Connections cut for sending more than the pre-authentication byte budget."""
        return self._http.guard.over_budget if self._http is not None else 0

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # ------------------------------------------------------------ tokens (library API)
    def add_forward_token(self, token: str | None = None, rules: AccessRules | None = None) -> str:
        return self.tokens.add_forward(token or "", rules).token

    def add_reverse_token(
        self,
        token: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        allow_manage_connector: bool = False,
        rules: AccessRules | None = None,
    ) -> tuple[str, int]:
        entry = self.tokens.add_reverse(
            token or "", port or 0, username or "", password or "", allow_manage_connector, rules
        )
        return entry.token, entry.port

    def add_connector_token(self, connector_token: str | None, reverse_token: str, rules: AccessRules | None = None) -> str:
        return self.tokens.add_connector(connector_token or "", reverse_token, rules).token

    def remove_token(self, token: str) -> bool:
        return bool(self.tokens.remove(token))

    def reverse_port(self, token: str) -> int | None:
        listener = self.listeners.get(token)
        if listener is None or not listener.bound:
            return None
        return listener.bound[0][1]

    # token listener: called by the registry on every change
    def token_added(self, entry: Any) -> None:
        if isinstance(entry, ReverseToken) and entry.parent is None and not entry.autonomy:
            from .reverse import ReverseListener

            listener = ReverseListener(
                self.table,
                self._pool(entry.token),
                self.options.socks_host,
                entry.port,
                username=entry.username or None,
                password=entry.password or None,
                entry_rules=entry.rules if entry.rules is not None else _Late(self, "entry_rules"),
                fast_open=self.options.fast_open,
                http=self.options.http_proxy,
                linger=self.options.listener_linger,
                provider_wait=self.options.provider_wait,
            )
            self.listeners[entry.token] = listener
            if not self.options.socks_wait_client:
                self._tasks.spawn(self._bind_now(listener))

    async def _bind_now(self, listener: ReverseListener) -> None:
        try:
            await listener.acquire()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", listener.host, listener.port, exc)

    def token_removed(self, entry: Any) -> None:
        token = entry.token
        for link in [link for link in self.links if link.token == token]:
            link.close()
        if isinstance(entry, ReverseToken):
            listener = self.listeners.pop(token, None)
            if listener is not None:
                self._tasks.spawn(listener.close())
            self.pools.pop(token, None)

    def _pool(self, key: str) -> ProviderPool:
        pool = self.pools.get(key)
        if pool is None:
            from .reverse import ProviderPool

            pool = self.pools[key] = ProviderPool(key)
        return pool

    # ------------------------------------------------------------ HTTP routes
    async def _handle_root(self, request: web.Request) -> web.Response:
        if self.options.api_key or self.options.api_keys:
            text = f"LinkSocks {COMPAT_VERSION} is running. API endpoints available at /api/*"
        else:
            text = f"LinkSocks {COMPAT_VERSION} is running but API is not enabled."
        return web.Response(text=text)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ws = await wsconn.accept(request, max_msg_size=MAX_MSG_SIZE, autoping=False)
        peer = escape(client_ip(request), 64)  # from headers: peer-supplied
        link = Link.with_options(ws, self.options, peer)
        try:
            await self._serve_link(request, link)
        except asyncio.CancelledError:
            link.close()
            raise
        finally:
            await link.aclose()
        return ws

    async def _serve_link(self, request: web.Request, link: Link) -> None:
        try:
            auth, instance, query_auth = await self._authenticate(request, link)
        except AuthFailed as exc:
            log.warning("authentication failed from %s: %s", link.name, exc)
            link.try_send(AuthResponse(False, str(exc)))
            return
        except (TimeoutError, ConnectionError, protocol.ProtocolError) as exc:
            log.info("no authentication from %s: %s", link.name, exc or type(exc).__name__)
            return
        link.token = auth.token
        link.role = auth.role
        if auth.role is Role.FORWARD:
            await self._serve_forward(link, auth, instance, request)
        elif auth.role is Role.REVERSE:
            await self._serve_provider(link, auth, instance, query_auth, request)
        else:
            await self._serve_connector(link, auth, instance, request)

    async def _authenticate(self, request: web.Request, link: Link) -> tuple[Any, str, bool]:
        """Returns (Authenticated, instance text, URL-query auth?) or raises AuthFailed."""
        query = request.query
        if "token" in query:
            try:
                auth = self.tokens.resolve_query(query["token"], query.get("reverse"))
            except TokenError as exc:
                raise AuthFailed(str(exc)) from None
            return auth, query.get("instance", "") or str(uuid.uuid4()), True
        message = await self._first_message(link)
        if not isinstance(message, Auth):
            raise AuthFailed(INVALID_AUTH_MESSAGE)
        try:
            auth = self.tokens.resolve(message.token, message.reverse)
        except TokenError as exc:
            raise AuthFailed(str(exc)) from None
        return auth, protocol.uuid_text(message.instance), False

    async def _first_message(self, link: Link) -> protocol.Message:
        """The binary-auth message (SessionEnded, a ConnectionError, when none comes in time)."""
        data = await link.receive_message(self.options.auth_timeout)
        if isinstance(data, str):
            raise AuthFailed(INVALID_AUTH_MESSAGE)
        try:
            return protocol.decode(data)[1]
        except protocol.ProtocolError:
            raise AuthFailed(INVALID_AUTH_MESSAGE) from None

    def _accepted(self, link: Link, what: str, request: web.Request) -> bool:
        if not link.try_send(AuthResponse(True)):
            return False
        if self._http is not None and request.transport is not None:
            self._http.guard.authenticated(request.transport)  # leaves the pre-auth cap
        self.links.add(link)
        log.info("%s authenticated from %s", what, link.name)
        return True

    def _rules(self, token: str, fallback: AccessRules) -> AccessRules | None:
        rules = self.tokens.rules_for(token)
        rules = rules if rules is not None else fallback
        return rules if rules else None

    # ------------------------------------------------------------ forward clients
    async def _serve_forward(self, link: Link, auth: Any, instance: str, request: web.Request) -> None:
        key = (auth.token, instance)
        if not self._accepted(link, "forward client", request):
            return
        self.grace.announce_cut(key, link)  # channels reset at a cut: the peer must not carry them on
        token = auth.token
        table, orphans, target_dialer = self.table, self.orphans, self.target_dialer

        def dispatch(link: Link, message: Any) -> None:
            if route(table, link, message, orphans):
                return
            if type(message) is Connect:
                target_dialer.on_connect(link, message, self._rules(token, self.dial_rules))
            elif type(message) is Log:
                _log_peer(link, message)

        try:
            await link.serve(dispatch)
        finally:
            self._link_gone(link, key)

    # ------------------------------------------------------------ providers
    async def _serve_provider(
        self, link: Link, auth: Any, instance: str, query_auth: bool, request: web.Request
    ) -> None:
        try:
            pool_key = self.tokens.provider_pool(auth.token, None if query_auth else instance)
        except TokenError as exc:
            link.try_send(AuthResponse(False, str(exc)))
            return
        key = (pool_key, instance)
        listener = self.listeners.get(auth.token)
        if listener is not None:
            try:
                await listener.acquire()
            except OSError as exc:
                log.error("cannot listen on %s:%d: %s", listener.host, listener.port, exc)
                link.try_send(AuthResponse(False, f"cannot listen on SOCKS port: {exc}"))
                return
        try:
            if not self._accepted(link, "reverse client", request):
                return
            pool = self._pool(pool_key)
            pool.add(link)
            link.pool_key = pool_key
            self._partners_changed(pool_key)
            resumed = self.grace.resume_requests(key, link, RESUME_PROBE)
            if resumed:
                log.info("resumed %d channel(s) on %s", resumed, link.name)
            table = self.table

            def dispatch(link: Link, message: Any) -> None:
                if route(table, link, message):
                    return
                kind = type(message)
                if kind is Connector:
                    self._on_connector(link, pool_key, message)
                elif kind is Log:
                    _log_peer(link, message)

            try:
                await link.serve(dispatch)
            finally:
                pool.remove(link)
                self._link_gone(link, key)
                self._partners_changed(pool_key)
                if query_auth and not pool.links and self.tokens.get(pool_key) is not None:
                    entry = self.tokens.get(pool_key)
                    if isinstance(entry, ReverseToken) and entry.parent is not None:
                        self.tokens.release_pool(pool_key)
        finally:
            if listener is not None:
                listener.release()

    def _on_connector(self, link: Link, pool_key: str, message: Connector) -> None:
        try:
            token = self.tokens.manage_connector(pool_key, message.operation, message.token)
        except TokenError as exc:
            link.try_send(ConnectorResponse(message.channel_id, False, str(exc)))
            return
        link.try_send(ConnectorResponse(message.channel_id, True, token=token))
        verb = "added" if message.operation == protocol.ADD else "removed"
        log.info("connector token %s by provider %s", verb, link.name)

    # ------------------------------------------------------------ connectors
    async def _serve_connector(self, link: Link, auth: Any, instance: str, request: web.Request) -> None:
        key = (auth.token, instance)
        pool_key = auth.reverse_token
        if not self._accepted(link, "connector", request):
            return
        connectors = self.connectors.setdefault(pool_key, [])
        connectors.append(link)
        link.try_send(Partners(len(self._pool(pool_key))))
        self._partners_changed(pool_key, providers_only=True)
        token = auth.token
        table, orphans, connector_relay = self.table, self.orphans, self.connector_relay

        async def pick_provider(timeout: float) -> Link | None:
            return await self._pool(pool_key).pick(timeout)

        def dispatch(link: Link, message: Any) -> None:
            if route(table, link, message, orphans):
                return
            if type(message) is Connect:
                connector_relay.on_connect(link, message, pick_provider, self._rules(token, self.dial_rules))
            elif type(message) is Log:
                _log_peer(link, message)

        try:
            await link.serve(dispatch)
        finally:
            if link in connectors:
                connectors.remove(link)
            if not connectors:
                self.connectors.pop(pool_key, None)
            self._link_gone(link, key)
            self._partners_changed(pool_key, providers_only=True)

    def _partners_changed(self, pool_key: str, providers_only: bool = False) -> None:
        """Connectors learn how many providers their pool has; providers how many connectors use them."""
        pool = self.pools.get(pool_key)
        connectors = self.connectors.get(pool_key, [])
        if pool is not None:
            for provider in pool.links:
                provider.try_send(Partners(len(connectors)))
        if not providers_only:
            count = len(pool) if pool is not None else 0
            for connector in connectors:
                connector.try_send(Partners(count))

    # ------------------------------------------------------------ link loss
    def _link_gone(self, link: Link, key: Any) -> None:
        self.links.discard(link)
        token_gone = link.token is None or self.tokens.get(link.token) is None
        if self._closing or token_gone:  # nothing can resume: close its channels now
            for endpoint in list(link.channels):
                endpoint.link_lost()
            link.channels.clear()
        else:
            self.grace.link_lost(key, link)
        reason = f": {link.close_reason}" if link.close_reason else ""
        log.info("%s %s disconnected%s", link.role.value if link.role else "client", link.name, reason)


class _Late:
    """Server-wide rules looked up at use time (the API can replace them)."""

    def __init__(self, server: Server, attribute: str) -> None:
        self.server = server
        self.attribute = attribute

    def _rules(self) -> AccessRules:
        return self.server.entry_rules if self.attribute == "entry_rules" else self.server.dial_rules

    def __bool__(self) -> bool:
        return bool(self._rules())

    def allows(self, host: str, port: int, addresses: Any = ()) -> bool:
        return self._rules().allows(host, port, addresses)


def _log_peer(link: Link, message: Log) -> None:
    if protocol.is_hello_log(message):
        return
    log.debug("%s says [%s] %s", link.name, escape(message.level, 16), escape(message.msg, 1024))
