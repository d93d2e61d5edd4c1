"""The client half of the WebSocket helpers: a session that does not pool WebSockets, and ``dial``.

A client run imports this and :mod:`hatchway.common.wsconn`, never
:mod:`aiohttp.web` (the server half is :mod:`hatchway.common.wsserver`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import yarl

from .wsconn import MAX_MESSAGE_DEFAULT, set_ws_nodelay

__all__ = ["client_session", "dial"]


def client_session(**kwargs: Any) -> aiohttp.ClientSession:
    """A session whose connector sets TCP_NODELAY and does not pool WebSockets."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0, ssl=kwargs.pop("ssl", True))
    return aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",), **kwargs)


async def dial(
    session: aiohttp.ClientSession,
    url: str | yarl.URL,
    *,
    heartbeat: float | None = None,
    max_msg_size: int = MAX_MESSAGE_DEFAULT,
    timeout: float | None = 30.0,
    headers: dict[str, str] | None = None,
    proxy: str | None = None,
    autoping: bool = True,
) -> aiohttp.ClientWebSocketResponse:
    """Open a WebSocket: no compression offered, no subprotocol, TCP_NODELAY set.

    ``timeout=None`` means no deadline. ``autoping=False`` hands PING/PONG
    frames to the reader (which must answer pings), for programs that run
    their own keepalive and read deadline.
    """
    async with asyncio.timeout(timeout):
        ws = await session.ws_connect(
            url,
            compress=0,
            autoping=autoping,
            heartbeat=heartbeat,
            max_msg_size=max_msg_size,
            headers=headers,
            proxy=proxy,
        )
    set_ws_nodelay(ws)
    return ws
