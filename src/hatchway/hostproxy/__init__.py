"""clawker-compatible host proxy: the daemon, its manager and watcher, the socket bridge, the container helpers.

Names are imported lazily, so each role loads only what it runs.
"""

from __future__ import annotations

from hatchway.common.versionflag import Version

TYPE_CHECKING = False  # no typing import at run time: --version and --help start faster without it
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BridgeManager",
    "CallbackChannel",
    "Daemon",
    "HostBridge",
    "DaemonConfig",
    "EngineClient",
    "HostProxyServer",
    "Manager",
    "ServerConfig",
    "SessionStore",
    "TokenRegistry",
    "Watcher",
    "mint_token",
]

_WHERE = {
    "CallbackChannel": ".session",
    "SessionStore": ".session",
    "HostProxyServer": ".server",
    "ServerConfig": ".server",
    "TokenRegistry": ".tokens",
    "mint_token": ".tokens",
    "Daemon": ".daemon",
    "DaemonConfig": ".daemon",
    "EngineClient": ".engine",
    "Manager": ".manager",
    "Watcher": ".watcher",
    "BridgeManager": ".bridgemanager",
    "HostBridge": ".bridge",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)


# What ``--version`` prints and the words that ask for it: args.py builds the parser's version flag from
# it, and the entry points answer a lone version word before argparse is imported.
VERSION = Version("hatchway-hostproxy")
