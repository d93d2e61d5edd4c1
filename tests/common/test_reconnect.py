import pytest

from hatchway.common.reconnect import Backoff, GaveUp, reconnect_loop


def test_fixed_backoff():
    b = Backoff(initial=5, factor=1)
    assert [b.next() for _ in range(3)] == [5, 5, 5]


def test_exponential_backoff_caps_and_resets():
    b = Backoff(initial=1, factor=1.5, maximum=3)
    assert [b.next() for _ in range(5)] == [1, 1.5, 2.25, 3, 3]
    b.reset()
    assert b.next() == 1


def test_jitter_stays_in_range():
    b = Backoff(initial=10, factor=1, jitter=0.2)
    delays = [b.next() for _ in range(200)]
    assert all(8 <= d <= 12 for d in delays) and len(set(delays)) > 1


class Script:
    """attempt() results in order; records sleeps between them."""

    def __init__(self, results):
        self.results = list(results)
        self.log = []

    async def attempt(self):
        self.log.append("attempt")
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    async def sleep(self, delay):
        self.log.append(delay)
        if not self.results:
            raise StopAsyncIteration


async def test_gives_up_after_consecutive_failures_then_one_more_delay():
    s = Script([False, OSError("refused"), False, True])
    with pytest.raises(GaveUp):
        await reconnect_loop(s.attempt, Backoff(initial=1), max_failures=3, sleep=s.sleep)
    assert s.log == ["attempt", 1, "attempt", 1, "attempt", 1]


async def test_success_resets_the_failure_counter():
    s = Script([False, True, False, True, False])
    with pytest.raises(StopAsyncIteration):
        await reconnect_loop(s.attempt, Backoff(initial=1), max_failures=2, sleep=s.sleep)
    assert s.log.count("attempt") == 5


async def test_single_attempt_without_reconnect():
    s = Script([False])
    await reconnect_loop(s.attempt, Backoff(), reconnect=False, sleep=s.sleep)
    assert s.log == ["attempt"]
