"""The channel table: channel id -> endpoint, and what an endpoint is (no I/O).

Every side of LinkSocks (requester, dialer, the server's connector relay)
keeps one table keyed by the 16-byte channel id; messages are routed by id
across all links of a peer (linksocks.md 15.3).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

from . import protocol
from .protocol import Connect, ConnectResponse, Disconnect

EOF_TEXT = "EOF"
CHANNEL_EXPIRED = "channel expired"


class Endpoint(Protocol):
    """One entry of the channel table: a TCP channel, a UDP association or a connector binding.

    The dispatcher hands it the channel messages of its id, from whichever link
    of the peer they arrived on; the link's loss is told through ``suspend``
    (when ``resumable`` and the grace period is on) or ``link_lost``.
    """

    @property
    def resumable(self) -> bool: ...
    def on_data(self, link: Any, message: protocol.Data) -> None: ...
    def on_disconnect(self, link: Any, message: Disconnect) -> None: ...
    def on_connect_response(self, link: Any, message: ConnectResponse) -> None: ...
    def link_lost(self) -> None: ...
    def suspend(self) -> None: ...


class ResumableEndpoint(Endpoint, Protocol):
    """An endpoint that outlives its link for the grace period (TCP channels and connector bindings)."""

    suspended_at: float

    @property
    def suspended(self) -> bool: ...
    def is_closing(self) -> bool: ...
    def expire(self) -> None: ...
    def rebind(self, link: Any, probe: float = 0.0) -> None: ...
    def connect_message(self, resume: bool = False) -> Connect: ...
    def cut_id(self) -> bytes | None:
        """After a ``suspend`` that did not suspend: the id to Disconnect on the peer's next link (reset at the cut)."""
        ...


class ChannelTable:
    """Channel id -> endpoint, plus a short memory of recently closed ids."""

    RECENT_MAX = 4096

    def __init__(self) -> None:
        self.endpoints: dict[bytes, Endpoint] = {}
        self._recent: OrderedDict[bytes, None] = OrderedDict()

    def get(self, channel_id: bytes) -> Endpoint | None:
        return self.endpoints.get(channel_id)

    def add(self, channel_id: bytes, endpoint: Endpoint) -> None:
        self.endpoints[channel_id] = endpoint
        self._recent.pop(channel_id, None)

    def remove(self, channel_id: bytes, endpoint: Endpoint) -> None:
        if self.endpoints.get(channel_id) is endpoint:
            del self.endpoints[channel_id]
            recent = self._recent
            recent[channel_id] = None
            if len(recent) > self.RECENT_MAX:
                recent.popitem(last=False)

    def recently_closed(self, channel_id: bytes) -> bool:
        return channel_id in self._recent

    def __len__(self) -> int:
        return len(self.endpoints)

    def __contains__(self, channel_id: bytes) -> bool:
        return channel_id in self.endpoints
