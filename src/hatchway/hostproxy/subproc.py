"""Bounded subprocesses for the daemon: argv only (no shell), explicit cwd and environment, a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import msgspec

__all__ = ["Completed", "run_bounded"]


class Completed(msgspec.Struct, frozen=True):
    returncode: int | None  # None: killed at the timeout
    stdout: bytes
    stderr: bytes

    @property
    def failure(self) -> str | None:
        """Go's exec error text for a failed run (``exit status N``), or None on success."""
        if self.returncode is None:
            return "timed out"
        if self.returncode == 0:
            return None
        if self.returncode < 0:
            return f"signal: {signal.Signals(-self.returncode).name.lower().removeprefix('sig')}"
        return f"exit status {self.returncode}"


async def run_bounded(argv: list[str], *, stdin: bytes | None = None, cwd: str | None = None,
                      env: dict[str, str] | None = None, timeout: float = 10.0,
                      limit: int = 1 << 20) -> Completed:
    """Run ``argv``; kill its process group at ``timeout``. Raises OSError when it cannot start."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            import os

            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return Completed(None, b"", b"")
    return Completed(proc.returncode, out[:limit], err[:limit])
