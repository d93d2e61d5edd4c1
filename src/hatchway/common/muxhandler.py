"""The contract between a multiplexed session driver and the program it serves (no I/O, no aiohttp).

Two drivers read a multiplexed stream and hand each message to the program:
:class:`~hatchway.common.muxsession.MuxSession` for a WebSocket and
:class:`~hatchway.common.framedsession.FramedSession` for length-prefixed
frames over a pipe or unix socket. Both speak to a :class:`MessageHandler`
and report their end as an :class:`Ended` with one :class:`EndKind`.
"""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from .gate import Drainable


class EndKind(enum.StrEnum):
    """How a session ended."""

    PEER_CLOSED = "closed by peer"  # the peer's Close frame, or its clean end
    LOCAL_CLOSE = "closed locally"  # close() was called
    READ_TIMEOUT = "read timeout"  # nothing received for read_timeout seconds
    CONNECTION_LOST = "connection lost"  # the transport failed (reset, aiohttp ERROR)
    LOST_WHILE_BLOCKED = "lost while blocked"  # the socket died while the gate held the loop
    PROTOCOL_ERROR = "protocol error"  # the handler raised ProtocolViolation: bad input from the peer
    INTERNAL_ERROR = "internal error"  # the handler raised something else (a bug)
    HANDSHAKE_TIMEOUT = "handshake timeout"  # receive_message() passed its deadline


class Ended(msgspec.Struct, frozen=True):
    kind: EndKind
    code: int | None = None  # the WebSocket close code, when there was one
    detail: str = ""

    def __str__(self) -> str:
        text = self.kind.value
        if self.code is not None:
            text += f" (code {self.code})"
        return f"{text}: {self.detail}" if self.detail else text


class ProtocolViolation(Exception):
    """Raised by a handler for bad input: the session ends with PROTOCOL_ERROR (the process goes on)."""


class SessionEnded(ConnectionError):
    """:meth:`MuxSession.receive_message` could not return a message; ``ended`` says why."""

    def __init__(self, ended: Ended) -> None:
        super().__init__(str(ended))
        self.ended = ended


class MessageHandler(Protocol):
    """The program's side of the session.

    Each method may return a sink (anything with ``paused`` and
    ``drained()``) to wait for before the next read, or None.
    """

    def binary_received(self, data: bytes) -> Drainable | None: ...
    def text_received(self, text: str) -> Drainable | None: ...
