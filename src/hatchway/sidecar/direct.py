"""The ``direct`` backend (tests only): plain TCP, a name map, a scripted status.

It stands in for a tailnet in the front end's unit tests: ``svc`` or
``svc.tail.example`` (or ``svc:80``) map to loopback ports, IP literals are
dialled as they are, any other name fails as on arkitekt-mesh (no host DNS
fallback). ``status`` is whatever the test scripted. A start failure, a login
URL and a ``NeedsLogin`` can be scripted too, so every signal path runs
without a tailnet. From the command line: ``-backend direct -direct-config FILE``
(a JSON :class:`DirectScript`).
"""

from __future__ import annotations

import asyncio
import socket

import msgspec

from ..common import socks5
from ..common.dialer import dial, is_ip_literal
from ..common.dialing import Connected, ProxyError, UdpAssociation
from ..common.httpproxy import join_host_port, split_host_port
from .backend import BackendError, JoinConfig, LoginUrlHook, NeedsLoginError, backend_log
from .status import NodeInfo, PeerStatus, Status

__all__ = ["DirectBackend", "DirectScript"]

DEFAULT_IPS = ["100.64.0.1", "fd7a:115c:a1e0::1"]


class DirectScript(msgspec.Struct, kw_only=True):
    """What the direct backend does and reports."""

    names: dict[str, str] = msgspec.field(default_factory=dict)  # "svc" or "svc:80" -> "127.0.0.1" or "127.0.0.1:5000"
    ips: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_IPS))
    fqdn: str = ""
    peers: list[NodeInfo] = msgspec.field(default_factory=list)
    backend_state: str = "Running"
    status_error: str = ""  # non-empty: status() raises with this text
    start_error: str = ""  # non-empty: start() fails with this text
    needs_login: bool = False  # start() raises NeedsLoginError
    login_url: str = ""  # start() reports this URL, then waits for login_done
    login_wait: float = 0.0  # seconds start() waits after reporting login_url (< 0: forever)
    record: str = ""  # a path: start() writes the JoinConfig it got there (JSON), aclose() writes RECORD.closed


class DirectBackend:
    """Plain ``asyncio`` dialing behind a name map."""

    name = "direct"

    def __init__(self, script: DirectScript | None = None, *, timeout: float = 10.0) -> None:
        self.script = script or DirectScript()
        self.timeout = timeout
        self.join: JoinConfig | None = None
        self.started = False
        self.closed = False
        self.login = asyncio.Event()  # set by a test: the scripted interactive login is done

    async def start(self, join: JoinConfig, login_url: LoginUrlHook) -> NodeInfo:
        script = self.script
        self.join = join
        if script.record:
            with open(script.record, "wb") as fh:
                fh.write(msgspec.json.encode(join))
        if script.needs_login:
            raise NeedsLoginError("needs login: the node is not on the tailnet and no auth key was given")
        if script.start_error:
            raise BackendError(script.start_error)
        if script.login_url:
            login_url(script.login_url)
            if script.login_wait < 0:
                await self.login.wait()
            elif script.login_wait > 0:
                try:
                    await asyncio.wait_for(self.login.wait(), script.login_wait)
                except TimeoutError:
                    raise BackendError("context deadline exceeded") from None
        self.started = True
        backend_log.debug("direct: node %r up (scripted), addresses %s", join.hostname, script.ips)
        return NodeInfo(name=script.fqdn, hostname=join.hostname, tailscale_ips=list(script.ips), online=True)

    async def status(self) -> Status:
        script = self.script
        if script.status_error:
            raise BackendError(script.status_error)
        hostname = self.join.hostname if self.join is not None else ""
        me = NodeInfo(name=script.fqdn, hostname=hostname, tailscale_ips=list(script.ips), online=self.started)
        return Status(
            self_=PeerStatus.of(me), peers=[PeerStatus.of(p) for p in script.peers], backend_state=script.backend_state
        )

    def target(self, host: str, port: int) -> tuple[str, int]:
        """Where ``host:port`` goes: the name map (``name:port`` first, then ``name``), or an IP literal as is."""
        name = host.lower().rstrip(".")
        names = self.script.names
        mapped = names.get(f"{name}:{port}") or names.get(name)
        if mapped is not None:
            return split_host_port(mapped, port)
        if is_ip_literal(host):
            return host, port
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"{join_host_port(host, port)}: no peer named {host} on the tailnet")

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        real_host, real_port = self.target(host, port)
        return await dial(real_host, real_port, timeout=self.timeout)

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        raise ProxyError(socks5.Rep.COMMAND_NOT_SUPPORTED, "UDP is not supported")

    async def resolve(
        self, host: str, port: int, *, kind: int = socket.SOCK_STREAM, family: int = 0
    ) -> list[tuple[int, str]]:
        address, _ = self.target(host, port)
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, address)]

    async def aclose(self) -> None:
        if self.script.record and not self.closed:
            with open(self.script.record + ".closed", "wb"):
                pass
        self.closed = True
        self.started = False
