"""The HTTP API toolkit: JSON bodies and errors, key auth, and serving that survives bad clients.

JSON (msgspec):

* :func:`json_response` encodes a Struct (or builtins) with a trailing newline, as Go's
  ``json.Encoder`` does.
* :func:`decode_json` / :func:`read_json` decode a body into a Struct with Go
  ``encoding/json`` rules: object keys match field names case-insensitively (an exact
  match wins), ``null`` leaves a field at its default, unknown keys are ignored.
  A bad body raises :class:`ApiError` (400).
* :func:`json_errors` is a middleware that turns :class:`ApiError` into a JSON answer
  (``{"error": "..."}`` unless the program renders its own shape).

Auth (:class:`TokenAuth`, an aiohttp middleware): ``Authorization: Bearer <t>``,
``X-API-Key: <t>`` or ``?token=<t>`` (each can be switched off), compared with
:func:`hmac.compare_digest` against every configured token; exempt paths (``/health``)
pass. A refused request gets 401 (the program may render the body).

Serving (:class:`HttpServer`, :func:`serve_app`): one aiohttp app on several TCP
addresses and unix sockets. ``require="any"`` starts when at least one binds (the
failures are reported in ``failures``); ``require="all"`` fails if one fails. A
failed start releases everything it had bound. Against hostile clients (issue #6):

* every connection must deliver its first request head within ``header_timeout``
  (slowloris, item 8), else it is closed;
* at most ``max_unauthenticated`` connections may be open that have not
  authenticated yet (item 7); a new one beyond that closes the oldest connection
  still waiting for its head (503), so real clients are never locked out. A request
  accepted by :class:`TokenAuth`, or a program calling
  :meth:`ConnectionGuard.authenticated` after its own handshake, marks a connection;
* a malformed request is logged as one escaped WARNING line without traceback, at
  most one per interval (item 10), through aiohttp's public ``logger`` argument.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import os
import socket
import types
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin

import msgspec
from aiohttp import web

from .lifecycle import Service
from .listen import bound_socket
from .logsafe import OneLineLogger, RateLimited, escape

__all__ = [
    "ApiError",
    "ConnectionGuard",
    "HttpServer",
    "TcpAddress",
    "TokenAuth",
    "UnixAddress",
    "decode_json",
    "fold_keys",
    "json_errors",
    "json_response",
    "read_json",
    "serve_app",
]

log = logging.getLogger(__name__)
server_log = logging.getLogger(__name__ + ".server")  # aiohttp's server logs through a OneLineLogger on it

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

HEADER_TIMEOUT = 10.0
MAX_UNAUTHENTICATED = 256
KEEPALIVE_TIMEOUT = 75.0
SHUTDOWN_TIMEOUT = 2.0

# --------------------------------------------------------------- JSON


class ApiError(Exception):
    """An answer other than success: ``status`` with ``message`` (rendered by :func:`json_errors`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(body: object, status: int = 200, *, headers: dict[str, str] | None = None) -> web.Response:
    """``body`` (Struct or builtins) as ``application/json`` with a trailing newline."""
    return web.Response(
        body=msgspec.json.encode(body) + b"\n",
        status=status,
        content_type="application/json",
        charset=None,
        headers=headers,
    )


def _struct_of(kind: Any) -> type[msgspec.Struct] | None:
    """The Struct type inside ``kind`` (itself, or one member of an Optional/Union), else None."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    if get_origin(kind) in (Union, types.UnionType):
        structs = [s for s in (_struct_of(arg) for arg in get_args(kind)) if s is not None]
        return structs[0] if len(structs) == 1 else None
    return None


def _item_kind(kind: Any) -> Any:
    """The element type of ``list[X]``/``tuple[X, ...]``/``set[X]`` (also inside Optional), else None."""
    origin = get_origin(kind)
    if origin in (list, set, frozenset) or (origin is tuple and len(get_args(kind)) == 2 and get_args(kind)[1] is Ellipsis):
        return get_args(kind)[0]
    if origin is not None and origin not in (dict,):
        for arg in get_args(kind):
            inner = _item_kind(arg)
            if inner is not None:
                return inner
    return None


_FieldMap = dict[str, "msgspec.structs.FieldInfo"]
_field_map_cache: dict[type[msgspec.Struct], tuple[_FieldMap, _FieldMap]] = {}


def _field_maps(struct: type[msgspec.Struct]) -> tuple[_FieldMap, _FieldMap]:
    """``struct``'s fields by JSON name, exact and lowercased (computed once per type: msgspec resolves
    the annotations on every ``structs.fields`` call, the largest cost of a small request)."""
    maps = _field_map_cache.get(struct)
    if maps is None:
        fields = msgspec.structs.fields(struct)
        maps = {f.encode_name: f for f in fields}, {f.encode_name.lower(): f for f in fields}
        _field_map_cache[struct] = maps
    return maps


def fold_keys(value: Any, kind: Any) -> Any:
    """Rewrite decoded JSON ``value`` so that msgspec sees Go ``encoding/json`` matching for ``kind``.

    For each object that maps to a Struct, keys are taken in document order
    and matched to a field by its JSON name, exactly or else ignoring case;
    a later key for the same field overwrites an earlier one (as Go's decoder
    does); ``null`` leaves the field as it was (its default); keys that
    match no field are dropped (unknown fields are ignored). Nested Structs,
    lists of Structs and Optional Structs are folded too; maps (``dict``
    fields) keep their keys.
    """
    struct = _struct_of(kind)
    if struct is not None and isinstance(value, dict):
        exact, folded = _field_maps(struct)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            field = exact.get(key) or folded.get(key.lower())
            if field is None or item is None:
                continue
            out[field.encode_name] = fold_keys(item, field.type)
        return out
    item_kind = _item_kind(kind)
    if item_kind is not None and isinstance(value, list):
        return [fold_keys(item, item_kind) for item in value]
    return value


def decode_json(raw: bytes, kind: type[T]) -> T:
    """Decode ``raw`` into ``kind`` with Go rules (see :func:`fold_keys`); ApiError(400) if it does not fit."""
    try:
        value = msgspec.json.decode(raw)
        return msgspec.convert(fold_keys(value, kind), kind)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None


async def read_json(request: web.Request, kind: type[T], *, limit: int = 1 << 20) -> T:
    """The request body decoded into ``kind``; ApiError(413) over ``limit`` bytes, 400 when malformed."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "request body too large")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "request body too large")
    return decode_json(raw, kind)


class ErrorBody(msgspec.Struct):
    error: str


def _error_body(status: int, message: str) -> object:
    return ErrorBody(message)


def json_errors(render: Callable[[int, str], object] = _error_body) -> Middleware:
    """A middleware that answers :class:`ApiError` with ``json_response(render(status, message), status)``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_response(render(exc.status, exc.message), exc.status)

    return middleware


# --------------------------------------------------------------- auth


def _unauthorized(request: web.Request) -> web.StreamResponse:
    return json_response(ErrorBody("unauthorized"), 401, headers={"WWW-Authenticate": "Bearer"})


class TokenAuth:
    """Key auth as an aiohttp middleware: ``app.middlewares.append(TokenAuth([...]).middleware)``.

    A request is admitted when an enabled carrier holds one of ``tokens``:
    ``Authorization: Bearer`` (``bearer``), the ``header`` (``X-API-Key``) or
    the ``query`` parameter (``token``), looked at in that order. With
    ``first_only`` only the first carrier present counts (the Go agent's rule:
    ``?token=`` is consulted only when there is no Authorization header);
    with ``exact_scheme`` the prefix must be exactly ``Bearer `` (case and one
    space). Paths in ``exempt`` need nothing. ``deny(request)`` renders the
    refusal (default: 401 JSON).
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        bearer: bool = True,
        header: str | None = "X-API-Key",
        query: str | None = "token",
        exempt: Iterable[str] = ("/health",),
        deny: Callable[[web.Request], web.StreamResponse] = _unauthorized,
        first_only: bool = False,
        exact_scheme: bool = False,
    ) -> None:
        self._tokens = [t.encode("utf-8", "surrogateescape") for t in tokens if t]
        if not self._tokens:
            raise ValueError("TokenAuth needs at least one non-empty token")
        self.bearer = bearer
        self.header = header
        self.query = query
        self.exempt = frozenset(exempt)
        self.deny = deny
        self.first_only = first_only
        self.exact_scheme = exact_scheme

    def valid(self, candidate: str | None) -> bool:
        """Constant-time comparison against every token (no early exit)."""
        if candidate is None:
            return False
        raw = candidate.encode("utf-8", "surrogateescape")
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(raw, token)
        return ok

    def _bearer(self, value: str) -> str | None:
        if self.exact_scheme:
            return value[7:] if value.startswith("Bearer ") else None
        scheme, _, credential = value.strip().partition(" ")
        return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None

    def candidates(self, request: web.Request) -> list[str | None]:
        """What each carrier present holds, in order (None: present but not a bearer credential)."""
        found: list[str | None] = []
        if self.bearer and (authorization := request.headers.get("Authorization", "")):
            found.append(self._bearer(authorization))
        if self.header is not None and (key := request.headers.get(self.header)) is not None:
            found.append(key)
        if self.query is not None and (param := request.query.get(self.query)) is not None:
            found.append(param)
        return found[:1] if self.first_only else found

    def admits(self, request: web.Request) -> bool:
        results = [self.valid(candidate) for candidate in self.candidates(request)]
        return any(results)

    @property
    def middleware(self) -> Middleware:
        @web.middleware
        async def token_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path in self.exempt:
                return await handler(request)
            if not self.admits(request):
                return self.deny(request)
            guard = request.app.get(GUARD_KEY)
            if guard is not None and request.transport is not None:
                guard.authenticated(request.transport)
            return await handler(request)

        return token_auth


# --------------------------------------------------------------- hostile-client guard

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class ConnectionGuard:
    """Header deadline and a cap on unauthenticated connections, shared by one server's listeners.

    * A connection must deliver its first request head within ``header_timeout``.
    * With ``max_unauthenticated_bytes``, a connection that sends more than
      that before it authenticated is closed (pre-auth memory is then bounded
      by ``max_unauthenticated * max_unauthenticated_bytes``, #6 item 7).
    * At most ``max_unauthenticated`` connections may be open without having
      authenticated. When a new one would exceed it, the oldest connection
      still waiting for its first head is closed to make room (a real client
      sends its head at once, a slowloris never does); if none is waiting, the
      oldest unauthenticated one is. New clients are therefore never locked out.
    """

    def __init__(
        self,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        max_unauthenticated_bytes: int = 0,
    ) -> None:
        if max_unauthenticated < 1:
            raise ValueError("max_unauthenticated must be at least 1")
        self.header_timeout = header_timeout
        self.max_unauthenticated = max_unauthenticated
        self.max_unauthenticated_bytes = max_unauthenticated_bytes  # 0 = no per-connection budget
        self.over_budget = 0  # connections closed for sending too much before authenticating
        self._open: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self._unauthenticated: dict[_GuardedConnection, None] = {}  # insertion order = age
        self.evicted = 0  # connections closed to make room
        self.timed_out = 0  # connections closed by the header deadline
        self._limited = RateLimited(log, 10.0)

    @property
    def unauthenticated(self) -> int:
        return len(self._unauthenticated)

    def authenticated(self, transport: asyncio.BaseTransport) -> None:
        """The connection on ``transport`` proved who it is: it no longer counts against the cap."""
        connection = self._open.get(transport)
        if connection is not None:
            connection.authenticated = True
            self._unauthenticated.pop(connection, None)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedConnection(self, factory)

    # -- bookkeeping for _GuardedConnection
    def _admit(self, connection: _GuardedConnection, transport: asyncio.BaseTransport) -> None:
        if len(self._unauthenticated) >= self.max_unauthenticated:
            victim = next((c for c in self._unauthenticated if c.head_pending), None)
            if victim is None:
                victim = next(iter(self._unauthenticated))
            self._unauthenticated.pop(victim, None)
            self.evicted += 1
            self._limited.log(
                "cap", "%d unauthenticated connections open: closing the oldest %s", self.max_unauthenticated,
                "slow one" if victim.head_pending else "one",
            )
            victim.evict()
        self._open[transport] = connection
        self._unauthenticated[connection] = None

    def _forget(self, transport: asyncio.BaseTransport, connection: _GuardedConnection) -> None:
        self._open.pop(transport, None)
        self._unauthenticated.pop(connection, None)

    def _over_budget(self, peer: object) -> None:
        self.over_budget += 1
        self._limited.log(
            "budget", "closing %s: more than %d bytes before authenticating", escape(peer), self.max_unauthenticated_bytes
        )

    def _timed_out(self, peer: object) -> None:
        self.timed_out += 1
        self._limited.log("slow", "closing %s: no request head within %.1f s", escape(peer), self.header_timeout)


class _GuardedConnection(asyncio.Protocol):
    """Wraps aiohttp's protocol: counts the connection, enforces the first head's deadline, delegates the rest."""

    __slots__ = ("_guard", "_inner", "_make", "_received", "_tail", "_timer", "_transport", "authenticated", "head_pending")

    def __init__(self, guard: ConnectionGuard, make: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._received = 0
        self.head_pending = True
        self.authenticated = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = _as_transport(transport)
        self._guard._admit(self, transport)
        if self._guard.header_timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(self._guard.header_timeout, self._deadline)
        self._inner = self._make()
        self._inner.connection_made(transport)

    def evict(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            if self.head_pending:
                self._transport.write(_BUSY)
            self._transport.abort()

    def _deadline(self) -> None:
        self._timer = None
        if self._transport is not None and self.head_pending:
            self._guard._timed_out(self._transport.get_extra_info("peername"))
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        budget = self._guard.max_unauthenticated_bytes
        if budget and not self.authenticated:
            self._received += len(data)
            if self._received > budget:
                if self._transport is not None and not self._transport.is_closing():
                    self._guard._over_budget(self._transport.get_extra_info("peername"))
                    self._transport.abort()
                return
        if self.head_pending:
            window = self._tail + data
            if b"\r\n\r\n" in window or b"\n\n" in window:
                self.head_pending = False
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            else:
                self._tail = window[-3:]
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._guard._forget(self._transport, self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


def _as_transport(transport: asyncio.BaseTransport) -> asyncio.Transport:
    return cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses


GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("hatchway.connection_guard", ConnectionGuard)


# --------------------------------------------------------------- serving


class TcpAddress(msgspec.Struct, frozen=True):
    host: str  # "" = all interfaces
    port: int  # 0 = any free port

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host or '*'}:{self.port}"


class UnixAddress(msgspec.Struct, frozen=True):
    path: str
    mode: int | None = None  # chmod after bind, e.g. 0o660

    def __str__(self) -> str:
        return f"unix:{self.path}"


Address = TcpAddress | UnixAddress


class HttpServer(Service):
    """An aiohttp application served on several addresses, hardened against hostile clients.

    ``addresses`` lists what is bound (``(host, port)`` for TCP, the path for
    unix sockets) and ``failures`` what could not be bound and why.
    ``guard`` is the :class:`ConnectionGuard`; programs with their own
    handshake call ``server.guard.authenticated(transport)`` after it.
    Extra keyword arguments go to :class:`aiohttp.web.AppRunner` (and on to
    aiohttp's request handler, e.g. ``max_line_size``).
    """

    def __init__(
        self,
        app: web.Application,
        addresses: Sequence[Address],
        *,
        require: Literal["any", "all"] = "any",
        header_timeout: float = HEADER_TIMEOUT,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        max_unauthenticated_bytes: int = 0,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        backlog: int = 1024,
        bind_failure_level: int = logging.WARNING,
        **runner_args: Any,
    ) -> None:
        if not addresses:
            raise ValueError("HttpServer needs at least one address")
        self.app = app
        self.wanted = list(addresses)
        self.require = require
        self.backlog = backlog
        self.bind_failure_level = bind_failure_level  # the host proxy logs these at DEBUG, as upstream does
        self.guard = ConnectionGuard(
            header_timeout=header_timeout,
            max_unauthenticated=max_unauthenticated,
            max_unauthenticated_bytes=max_unauthenticated_bytes,
        )
        app[GUARD_KEY] = self.guard
        runner_args.setdefault("access_log", None)
        runner_args.setdefault("logger", OneLineLogger(server_log))
        self.runner = web.AppRunner(
            app, handle_signals=False, keepalive_timeout=keepalive_timeout, shutdown_timeout=shutdown_timeout, **runner_args
        )
        self.addresses: list[tuple[str, int] | str] = []
        self.failures: list[tuple[Address, OSError]] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._unix_paths: list[str] = []
        self._started = False

    async def start(self) -> None:
        await self.runner.setup()
        self._started = True
        try:
            for address in self.wanted:
                try:
                    await self._bind(address)
                except OSError as exc:
                    self.failures.append((address, exc))
                    log.log(self.bind_failure_level, "cannot listen on %s: %s", address, exc.strerror or exc)
                    if self.require == "all":
                        raise
            if not self._servers:
                first = self.failures[0][1] if self.failures else OSError("nothing to listen on")
                text = "; ".join(f"{a}: {e.strerror or e}" for a, e in self.failures)
                raise OSError(first.errno or errno.EADDRNOTAVAIL, f"could not listen on any address ({text})")
        except BaseException:
            await self.aclose()
            raise

    async def _bind(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        factory = self.guard.wrap(self.runner.server)  # type: ignore[arg-type]  # aiohttp types the factory loosely
        if isinstance(address, TcpAddress):
            sock = bound_socket(address.host, address.port)
            if sock is not None:
                server = await loop.create_server(factory, sock=sock, backlog=self.backlog)
            else:
                server = await loop.create_server(
                    factory, address.host or None, address.port, reuse_address=True, backlog=self.backlog
                )
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                self.addresses.append((str(name[0]), int(name[1])))
            return
        _remove_stale_socket(address.path)
        server = await loop.create_unix_server(factory, address.path, backlog=self.backlog)
        self._servers.append(server)
        self._unix_paths.append(address.path)
        if address.mode is not None:
            os.chmod(address.path, address.mode)
        self.addresses.append(address.path)

    async def aclose(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        if self._started:
            self._started = False
            await self.runner.cleanup()  # closes the open connections (aiohttp's shutdown)
        for server in servers:
            await server.wait_closed()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._unix_paths.clear()
        self.addresses.clear()


def _remove_stale_socket(path: str) -> None:
    """Remove a unix socket left by a dead process (never a live one, never another kind of file)."""
    try:
        if not os.path.exists(path):
            return
        import stat

        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
        finally:
            probe.close()
    except OSError:
        pass


async def serve_app(app: web.Application, addresses: Sequence[Address], **options: Any) -> HttpServer:
    """Start :class:`HttpServer` (``await server.aclose()`` to stop)."""
    server = HttpServer(app, addresses, **options)
    await server.start()
    return server
