"""Transport grace: channels that outlive a dropped WebSocket (linksocks.md 15.4).

When a link drops, its TCP channels (and agent bindings) are *suspended*
instead of closed: the local socket is no longer read, so nothing is lost or
buffered without bound. When the same peer (the key: the client itself, or a
server's (token, instance) pair) authenticates a new link within the grace
period, the requester side re-sends each channel's Connect with Resume = 1
and carries on over the new link; the dialing side waits for that Resume.
Channels not resumed in time are closed. Grace 0 closes them at once.

Only an endpoint that can resume without a hole is kept: a TCP channel whose
peer keeps the byte ledger (``mux``). One whose peer is upstream (Go,
pywssocks) cannot prove that nothing was in flight, so it is reset at the cut
(the application sees an error, never a silent gap) and its id is remembered:
when the peer's next link comes up within the grace period it is told with a
Disconnect, so its end is closed too instead of resumed or carried on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol, cast

from .channel_table import ResumableEndpoint
from .mux import UNPROVABLE
from .protocol import Disconnect

log = logging.getLogger(__name__)



class Timer(Protocol):
    """What a scheduler returns (``asyncio.TimerHandle``): something to cancel."""

    def cancel(self) -> None: ...


class Schedule(Protocol):
    """``loop.call_later`` as far as the keeper uses it."""

    def __call__(self, delay: float, callback: Callable[[], None], /) -> Timer: ...


class GraceKeeper:
    """Keeps the suspended endpoints of lost links; ``schedule(delay, fn)`` is the loop's ``call_later``."""

    def __init__(self, grace: float, schedule: Schedule) -> None:
        self.grace = grace
        self.schedule = schedule
        self._held: dict[Hashable, set[ResumableEndpoint]] = {}
        self._cut: dict[Hashable, list[bytes]] = {}  # ids reset at a cut, to be told to the peer's next link
        self._timers: set[Timer] = set()

    def link_lost(self, key: Hashable, link: Any) -> None:
        """``link`` is gone: suspend what it carried (or close it without grace)."""
        endpoints = list(link.channels)
        link.channels.clear()
        kept: set[ResumableEndpoint] = set()
        cut: list[bytes] = []
        for endpoint in endpoints:
            if self.grace > 0 and endpoint.resumable:
                resumable = cast(ResumableEndpoint, endpoint)
                resumable.suspend()
                if resumable.suspended:
                    kept.add(resumable)
                    continue
                cut_id = resumable.cut_id()
                if cut_id is not None:
                    cut.append(cut_id)
            endpoint.link_lost()
        if cut:
            log.warning("%d channel(s) reset: %s", len(cut), UNPROVABLE)
            self._cut.setdefault(key, []).extend(cut)
        if not kept and not cut:
            return
        if kept:
            self._held.setdefault(key, set()).update(kept)
        timers = self._timers
        timer: Timer | None = None

        def expire() -> None:
            if timer is not None:
                timers.discard(timer)
            ids = self._cut.get(key)
            if ids is not None:
                ids[:] = [i for i in ids if i not in cut]
                if not ids:
                    del self._cut[key]
            self._expire(key, kept)

        timer = self.schedule(self.grace, expire)
        timers.add(timer)

    def _expire(self, key: Hashable, endpoints: set[ResumableEndpoint]) -> None:
        if not endpoints:
            return
        held = self._held.get(key)
        now = time.monotonic()  # the clock of ``suspended_at``
        expired = 0
        for endpoint in endpoints:
            if endpoint.suspended and now - endpoint.suspended_at >= self.grace * 0.99:
                expired += 1
                if held is not None:
                    held.discard(endpoint)
                endpoint.expire()
        if held is not None and not held:
            del self._held[key]
        if expired:
            log.info("%d channel(s) not resumed within %g s, closed", expired, self.grace)

    def take(self, key: Hashable) -> list[ResumableEndpoint]:
        """Suspended endpoints of ``key`` that are still alive (they stay tracked until rebound)."""
        held = self._held.get(key)
        if not held:
            return []
        alive = [e for e in held if e.suspended and not e.is_closing()]
        held.intersection_update(alive)
        if not held:
            del self._held[key]
        return alive

    def announce_cut(self, key: Hashable, link: Any) -> int:
        """``key``'s new ``link`` is up: Disconnect every channel reset at the cut, so the peer does not resume it."""
        ids = self._cut.pop(key, [])
        for channel_id in ids:
            link.try_send(Disconnect(channel_id, UNPROVABLE))
        return len(ids)

    def resume_requests(self, key: Hashable, link: Any, probe: float = 0.0) -> int:
        """Requester side: tell the cut channels (``announce_cut``), re-attach the others with Connect(Resume = 1)."""
        self.announce_cut(key, link)
        count = 0
        held = self._held.get(key)
        for endpoint in self.take(key):
            if not link.try_send(endpoint.connect_message(resume=True)):
                continue
            endpoint.rebind(link, probe)
            if held is not None:
                held.discard(endpoint)
            count += 1
        if held is not None and not held:
            self._held.pop(key, None)
        return count

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for endpoints in self._held.values():
            for endpoint in endpoints:
                endpoint.expire()
        self._held.clear()
        self._cut.clear()
