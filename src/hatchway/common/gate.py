"""The inbound gate: the one slow-consumer policy of every multiplexed program.

Many channels share one inbound stream (a WebSocket, a pipe). When the local
socket one channel writes into is full, that channel asks the gate to hold the
shared read loop (``pause``), and releases it when it drains (``resume``).
:class:`SlowConsumerPolicy` says what happens then:

* ``BLOCK``: hold the read loop until every paused channel drains. Nothing is
  dropped and memory stays bounded; one stopped reader would hold every other
  channel, so ``stall_timeout`` (seconds, 0 = never) resets a channel that
  has held the gate that long without draining (issue #6 item 5).
* ``RESET``: reset the slow channel at once; the gate never closes.

A read loop waits with :meth:`InboundGate.wait_until_open`, passing a
liveness check, so a socket that dies while the gate is closed is noticed
(within :data:`GATE_POLL` seconds) instead of waiting for ever.
:func:`wait_drained` is the same wait on a sink's buffer (a relay between two
WebSockets, as the tunnel runner has).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

GATE_POLL = 0.5  # while the gate is closed, how often the read loop checks that its socket is alive
DEFAULT_STALL_TIMEOUT = 10.0  # the tunnel's --stall-timeout default; use it for every multiplexed program


class SlowConsumerPolicy(enum.StrEnum):
    BLOCK = "block"
    RESET = "reset"

    @classmethod
    def parse(cls, value: str | SlowConsumerPolicy) -> SlowConsumerPolicy:
        """From a CLI or option value ("block"/"reset", any case)."""
        if isinstance(value, SlowConsumerPolicy):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"invalid slow-consumer policy {value!r} (expected block or reset)") from None


class Resettable(Protocol):
    """What the gate needs from a channel: a name for the log and a reset."""

    @property
    def name(self) -> str: ...
    def reset(self, reason: str) -> None: ...


class InboundGate:
    """Holds a read loop while any channel it feeds is paused (block policy).

    ``stall_timeout`` defaults to :data:`DEFAULT_STALL_TIMEOUT`: no program gets
    an unbounded hold by forgetting it; pass 0 to opt out explicitly.
    """

    def __init__(
        self, policy: SlowConsumerPolicy | str = SlowConsumerPolicy.BLOCK, stall_timeout: float = DEFAULT_STALL_TIMEOUT
    ) -> None:
        self.policy = SlowConsumerPolicy.parse(policy)
        self.stall_timeout = stall_timeout
        self._paused: dict[Resettable, asyncio.TimerHandle | None] = {}
        self._open = asyncio.Event()
        self._open.set()
        self._watchers: list[Callable[[bool], None]] = []

    def add_watcher(self, watcher: Callable[[bool], None]) -> None:
        """Call ``watcher(blocked)`` whenever the gate closes or opens.

        For a protocol-driven reader (a pipe, a unix socket): pause the
        transport's reading on True, resume it on False.
        """
        self._watchers.append(watcher)

    def remove_watcher(self, watcher: Callable[[bool], None]) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def _set_open(self, is_open: bool) -> None:
        if self._open.is_set() == is_open:
            return
        if is_open:
            self._open.set()
        else:
            self._open.clear()
        for watcher in list(self._watchers):
            watcher(not is_open)

    def pause(self, channel: Resettable) -> None:
        if self.policy is SlowConsumerPolicy.RESET:
            log.warning("channel %s: local consumer too slow, resetting it", channel.name)
            channel.reset("slow consumer")
            return
        if channel in self._paused:
            return
        timer = None
        if self.stall_timeout > 0:
            timer = asyncio.get_running_loop().call_later(self.stall_timeout, self._stalled, channel)
        self._paused[channel] = timer
        self._set_open(False)

    def resume(self, channel: Resettable) -> None:
        timer = self._paused.pop(channel, None)
        if timer is not None:
            timer.cancel()
        if not self._paused:
            self._set_open(True)

    def _stalled(self, channel: Resettable) -> None:
        if channel in self._paused:
            self._paused[channel] = None
            log.warning(
                "channel %s: local consumer read nothing for %.0f s, resetting it", channel.name, self.stall_timeout
            )
            channel.reset("stalled consumer")
            self.resume(channel)  # a reset channel no longer holds the gate, whatever it does on reset

    @property
    def blocked(self) -> bool:
        return not self._open.is_set()

    @property
    def holders(self) -> int:
        """How many channels hold the gate now."""
        return len(self._paused)

    async def wait_open(self) -> None:
        """Until the gate opens (no liveness check: prefer :meth:`wait_until_open`)."""
        if not self._open.is_set():
            await self._open.wait()

    async def wait_until_open(self, alive: Callable[[], bool], poll: float = GATE_POLL) -> bool:
        """Until the gate opens: True; or until ``alive()`` turns False meanwhile: False."""
        if self._open.is_set():
            return True
        return await wait_or_gone(self._open.wait, lambda: self._open.is_set(), alive, poll)

    def close(self) -> None:
        """The read loop ended: cancel the stall timers and open the gate."""
        for timer in self._paused.values():
            if timer is not None:
                timer.cancel()
        self._paused.clear()
        self._set_open(True)


class Drainable(Protocol):
    @property
    def paused(self) -> bool: ...
    async def drained(self) -> None: ...


async def wait_drained(sink: Drainable, alive: Callable[[], bool], poll: float = GATE_POLL) -> bool:
    """Until ``sink`` drains below its low-water mark: True; False when ``alive()`` turns False first."""
    if not sink.paused:
        return True
    return await wait_or_gone(sink.drained, lambda: not sink.paused, alive, poll)


async def wait_or_gone(
    wait: Callable[[], Awaitable[object]], done: Callable[[], bool], alive: Callable[[], bool], poll: float
) -> bool:
    """Await ``wait()`` until ``done()``, checking ``alive()`` every ``poll`` seconds; False when it died."""
    while not done():
        if not alive():
            return False
        try:
            async with asyncio.timeout(poll):
                await wait()
        except TimeoutError:
            pass
    return True
