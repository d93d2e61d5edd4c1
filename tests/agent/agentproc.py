"""The agent as a real process (its CLI), for tests of flags, signals, exit codes and PID 1."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import sys
from collections.abc import Sequence

# HATCHWAY_AGENT_CMD=dist/hatchway-agent runs these tests against the release executable
AGENT = shlex.split(os.environ.get("HATCHWAY_AGENT_CMD", "")) or [sys.executable, "-m", "hatchway.agent"]
READY = re.compile(rb"READY agent (\S+):(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class AgentProcess:
    """``async with AgentProcess(args) as agent``: started, READY read; killed by PID at the end if still running."""

    def __init__(self, args: Sequence[str], *, token: str = "", prefix: Sequence[str] = (),
                 env: dict[str, str] | None = None, wait_ready: bool = True,
                 command: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.prefix = list(prefix)
        self.command = list(command) or AGENT  # the agent to run (default: HATCHWAY_AGENT_CMD or the module)
        self.env = dict(os.environ if env is None else env)
        self.env.pop("SOCKERLESS_AGENT_TOKEN", None)
        if token:
            self.env["SOCKERLESS_AGENT_TOKEN"] = token
        self.wait_ready = wait_ready
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = bytearray()
        self.stdout = bytearray()
        self.port = 0
        self._readers: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()

    async def __aenter__(self) -> AgentProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.prefix, *self.command, *self.args, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [asyncio.ensure_future(self._read(self.proc.stdout, self.stdout)),
                         asyncio.ensure_future(self._read(self.proc.stderr, self.stderr))]
        if self.wait_ready:
            waiter = asyncio.ensure_future(self._ready.wait())
            done, _ = await asyncio.wait([waiter, self._readers[1]], timeout=20, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
                await self.__aexit__()
                raise AssertionError(f"agent not ready: {self.stderr.decode(errors='replace')}")
        return self

    async def _read(self, stream: asyncio.StreamReader, into: bytearray) -> None:
        while line := await stream.readline():
            into += line
            found = READY.search(line)
            if found:
                self.port = int(found.group(2))
                self._ready.set()

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
