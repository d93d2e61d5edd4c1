"""The ``/status`` body (sidecar.md 5.2, 5.3) as msgspec Structs.

``self`` always carries all 11 keys (upstream uses the peer struct for it),
``peers`` is always a list (upstream emits ``null``, which crashes the
arkitekt-gateway wrapper), and ``direct`` is ``bool(current_address)`` (the
``tailscale status`` rule; upstream's formula is false on direct paths).
"""

from __future__ import annotations

import datetime

import msgspec

__all__ = ["BACKEND_STATES", "NodeInfo", "PeerStatus", "Status", "rfc3339"]

BACKEND_STATES = ("NoState", "NeedsLogin", "NeedsMachineAuth", "Stopped", "Starting", "Running")


def rfc3339(when: datetime.datetime | None) -> str:
    """Go's ``time.Format(time.RFC3339)``; ``""`` for a zero/absent time."""
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    text = when.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class NodeInfo(msgspec.Struct, kw_only=True):
    """What a backend knows about one node (itself or a peer); the input of :meth:`PeerStatus.of`."""

    name: str = ""  # FQDN with trailing dot
    hostname: str = ""
    tailscale_ips: list[str] = msgspec.field(default_factory=list)
    online: bool = False
    relay: str = ""  # home DERP region code
    current_address: str = ""  # ip:port of the best UDP path, "" when none
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_seen: datetime.datetime | None = None
    last_handshake: datetime.datetime | None = None


class PeerStatus(msgspec.Struct, kw_only=True):
    """One entry of ``/status`` (also ``self``): exactly upstream's 11 keys, in its order."""

    name: str = ""
    hostname: str = ""
    tailscale_ips: list[str] = msgspec.field(default_factory=list)
    online: bool = False
    direct: bool = False
    relayed_via: str = ""
    current_address: str = ""
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_seen: str = ""
    last_handshake: str = ""

    @classmethod
    def of(cls, node: NodeInfo) -> PeerStatus:
        return cls(
            name=node.name,
            hostname=node.hostname,
            tailscale_ips=list(node.tailscale_ips),
            online=node.online,
            direct=bool(node.current_address),
            relayed_via=node.relay,
            current_address=node.current_address,
            rx_bytes=node.rx_bytes,
            tx_bytes=node.tx_bytes,
            last_seen=rfc3339(node.last_seen),
            last_handshake=rfc3339(node.last_handshake),
        )


class Status(msgspec.Struct, kw_only=True):
    """The whole ``/status`` body."""

    self_: PeerStatus = msgspec.field(name="self")
    peers: list[PeerStatus] = msgspec.field(default_factory=list)
    backend_state: str = "NoState"

    def encode(self) -> bytes:
        """Compact JSON plus ``\\n`` (Go ``json.Encoder``)."""
        return msgspec.json.encode(self) + b"\n"
