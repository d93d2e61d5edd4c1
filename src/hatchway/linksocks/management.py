"""The management API's decisions (linksocks.md 17), without HTTP: a decoded body in, a status and a body out.

:class:`Management` owns what the routes do to the token registry and the
access configuration; ``api.py`` is the aiohttp shell around it (API key,
methods, JSON decoding and encoding). Nothing here does I/O or imports
asyncio or aiohttp, so every answer is tested on plain objects
(``tests/linksocks/test_management.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .access import AccessError, AccessRule, AccessRules, rule_from_builtins
from .api_bodies import (
    INVALID_BODY,
    INVALID_TYPE,
    REVERSE_TOKEN_REQUIRED,
    TOKEN_NOT_SPECIFIED,
    AccessConfig,
    AccessConfigRequest,
    DirectStatus,
    ForwardStatus,
    ReverseStatus,
    StatusResponse,
    SuccessResponse,
    TokenRequest,
    TokenResponse,
)
from .tokens import Role, TokenError, TokenRegistry

__all__ = ["BadBody", "CountedLink", "Management", "RulesHolder", "ServerAccess", "link_counter"]


class BadBody(ValueError):
    """A request body that decodes but cannot be used (a malformed rule): HTTP 400 with this text."""


def parse_rules(items: Iterable[Any]) -> list[AccessRule]:
    """Rule objects of a request; a malformed rule (bad port, wrong JSON type) is a bad body."""
    try:
        return [rule_from_builtins(item) for item in items]
    except AccessError as exc:
        raise BadBody(f"{INVALID_BODY}: {exc}") from None


class RulesHolder(Protocol):
    entry_rules: AccessRules
    dial_rules: AccessRules


class ServerAccess:
    """:class:`AccessConfig` view of a server object keeping its rules in ``entry_rules`` / ``dial_rules``."""

    __slots__ = ("server",)

    def __init__(self, server: RulesHolder) -> None:
        self.server = server

    @property
    def entry(self) -> AccessRules:
        return self.server.entry_rules

    @entry.setter
    def entry(self, rules: AccessRules) -> None:
        self.server.entry_rules = rules

    @property
    def dial(self) -> AccessRules:
        return self.server.dial_rules

    @dial.setter
    def dial(self, rules: AccessRules) -> None:
        self.server.dial_rules = rules


class CountedLink(Protocol):
    """What the client count needs of an authenticated link."""

    token: str | None
    pool_key: str | None


def link_counter(links: Callable[[], Iterable[CountedLink]]) -> Callable[[str], int]:
    """``clients_count`` over live links tagged with ``pool_key`` (providers) or ``token`` (everyone else)."""

    def clients_count(token: str) -> int:
        return sum(1 for link in links() if (link.pool_key or link.token) == token)

    return clients_count


class Management:
    """What each route does; every method returns (HTTP status, response body) or raises :class:`BadBody`."""

    def __init__(
        self,
        registry: TokenRegistry,
        *,
        version: str,
        clients_count: Callable[[str], int] = lambda token: 0,
        access: AccessConfig | ServerAccess | None = None,
    ) -> None:
        self.registry = registry
        self.version = version
        self.clients_count = clients_count
        self.access = access if access is not None else AccessConfig()

    # -- /api/token
    def add_token(self, body: TokenRequest) -> tuple[int, TokenResponse]:
        if body.type not in (Role.FORWARD, Role.REVERSE, Role.CONNECTOR):
            return 400, TokenResponse(False, error=INVALID_TYPE)
        rules = parse_rules(body.rules) if body.rules else None
        if body.type == Role.CONNECTOR and not body.reverse_token:
            return 200, TokenResponse(False, error=REVERSE_TOKEN_REQUIRED)  # Go answers 200 here
        try:
            compiled = AccessRules(rules) if rules is not None else None
            return 200, self._add(body, compiled)
        except (TokenError, AccessError) as exc:
            return 200, TokenResponse(False, error=str(exc))

    def _add(self, body: TokenRequest, rules: AccessRules | None) -> TokenResponse:
        if body.type == Role.FORWARD:
            return TokenResponse(True, self.registry.add_forward(body.token, rules=rules).token)
        if body.type == Role.REVERSE:
            entry = self.registry.add_reverse(
                body.token,
                port=body.port,
                username=body.username,
                password=body.password,
                allow_manage_connector=body.allow_manage_connector,
                rules=rules,
            )
            return TokenResponse(True, entry.token, entry.port)
        return TokenResponse(True, self.registry.add_connector(body.token, body.reverse_token, rules=rules).token)

    def delete_token(self, token: str) -> tuple[int, TokenResponse]:
        """``token``: from the path, else from the body ("" when neither had one)."""
        if not token:
            return 200, TokenResponse(False, error=TOKEN_NOT_SPECIFIED)
        self.registry.remove(token)  # removing an unknown token succeeds, as in Go
        return 200, TokenResponse(True, token)

    # -- /api/status
    def status(self) -> StatusResponse:
        tokens: list[ReverseStatus | ForwardStatus] = []
        for entry in self.registry.reverse_tokens():
            connectors = [c.token for c in self.registry.connector_tokens(entry.token)]
            count = self.clients_count(entry.token)
            tokens.append(ReverseStatus(entry.token, Role.REVERSE.value, count, entry.port, connectors))
        for forward in self.registry.forward_tokens():
            tokens.append(ForwardStatus(forward.token, Role.FORWARD.value, self.clients_count(forward.token)))
        return StatusResponse(self.version, tokens, DirectStatus(False))

    # -- /api/config/access
    def access_rules(self) -> dict[str, Any]:
        return {"entry": self.access.entry.to_builtins(), "dial": self.access.dial.to_builtins()}

    def put_access(self, body: AccessConfigRequest) -> SuccessResponse:
        """Both lists are checked before either applies (a bad one changes nothing)."""
        try:
            entry = AccessRules(parse_rules(body.entry)) if body.entry is not None else None
            dial = AccessRules(parse_rules(body.dial)) if body.dial is not None else None
        except AccessError as exc:
            raise BadBody(f"{INVALID_BODY}: {exc}") from None
        if entry is not None:
            self.access.entry = entry
        if dial is not None:
            self.access.dial = dial
        return SuccessResponse()
