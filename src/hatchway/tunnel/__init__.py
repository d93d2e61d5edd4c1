"""KohakuRiver-compatible tunnel: the client, the runner endpoint and the forward CLI.

Names are imported lazily (PEP 562), so ``import hatchway.tunnel`` stays cheap
(``--help`` and ``--version`` load no networking) and each program only loads
what it runs.
"""

from __future__ import annotations

from hatchway.common.lazy import lazy_exports
from hatchway.common.versionflag import Version

TYPE_CHECKING = False
if TYPE_CHECKING:
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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


# What ``--version`` prints and the words that ask for it: args.py builds the parser's version flag from
# it, and the entry points answer a lone version word before argparse is imported.
VERSION = Version("hatchway-tunnel")
