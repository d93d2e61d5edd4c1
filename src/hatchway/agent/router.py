"""The per-connection session router, sans-I/O: messages in, actions out.

One :class:`Router` per WebSocket connection owns the session table of that
connection (ids are scoped per connection: another connection cannot reach
them), the phase of each id, the upstream error strings and every decision
about a message. It performs no I/O: the driver (:mod:`.connection`) carries
out the :data:`Action` list that each call returns and reports back what
happened (a spawn that failed, a session that finished).

Phases of an id: absent -> live (after ``exec``/``attach`` was accepted) ->
absent again once the driver reports the end (``spawn_failed``, ``finished``,
``rejected``), so a finished id can be reused and memory does not grow on a
long-lived connection.
"""

from __future__ import annotations

import enum

import msgspec

from . import protocol as p
from .signals import parse_signal

__all__ = [
    "Action",
    "CloseInput",
    "DetachSession",
    "Kind",
    "Note",
    "Reply",
    "ResizeTerminal",
    "Router",
    "SendSignal",
    "StartAttach",
    "StartExec",
    "SubscribeHealth",
    "WriteStdin",
]


class Kind(enum.Enum):
    EXEC = "exec"
    ATTACH = "attach"


class Reply(msgspec.Struct, frozen=True):
    message: p.AgentMessage


class StartExec(msgspec.Struct, frozen=True):
    request: p.Exec


class StartAttach(msgspec.Struct, frozen=True):
    request: p.Attach


class WriteStdin(msgspec.Struct, frozen=True):
    id: str
    data: bytes


class CloseInput(msgspec.Struct, frozen=True):
    id: str


class SendSignal(msgspec.Struct, frozen=True):
    id: str
    signum: int


class ResizeTerminal(msgspec.Struct, frozen=True):
    id: str
    width: int
    height: int


class DetachSession(msgspec.Struct, frozen=True):
    id: str


class SubscribeHealth(msgspec.Struct, frozen=True):
    """Extension: push this connection the health state now and at every status change."""


class Note(msgspec.Struct, frozen=True):
    """Something to log (``level`` is a logging level name); never carries stdin data."""

    level: str
    text: str


Action = (Reply | StartExec | StartAttach | WriteStdin | CloseInput | SendSignal | ResizeTerminal | DetachSession
          | SubscribeHealth | Note)


class Router:
    """Session table and message rules of one connection."""

    def __init__(self, *, can_attach: bool, has_health: bool = False) -> None:
        self.can_attach = can_attach
        self.has_health = has_health
        self._live: dict[str, Kind] = {}

    @property
    def live(self) -> dict[str, Kind]:
        return dict(self._live)

    def kind(self, ident: str) -> Kind | None:
        return self._live.get(ident)

    # -- messages from the peer

    def receive(self, raw: bytes | str) -> list[Action]:
        """Decode one WebSocket message and decide what it means."""
        return self.handle(p.decode(raw))

    def handle(self, message: p.AnyMessage | p.UnknownType | p.BadMessage) -> list[Action]:
        live = self._live
        if isinstance(message, p.Stdin):
            if message.id not in live:
                return [Note("debug", f"stdin for unknown session {message.id!r}")]
            return [WriteStdin(message.id, message.data)]
        if isinstance(message, p.Exec):
            if not message.id:
                return [Reply(p.Error(message="exec requires id"))]
            if not message.cmd:
                return [Reply(p.Error(id=message.id, message="exec requires cmd"))]
            if message.id in live:
                return [Reply(p.Error(id=message.id, message=f"session id already in use: {message.id}"))]
            live[message.id] = Kind.EXEC
            return [StartExec(message)]
        if isinstance(message, p.Attach):
            if not message.id:
                return [Reply(p.Error(message="attach requires id"))]
            if not self.can_attach:
                return [Reply(p.Error(id=message.id, message="no main process to attach to"))]
            if message.id in live:
                return [Reply(p.Error(id=message.id, message=f"session id already in use: {message.id}"))]
            live[message.id] = Kind.ATTACH
            return [StartAttach(message)]
        if isinstance(message, p.CloseStdin):
            return [CloseInput(message.id)] if message.id in live else []
        if isinstance(message, p.Signal):
            if message.id not in live:
                return [Note("debug", f"signal for unknown session {message.id!r}")]
            signum = parse_signal(message.signal)
            if signum is None:
                return [Reply(p.Error(id=message.id, message=f"unknown signal: {message.signal}"))]
            return [SendSignal(message.id, signum)]
        if isinstance(message, p.Resize):
            if message.id not in live:
                return []
            return [ResizeTerminal(message.id, message.width & 0xFFFF, message.height & 0xFFFF)]
        if isinstance(message, p.Detach):
            return [DetachSession(message.id)] if live.get(message.id) is Kind.EXEC else []
        if isinstance(message, p.HealthPush) and message.health is None:
            # extension: a client's bare {"type":"health"} subscribes it to the health pushes
            if not self.has_health:
                return [Reply(p.Error(id=message.id, message="no health check configured"))]
            return [SubscribeHealth()]
        if isinstance(message, p.BadMessage):
            return [Note("warning", f"invalid message skipped: {message.reason}")]
        if isinstance(message, p.UnknownType):
            return [Reply(p.Error(id=message.id, message=f"unknown message type: {message.type}"))]
        # a message type only the agent sends (stdout, exit, ...): upstream's router answers it as unknown
        tag = type(message).__struct_config__.tag
        return [Reply(p.Error(id=message.id, message=f"unknown message type: {tag}"))]

    # -- reports from the driver

    def spawn_failed(self, ident: str, text: str, code: int) -> list[Action]:
        """The exec could not start: ``error`` with the OS text, then ``exit`` 126/127 (Docker's codes)."""
        self._live.pop(ident, None)
        return [Reply(p.Error(id=ident, message=text)), Reply(p.Exit(id=ident, code=code))]

    def rejected(self, ident: str, text: str) -> list[Action]:
        self._live.pop(ident, None)
        return [Reply(p.Error(id=ident, message=text))]

    def finished(self, ident: str, code: int) -> list[Action]:
        """The session's output is all sent and its process is reaped: ``exit``, and the id is free."""
        self._live.pop(ident, None)
        return [Reply(p.Exit(id=ident, code=code))]

    def forget(self, ident: str) -> None:
        """The session ended without an ``exit`` to send (connection gone, detached)."""
        self._live.pop(ident, None)
