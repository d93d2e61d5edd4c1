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
from typing import Any

from aiohttp import web

from hatchway.common.httpapi import ApiError, TokenAuth, json_errors, json_response, read_json

from .api_bodies import (
    API_PREFIX,
    DEFAULT_VERSION,
    INVALID_API_KEY,
    AccessConfig,
    AccessConfigRequest,
    DeleteRequest,
    StatusResponse,
    TokenRequest,
    TokenResponse,
)
from .management import BadBody, CountedLink, Management, RulesHolder, ServerAccess, link_counter
from .tokens import TokenRegistry

__all__ = [
    "API_PREFIX", "DEFAULT_VERSION", "AccessConfig", "CountedLink", "ManagementApi", "RulesHolder", "ServerAccess",
    "api_app", "link_counter", "setup",
]  # fmt: skip


def _error(status: int, message: str) -> TokenResponse:
    """Every API error body has Go's shape: ``{"success":false,"error":"..."}``."""
    return TokenResponse(False, error=message)


def _invalid_key(request: web.Request) -> web.StreamResponse:
    return json_response(TokenResponse(False, error=INVALID_API_KEY), 401)


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
        keys = [key for key in api_keys if key]
        if not keys:
            raise ValueError("the management API needs at least one non-empty API key")
        # X-API-Key only (no bearer, no ?token=: upstream has neither), constant-time against every key
        self.auth = TokenAuth(keys, bearer=False, header="X-API-Key", query=None, exempt=(), deny=_invalid_key)
        self.decide = Management(registry, version=version, clients_count=clients_count, access=access)
        self.registry = registry
        self.access = self.decide.access

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

    # ------------------------------------------------------------------ routes: decode, decide, encode

    async def post_token(self, request: web.Request) -> web.Response:
        body = await read_json(request, TokenRequest)
        try:
            status, answer = self.decide.add_token(body)
        except BadBody as exc:
            raise ApiError(400, str(exc)) from None
        return json_response(answer, status)

    async def delete_token(self, request: web.Request) -> web.Response:
        token = request.match_info.get("token", "")
        if not token:
            try:
                token = (await read_json(request, DeleteRequest)).token
            except ApiError:
                token = ""
        status, answer = self.decide.delete_token(token)
        return json_response(answer, status)

    async def get_status(self, request: web.Request) -> web.Response:
        return json_response(self.status())

    def status(self) -> StatusResponse:
        return self.decide.status()

    async def get_access(self, request: web.Request) -> web.Response:
        return json_response(self.decide.access_rules())

    async def put_access(self, request: web.Request) -> web.Response:
        body = await read_json(request, AccessConfigRequest)
        try:
            return json_response(self.decide.put_access(body))
        except BadBody as exc:
            raise ApiError(400, str(exc)) from None


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
