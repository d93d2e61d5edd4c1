"""Suite-wide test set-up.

* Every async test runs on both loops: asyncio's and uvloop's (packaging.md 7.4).
* ``tests/`` is on ``sys.path``, so test modules can ``from helpers import wait_until``.
* Leak check: a test fails (as an error at teardown) when it leaves a thread, a
  child process or an asyncio task running after its own fixtures have been
  torn down (the check reports; it ends nothing), or when
  asyncio reports an object it dropped without closing or awaiting it
  ("Unclosed client session", "Task was destroyed but it is pending",
  "Task exception was never retrieved"; a gc pass runs at teardown). Threads
  started by session/module/class-scoped fixtures belong to those fixtures and
  are not counted. A thread or task gets a short grace (``LEAK_GRACE``) to
  finish on its own, awaited on its end (join / asyncio.wait), not slept.
"""

from __future__ import annotations

import asyncio
import gc
import os
import select
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

LEAK_GRACE = 2.0  # seconds a thread or task may take to finish after its test

# Threads and child processes started while a wider-than-function fixture was set up: they live with that fixture.
_fixture_threads: set[threading.Thread] = set()
_fixture_children: set[int] = set()


def pytest_asyncio_loop_factories(config, item):
    factories = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


# ------------------------------------------------------------------ leak check: threads


class _FixtureThreads:
    """Remembers the threads that wider-than-function fixtures start.

    Registered as a global plugin: a conftest hook would not see session-scoped
    fixtures, whose hooks run for the session node outside ``tests/``.
    """

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        if fixturedef.scope == "function":
            return (yield)
        before = set(threading.enumerate())
        children = _children()
        try:
            return (yield)
        finally:
            _fixture_threads.update(set(threading.enumerate()) - before)
            _fixture_children.update(_children() - children)


def pytest_configure(config):
    config.pluginmanager.register(_FixtureThreads(), "hatchway-fixture-threads")


_threads_before: dict[str, set[threading.Thread]] = {}
_children_before: dict[str, set[int]] = {}


def _children() -> set[int]:
    """PIDs of this process's running (not zombie) children, from /proc (empty where /proc lacks it)."""
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids.update(int(pid) for pid in f.read().split())
        except OSError:
            continue
    return {pid for pid in pids if _state(pid) not in ("Z", "X", None)}


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def _describe_process(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return f"pid {pid}: " + " ".join(a.decode(errors="replace") for a in argv if a)[:200]
    except OSError:
        return f"pid {pid}"


def _wait_exited(pids: list[int], timeout: float) -> list[int]:
    """Wait (on pidfds, no polling) until the processes exit or ``timeout`` passes; return those still running."""
    deadline = time.monotonic() + timeout
    alive = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready and _state(pid) not in ("Z", "X", None):
                alive.append(pid)
        finally:
            os.close(fd)
    return alive


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    _threads_before[item.nodeid] = set(threading.enumerate())
    _children_before[item.nodeid] = _children()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield  # every fixture of the test (and its event loop) is gone after this
    before = _threads_before.pop(item.nodeid, set())
    _fixture_threads.intersection_update(threading.enumerate())  # forget finished ones
    leaked = [t for t in threading.enumerate() if t not in before and t not in _fixture_threads]
    deadline = time.monotonic() + LEAK_GRACE
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in leaked if t.is_alive()]
    children_before = _children_before.pop(item.nodeid, set())
    _fixture_children.intersection_update(_children())
    running = _wait_exited(sorted(_children() - children_before - _fixture_children), LEAK_GRACE)
    if alive:
        pytest.fail(f"test left {len(alive)} thread(s) running: {', '.join(map(repr, alive))}", pytrace=False)
    if running:
        names = "; ".join(map(_describe_process, running))
        pytest.fail(f"test left {len(running)} child process(es) running: {names}", pytrace=False)
    return result


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> None:
    """Async tests get the task check, set up before and torn down after their other fixtures."""
    if pytest_asyncio.is_async_test(request.node):
        marker = request.node.get_closest_marker("asyncio")
        scope = (marker.kwargs.get("loop_scope") if marker else None) or "function"
        if scope != "function":  # the loop outlives the test: the task check would see its neighbours
            return
        request.getfixturevalue("_no_leaked_tasks")


# ------------------------------------------------------------------ leak check: asyncio tasks


# What asyncio reports through the loop's exception handler when something was dropped unowned.
_ORPHAN_MESSAGES = ("Unclosed", "Task was destroyed but it is pending", "Task exception was never retrieved")


@pytest_asyncio.fixture
async def _no_leaked_tasks() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks()
    orphans: list[str] = []

    def capture(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        message = str(context.get("message", ""))
        if message.startswith(_ORPHAN_MESSAGES):
            orphans.append(message.splitlines()[0])
        loop.default_exception_handler(context)

    loop.set_exception_handler(capture)
    yield
    # The default executor's threads belong to this test's loop (function scope), not to the test.
    await loop.shutdown_default_executor()
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not me and t not in before and not t.done()]
    still: set[asyncio.Task] = set()
    if pending:
        _, still = await asyncio.wait(pending, timeout=LEAK_GRACE)
    names = ", ".join(f"{t.get_name()} ({t.get_coro()!r})" for t in still)
    for task in still:
        task.cancel()
    if still:
        await asyncio.wait(still, timeout=LEAK_GRACE)
    gc.collect()  # unreachable sessions/tasks the test dropped report themselves now, on this loop
    if loop.get_exception_handler() is capture:
        loop.set_exception_handler(None)
    if still:
        pytest.fail(f"test left {len(still)} asyncio task(s) running: {names}", pytrace=False)
    if orphans:
        pytest.fail(f"test dropped {len(orphans)} unowned object(s): {'; '.join(orphans)}", pytrace=False)
