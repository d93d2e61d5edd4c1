"""What every connection of one agent shares: the reaper, the children's environment, the main process.

Sessions are *not* shared: each :class:`~.connection.Connection` has its own.
The session tasks are owned here (a detached exec outlives its connection).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from hatchway.common.reaper import Reaper
from hatchway.common.tasks import TaskSet

from .spawn import TOKEN_ENV

if TYPE_CHECKING:
    from .connection import Connection
    from .health import HealthChecker
    from .mainproc import MainProcess

__all__ = ["AgentRuntime"]


class AgentRuntime:
    def __init__(self, reaper: Reaper, environ: Mapping[str, str], *, main: MainProcess | None = None,
                 health: HealthChecker | None = None) -> None:
        self.reaper = reaper
        self.environ = {key: value for key, value in environ.items() if key != TOKEN_ENV}
        self.main = main
        self.health = health
        self.tasks = TaskSet("agent sessions")
        self.connections: set[Connection] = set()
