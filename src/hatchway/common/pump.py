"""A one-way pump: one read transport (a pipe, a PTY master, a socket) into one target, with backpressure.

The two-way :class:`~hatchway.common.relay.Relay` joins two bidirectional
transports. A child process's stdout, a PTY master read end or a socket
bridge come as separate one-way transports, so they get this instead:

* :class:`OneWayPump` is the ``asyncio.Protocol`` of the read side
  (``loop.connect_read_pipe(lambda: pump, file)``). Every chunk goes straight
  to the target's ``write``; nothing is queued here.
* The target is any :class:`WriteEnd`: a write transport (for a pipe made
  with ``loop.connect_write_pipe(pump.target_protocol, file)``, whose
  protocol forwards the transport's flow control to the pump), or a
  :class:`SinkWriter` that turns each chunk into one message on a
  :class:`~hatchway.common.sink.MessageSink` (the agent's stdout frames).
* Backpressure: when the target's buffer passes its high-water mark the
  source stops being read; when it drains reading resumes.
* The end: EOF on the source becomes ``write_eof`` on the target (or a close
  when it cannot); a failed source resets the target; a lost target closes
  the source. :attr:`OneWayPump.done` resolves with the source's error or None.
* PTYs (``pty=True``): reading a PTY master ends with EIO once no process
  holds the slave side, on asyncio and uvloop alike; that is the PTY's end of
  stream, not a failure. (Writing to a PTY master: asyncio's
  ``connect_write_pipe`` works; uvloop's write-pipe transport also reads the
  fd to notice a close and fails on a PTY's echo, so write with
  ``os.write``/``loop.add_writer`` there.)
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from .relay import reset_transport
from .sink import Buffer, MessageSink, SinkClosed

PIPE_SIZE_DEFAULT = 64 * 1024  # Linux's pipe capacity until F_SETPIPE_SZ
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux)


def widen_pipe(fd: int, size: int | None = None) -> bool:
    """Raise the capacity of the pipe on ``fd`` to ``size`` bytes (default: 1 MiB as root, 256 KiB
    otherwise, within /proc/sys/fs/pipe-max-size), so a reader gets up to that much per read instead of
    64 KiB. Best effort: False when the kernel refuses or ``fd`` is not a pipe; pages are allocated only
    as data comes."""
    if size is None:
        size = 1024 * 1024 if os.geteuid() == 0 else 256 * 1024
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except (OSError, ValueError):  # ValueError: not a descriptor at all
        return False
    return True


class WriteEnd(Protocol):
    """What the pump writes into (a subset of ``asyncio.WriteTransport``)."""

    def write(self, data: Buffer) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class SinkWriter:
    """A :class:`WriteEnd` over a message sink: each chunk read becomes one message (or several).

    * ``max_message``: a longer read is split into slices of at most that many
      bytes (memoryview slices, no copy);
    * ``encode(chunk) -> parts``: the program's framing of one slice (a JSON
      envelope, a channel header); default: the slice itself;
    * ``send``: how the parts go out; default ``sink.send`` (pass
      ``sink.send_text`` for text messages);
    * ``send_many(list of parts)``: with ``encode``, a read longer than
      ``max_message`` goes out in one call (``WebSocketSink.send_many``: one
      transport write for all its messages) instead of one ``send`` per slice;
    * ``discard_when_closed``: once the sink is closed, keep reading the source
      and count the bytes in :attr:`discarded` (a dead client must not block
      the child writing its output); default: stop reading the source.

    ``on_end(exc)`` is called once when the source ends: ``None`` for its EOF
    (send your program's end-of-stream message there), an exception for a
    failure. The sink is shared and is never closed here. A :class:`OneWayPump`
    whose target is a SinkWriter follows the sink's flow control by itself.
    """

    def __init__(
        self,
        sink: MessageSink,
        on_end: Callable[[Exception | None], None] | None = None,
        *,
        max_message: int | None = None,
        encode: Callable[[Buffer], Sequence[Buffer]] | None = None,
        send: Callable[..., None] | None = None,
        discard_when_closed: bool = False,
        send_many: Callable[[Sequence[Sequence[Buffer]]], None] | None = None,
    ) -> None:
        self.sink = sink
        self._send_many = send_many
        self._on_end = on_end
        self._ended = False
        self._max = max_message
        self._encode = encode
        self._send = send if send is not None else sink.send
        self._discard = discard_when_closed
        self.sent = 0
        self.discarded = 0

    def write(self, data: Buffer) -> None:
        if self._discard and self.sink.closed:
            self.discarded += len(data)
            return
        try:
            limit = self._max
            if limit is None or len(data) <= limit:
                self._send_one(data)
            else:
                view = memoryview(data)
                if self._send_many is not None and self._encode is not None:
                    encode = self._encode
                    self._send_many([encode(view[start : start + limit]) for start in range(0, len(view), limit)])
                else:
                    for start in range(0, len(view), limit):
                        self._send_one(view[start : start + limit])
        except SinkClosed:
            if not self._discard:
                raise
            self.discarded += len(data)
            return
        self.sent += len(data)

    def _send_one(self, chunk: Buffer) -> None:
        if self._encode is None:
            self._send(chunk)
        else:
            self._send(*self._encode(chunk))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._end(None)

    def close(self) -> None:
        self._end(None)

    def abort(self) -> None:
        self._end(ConnectionResetError("the source failed"))

    def is_closing(self) -> bool:
        return self._ended or (self.sink.closed and not self._discard)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def _end(self, exc: Exception | None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._on_end is not None:
            self._on_end(exc)


class _TargetProtocol(asyncio.BaseProtocol):
    """The protocol of the target transport: forwards its flow control and loss to the pump."""

    def __init__(self, pump: OneWayPump) -> None:
        self._pump = pump

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._pump._target_made(transport)

    def pause_writing(self) -> None:
        self._pump.pause_writing()

    def resume_writing(self) -> None:
        self._pump.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._pump._target_lost(exc)


class OneWayPump(asyncio.Protocol):
    """Protocol of the read side; see the module docstring."""

    def __init__(self, target: WriteEnd | None = None, *, pty: bool = False) -> None:
        self.pty = pty  # a PTY master reports the end of its slave side as EIO, not EOF
        self.target: WriteEnd | None = None
        self.source: asyncio.ReadTransport | None = None
        self.received = 0
        self.done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._writing_paused = False
        if target is not None:
            self.set_target(target)

    def set_target(self, target: WriteEnd) -> None:
        self.target = target
        if isinstance(target, SinkWriter):
            target.sink.add_listener(self)

    def target_protocol(self) -> asyncio.BaseProtocol:
        """Protocol factory for ``loop.connect_write_pipe``: the transport it makes becomes the target."""
        return _TargetProtocol(self)

    def _target_made(self, transport: asyncio.BaseTransport) -> None:
        self.set_target(cast(WriteEnd, transport))  # uvloop's transports only look like asyncio's

    def _target_lost(self, exc: Exception | None) -> None:
        if self.source is not None and not self.source.is_closing():
            self.source.close()

    # -- the source
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        source = cast(asyncio.ReadTransport, transport)  # uvloop's transports only look like asyncio's
        self.source = source
        if self._writing_paused:
            source.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self._writing_paused and self.source is not None:
            # uvloop starts reading right AFTER connection_made, undoing a pause made there (a pump connected
            # while its target was full): stop at the first read, so the overshoot is one read, not the source
            self.source.pause_reading()
        target = self.target
        if target is None or target.is_closing():
            self._stop_source()
            return
        try:
            target.write(data)
        except SinkClosed:
            self._stop_source()

    def eof_received(self) -> bool:
        target = self.target
        if target is not None and not target.is_closing():
            if target.can_write_eof():
                target.write_eof()
            else:
                target.close()
        return False  # the source is done: let it close

    def connection_lost(self, exc: Exception | None) -> None:
        target = self.target
        if self.pty and isinstance(exc, OSError) and exc.errno == errno.EIO:
            exc = None  # every process holding the PTY's slave side is gone: a clean end of stream
            self.eof_received()
        if exc is not None and target is not None:
            reset_transport(target)
        if isinstance(target, SinkWriter):
            target.sink.remove_listener(self)
        if not self.done.done():
            self.done.set_result(exc)

    def _stop_source(self) -> None:
        if self.source is not None and not self.source.is_closing():
            self.source.close()

    # -- flow control from the target
    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.source is not None and not self.source.is_closing():
            self.source.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.source is not None and not self.source.is_closing():
            self.source.resume_reading()

    @property
    def reading_paused(self) -> bool:
        return self._writing_paused
