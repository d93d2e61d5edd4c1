"""Reverse mode on the server: provider pools and per-token SOCKS listeners (section 12).

* :class:`ProviderPool`: the provider links of one reverse token (or of one
  autonomy provider), in authentication order. ``pick`` is round-robin per
  request and waits up to the caller's timeout for a provider.
* :class:`ReverseListener`: the SOCKS5/HTTP port of a reverse token. Bound
  when the first provider authenticates (or at once with ``--socks-nowait``),
  reference counted, and closed 30 s after the last provider left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from hatchway.common.proxyfront import ProxyFront
from hatchway.common.tasks import TaskSet

from .channel_dialer import ChannelDialer
from .link import pick_within
from .routing import Rotation
from .urls import addresses_text

if TYPE_CHECKING:
    from .link import Link

log = logging.getLogger(__name__)

LINGER = 30.0
PROVIDER_WAIT = 10.0
NO_PROVIDER = "no available reverse clients"


class ProviderPool(Rotation["Link"]):
    """Provider links serving one reverse token (round-robin: :class:`~.routing.Rotation`), with a wait."""

    def __init__(self, name: str = "") -> None:
        self._joined = asyncio.Event()
        super().__init__(name, self._joined.set)

    async def pick(self, timeout: float) -> Link | None:
        """The next live provider (round-robin), waiting up to ``timeout`` s; None if there is none."""
        return await pick_within(self.next_alive, self._joined, timeout)


class ReverseListener:
    """The SOCKS5/HTTP port of one reverse token, served by its provider pool."""

    def __init__(
        self,
        table: Any,
        pool: ProviderPool,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        entry_rules: Any = None,
        fast_open: bool = False,
        http: bool = True,
        linger: float = LINGER,
        provider_wait: float = PROVIDER_WAIT,
    ) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.linger = linger
        self.channel_dialer = ChannelDialer(table, pool.pick, fast_open=fast_open, link_wait=provider_wait,
                                   no_link_error=NO_PROVIDER)
        self.entry_rules = entry_rules
        self.front = ProxyFront(
            self.channel_dialer,
            host,
            port,
            username=username,
            password=password,
            http=http,
            entry_allowed=self._entry_allowed,
            realm="LinkSocks",
            unsupported_command_reply=None,  # upstream closes the connection on BIND
        )
        self.refs = 0
        self.started = False
        self._linger_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet("reverse listener", logger=log)
        self._lock = asyncio.Lock()

    def _entry_allowed(self, host: str, port: int) -> bool:
        rules = self.entry_rules
        return not rules or bool(rules.allows(host, port))

    @property
    def bound(self) -> list[tuple[str, int]]:
        return self.front.bound

    async def acquire(self) -> None:
        """One more provider (or the no-wait option) needs the port: bind it if needed."""
        self.refs += 1
        if self._linger_task is not None:
            self._linger_task.cancel()
            self._linger_task = None
        async with self._lock:
            if not self.started:
                await self.front.start()
                self.started = True
                log.info("SOCKS5 for reverse clients listening on %s", addresses_text(self.front.bound))

    def release(self) -> None:
        """A provider left; close the port ``linger`` s after the last one."""
        self.refs = max(0, self.refs - 1)
        if self.refs == 0 and self.started and self._linger_task is None:
            self._linger_task = self._tasks.spawn(self._close_later(), name=f"linger {self.host}:{self.port}")

    async def _close_later(self) -> None:
        await asyncio.sleep(self.linger)
        self._linger_task = None
        if self.refs == 0:
            await self.close()

    async def close(self) -> None:
        if self._linger_task is not None and self._linger_task is not asyncio.current_task():
            self._linger_task.cancel()
            self._linger_task = None
        async with self._lock:
            if self.started:
                self.started = False
                await self.front.close()
                log.info("SOCKS5 port %s:%d closed", self.host, self.port)
