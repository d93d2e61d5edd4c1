"""The one wait helper every test uses: a condition, event or future, with a deadline.

``await wait_until(cond)`` returns as soon as ``cond`` holds and fails the test
(``AssertionError`` naming ``what``) when the deadline passes first:

* an :class:`asyncio.Event`, future or other awaitable: awaited directly (no polling);
* a callable: checked now, then after every loop turn until it returns something
  truthy, which is returned.

``wait_until_blocking`` is the same for code that runs outside an event loop
(process harnesses, threads): ``cond`` may be a :class:`threading.Event` or a
callable.

tests/conftest.py puts this directory on ``sys.path``: ``from helpers import wait_until``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT = 10.0  # seconds; generous because CPU is shared on the test machine
POLL = 0.005  # seconds between checks of a callable condition (async)
POLL_BLOCKING = 0.02  # seconds between checks of a callable condition (blocking)

__all__ = ["POLL", "TIMEOUT", "wait_until", "wait_until_blocking"]


async def wait_until(
    cond: Callable[[], T] | asyncio.Event | Awaitable[T],
    *,
    timeout: float = TIMEOUT,
    what: str | None = None,
    interval: float = POLL,
) -> Any:
    """Wait for ``cond`` (see the module docstring); return its value."""
    label = what or _describe(cond)
    try:
        async with asyncio.timeout(timeout):
            if isinstance(cond, asyncio.Event):
                return await cond.wait()
            if inspect.isawaitable(cond):
                return await cond
            assert callable(cond)
            while not (result := cond()):
                await asyncio.sleep(interval)
            return result
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {label}") from None


def wait_until_blocking(
    cond: Callable[[], T] | threading.Event,
    *,
    timeout: float = TIMEOUT,
    what: str | None = None,
    interval: float = POLL_BLOCKING,
) -> Any:
    """Blocking twin of :func:`wait_until` for code outside an event loop."""
    label = what or _describe(cond)
    if isinstance(cond, threading.Event):
        if not cond.wait(timeout):
            raise AssertionError(f"timed out after {timeout} s waiting for {label}")
        return True
    deadline = time.monotonic() + timeout
    while not (result := cond()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {label}")
        time.sleep(interval)
    return result


def _describe(cond: object) -> str:
    name = getattr(cond, "__qualname__", None) or getattr(cond, "__name__", None)
    return name if isinstance(name, str) and name != "<lambda>" else repr(cond)
