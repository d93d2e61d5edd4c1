"""Sockerless-compatible remote execution agent and its client library.

Names are imported lazily, so ``import hatchway.agent`` stays cheap and each
program only loads what it runs.
"""

from typing import Any

__all__ = ["Agent", "AgentClient", "AgentConfig", "ExecResult", "HealthConfig", "ReverseRegistry"]

_WHERE = {
    "Agent": ".service",
    "AgentConfig": ".service",
    "HealthConfig": ".health",
    "AgentClient": ".client",
    "ExecResult": ".client",
    "ReverseRegistry": ".client",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module, __name__), name)
