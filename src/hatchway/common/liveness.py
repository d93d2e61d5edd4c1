"""Is a TCP connection still established? Asked of the kernel, not of the transport.

A peer's reset or FIN is noticed by an asyncio transport only when it reads or
writes. A read loop held by its inbound gate does neither (and aiohttp stops
reading the socket once its frame queue is full), so a cut WebSocket would go
unnoticed for as long as the gate holds. :func:`tcp_established` looks at the
socket's TCP state (Linux ``TCP_INFO``, ``tcpi_state``) directly; it answers
True whenever it cannot tell (no socket, not TCP, not Linux), so a caller only
ever learns of a real loss. Imports no asyncio.
"""

from __future__ import annotations

import socket
from typing import Protocol

__all__ = ["TCP_ESTABLISHED", "HasExtraInfo", "socket_established", "tcp_established"]

TCP_ESTABLISHED = 1  # tcpi_state in Linux's struct tcp_info
_TCP_INFO = getattr(socket, "TCP_INFO", None)


class HasExtraInfo(Protocol):
    """A transport or WebSocket response: anything with ``get_extra_info("socket")``."""

    def get_extra_info(self, name: str, default: object = None) -> object: ...


def tcp_established(sock: object) -> bool:
    """True unless the kernel says this TCP socket is no longer established (peer reset or FIN)."""
    if sock is None or _TCP_INFO is None:
        return True
    getsockopt = getattr(sock, "getsockopt", None)
    if getsockopt is None:
        return True
    try:
        info = getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)
    except (OSError, ValueError, TypeError):
        return True
    if not isinstance(info, bytes | bytearray) or not info:
        return True
    return info[0] == TCP_ESTABLISHED


def socket_established(holder: HasExtraInfo) -> bool:
    """:func:`tcp_established` of the socket behind a transport or WebSocket (True when it has none)."""
    return tcp_established(holder.get_extra_info("socket"))
