"""Reverse and agent mode against the real peers (acceptance cases 4, 35-39).

hatchway runs in an engine thread, the peers as processes (sync tests).
"""

import ls_harness as h
import pytest

from hatchway.linksocks import Client, Server
from helpers import wait_until_blocking

pytestmark = pytest.mark.interop

BIG = 64 * h.MiB


def reverse_server(eng, token="rtok", connector=None, autonomy=False, **options):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0, **options))
    socks = 0 if autonomy else h.free_port()
    token, port = eng.sync(server.add_reverse_token, token, port=socks, allow_manage_connector=autonomy)
    if connector:
        eng.sync(server.add_connector_token, connector, token)
    return server, server.ws_address[1], port


def go_provider(procs, peer, url, token, *extra, name="go-provider"):
    return procs.start(peer.linksocks("provider", "-t", token, "-u", url, "--direct-mode", "relay-only", *extra), name)


def go_connector(procs, peer, url, token, socks, *extra, name="go-connector"):
    proc = procs.start(
        peer.linksocks("connector", "-t", token, "-u", url, "-s", "127.0.0.1", "-p", str(socks),
                       "--direct-mode", "relay-only", *extra),
        name,
    )
    h.wait_port(socks, 30)
    return proc


def hatchway_provider(eng, url, token="rtok", **options):
    client = eng.start(lambda: Client(token, url=url, reverse=True, **options))
    eng.call(lambda: client.wait_ready(30))
    return client


def hatchway_connector(eng, url, token, **options):
    client = eng.start(lambda: Client(token, url=url, socks_host="127.0.0.1", socks_port=0, **options))
    eng.call(lambda: client.wait_ready(30))
    return client, client.socks_address[1]


def test_hatchway_server_go_provider_64mib(eng, procs, peer110, target):
    _, ws_port, socks = reverse_server(eng)
    go_provider(procs, peer110, f"ws://127.0.0.1:{ws_port}", "rtok")
    h.wait_port(socks, 30)  # bound when the first provider authenticates
    assert b"hello from the target" in h.socks_http_get(socks, target.port)
    h.echo_sha(socks, target.port, BIG)


def test_go_server_hatchway_provider_64mib(eng, procs, peer110, target):
    ws_port, socks = h.free_port(), h.free_port()
    procs.start(peer110.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "rtok", "-r",
                                  "-s", "127.0.0.1", "-p", str(socks), "-c", "ctok"), "go-server")
    h.wait_port(ws_port, 30)
    hatchway_provider(eng, f"ws://127.0.0.1:{ws_port}")
    h.wait_port(socks, 30)
    h.download_sha(socks, target.port, BIG)


def test_go19_server_hatchway_provider(eng, procs, peer19, target):
    ws_port, socks = h.free_port(), h.free_port()
    procs.start(peer19.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "rtok", "-r",
                                 "-s", "127.0.0.1", "-p", str(socks)), "go19-server")
    h.wait_port(ws_port, 30)
    hatchway_provider(eng, f"ws://127.0.0.1:{ws_port}/socket/")
    h.wait_port(socks, 30)
    h.echo_sha(socks, target.port, 4 * h.MiB)


def test_round_robin_hatchway_and_go_providers(eng, procs, peer110, target):
    """Case 35: connections alternate; with one provider gone all go to the other; none -> 0x03."""
    _, ws_port, socks = reverse_server(eng, provider_wait=1.0)
    url = f"ws://127.0.0.1:{ws_port}"
    ours = hatchway_provider(eng, url)
    h.wait_port(socks, 30)
    go = go_provider(procs, peer110, url, "rtok")
    wait_until_blocking(lambda: _providers(eng) == 2, timeout=30, what="two providers")
    before = ours.target_dialer.dials
    for _ in range(6):
        assert h.echo_roundtrip(socks, target.port, b"rr") == b"rr"
    assert ours.target_dialer.dials - before == 3
    go.stop()
    wait_until_blocking(lambda: _providers(eng) == 1, timeout=30, what="the Go provider to leave")
    before = ours.target_dialer.dials
    for _ in range(3):
        assert h.echo_roundtrip(socks, target.port, b"rr") == b"rr"
    assert ours.target_dialer.dials - before == 3
    eng.stop_object(ours)
    wait_until_blocking(lambda: _providers(eng) == 0, timeout=30, what="no provider")
    with pytest.raises(h.SocksError) as refused:
        h.socks_connect(socks, "127.0.0.1", target.port)
    assert refused.value.reply == 0x03


def _server(eng):
    return next(obj for obj in eng.objects if isinstance(obj, Server))


def _providers(eng):
    server = _server(eng)
    return eng.sync(lambda: sum(len(pool.links) for pool in server.pools.values()))


def test_agent_go_connector_hatchway_provider_64mib(eng, procs, peer110, target):
    _, ws_port, _ = reverse_server(eng, connector="ctok")
    url = f"ws://127.0.0.1:{ws_port}"
    hatchway_provider(eng, url)
    socks = h.free_port()
    go_connector(procs, peer110, url, "ctok", socks)
    h.echo_sha(socks, target.port, BIG)


def test_agent_hatchway_connector_go_provider(eng, procs, peer110, target):
    _, ws_port, _ = reverse_server(eng, connector="ctok")
    url = f"ws://127.0.0.1:{ws_port}"
    go_provider(procs, peer110, url, "rtok")
    wait_until_blocking(lambda: _providers(eng) == 1, timeout=30, what="the Go provider")
    connector, socks = hatchway_connector(eng, url, "ctok")
    wait_until_blocking(lambda: connector.partners == 1, timeout=10, what="Partners count 1")
    h.upload_sha(socks, target.port, 16 * h.MiB)


def test_agent_without_provider_fails_fast(eng, procs, peer110, target):
    _, ws_port, _ = reverse_server(eng, connector="ctok", connector_wait=0.5)
    socks = h.free_port()
    go_connector(procs, peer110, f"ws://127.0.0.1:{ws_port}", "ctok", socks)
    with pytest.raises(h.SocksError) as refused:
        h.socks_connect(socks, "127.0.0.1", target.port)
    assert refused.value.reply in (0x01, 0x04, 0x05)


def test_autonomy_go_provider_adds_connector_token(eng, procs, peer110, target):
    """Case 39 with Go's provider: -c TOKEN is added through Connector{add}; a connector uses it."""
    _, ws_port, port = reverse_server(eng, autonomy=True)
    assert port == -1
    url = f"ws://127.0.0.1:{ws_port}"
    go_provider(procs, peer110, url, "rtok", "-c", "mine")
    server = _server(eng)
    wait_until_blocking(lambda: eng.sync(lambda: server.tokens.get("mine") is not None), timeout=30, what="connector token 'mine'")
    _, socks = hatchway_connector(eng, url, "mine")
    assert h.echo_roundtrip(socks, target.port, b"agent") == b"agent"


def test_go_server_autonomy_hatchway_provider_adds_connector(eng, procs, peer110, target):
    ws_port = h.free_port()
    procs.start(peer110.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "rtok", "-r", "-a"),
                "go-server")
    h.wait_port(ws_port, 30)
    url = f"ws://127.0.0.1:{ws_port}"
    provider = hatchway_provider(eng, url, connector_token="ours")
    wait_until_blocking(lambda: "ours" in provider.connector_tokens, timeout=10, what="token remembered")
    socks = h.free_port()
    go_connector(procs, peer110, url, "ours", socks)
    h.echo_sha(socks, target.port, 2 * h.MiB)
    generated = eng.call(lambda: provider.add_connector())
    assert len(generated) == 16


def test_pywssocks_reverse_both_ways(eng, procs, peer110, target):
    # hatchway server, pywssocks provider
    _, ws_port, socks = reverse_server(eng)
    procs.start(peer110.pywssocks("client", "-t", "rtok", "-u", f"ws://127.0.0.1:{ws_port}", "-r"), "pyws-provider")
    h.wait_port(socks, 30)
    assert h.echo_roundtrip(socks, target.port, b"pyws") == b"pyws"
    # pywssocks server, hatchway provider
    ws2, socks2 = h.free_port(), h.free_port()
    procs.start(peer110.pywssocks("server", "-H", "127.0.0.1", "-P", str(ws2), "-t", "rtok2", "-r",
                                  "-h", "127.0.0.1", "-p", str(socks2)), "pyws-server")
    h.wait_port(ws2, 30)
    hatchway_provider(eng, f"ws://127.0.0.1:{ws2}", token="rtok2")
    wait_until_blocking(lambda: _socks_works(socks2, target.port), timeout=30, what="pywssocks SOCKS port served by hatchway")
    h.echo_sha(socks2, target.port, 2 * h.MiB)


def _socks_works(socks, port):
    try:
        return h.echo_roundtrip(socks, port, b"ok", timeout=5) == b"ok"
    except (OSError, h.SocksError):
        return False


def test_go_provider_with_several_websockets(eng, procs, peer110, target):
    """A Go provider with -T 3 is three pool entries; its replies for a channel may come on any of them."""
    _, ws_port, socks = reverse_server(eng)
    go_provider(procs, peer110, f"ws://127.0.0.1:{ws_port}", "rtok", "-T", "3")
    wait_until_blocking(lambda: _providers(eng) == 3, timeout=30, what="three provider WebSockets")
    h.download_sha(socks, target.port, 16 * h.MiB)
    for _ in range(3):
        assert h.echo_roundtrip(socks, target.port, b"spread") == b"spread"


def test_go19_provider_and_connector_on_hatchway_server(eng, procs, peer19, target):
    _, ws_port, socks = reverse_server(eng, connector="ctok")
    url = f"ws://127.0.0.1:{ws_port}"
    go_provider(procs, peer19, url, "rtok")
    h.wait_port(socks, 30)
    assert h.echo_roundtrip(socks, target.port, b"reverse19") == b"reverse19"
    connector_socks = h.free_port()
    go_connector(procs, peer19, url, "ctok", connector_socks)
    h.echo_sha(connector_socks, target.port, 4 * h.MiB)
