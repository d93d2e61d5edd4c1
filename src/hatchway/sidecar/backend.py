"""The network backend contract: what the sidecar's front end needs from a tailnet.

A backend joins the tailnet (:meth:`Backend.start`), reports status
(:meth:`Backend.status`) and is, once started, common's
:class:`~hatchway.common.dialing.Dialer` and
:class:`~hatchway.common.dialing.Resolver`: the one proxy front end
(:class:`~hatchway.common.proxyfront.ProxyFront`) dials every HTTP and SOCKS5
target through it, names unresolved, so tailnet short names, full names and
IPs work in both modes.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import msgspec

from ..common.dialing import Connected, UdpAssociation
from .status import NodeInfo, Status

__all__ = ["Backend", "BackendError", "JoinConfig", "LoginUrlHook", "NeedsLoginError", "backend_log", "verbose_backend_log"]

backend_log = logging.getLogger("hatchway.sidecar.backend")  # the backends' diagnostics (upstream: tsnet's logs)


def verbose_backend_log() -> None:
    """``-verbose``: backend diagnostics on stderr with upstream's ``[Tailscale] `` prefix."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[Tailscale] %(message)s"))
    backend_log.addHandler(handler)
    backend_log.setLevel(logging.DEBUG)
    backend_log.propagate = False

LoginUrlHook = Callable[[str], None]


class JoinConfig(msgspec.Struct, kw_only=True):
    """How to join: the flags of the Go sidecar, resolved (auth key after its env fallback)."""

    statedir: str
    hostname: str = "ts-proxy"
    control_url: str = ""  # "" = the backend's default (Tailscale SaaS for Go tsnet)
    auth_key: str = ""
    timeout: float = 60.0  # upstream tsnet.Up gives up after 60 s
    verbose: bool = False


class BackendError(Exception):
    """The node could not join; the text follows ``tailnet connection failed: ``."""


class NeedsLoginError(BackendError):
    """The node needs an interactive login and gave no URL to show (arkitekt-mesh's ``NeedsLogin``)."""


@runtime_checkable
class Backend(Protocol):
    """A tailnet node the sidecar dials through."""

    name: str

    async def start(self, join: JoinConfig, login_url: LoginUrlHook) -> NodeInfo:
        """Join; call ``login_url(url)`` when the node needs an interactive login. Raise :class:`BackendError`."""
        ...

    async def status(self) -> Status:
        """Self and peers as ``/status`` reports them (any exception becomes a 500)."""
        ...

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        """Dial ``host:port`` on the tailnet (a name goes unresolved to the tailnet's name map); ProxyError on failure."""
        ...

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        """UDP: not offered (ProxyError 0x07), as upstream's go-socks5."""
        ...

    async def resolve(
        self, host: str, port: int, *, kind: int = socket.SOCK_STREAM, family: int = 0
    ) -> list[tuple[int, str]]:
        """Tailnet name to addresses (ProxyError 0x04 for a name not on the tailnet)."""
        ...

    async def aclose(self) -> None:
        """Leave the tailnet (close the node). Idempotent."""
        ...
