"""One exec session: a started child, its output pumps, its stdin, its exit.

The order on the wire is upstream's guarantee: every output reader reaches
EOF (all holders of the write ends closed them), the child is reaped by the
one reaper, and only then :meth:`ExecSession.run` returns the exit code for
the ``exit`` message. Output goes through :func:`~.output.output_writer`
(32 KiB messages, backpressure from the WebSocket), stdin through
:class:`~.stdin.InputPipe` (never blocks the read loop).

TTY sessions read the PTY master; ``close_stdin`` closes only the agent's
write handle on it, so output produced afterwards still arrives (upstream
closed the master and lost it).
"""

from __future__ import annotations

import asyncio
import os
import signal

from hatchway.common.pump import PIPE_SIZE_DEFAULT, OneWayPump, SinkWriter, widen_pipe
from hatchway.common.reaper import Reaper

from .output import TextSink, output_writer
from .signals import docker_exit_code
from .spawn import Child, exit_future, resize_terminal, signal_child
from .stdin import InputPipe

__all__ = ["ExecSession", "read_into"]


class _OutputPump(OneWayPump):
    """The pump of an output pipe: widened (:func:`~hatchway.common.pump.widen_pipe`) once a read comes back full.

    A child that fills the default 64 KiB pipe streams faster than we send: a wider pipe gives 256 KB
    reads (8 messages, one socket write). Widening only then keeps short execs free of the cost and
    bounds what a pump connected while the connection is full reads at once (uvloop starts a pipe
    reading after ``connection_made`` even when the pump paused there: one read overshoots) to 64 KiB.
    """

    def __init__(self, writer: SinkWriter, fd: int) -> None:
        super().__init__(writer)
        self._fd = fd
        self._narrow = True

    def data_received(self, data: bytes) -> None:
        if self._narrow and len(data) >= PIPE_SIZE_DEFAULT:
            self._narrow = False
            widen_pipe(self._fd)
        super().data_received(data)


async def read_into(fd: int, writer: SinkWriter, *, widen: bool = False) -> asyncio.Future[Exception | None]:
    """Pump the read end ``fd`` (taken over) into ``writer``; returns the pump's ``done`` future.

    ``widen``: ``fd`` is a pipe, widened once the child outpaces us (not for a PTY master).
    """
    loop = asyncio.get_running_loop()
    pump = _OutputPump(writer, fd) if widen else OneWayPump(writer)  # follows the sink's flow control by itself
    if writer.sink.paused:
        pump.pause_writing()
    file = open(fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 - the transport owns it
    try:
        await loop.connect_read_pipe(lambda: pump, file)
    except BaseException:
        file.close()
        raise
    return pump.done


class ExecSession:
    """A running exec; :meth:`run` returns its Docker exit code after its last output was sent."""

    def __init__(self, ident: str, child: Child, sink: TextSink, reaper: Reaper, *, tty: bool) -> None:
        self.id = ident
        self.child = child
        self.pid = child.pid
        self.sink = sink
        self.reaper = reaper
        self.tty = tty
        self.detached = False
        self.code: int | None = None
        self._tty_fd: int | None = None
        if tty:
            assert child.master_fd is not None
            input_fd = os.dup(child.master_fd)
            self._tty_fd = os.dup(child.master_fd)
        else:
            input_fd = child.stdin_fd if child.stdin_fd is not None else -1
            child.stdin_fd = None
        self.stdin = InputPipe(input_fd) if input_fd >= 0 else None

    async def run(self) -> int:
        child = self.child
        exited = exit_future(self.reaper, self.pid)
        try:
            pumps: list[asyncio.Future[Exception | None]] = []
            if self.stdin is not None:
                await self.stdin.open()
            if self.sink.paused:
                # the connection is full: connect the output pipes once it drains (backpressure reaches the
                # child through its pipe; a pump connected now would read one pipeful at once under uvloop)
                await self.sink.drained()
            sources = [("stdout", child.master_fd)] if self.tty else [("stdout", child.stdout_fd),
                                                                         ("stderr", child.stderr_fd)]
            child.master_fd = child.stdout_fd = child.stderr_fd = None
            for stream, fd in sources:
                if fd is not None:
                    pumps.append(await read_into(fd, output_writer(self.sink, stream, self.id), widen=not self.tty))
            for done in pumps:
                await asyncio.shield(done)
            returncode = await asyncio.shield(exited)
        except BaseException:
            self.kill()
            raise
        finally:
            if self.stdin is not None:
                self.stdin.abort()
            if self._tty_fd is not None:
                os.close(self._tty_fd)
                self._tty_fd = None
            child.close_fds()
        child.reaped(returncode)
        self.code = docker_exit_code(returncode)
        return self.code

    # -- control

    def write_stdin(self, data: bytes) -> bool:
        return self.stdin is not None and self.stdin.write(data)

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close()

    def signal(self, signum: int) -> None:
        if self.code is None:
            signal_child(self.pid, signum)

    def resize(self, width: int, height: int) -> None:
        resize_terminal(self._tty_fd, width, height)

    def kill(self) -> None:
        """SIGKILL the child and its process group (grandchildren would hold the output pipes open)."""
        if self.code is not None:
            return
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
