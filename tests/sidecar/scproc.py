"""Run hatchway-sidecar as a child process and read its stdout line by line (as a parent does)."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from hatchway.sidecar.signals import Signal, parse_signal
from helpers import wait_until

# $HATCHWAY_SIDECAR_CMD runs the process tests against a built executable (e.g. dist/hatchway-sidecar)
SIDECAR = shlex.split(os.environ.get("HATCHWAY_SIDECAR_CMD", "")) or [sys.executable, "-m", "hatchway.sidecar"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SidecarProc:
    """``async with SidecarProc([...]) as sc``: started; ``sc.lines`` grows as stdout arrives."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 direct: bool = True, command: Sequence[str] | None = None) -> None:
        base = list(command) if command is not None else [*SIDECAR, *(["-backend", "direct"] if direct else [])]
        self.argv = [*base, *args]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.lines: list[str] = []
        self.stderr = b""
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr_reader: asyncio.Task[None] | None = None
        self.line_arrived = asyncio.Event()

    async def __aenter__(self) -> SidecarProc:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read())
        self._stderr_reader = asyncio.create_task(self._read_stderr())
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert self._reader is not None and self._stderr_reader is not None
        await self._reader
        await self._stderr_reader

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self.line_arrived.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        self.stderr = await self.proc.stderr.read()

    @property
    def signals(self) -> list[Signal]:
        return [s for s in map(parse_signal, self.lines) if s is not None]

    def signal_of(self, word: str) -> Signal | None:
        return next((s for s in self.signals if s.word == word), None)

    async def wait_signal(self, word: str, timeout: float = 20.0) -> Signal:
        def seen() -> Signal | None:
            found = self.signal_of(word)
            if found is None and self.proc is not None and self.proc.returncode is not None and self._reader is not None \
                    and self._reader.done():
                raise AssertionError(f"exited {self.proc.returncode} before {word}: {self.lines} {self.stderr!r}")
            return found

        return await wait_until(seen, timeout=timeout, what=f"@@SIDECAR:{word}@@")

    async def ready(self) -> str:
        return (await self.wait_signal("READY")).detail

    async def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        assert self._reader is not None
        await self._reader
        return code

    async def terminate(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await self.wait(5.0)
