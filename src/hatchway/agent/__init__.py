"""Sockerless-compatible remote execution agent and its client library.

Names are imported lazily (PEP 562, :func:`hatchway.common.lazy.lazy_exports`), so
``import hatchway.agent`` stays cheap and each program only loads what it runs.
"""

from __future__ import annotations

from hatchway.common.lazy import lazy_exports
from hatchway.common.versionflag import Version

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .client import AgentClient, ExecResult, ReverseRegistry
    from .health import HealthConfig
    from .service import Agent, AgentConfig

__all__ = ["Agent", "AgentClient", "AgentConfig", "ExecResult", "HealthConfig", "ReverseRegistry"]

_WHERE = {
    "Agent": ".service",
    "AgentConfig": ".service",
    "HealthConfig": ".health",
    "AgentClient": ".client",
    "ExecResult": ".client",
    "ReverseRegistry": ".client",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)


# What ``--version`` prints and the words that ask for it: args.py builds the parser's version flag from
# it, and the entry points answer a lone version word before argparse is imported.
VERSION = Version("hatchway-agent", flags=("-version", "--version"), go=True)
