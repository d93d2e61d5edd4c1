"""UDP, SOCKS5 auth, fast open, upstream proxy and the HTTP proxy, against the real peers."""

import socket

import ls_harness as h
import pytest

from hatchway.linksocks import Client, Server

pytestmark = pytest.mark.interop


def hatchway_server(eng, token="tok", **options):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0, **options))
    eng.sync(server.add_forward_token, token)
    return server, server.ws_address[1]


def hatchway_client(eng, url, token="tok", **options):
    client = eng.start(lambda: Client(token, url=url, socks_host="127.0.0.1", socks_port=0, **options))
    eng.call(lambda: client.wait_ready(30))
    return client, client.socks_address[1]


def go_client(procs, peer, url, socks, *extra):
    proc = procs.start(peer.linksocks("client", "-t", "tok", "-u", url, "-s", "127.0.0.1", "-p", str(socks),
                                      "--direct-mode", "relay-only", *extra), "go-client")
    h.wait_port(socks, 30)
    return proc


def go_server(procs, peer, *extra):
    ws_port = h.free_port()
    procs.start(peer.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok", *extra), "go-server")
    h.wait_port(ws_port, 30)
    return ws_port


def test_udp_hatchway_server_go_client(eng, procs, peer110, target):
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}", socks)
    control, relay = h.udp_associate(socks)
    with control:
        host, port, data = h.udp_exchange(relay, target.udp_port, b"datagram-1")
    assert (host, port, data) == ("127.0.0.1", target.udp_port, b"echo:datagram-1")


@pytest.mark.parametrize("peer_name", ["peer110", "peer19"])
def test_udp_go_server_hatchway_client(eng, procs, request, target, peer_name):
    ws_port = go_server(procs, request.getfixturevalue(peer_name))
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}")
    control, relay = h.udp_associate(socks)
    assert relay[0] == "127.0.0.1"
    with control:
        for n in range(3):
            host, port, data = h.udp_exchange(relay, target.udp_port, b"d%d" % n)
            assert (host, port, data) == ("127.0.0.1", target.udp_port, b"echo:d%d" % n)


def test_socks_auth_on_hatchway_client(eng, procs, peer110, target):
    ws_port = go_server(procs, peer110)
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}", socks_username="u", socks_password="p")
    with pytest.raises(h.SocksError) as no_auth:
        h.socks_connect(socks, "127.0.0.1", target.port)
    assert no_auth.value.reply == 0xFF
    with pytest.raises(h.SocksError):
        h.socks_connect(socks, "127.0.0.1", target.port, username="u", password="wrong")
    assert h.echo_roundtrip(socks, target.port, b"auth", username="u", password="p") == b"auth"


def test_socks_auth_on_reverse_token_go_provider(eng, procs, peer110, target):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    socks = h.free_port()
    eng.sync(server.add_reverse_token, "rtok", port=socks, username="u", password="p")
    procs.start(peer110.linksocks("provider", "-t", "rtok", "-u", f"ws://127.0.0.1:{server.ws_address[1]}",
                                  "--direct-mode", "relay-only"), "go-provider")
    h.wait_port(socks, 30)
    with pytest.raises(h.SocksError):
        h.socks_connect(socks, "127.0.0.1", target.port)
    assert h.echo_roundtrip(socks, target.port, b"auth", username="u", password="p") == b"auth"


def test_fast_open_hatchway_client_go_server(eng, procs, peer110, target):
    ws_port = go_server(procs, peer110)
    client, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}", fast_open=True)
    h.echo_sha(socks, target.port, 8 * h.MiB)
    # a failing dial still tears the channel down (the SOCKS client was told "success" already): a reset
    sock, _ = h.socks_connect(socks, "127.0.0.1", h.free_port())
    with sock:
        h.expect_reset(sock)


def test_fast_open_go_client_hatchway_server(eng, procs, peer110, target):
    """Data right behind Connect (and, with -T 2, possibly before it on another WebSocket)."""
    _, ws_port = hatchway_server(eng)
    socks = h.free_port()
    go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}", socks, "-f", "-T", "2")
    for _ in range(5):
        assert h.echo_roundtrip(socks, target.port, b"fast" * 1000) == b"fast" * 1000
    h.echo_sha(socks, target.port, 8 * h.MiB)


@pytest.mark.parametrize("scheme", ["socks5", "http"])
def test_upstream_proxy_hatchway_server(eng, procs, peer110, target, scheme):
    upstream = h.UpstreamProxy(("pu", "pp"))
    try:
        _, ws_port = hatchway_server(eng, upstream_proxy=f"{scheme}://pu:pp@127.0.0.1:{upstream.port}")
        socks = h.free_port()
        go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}", socks)
        h.echo_sha(socks, target.port, 2 * h.MiB)
        assert ("127.0.0.1", target.port) in upstream.served
    finally:
        upstream.close()


def test_upstream_proxy_hatchway_provider(eng, procs, peer110, target):
    upstream = h.UpstreamProxy()
    try:
        ws_port, socks = h.free_port(), h.free_port()
        procs.start(peer110.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "rtok", "-r",
                                      "-s", "127.0.0.1", "-p", str(socks)), "go-server")
        h.wait_port(ws_port, 30)
        provider = eng.start(lambda: Client("rtok", url=f"ws://127.0.0.1:{ws_port}", reverse=True,
                                            upstream_proxy=f"socks5://127.0.0.1:{upstream.port}"))
        eng.call(lambda: provider.wait_ready(30))
        h.wait_port(socks, 30)
        h.download_sha(socks, target.port, 2 * h.MiB)
        assert ("127.0.0.1", target.port) in upstream.served
    finally:
        upstream.close()


def test_http_proxy_on_the_socks_port(eng, procs, peer110, target):
    ws_port = go_server(procs, peer110)
    _, socks = hatchway_client(eng, f"ws://127.0.0.1:{ws_port}")
    with socket.create_connection(("127.0.0.1", socks), timeout=10) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(b"Eproxy")
        assert h._recv_exact(sock, 5) == b"proxy"
    with socket.create_connection(("127.0.0.1", socks), timeout=10) as sock:
        sock.sendall(f"GET http://127.0.0.1:{target.port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert b"hello from the target" in h.read_http_response(sock)


def test_dial_rules_on_the_forward_server(eng, procs, peer110, target):
    from hatchway.linksocks.access import AccessRules, parse_rule_flag

    server, ws_port = hatchway_server(eng)
    eng.sync(setattr, server, "dial_rules", AccessRules([parse_rule_flag(f"127.0.0.1:{target.port}")]))
    socks = h.free_port()
    go_client(procs, peer110, f"ws://127.0.0.1:{ws_port}", socks)
    assert h.echo_roundtrip(socks, target.port, b"allowed") == b"allowed"
    with pytest.raises(h.SocksError):
        h.socks_connect(socks, "127.0.0.1", target.udp_port)  # another port: refused by the server
    assert eng.sync(lambda: server.target_dialer.dials) == 1


def test_entry_rules_on_the_reverse_socks_port(eng, procs, peer110, target):
    from hatchway.linksocks.access import AccessRules, parse_rule_flag

    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    socks = h.free_port()
    eng.sync(server.add_reverse_token, "rtok", port=socks)
    eng.sync(setattr, server, "entry_rules", AccessRules([parse_rule_flag("10.0.0.0/8:*")]))
    procs.start(peer110.linksocks("provider", "-t", "rtok", "-u", f"ws://127.0.0.1:{server.ws_address[1]}",
                                  "--direct-mode", "relay-only"), "go-provider")
    h.wait_port(socks, 30)
    with pytest.raises(h.SocksError) as blocked:
        h.socks_connect(socks, "127.0.0.1", target.port)
    assert blocked.value.reply == 0x02


def test_dial_rules_on_a_hatchway_provider(eng, procs, peer110, target):
    ws_port, socks = h.free_port(), h.free_port()
    procs.start(peer110.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "rtok", "-r",
                                  "-s", "127.0.0.1", "-p", str(socks)), "go-server")
    h.wait_port(ws_port, 30)
    provider = eng.start(lambda: Client("rtok", url=f"ws://127.0.0.1:{ws_port}", reverse=True,
                                        access_rules=[f"127.0.0.1:{target.port}"]))
    eng.call(lambda: provider.wait_ready(30))
    h.wait_port(socks, 30)
    assert h.echo_roundtrip(socks, target.port, b"ok") == b"ok"
    with pytest.raises(h.SocksError):
        h.socks_connect(socks, "127.0.0.1", target.udp_port)
    assert provider.target_dialer.dials == 1


def test_udp_in_reverse_mode_both_ways(eng, procs, peer110, target):
    # hatchway server (SOCKS + UDP relay), Go provider (dials)
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    socks = h.free_port()
    eng.sync(server.add_reverse_token, "rtok", port=socks)
    procs.start(peer110.linksocks("provider", "-t", "rtok", "-u", f"ws://127.0.0.1:{server.ws_address[1]}",
                                  "--direct-mode", "relay-only"), "go-provider")
    h.wait_port(socks, 30)
    control, relay = h.udp_associate(socks)
    with control:
        assert h.udp_exchange(relay, target.udp_port, b"r1") == ("127.0.0.1", target.udp_port, b"echo:r1")
    # Go server (SOCKS + UDP relay), hatchway provider (dials)
    ws_port, socks2 = h.free_port(), h.free_port()
    procs.start(peer110.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "rtok2", "-r",
                                  "-s", "127.0.0.1", "-p", str(socks2)), "go-server")
    h.wait_port(ws_port, 30)
    provider = eng.start(lambda: Client("rtok2", url=f"ws://127.0.0.1:{ws_port}", reverse=True))
    eng.call(lambda: provider.wait_ready(30))
    h.wait_port(socks2, 30)
    control, relay = h.udp_associate(socks2)
    with control:
        assert h.udp_exchange(relay, target.udp_port, b"r2") == ("127.0.0.1", target.udp_port, b"echo:r2")
