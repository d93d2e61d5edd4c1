"""KohakuRiver-compatible tunnel: the client, the runner endpoint and the forward CLI.

Names are imported lazily, so ``import hatchway.tunnel`` stays cheap and each
program only loads what it runs.
"""

from typing import Any

__all__ = ["ClientOptions", "Forwarder", "Runner", "TunnelClient", "TunnelGaveUp"]

_WHERE = {
    "TunnelClient": ".client",
    "TunnelGaveUp": ".client",
    "ClientOptions": ".options",
    "Runner": ".runner",
    "Forwarder": ".forward",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
