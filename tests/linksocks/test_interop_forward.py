"""Forward mode against the real peers (acceptance cases 1-7).

hatchway runs in an engine thread (Server/Client objects), the peers are the
PyPI wheels started as processes. Sync tests: they run once, not per loop.
"""

import ls_harness as h
import pytest

from hatchway.linksocks import Client, Server
from helpers import wait_until_blocking

pytestmark = pytest.mark.interop

BIG = 64 * h.MiB


def go_client(procs, peer, url, token, socks_port, *extra, name="go-client"):
    proc = procs.start(
        peer.linksocks("client", "-t", token, "-u", url, "-s", "127.0.0.1", "-p", str(socks_port),
                       "--direct-mode", "relay-only", *extra),
        name,
    )
    h.wait_port(socks_port, 30)
    return proc


def go_server(procs, peer, ws_port, *extra, name="go-server"):
    proc = procs.start(peer.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), *extra), name)
    h.wait_port(ws_port, 30)
    return proc


def hatchway_server(eng, token="tok", **options):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0, **options))
    eng.sync(server.add_forward_token, token)
    return server, server.ws_address[1]


def hatchway_client(eng, url, token="tok", **options):
    client = eng.start(lambda: Client(token, url=url, socks_host="127.0.0.1", socks_port=0, **options))
    eng.call(lambda: client.wait_ready(30))
    return client, client.socks_address[1]


@pytest.mark.parametrize("path", ["", "/socket/"], ids=["url-query-auth", "binary-auth"])
def test_hatchway_server_go_client(eng, procs, peer110, target, path):
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}{path}", "tok", socks)
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    assert h.echo_roundtrip(socks, target.port, b"x" * 100000) == b"x" * 100000


@pytest.mark.parametrize("peer_name", ["peer110", "peer19"])
def test_go_server_hatchway_client(eng, procs, request, target, peer_name):
    peer = request.getfixturevalue(peer_name)
    ws_port = h.free_port()
    go_server(procs, peer, ws_port, "-t", "tok")
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}")
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    h.echo_sha(socks, target.port, 4 * h.MiB)


def test_64mib_hatchway_server_go_client(eng, procs, peer110, target):
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}", "tok", socks)
    h.echo_sha(socks, target.port, BIG)


def test_64mib_go_server_hatchway_client(eng, procs, peer110, target):
    ws_port = h.free_port()
    go_server(procs, peer110, ws_port, "-t", "tok", "-b", "1048576")
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}")
    h.echo_sha(socks, target.port, BIG)


def test_64mib_go_client_four_websockets(eng, procs, peer110, target):
    """Case 6: a Go client with -T 4 spreads one channel over 4 WebSockets; routed by channel id."""
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}", "tok", socks, "-T", "4")
    h.echo_sha(socks, target.port, BIG)


def test_go_server_big_buffer_gzip_download(eng, procs, peer110, target):
    """Case 7: -b 8 MiB: messages above 4 MiB, many continuation frames, gzip Compression = 1."""
    ws_port = h.free_port()
    go_server(procs, peer110, ws_port, "-t", "tok", "-b", "8388608")
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}")
    h.download_sha(socks, target.port, 128 * h.MiB)


def test_pywssocks_client_hatchway_server(eng, procs, peer110, target):
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    procs.start(peer110.pywssocks("client", "-t", "tok", "-u", f"ws://127.0.0.1:{ws_port}",
                                  "-h", "127.0.0.1", "-p", str(socks)), "pywssocks-client")
    h.wait_port(socks, 30)
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    h.echo_sha(socks, target.port, 2 * h.MiB)


def test_pywssocks_server_hatchway_client(eng, procs, peer110, target):
    ws_port = h.free_port()
    procs.start(peer110.pywssocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok"), "pywssocks-server")
    h.wait_port(ws_port, 30)
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}")
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    h.echo_sha(socks, target.port, 2 * h.MiB)


def test_cut_against_a_server_without_ledger_resets_and_never_resumes(eng, procs, peer19):
    """Go 1.9.5 keeps no byte ledger (and takes Connect(Resume = 1) for a new dial): the channel is reset at
    the cut, the new link gets a Disconnect for it and never a Resume, so no second dial mixes two streams."""
    target = h.Target()
    try:
        ws_port = h.free_port()
        go_server(procs, peer19, ws_port, "-t", "tok")
        proxy = h.CuttableProxy(ws_port)
        client, socks = hatchway_client(eng, f"ws://127.0.0.1:{proxy.port}", reconnect_initial=0.05)
        sock, _ = h.socks_connect(socks, "127.0.0.1", target.port)
        with sock:
            sock.sendall(b"Efirst")
            assert h._recv_exact(sock, 5) == b"first"
            proxy.cut()
            h.expect_reset(sock, b"second")  # reset, not silently carried on
        wait_until_blocking(lambda: proxy.accepted >= 2 and eng.sync(lambda: len(client.links)) == 1, timeout=20,
                            what="reconnect")
        # a fresh channel over the new link; a dial for a Resume would have come before it
        assert h.echo_roundtrip(socks, target.port, b"fresh") == b"fresh"
        assert target.connections == 2 and target.first_bytes[:2] == [b"E", b"E"]
        proxy.close()
    finally:
        target.close()


@pytest.mark.parametrize("path", ["", "/socket/"], ids=["url-query-auth", "binary-auth"])
def test_hatchway_server_go19_client(eng, procs, peer19, target, path):
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    go_client(procs, peer19, f"ws://127.0.0.1:{ws_port}{path}", "tok", socks)
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    h.echo_sha(socks, target.port, 4 * h.MiB)
