"""The rules of one UDP flow of the tunnel client, sans-I/O (tunnel.md section 8; D11).

Datagrams are lossy by nature, so backpressure drops them instead of queueing:

* toward the service, datagrams that arrive before its socket is ready are
  held up to ``limit`` bytes (the rest dropped), and later ones are dropped
  while the socket's buffer is over ``limit``;
* toward the runner, datagrams are dropped while the WebSocket is paused.

Every datagram either way is activity; a flow idle for ``idle_timeout``
seconds (0 = never) is released with CLOSE. The flow ends once (``end``).
Time is passed in: this module keeps no clock.
"""

from __future__ import annotations


class UdpFlowState:
    """Hold, drop and idle decisions of one flow; the driver does the I/O."""

    __slots__ = ("limit", "idle_timeout", "last", "ended", "_held", "_held_bytes")

    def __init__(self, limit: int, idle_timeout: float, now: float) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout
        self.last = now
        self.ended = False
        self._held: list[bytes] = []
        self._held_bytes = 0

    def to_service(self, data: bytes | memoryview, now: float, ready: bool, buffered: int) -> bool:
        """A datagram from the runner: True to send it now; False when it was held or dropped."""
        if self.ended:
            return False
        self.last = now
        if not ready:
            if self._held_bytes + len(data) <= self.limit:
                self._held.append(bytes(data))
                self._held_bytes += len(data)
            return False
        return buffered <= self.limit  # the service's socket is backed up: drop

    def to_runner(self, now: float, paused: bool) -> bool:
        """A datagram from the service: True to send it as DATA (False while the WebSocket is full)."""
        if self.ended:
            return False
        self.last = now
        return not paused

    def take_held(self) -> list[bytes]:
        """What arrived before the socket was ready, in order (once)."""
        held, self._held = self._held, []
        self._held_bytes = 0
        return held

    def idle_delay(self, now: float) -> float | None:
        """At a timer: None when the flow has been idle long enough (release it), else seconds to wait."""
        idle_for = now - self.last
        if idle_for >= self.idle_timeout:
            return None
        return self.idle_timeout - idle_for

    def end(self) -> bool:
        """True the first time: the flow ends now."""
        if self.ended:
            return False
        self.ended = True
        self._held = []
        return True
