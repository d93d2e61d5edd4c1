"""The HTTP management API (linksocks.md 17) as an aiohttp sub-application.

Mount it on the server's app under ``/api``::

    app.add_subapp(API_PREFIX, api_app(registry, [key], version="v1.10.3",
                                       clients_count=count, access=access_config))

or, for hatchway's own server object, ``setup(app, server)``.

Routes (every one needs ``X-API-Key``; a wrong or missing key is 401 before
anything else, a wrong method 405, as in Go):

* ``POST /api/token``                 add a forward / reverse / connector token
* ``DELETE /api/token/<token>``       remove a token (or ``DELETE /api/token`` with ``{"token": ...}``)
* ``GET /api/status``                 tokens, client counts, ``"direct": {"enabled": false}``
* ``GET|PUT /api/config/access``      server-wide entry and dial rules

The API changes only the :class:`~hatchway.linksocks.tokens.TokenRegistry`
and the :class:`AccessConfig`. The engine reacts to token changes through the
registry's listeners (binding a reverse token's SOCKS port, closing removed
tokens' WebSockets), so API, CLI and autonomy changes take the same path; it
reads ``AccessConfig.entry`` / ``.dial`` at every check, so a PUT applies to
the next connection.

Request bodies follow Go's encoding/json: keys are case-insensitive, unknown
keys and ``null`` values are ignored. Responses are Go's: compact JSON plus a
newline, empty fields omitted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from hatchway.common.httpapi import ApiError, TokenAuth, json_errors, json_response, read_json

from .access import AccessError, AccessRule, AccessRules, rule_from_builtins
from .api_bodies import (
    API_PREFIX,
    DEFAULT_VERSION,
    INVALID_API_KEY,
    INVALID_BODY,
    INVALID_TYPE,
    REVERSE_TOKEN_REQUIRED,
    TOKEN_NOT_SPECIFIED,
    AccessConfig,
    AccessConfigRequest,
    DeleteRequest,
    DirectStatus,
    ForwardStatus,
    ReverseStatus,
    StatusResponse,
    SuccessResponse,
    TokenRequest,
    TokenResponse,
)
from .tokens import Role, TokenError, TokenRegistry

__all__ = ["API_PREFIX", "AccessConfig", "ManagementApi", "ServerAccess", "api_app", "link_counter", "setup"]

def _error(status: int, message: str) -> TokenResponse:
    """Every API error body has Go's shape: ``{"success":false,"error":"..."}``."""
    return TokenResponse(False, error=message)


def _invalid_key(request: web.Request) -> web.StreamResponse:
    return json_response(TokenResponse(False, error=INVALID_API_KEY), 401)


def _rules(items: Iterable[Any]) -> list[AccessRule]:
    """Rule objects of a request; a malformed rule (bad port, wrong JSON type) is a bad body."""
    try:
        return [rule_from_builtins(item) for item in items]
    except AccessError as exc:
        raise ApiError(400, f"{INVALID_BODY}: {exc}") from None


# --------------------------------------------------------------------------- the application


class ManagementApi:
    """The handlers; :func:`api_app` wires them into an aiohttp application."""

    def __init__(
        self,
        registry: TokenRegistry,
        api_keys: Iterable[str],
        *,
        version: str,
        clients_count: Callable[[str], int] = lambda token: 0,
        access: AccessConfig | ServerAccess | None = None,
    ) -> None:
        self.registry = registry
        keys = [key for key in api_keys if key]
        if not keys:
            raise ValueError("the management API needs at least one non-empty API key")
        # X-API-Key only (no bearer, no ?token=: upstream has neither), constant-time against every key
        self.auth = TokenAuth(keys, bearer=False, header="X-API-Key", query=None, exempt=(), deny=_invalid_key)
        self.version = version
        self.clients_count = clients_count
        self.access = access if access is not None else AccessConfig()

    # ------------------------------------------------------------------ auth and dispatch

    @staticmethod
    def _endpoint(methods: dict[str, Callable[[web.Request], Any]]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            handler = methods.get(request.method)
            if handler is None:
                return web.Response(status=405, headers={"Allow": ", ".join(methods)})
            response: web.StreamResponse = await handler(request)
            return response

        return handle

    def app(self) -> web.Application:
        # the key is checked before anything else (401 even for a wrong method), then bodies (400), as in Go
        middlewares: list[Any] = [self.auth.middleware, json_errors(_error)]
        app = web.Application(middlewares=middlewares)
        token = self._endpoint({"POST": self.post_token, "DELETE": self.delete_token})
        app.router.add_route("*", "/token", token)
        app.router.add_route("*", "/token/{token:.*}", token)
        app.router.add_route("*", "/status", self._endpoint({"GET": self.get_status}))
        app.router.add_route("*", "/config/access", self._endpoint({"GET": self.get_access, "PUT": self.put_access}))
        return app

    # ------------------------------------------------------------------ /api/token

    async def post_token(self, request: web.Request) -> web.Response:
        body = await read_json(request, TokenRequest)
        if body.type not in (Role.FORWARD, Role.REVERSE, Role.CONNECTOR):
            return json_response(TokenResponse(False, error=INVALID_TYPE), 400)
        rules = _rules(body.rules) if body.rules else None
        if body.type == Role.CONNECTOR and not body.reverse_token:
            return json_response(TokenResponse(False, error=REVERSE_TOKEN_REQUIRED))
        try:
            compiled = AccessRules(rules) if rules is not None else None
            return json_response(self._add_token(body, compiled))
        except (TokenError, AccessError) as exc:
            return json_response(TokenResponse(False, error=str(exc)))

    def _add_token(self, body: TokenRequest, rules: AccessRules | None) -> TokenResponse:
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

    async def delete_token(self, request: web.Request) -> web.Response:
        token = request.match_info.get("token", "")
        if not token:
            try:
                token = (await read_json(request, DeleteRequest)).token
            except ApiError:
                token = ""
            if not token:
                return json_response(TokenResponse(False, error=TOKEN_NOT_SPECIFIED))
        self.registry.remove(token)  # removing an unknown token succeeds, as in Go
        return json_response(TokenResponse(True, token))

    # ------------------------------------------------------------------ /api/status

    async def get_status(self, request: web.Request) -> web.Response:
        return json_response(self.status())

    def status(self) -> StatusResponse:
        tokens: list[ReverseStatus | ForwardStatus] = []
        for entry in self.registry.reverse_tokens():
            connectors = [c.token for c in self.registry.connector_tokens(entry.token)]
            count = self.clients_count(entry.token)
            tokens.append(ReverseStatus(entry.token, Role.REVERSE.value, count, entry.port, connectors))
        for forward in self.registry.forward_tokens():
            tokens.append(ForwardStatus(forward.token, Role.FORWARD.value, self.clients_count(forward.token)))
        return StatusResponse(self.version, tokens, DirectStatus(False))

    # ------------------------------------------------------------------ /api/config/access

    async def get_access(self, request: web.Request) -> web.Response:
        return json_response({"entry": self.access.entry.to_builtins(), "dial": self.access.dial.to_builtins()})

    async def put_access(self, request: web.Request) -> web.Response:
        body = await read_json(request, AccessConfigRequest)
        try:
            entry = AccessRules(_rules(body.entry)) if body.entry is not None else None
            dial = AccessRules(_rules(body.dial)) if body.dial is not None else None
        except AccessError as exc:
            raise ApiError(400, f"{INVALID_BODY}: {exc}") from None
        if entry is not None:
            self.access.entry = entry
        if dial is not None:
            self.access.dial = dial
        return json_response(SuccessResponse())


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


def setup(app: web.Application, server: Any) -> None:
    """Mount the API on ``app`` for a hatchway LinkSocks server.

    Uses ``server.tokens`` (the registry), ``server.options.api_key`` and
    ``server.options.api_keys``, ``server.entry_rules`` / ``server.dial_rules``
    (replaced by ``PUT /api/config/access``) and ``server.links`` (authenticated
    links carrying ``token`` and, for providers, ``pool_key``).
    """
    keys = [server.options.api_key or "", *server.options.api_keys]
    app.add_subapp(
        API_PREFIX,
        api_app(
            server.tokens,
            keys,
            version=DEFAULT_VERSION,
            clients_count=link_counter(lambda: server.links),
            access=ServerAccess(server),
        ),
    )


def api_app(
    registry: TokenRegistry,
    api_keys: Iterable[str],
    *,
    version: str,
    clients_count: Callable[[str], int] = lambda token: 0,
    access: AccessConfig | ServerAccess | None = None,
) -> web.Application:
    """The API as an aiohttp application to mount with ``app.add_subapp(API_PREFIX, ...)``."""
    return ManagementApi(registry, api_keys, version=version, clients_count=clients_count, access=access).app()
