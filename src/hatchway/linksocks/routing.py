"""Routing of channel messages by channel id (shared by every side).

Data, Disconnect and ConnectResponse go to the endpoint registered under
their channel id, whichever WebSocket of the peer they arrived on (a Go
client with ``-T n`` spreads one channel's messages over n connections).
On a dialing side, messages for a channel that does not exist yet are kept
in the orphan buffer until its Connect arrives.

Also the sans-I/O halves of link choice: :class:`Rotation` (round-robin over
live links, the provider pool's rule) and :func:`describe` (a message's trace text).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .channel_table import ChannelTable
from .orphans import OrphanBuffer
from .protocol import UDP, Connect, ConnectResponse, Data, Disconnect, uuid_text


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


class Alive(Protocol):
    @property
    def alive(self) -> bool: ...


L = TypeVar("L", bound=Alive)


class Rotation(Generic[L]):
    """Links serving one purpose (the providers of a reverse token), picked round-robin, dead ones skipped.

    Sans-I/O: ``changed`` is called when a link joins, so a waiter (``reverse.ProviderPool.pick``) can retry.
    """

    def __init__(self, name: str = "", changed: Callable[[], None] = lambda: None) -> None:
        self.name = name
        self.links: list[L] = []
        self._next = 0
        self._changed = changed

    def __len__(self) -> int:
        return len(self.links)

    def add(self, link: L) -> None:
        self.links.append(link)
        self._changed()

    def remove(self, link: L) -> None:
        if link in self.links:
            index = self.links.index(link)
            self.links.remove(link)
            if index < self._next:
                self._next -= 1  # the one after it is still next

    def next_alive(self) -> L | None:
        links = self.links
        for _ in range(len(links)):
            if self._next >= len(links):
                self._next = 0
            link = links[self._next]
            self._next += 1
            if link.alive:
                return link
        return None


def describe(message: Any) -> str:
    """A short text for a trace line: type, channel id, sizes."""
    name = type(message).__name__
    channel_id = getattr(message, "channel_id", None)
    parts = [name]
    if channel_id is not None:
        parts.append(uuid_text(channel_id))
    data = getattr(message, "data", None)
    if data is not None:
        parts.append(f"{len(data)} bytes")
    return " ".join(parts)


class ConnectStep(enum.Enum):
    """What a dialing side (target dialer, connector relay) does with a Connect."""

    RESUME = "resume"  # Resume = 1 for a live endpoint of this id: re-attach it to the link the Connect came on
    EXPIRED = "expired"  # Resume = 1 for an id with no live endpoint: Disconnect(CHANNEL_EXPIRED), never a dial
    DUPLICATE = "duplicate"  # a second Connect for a live id: ignored (the first one is being served)
    OPEN_UDP = "open udp"  # a new UDP association
    OPEN_TCP = "open tcp"  # a new TCP channel; with the byte ledger iff the Connect carried a count (``received``)


def connect_step(message: Connect, live: bool) -> ConnectStep:
    """``live``: an endpoint (not closed) is registered under the Connect's channel id."""
    if message.resume:
        return ConnectStep.RESUME if live else ConnectStep.EXPIRED
    if live:
        return ConnectStep.DUPLICATE
    return ConnectStep.OPEN_UDP if message.protocol == UDP else ConnectStep.OPEN_TCP


def replay_early(endpoint: Any, link: Any, messages: list[Any]) -> None:
    """Hand a new endpoint the Data / Disconnect that arrived before its Connect (from the orphan buffer)."""
    for message in messages:
        if isinstance(message, Data):
            endpoint.on_data(link, message)
        elif isinstance(message, Disconnect):
            endpoint.on_disconnect(link, message)

