"""Listening sockets bound without the event loop's resolver.

``loop.create_server(host, port)`` resolves ``host`` with getaddrinfo even for an IP literal, and uvloop runs that
on libuv's thread pool, whose four threads then stay for the life of the process (~0.7 MB RSS in an idle daemon).
A front end that listens on an IP literal binds the socket here and hands it over with ``create_server(sock=)``.
"""

from __future__ import annotations

import socket

__all__ = ["bound_socket"]


def bound_socket(host: str, port: int) -> socket.socket | None:
    """A TCP socket bound to ``host`` when it is an IP literal, else None (a name: the loop resolves it).

    The socket is set up as ``create_server`` would (SO_REUSEADDR; IPv6 only on an IPv6 address); a failure
    raises OSError with the system's text (``Address already in use``).
    """
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return None
