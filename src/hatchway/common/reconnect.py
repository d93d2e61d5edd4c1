"""The one reconnect loop: backoff policies and a loop that applies them.

Programs differ only in policy: the tunnel client sleeps a fixed delay after
every attempt and gives up after N consecutive failures; LinkSocks multiplies
its delay by 1.5 from 1 s up to 10 min and resets after an established
connection. Both are a :class:`Backoff` plus :func:`reconnect_loop`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Delay before the next attempt: ``initial * factor**n`` capped at ``maximum``.

    ``jitter`` is a fraction: 0.2 spreads each delay uniformly over ±20 %.
    ``factor=1`` gives a fixed delay.
    """

    initial: float = 1.0
    factor: float = 1.0
    maximum: float = 600.0
    jitter: float = 0.0
    _current: float = field(default=-1.0, init=False, repr=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def next(self) -> float:
        if self._current < 0:
            self._current = self.initial
        else:
            self._current = min(self._current * self.factor, self.maximum)
        delay = min(self._current, self.maximum)
        if self.jitter:
            delay *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return max(delay, 0.0)

    def reset(self) -> None:
        self._current = -1.0


class GaveUp(Exception):
    """Raised by :func:`reconnect_loop` after too many consecutive failed attempts."""


async def reconnect_loop(
    attempt: Callable[[], Awaitable[bool]],
    backoff: Backoff,
    *,
    max_failures: int = 0,
    delay_after_success: bool = True,
    reconnect: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Call ``attempt()`` forever; it returns True when it had established a connection.

    The first attempt is immediate. After an attempt that had connected, the
    failure counter and backoff reset. With ``max_failures`` > 0, the loop raises
    :class:`GaveUp` when that many consecutive attempts failed and one more
    delay has passed (upstream KohakuRiver's order). ``reconnect=False`` makes a
    single attempt.
    """
    failures = 0
    while True:
        try:
            established = await attempt()
        except (TimeoutError, OSError) as exc:
            log.warning("connection attempt failed: %s", exc or type(exc).__name__)
            established = False
        if established:
            failures = 0
            backoff.reset()
        else:
            failures += 1
        if not reconnect:
            return
        if established and not delay_after_success:
            continue
        delay = backoff.next()
        log.info("reconnecting in %.2f s", delay)
        await sleep(delay)
        if max_failures and failures >= max_failures:
            raise GaveUp(f"gave up after {failures} consecutive failed attempts")
