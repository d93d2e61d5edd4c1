"""The watcher (unit layer) and the Engine API contract against the fake engine (spec 13.3 layers 1-2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import pytest_asyncio
from engine_contract import run_contract
from fake_engine import FakeEngine

from hatchway.hostproxy.engine import ContainerSummary, DockerError, EngineClient
from hatchway.hostproxy.watcher import AGENT_FILTERS, WatchEnd, Watcher
from helpers import wait_until


class Lister:
    def __init__(self, answers: list[int | DockerError]) -> None:
        self.answers = answers
        self.calls = 0
        self.closed = False

    async def list_containers(self, filters: Mapping[str, Sequence[str]] | None = None,
                              *, all: bool = False) -> list[ContainerSummary]:
        assert filters == AGENT_FILTERS
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, DockerError):
            raise answer
        return [ContainerSummary(id=str(i)) for i in range(answer)]

    async def close(self) -> None:
        self.closed = True


async def test_exits_on_zero_after_a_check() -> None:
    lister = Lister([2, 1, 0])
    assert await Watcher(lister, grace_period=0, poll_interval=0.001).run() is WatchEnd.IDLE
    assert lister.calls == 3


async def test_exits_after_max_consecutive_errors_and_resets_on_success() -> None:
    err = DockerError(500, "boom")
    lister = Lister([err, err, 1, err, err, err])
    watcher = Watcher(lister, grace_period=0, poll_interval=0.001, max_consecutive_errs=3)
    assert await watcher.run() is WatchEnd.DOCKER_ERRORS
    assert lister.calls == 6


async def test_cancel_is_prompt_and_grace_is_respected() -> None:
    lister = Lister([0])
    task = asyncio.ensure_future(Watcher(lister, grace_period=30, poll_interval=0.001).run())
    await asyncio.sleep(0.05)
    assert lister.calls == 0  # still in the grace period
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_validation() -> None:
    for kwargs in ({"poll_interval": 0}, {"grace_period": -1}, {"max_consecutive_errs": 0}):
        with pytest.raises(ValueError):
            Watcher(Lister([0]), **kwargs)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def fake(tmp_path: Any) -> AsyncIterator[tuple[FakeEngine, str]]:
    engine = FakeEngine()
    path = str(tmp_path / "docker.sock")
    await engine.start(path)
    yield engine, path
    await engine.aclose()


async def test_contract_against_fake_engine(fake: tuple[FakeEngine, str]) -> None:
    engine, path = fake

    async def make(name: str, labels: dict[str, str], running: bool) -> str:
        c = engine.add(name)
        c.labels = labels
        c.running = running
        return c.id

    await run_contract(path, make)


async def test_engine_client_errors_and_close(fake: tuple[FakeEngine, str], tmp_path: Any) -> None:
    engine, path = fake
    client = EngineClient(path)
    engine.fail_next(1)
    with pytest.raises(DockerError) as info:
        await client.list_containers(AGENT_FILTERS)
    assert info.value.status == 500
    await client.close()
    assert client.closed
    gone = EngineClient(str(tmp_path / "missing.sock"))
    with pytest.raises(DockerError):
        await gone.list_containers()
    await gone.close()


async def test_watch_die(fake: tuple[FakeEngine, str]) -> None:
    """Case 65: a die event ends the watch; a stream error is returned; cancellation propagates."""
    from hatchway.hostproxy.bridge import watch_die

    engine, path = fake
    target, bystander = engine.add("t"), engine.add("b")
    client = EngineClient(path)
    try:
        task = asyncio.ensure_future(watch_die(client, target.id))
        await wait_until(lambda: engine.streams == 1, what="subscribed")
        engine.stop(bystander)  # filtered out by container
        engine.stop(target)
        assert await wait_until(task, what="die seen") is None
        task = asyncio.ensure_future(watch_die(client, target.id))
        await wait_until(lambda: engine.streams >= 1, what="subscribed again")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        missing = EngineClient(path + ".missing")
        error = await watch_die(missing, target.id)
        await missing.close()
        assert isinstance(error, DockerError)
    finally:
        await client.close()
