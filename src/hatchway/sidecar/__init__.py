"""Tailnet proxy sidecar, compatible with arkitekt-sidecar (names imported lazily)."""

from ..common.lazy import lazy_exports

__all__ = [
    "Backend", "DirectBackend", "DirectScript", "MeshBackend", "Sidecar", "SidecarConfig", "SidecarError",
    "Signal", "Status", "parse_signal",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Backend": ".backend",
    "DirectBackend": ".direct",
    "DirectScript": ".direct",
    "MeshBackend": ".mesh",
    "Sidecar": ".service",
    "SidecarConfig": ".service",
    "SidecarError": ".service",
    "Signal": ".signals",
    "Status": ".status",
    "parse_signal": ".signals",
})
