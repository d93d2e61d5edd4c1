"""Messages for channels that do not exist yet (fast open, several WebSockets).

With fast open the requester streams Data right after Connect, and with ``-T``
a Go client spreads one channel's messages over several WebSockets, so Data
(or a Disconnect) can be processed before the Connect it belongs to. The
dialing side keeps such messages, up to 1000 per channel for 30 s as Go does,
and replays them when the Connect arrives. A byte budget bounds the payload
and a message budget the total count (a zero-length Data or a Disconnect costs
no payload bytes but still a few hundred bytes of memory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_MESSAGES = 1000
TTL = 30.0
MAX_BYTES = 64 * 1024 * 1024
MAX_CHANNELS = 4096
MAX_TOTAL_MESSAGES = 65536  # over all channels (upstream only caps each channel at 1000)


class OrphanBuffer:
    def __init__(
        self,
        max_messages: int = MAX_MESSAGES,
        ttl: float = TTL,
        max_bytes: int = MAX_BYTES,
        max_channels: int = MAX_CHANNELS,
        max_total_messages: int = MAX_TOTAL_MESSAGES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_messages = max_messages
        self.max_channels = max_channels
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.max_total_messages = max_total_messages
        self._messages = 0
        self._entries: dict[bytes, tuple[float, list[Any]]] = {}
        self._bytes = 0
        self._warned = False
        self._clock = clock
        self._next_sweep = 0.0

    def add(self, channel_id: bytes, message: Any, size: int = 0) -> bool:
        """Keep ``message`` for ``channel_id``; False when a limit is reached (the message is not kept)."""
        self.sweep()
        if self._messages >= self.max_total_messages:
            self._warn_full()
            return False
        entry = self._entries.get(channel_id)
        if entry is None:
            if len(self._entries) >= self.max_channels:
                log.warning("orphan buffer holds %d channels, message not kept", len(self._entries))
                return False
            entry = self._entries[channel_id] = (self._clock(), [])
        messages = entry[1]
        if len(messages) >= self.max_messages or self._bytes + size > self.max_bytes:
            self._warn_full()
            return False
        messages.append((message, size))
        self._bytes += size
        self._messages += 1
        return True

    def _warn_full(self) -> None:
        if not self._warned:  # once per fill-up, not once per message (a flood must not flood the log)
            self._warned = True
            log.warning("orphan buffer full (%d messages, %d bytes): messages for unknown channels not kept",
                        self._messages, self._bytes)

    def take(self, channel_id: bytes) -> list[Any]:
        """Messages kept for ``channel_id``, in arrival order; forgets them."""
        entry = self._entries.pop(channel_id, None)
        if entry is None:
            return []
        self._bytes -= sum(size for _, size in entry[1])
        self._messages -= len(entry[1])
        self._warned = False
        return [message for message, _ in entry[1]]

    def discard(self, channel_id: bytes) -> None:
        self.take(channel_id)

    def __len__(self) -> int:
        self.sweep()
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def messages(self) -> int:
        return self._messages

    def sweep(self) -> None:
        """Forget entries older than the TTL (done lazily on use: no timer, no I/O)."""
        now = self._clock()
        if now < self._next_sweep or not self._entries:
            return
        self._next_sweep = now + self.ttl / 3
        deadline = now - self.ttl
        for channel_id in [cid for cid, (born, _) in self._entries.items() if born < deadline]:
            self.discard(channel_id)

    def close(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._messages = 0
