"""The LinkSocks client: forward client, connector, or provider (``-r``).

One :class:`Client` runs ``threads`` WebSocket connections to the server, each
with its own reconnect loop (1 s x 1.5 up to 10 min, reset after a connection
that had authenticated). In forward/connector mode it offers the local
SOCKS5/HTTP port (opened after the first successful authentication unless
``socks_wait_server`` is false) and every request becomes a channel on one of
its links (round-robin per channel; all of a channel's messages stay on that
link). As a provider it dials the targets of the server's Connect messages.

Transport grace: when a link drops, its TCP channels are suspended for
``transport_grace`` seconds. A requester re-attaches them to the next link by
sending their Connect again with Resume = 1; a provider waits for the
server's Resume. Channels not resumed in time are closed.

Embedding::

    async with Client("token", url="ws://127.0.0.1:8765", socks_port=0) as client:
        await client.wait_ready()
        print(client.socks_address)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from hatchway.common import wsconn
from hatchway.common.lifecycle import Service
from hatchway.common.logsafe import escape
from hatchway.common.neterr import go_dial_error
from hatchway.common.proxyfront import ProxyFront
from hatchway.common.reconnect import Backoff, reconnect_loop
from hatchway.common.tasks import TaskSet

from . import protocol
from .channel import RESUME_PROBE, ChannelTable
from .channel_dialer import ChannelDialer
from .grace import GraceKeeper
from .link import MAX_MSG_SIZE, Link, call_later, pick_within
from .options import LinkSocksClientOptions, thread_count, unknown_options
from .orphans import OrphanBuffer
from .protocol import Auth, AuthResponse, Connect, Connector, ConnectorResponse, Log, Partners
from .routing import route
from .target_dialer import TargetDialer
from .urls import (
    MAX_REDIRECTS,
    addresses_text,
    env_proxy,
    normalize_url,
    redirect_target,
    same_host,
    uses_query_auth,
    with_query,
)

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 30.0
CONNECTOR_WAIT = 10.0
DIAL_TIMEOUT = 30.0


class AuthError(Exception):
    """The server refused the token."""


ClientOptions = LinkSocksClientOptions  # the public name (hatchway.linksocks.ClientOptions)


def dial_error_text(exc: BaseException, url: str) -> str:
    """A WebSocket dial failure in Go's words (no 'ssl:default' decoration for a plain ws:// URL)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return go_dial_error(exc.os_error, "tcp", f"{exc.host}:{exc.port}")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        parts = urlsplit(url)
        return go_dial_error(TimeoutError(), "tcp", f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"bad handshake: HTTP {exc.status}"
    return str(exc) or type(exc).__name__


class Client(Service):
    """A LinkSocks client embedded in the running event loop."""

    def __init__(self, token: str | None = None, options: ClientOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            unknown = unknown_options(LinkSocksClientOptions, kwargs)
            if unknown:
                raise TypeError(f"unknown Client options: {', '.join(unknown)}")
            options = LinkSocksClientOptions(**kwargs)
        if token is not None:
            options.token = token
        options.token = options.token or "anonymous"
        self.options = options
        self.url = normalize_url(options.url)
        self.instance = uuid.uuid4().bytes
        self.table = ChannelTable()
        self.orphans = OrphanBuffer()
        self.links: list[Link] = []
        self.partners = 0
        self.error: BaseException | None = None
        self.last_failure = ""  # why the last connection attempt failed (Go's wording)
        self._rr = 0
        self._link_up = asyncio.Event()
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._threads = TaskSet("WebSocket connections", logger=log)  # one task per -T connection
        self._front: ProxyFront | None = None
        self._front_lock = asyncio.Lock()
        self.grace = GraceKeeper(options.transport_grace, call_later)
        self._connector_tokens: list[str] = []
        self._connector_waiters: dict[bytes, asyncio.Future[ConnectorResponse]] = {}
        self._tasks = TaskSet("client", logger=log)
        self._closing = False
        rules = self._rules()
        self.target_dialer = TargetDialer(self.table, self.orphans, upstream=options.upstream_proxy)
        self._dial_rules = rules if options.reverse else None
        self._entry_allowed = rules.allows if (rules is not None and not options.reverse) else None
        self.channel_dialer = ChannelDialer(self.table, self.pick_link, fast_open=options.fast_open, link_wait=options.link_wait)
        if options.reverse and options.connector_token:
            self._connector_tokens.append(options.connector_token)

    def _rules(self) -> Any:
        if not self.options.access_rules:
            return None
        from .access import AccessRules, parse_rule_flag

        return AccessRules([parse_rule_flag(text) for text in self.options.access_rules])

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> Client:
        options = self.options
        self._session = wsconn.client_session()
        if not options.reverse and not options.socks_wait_server:
            await self._ensure_front()
        for index in range(thread_count(options.threads)):
            self._threads.spawn(self._run_thread(index), name=f"connection #{index}")
        self._tasks.spawn(self._watch_threads(), name="connections watcher")
        return self

    async def _watch_threads(self) -> None:
        await self._threads.join()
        self._done.set()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the first successful authentication (and the SOCKS port, in forward mode)."""
        async with TaskSet("wait_ready", logger=log) as waiters:  # both cancelled and awaited on the way out
            ready = waiters.spawn(self._ready.wait(), name="ready")
            done = waiters.spawn(self._done.wait(), name="done")
            await asyncio.wait({ready, done}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.error is not None:
            raise self.error
        if not self._ready.is_set():
            if self._done.is_set():
                raise ConnectionError(self.last_failure or "client stopped before it connected")
            raise TimeoutError("client did not connect in time")

    async def wait_closed(self) -> None:
        """Until the client stops (no reconnect, fatal auth error, or close())."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._threads.cancel()
        for link in list(self.links):
            link.close()
        await self._threads.aclose()
        await self._tasks.aclose()
        for endpoint in list(self.table.endpoints.values()):
            endpoint.link_lost()
        self.grace.close()
        await self.target_dialer.close()
        if self._front is not None:
            await self._front.close()
        if self._session is not None:
            await self._session.close()
        self.orphans.close()
        self._done.set()

    @property
    def socks_address(self) -> tuple[str, int] | None:
        if self._front is None or not self._front.bound:
            return None
        host, port = self._front.bound[0][:2]
        return host, port

    # ------------------------------------------------------------ connections
    def reconnect_backoff(self) -> Backoff:
        """The reconnect policy: 1 s x 1.5 per failed attempt up to 10 min, reset once established."""
        options = self.options
        return Backoff(options.reconnect_initial, options.reconnect_factor, options.reconnect_max)

    async def _run_thread(self, index: int) -> None:
        options = self.options
        backoff = self.reconnect_backoff()

        async def attempt() -> bool:
            return await self._connect_once(index)

        try:
            await reconnect_loop(attempt, backoff, reconnect=options.reconnect)
        except AuthError as exc:
            log.error("%s", exc)
            self.error = exc
            for task in self._threads:
                if task is not asyncio.current_task():
                    task.cancel()  # the other connections: the token is refused for all of them

    async def _connect_once(self, index: int) -> bool:
        try:
            ws = await self._dial()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.last_failure = dial_error_text(exc, self.url)
            log.warning("connection to %s failed: %s", self.url, self.last_failure)
            return False
        name = f"{self.url}#{index}"
        link = Link.with_options(ws, self.options, name)
        try:
            await self._authenticate(link)
        except AuthError as exc:
            await link.aclose()
            if self.options.retry_auth:
                log.error("%s; retrying", exc)
                return False
            raise
        except (TimeoutError, ConnectionError, protocol.ProtocolError) as exc:
            log.warning("authentication with %s failed: %s", self.url, exc or type(exc).__name__)
            await link.aclose()
            return False
        await self._on_link_up(link)
        try:
            await link.serve(self._dispatch)
        finally:
            self._on_link_down(link)
        log.info("WebSocket %s closed%s", name, f": {link.close_reason}" if link.close_reason else "")
        return True

    async def _dial(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        url = self.url
        query_auth = uses_query_auth(url)
        if query_auth:
            url = with_query(url, self._auth_query())
        for _ in range(MAX_REDIRECTS + 1):
            try:
                return await wsconn.dial(
                    self._session,
                    url,
                    max_msg_size=MAX_MSG_SIZE,
                    timeout=DIAL_TIMEOUT,
                    autoping=False,
                    proxy=self._env_proxy(url),
                )
            except aiohttp.WSServerHandshakeError as exc:
                location = exc.headers.get("Location") if exc.headers else None
                if not (301 <= exc.status <= 308 and location):
                    raise
                target = redirect_target(url, location)
                if not same_host(url, target):
                    # the raw token (binary auth) or its hash (URL-query auth) must not go to another host
                    raise aiohttp.ClientError(
                        f"refusing a redirect from {urlsplit(url).hostname} to another host ({escape(urlsplit(target).hostname, 64)})"
                    ) from None
                url = target
                if query_auth and "token=" not in url:
                    url = with_query(url, self._auth_query())
                log.debug("redirected to %s", url)
        raise aiohttp.ClientError(f"more than {MAX_REDIRECTS} redirects")

    def _env_proxy(self, url: str) -> str | None:
        return None if self.options.no_env_proxy else env_proxy(url)

    @property
    def stopped(self) -> bool:
        """Every connection loop has ended (no reconnect, a fatal auth error, or close())."""
        return self._done.is_set()

    @property
    def connector_tokens(self) -> list[str]:
        """Connector tokens this provider adds after every (re)connect."""
        return list(self._connector_tokens)


    def _auth_query(self) -> dict[str, str]:
        return {
            "token": protocol.token_hash(self.options.token),
            "reverse": "true" if self.options.reverse else "false",
            "instance": str(uuid.UUID(bytes=self.instance)),
        }

    async def _authenticate(self, link: Link) -> None:
        if not uses_query_auth(self.url):
            link.send(Auth(self.options.token, self.options.reverse, self.instance))
        async with asyncio.timeout(AUTH_TIMEOUT):
            while True:  # (anything before the AuthResponse is skipped, as Go does)
                data = await link.receive_message(AUTH_TIMEOUT)
                if isinstance(data, bytes):
                    _, message = protocol.decode(data)
                    if isinstance(message, AuthResponse):
                        break
        if not message.success:
            raise AuthError(f"authentication failed: {message.error or 'invalid token'}")
        if message.token and self.options.token == "anonymous":
            self.options.token = message.token

    async def _on_link_up(self, link: Link) -> None:
        first_link = not self.links
        self.links.append(link)
        mode = "provider" if self.options.reverse else "forward"
        log.info("authenticated as %s on %s", mode, link.name)
        self._resume_channels(link)
        if not self.options.reverse:
            await self._ensure_front()
        self._link_up.set()
        self._ready.set()
        if self.options.reverse and first_link and self._connector_tokens:
            self._tasks.spawn(self._readd_connectors(), name="re-add connector tokens")

    def _on_link_down(self, link: Link) -> None:
        if link in self.links:
            self.links.remove(link)
        if not self.links:
            self._link_up.clear()
        if self._closing:
            for endpoint in list(link.channels):
                endpoint.link_lost()
            link.channels.clear()
        else:
            self.grace.link_lost(None, link)
        for waiter in self._connector_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("WebSocket closed"))

    def _resume_channels(self, link: Link) -> None:
        """Re-attach suspended channels: a requester sends Connect(Resume=1); a provider waits for it."""
        if self.options.reverse:
            return
        count = self.grace.resume_requests(None, link, RESUME_PROBE)
        if count:
            log.info("resumed %d channel(s) on %s", count, link.name)

    async def pick_link(self, timeout: float) -> Link | None:
        """The next live link, round-robin per channel; waits up to ``timeout`` for one."""
        return await pick_within(self._next_link, self._link_up, timeout, lambda: self._closing)

    def _next_link(self) -> Link | None:
        links = [link for link in self.links if link.alive]
        if not links:
            return None
        self._rr = (self._rr + 1) % len(links)
        return links[self._rr]

    async def _ensure_front(self) -> None:
        async with self._front_lock:
            if self._front is not None or self._closing:
                return
            options = self.options
            front = ProxyFront(
                self.channel_dialer,
                options.socks_host,
                options.socks_port,
                username=options.socks_username,
                password=options.socks_password,
                http=options.http_proxy,
                entry_allowed=self._entry_allowed,
                realm="LinkSocks",
                unsupported_command_reply=None,  # upstream closes the connection on BIND
            )
            await front.start()
            self._front = front
            log.info("SOCKS5/HTTP proxy listening on %s", addresses_text(front.bound))

    # ------------------------------------------------------------ messages
    def _dispatch(self, link: Link, message: Any) -> None:
        if route(self.table, link, message, self.orphans if self.options.reverse else None):
            return
        kind = type(message)
        if kind is Connect:
            if self.options.reverse:
                self.target_dialer.on_connect(link, message, self._dial_rules)
            else:
                log.debug("Connect ignored: not a provider")
        elif kind is ConnectorResponse:
            waiter = self._connector_waiters.pop(message.channel_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
        elif kind is Partners:
            self.partners = message.count
            log.debug("partners: %d", message.count)
        elif kind is Log:
            if not protocol.is_hello_log(message):
                log.info("server: [%s] %s", escape(message.level, 16), escape(message.msg, 1024))

    # ------------------------------------------------------------ connector tokens (provider)
    async def add_connector(self, token: str | None = None) -> str:
        """Ask the server to add a connector token for our reverse token (autonomy); returns it."""
        response = await self._connector_request(token or "", protocol.ADD)
        if not response.success:
            raise RuntimeError(f"connector add failed: {response.error}")
        added = response.token or token or ""
        if added and added not in self._connector_tokens:
            self._connector_tokens.append(added)
        return added

    async def remove_connector(self, token: str) -> None:
        response = await self._connector_request(token, protocol.REMOVE)
        if token in self._connector_tokens:
            self._connector_tokens.remove(token)
        if not response.success:
            raise RuntimeError(f"connector remove failed: {response.error}")

    async def _connector_request(self, token: str, operation: int) -> ConnectorResponse:
        link = await self.pick_link(CONNECTOR_WAIT)
        if link is None:
            raise ConnectionError("not connected")
        request_id = protocol.new_channel_id()
        waiter: asyncio.Future[ConnectorResponse] = asyncio.get_running_loop().create_future()
        self._connector_waiters[request_id] = waiter
        try:
            link.send(Connector(request_id, token, operation))
            async with asyncio.timeout(CONNECTOR_WAIT):
                return await waiter
        finally:
            self._connector_waiters.pop(request_id, None)

    async def _readd_connectors(self) -> None:
        for token in list(self._connector_tokens):
            try:
                added = await self.add_connector(token)
                log.info("connector token added: %s", added)
            except (TimeoutError, RuntimeError, ConnectionError) as exc:
                log.warning("could not add connector token %s: %s", token, exc)
