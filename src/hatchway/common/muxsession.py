"""The one WebSocket read loop of every multiplexed program, and its polite close.

A :class:`MuxSession` drives one established WebSocket for a program's
multiplexer (tunnel client and runner, forward CLI, LinkSocks links):

* **receive -> dispatch**: each binary or text message is handed to the
  program's :class:`MessageHandler` (the glue around its sans-I/O mux object:
  bytes in, events and bytes out). The handler sends through :attr:`sink`.
* **gate**: before each read the session passes the program's
  :class:`~hatchway.common.gate.InboundGate`, noticing a dead socket while it
  waits; a handler may also return a sink to wait for (a relay between two
  WebSockets: stop reading this one while that one is full).
* **keepalive and read deadline**: a ping every ``ping_interval`` seconds and
  at most ``read_timeout`` seconds between two received frames (0 = off).
* **one classification of the end**: :meth:`run` returns an :class:`Ended`
  (kind, close code, detail), the same words for every program.
* **handshake**: :meth:`receive_message` reads one message before :meth:`run`
  (authentication, a CONNECTED line), answering pings, under a deadline.
* **polite close**: :meth:`close` marks the sink closing (no data frame after
  our Close, RFC 6455 5.5.1), sends Close, waits 2 s for the peer's, aborts.

Pre-authentication message size (issue #6 item 7): aiohttp fixes
``max_msg_size`` when the WebSocket is prepared and its C reader keeps it in
a C-level field, so it cannot be lowered for the handshake phase and raised
afterwards, neither through public API nor through a private attribute. A
server must therefore bound unauthenticated memory by the number of
connections still in their handshake and by the handshake deadline
(``receive_message(timeout=...)``), or accept with the small limit and
re-dial; this module does not pretend otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import WSMsgType

from .gate import InboundGate, wait_drained
from .liveness import socket_established
from .muxhandler import Ended, EndKind, MessageHandler, ProtocolViolation, SessionEnded
from .tasks import TaskSet
from .wsconn import CLOSE_TIMEOUT, WebSocketSink, close_politely

if TYPE_CHECKING:
    from .wsconn import AnyWebSocket

__all__ = ["Ended", "EndKind", "MessageHandler", "MuxSession", "ProtocolViolation", "SessionEnded"]

log = logging.getLogger(__name__)

_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
_ABNORMAL = 1006  # aiohttp's close code when the connection ended without a Close frame


class MuxSession:
    """Runs one established WebSocket for a multiplexer; see the module docstring."""

    def __init__(
        self,
        ws: AnyWebSocket,
        handler: MessageHandler,
        *,
        sink: WebSocketSink | None = None,
        gate: InboundGate | None = None,
        ping_interval: float = 0.0,
        read_timeout: float = 0.0,
        name: str = "session",
        survive_handler_errors: bool = False,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.ws = ws
        self.handler = handler
        self.sink = sink if sink is not None else WebSocketSink(ws)
        self.gate = gate if gate is not None else InboundGate()
        self.ping_interval = ping_interval
        self.read_timeout = read_timeout
        self.name = name
        self.survive_handler_errors = survive_handler_errors
        self.close_timeout = close_timeout
        self.ended: Ended | None = None
        self._closing = False
        self._tasks = TaskSet(name, logger=log)
        self._keepalive: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """The WebSocket can still carry messages both ways."""
        return not self.ws.closed and not self.sink.transport_lost

    def _reading(self) -> bool:
        return not self._closing and self.alive

    def _reading_while_held(self) -> bool:
        # polled while the gate (or a full sink) holds the read loop: nothing reads the socket then, so a peer's
        # reset/FIN is only visible in the kernel's TCP state (common/liveness.py)
        return self._reading() and socket_established(self.ws)

    # -- handshake phase
    async def receive_message(self, timeout: float) -> bytes | str:
        """The next binary or text message within ``timeout`` s (pings answered, pongs skipped).

        Raises :class:`SessionEnded` when the WebSocket ends or the deadline passes first.
        """
        ws = self.ws
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await ws.receive()
                    kind = msg.type
                    if kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
                        data: bytes | str = msg.data
                        return data
                    if kind is WSMsgType.PING:
                        await ws.pong(msg.data)
                    elif kind is not WSMsgType.PONG:
                        raise SessionEnded(self._classify(kind))
        except TimeoutError:
            raise SessionEnded(Ended(EndKind.HANDSHAKE_TIMEOUT, None, f"nothing in {timeout:g} s")) from None
        except (ConnectionError, RuntimeError) as exc:
            if isinstance(exc, SessionEnded):
                raise
            raise SessionEnded(Ended(EndKind.CONNECTION_LOST, ws.close_code, str(exc))) from None

    # -- the read loop
    async def run(self) -> Ended:
        """Read and dispatch until the WebSocket ends; returns how it ended (also kept in :attr:`ended`).

        The WebSocket is not closed here: call :meth:`close` (the owner first
        tells its channels, so their local ends are reset, not closed).
        """
        if self.ping_interval > 0:
            self._keepalive = self._tasks.spawn(self._ping_loop(), name=f"{self.name} keepalive")
        try:
            ended = await self._read_loop()
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            ended = Ended(EndKind.CONNECTION_LOST, self.ws.close_code, str(exc) or type(exc).__name__)
        finally:
            await self._stop_keepalive()
        if self._closing and ended.kind is not EndKind.LOCAL_CLOSE:
            ended = Ended(EndKind.LOCAL_CLOSE, ended.code, ended.detail)
        self.ended = ended
        return ended

    async def _read_loop(self) -> Ended:
        ws = self.ws
        receive = ws.receive
        gate = self.gate
        alive = self._reading_while_held
        on_binary = self.handler.binary_received
        on_text = self.handler.text_received
        timeout = self.read_timeout if self.read_timeout > 0 else None
        binary = WSMsgType.BINARY
        text = WSMsgType.TEXT
        while True:
            if gate.blocked and not await gate.wait_until_open(alive):
                return self._gone_while_blocked()
            if self._closing:
                return Ended(EndKind.LOCAL_CLOSE, ws.close_code)
            try:
                msg = await receive(timeout)
            except TimeoutError:
                return Ended(EndKind.READ_TIMEOUT, None, f"nothing received for {self.read_timeout:g} s")
            kind = msg.type
            if kind is binary or kind is text:
                try:
                    wait_for = on_binary(msg.data) if kind is binary else on_text(msg.data)
                except ProtocolViolation as exc:
                    return Ended(EndKind.PROTOCOL_ERROR, None, str(exc))
                except Exception as exc:  # a bug must not take the process down
                    log.exception("%s: error handling a %s message", self.name, kind.name.lower())
                    if not self.survive_handler_errors:
                        return Ended(EndKind.INTERNAL_ERROR, None, f"{type(exc).__name__}: {exc}")
                    continue
                if wait_for is not None and wait_for.paused and not await wait_drained(wait_for, alive):
                    return self._gone_while_blocked()
            elif kind is WSMsgType.PING:  # only seen with autoping=False
                await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                continue
            else:
                return self._classify(kind)

    def _classify(self, kind: WSMsgType) -> Ended:
        ws = self.ws
        if kind is WSMsgType.ERROR:
            exc = ws.exception()
            return Ended(EndKind.CONNECTION_LOST, ws.close_code, str(exc) if exc is not None else "")
        if self._closing:
            return Ended(EndKind.LOCAL_CLOSE, ws.close_code)
        if kind in _CLOSED:
            code = ws.close_code
            if code is None or code == _ABNORMAL:  # no Close frame: the connection dropped
                return Ended(EndKind.CONNECTION_LOST, code, "closed without a Close frame")
            return Ended(EndKind.PEER_CLOSED, code)
        return Ended(EndKind.PROTOCOL_ERROR, ws.close_code, f"unexpected {kind.name} frame")

    def _gone_while_blocked(self) -> Ended:
        if self._closing:
            return Ended(EndKind.LOCAL_CLOSE, self.ws.close_code)
        return Ended(EndKind.LOST_WHILE_BLOCKED, self.ws.close_code, "the WebSocket died while a local consumer held it")

    # -- keepalive
    async def _ping_loop(self) -> None:
        interval = self.ping_interval
        try:
            while True:
                await asyncio.sleep(interval)
                if self.sink.closed:
                    return
                await self.ws.ping()
        except (ConnectionError, RuntimeError):
            return

    async def _stop_keepalive(self) -> None:
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- the end
    async def close(self) -> None:
        """Polite close: no data frame after our Close; wait ``close_timeout`` s for the peer's, then abort."""
        self.close_soon()
        assert self._closer is not None
        await asyncio.shield(self._closer)

    def close_soon(self) -> None:
        """Start the polite close from synchronous code (a callback); :meth:`close` awaits the same one."""
        if self._closer is not None:
            return
        self._closing = True
        self.sink.mark_closing()  # from this moment nothing more is sent
        self._closer = self._tasks.spawn(self._close(), name=f"{self.name} close")

    async def _close(self) -> None:
        await close_politely(self.ws, self.sink, self.close_timeout)
        self.sink.close()
        await self._stop_keepalive()
