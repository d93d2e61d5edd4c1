"""The keep-alive main process: its output history, its attachers, its exit.

Output of the main process (two pipes, or a PTY with ``-tty``) is read by
one-way pumps into a :class:`_Broadcast` per stream, which

* appends it to the :class:`~.ring.OutputRing` (the replay history),
* copies it to the agent's own stdout/stderr (platform log capture),
* hands it to every attacher, in order.

Backpressure instead of drops: while any attacher's WebSocket is full, or
the agent's own stdout is, the pumps stop reading the main process (as a
Docker log driver that blocks). Subscribing is atomic (snapshot + register in
one step of the loop), so replay and live output never overlap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable
from typing import Any, Protocol

from hatchway.common.pump import OneWayPump
from hatchway.common.reaper import Reaper
from hatchway.common.sink import Buffer, FlowListener

from .ring import STDERR, STDOUT, OutputRing
from .signals import docker_exit_code
from .spawn import Child, ChildSpec, exit_future, resize_terminal, signal_child, spawn
from .stdin import InputPipe

__all__ = ["Attacher", "MainProcess"]

log = logging.getLogger("hatchway.agent")

DRAIN_GRACE = 0.5  # seconds to read what is left after the main process exited


class Attacher(Protocol):
    """What the main process hands its output and its end to (an attach session)."""

    def deliver(self, stream: int, data: Buffer) -> None: ...
    def finish(self, code: int) -> None: ...
    def add_flow_listener(self, listener: FlowListener) -> bool: ...  # True if paused now
    def remove_flow_listener(self, listener: FlowListener) -> None: ...


class _Hold:
    """A FlowListener that holds the main process's output while its sink is full."""

    def __init__(self, owner: MainProcess, key: object) -> None:
        self._owner = owner
        self._key = key

    def pause_writing(self) -> None:
        self._owner.hold(self._key, True)

    def resume_writing(self) -> None:
        self._owner.hold(self._key, False)


class _Broadcast:
    """WriteEnd of one stream of the main process."""

    def __init__(self, owner: MainProcess, stream: int) -> None:
        self._owner = owner
        self._stream = stream
        self._ended = False

    def write(self, data: Buffer) -> None:
        self._owner.output(self._stream, data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._ended = True

    def close(self) -> None:
        self._ended = True

    def abort(self) -> None:
        self._ended = True  # EIO on a PTY master when the last slave holder exits

    def is_closing(self) -> bool:
        return self._ended

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _LogCopy:
    """The agent's own stdout or stderr, written without blocking the loop where the fd allows it."""

    def __init__(self, fd: int, on_flow: Callable[[bool], None]) -> None:
        self._fd = fd
        self._on_flow = on_flow
        self._pipe: InputPipe | None = None

    async def open(self) -> None:
        try:
            mode = os.fstat(self._fd).st_mode
        except OSError:
            self._fd = -1
            return
        if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and not _shared(self._fd):
            pipe = InputPipe(os.dup(self._fd), high_water=256 * 1024, on_flow=self._on_flow)
            try:
                await pipe.open()
            except (OSError, ValueError):
                return
            self._pipe = pipe

    def write(self, data: Buffer) -> None:
        if self._pipe is not None:
            self._pipe.write(data)
            return
        if self._fd < 0:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                continue
            except OSError:
                self._fd = -1
                return
            view = view[written:]

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()


def _factory(pump: OneWayPump) -> Callable[[], OneWayPump]:
    return lambda: pump


def _shared(fd: int) -> bool:
    """``fd`` is the same pipe as another standard fd (``2>&1``): O_NONBLOCK would reach the logger too."""
    try:
        mine = os.fstat(fd)
    except OSError:
        return False
    for other in (0, 1, 2):
        if other == fd:
            continue
        try:
            theirs = os.fstat(other)
        except OSError:
            continue
        if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
            return True
    return False


class MainProcess:
    """The ``-keep-alive`` process. :meth:`start` spawns it; :meth:`run` waits for its end."""

    def __init__(self, spec: ChildSpec, reaper: Reaper, *, copy_output: bool = True,
                 ring: OutputRing | None = None) -> None:
        self.spec = spec
        self.reaper = reaper
        self.ring = ring if ring is not None else OutputRing()
        self.copy_output = copy_output
        self.child: Child | None = None
        self.pid = 0
        self.exit_code: int | None = None
        self.finished = asyncio.Event()
        self._attachers: list[Attacher] = []
        self._holds: set[object] = set()
        self._pumps: list[OneWayPump] = []
        self._stdin: InputPipe | None = None
        self._tty_fd: int | None = None
        self._copies: dict[int, _LogCopy] = {}

    @property
    def held(self) -> bool:
        """Output reading is paused: an attacher's socket (or the agent's stdout) is full."""
        return bool(self._holds)

    @property
    def exited(self) -> bool:
        return self.exit_code is not None

    def start(self) -> None:
        """Spawn the main process (raises SpawnError)."""
        child = spawn(self.spec)
        self.child = child
        self.pid = child.pid
        if self.spec.tty:
            assert child.master_fd is not None
            self._stdin = InputPipe(os.dup(child.master_fd))
            self._tty_fd = os.dup(child.master_fd)
        elif child.stdin_fd is not None:
            self._stdin = InputPipe(child.stdin_fd)
            child.stdin_fd = None

    async def run(self) -> int:
        """Pump output until EOF, reap the process; returns its Docker exit code, attachers told."""
        child = self.child
        assert child is not None, "start() first"
        loop = asyncio.get_running_loop()
        exited = exit_future(self.reaper, child.pid)
        try:
            if self.copy_output:
                for stream, own_fd in ((STDOUT, 1), (STDERR, 2)):
                    copy = _LogCopy(own_fd, self._holder(("log", stream)))
                    await copy.open()
                    self._copies[stream] = copy
            sources: list[tuple[int, int | None]] = (
                [(STDOUT, child.master_fd)] if self.spec.tty
                else [(STDOUT, child.stdout_fd), (STDERR, child.stderr_fd)])
            child.master_fd = child.stdout_fd = child.stderr_fd = None
            dones = []
            for stream, fd in sources:
                if fd is None:
                    continue
                pump = OneWayPump(_Broadcast(self, stream))
                self._pumps.append(pump)
                if self._holds:
                    pump.pause_writing()
                file = open(fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 - the transport owns it
                await loop.connect_read_pipe(_factory(pump), file)
                dones.append(pump.done)
            if self._stdin is not None:
                await self._stdin.open()
            returncode = await asyncio.shield(exited)
            # the container's life ends with its main process: output still buffered is read, but a
            # background child that keeps the pipes open does not keep the agent alive
            if dones:
                _, pending = await asyncio.wait(dones, timeout=DRAIN_GRACE)
                if pending:
                    self.stop_output()
                    await asyncio.wait(dones)
        except BaseException:
            self.kill()
            raise
        finally:
            for copy in self._copies.values():
                copy.close()
            if self._tty_fd is not None:
                os.close(self._tty_fd)
                self._tty_fd = None
            if self._stdin is not None:
                self._stdin.abort()
            child.close_fds()
        child.reaped(returncode)
        code = docker_exit_code(returncode)
        self.exit_code = code
        attachers, self._attachers = self._attachers, []
        for attacher in attachers:
            attacher.finish(code)
        self.finished.set()
        log.info("main process exited", extra={"pid": child.pid, "exit_code": code})
        return code

    def _holder(self, key: object) -> Callable[[bool], None]:
        def on_flow(paused: bool) -> None:
            self.hold(key, paused)

        return on_flow

    # -- output

    def output(self, stream: int, data: Buffer) -> None:
        self.ring.append(stream, data)
        copy = self._copies.get(stream)
        if copy is not None:
            copy.write(data)
        for attacher in list(self._attachers):
            attacher.deliver(stream, data)

    def hold(self, key: object, paused: bool) -> None:
        before = bool(self._holds)
        if paused:
            self._holds.add(key)
        else:
            self._holds.discard(key)
        after = bool(self._holds)
        if after != before:
            for pump in self._pumps:
                if after:
                    pump.pause_writing()
                else:
                    pump.resume_writing()

    # -- attachers

    def subscribe(self, attacher: Attacher, *, replay: bool = True) -> list[tuple[int, bytes]]:
        """Register ``attacher`` and return the history to replay first (atomic: no overlap, no gap).

        After the main process has exited, the history comes back and ``attacher.finish`` is
        called by the caller (:attr:`exit_code` is set).
        """
        history = self.ring.replay() if replay else []
        if self.exit_code is None:
            self._attachers.append(attacher)
            if attacher.add_flow_listener(_Hold(self, attacher)):
                self.hold(attacher, True)
        return history

    def unsubscribe(self, attacher: Attacher) -> None:
        if attacher in self._attachers:
            self._attachers.remove(attacher)
        self.hold(attacher, False)

    def flow_listener(self, attacher: Attacher) -> FlowListener:
        return _Hold(self, attacher)

    # -- control

    def write_stdin(self, data: bytes) -> bool:
        return self._stdin is not None and self._stdin.write(data)

    def close_stdin(self) -> None:
        if self._stdin is not None:
            self._stdin.close()

    def signal(self, signum: int) -> None:
        if self.pid and self.exit_code is None:
            signal_child(self.pid, signum)

    def resize(self, width: int, height: int) -> None:
        resize_terminal(self._tty_fd, width, height)

    def kill(self) -> None:
        self.signal(9)

    def stop_output(self) -> None:
        """Stop reading the main process's output (its pipes are held by someone else)."""
        for pump in self._pumps:
            if pump.source is not None and not pump.source.is_closing():
                pump.source.close()
