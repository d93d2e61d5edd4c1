"""PID-1 duties: reap every child that exits, hand each status to whoever waits for that child.

When a hatchway program is PID 1 (a container without an init), every orphan of
the container becomes its child and must be reaped, or zombies pile up.
:class:`Reaper` is the one place that calls ``waitpid``: on SIGCHLD it reaps
every exited child (``waitpid(-1, WNOHANG)`` until none is left) and

* gives a *registered* child's return code to its waiter (:meth:`Reaper.wait`
  or :meth:`Reaper.watch`), so a program that runs its own children (the agent's
  main process and execs) never has a status stolen;
* keeps the status of an unknown child for a while (a child can exit before
  its parent got round to registering it), and discards the oldest when more
  than ``keep`` are held: those are the orphans ("strangers").

A program that uses a Reaper must spawn its children itself (``os.posix_spawn``,
``subprocess.Popen`` without calling its ``wait``/``poll``) and wait for them
through the reaper, not through asyncio's child watcher, which would find the
status already taken. ``lifecycle.run`` installs one when the process is PID 1.

The bookkeeping is plain (no asyncio): ``reap()`` takes the statuses in,
callbacks come out; ``install()`` wires it to a loop's SIGCHLD.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import OrderedDict
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["Reaper", "returncode"]

log = logging.getLogger(__name__)

WaitPid = Callable[[int, int], "tuple[int, int]"]


def returncode(status: int) -> int:
    """A wait status as subprocess reports it: the exit code, or -N for a death by signal N."""
    return os.waitstatus_to_exitcode(status)


class Reaper:
    """Reaps every child; delivers registered children's return codes; discards the rest."""

    def __init__(self, *, keep: int = 1024, waitpid: WaitPid = os.waitpid) -> None:
        self._waitpid = waitpid
        self._keep = keep
        self._waiters: dict[int, list[Callable[[int], None]]] = {}
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        self.reaped = 0
        self.discarded = 0
        self._on_stranger: list[Callable[[int, int], None]] = []
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None
        self._python_handler = False  # install() fell back to signal.signal (uvloop)

    # -- registration --

    def watch(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(returncode)`` once child ``pid`` has exited (at once if it already has)."""
        if pid in self._unclaimed:
            callback(self._unclaimed.pop(pid))
            return
        self._waiters.setdefault(pid, []).append(callback)

    async def wait(self, pid: int) -> int:
        """The return code of child ``pid`` (see :func:`returncode`), once it has exited."""
        import asyncio

        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def deliver(code: int) -> None:
            if not future.done():
                future.set_result(code)

        self.watch(pid, deliver)
        return await future

    def on_stranger(self, callback: Callable[[int, int], None]) -> None:
        """Call ``callback(pid, returncode)`` for each child reaped that nobody registered (so far)."""
        self._on_stranger.append(callback)

    # -- reaping --

    def reap(self) -> None:
        """Reap every child that has exited (call on SIGCHLD; harmless at any time)."""
        while True:
            try:
                pid, status = self._waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            self._deliver(pid, returncode(status))

    def _deliver(self, pid: int, code: int) -> None:
        self.reaped += 1
        waiters = self._waiters.pop(pid, None)
        if waiters:
            for callback in waiters:
                callback(code)
            return
        self._unclaimed[pid] = code
        log.debug("reaped child %d (%d), not registered", pid, code, extra={"pid": pid, "returncode": code})
        for stranger_callback in list(self._on_stranger):
            stranger_callback(pid, code)
        while len(self._unclaimed) > self._keep:
            self._unclaimed.popitem(last=False)
            self.discarded += 1

    # -- asyncio wiring --

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap on every SIGCHLD, on ``loop`` (and once now, for children that exited before).

        asyncio's loop takes a SIGCHLD handler; uvloop refuses one (it keeps SIGCHLD for its own
        subprocesses, which a program under a Reaper does not use), so there the Python-level handler
        hands the work to the loop with ``call_soon_threadsafe``, the signal-safe way in.
        """
        try:
            loop.add_signal_handler(signal.SIGCHLD, self.reap)
        except RuntimeError:
            def on_sigchld(signum: int, frame: FrameType | None) -> None:
                loop.call_soon_threadsafe(self.reap)

            self._previous = signal.signal(signal.SIGCHLD, on_sigchld)
            self._python_handler = True
        self.reap()

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._python_handler:
            # None: the previous handler was not Python's (uvloop/libuv's C handler): back to the default
            signal.signal(signal.SIGCHLD, self._previous if self._previous is not None else signal.SIG_DFL)
            self._previous = None
            self._python_handler = False
        else:
            loop.remove_signal_handler(signal.SIGCHLD)
