"""hatchway linksocks: a LinkSocks-compatible SOCKS5/HTTP proxy over WebSocket.

The engine embeds in a running asyncio loop (see the README's embedding example)::

    from hatchway.linksocks import Client, Server, ServerOptions

Names are imported lazily (PEP 562), so ``import hatchway.linksocks`` and the
command line's ``version``/``--help`` load no networking, and a server run does
not load the client's modules.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .client import AuthError, Client, ClientOptions
    from .server import Server, ServerOptions

__all__ = ["AuthError", "Client", "ClientOptions", "Server", "ServerOptions"]

_WHERE = {
    "AuthError": ".client",
    "Client": ".client",
    "ClientOptions": ".client",
    "Server": ".server",
    "ServerOptions": ".server",
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
