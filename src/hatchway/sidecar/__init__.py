"""Tailnet proxy sidecar, compatible with arkitekt-sidecar (names imported lazily)."""

from ..common.lazy import lazy_exports
from ..common.versionflag import Version

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


# What ``--version`` prints and the words that ask for it: args.py builds the parser's version flag from
# it, and the entry points answer a lone version word before argparse is imported.
VERSION = Version("hatchway-sidecar", flags=("-version", "--version"), go=True)
