"""Health checks with Docker's semantics, reported in ``/health``.

:class:`HealthState` is the sans-I/O part (Docker's ``handleProbeResult`` and
its interval choice): results in, status/streak/log and the next delay out.
:class:`HealthChecker` runs the probes: each one is spawned like an exec
(agent environment without the token), stdout and stderr combined, output cut
at 4096 bytes (then ``...``), killed at the timeout and recorded as exit -1
with ``Health check exceeded timeout (<duration>)``.

Docker's rules: the first probe runs after one interval; during the start
period probes run every start interval and failures do not count while the
status is ``starting``; a success makes it ``healthy``; ``retries``
consecutive counted failures make it ``unhealthy``; the last 5 results are
kept. Defaults: interval 30 s, timeout 30 s, start period 0, start interval
5 s, retries 3. ``NONE`` (or an empty test) disables the checker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping

import msgspec

from hatchway.common.reaper import Reaper

from .protocol import HealthLogEntry
from .protocol import HealthState as HealthReport
from .spawn import ChildSpec, SpawnError, child_environment, spawn

__all__ = ["HealthChecker", "HealthConfig", "HealthState", "go_duration", "probe_argv", "rfc3339"]

log = logging.getLogger("hatchway.agent.health")

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MAX_OUTPUT = 4096
MAX_LOG = 5

STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"


class HealthConfig(msgspec.Struct, omit_defaults=True):
    """Docker's HealthConfig (durations in nanoseconds), as in ``docker inspect``."""

    Test: list[str] = []
    Interval: int = 0
    Timeout: int = 0
    StartPeriod: int = 0
    StartInterval: int = 0
    Retries: int = 0

    @property
    def enabled(self) -> bool:
        return probe_argv(self.Test) is not None


def probe_argv(test: list[str]) -> list[str] | None:
    """The argv of a test, or None when health checks are off (``NONE``, empty)."""
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return test[1:] or None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])] if len(test) > 1 else None
    return list(test)  # upstream runs anything else as a raw argv


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``1s``, ``1.5s``, ``500ms``, ``1m30s``, ``1h0m0s``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < SECOND:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * SECOND)
    minutes, rest = divmod(rest, 60 * SECOND)
    text = _fraction(rest, SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def rfc3339(ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano)."""
    seconds, frac = divmod(ns, SECOND)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


class HealthState:
    """Docker's health bookkeeping (sans-I/O)."""

    def __init__(self, config: HealthConfig, started_ns: int) -> None:
        self.config = config
        self.started_ns = started_ns
        self.status = STARTING
        self.failing_streak = 0
        self.log: list[HealthLogEntry] = []
        self.interval = config.Interval or DEFAULT_INTERVAL
        self.timeout = config.Timeout or DEFAULT_TIMEOUT
        self.start_period = config.StartPeriod
        self.start_interval = config.StartInterval or DEFAULT_START_INTERVAL
        self.retries = config.Retries if config.Retries > 0 else DEFAULT_RETRIES

    def next_delay(self, now_ns: int) -> int:
        """Nanoseconds until the next probe (Docker's getInterval)."""
        if now_ns - self.started_ns >= self.start_period:
            return self.interval
        return self.start_interval if self.status == STARTING else self.interval

    def record(self, start_ns: int, end_ns: int, exit_code: int, output: str) -> None:
        self.log.append(HealthLogEntry(rfc3339(start_ns), rfc3339(end_ns), exit_code, output))
        del self.log[:-MAX_LOG]
        if exit_code == 0:
            self.failing_streak = 0
            self.status = HEALTHY
            return
        if self.status == STARTING and start_ns - self.started_ns < self.start_period:
            return
        self.failing_streak += 1
        if self.failing_streak >= self.retries:
            self.status = UNHEALTHY

    def report(self) -> HealthReport:
        return HealthReport(self.status, self.failing_streak, list(self.log))


class HealthChecker:
    """Runs the probes of one :class:`HealthConfig` until closed."""

    def __init__(self, config: HealthConfig, reaper: Reaper, environ: Mapping[str, str], *,
                 clock: Callable[[], int] = time.time_ns, workdir: str = "",
                 on_change: Callable[[HealthReport], None] | None = None) -> None:
        argv = probe_argv(config.Test)
        if argv is None:
            raise ValueError("health checks are disabled for this test")
        self.argv = argv
        self.reaper = reaper
        self.environ = child_environment(environ)
        self.clock = clock
        self.workdir = workdir
        self.state = HealthState(config, clock())
        self.changed = asyncio.Event()
        self.probes = 0
        self.on_change = on_change  # called with the report whenever the status changes

    async def run(self) -> None:
        state = self.state
        while True:
            await asyncio.sleep(state.next_delay(self.clock()) / SECOND)
            await self.probe()

    async def probe(self) -> None:
        start = self.clock()
        code, output = await self._run_probe()
        before = self.state.status
        self.state.record(start, self.clock(), code, output)
        if self.state.status != before and self.on_change is not None:
            self.on_change(self.state.report())
        self.probes += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def _run_probe(self) -> tuple[int, str]:
        timeout_ns = self.state.timeout
        try:
            child = spawn(ChildSpec(argv=self.argv, env=self.environ, workdir=self.workdir, stdin=False,
                                    merge_stderr=True))
        except SpawnError as exc:
            return 1, exc.text
        fd = child.stdout_fd
        child.stdout_fd = None
        assert fd is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        file = open(fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 - the transport owns it
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), file)
        output = bytearray()
        truncated = False

        async def collect() -> int:
            nonlocal truncated
            while chunk := await reader.read(65536):
                room = MAX_OUTPUT - len(output)
                if len(chunk) > room:
                    truncated = True
                output.extend(chunk[:room])
            return await self.reaper.wait(child.pid)

        try:
            returncode = await asyncio.wait_for(collect(), timeout_ns / SECOND)
        except TimeoutError:
            for kill in (os.killpg, os.kill):
                try:
                    kill(child.pid, 9)
                except (ProcessLookupError, PermissionError):
                    pass
            child.reaped(await self.reaper.wait(child.pid))
            transport.close()
            return -1, f"Health check exceeded timeout ({go_duration(timeout_ns)})"
        finally:
            child.close_fds()
        transport.close()
        child.reaped(returncode)
        text = output.decode("utf-8", "replace") + ("..." if truncated else "")
        return (returncode if returncode >= 0 else 128 - returncode), text
