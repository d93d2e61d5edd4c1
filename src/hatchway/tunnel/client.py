"""The KohakuRiver-compatible tunnel client: dial the runner, relay, reconnect.

    async with TunnelClient("ws://runner:8001", "kohakuriver-task-1") as client:
        await client.connected()      # a live tunnel
        ...
    # leaving the block closes the WebSocket with a close frame

``await client.run()`` runs the reconnect loop in the foreground (the CLI). It
raises :class:`TunnelGaveUp` after ``max_reconnect`` consecutive failed
attempts plus one more delay (tunnel.md section 12.1).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import yarl

from hatchway.common.lifecycle import Service
from hatchway.common.reconnect import GaveUp, reconnect_loop
from hatchway.common.tasks import TaskSet
from hatchway.common.wsclient import dial

from .options import ClientOptions
from .session import TunnelSession
from .urls import dialable_url, tunnel_url

log = logging.getLogger(__name__)

TunnelGaveUp = GaveUp
# The upgrade request carries only Host, Connection, Upgrade, Sec-WebSocket-Version
# and Sec-WebSocket-Key, like upstream's (tunnel.md section 4.2).
SKIPPED_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")


def default_ssl_context() -> ssl.SSLContext:
    """The system trust store, plus $SSL_CERT_FILE / $SSL_CERT_DIR when set."""
    context = ssl.create_default_context()
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        context.load_verify_locations(cafile=cafile or None, capath=capath or None)
    return context


class TunnelClient(Service):
    """Keeps one tunnel WebSocket to the runner up and relays its connections."""

    def __init__(
        self,
        runner_url: str,
        container_id: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_connected: Callable[[TunnelSession], None] | None = None,
        **options: Any,
    ) -> None:
        self.runner_url = runner_url
        self.container_id = container_id
        self.url = tunnel_url(runner_url, container_id)
        self.options = ClientOptions.from_kwargs(**options)
        # A URL that cannot be dialled is a failed attempt (retried under max_reconnect), as upstream.
        self._url_problem: str | None = None
        self._wire_url: yarl.URL | None = None
        try:
            self._wire_url = dialable_url(runner_url, container_id)
        except ValueError as exc:
            self._url_problem = str(exc)
        self._dials = 0  # TCP connections opened for the current attempt
        self.on_connected = on_connected
        self.session: TunnelSession | None = None
        self.connections_made = 0
        self._ssl_context = ssl_context
        self._live: asyncio.Event | None = None
        self._tasks = TaskSet("tunnel client", logger=log)
        self._background: asyncio.Task[None] | None = None
        self._stopped = False  # the background run ended (see _failure)
        self._failure: BaseException | None = None

    # -- foreground
    async def run(self) -> None:
        """Connect, relay, reconnect: until cancelled or until it gives up (TunnelGaveUp)."""
        self._live_event()
        ssl_context = self._ssl_context
        if ssl_context is None and self.url.lower().startswith("wss:"):
            ssl_context = default_ssl_context()
        connector = aiohttp.TCPConnector(force_close=True, limit=0, ssl=ssl_context or True)
        # One attempt is one dial, as upstream: aiohttp re-sends an idempotent request once when
        # the server drops it, so the second connection of an attempt is refused here.
        one_dial = aiohttp.TraceConfig()
        one_dial.on_connection_create_start.append(self._one_dial_per_attempt)
        async with aiohttp.ClientSession(
            connector=connector, skip_auto_headers=SKIPPED_HEADERS, trace_configs=[one_dial]
        ) as http:
            await reconnect_loop(
                lambda: self._attempt(http),
                self.options.backoff_policy(),
                max_failures=self.options.max_reconnect,
            )

    async def _one_dial_per_attempt(self, _session: object, _ctx: SimpleNamespace, _params: object) -> None:
        self._dials += 1
        if self._dials > 1:
            raise aiohttp.ServerDisconnectedError("the runner closed the connection during the handshake")

    async def _attempt(self, http: aiohttp.ClientSession) -> bool:
        """One tunnel connection; True when its handshake succeeded (resets the failure count)."""
        options = self.options
        if self._wire_url is None:
            log.warning("cannot connect to %s: %s", self.url, self._url_problem)
            return False
        self._dials = 0
        headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
        try:
            ws = await dial(
                http,
                self._wire_url,
                heartbeat=options.heartbeat or None,
                max_msg_size=options.max_message_size,
                timeout=options.connect_timeout or None,  # None = no deadline
                headers=headers,
            )
        except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as exc:
            log.warning("cannot connect to %s: %s", self.url, exc or type(exc).__name__)
            return False
        session = TunnelSession(ws, options)
        self.session = session
        self.connections_made += 1
        log.info("tunnel connected to %s", self.url)
        self._live_event().set()
        if self.on_connected is not None:
            self.on_connected(session)
        try:
            await session.run()
        finally:
            self._live_event().clear()
            self.session = None
            await session.close()
        log.info("tunnel to %s closed", self.url)
        return True

    # -- background
    async def start(self) -> None:
        """Run the reconnect loop as a background task."""
        if self._background is None:
            self._live_event()
            self._stopped = False
            self._failure = None
            self._background = self._tasks.spawn(self._run_in_background(), name=f"tunnel client {self.url}")

    async def _run_in_background(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # kept for connected(); a GaveUp after close() is not an error
            self._failure = exc
        finally:
            self._stopped = True
            self._live_event().set()  # wakes connected() so it reports the end

    async def connected(self, timeout: float | None = None) -> TunnelSession:
        """Wait for a live tunnel and return its session (raises if the client stopped)."""
        live = self._live_event()
        async with asyncio.timeout(timeout):
            while True:
                if self._stopped:
                    if self._failure is not None:
                        raise self._failure
                    raise RuntimeError("the tunnel client has stopped")
                if live.is_set() and self.session is not None:
                    return self.session
                await live.wait()  # set while a session is live, and when the client stops

    async def aclose(self) -> None:
        """Stop: close the WebSocket with a close frame and end the reconnect loop."""
        if self._background is None:
            return
        self._background = None
        await self._tasks.aclose()
        self._tasks = TaskSet("tunnel client", logger=log)

    def _live_event(self) -> asyncio.Event:
        if self._live is None:
            self._live = asyncio.Event()
        return self._live
