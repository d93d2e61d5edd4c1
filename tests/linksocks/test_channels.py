"""Channel behaviour hatchway <-> hatchway: prompt close, churn, slow readers, transport grace (cases 23, 28, 29, 44).

Server and client run in an engine thread; the test drives blocking sockets.
"""

import hashlib
import os
import socket
import statistics
import struct
import threading
import time

import ls_harness as h
import pytest

from hatchway.linksocks import Client, Server
from hatchway.linksocks.channel import TcpChannel
from helpers import wait_until_blocking


def forward_pair(eng, server_options=None, client_options=None, via_proxy=False):
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0, **(server_options or {})))
    eng.sync(server.add_forward_token, "tok")
    ws_port = server.ws_address[1]
    proxy = h.CuttableProxy(ws_port) if via_proxy else None
    url = f"ws://127.0.0.1:{proxy.port if proxy else ws_port}"
    options = dict(socks_host="127.0.0.1", socks_port=0, reconnect_initial=0.05, reconnect_factor=1.0)
    options.update(client_options or {})
    client = eng.start(lambda: Client("tok", url=url, **options))
    eng.call(lambda: client.wait_ready(30))
    return server, client, client.socks_address[1], proxy


def test_remote_close_reaches_the_socks_client_promptly(eng, target):
    _, _, socks, _ = forward_pair(eng)
    delays = []
    for _ in range(5):
        sock, _ = h.socks_connect(socks, "127.0.0.1", target.port)
        with sock:
            started = time.monotonic()
            sock.sendall(b"C" + struct.pack("!I", 1000))
            got = b""
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                got += data
            delays.append(time.monotonic() - started)
        assert got == b"\0" * 1000
    assert statistics.median(delays) < 0.25, delays  # Go: 5.0 s


def test_churn_releases_every_channel(eng, target):
    server, client, socks, _ = forward_pair(eng)
    workers, rounds = 8, 40

    def work() -> None:
        for _ in range(rounds):
            assert h.echo_roundtrip(socks, target.port, b"0123456789abcdef") == b"0123456789abcdef"

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    wait_until_blocking(lambda: eng.sync(lambda: len(server.table) + len(client.table)) == 0, timeout=10, what="every channel to be forgotten")
    assert eng.sync(lambda: len(server.orphans)) == 0
    assert h.echo_roundtrip(socks, target.port, b"still fine") == b"still fine"


def test_slow_reader_gets_every_byte_with_bounded_buffers(eng, target):
    """No drop at 1000 queued messages: the reader is slow, the pipeline holds back (block policy)."""
    server, client, socks, _ = forward_pair(eng)
    size = 48 * h.MiB
    peak = {"socks_buffer": 0, "blocked": 0}
    stop = threading.Event()

    def sample() -> None:
        def probe():
            # each channel's relay: the Pump on the channel side, its peer Pump holds the SOCKS client's transport
            pumps = [channel.protocol.peer for channel in client.table.endpoints.values()
                     if isinstance(channel, TcpChannel) and channel.protocol is not None]
            sizes = [p.transport.get_write_buffer_size() for p in pumps if p is not None and p.transport is not None]
            gates = [link.gate.blocked for link in client.links]
            return max(sizes, default=0), any(gates)

        while not stop.is_set():
            buffered, blocked = eng.sync(probe)
            peak["socks_buffer"] = max(peak["socks_buffer"], buffered)
            peak["blocked"] += blocked
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=120)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"D" + struct.pack("!Q", size))
        import hashlib

        digest, count = hashlib.sha256(), 0
        while count < size:
            data = sock.recv(65536)
            if not data:
                break
            digest.update(data)
            count += len(data)
            if count < 16 * h.MiB:
                time.sleep(0.001)  # a slow reader for the first part
    finally:
        sock.close()
        stop.set()
        sampler.join(10)
    assert count == size and digest.hexdigest() == h.expected_download(size)
    assert peak["blocked"] > 0, "the reader was never slow enough to hold the link"
    assert peak["socks_buffer"] <= 3 * h.MiB, peak


@pytest.mark.parametrize("grace", [30.0, 0.0], ids=["grace", "no-grace"])
def test_websocket_drop_mid_transfer(eng, target, grace):
    """Case 44: cut the WebSocket (not the processes) between two halves of a transfer."""
    _, client, socks, proxy = forward_pair(eng, client_options={"transport_grace": grace}, via_proxy=True)
    try:
        sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=30)
        with sock:
            sock.sendall(b"E")
            first = bytes(range(256)) * 4096  # 1 MiB
            sock.sendall(first)
            assert h._recv_exact(sock, len(first)) == first
            proxy.cut()
            wait_until_blocking(lambda: proxy.accepted >= 2 and eng.sync(lambda: len(client.links)) == 1, timeout=20, what="the client to reconnect")
            second = bytes(reversed(first))
            if grace:
                sock.sendall(second)
                assert h._recv_exact(sock, len(second)) == second
            else:
                try:
                    sock.sendall(second)
                    assert sock.recv(1) == b""
                except ConnectionError:
                    pass
    finally:
        proxy.close()


def start_agent(eng, cut: str):
    """Server + provider + connector (agent mode); the ``cut`` side dials through a CuttableProxy."""
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    eng.sync(server.add_reverse_token, "rtok", port=h.free_port())
    eng.sync(server.add_connector_token, "ctok", "rtok")
    ws_port = server.ws_address[1]
    proxy = h.CuttableProxy(ws_port)
    direct, via_proxy = f"ws://127.0.0.1:{ws_port}", f"ws://127.0.0.1:{proxy.port}"
    fast = dict(reconnect_initial=0.05, reconnect_factor=1.0)
    provider_url = via_proxy + "/socket/" if cut == "provider" else direct  # binary auth on the cut link
    connector_url = via_proxy if cut == "connector" else direct
    provider = eng.start(lambda: Client("rtok", url=provider_url, reverse=True, **fast))
    eng.call(lambda: provider.wait_ready(30))
    connector = eng.start(lambda: Client("ctok", url=connector_url, socks_host="127.0.0.1", socks_port=0, **fast))
    eng.call(lambda: connector.wait_ready(30))
    return proxy, provider, connector


def test_agent_channel_survives_a_provider_reconnect(eng, target):
    """Case 40: the provider's WebSocket drops; the server re-sends Connect with Resume = 1 to it."""
    proxy, provider, connector = start_agent(eng, cut="provider")
    try:
        sock, _ = h.socks_connect(connector.socks_address[1], "127.0.0.1", target.port)
        with sock:
            sock.sendall(b"Ebefore")
            assert h._recv_exact(sock, 6) == b"before"
            proxy.cut()
            wait_until_blocking(lambda: proxy.accepted >= 2 and eng.sync(lambda: len(provider.links)) == 1, timeout=20, what="the provider to reconnect")
            sock.sendall(b"after")
            assert h._recv_exact(sock, 5) == b"after"
        assert provider.target_dialer.dials == 1
    finally:
        proxy.close()


def test_agent_channel_survives_a_connector_reconnect(eng, target):
    """The connector's WebSocket drops; it resumes its channel, the server re-attaches the binding."""
    proxy, provider, connector = start_agent(eng, cut="connector")
    try:
        sock, _ = h.socks_connect(connector.socks_address[1], "127.0.0.1", target.port)
        with sock:
            sock.sendall(b"Ebefore")
            assert h._recv_exact(sock, 6) == b"before"
            proxy.cut()
            sock.sendall(b"during")  # held by the suspended channel, sent after the Resume
            wait_until_blocking(lambda: proxy.accepted >= 2 and eng.sync(lambda: len(connector.links)) == 1, timeout=20, what="the connector to reconnect")
            assert h._recv_exact(sock, 6) == b"during"
            sock.sendall(b"after")
            assert h._recv_exact(sock, 5) == b"after"
        assert provider.target_dialer.dials == 1
    finally:
        proxy.close()


def _stalled_reader_cannot_freeze_the_others(socks: int, target_port: int) -> None:
    stalled, _ = h.socks_connect(socks, "127.0.0.1", target_port, timeout=60)
    with stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stalled.sendall(b"D" + struct.pack("!Q", 512 * h.MiB))  # and never read it
        h._recv_exact(stalled, 1)
        started = time.monotonic()
        # the other connection on the same WebSocket keeps working: at the latest after the stall timeout
        assert h.echo_roundtrip(socks, target_port, b"not frozen") == b"not frozen"
        assert time.monotonic() - started < 10, "the other connection waited for the stalled one"
        h.expect_reset(stalled, timeout=30)  # the stalled one was reset, not cut with a clean EOF


def test_a_stalled_reader_is_reset_and_the_others_go_on_forward(eng, target):
    """#6 item 5, forward mode: the client's link read loop is held by the stalled reader; stall timeout 1 s."""
    _, _, socks, _ = forward_pair(eng, client_options={"stall_timeout": 1.0})
    _stalled_reader_cannot_freeze_the_others(socks, target.port)


def test_a_stalled_reader_is_reset_and_the_others_go_on_reverse(eng, target):
    """#6 item 5, reverse mode: the server's provider link is held; stall timeout 1 s."""
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0, stall_timeout=1.0))
    socks_port = h.free_port()
    eng.sync(server.add_reverse_token, "rtok", port=socks_port)
    provider = eng.start(lambda: Client("rtok", url=f"ws://127.0.0.1:{server.ws_address[1]}", reverse=True))
    eng.call(lambda: provider.wait_ready(30))
    h.wait_port(socks_port)
    _stalled_reader_cannot_freeze_the_others(socks_port, target.port)


def test_a_destination_refused_by_the_servers_dial_rules_gets_reply_0x02(eng, target):
    """#6 item 16: forward mode, hatchway client and server: 0x02 (not allowed), not 0x04."""
    from hatchway.linksocks.access import AccessRules, parse_rule_flag

    server, _, socks, _ = forward_pair(eng)
    eng.sync(setattr, server, "dial_rules", AccessRules([parse_rule_flag(f"127.0.0.1:{target.port}")]))
    assert h.echo_roundtrip(socks, target.port, b"allowed") == b"allowed"
    with pytest.raises(h.SocksError) as refused:
        h.socks_connect(socks, "127.0.0.1", target.udp_port)
    assert refused.value.reply == 0x02


def _udp_refused(eng, owner) -> int:
    from hatchway.linksocks.udp import UdpDial

    return eng.sync(lambda: sum(e.refused for e in owner.table.endpoints.values() if isinstance(e, UdpDial)))


def _udp_rules_apply(eng, socks: int, dialer_owner, target) -> None:
    control, relay = h.udp_associate(socks)
    with control, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        # refused: the rule names another port; the dialer drops the datagram and counts it
        packet = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", target.udp_port) + b"no"
        udp.sendto(packet, relay)
        wait_until_blocking(lambda: _udp_refused(eng, dialer_owner) >= 1, timeout=10, what="the datagram to be refused")
        # a name is checked against the addresses it resolves to: localhost -> 127.0.0.1, refused as well
        by_name = b"\x00\x00\x00\x03\x09localhost" + struct.pack("!H", target.udp_port) + b"no"
        udp.sendto(by_name, relay)
        wait_until_blocking(lambda: _udp_refused(eng, dialer_owner) >= 2, timeout=10, what="the datagram by name to be refused")


def test_server_dial_rules_apply_to_udp(eng, target):
    """#6 item 6 (a deliberate difference from Go): forward mode, the server's dial rules filter datagrams."""
    from hatchway.linksocks.access import AccessRules, parse_rule_flag

    server, _, socks, _ = forward_pair(eng)
    eng.sync(setattr, server, "dial_rules", AccessRules([parse_rule_flag(f"127.0.0.1:{target.port}")]))
    _udp_rules_apply(eng, socks, server, target)
    eng.sync(setattr, server, "dial_rules", AccessRules([parse_rule_flag(f"127.0.0.1:{target.udp_port}")]))
    control, relay = h.udp_associate(socks)
    with control:
        assert h.udp_exchange(relay, target.udp_port, b"yes") == ("127.0.0.1", target.udp_port, b"echo:yes")


def test_provider_access_rules_apply_to_udp(eng, target):
    """#6 item 6, reverse mode: a provider's --access-rule filters datagrams too."""
    server = eng.start(lambda: Server(ws_host="127.0.0.1", ws_port=0))
    socks_port = h.free_port()
    eng.sync(server.add_reverse_token, "rtok", port=socks_port)
    provider = eng.start(lambda: Client("rtok", url=f"ws://127.0.0.1:{server.ws_address[1]}", reverse=True,
                                        access_rules=[f"127.0.0.1:{target.port}"]))
    eng.call(lambda: provider.wait_ready(30))
    h.wait_port(socks_port)
    _udp_rules_apply(eng, socks_port, provider, target)


def test_half_close_keeps_the_reply_coming(eng, target):
    """#6 item 15: a client that sends, shuts down its write side and waits for the reply gets all of it."""
    _, _, socks, _ = forward_pair(eng)
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=30)
    with sock:
        payload = os.urandom(h.MiB)
        sock.sendall(b"U" + struct.pack("!Q", len(payload)) + payload)
        sock.shutdown(socket.SHUT_WR)
        assert h._recv_exact(sock, 32) == hashlib.sha256(payload).digest()



@pytest.mark.parametrize("cut", ["provider", "connector"])
def test_agent_mode_download_cut_mid_transfer_arrives_whole(eng, target, cut):
    """#6 item 3 in agent mode: the ledger runs end to end (connector <-> provider) through the server's binding."""
    proxy, provider, connector = start_agent(eng, cut=cut)
    size = 32 * h.MiB
    try:
        sock, _ = h.socks_connect(connector.socks_address[1], "127.0.0.1", target.port, timeout=60)
        with sock:
            sock.sendall(b"D" + struct.pack("!Q", size))
            digest, count, done_cut = hashlib.sha256(), 0, False
            while count < size:
                data = sock.recv(262144)
                if not data:
                    break
                digest.update(data)
                count += len(data)
                if not done_cut and count >= 6 * h.MiB:
                    done_cut = True
                    before = proxy.accepted
                    proxy.cut()
                    wait_until_blocking(lambda: proxy.accepted > before, timeout=30, what="the cut side to reconnect")
        assert count == size, f"clean EOF after {count} of {size} bytes"
        assert digest.hexdigest() == h.expected_download(size)
    finally:
        proxy.close()
