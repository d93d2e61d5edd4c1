"""The server half of the WebSocket helpers: ``accept`` (serving itself is :class:`~hatchway.common.httpapi.HttpServer`).

A server run imports this and :mod:`hatchway.common.wsconn`, never
:mod:`hatchway.common.wsclient`.
"""

from __future__ import annotations

from aiohttp import web

from .wsconn import MAX_MESSAGE_DEFAULT, set_ws_nodelay

__all__ = ["accept"]


async def accept(
    request: web.Request,
    *,
    heartbeat: float | None = None,
    max_msg_size: int = MAX_MESSAGE_DEFAULT,
    autoping: bool = True,
) -> web.WebSocketResponse:
    """Upgrade a request: permessage-deflate declined, TCP_NODELAY set (``autoping`` as in ``wsclient.dial``)."""
    ws = web.WebSocketResponse(compress=False, heartbeat=heartbeat, max_msg_size=max_msg_size, autoping=autoping)
    await ws.prepare(request)
    set_ws_nodelay(ws)
    return ws
