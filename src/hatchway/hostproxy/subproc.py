"""Bounded subprocesses for the daemon: argv only (no shell), explicit cwd and environment, a timeout.

* :func:`run_bounded` runs a command with pipes (git: stdin in, stdout and stderr out) through
  asyncio's subprocess machinery.
* :func:`run_quiet` runs a command that needs no pipes and no working directory (the browser
  opener) the fast way on Linux: ``posix_spawn`` (vfork semantics: no copy of the daemon's page
  tables) with stdio on the null device, and the exit seen through a pidfd on the event loop,
  so no SIGCHLD handling and no watcher thread is involved. Elsewhere it falls back to asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
from collections.abc import Mapping

import msgspec

__all__ = ["Completed", "failure_text", "run_bounded", "run_quiet"]

log = logging.getLogger(__name__)


class Completed(msgspec.Struct, frozen=True):
    returncode: int | None  # None: killed at the timeout
    stdout: bytes
    stderr: bytes

    @property
    def failure(self) -> str | None:
        """Go's exec error text for a failed run (``exit status N``), or None on success."""
        return failure_text(self.returncode)


def failure_text(returncode: int | None) -> str | None:
    """Go's exec error text for a return code (``exit status N``, ``signal: killed``), None for 0; None = timed out."""
    if returncode is None:
        return "timed out"
    if returncode == 0:
        return None
    if returncode < 0:
        text = signal.strsignal(-returncode)  # Go's names are the C library's: "killed", "terminated"
        return f"signal: {text.lower() if text else -returncode}"
    return f"exit status {returncode}"


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
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return Completed(None, b"", b"")
    return Completed(proc.returncode, out[:limit], err[:limit])


_DEVNULL_STDIO = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
] if hasattr(os, "POSIX_SPAWN_OPEN") else []
_pidfd_usable: bool | None = None


def _pidfds() -> bool:
    """Whether this kernel and Python offer ``pidfd_open`` and ``posix_spawn`` (probed once)."""
    global _pidfd_usable
    if _pidfd_usable is None:
        _pidfd_usable = False
        if hasattr(os, "pidfd_open") and hasattr(os, "posix_spawn") and _DEVNULL_STDIO:
            try:
                os.close(os.pidfd_open(os.getpid()))
                _pidfd_usable = True
            except OSError:
                pass
    return _pidfd_usable


class _SpawnedChild:
    """A child seen through its pidfd: ``exited`` resolves with its return code once it is reaped."""

    __slots__ = ("_fd", "_loop", "exited", "pid")

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: int) -> None:
        self._loop = loop
        self.pid = pid
        self._fd = os.pidfd_open(pid)
        self.exited: asyncio.Future[int] = loop.create_future()
        loop.add_reader(self._fd, self._reap)

    def _reap(self) -> None:  # the pidfd is readable: the child has exited
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        try:
            code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        except ChildProcessError:  # a PID-1 reaper (common.reaper) took the status: it did run and end
            log.debug("the status of child %d was reaped elsewhere", self.pid)
            code = 0
        if not self.exited.done():
            self.exited.set_result(code)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # its own session: the whole group


_resolved: dict[tuple[str, str], str] = {}  # (command, PATH) -> its absolute path, found by an earlier spawn


def _spawn(argv: list[str], env: Mapping[str, str]) -> int:
    """posix_spawn with stdio on the null device in a new session. A bare command name is looked up on
    ``env``'s PATH (as subprocess does) once: posix_spawnp would try each PATH entry in the child on every
    spawn (~60 us) and search the daemon's own PATH. It is looked up again when it moved or went."""
    name = argv[0]
    if "/" in name:
        return os.posix_spawn(name, argv, env, file_actions=_DEVNULL_STDIO, setsid=True)
    key = (name, env.get("PATH", os.defpath))
    path = _resolved.get(key)
    if path is not None:
        try:
            return os.posix_spawn(path, argv, env, file_actions=_DEVNULL_STDIO, setsid=True)
        except (FileNotFoundError, PermissionError):
            del _resolved[key]
    found = shutil.which(name, path=key[1])
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    if os.path.isabs(found):
        _resolved[key] = found
    return os.posix_spawn(found, argv, env, file_actions=_DEVNULL_STDIO, setsid=True)


async def run_quiet(argv: list[str], *, timeout: float = 10.0, env: dict[str, str] | None = None) -> int | None:
    """Run ``argv`` with stdio on the null device in a new session; its return code, None if killed at ``timeout``.

    Raises OSError when it cannot start. A cancelled caller kills the child (it is still reaped).
    """
    if not _pidfds():
        return await _run_quiet_asyncio(argv, timeout=timeout, env=env)
    loop = asyncio.get_running_loop()
    pid = _spawn(argv, os.environ if env is None else env)
    child = _SpawnedChild(loop, pid)
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(child.exited)
    except TimeoutError:
        child.kill()
        await child.exited
        return None
    except asyncio.CancelledError:
        child.kill()  # the pidfd reader still reaps it
        raise


async def _run_quiet_asyncio(argv: list[str], *, timeout: float, env: dict[str, str] | None) -> int | None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return None
