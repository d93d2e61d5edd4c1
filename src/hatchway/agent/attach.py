"""One attach session: replay of the main process's history, then its live output, then its exit.

Several attachers are independent: each gets its own replay and live copy
on its own connection. stdin is shared as Docker shares it: ``stdin`` writes
to the main process, ``close_stdin`` closes the main process's stdin only
when this attacher asked for stdin-once (upstream closed it for everyone as
soon as the first attacher left). A slow attacher holds the main process's
output (backpressure), it never loses any.
"""

from __future__ import annotations

import asyncio

from hatchway.common.sink import Buffer, FlowListener, SinkClosed

from . import protocol as p
from .mainproc import MainProcess
from .output import TextSink

__all__ = ["AttachSession"]


class AttachSession:
    def __init__(self, ident: str, main: MainProcess, sink: TextSink, request: p.Attach) -> None:
        self.id = ident
        self.main = main
        self.sink = sink
        self.replay = request.replay is not False
        self.stdin_once = request.stdin_once
        self._prefix = {1: p.output_prefix("stdout", ident), 2: p.output_prefix("stderr", ident)}
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._listener: FlowListener | None = None
        self.started = False

    def start(self) -> None:
        """Subscribe and send the replay (synchronously: nothing can come between them)."""
        self.started = True
        history = self.main.subscribe(self, replay=self.replay)
        for stream, data in history:
            self.deliver(stream, data)
        if self.main.exit_code is not None:
            self.finish(self.main.exit_code)

    async def run(self) -> int:
        """The main process's exit code, once all its output reached this attacher's sink."""
        try:
            return await self._ended
        finally:
            self.close()

    # -- Attacher

    def deliver(self, stream: int, data: Buffer) -> None:
        if self.sink.closed:
            return
        prefix = self._prefix[stream]
        view = memoryview(data)
        try:
            if len(view) <= p.CHUNK:
                self.sink.send_text(*p.encode_output(prefix, view))
            else:  # a 256 KB read of the main process: its 32 KiB messages in one socket write
                self.sink.send_many([p.encode_output(prefix, view[start : start + p.CHUNK])
                                     for start in range(0, len(view), p.CHUNK)], text=True)
        except SinkClosed:
            pass

    def finish(self, code: int) -> None:
        if not self._ended.done():
            self._ended.set_result(code)

    def add_flow_listener(self, listener: FlowListener) -> bool:
        self._listener = listener
        self.sink.add_listener(listener)
        return self.sink.paused

    def remove_flow_listener(self, listener: FlowListener) -> None:
        self.sink.remove_listener(listener)

    # -- control

    def write_stdin(self, data: bytes) -> bool:
        return self.main.write_stdin(data)

    def close_stdin(self) -> None:
        if self.stdin_once:
            self.main.close_stdin()

    def signal(self, signum: int) -> None:
        self.main.signal(signum)

    def resize(self, width: int, height: int) -> None:
        self.main.resize(width, height)

    def close(self) -> None:
        """Unsubscribe (connection gone or session over); the main process keeps running."""
        self.main.unsubscribe(self)
        if self._listener is not None:
            self.remove_flow_listener(self._listener)
            self._listener = None
        if not self._ended.done():
            self._ended.cancel()
