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


# What ``--version`` prints, and the words that ask for it: args.py builds the parser's version flag
# from these, and hatchway.common.versionflag answers a lone one of them before argparse is imported.
PROG = "hatchway-sidecar"
VERSION_FLAGS = ("-version", "--version")
VERSION_COMMANDS: tuple[str, ...] = ()


def version_line() -> str:
    from hatchway import __version__
    from hatchway.common.versionflag import go_version_string

    return go_version_string(PROG, __version__)
