"""A child's stdin (a pipe or a PTY master) written without ever blocking the read loop.

Each session has its own :class:`InputPipe`: a non-blocking fd written at
once when it can take the bytes, the rest queued in order and written when
the fd becomes writable. A child that does not read stalls nobody else on the
connection (upstream's one blocking write stalled every session). The queue
is bounded in the only way that loses nothing: past ``high_water`` bytes the
pipe reports :attr:`paused` (and ``on_flow(True)``), and the connection's read
loop waits for it (:meth:`drained`): backpressure toward that peer.

The fd is written directly rather than through ``connect_write_pipe``:
uvloop's write-pipe transport reads its fd to notice a closed peer, and a PTY
master is readable (it would steal the terminal's output).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable

from hatchway.common.sink import Buffer

__all__ = ["InputPipe"]

HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 1024 * 1024


class InputPipe:
    """Owner of the write end ``fd``; see the module docstring."""

    def __init__(self, fd: int, *, high_water: int = HIGH_WATER,
                 on_flow: Callable[[bool], None] | None = None) -> None:
        self._fd = fd
        self._high = high_water
        self._low = min(LOW_WATER, high_water // 4)
        self._on_flow = on_flow
        self._queue: deque[memoryview] = deque()
        self._queued = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._close_requested = False
        self._closed = False
        self._paused = False
        self._waiters: list[asyncio.Future[None]] = []
        os.set_blocking(fd, False)

    async def open(self) -> None:
        """Kept for symmetry with the output side; the fd is usable from construction."""
        self._loop = asyncio.get_running_loop()

    # -- used by the session

    def write(self, data: Buffer) -> bool:
        """Queue ``data``; False when stdin is closed (the child closed it, or close() was called)."""
        if self._closed or self._close_requested:
            return False
        view = memoryview(data).cast("B")
        if not view:
            return True
        if not self._queue:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                written = 0
            except OSError:
                self._fail()
                return False
            view = view[written:]
            if not view:
                return True
        self._queue.append(memoryview(bytes(view)))
        self._queued += len(view)
        self._watch()
        if not self._paused and self._queued > self._high:
            self._paused = True
            if self._on_flow is not None:
                self._on_flow(True)
        return True

    def _watch(self) -> None:
        if not self._watching:
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            loop.add_writer(self._fd, self._writable)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._loop is not None:
            self._loop.remove_writer(self._fd)
        self._watching = False

    def _writable(self) -> None:
        queue = self._queue
        while queue:
            chunk = queue[0]
            try:
                written = os.write(self._fd, chunk)
            except BlockingIOError:
                return
            except OSError:
                self._fail()
                return
            self._queued -= written
            if written < len(chunk):
                queue[0] = chunk[written:]
                break
            queue.popleft()
        if self._paused and self._queued <= self._low:
            self._resume()
        if not queue:
            self._unwatch()
            if self._close_requested:
                self._close_fd()

    def _resume(self) -> None:
        self._paused = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._on_flow is not None:
            self._on_flow(False)

    def _fail(self) -> None:
        self._queue.clear()
        self._queued = 0
        self._close_fd()

    def _close_fd(self) -> None:
        self._unwatch()
        if not self._closed:
            self._closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass
        if self._paused:
            self._resume()

    def close(self) -> None:
        """EOF for the child once everything queued is written."""
        if self._close_requested:
            return
        self._close_requested = True
        if not self._queue:
            self._close_fd()

    def abort(self) -> None:
        self._close_requested = True
        self._queue.clear()
        self._queued = 0
        self._close_fd()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def paused(self) -> bool:
        return self._paused

    async def drained(self) -> None:
        if not self._paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter
