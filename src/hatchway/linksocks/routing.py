"""Routing of channel messages by channel id (shared by every side).

Data, Disconnect and ConnectResponse go to the endpoint registered under
their channel id, whichever WebSocket of the peer they arrived on (a Go
client with ``-T n`` spreads one channel's messages over n connections).
On a dialing side, messages for a channel that does not exist yet are kept
in the orphan buffer until its Connect arrives.
"""

from __future__ import annotations

from typing import Any

from .channel_table import ChannelTable
from .orphans import OrphanBuffer
from .protocol import ConnectResponse, Data, Disconnect


def route(table: ChannelTable, link: Any, message: Any, orphans: OrphanBuffer | None = None) -> bool:
    """Deliver a channel message; False if ``message`` is not a channel message."""
    kind = type(message)
    if kind is Data:
        endpoint = table.endpoints.get(message.channel_id)
        if endpoint is not None:
            endpoint.on_data(link, message)
        elif orphans is not None and message.data and not table.recently_closed(message.channel_id):
            orphans.add(message.channel_id, message, len(message.data))  # (an empty Data carries nothing to keep)
        return True
    if kind is Disconnect:
        endpoint = table.endpoints.get(message.channel_id)
        if endpoint is not None:
            endpoint.on_disconnect(link, message)
        elif orphans is not None and not table.recently_closed(message.channel_id):
            orphans.add(message.channel_id, message)
        return True
    if kind is ConnectResponse:
        endpoint = table.endpoints.get(message.channel_id)
        if endpoint is not None:
            endpoint.on_connect_response(link, message)
        return True
    return False
