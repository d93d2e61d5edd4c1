"""OAuth callback sessions, sans-I/O: the session store and the callback channel on top of it.

No asyncio here: the daemon's driver calls :meth:`SessionStore.sweep` every
``CLEANUP_INTERVAL`` seconds (upstream's background goroutine) and
:meth:`SessionStore.stop` ends that (idempotent). The clock is injectable.

* Session ids: 16 random bytes from the OS, 32 lowercase hex characters.
* ``get`` of an expired session deletes it lazily (the on-delete hook fires).
* The on-delete hook runs once per removed session, after the removal.
* :meth:`Session.capture_once` is a plain test-and-set: atomic on one event
  loop because nothing awaits between the test and the set.
* :meth:`CallbackChannel.capture` stores the flag and the data together
  (upstream set ``received`` first, so a poll could see it without data).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "CALLBACK_SESSION_TYPE",
    "CLEANUP_INTERVAL",
    "DEFAULT_CALLBACK_TTL",
    "MAX_BODY",
    "SESSION_ID_LENGTH",
    "STRIPPED_HEADERS",
    "CallbackAlreadyReceived",
    "CallbackChannel",
    "CallbackData",
    "CapturedRequest",
    "Session",
    "SessionError",
    "SessionStore",
    "new_session_id",
]

CALLBACK_SESSION_TYPE = "callback"
DEFAULT_CALLBACK_TTL = 300.0  # seconds
SESSION_ID_LENGTH = 16  # random bytes; 32 hex characters
CLEANUP_INTERVAL = 30.0  # seconds between sweeps
MAX_BODY = 64 * 1024  # captured body cap
STRIPPED_HEADERS = frozenset({"cookie", "authorization", "x-forwarded-for", "x-real-ip", "host"})

Clock = Callable[[], float]


class SessionError(Exception):
    """A capture that cannot be done (unknown session, wrong type)."""


class CallbackAlreadyReceived(SessionError):
    """A second capture: the first data is kept. Text as upstream's ErrCallbackAlreadyReceived."""

    def __init__(self) -> None:
        super().__init__("callback already received")


def new_session_id() -> str:
    return secrets.token_hex(SESSION_ID_LENGTH)


def local_time(epoch: float) -> datetime:
    """``epoch`` in the daemon's local offset (RFC 3339 output keeps the offset)."""
    return datetime.fromtimestamp(epoch, UTC).astimezone()


def _go_zone(text: str) -> str:
    """Go writes a zero offset as ``Z`` (time.RFC3339)."""
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def rfc3339_seconds(epoch: float) -> str:
    """Go's ``time.RFC3339``: ``2026-12-02T17:05:00+01:00`` (``Z`` for UTC)."""
    return _go_zone(local_time(epoch).replace(microsecond=0).isoformat())


def rfc3339_full(epoch: float) -> str:
    """Go's ``time.RFC3339Nano``: the fraction without trailing zeros (none when zero)."""
    moment = local_time(epoch)
    base = moment.replace(microsecond=0).isoformat()
    stamp, zone = base[:19], base[19:]
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return _go_zone(stamp + (f".{fraction}" if fraction else "") + zone)


class Session:
    """One session: id, type, creation and expiry (epoch seconds), metadata, and its owner's identity."""

    __slots__ = ("created_at", "expires_at", "id", "metadata", "owner", "type")

    def __init__(self, id: str, type: str, created_at: float, expires_at: float,
                 metadata: Mapping[str, Any] | None = None, owner: str = "") -> None:
        self.id = id
        self.type = type
        self.created_at = created_at
        self.expires_at = expires_at
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.owner = owner  # the registering container's identity ("" = none)

    def is_expired(self, now: float) -> bool:
        return now > self.expires_at

    def get_metadata(self, key: str) -> tuple[Any, bool]:
        if key in self.metadata:
            return self.metadata[key], True
        return None, False

    def set_metadata(self, key: str, value: Any) -> None:
        self.metadata[key] = value

    def capture_once(self, key: str) -> bool:
        """Set boolean ``key``; True for exactly the first caller."""
        if self.metadata.get(key) is True:
            return False
        self.metadata[key] = True
        return True


class SessionStore:
    """Sessions by id, with lazy expiry on ``get`` and a sweep the driver runs periodically."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._on_delete: Callable[[Session], None] | None = None
        self.stopped = False

    def now(self) -> float:
        return self._clock()

    def create(self, type: str, ttl: float, metadata: Mapping[str, Any] | None = None, *, owner: str = "") -> Session:
        now = self._clock()
        session = Session(new_session_id(), type, now, now + ttl, metadata, owner)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.is_expired(self._clock()):
            self.delete(session_id)
            return None
        return session

    def delete(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None and self._on_delete is not None:
            self._on_delete(session)

    def count(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def set_on_delete(self, hook: Callable[[Session], None] | None) -> None:
        self._on_delete = hook

    def sweep(self) -> int:
        """Remove every expired session (hook fired for each); returns how many."""
        now = self._clock()
        expired = [s.id for s in self._sessions.values() if s.is_expired(now)]
        for session_id in expired:
            self.delete(session_id)
        return len(expired)

    def stop(self) -> None:
        """End the periodic sweep (the driver checks ``stopped``); idempotent."""
        self.stopped = True


class CallbackData(msgspec.Struct, omit_defaults=True):
    """A captured request, as ``GET /callback/{id}/data`` returns it."""

    method: str
    path: str
    query: str
    received_at: str
    headers: dict[str, str] = {}
    body: str = ""


class CapturedRequest(msgspec.Struct, frozen=True):
    """What a listener hands to :meth:`CallbackChannel.capture` (headers in arrival order)."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]] = []
    body: bytes = b""


def canonical_header(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey for ordinary names: x-real-ip -> X-Real-Ip."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class CallbackChannel:
    """OAuth callback capture on a :class:`SessionStore` (metadata keys port, path, received, data)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def register(self, port: int, path: str = "", ttl: float = DEFAULT_CALLBACK_TTL, *, owner: str = "") -> Session:
        if port < 1 or port > 65535:
            raise ValueError(f"invalid port: {port}")
        return self.store.create(
            CALLBACK_SESSION_TYPE, ttl, {"port": port, "path": path or "/", "received": False}, owner=owner
        )

    def capture(self, session_id: str, request: CapturedRequest) -> CallbackData:
        session = self.store.get(session_id)
        if session is None:
            raise SessionError(f"session not found: {session_id}")
        if session.type != CALLBACK_SESSION_TYPE:
            raise SessionError(f"session {session_id} is not a callback session")
        if session.metadata.get("received") is True:
            raise CallbackAlreadyReceived()
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = canonical_header(name)
            if key.lower() in STRIPPED_HEADERS or key in headers:
                continue
            headers[key] = value
        data = CallbackData(
            method=request.method,
            path=request.path,
            query=request.query,
            received_at=rfc3339_full(self.store.now()),
            headers=headers,
            body=request.body[:MAX_BODY].decode("utf-8", "replace"),
        )
        # flag and data together, no await in between (upstream defect 10)
        session.capture_once("received")
        session.metadata["data"] = data
        return data

    def get_data(self, session_id: str) -> CallbackData | None:
        session = self.store.get(session_id)
        if session is None or session.type != CALLBACK_SESSION_TYPE or session.metadata.get("received") is not True:
            return None
        data = session.metadata.get("data")
        return data if isinstance(data, CallbackData) else None

    def is_received(self, session_id: str) -> bool:
        session = self.store.get(session_id)
        return session is not None and session.metadata.get("received") is True

    def get_port(self, session_id: str) -> int | None:
        session = self.store.get(session_id)
        port = session.metadata.get("port") if session is not None else None
        return port if isinstance(port, int) else None

    def get_path(self, session_id: str) -> str | None:
        session = self.store.get(session_id)
        path = session.metadata.get("path") if session is not None else None
        return path if isinstance(path, str) else None

    def delete(self, session_id: str) -> None:
        self.store.delete(session_id)
