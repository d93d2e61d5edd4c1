"""The sidecar's proxy: common's one front end with the tailnet backend as its Dialer.

No proxy code lives here, only what makes common's
:class:`~hatchway.common.proxyfront.ProxyFront` answer as the Go sidecar does:
the per-request stdout lines, a bounded dial (upstream has no timeout), SOCKS5
reply codes chosen by the error text as go-socks5 does, and the Go answers to a
failed dial (CONNECT: the bare ``502 Bad Gateway`` head; absolute URI:
``502`` ``text/plain`` ``Proxy Error: <err>``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..common import socks5
from ..common.dialing import Connected, ProxyError, UdpAssociation
from ..common.httpproxy import ProxyRequest, join_host_port, response
from ..common.proxyfront import ProxyFront
from .backend import Backend
from .signals import SignalWriter

__all__ = ["CONNECT_FAILED", "TailnetDialer", "build_front", "http_refusal", "reply_for_text"]

CONNECT_FAILED = b"HTTP/1.1 502 Bad Gateway\r\n\r\n"
MODES = ("http", "socks5")


def reply_for_text(text: str) -> int:
    """go-socks5's rule: ``refused`` -> 0x05, ``network is unreachable`` -> 0x03, anything else -> 0x04."""
    if "refused" in text:
        return socks5.Rep.CONNECTION_REFUSED
    if "network is unreachable" in text:
        return socks5.Rep.NETWORK_UNREACHABLE
    return socks5.Rep.HOST_UNREACHABLE


def http_refusal(request: ProxyRequest, error: ProxyError) -> bytes:
    """The Go sidecar's answers to a failed dial."""
    if request.tunnel:
        return CONNECT_FAILED
    return response(502, f"Proxy Error: {error.message}\n", [("X-Content-Type-Options", "nosniff")])


class TailnetDialer:
    """The backend as the front end's Dialer: dial bounded by ``timeout``, Go reply codes, optional dial log."""

    def __init__(self, backend: Backend, *, timeout: float = 10.0, on_dial: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.timeout = timeout
        self.on_dial = on_dial

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        target = join_host_port(host, port)
        if self.on_dial is not None:
            self.on_dial(target)
        try:
            async with asyncio.timeout(self.timeout):
                return await self.backend.open(host, port, client)
        except TimeoutError:
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"dial tcp {target}: i/o timeout") from None
        except ProxyError as exc:
            if exc.reply == socks5.Rep.NOT_ALLOWED:
                raise
            raise ProxyError(reply_for_text(exc.message), exc.message) from None

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        raise ProxyError(socks5.Rep.COMMAND_NOT_SUPPORTED, "UDP is not supported")


def build_front(backend: Backend, mode: str, port: int, signals: SignalWriter, *, timeout: float = 10.0) -> ProxyFront:
    """The listener for ``-mode http`` or ``-mode socks5`` on ``127.0.0.1:port`` (not started)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode: {mode}")
    http = mode == "http"

    def log_request(client: tuple[str, int], request: ProxyRequest) -> None:
        signals.http_request(join_host_port(*client), request.head.method, request.head.target)

    dialer = TailnetDialer(backend, timeout=timeout, on_dial=None if http else signals.socks_dial)
    return ProxyFront(
        dialer,
        "127.0.0.1",
        port,
        http=http,
        socks=not http,  # one protocol per mode, as upstream
        on_http_request=log_request if http else None,
        http_refusal=http_refusal,
    )
