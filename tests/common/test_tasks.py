"""common.tasks.TaskSet: ownership, failure logging, closing."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hatchway.common.tasks import TaskSet


async def test_spawn_keeps_reference_and_discards_done_tasks() -> None:
    tasks = TaskSet("t")
    release = asyncio.Event()

    async def work() -> int:
        await release.wait()
        return 7

    task = tasks.spawn(work(), name="work")
    assert len(tasks) == 1 and list(tasks) == [task] and task.get_name() == "work"
    release.set()
    assert await task == 7
    await tasks.join()
    assert len(tasks) == 0
    await tasks.aclose()


async def test_failure_is_logged_once_and_retrieved(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    async with TaskSet("owner") as tasks:

        async def boom() -> None:
            raise ValueError("bad")

        with caplog.at_level(logging.ERROR, logger="hatchway.common.tasks"):
            task = tasks.spawn(boom(), name="boomer")
            await asyncio.wait([task])
            await tasks.join()
        del task
    failures = [r for r in caplog.records if "boomer" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].getMessage() == "owner: task boomer failed"
    assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], ValueError)
    assert unretrieved == []
    loop.set_exception_handler(None)


async def test_failure_does_not_cancel_siblings() -> None:
    async with TaskSet() as tasks:
        sibling_done = asyncio.Event()

        async def fail() -> None:
            raise RuntimeError("x")

        async def sibling() -> None:
            sibling_done.set()

        failing = tasks.spawn(fail())
        await asyncio.wait([failing])
        tasks.spawn(sibling())
        await asyncio.wait_for(sibling_done.wait(), 5)


async def test_aclose_cancels_and_awaits_everything() -> None:
    tasks = TaskSet()
    started = asyncio.Event()
    cleaned = []

    async def forever(i: int) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.append(i)

    spawned = [tasks.spawn(forever(i)) for i in range(3)]
    await started.wait()
    await tasks.aclose()
    assert sorted(cleaned) == [0, 1, 2]
    assert all(t.cancelled() for t in spawned)
    assert len(tasks) == 0 and tasks.closing


async def test_spawn_after_close_raises_and_closes_the_coroutine() -> None:
    tasks = TaskSet("closed")
    await tasks.aclose()
    ran = []

    async def work() -> None:
        ran.append(1)

    coro = work()
    with pytest.raises(RuntimeError, match="closed"):
        tasks.spawn(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning
    assert ran == []


async def test_aclose_from_inside_a_member_task() -> None:
    tasks = TaskSet()
    other_cancelled = asyncio.Event()

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            other_cancelled.set()
            raise

    async def closer() -> str:
        await asyncio.sleep(0)
        await tasks.aclose()
        return "closed"

    tasks.spawn(other())
    closing = tasks.spawn(closer())
    assert await closing == "closed"
    assert other_cancelled.is_set()


async def test_cancel_is_synchronous_and_join_waits() -> None:
    tasks = TaskSet()
    task = tasks.spawn(asyncio.Event().wait())
    tasks.cancel()
    assert not tasks.closing
    await tasks.join()
    assert task.cancelled()
    tasks.spawn(asyncio.sleep(0))  # still open
    await tasks.aclose()


async def test_join_includes_tasks_spawned_meanwhile() -> None:
    tasks = TaskSet()
    order: list[str] = []

    async def child() -> None:
        order.append("child")

    async def parent() -> None:
        tasks.spawn(child())
        order.append("parent")

    tasks.spawn(parent())
    await tasks.join()
    assert order == ["parent", "child"]
    await tasks.aclose()
