"""The daemon's security policy, sans-I/O: anti-browser checks, URL, callback and git rules, rate limits.

Every check returns ``None`` when the request passes, else the refusal as a
:class:`Refusal` (HTTP status and error text); the HTTP layer renders it.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "CallbackPolicy",
    "GitPolicy",
    "HostGuard",
    "RateLimiter",
    "Refusal",
    "UrlPolicy",
    "loopback_callback",
]


class Refusal(msgspec.Struct, frozen=True):
    status: int
    error: str


class HostGuard:
    """Against browser-borne requests and DNS rebinding (spec 12.2 item 2).

    * any ``Origin`` header: 403 (containers' clients never send one, browsers always do
      on cross-origin POSTs);
    * ``Host`` not in the allow-list: 403 (a rebound name carries the attacker's host);
    * a POST whose ``Content-Type`` is not ``application/json``: 415 (a "simple"
      cross-origin request cannot send it without a preflight).
    """

    def __init__(self, port: int, extra_hosts: Iterable[str] = (), *, require_json: bool = True) -> None:
        names = ["host.docker.internal", "127.0.0.1", "[::1]", "localhost", *extra_hosts]
        self.allowed = frozenset(f"{name.lower()}:{port}" for name in names)
        self.require_json = require_json

    def check(self, method: str, host: str | None, origin: str | None, content_type: str | None,
              *, require_json: bool | None = None) -> Refusal | None:
        if origin is not None:
            return Refusal(403, "cross-origin requests are not allowed")
        if host is None or host.lower() not in self.allowed:
            return Refusal(403, "host not allowed")
        if (self.require_json if require_json is None else require_json) and method == "POST":
            mime = (content_type or "").split(";", 1)[0].strip().lower()
            if mime != "application/json":
                return Refusal(415, "Content-Type must be application/json")
        return None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # the forms browsers accept for IPv4: 127.1, 0x7f.1, 2130706433
        import socket

        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def loopback_callback(url: str) -> tuple[int, str] | None:
    """``(port, path)`` when ``url`` is an http URL on a loopback host with an explicit port, else None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() != "http" or port is None or parts.hostname is None:
        return None
    host = parts.hostname.lower()
    if host != "localhost":
        ip = _ip_literal(host)
        if ip is None or not ip.is_loopback:
            return None
    return port, parts.path or "/callback"


class UrlPolicy:
    """``/open/url`` beyond the scheme rule: userinfo, internal IP literals, length (spec 12.2 item 3)."""

    def __init__(self, *, max_length: int = 8192) -> None:
        self.max_length = max_length

    def check(self, url: str, callback_ports: Callable[[], Iterable[int]]) -> Refusal | None:
        if len(url) > self.max_length:
            return Refusal(400, f"URL longer than {self.max_length} characters")
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            return Refusal(400, "URLs with user information are not allowed")
        host = (parts.hostname or "").lower()
        if not host:
            return Refusal(400, "URL has no host")
        internal = host == "localhost" or host.endswith(".localhost")
        ip = _ip_literal(host)
        if ip is not None:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            internal = internal or ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified \
                or ip.is_multicast or ip.is_reserved
        if internal:
            try:
                port = parts.port
            except ValueError:
                port = None
            loopback = host == "localhost" or (ip is not None and ip.is_loopback)
            if not (loopback and port is not None and port in set(callback_ports())):
                return Refusal(400, "URLs to loopback, private or link-local addresses are not allowed")
        return None


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (sliding window)."""

    def __init__(self, limit: int, window: float = 60.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True


class CallbackPolicy:
    """``/callback/register`` limits (spec 12.2 item 4)."""

    def __init__(self, *, min_port: int = 1024, per_owner: int = 2, total: int = 64, max_ttl: float = 600.0) -> None:
        self.min_port = min_port
        self.per_owner = per_owner
        self.total = total
        self.max_ttl = max_ttl

    def check(self, port: int, owner_sessions: int, all_sessions: int) -> Refusal | None:
        if port < self.min_port:
            return Refusal(400, f"port must be at least {self.min_port}")
        if owner_sessions >= self.per_owner:
            return Refusal(429, f"too many callback sessions for this container (at most {self.per_owner})")
        if all_sessions >= self.total:
            return Refusal(429, f"too many callback sessions (at most {self.total})")
        return None

    def ttl(self, requested: float) -> float:
        return min(requested, self.max_ttl)


class GitPolicy:
    """``/git/credential`` (spec 12.2 item 5): https only, allowed hosts, store/erase opt-in."""

    def __init__(self, hosts: Iterable[str] = (), *, allow_store: bool = False,
                 protocols: Iterable[str] = ("https",)) -> None:
        self.hosts = frozenset(h.lower() for h in hosts)
        self.allow_store = allow_store
        self.protocols = frozenset(protocols)

    def check(self, action: str, protocol: str, host: str, grant_hosts: Iterable[str] = ()) -> Refusal | None:
        if protocol.lower() not in self.protocols:
            return Refusal(403, f"protocol not allowed: {protocol}")
        allowed = self.hosts | {h.lower() for h in grant_hosts}
        if host.lower() not in allowed:
            return Refusal(403, f"host not allowed: {host}")
        if action in ("store", "erase") and not self.allow_store:
            return Refusal(403, f"credential {action} is disabled on this host")
        return None
