"""Reverse (callback) mode: the agent dials the backend and serves the same protocol on that socket.

* URL: a leading ``http:`` becomes ``ws:``, ``https:`` becomes ``wss:``;
  ``ws:``/``wss:`` are used as given.
* ``Authorization: Bearer <token>`` on the upgrade when a token is set.
* Retries: unlimited by default (``limit`` > 0 gives up after that many
  consecutive failures, exit 1); capped exponential backoff 1, 2, 4 ... 30 s
  with jitter, reset after a connection that was established (common/'s
  reconnect loop). Upstream allowed 10 attempts per lifetime, never reset.
* A WebSocket heartbeat (ping every 20 s, dead peer after 10 s more).
* The token never reaches the logs: the URL is logged with its ``token``
  query parameter redacted.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from hatchway.common.reconnect import Backoff, reconnect_loop
from hatchway.common.wsclient import client_session, dial

from .connection import Connection
from .protocol import MAX_MESSAGE
from .runtime import AgentRuntime

__all__ = ["ReverseDialer", "redact_url", "ws_url"]

log = logging.getLogger("hatchway.agent")

HEARTBEAT = 20.0


def ws_url(url: str) -> str:
    if url.startswith("http:"):
        return "ws:" + url[5:]
    if url.startswith("https:"):
        return "wss:" + url[6:]
    return url


def redact_url(url: str) -> str:
    """``url`` with the values of ``token`` query parameters and any userinfo password replaced."""
    parts = urlsplit(url)
    query = urlencode([(k, "REDACTED" if k.lower() == "token" else v) for k, v in parse_qsl(parts.query, True)])
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class ReverseDialer:
    """Dial ``url`` again and again, serving each established socket until it drops."""

    def __init__(self, url: str, runtime: AgentRuntime, *, token: str = "", limit: int = 0,
                 backoff: Backoff | None = None, heartbeat: float = HEARTBEAT) -> None:
        self.url = ws_url(url)
        self.runtime = runtime
        self.token = token
        self.limit = limit
        self.backoff = backoff if backoff is not None else Backoff(initial=1.0, factor=2.0, maximum=30.0, jitter=0.2)
        self.heartbeat = heartbeat
        self.attempts = 0
        self.connected = 0
        self.current: Connection | None = None

    async def run(self) -> None:
        """Returns never; raises GaveUp after ``limit`` consecutive failures."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with client_session() as session:

            async def attempt() -> bool:
                self.attempts += 1
                log.info("reverse connect %s (attempt %d)", redact_url(self.url), self.attempts)
                try:
                    ws = await dial(session, self.url, headers=headers, heartbeat=self.heartbeat or None,
                                    max_msg_size=MAX_MESSAGE)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("reverse connect failed: %s", _reason(exc, self.token))
                    return False
                self.connected += 1
                log.info("reverse connected to %s", redact_url(self.url))
                connection = Connection(ws, self.runtime, name="agent reverse connection")
                self.current = connection
                try:
                    ended = await connection.serve()
                finally:
                    self.current = None
                log.info("reverse connection ended: %s", ended)
                return True

            await reconnect_loop(attempt, self.backoff, max_failures=self.limit)


def _reason(exc: BaseException, token: str) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace(token, "REDACTED") if token else text
