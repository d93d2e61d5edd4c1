"""The backend side: talk to an agent, bridge its sessions to Docker streams, collect output.

* :meth:`AgentClient.connect` dials a server-mode agent (``ws://ADDR/ws``,
  bearer token); :meth:`AgentClient.accept` wraps a WebSocket an aiohttp
  route accepted from a reverse-mode agent; :class:`ReverseRegistry` is that
  route (``/internal/v1/agent/connect?id=...&token=...``) with waiters.
* One connection carries many sessions at once (one read loop, routing by
  id). Nothing is ever dropped: each session's queue is bounded and a full
  queue stops the read loop (backpressure) until the session's reader
  catches up (upstream dropped, even ``exit``).
* :func:`bridge_exec`/:func:`bridge_attach` join a session to a hijacked
  Docker connection: 8-byte multiplexed frames without a TTY, raw bytes with
  one; the ``error`` text reaches the Docker client on stderr; the real exit
  code comes back. Resize and signal go through :class:`Session`.
* :meth:`AgentClient.collect` buffers a whole exec (``docker top``, ``cp``...).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import msgspec

from hatchway.common.muxsession import MuxSession
from hatchway.common.sink import SinkClosed
from hatchway.common.tasks import TaskSet
from hatchway.common.wsclient import client_session, dial
from hatchway.common.wsconn import WebSocketSink

from . import protocol as p
from .dockerstream import STDERR, STDOUT, frame_header

if TYPE_CHECKING:
    from aiohttp import web

    from hatchway.common.wsconn import AnyWebSocket

__all__ = ["AgentClient", "AgentError", "ByteWriter", "ExecResult", "Output", "ReverseRegistry", "Session",
           "bridge_attach", "bridge_exec"]

log = logging.getLogger("hatchway.agent.client")

QUEUE_HIGH = 256  # messages queued for one session before the read loop waits
READ_CHUNK = 32 * 1024
_ids = itertools.count(1)


class AgentError(Exception):
    """The agent answered with ``error``, or the connection ended before ``exit``."""


class Output(msgspec.Struct, frozen=True):
    stream: int  # 1 stdout, 2 stderr (Docker's stream numbers)
    data: bytes


class ExecResult(msgspec.Struct):
    stdout: bytes
    stderr: bytes
    code: int
    error: str = ""  # the agent's error text (spawn failure), if any


class _Closed(msgspec.Struct, frozen=True):
    reason: str


_Event = p.Stdout | p.Stderr | p.Exit | p.Error | _Closed


class Session:
    """One exec or attach session on an :class:`AgentClient`."""

    def __init__(self, client: AgentClient, ident: str, tty: bool) -> None:
        self.client = client
        self.id = ident
        self.tty = tty
        self.code: int | None = None
        self.error = ""
        self._queue: deque[_Event] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()

    # -- Drainable (the read loop waits while this session's reader lags)
    @property
    def paused(self) -> bool:
        return len(self._queue) > QUEUE_HIGH

    async def drained(self) -> None:
        while self.paused:
            self._drained.clear()
            await self._drained.wait()

    def _push(self, event: _Event) -> None:
        self._queue.append(event)
        self._ready.set()

    # -- reading
    async def events(self) -> AsyncIterator[Output]:
        """Output until the session ends; then :attr:`code` (or :attr:`error`) is set."""
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
            event = self._queue.popleft()
            if len(self._queue) <= QUEUE_HIGH // 2:
                self._drained.set()
            if isinstance(event, p.Stdout | p.Stderr):
                yield Output(STDOUT if isinstance(event, p.Stdout) else STDERR, event.data)
            elif isinstance(event, p.Error):
                self.error = event.message
                if self.client.upstream_errors:  # an upstream agent sends no exit after an error
                    self.code = -1
                    self._end()
                    return
            elif isinstance(event, p.Exit):
                self.code = event.code if event.code is not None else 0
                self._end()
                return
            else:
                self.code = -1
                self.error = self.error or event.reason
                self._end()
                return

    async def wait(self) -> int:
        """Discard output until the end; the exit code (-1 when the connection ended first)."""
        async for _ in self.events():
            pass
        assert self.code is not None
        return self.code

    def _end(self) -> None:
        self.client._sessions.pop(self.id, None)

    # -- control
    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), READ_CHUNK):
            await self.client.send(p.Stdin(id=self.id, data=bytes(view[start : start + READ_CHUNK])))

    async def close_stdin(self) -> None:
        await self.client.send(p.CloseStdin(id=self.id))

    async def signal(self, name: str) -> None:
        await self.client.send(p.Signal(id=self.id, signal=name))

    async def resize(self, width: int, height: int) -> None:
        await self.client.send(p.Resize(id=self.id, width=width, height=height))

    async def detach(self) -> None:
        await self.client.send(p.Detach(id=self.id))


class AgentClient:
    """One WebSocket to an agent; see the module docstring."""

    def __init__(self, ws: AnyWebSocket, *, on_system: Callable[[p.AnyMessage], None] | None = None,
                 upstream_errors: bool = False, http: aiohttp.ClientSession | None = None) -> None:
        self.ws = ws
        self.sink = WebSocketSink(ws)
        self.on_system = on_system
        self.upstream_errors = upstream_errors  # True: an `error` ends the session (Go agent: no exit follows)
        self._http = http
        self._sessions: dict[str, Session] = {}
        self._mux = MuxSession(ws, self, sink=self.sink, name="agent client", survive_handler_errors=True)
        self._tasks = TaskSet("agent client")
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks.spawn(self._read(), name="agent client read loop")

    # -- construction
    @classmethod
    @asynccontextmanager
    async def connect(cls, addr: str, token: str = "", **kwargs: Any) -> AsyncIterator[AgentClient]:
        """Dial a server-mode agent at ``host:port`` (or a full ws:// URL)."""
        url = addr if "://" in addr else f"ws://{addr}/ws"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        http = client_session()
        try:
            ws = await dial(http, url, headers=headers, max_msg_size=p.MAX_MESSAGE)
        except BaseException:
            await http.close()
            raise
        client = cls(ws, http=http, **kwargs)
        try:
            yield client
        finally:
            await client.aclose()

    @classmethod
    def accept(cls, ws: AnyWebSocket, **kwargs: Any) -> AgentClient:
        """Wrap a WebSocket accepted from a reverse-mode agent (prepared by the caller)."""
        return cls(ws, **kwargs)

    async def _read(self) -> None:
        try:
            ended = await self._mux.run()
            reason = str(ended)
        except Exception as exc:  # pragma: no cover - MuxSession classifies its own failures
            reason = str(exc)
        for session in list(self._sessions.values()):
            session._push(_Closed(f"connection ended: {reason}"))
        if not self.done.done():
            self.done.set_result(None)

    async def aclose(self) -> None:
        await self._mux.close()
        if not self.done.done():
            await asyncio.wait([self.done], timeout=2.0)
        await self._tasks.aclose()
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- MessageHandler
    def text_received(self, text: str) -> Session | None:
        return self._route(p.decode(text))

    def binary_received(self, data: bytes) -> Session | None:
        return self._route(p.decode(data))

    def _route(self, message: p.AnyMessage | p.UnknownType | p.BadMessage) -> Session | None:
        if isinstance(message, p.UnknownType | p.BadMessage):
            log.debug("agent message skipped: %s", message)
            return None
        if not message.id:
            if self.on_system is not None:
                self.on_system(message)
            return None
        session = self._sessions.get(message.id)
        if session is None or not isinstance(message, p.Stdout | p.Stderr | p.Exit | p.Error):
            return None
        session._push(message)
        return session if session.paused else None

    # -- sending
    async def subscribe_health(self) -> None:
        """Extension: the agent sends its health state (a ``health`` message, to ``on_system``) now and at
        every status change; an agent without health checks answers with an ``error`` (also to ``on_system``)."""
        await self.send(p.HealthPush())

    async def send(self, message: p.ClientMessage | p.HealthPush) -> None:
        sink = self.sink
        if sink.paused:
            await sink.drained()
        try:
            sink.send_text(p.encode(message))
        except SinkClosed:
            raise AgentError("connection to the agent is closed") from None

    # -- sessions
    def _new(self, ident: str | None, tty: bool) -> Session:
        ident = ident or f"hw-{next(_ids)}"
        if ident in self._sessions:
            raise ValueError(f"session id already in use: {ident}")
        session = Session(self, ident, tty)
        self._sessions[ident] = session
        if self.done.done():
            session._push(_Closed("connection ended"))
        return session

    async def exec(self, cmd: list[str], *, id: str | None = None, env: list[str] | None = None, workdir: str = "",
                   tty: bool = False, stdin: bool | None = None, width: int = 0, height: int = 0,
                   user: str = "") -> Session:
        session = self._new(id, tty)
        await self.send(p.Exec(id=session.id, cmd=cmd, env=env or [], workdir=workdir, tty=tty, stdin=stdin,
                               width=width, height=height, user=user))
        return session

    async def attach(self, *, id: str | None = None, tty: bool = False, replay: bool | None = None,
                     stdin_once: bool = False) -> Session:
        session = self._new(id, tty)
        await self.send(p.Attach(id=session.id, replay=replay, stdin_once=stdin_once))
        return session

    async def collect(self, cmd: list[str], *, stdin: bytes | None = None, env: list[str] | None = None,
                      workdir: str = "", id: str | None = None) -> ExecResult:
        """Run ``cmd`` to its end, buffering stdout and stderr (CollectExec / CollectExecWithStdin)."""
        session = await self.exec(cmd, id=id, env=env, workdir=workdir, stdin=None if stdin is not None else False)
        if stdin is not None:
            await session.write(stdin)
            await session.close_stdin()
        out, err = bytearray(), bytearray()
        async for chunk in session.events():
            (out if chunk.stream == STDOUT else err).extend(chunk.data)
        assert session.code is not None
        if session.code == -1 and session.error:
            raise AgentError(f"agent error: {session.error}")
        return ExecResult(bytes(out), bytes(err), session.code, session.error)


# -- bridges to a hijacked Docker connection


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


async def _bridge(session: Session, reader: asyncio.StreamReader | None, writer: ByteWriter) -> int:
    async def pump_in() -> None:
        assert reader is not None
        try:
            while chunk := await reader.read(READ_CHUNK):
                await session.write(chunk)
        except (ConnectionError, AgentError):
            pass
        try:
            await session.close_stdin()
        except AgentError:
            pass

    tasks = TaskSet("docker bridge")
    if reader is not None:
        tasks.spawn(pump_in(), name=f"bridge stdin {session.id}")
    try:
        async for chunk in session.events():
            if session.tty:
                writer.write(chunk.data)
            else:
                writer.write(frame_header(chunk.stream, len(chunk.data)) + chunk.data)
            await writer.drain()
        if session.error:
            text = session.error.encode("utf-8", "replace") + b"\n"
            writer.write(text if session.tty else frame_header(STDERR, len(text)) + text)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        await tasks.aclose()
    assert session.code is not None
    return session.code


async def bridge_exec(client: AgentClient, reader: asyncio.StreamReader | None, writer: ByteWriter, cmd: list[str],
                      *, id: str | None = None, env: list[str] | None = None, workdir: str = "", tty: bool = False,
                      width: int = 0, height: int = 0, user: str = "",
                      on_session: Callable[[Session], Awaitable[None] | None] | None = None) -> int:
    """Run ``cmd`` with the Docker side's bytes as stdin (None: no stdin) and its output framed for Docker."""
    session = await client.exec(cmd, id=id, env=env, workdir=workdir, tty=tty,
                                stdin=None if reader is not None else False, width=width, height=height, user=user)
    if on_session is not None:
        result = on_session(session)
        if result is not None:
            await result
    return await _bridge(session, reader, writer)


async def bridge_attach(client: AgentClient, reader: asyncio.StreamReader | None, writer: ByteWriter, *,
                        id: str | None = None, tty: bool = False, replay: bool | None = None,
                        stdin_once: bool = False,
                        on_session: Callable[[Session], Awaitable[None] | None] | None = None) -> int:
    session = await client.attach(id=id, tty=tty, replay=replay, stdin_once=stdin_once)
    if on_session is not None:
        result = on_session(session)
        if result is not None:
            await result
    return await _bridge(session, reader, writer)


# -- the backend's reverse route


class ReverseRegistry:
    """``GET /internal/v1/agent/connect?id=ID&token=T`` as an aiohttp handler, plus waiters by id.

    ``tokens`` maps a container id to its token (checked against the ``token``
    query parameter, as the upstream backend does); ids absent from it need none.
    A newer registration for an id closes the older one.
    """

    def __init__(self, tokens: dict[str, str] | None = None, **client_options: Any) -> None:
        self.tokens = tokens if tokens is not None else {}
        self.client_options = client_options
        self.clients: dict[str, AgentClient] = {}
        self._waiters: dict[str, list[asyncio.Future[AgentClient]]] = {}
        self.registrations = 0

    async def handler(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web  # the server half: only a backend serving reverse agents loads it

        from hatchway.common.wsserver import accept

        ident = request.query.get("id") or request.query.get("session_id") or ""
        if not ident:
            return web.Response(status=400, text="missing id\n")
        expected = self.tokens.get(ident)
        if expected is not None and request.query.get("token", "") != expected:
            return web.Response(status=401, text="unauthorized\n")
        ws = await accept(request, max_msg_size=p.MAX_MESSAGE)
        client = AgentClient.accept(ws, **self.client_options)
        old = self.clients.get(ident)
        self.clients[ident] = client
        self.registrations += 1
        if old is not None:
            await old.aclose()
        for waiter in self._waiters.pop(ident, []):
            if not waiter.done():
                waiter.set_result(client)
        try:
            await asyncio.shield(client.done)
        finally:
            if self.clients.get(ident) is client:
                del self.clients[ident]
            await client.aclose()
        return ws

    async def wait_for(self, ident: str, timeout: float = 10.0) -> AgentClient:
        client = self.clients.get(ident)
        if client is not None and not client.done.done():
            return client
        waiter: asyncio.Future[AgentClient] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(ident, []).append(waiter)
        return await asyncio.wait_for(waiter, timeout)

    async def aclose(self) -> None:
        for client in list(self.clients.values()):
            await client.aclose()
