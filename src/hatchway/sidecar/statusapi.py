"""The status API (``-statusport``): ``/health`` and ``/status`` on 127.0.0.1, any method, Go's exact bytes.

* ``/health``: 200 ``text/plain; charset=utf-8``, body ``OK`` (no newline).
* ``/status``: 200 ``application/json``, compact JSON plus ``\\n``; 500
  ``failed to get status: <err>`` when the backend cannot say.
* anything else: Go's ``404 page not found``.
"""

from __future__ import annotations

from aiohttp import web

from ..common.httpapi import HttpServer, TcpAddress
from .backend import Backend

__all__ = ["build_app", "status_server"]

_TEXT = "text/plain; charset=utf-8"
_NOSNIFF = {"Content-Type": _TEXT, "X-Content-Type-Options": "nosniff"}


def build_app(backend: Backend) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        if request.path == "/health":
            return web.Response(body=b"OK", headers={"Content-Type": _TEXT})
        if request.path == "/status":
            try:
                status = await backend.status()
            except Exception as exc:
                return web.Response(status=500, body=f"failed to get status: {exc}\n".encode(), headers=_NOSNIFF)
            return web.Response(body=status.encode(), headers={"Content-Type": "application/json"})
        return web.Response(status=404, body=b"404 page not found\n", headers=_NOSNIFF)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def status_server(backend: Backend, port: int) -> HttpServer:
    """The status API server on ``127.0.0.1:port`` (not started)."""
    return HttpServer(build_app(backend), [TcpAddress("127.0.0.1", port)], require="all")
