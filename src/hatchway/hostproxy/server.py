"""The host proxy daemon's HTTP server: routes, checks, session sweep and dynamic callback listeners.

Every route, status and error text of the spec's section 2, with the security
requirements of 12.2 in front of them:

1. :class:`~.policy.HostGuard` (``Origin``, ``Host``, ``Content-Type``) before anything;
2. a per-container token (``Authorization: Bearer``) on every path but ``/health``:
   401 when missing or unknown, unless the compatibility switch admits tokenless
   upstream containers (logged as a warning at start);
3. per-endpoint policy (URL, callback port/caps/TTL, git host/protocol/action) and
   per-token rate limits, each refusal before any side effect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from hatchway.common.httpapi import (
    GUARD_KEY,
    ApiError,
    HttpServer,
    TcpAddress,
    decode_json,
    fold_keys,
    json_response,
)
from hatchway.common.lifecycle import Service
from hatchway.common.logsafe import escape
from hatchway.common.tasks import TaskSet

from .browser import BrowserError, Opener, SystemOpener
from .gitcred import GitCredentialRunner
from .listeners import DynamicListeners, ListenerError
from .pages import error_page, success_page
from .policy import CallbackPolicy, GitPolicy, HostGuard, RateLimiter, Refusal, UrlPolicy
from .session import (
    CALLBACK_SESSION_TYPE,
    CLEANUP_INTERVAL,
    DEFAULT_CALLBACK_TTL,
    MAX_BODY,
    CallbackAlreadyReceived,
    CallbackChannel,
    CapturedRequest,
    Session,
    SessionStore,
    rfc3339_seconds,
)
from .tokens import Grant, TokenRegistry
from .wire import (
    DEFAULT_PORT,
    CallbackDataResponse,
    GitCredentialRequest,
    GitCredentialResponse,
    Health,
    OpenUrlRequest,
    OpenUrlResponse,
    RegisterRequest,
    RegisterResponse,
    SuccessResponse,
)

if TYPE_CHECKING:
    from .egress import EgressRules

__all__ = ["HostProxyServer", "ServerConfig"]

log = logging.getLogger(__name__)
audit = logging.getLogger("hatchway.hostproxy.audit")

MAX_JSON_BODY = 1 << 20
HEALTH_BODY = msgspec.json.encode(Health()) + b"\n"  # the same bytes json_response would give, built once
MAX_HTTP_TTL = 30 * 60.0  # upstream's cap; the policy's (10 min) applies after it
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerConfig(msgspec.Struct, kw_only=True):
    port: int = DEFAULT_PORT
    bind: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])  # never 0.0.0.0; on Linux add the agent network's gateway IP
    allow_tokenless: bool = False  # compatibility switch for unmodified upstream containers
    extra_hosts: list[str] = []  # more Host names accepted (with the port)
    open_rate: int = 10  # /open/url per token per minute
    request_rate: int = 600  # any request per token per minute
    url_max_length: int = 8192
    callback_min_port: int = 1024
    callback_per_container: int = 2
    callback_total: int = 64
    callback_max_ttl: float = 600.0
    callback_any_method: bool = False  # upstream: any method and path is captured
    git_hosts: list[str] = []
    git_allow_store: bool = False
    git_timeout: float = 10.0
    browser_timeout: float = 10.0
    cleanup_interval: float = CLEANUP_INTERVAL
    neutral_dir: str = ""  # empty working directory for git (required for /git/credential)
    egress_rules: str = ""  # [later] the firewall's egress rules file: /open/url must pass it (empty: no check)
    max_connections: int = 256


class Identity(msgspec.Struct, frozen=True):
    owner: str  # container id; "" = tokenless (compatibility mode)
    grant: Grant | None = None

    @property
    def label(self) -> str:
        return self.owner or "tokenless"


IDENTITY: web.RequestKey[Identity] = web.RequestKey("hostproxy.identity", Identity)


async def read_capped(request: web.Request, cap: int) -> bytes:
    """The body until EOF or ``cap`` bytes, whichever comes first (one read may return less)."""
    chunks = bytearray()
    while len(chunks) < cap:
        more = await request.content.read(cap - len(chunks))
        if not more:
            break
        chunks += more
    return bytes(chunks)


def _shape(path: str) -> str:
    """The JSON shape of ``path``'s answers: ``received`` (callback data polls) or ``success``."""
    return "received" if path.endswith("/data") else "success"


def _refuse(refusal: Refusal, shape: str = "success") -> web.Response:
    if shape == "received":
        return json_response(CallbackDataResponse(received=False, error=refusal.error), refusal.status)
    return json_response(OpenUrlResponse(success=False, error=refusal.error), refusal.status)


class HostProxyServer(Service):
    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        tokens: TokenRegistry | None = None,
        opener: Opener | None = None,
        git: GitCredentialRunner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config = config or ServerConfig()
        if not 0 <= config.port <= 65535:  # 0: any free port (tests; bind one address then)
            raise ValueError(f"invalid port {config.port}: must be between 1 and 65535")
        self.tokens = tokens if tokens is not None else TokenRegistry()
        self.opener = opener or SystemOpener(timeout=config.browser_timeout)
        self.git = git if git is not None else (
            GitCredentialRunner(config.neutral_dir, timeout=config.git_timeout) if config.neutral_dir else None)
        self.store = SessionStore(clock=clock)
        self.channel = CallbackChannel(self.store)
        self.guard = HostGuard(config.port, self.guard_hosts())
        self.url_policy = UrlPolicy(max_length=config.url_max_length)
        self.egress: EgressRules | None = None
        if config.egress_rules:
            from .egress import EgressRules

            self.egress = EgressRules(config.egress_rules)
        self.callback_policy = CallbackPolicy(
            min_port=config.callback_min_port, per_owner=config.callback_per_container,
            total=config.callback_total, max_ttl=config.callback_max_ttl)
        self.git_policy = GitPolicy(config.git_hosts, allow_store=config.git_allow_store)
        self.open_limit = RateLimiter(config.open_rate, 60.0)
        self.request_limit = RateLimiter(config.request_rate, 60.0)
        self.listeners = DynamicListeners(self._listener_app)
        self._port_sessions: dict[int, str] = {}
        self.store.set_on_delete(self._session_deleted)
        self.app = self._build_app()
        self.http: HttpServer | None = None
        self._tasks = TaskSet("host proxy", logger=log)
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self.config.port

    @property
    def running(self) -> bool:
        return self.http is not None

    async def start(self) -> HostProxyServer:
        if self.config.allow_tokenless:
            log.warning("compatibility mode: requests without a container token are admitted, with any "
                        "Content-Type (unmodified upstream containers); any local process or container can use "
                        "this proxy")
        self.http = HttpServer(
            self.app,
            [TcpAddress(host, self.config.port) for host in self.config.bind],
            require="any",
            header_timeout=10.0,
            keepalive_timeout=60.0,
            max_unauthenticated=self.config.max_connections,
            bind_failure_level=logging.DEBUG,
        )
        try:
            await self.http.start()
        except BaseException:
            self.http = None
            raise
        if self.config.port == 0:
            bound = self.http.addresses[0]
            assert isinstance(bound, tuple)
            self.config.port = bound[1]
            self.guard = HostGuard(bound[1], self.guard_hosts())
        self._tasks.spawn(self._sweep_loop(), name="session sweep")
        return self

    def guard_hosts(self) -> list[str]:
        return [*self.config.extra_hosts, *(f"[{b}]" if ":" in b else b for b in self.config.bind)]

    async def _sweep_loop(self) -> None:
        while not self.store.stopped:
            await asyncio.sleep(self.config.cleanup_interval)
            self.store.sweep()

    async def aclose(self) -> None:
        """Close the dynamic listeners, stop the store, then the main listeners; safe to repeat."""
        if self._stopped:
            return
        self._stopped = True
        await self.listeners.aclose()
        self.store.stop()
        await self._tasks.aclose()
        if self.http is not None:
            http, self.http = self.http, None
            await http.aclose()

    # ------------------------------------------------------------------ sessions
    def _session_deleted(self, session: Session) -> None:
        port = session.metadata.get("port")
        if session.type == CALLBACK_SESSION_TYPE and isinstance(port, int):
            if self._port_sessions.get(port) == session.id:
                del self._port_sessions[port]
                self.listeners.stop(port)

    def _owned(self, session_id: str, identity: Identity) -> Session | None:
        session = self.store.get(session_id)
        if session is None or session.owner != identity.owner:
            return None
        return session

    def _callback_ports(self, identity: Identity) -> list[int]:
        ports = []
        for session in self.store.sessions():
            port = session.metadata.get("port")
            if session.owner == identity.owner and isinstance(port, int):
                ports.append(port)
        return ports

    # ------------------------------------------------------------------ app
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._checks], client_max_size=MAX_JSON_BODY + 1)
        app.router.add_get("/health", self.health)
        app.router.add_post("/open/url", self.open_url)
        app.router.add_post("/git/credential", self.git_credential)
        app.router.add_post("/callback/register", self.register)
        app.router.add_get("/callback/{session}/data", self.callback_data)
        app.router.add_delete("/callback/{session}", self.callback_delete)
        app.router.add_get("/cb/{session}/{tail:.*}", self.legacy_capture)
        return app

    @web.middleware
    async def _checks(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # compatibility mode: a tokenless (upstream) client may send any Content-Type; Origin and Host still apply
        headers = request.headers
        relaxed = self.config.allow_tokenless and "Authorization" not in headers
        refusal = self.guard.check(request.method, headers.get("Host"), headers.get("Origin"),
                                   headers.get("Content-Type"), require_json=False if relaxed else None)
        path = request.path
        if refusal is not None:
            log.info("refused %s %s: %s", request.method, escape(path), refusal.error)
            return _refuse(refusal, _shape(path))
        if path == "/health":
            return await handler(request)
        identity = self._identify(request)
        if identity is None:
            return _refuse(Refusal(401, "unauthorized: missing or unknown container token"), _shape(path))
        if not self.request_limit.allow(identity.owner):
            return _refuse(Refusal(429, "too many requests"), _shape(path))
        guard = request.app.get(GUARD_KEY)
        if guard is not None and request.transport is not None:
            guard.authenticated(request.transport)
        request[IDENTITY] = identity
        return await handler(request)

    def _identify(self, request: web.Request) -> Identity | None:
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return Identity("") if self.config.allow_tokenless else None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        grant = self.tokens.lookup(token.strip())
        return Identity(grant.container, grant) if grant is not None else None

    async def _body(self, request: web.Request, kind: type[Any]) -> Any:
        raw = await read_capped(request, MAX_JSON_BODY + 1)
        if len(raw) > MAX_JSON_BODY:
            raise ApiError(400, "invalid JSON request body")
        try:
            return decode_json(raw, kind)
        except ApiError:
            pass
        # Go's json.Decoder reads only the first value: `{...} trailing` and `null` decode
        import json

        try:
            value, _ = json.JSONDecoder().raw_decode(raw.decode("utf-8").lstrip())
            return kind() if value is None else msgspec.convert(fold_keys(value, kind), kind)
        except (ValueError, msgspec.ValidationError):
            raise ApiError(400, "invalid JSON request body") from None

    # ------------------------------------------------------------------ routes
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(body=HEALTH_BODY, content_type="application/json", charset=None)

    async def open_url(self, request: web.Request) -> web.Response:
        identity: Identity = request[IDENTITY]
        try:
            body: OpenUrlRequest = await self._body(request, OpenUrlRequest)
        except ApiError as exc:
            return json_response(OpenUrlResponse(success=False, error=exc.message), exc.status)
        url = body.url
        if not url:
            return json_response(OpenUrlResponse(success=False, error="url field is required"), 400)
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError:
            return json_response(OpenUrlResponse(success=False, error="invalid URL format"), 400)
        if parts.scheme.lower() not in ("http", "https"):
            return json_response(OpenUrlResponse(success=False, error="only http and https URLs are allowed"), 400)
        if self.egress is not None:
            refused = self._egress_refusal(url)
            if refused is not None:
                audit.warning("open refused container=%s url=%s: %s", identity.label, escape(url, 512),
                              escape(refused.error))
                error = "egress rules unavailable" if refused.status == 500 else "blocked by egress policy"
                return json_response(OpenUrlResponse(success=False, url=url, error=error), refused.status)
        refusal = self.url_policy.check(url, lambda: self._callback_ports(identity))
        if refusal is not None:
            audit.warning("open refused container=%s url=%s: %s", identity.label, escape(url, 512), refusal.error)
            return json_response(OpenUrlResponse(success=False, url=url, error=refusal.error), refusal.status)
        if not self.open_limit.allow(identity.owner):
            audit.warning("open refused container=%s url=%s: rate limit", identity.label, escape(url, 512))
            return json_response(OpenUrlResponse(success=False, url=url, error="too many URLs opened; try again later"),
                                 429)
        audit.info("open container=%s url=%s", identity.label, escape(url, 512))
        try:
            await self.opener.open(url)
        except BrowserError as exc:
            return json_response(OpenUrlResponse(success=False, url=url, error=str(exc)), 500)
        return json_response(OpenUrlResponse(success=True, url=url))

    def _egress_refusal(self, url: str) -> Refusal | None:
        """None when the egress rules allow ``url``; 403 (blocked, with why) or 500 (rules unusable) otherwise."""
        from .egress import Blocked, RulesUnavailable

        assert self.egress is not None
        try:
            self.egress.check(url)
        except Blocked as exc:
            return Refusal(403, str(exc))
        except RulesUnavailable as exc:
            log.error("egress rules unavailable: %s", exc)  # every /open/url fails closed until the file is fixed
            return Refusal(500, str(exc))
        return None

    async def git_credential(self, request: web.Request) -> web.Response:
        identity: Identity = request[IDENTITY]

        def fail(status: int, error: str) -> web.Response:
            return json_response(GitCredentialResponse(success=False, error=error), status)

        try:
            body: GitCredentialRequest = await self._body(request, GitCredentialRequest)
        except ApiError as exc:
            return fail(exc.status, exc.message)
        if body.action not in ("get", "store", "erase"):
            return fail(400, "action must be 'get', 'store', or 'erase'")
        if not body.protocol:
            return fail(400, "protocol is required")
        if not body.host:
            return fail(400, "host is required")
        for value in (body.protocol, body.host, body.path, body.username, body.password):
            if "\n" in value or "\r" in value or "\x00" in value:
                return fail(400, "credential fields must not contain newlines or null bytes")
        grant_hosts = identity.grant.git_hosts if identity.grant is not None else []
        refusal = self.git_policy.check(body.action, body.protocol, body.host, grant_hosts)
        if refusal is not None:
            audit.warning("git %s refused container=%s host=%s: %s", body.action, identity.label,
                          escape(body.host), refusal.error)
            return fail(refusal.status, refusal.error)
        if self.git is None:
            return fail(500, "git credential forwarding is not configured")
        audit.info("git %s container=%s protocol=%s host=%s", body.action, identity.label, escape(body.protocol),
                   escape(body.host))  # never the password
        try:
            result = await self.git.run(body.action, body.protocol, body.host, body.path, body.username,
                                        body.password)
        except (RuntimeError, OSError) as exc:  # the neutral directory is not usable: never run git elsewhere
            log.error("git credential: %s", exc)
            return fail(500, "git credential forwarding is not available")
        if not result.ok:
            return fail(200, result.error)
        if body.action != "get":
            return json_response(GitCredentialResponse(success=True))
        f = result.fields
        return json_response(GitCredentialResponse(
            success=True, protocol=f.get("protocol", ""), host=f.get("host", ""),
            username=f.get("username", ""), password=f.get("password", "")))

    async def register(self, request: web.Request) -> web.Response:
        identity: Identity = request[IDENTITY]

        def fail(status: int, error: str) -> web.Response:
            return json_response(RegisterResponse(success=False, error=error), status)

        try:
            body: RegisterRequest = await self._body(request, RegisterRequest)
        except ApiError as exc:
            return fail(exc.status, exc.message)
        if body.port <= 0 or body.port > 65535:
            return fail(400, "port must be between 1 and 65535")
        owned = sum(1 for s in self.store.sessions() if s.owner == identity.owner and not s.is_expired(self.store.now()))
        refusal = self.callback_policy.check(body.port, owned, self.store.count())
        if refusal is not None:
            audit.warning("register refused container=%s port=%d: %s", identity.label, body.port, refusal.error)
            return fail(refusal.status, refusal.error)
        ttl = DEFAULT_CALLBACK_TTL
        if body.timeout_seconds > 0:
            ttl = min(float(body.timeout_seconds), MAX_HTTP_TTL)
        ttl = self.callback_policy.ttl(ttl)
        path = body.path or "/callback"
        try:
            session = self.channel.register(body.port, path, ttl, owner=identity.owner)
        except ValueError:
            return fail(500, "failed to create session")
        if body.port in self.listeners:
            self.store.delete(session.id)
            return fail(500, f"failed to start listener on port {body.port}: listener for port {body.port} "
                             "already exists")
        try:
            await self.listeners.start(body.port)
        except ListenerError as exc:
            self.store.delete(session.id)
            return fail(500, f"failed to start listener on port {body.port}: {exc}")
        self._port_sessions[body.port] = session.id
        audit.info("register container=%s port=%d path=%s ttl=%gs", identity.label, body.port, escape(path), ttl)
        return json_response(RegisterResponse(success=True, session_id=session.id,
                                              expires_at=rfc3339_seconds(session.expires_at)))

    async def callback_data(self, request: web.Request) -> web.Response:
        identity: Identity = request[IDENTITY]
        session_id = request.match_info["session"]
        if not session_id:
            return json_response(CallbackDataResponse(received=False, error="session ID required"), 400)
        if self._owned(session_id, identity) is None:
            return json_response(CallbackDataResponse(received=False, error="session not found or expired"), 404)
        data = self.channel.get_data(session_id)
        if data is None:
            return json_response(CallbackDataResponse(received=False))
        return json_response(CallbackDataResponse(received=True, callback=data))

    async def callback_delete(self, request: web.Request) -> web.Response:
        identity: Identity = request[IDENTITY]
        session_id = request.match_info["session"]
        session = self._owned(session_id, identity)
        if session is not None:
            port = session.metadata.get("port")
            self.channel.delete(session_id)
            if isinstance(port, int):
                await self.listeners.wait_closed(port)
        return json_response(SuccessResponse())

    async def legacy_capture(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session"]
        if self._owned(session_id, request[IDENTITY]) is None:  # another container's session looks absent
            return web.Response(text="Session not found or expired", status=404)
        return await self._capture(session_id, request)

    async def _capture(self, session_id: str, request: web.Request) -> web.Response:
        body = await read_capped(request, MAX_BODY) if request.can_read_body else b""  # whole, up to the cap
        raw_query = request.raw_path.partition("?")[2]  # as sent (query_string is decoded)
        captured = CapturedRequest(request.method, request.path, raw_query,
                                   list(request.headers.items()), body)
        try:
            self.channel.capture(session_id, captured)
        except CallbackAlreadyReceived:
            return success_page()  # duplicates (favicon, reload) are silently ignored
        except Exception as exc:  # noqa: BLE001 - every other capture failure is the error page
            log.info("callback capture failed: %s", exc)
            return error_page()
        log.info("callback captured on session %s", session_id[:8])
        return success_page()

    # ------------------------------------------------------------------ dynamic listener app
    def _listener_app(self, port: int) -> web.Application:
        guard = HostGuard(port, require_json=False)

        async def handle(request: web.Request) -> web.StreamResponse:
            if guard.check("GET", request.headers.get("Host"), None, None) is not None:
                return web.Response(text="Session not found", status=404)
            session_id = self._port_sessions.get(port)
            if session_id is None:
                return web.Response(text="Session not found", status=404)
            if not self.config.callback_any_method:
                path = self.channel.get_path(session_id)
                if request.method not in ("GET", "HEAD") or (path is not None and request.path != path):
                    return web.Response(text="Not found", status=404)
                if request.method == "HEAD":
                    return web.Response(status=200)
            return await self._capture(session_id, request)

        app = web.Application(client_max_size=MAX_BODY + 1)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app
