"""KohakuRiver-compatible tunnel: the client, the runner endpoint and the forward CLI.

Names are imported lazily (PEP 562), so ``import hatchway.tunnel`` stays cheap
(``--help`` and ``--version`` load no networking) and each program only loads
what it runs.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .client import TunnelClient, TunnelGaveUp
    from .forward import Forwarder
    from .options import ClientOptions
    from .runner import Runner

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

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
