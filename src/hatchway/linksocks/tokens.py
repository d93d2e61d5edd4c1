"""The server's token registry (linksocks.md 6.1, 6.3, 6.5, 12, 13.3, 17), pure data: no asyncio, no sockets.

Forward, reverse and connector tokens share one namespace. Every add/remove
keeps the SHA-256 -> token map of URL-query authentication current.

Provider pools. Providers of a reverse token form one pool, keyed by the
token. With connector autonomy (a reverse token with ``allow_manage_connector``,
port -1) every provider instance gets its own pool instead, keyed by an
*internal token* (the instance UUID with binary auth, a random UUID with
URL-query auth; see :meth:`TokenRegistry.provider_pool`). Connector tokens map
to a pool key: the reverse token, or the internal token of the provider that
registered them. A connector authenticates only while its pool still exists.

Listeners. The engine learns about every change (API, CLI, autonomy) through
:meth:`TokenRegistry.add_listener`: ``token_added(entry)`` and
``token_removed(entry)`` are called synchronously after the change, with a
:class:`ForwardToken`, :class:`ReverseToken` (``parent`` set for internal
pools) or :class:`ConnectorToken`. They must not raise (an exception is logged
and swallowed) and should schedule any I/O (binding or unbinding a reverse
SOCKS port, closing the token's WebSockets) rather than do it inline.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import secrets
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import msgspec

from .access import AccessRules
from .protocol import ADD, REMOVE, token_hash

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
PORT_POOL = range(1024, 10241)  # 1024-10240 inclusive, as Go's NewPortPoolFromRange
AUTONOMY_PORT = -1
TOKEN_HASH_LENGTH = 64

INVALID_TOKEN = "invalid token"
INVALID_TOKEN_FORMAT = "invalid token format"
TOKEN_EXISTS = "token already exists"
CONNECTOR_TOKEN_EXISTS = "connector token already exists"
REVERSE_TOKEN_MISSING = "reverse token does not exist"
ANONYMOUS_RESERVED = "'anonymous' is reserved and cannot be used as a token"
ANONYMOUS_RESERVED_CONNECTOR = "'anonymous' is reserved and cannot be used as a connector token"
UNAUTHORIZED_CONNECTOR = "Unauthorized connector management attempt"
CONNECTOR_REMOVE_FAILED = "Failed to remove connector token"


class TokenError(ValueError):
    """A token operation refused; ``str(error)`` is the text to send to the peer or API client."""


class Role(enum.StrEnum):
    FORWARD = "forward"
    REVERSE = "reverse"
    CONNECTOR = "connector"


class ForwardToken(msgspec.Struct, frozen=True):
    token: str
    rules: AccessRules | None = None


class ReverseToken(msgspec.Struct, frozen=True):
    token: str
    port: int
    username: str = ""
    password: str = ""
    allow_manage_connector: bool = False
    rules: AccessRules | None = None
    parent: str | None = None  # set for an autonomy provider's internal token: the reverse token it belongs to

    @property
    def autonomy(self) -> bool:
        return self.port == AUTONOMY_PORT


class ConnectorToken(msgspec.Struct, frozen=True):
    token: str
    reverse_token: str  # the pool key: a reverse token or an internal token
    rules: AccessRules | None = None


TokenEntry = ForwardToken | ReverseToken | ConnectorToken
E = TypeVar("E", ForwardToken, ReverseToken, ConnectorToken)


class Authenticated(msgspec.Struct, frozen=True):
    """The outcome of authentication: the role, the token, and (connectors) the pool they reach."""

    role: Role
    token: str
    reverse_token: str | None = None


class TokenListener(Protocol):
    def token_added(self, entry: TokenEntry) -> None: ...

    def token_removed(self, entry: TokenEntry) -> None: ...


def generate_token() -> str:
    """16 lower-case hex characters (8 random bytes), like Go's generateRandomToken(16)."""
    return secrets.token_hex(8)


MAX_TOKEN_BYTES = 255  # the Auth message carries the token with a 1-byte length
TOKEN_TOO_LONG = "token too long (at most 255 bytes)"


def _check_length(token: str) -> None:
    """A token a binary-auth client could not send is refused when it is added (#6 item 16)."""
    if len(token.encode("utf-8", "surrogateescape")) > MAX_TOKEN_BYTES:
        raise TokenError(TOKEN_TOO_LONG)


def fingerprint(token: str) -> str:
    """What logs show instead of a token: the first 8 hex digits of its SHA-256 (#6 item 14)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()[:8]


class TokenRegistry:
    """Forward, reverse, connector and internal (autonomy) tokens, their SOCKS ports and hashes."""

    def __init__(
        self,
        port_is_free: Callable[[int], bool] = lambda port: True,
        port_pool: Iterable[int] = PORT_POOL,
    ) -> None:
        self._port_is_free = port_is_free
        self._port_pool = tuple(port_pool)
        self._forward: dict[str, ForwardToken] = {}
        self._reverse: dict[str, ReverseToken] = {}
        self._internal: dict[str, ReverseToken] = {}
        self._connector: dict[str, ConnectorToken] = {}
        self._by_hash: dict[str, str] = {}
        self._ports: set[int] = set()
        self._listeners: list[TokenListener] = []

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: TokenListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: TokenListener) -> None:
        self._listeners.remove(listener)

    def _notify(self, event: str, entry: TokenEntry) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, event)(entry)
            except Exception:
                log.exception("token listener %s failed for %s", event, type(entry).__name__)

    # ------------------------------------------------------------------ adding

    def exists(self, token: str) -> bool:
        """Is ``token`` a forward, reverse or connector token (the shared namespace)?"""
        return token in self._forward or token in self._reverse or token in self._connector

    def _new_token(self, requested: str) -> str:
        _check_length(requested)
        if requested == ANONYMOUS:
            raise TokenError(ANONYMOUS_RESERVED)
        if requested:
            if self.exists(requested) or requested in self._internal:
                raise TokenError(TOKEN_EXISTS)
            return requested
        return self._unused_random_token()

    def _unused_random_token(self) -> str:
        while True:
            token = generate_token()
            if not self.exists(token) and token not in self._internal:
                return token

    def _remember(self, table: dict[str, Any], entry: E) -> E:
        table[entry.token] = entry
        if table is not self._internal:
            self._by_hash[token_hash(entry.token)] = entry.token
        self._notify("token_added", entry)
        return entry

    def add_forward(self, token: str = "", rules: AccessRules | None = None) -> ForwardToken:
        """Add a forward token (empty = generate one)."""
        return self._remember(self._forward, ForwardToken(self._new_token(token), rules))

    def add_reverse(
        self,
        token: str = "",
        port: int = 0,
        username: str = "",
        password: str = "",
        allow_manage_connector: bool = False,
        rules: AccessRules | None = None,
    ) -> ReverseToken:
        """Add a reverse token. Its SOCKS port is ``port``, or one from the pool when 0, or -1 with autonomy."""
        token = self._new_token(token)
        port = AUTONOMY_PORT if allow_manage_connector else self._allocate_port(port)
        entry = ReverseToken(token, port, username, password, allow_manage_connector, rules)
        return self._remember(self._reverse, entry)

    def add_connector(self, token: str, reverse_token: str, rules: AccessRules | None = None) -> ConnectorToken:
        """Map a connector token (empty = generate one) to a reverse or internal token.

        Adding the same token for the same pool again is accepted (idempotent), as in Go.
        """
        _check_length(token)
        if token == ANONYMOUS:
            raise TokenError(ANONYMOUS_RESERVED_CONNECTOR)
        if reverse_token not in self._reverse and reverse_token not in self._internal:
            raise TokenError(REVERSE_TOKEN_MISSING)
        existing = self._connector.get(token)
        if existing is not None and existing.reverse_token == reverse_token:
            return existing
        if token and (self.exists(token) or token in self._internal):
            raise TokenError(CONNECTOR_TOKEN_EXISTS)
        entry = ConnectorToken(token or self._unused_random_token(), reverse_token, rules)
        return self._remember(self._connector, entry)

    def _allocate_port(self, requested: int) -> int:
        if requested:
            if not 1 <= requested <= 65535 or requested in self._ports:
                raise TokenError(f"cannot allocate port: {requested}")
            self._ports.add(requested)
            return requested
        candidates = [port for port in self._port_pool if port not in self._ports]
        random.shuffle(candidates)
        for port in candidates:
            if self._port_is_free(port):
                self._ports.add(port)
                return port
        raise TokenError("cannot allocate port: 0")

    # ------------------------------------------------------------------ removing

    def remove(self, token: str) -> list[TokenEntry]:
        """Remove any token and what depends on it; return every removed entry (empty if unknown).

        Removing a reverse token also removes its connector tokens and its
        autonomy internal tokens (with their connector tokens) and frees its port.
        """
        if token in self._connector:
            return [self._drop(self._connector, token)]
        if token in self._forward:
            return [self._drop(self._forward, token)]
        if token in self._reverse:
            removed: list[TokenEntry] = []
            for internal in [e.token for e in self._internal.values() if e.parent == token]:
                removed += self._remove_pool(internal)
            removed += self._remove_pool(token)
            return removed
        if token in self._internal:
            return self._remove_pool(token)
        return []

    def release_pool(self, internal_token: str) -> list[TokenEntry]:
        """Forget an autonomy provider's internal token and its connector tokens.

        The engine calls this when the pool can never come back: the last
        provider of a URL-query-auth pool (random internal token) has left.
        Pools keyed by an instance UUID survive reconnects of that instance.
        """
        if internal_token not in self._internal:
            return []
        return self._remove_pool(internal_token)

    def _remove_pool(self, key: str) -> list[TokenEntry]:
        removed: list[TokenEntry] = [
            self._drop(self._connector, c.token) for c in list(self._connector.values()) if c.reverse_token == key
        ]
        table = self._reverse if key in self._reverse else self._internal
        entry = self._drop(table, key)
        if isinstance(entry, ReverseToken):
            self._ports.discard(entry.port)
        removed.append(entry)
        return removed

    def _drop(self, table: dict[str, Any], token: str) -> TokenEntry:
        entry: TokenEntry = table.pop(token)
        if table is not self._internal:
            self._by_hash.pop(token_hash(token), None)
        self._notify("token_removed", entry)
        return entry

    # ------------------------------------------------------------------ authentication

    def resolve(self, token: str, reverse: bool) -> Authenticated:
        """Binary auth (6.3): reverse <=> flag set and a reverse token; forward / connector <=> flag clear."""
        if reverse:
            if token in self._reverse:
                return Authenticated(Role.REVERSE, token)
            raise TokenError(INVALID_TOKEN)
        if token in self._forward:
            return Authenticated(Role.FORWARD, token)
        connector = self._connector.get(token)
        if connector is not None and self._pool_exists(connector.reverse_token):
            return Authenticated(Role.CONNECTOR, token, connector.reverse_token)
        raise TokenError(INVALID_TOKEN)

    def resolve_query(self, hashed: str, reverse: str | None = None) -> Authenticated:
        """URL-query auth (6.1): ``token`` = SHA-256 hex, optional ``reverse`` parameter (``true``/``1`` = reverse)."""
        if len(hashed) != TOKEN_HASH_LENGTH:
            raise TokenError(INVALID_TOKEN_FORMAT)
        token = self._by_hash.get(hashed)
        if token is None:
            raise TokenError(INVALID_TOKEN)
        if reverse:
            return self.resolve(token, reverse in ("true", "1"))
        return self.resolve(token, token in self._reverse)

    def token_for_hash(self, hashed: str) -> str | None:
        return self._by_hash.get(hashed)

    def _pool_exists(self, key: str) -> bool:
        return key in self._reverse or key in self._internal

    # ------------------------------------------------------------------ provider pools and autonomy

    def provider_pool(self, reverse_token: str, instance: str | None = None) -> str:
        """The pool key for a provider that authenticated with ``reverse_token``.

        A normal reverse token is its own pool. An autonomy token gives each
        provider instance its own internal token: ``instance`` (the Auth
        message's UUID text) with binary auth, a random UUID when None
        (URL-query auth). The same instance reconnecting gets the same pool.
        """
        entry = self._reverse.get(reverse_token)
        if entry is None:
            raise TokenError(INVALID_TOKEN)
        if not entry.allow_manage_connector:
            return reverse_token
        internal = instance or str(uuid.uuid4())
        existing = self._internal.get(internal)
        if existing is not None and existing.parent == reverse_token:
            return internal
        if existing is not None or self.exists(internal):
            internal = str(uuid.uuid4())
        self._remember(
            self._internal,
            ReverseToken(internal, AUTONOMY_PORT, entry.username, entry.password, True, entry.rules, reverse_token),
        )
        return internal

    def manage_connector(self, pool: str, operation: int, token: str) -> str:
        """Handle a provider's Connector message (13.3): returns the connector token added or removed.

        Only an autonomy provider (``pool`` is its internal token) may manage
        connectors, and it may remove only the connector tokens registered for
        its own pool (upstream defect 12 not copied).
        """
        if pool not in self._internal:
            raise TokenError(UNAUTHORIZED_CONNECTOR)
        if operation == ADD:
            return self.add_connector(token, pool).token
        if operation == REMOVE:
            entry = self._connector.get(token)
            if entry is None or entry.reverse_token != pool:
                raise TokenError(CONNECTOR_REMOVE_FAILED)
            self.remove(token)
            return token
        raise TokenError(f"Unknown connector operation: {operation}")

    # ------------------------------------------------------------------ queries

    def get(self, token: str) -> TokenEntry | None:
        """The entry of any token, internal tokens included."""
        return (
            self._forward.get(token)
            or self._reverse.get(token)
            or self._connector.get(token)
            or self._internal.get(token)
        )

    def rules_for(self, token: str) -> AccessRules | None:
        """Per-token access rules (None = use the server-wide rules)."""
        entry = self.get(token)
        return None if entry is None else entry.rules

    def forward_tokens(self) -> list[ForwardToken]:
        return list(self._forward.values())

    def reverse_tokens(self, include_internal: bool = True) -> list[ReverseToken]:
        """Reverse tokens in insertion order, each followed by its internal (autonomy) tokens."""
        if not include_internal:
            return list(self._reverse.values())
        ordered: list[ReverseToken] = []
        for entry in self._reverse.values():
            ordered.append(entry)
            ordered += [internal for internal in self._internal.values() if internal.parent == entry.token]
        return ordered

    def connector_tokens(self, pool: str | None = None) -> list[ConnectorToken]:
        """All connector tokens, or those mapped to one pool key."""
        return [c for c in self._connector.values() if pool is None or c.reverse_token == pool]

    def ports_in_use(self) -> frozenset[int]:
        return frozenset(self._ports)
