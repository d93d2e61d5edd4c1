"""The idle watcher: the daemon exits when no agent container runs, or after repeated Docker errors."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from .engine import ContainerSummary, DockerError

__all__ = ["AGENT_FILTERS", "ContainerLister", "WatchEnd", "Watcher"]

log = logging.getLogger(__name__)

# positive filters only: Docker has no label!= (upstream defect 1)
AGENT_FILTERS: dict[str, list[str]] = {"label": ["dev.clawker.managed=true", "dev.clawker.purpose=agent"]}


class ContainerLister(Protocol):
    async def list_containers(self, filters: Mapping[str, Sequence[str]] | None = None,
                              *, all: bool = False) -> list[ContainerSummary]: ...
    async def close(self) -> None: ...


class WatchEnd(enum.Enum):
    IDLE = "no agent containers running"
    DOCKER_ERRORS = "too many consecutive Docker errors"


class Watcher:
    def __init__(self, lister: ContainerLister, *, grace_period: float = 60.0, poll_interval: float = 30.0,
                 max_consecutive_errs: int = 10) -> None:
        if poll_interval <= 0:
            raise ValueError("poll interval must be positive")
        if grace_period < 0:
            raise ValueError("grace period must not be negative")
        if max_consecutive_errs <= 0:
            raise ValueError("max consecutive errors must be positive")
        self.lister = lister
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.max_consecutive_errs = max_consecutive_errs
        self.checks = 0

    async def run(self) -> WatchEnd:
        await asyncio.sleep(self.grace_period)
        errors = 0
        while True:
            await asyncio.sleep(self.poll_interval)
            self.checks += 1
            try:
                count = len(await self.lister.list_containers(AGENT_FILTERS))
            except DockerError as exc:
                errors += 1
                log.warning("counting agent containers failed (%d/%d): %s", errors, self.max_consecutive_errs, exc)
                if errors >= self.max_consecutive_errs:
                    return WatchEnd.DOCKER_ERRORS
                continue
            errors = 0
            if count == 0:
                return WatchEnd.IDLE
