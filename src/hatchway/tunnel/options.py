"""The tunnel client's tunables (the CLI flags of tunnel.md section 3, plus hatchway's)."""

from __future__ import annotations

from typing import Literal

import msgspec

from hatchway.common.gate import SlowConsumerPolicy
from hatchway.common.reconnect import Backoff
from hatchway.common.wsconn import MAX_MESSAGE_DEFAULT

JITTER_MAX_DELAY = 60.0
JITTER_FRACTION = 0.2


class ClientOptions(msgspec.Struct, frozen=True, kw_only=True):
    reconnect_delay: float = 5.0  # seconds slept after every connection or attempt
    max_reconnect: int = 0  # consecutive failed attempts before giving up; 0 = never
    backoff: Literal["fixed", "jitter"] = "fixed"
    heartbeat: float = 20.0  # WebSocket ping interval; no pong within half of it reconnects; 0 = off
    connect_timeout: float = 10.0  # WebSocket connect and local dials; 0 = none
    udp_idle_timeout: float = 300.0  # 0 = never expire
    slow_consumer: SlowConsumerPolicy = SlowConsumerPolicy.BLOCK
    stall_timeout: float = 10.0  # block policy: reset a connection that drained nothing this long; 0 = never
    buffer_limit: int = 1024 * 1024  # bytes queued per connection toward its local socket
    ipv6_fallback: bool = True  # dial [::1]:port when 127.0.0.1:port refuses (D9)
    max_message_size: int = MAX_MESSAGE_DEFAULT  # inbound WebSocket message limit (64 MiB)
    token: str | None = None  # sent as "Authorization: Bearer TOKEN" to a runner started with --token

    def __post_init__(self) -> None:
        if self.reconnect_delay < 0 or self.max_reconnect < 0:
            raise ValueError("reconnect delay and max reconnect must not be negative")
        if self.buffer_limit < 1:
            raise ValueError("buffer limit must be at least 1 byte")
        if min(self.heartbeat, self.connect_timeout, self.udp_idle_timeout, self.stall_timeout) < 0:
            raise ValueError("timeouts must not be negative")

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> ClientOptions:
        """Validated construction (msgspec checks the types and Literal choices)."""
        return msgspec.convert(kwargs, cls, strict=False)

    def backoff_policy(self) -> Backoff:
        if self.backoff == "jitter":
            return Backoff(
                initial=self.reconnect_delay,
                factor=2.0,
                maximum=max(JITTER_MAX_DELAY, self.reconnect_delay),
                jitter=JITTER_FRACTION,
            )
        return Backoff(initial=self.reconnect_delay, factor=1.0, maximum=self.reconnect_delay)
