"""The read side of a multiplexed session over length-prefixed frames (a unix socket or a pipe pair).

:class:`FramedSession` is the pipe/socket twin of
:class:`~hatchway.common.muxsession.MuxSession` (the host proxy's socket
bridge runs muxrpc over the stdin/stdout of ``docker exec``). It is the
``asyncio.Protocol`` of the read transport:

* every complete frame goes to the program's
  :class:`~hatchway.common.muxhandler.MessageHandler` (``binary_received``);
* the :class:`~hatchway.common.gate.InboundGate` pauses and resumes reading
  the transport (through ``add_watcher``), so a slow local consumer holds the
  stream without any buffer growing here. Frames already read in the same
  chunk (at most one read, <= 256 KiB) are still dispatched;
* a handler may return a sink to wait for: reading stops until it drains;
* sending goes through :attr:`sink`, a
  :class:`~hatchway.common.sink.LengthPrefixedSink` on the same socket, or on
  the write pipe given to the constructor;
* :attr:`ended` resolves with an :class:`~hatchway.common.muxhandler.Ended`:
  the peer's EOF, a lost connection, an oversize frame, a handler error.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, cast

from .gate import Drainable, InboundGate, wait_drained
from .muxhandler import Ended, EndKind, MessageHandler, ProtocolViolation
from .sink import PREFIX_U32, FrameDecoder, LengthPrefixedSink
from .tasks import TaskSet

log = logging.getLogger(__name__)

MAX_FRAME_DEFAULT = 64 * 1024 * 1024


class FramedSession(asyncio.Protocol):
    """Protocol of the read transport; see the module docstring."""

    def __init__(
        self,
        handler: MessageHandler,
        *,
        gate: InboundGate | None = None,
        sink: LengthPrefixedSink | None = None,
        prefix: struct.Struct = PREFIX_U32,
        max_message: int = MAX_FRAME_DEFAULT,
        name: str = "framed",
        survive_handler_errors: bool = False,
    ) -> None:
        self.handler = handler
        self.gate = gate if gate is not None else InboundGate()
        self.name = name
        self.survive_handler_errors = survive_handler_errors
        self._prefix = prefix
        self._decoder = FrameDecoder(prefix=prefix, max_message=max_message)
        self._own_sink = sink is None
        self._sink = sink
        self.transport: asyncio.ReadTransport | None = None
        self.ended: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()
        self._hold_reasons = 0  # gate closed (1) + sinks being waited for
        self._gate_holds = False
        self._tasks = TaskSet(name)
        self.gate.add_watcher(self._gate_changed)

    @property
    def sink(self) -> LengthPrefixedSink:
        assert self._sink is not None, "not connected"
        return self._sink

    # -- the transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.ReadTransport, transport)  # uvloop's transports only look like asyncio's
        if self._sink is None:
            self._sink = LengthPrefixedSink(cast(asyncio.WriteTransport, transport), prefix=self._prefix)
        if self.gate.blocked:
            self._gate_changed(True)

    def data_received(self, data: bytes) -> None:
        if self.ended.done():
            return
        try:
            messages = self._decoder.feed(data)
        except ValueError as exc:
            self._fail(Ended(EndKind.PROTOCOL_ERROR, None, str(exc)))
            return
        on_binary = self.handler.binary_received
        for message in messages:
            try:
                wait_for = on_binary(message)
            except ProtocolViolation as exc:
                self._fail(Ended(EndKind.PROTOCOL_ERROR, None, str(exc)))
                return
            except Exception as exc:  # a bug must not take the process down
                log.exception("%s: error handling a frame", self.name)
                if not self.survive_handler_errors:
                    self._fail(Ended(EndKind.INTERNAL_ERROR, None, f"{type(exc).__name__}: {exc}"))
                    return
                continue
            if wait_for is not None and wait_for.paused:
                self._hold()
                self._tasks.spawn(self._wait_sink(wait_for))

    def eof_received(self) -> bool:
        self._finish(Ended(EndKind.PEER_CLOSED, None, "end of stream"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.remove_watcher(self._gate_changed)
        if self._own_sink and self._sink is not None:
            self._sink.connection_lost(exc)
        if exc is not None:
            self._finish(Ended(EndKind.CONNECTION_LOST, None, str(exc) or type(exc).__name__))
        else:
            self._finish(Ended(EndKind.PEER_CLOSED))
        self._tasks.cancel(close=True)

    def pause_writing(self) -> None:  # the socket's own flow control, when the sink shares it
        if self._own_sink and self._sink is not None:
            self._sink.pause_writing()

    def resume_writing(self) -> None:
        if self._own_sink and self._sink is not None:
            self._sink.resume_writing()

    # -- holding the stream
    def _gate_changed(self, blocked: bool) -> None:
        if blocked and not self._gate_holds:
            self._gate_holds = True
            self._hold()
        elif not blocked and self._gate_holds:
            self._gate_holds = False
            self._release()

    def _hold(self) -> None:
        self._hold_reasons += 1
        if self._hold_reasons == 1 and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _release(self) -> None:
        self._hold_reasons -= 1
        if self._hold_reasons == 0 and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def _wait_sink(self, sink: Drainable) -> None:
        transport = self.transport
        await wait_drained(sink, lambda: transport is not None and not transport.is_closing())
        self._release()

    @property
    def reading(self) -> bool:
        return self._hold_reasons == 0

    # -- the end
    def _fail(self, ended: Ended) -> None:
        log.warning("%s: %s, closing", self.name, ended)
        self._finish(ended)
        transport: Any = self.transport  # a socket or a read pipe: both have abort()
        if transport is not None:
            transport.abort()

    def _finish(self, ended: Ended) -> None:
        if not self.ended.done():
            self.ended.set_result(ended)

    def close(self) -> None:
        """Local close: nothing more is sent; the transport closes once its buffer is written."""
        self._finish(Ended(EndKind.LOCAL_CLOSE))
        if self._sink is not None:
            self._sink.mark_closing()
        if self.transport is not None:
            self.transport.close()

    async def aclose(self) -> None:
        self.close()
        await self._tasks.aclose()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default) if self.transport is not None else default
