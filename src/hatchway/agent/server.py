"""Server mode's HTTP surface: ``GET /health`` (never authenticated) and ``GET /ws``.

Auth is common/'s :class:`~hatchway.common.httpapi.TokenAuth` with the Go
agent's rule: it runs before routing for every path except exactly
``/health``; the ``Authorization`` header must be exactly ``Bearer <token>``;
``?token=`` counts only when there is no Authorization header; a refusal is
401 ``unauthorized\\n`` in plain text (so an unknown path is 401, not 404,
without credentials). Other paths 404, other methods 405.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from hatchway.common.httpapi import TcpAddress, TokenAuth, json_response
from hatchway.common.wsserver import accept

from . import protocol as p
from .connection import Connection
from .protocol import MAX_MESSAGE
from .runtime import AgentRuntime

__all__ = ["build_app", "health_body", "parse_addr"]

log = logging.getLogger("hatchway.agent")

RUNTIME_KEY = web.AppKey("agent_runtime", AgentRuntime)


def parse_addr(addr: str) -> TcpAddress:
    """Go's listen address: ``:9111``, ``127.0.0.1:0``, ``[::1]:9111``, ``localhost:80``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen tcp {addr}: address {addr}: missing port in address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return TcpAddress(host, int(port))


def _unauthorized(request: web.Request) -> web.StreamResponse:
    return web.Response(status=401, text="unauthorized\n", content_type="text/plain")


def health_body(runtime: AgentRuntime) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "ok"}
    main = runtime.main
    if main is not None:
        body["pid"] = main.pid
        body["exited"] = main.exited
        if main.exit_code is not None:
            body["exitCode"] = main.exit_code
    if runtime.health is not None:
        report: p.HealthState = runtime.health.state.report()
        body["health"] = report
    return body


async def _health(request: web.Request) -> web.StreamResponse:
    return json_response(health_body(request.app[RUNTIME_KEY]))


async def _ws(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME_KEY]
    ws = await accept(request, max_msg_size=MAX_MESSAGE)
    connection = Connection(ws, runtime, name=f"agent connection {request.remote}")
    await connection.serve()
    return ws


def build_app(runtime: AgentRuntime, token: str) -> web.Application:
    app = web.Application()
    if token:
        auth = TokenAuth([token], bearer=True, header=None, query="token", exempt=("/health",),
                         deny=_unauthorized, first_only=True, exact_scheme=True)
        app.middlewares.append(auth.middleware)  # type: ignore[arg-type]  # aiohttp's Middleware protocol vs a decorated function
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/health", _health, allow_head=False)
    app.router.add_get("/ws", _ws, allow_head=False)
    return app
