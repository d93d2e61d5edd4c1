"""The one task-ownership primitive: a long-lived set of tasks with one owner.

Like a trio nursery or :class:`asyncio.TaskGroup`, a :class:`TaskSet` owns
every task it starts and nothing it starts outlives it. Unlike them it is
long-lived and failures stay local: a connection, a link or a server keeps
one for its whole life, spawns work from protocol callbacks (no ``await``
needed), and a task that fails is logged once and forgotten without
cancelling its siblings. ``aclose()`` cancels what is left and waits for it.

Usage::

    async with TaskSet("proxy front") as tasks:
        tasks.spawn(handle(conn), name="dial 10.0.0.1:80")
        ...
    # every task is done here

Rules:

* ``spawn`` keeps a strong reference until the task is done (asyncio itself
  keeps only weak ones), then drops it.
* A task that raises (anything but cancellation) is logged once, with its
  name and traceback, on the set's logger; the exception is retrieved, so
  asyncio never prints "Task exception was never retrieved".
* After ``aclose()`` began, ``spawn`` raises :class:`RuntimeError` (and
  closes the coroutine, so no "never awaited" warning follows).
* ``aclose()`` may be called from one of the set's own tasks: that task is
  cancelled last by its caller's own return, not awaited by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TaskSet"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskSet:
    """Tasks owned by one object; see the module docstring."""

    __slots__ = ("_closing", "_log", "_name", "_tasks")

    def __init__(self, name: str = "", *, logger: logging.Logger | None = None) -> None:
        self._name = name
        self._log = logger or log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # ------------------------------------------------------------ inspection
    def __len__(self) -> int:
        """Tasks not yet done."""
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<TaskSet {self._name!r} {state} tasks={len(self._tasks)}>"

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` or :meth:`cancel` was called with ``close=True``."""
        return self._closing

    # ------------------------------------------------------------ spawning
    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned by this set (needs a running loop)."""
        if self._closing:
            coro.close()
            raise RuntimeError(f"{self!r} is closed; cannot spawn {name or coro!r}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # marks it retrieved
        if exc is not None:
            where = f"{self._name}: " if self._name else ""
            self._log.error("%stask %s failed", where, task.get_name(), exc_info=exc)

    # ------------------------------------------------------------ ending
    def cancel(self, *, close: bool = False) -> None:
        """Cancel every task now without waiting (for synchronous callers such as ``connection_lost``).

        With ``close=True`` the set also refuses new tasks from here on.
        """
        if close:
            self._closing = True
        current = _current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    async def join(self) -> None:
        """Wait until every task (including ones spawned meanwhile) is done, without cancelling."""
        current = _current_task()
        while pending := [t for t in self._tasks if t is not current]:
            await asyncio.wait(pending)

    async def aclose(self) -> None:
        """Refuse new tasks, cancel the running ones and wait until all are done.

        Failures are logged by the tasks' own callbacks; this never raises
        them. If the caller is cancelled while waiting, the cancellation
        propagates after the tasks have been told to stop.
        """
        self.cancel(close=True)
        await self.join()

    async def __aenter__(self) -> TaskSet:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
