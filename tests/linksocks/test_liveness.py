"""common/liveness.py: the kernel's TCP state, as the held read loop sees it (used by MuxSession for LinkSocks links)."""

from __future__ import annotations

import socket

from hatchway.common.liveness import socket_established, tcp_established
from helpers import wait_until_blocking


def _pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


class _Holder:
    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default


def test_established_until_peer_closes() -> None:
    client, server = _pair()
    with client:
        with server:
            assert tcp_established(client)
            assert socket_established(_Holder(client))
        # the peer's FIN moves our side to CLOSE_WAIT without our reading anything
        wait_until_blocking(lambda: not tcp_established(client), what="CLOSE_WAIT seen")
        assert not socket_established(_Holder(client))


def test_peer_reset_is_seen() -> None:
    client, server = _pair()
    with client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        server.close()
        wait_until_blocking(lambda: not tcp_established(client), what="reset seen")


def test_unknown_means_alive() -> None:
    assert tcp_established(None)
    assert socket_established(_Holder(None))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        assert tcp_established(udp)  # not TCP: getsockopt fails -> cannot tell -> alive
