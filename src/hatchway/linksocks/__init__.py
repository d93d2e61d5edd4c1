"""hatchway linksocks: a LinkSocks-compatible SOCKS5/HTTP proxy over WebSocket.

The engine embeds in a running asyncio loop (see the README's embedding example)::

    from hatchway.linksocks import Client, Server, ServerOptions

Names are imported lazily (PEP 562), so ``import hatchway.linksocks`` and the
command line's ``version``/``--help`` load no networking, and a server run does
not load the client's modules.
"""

from __future__ import annotations

from hatchway.common.lazy import lazy_exports
from hatchway.common.versionflag import Version

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .client import AuthError, Client, ClientOptions
    from .options import ServerOptions
    from .server import Server

__all__ = ["AuthError", "Client", "ClientOptions", "Server", "ServerOptions"]

_WHERE = {
    "AuthError": ".client",
    "Client": ".client",
    "ClientOptions": ".client",
    "Server": ".server",
    "ServerOptions": ".options",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


# What ``--version`` prints and the words that ask for it: args.py builds the parser's version flag from
# it, and the entry points answer a lone version word before argparse is imported.
VERSION = Version("hatchway-linksocks", commands=("version",), go=True)
