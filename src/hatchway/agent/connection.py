"""One WebSocket connection of the agent: the driver around the sans-I/O :class:`~.router.Router`.

The read loop is common/'s :class:`~hatchway.common.muxsession.MuxSession`;
each message goes through the router and the driver carries out the
actions: spawn (synchronously, so a spawn failure's ``error`` and ``exit``
go out before anything else for that id), stdin to the session's own
non-blocking pipe, signals, resizes. Replies and output share the one
:class:`~hatchway.common.wsconn.WebSocketSink` of the connection, so frames
never interleave and a session's output always precedes its ``exit``.

Sessions belong to this connection only. When it ends, execs are killed
(process group, SIGKILL) unless they were detached, attach sessions are
unsubscribed, and the connection waits up to 3 s for the killed execs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hatchway.common.gate import Drainable
from hatchway.common.logsafe import escape
from hatchway.common.muxsession import Ended, MuxSession
from hatchway.common.sink import SinkClosed
from hatchway.common.wsconn import WebSocketSink

from . import protocol as p
from . import router as r
from .attach import AttachSession
from .exec import ExecSession
from .runtime import AgentRuntime
from .spawn import ChildSpec, SpawnError, child_environment, spawn

if TYPE_CHECKING:
    from hatchway.common.wsconn import AnyWebSocket

__all__ = ["Connection"]

log = logging.getLogger("hatchway.agent")

KILL_WAIT = 3.0  # upstream: wait up to 3 s for killed execs when a connection closes

Session = ExecSession | AttachSession


class Connection:
    """Implements MuxSession's MessageHandler for one agent connection."""

    def __init__(self, ws: AnyWebSocket, runtime: AgentRuntime, *, name: str = "agent connection",
                 ping_interval: float = 0.0, read_timeout: float = 0.0) -> None:
        self.runtime = runtime
        self.sink = WebSocketSink(ws)
        self.session = MuxSession(ws, self, sink=self.sink, name=name, survive_handler_errors=True,
                                  ping_interval=ping_interval, read_timeout=read_timeout)
        self.router = r.Router(can_attach=runtime.main is not None, has_health=runtime.health is not None)
        self.health_subscribed = False
        self.sessions: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.closed = False

    # -- the read loop

    async def serve(self) -> Ended:
        """Serve until the WebSocket ends; sessions are cleaned up before returning."""
        self.runtime.connections.add(self)
        try:
            ended = await self.session.run()
        finally:
            self.closed = True
            self.runtime.connections.discard(self)
            await self._release()
            await self.session.close()
        log.debug("connection ended: %s", ended)
        return ended

    async def close(self) -> None:
        """Polite close (Close frame after everything already queued)."""
        await self.session.close()

    async def attachers_done(self, timeout: float) -> None:
        """Wait until every attach session of this connection has sent its ``exit``."""
        tasks = [self._tasks[i] for i, s in self.sessions.items() if isinstance(s, AttachSession) and i in self._tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def text_received(self, text: str) -> Drainable | None:
        return self._perform(self.router.receive(text))

    def binary_received(self, data: bytes) -> Drainable | None:
        return self._perform(self.router.receive(data))

    # -- actions

    def _perform(self, actions: list[r.Action]) -> Drainable | None:
        wait_for: Drainable | None = None
        for action in actions:
            if isinstance(action, r.WriteStdin):
                session = self.sessions.get(action.id)
                if session is None or not session.write_stdin(action.data):
                    log.debug("stdin for session %s not written (closed)", escape(action.id))
                elif isinstance(session, ExecSession) and session.stdin is not None and session.stdin.paused:
                    wait_for = session.stdin
            elif isinstance(action, r.Reply):
                self._send(action.message)
            elif isinstance(action, r.StartExec):
                self._start_exec(action.request)
            elif isinstance(action, r.StartAttach):
                self._start_attach(action.request)
            elif isinstance(action, r.CloseInput):
                found = self.sessions.get(action.id)
                if found is not None:
                    found.close_stdin()
            elif isinstance(action, r.SendSignal):
                found = self.sessions.get(action.id)
                if found is not None:
                    found.signal(action.signum)
            elif isinstance(action, r.ResizeTerminal):
                found = self.sessions.get(action.id)
                if found is not None:
                    found.resize(action.width, action.height)
            elif isinstance(action, r.DetachSession):
                found = self.sessions.get(action.id)
                if isinstance(found, ExecSession):
                    found.detached = True
            elif isinstance(action, r.SubscribeHealth):
                health = self.runtime.health
                if health is not None:
                    self.health_subscribed = True
                    self._send(p.HealthPush(health=health.state.report()))
            elif isinstance(action, r.Note):
                log.log(logging.getLevelName(action.level.upper()), "%s", escape(action.text, limit=512))
        return wait_for

    def push_health(self, report: p.HealthState) -> None:
        """The health status changed: tell this connection if it subscribed."""
        if self.health_subscribed:
            self._send(p.HealthPush(health=report))

    def _send(self, message: p.AgentMessage) -> None:
        if isinstance(message, p.Error):
            log.warning("error reply: %s", escape(message.message, limit=512), extra={"session": message.id})
        if self.sink.closed:
            return
        try:
            self.sink.send_text(p.encode(message))
        except SinkClosed:
            pass

    def _start_exec(self, request: p.Exec) -> None:
        spec = ChildSpec(
            argv=request.cmd,
            env=child_environment(self.runtime.environ, request.env, tty=request.tty),
            workdir=request.workdir,
            tty=request.tty,
            stdin=request.stdin is not False,
            width=request.width,
            height=request.height,
            user=request.user,
        )
        try:
            child = spawn(spec)
        except SpawnError as exc:
            self._perform(self.router.spawn_failed(request.id, exc.text, exc.code))
            return
        session = ExecSession(request.id, child, self.sink, self.runtime.reaper, tty=request.tty)
        log.debug("exec started", extra={"session": request.id, "pid": child.pid})
        self._adopt(request.id, session)

    def _start_attach(self, request: p.Attach) -> None:
        main = self.runtime.main
        assert main is not None  # the router checked
        session = AttachSession(request.id, main, self.sink, request)
        session.start()
        self._adopt(request.id, session)

    def _adopt(self, ident: str, session: Session) -> None:
        self.sessions[ident] = session
        self._tasks[ident] = self.runtime.tasks.spawn(self._run(ident, session), name=f"session {ident}")

    async def _run(self, ident: str, session: Session) -> None:
        try:
            code = await session.run()
        except asyncio.CancelledError:
            self.router.forget(ident)
            raise
        finally:
            if self.sessions.get(ident) is session:
                del self.sessions[ident]
                self._tasks.pop(ident, None)
        if self.closed:
            self.router.forget(ident)
            return
        log.debug("session exited", extra={"session": ident, "exit_code": code})
        self._perform(self.router.finished(ident, code))

    async def _release(self) -> None:
        waits: list[asyncio.Task[None]] = []
        for ident, session in list(self.sessions.items()):
            if isinstance(session, AttachSession):
                session.close()
            elif not session.detached:
                session.kill()
                task = self._tasks.get(ident)
                if task is not None:
                    waits.append(task)
        if waits:
            await asyncio.wait(waits, timeout=KILL_WAIT)
