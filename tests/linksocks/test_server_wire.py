"""hatchway's server at the wire: versions, unknown types, auth, Resume, orphans, gzip (cases 8-26, 46).

A scripted peer (rawpeer.RawPeer) talks to a Server running in the test's loop.
"""

import asyncio
import gzip
import struct
import uuid

import aiohttp
import pytest
from rawpeer import RawPeer

from hatchway.linksocks import Server, protocol
from hatchway.linksocks.channel_table import CHANNEL_EXPIRED
from hatchway.linksocks.mux import UNPROVABLE
from hatchway.linksocks.protocol import (
    AuthResponse,
    Connect,
    Connector,
    ConnectorResponse,
    ConnectResponse,
    Data,
    Disconnect,
    Log,
    Partners,
)
from helpers import wait_until


@pytest.fixture
async def server():
    srv = Server(ws_host="127.0.0.1", ws_port=0, read_timeout=60, ping_interval=30)
    await srv.start()
    srv.add_forward_token("ftok")
    yield srv
    await srv.close()


def url(srv, path="/socket"):
    return f"ws://127.0.0.1:{srv.ws_address[1]}{path}"


async def forward_peer(srv, **kw):
    peer = await RawPeer.connect(url(srv), token="ftok", **kw)
    response = await peer.recv()
    assert response == AuthResponse(True)
    return peer


async def open_channel(peer, target, version=protocol.VERSION_DEFAULT):
    channel_id = protocol.new_channel_id()
    await peer.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port), version)
    assert await peer.recv_type(ConnectResponse) == ConnectResponse(True, channel_id)
    return channel_id


async def echo(peer, channel_id, payload, version=protocol.VERSION_DEFAULT):
    await peer.send(Data(protocol.TCP, channel_id, b"E" + payload), version)
    got = b""
    while len(got) < len(payload):
        message = await peer.recv_type(Data)
        assert message.channel_id == channel_id
        got += bytes(protocol.data_payload(message))
    return got


@pytest.mark.parametrize("version", [0x01, 0x02, 0x0F])
async def test_any_minor_version_is_accepted(server, target, version):
    peer = await forward_peer(server)
    channel_id = await open_channel(peer, target, version)
    assert await echo(peer, channel_id, b"v", version) == b"v"
    await peer.close()


@pytest.mark.parametrize("version", [0x11, 0x21])
async def test_other_major_version_drops_the_connection(server, version):
    peer = await forward_peer(server)
    await peer.send(Connect(protocol.TCP, protocol.new_channel_id(), "127.0.0.1", 1), version)
    assert await peer.closed(5)
    await peer.close()


async def test_sends_version_01_by_default_and_02_when_configured(target):
    for configured in (None, 0x02):
        options = {} if configured is None else {"wire_version": configured}
        srv = Server(ws_host="127.0.0.1", ws_port=0, **options)
        await srv.start()
        srv.add_forward_token("ftok")
        peer = await RawPeer.connect(url(srv), token="ftok")
        raw = await peer.recv_raw()
        assert raw[0] == (configured or 0x01)
        channel_id = protocol.new_channel_id()
        await peer.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port))
        assert (await peer.recv_raw())[0] == (configured or 0x01)
        await peer.close()
        await srv.close()


async def test_unknown_type_and_hello_log_are_ignored(server, target):
    peer = await forward_peer(server)
    await peer.send_raw(b"\x01\x7fwhatever")
    await peer.send(Log("debug", "linksocks_client_hello:direct_signaling=1;protocol_version=0x02"))
    await peer.send_raw(b"\x02\x0b" + struct.pack("!I", 2) + b"{}")  # a direct-mode message
    channel_id = await open_channel(peer, target)
    assert await echo(peer, channel_id, b"after") == b"after"
    await peer.close()


async def test_sequence_trailer_and_trailing_bytes(server, target):
    peer = await forward_peer(server)
    channel_id = await open_channel(peer, target)
    await peer.send(Data(protocol.TCP, channel_id, b"E", sequence=7))
    await peer.send_raw(protocol.encode(Data(protocol.TCP, channel_id, b"seq", sequence=8)) + b"junk")
    got = b""
    while len(got) < 3:
        got += bytes((await peer.recv_type(Data)).data)
    assert got == b"seq"
    await peer.close()


async def test_gzip_data_is_gunzipped_and_capped(server, target):
    peer = await forward_peer(server)
    channel_id = await open_channel(peer, target)
    await peer.send(Data(protocol.TCP, channel_id, gzip.compress(b"E" + b"z" * 100000), compression=1))
    got = b""
    while len(got) < 100000:
        message = await peer.recv_type(Data)
        assert message.compression == 0  # hatchway never compresses
        got += bytes(message.data)
    assert got == b"z" * 100000
    bomb = gzip.compress(b"\0" * (33 * 1024 * 1024))
    await peer.send(Data(protocol.TCP, channel_id, bomb, compression=1))
    reset = await peer.recv_type(Disconnect)
    assert reset.channel_id == channel_id and "exceeds" in (reset.error or "")
    other = await open_channel(peer, target)  # the link itself is fine
    assert await echo(peer, other, b"ok") == b"ok"
    await peer.close()


async def test_long_dial_error_is_truncated(server):
    peer = await forward_peer(server)
    channel_id = protocol.new_channel_id()
    host = ("a" * 60 + ".") * 4 + "invalid"
    await peer.send(Connect(protocol.TCP, channel_id, host, 80))
    raw = await peer.recv_raw(20)
    response = protocol.decode(raw)[1]
    assert isinstance(response, ConnectResponse) and not response.success
    assert 0 < len(response.error.encode()) <= 255
    await peer.close()


async def test_close_carries_eof_and_no_half_close(server, target):
    peer = await forward_peer(server)
    channel_id = protocol.new_channel_id()
    await peer.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port))
    await peer.recv_type(ConnectResponse)
    await peer.send(Data(protocol.TCP, channel_id, b"C" + struct.pack("!I", 1000)))
    got = b""
    while True:
        message = await peer.recv()
        if isinstance(message, Data):
            got += bytes(message.data)
        elif isinstance(message, Disconnect):
            assert message.error == "EOF"
            break
    assert got == b"\0" * 1000
    await peer.close()


async def test_resume_unknown_channel_is_refused_without_dialing(server, target):
    peer = await forward_peer(server)
    before = target.connections
    channel_id = protocol.new_channel_id()
    await peer.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port, resume=True))
    answer = await peer.recv_type(Disconnect)
    assert answer.channel_id == channel_id
    # a fresh channel on the same WebSocket, end to end: a dial for the Resume, had one been started
    # before it, would have reached the target before this one
    fresh = await open_channel(peer, target)
    assert await echo(peer, fresh, b"ok") == b"ok"
    assert target.connections == before + 1 and server.target_dialer.dials == 1
    await peer.close()


async def test_resume_live_channel_reattaches_without_a_second_dial(server, target):
    """A requester with the byte ledger (Connect carries its count) resumes exactly, without a second dial."""
    instance = uuid.uuid4().bytes
    first = await forward_peer(server, instance=instance)
    channel_id = protocol.new_channel_id()
    await first.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port, received=0))
    assert await first.recv_type(ConnectResponse) == ConnectResponse(True, channel_id, received=0)
    assert await echo(first, channel_id, b"one") == b"one"
    await first.ws.close()
    await first.session.close()
    second = await forward_peer(server, instance=instance)
    await second.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port, resume=True, received=3))
    assert await second.recv_type(ConnectResponse) == ConnectResponse(True, channel_id, received=4)
    await second.send(Data(protocol.TCP, channel_id, b"two", sequence=7))
    got = b""
    while len(got) < 3:
        got += bytes((await second.recv_type(Data)).data)
    assert got == b"two" and server.target_dialer.dials == 1
    await second.close()


async def test_cut_of_a_channel_without_ledger_is_reset_and_never_resumed(server, target):
    """#6 item 3: an upstream requester (no ledger) cannot prove what was in flight; its next link is told."""
    instance = uuid.uuid4().bytes
    first = await forward_peer(server, instance=instance)
    channel_id = await open_channel(first, target)
    assert await echo(first, channel_id, b"one") == b"one"
    await first.ws.close()
    await first.session.close()
    second = await forward_peer(server, instance=instance)
    assert await second.recv_type(Disconnect) == Disconnect(channel_id, UNPROVABLE)
    await second.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port, resume=True))
    assert await second.recv_type(Disconnect) == Disconnect(channel_id, CHANNEL_EXPIRED)
    assert server.target_dialer.dials == 1
    await second.close()


async def test_data_before_connect_is_replayed(server, target):
    peer = await forward_peer(server)
    channel_id = protocol.new_channel_id()
    await peer.send(Data(protocol.TCP, channel_id, b"E"))
    await peer.send(Data(protocol.TCP, channel_id, b"early"))  # one WebSocket: these arrive before the Connect
    await peer.send(Connect(protocol.TCP, channel_id, "127.0.0.1", target.port))
    assert (await peer.recv_type(ConnectResponse)).success
    got = b""
    while len(got) < 5:
        got += bytes((await peer.recv_type(Data)).data)
    assert got == b"early"
    await peer.close()


async def test_udp_data_fields_on_the_wire(server, target):
    peer = await forward_peer(server)
    channel_id = protocol.new_channel_id()
    await peer.send(Connect(protocol.UDP, channel_id))
    assert (await peer.recv_type(ConnectResponse)).success
    await peer.send(Data(protocol.UDP, channel_id, b"u", target_address="127.0.0.1", target_port=target.udp_port))
    reply = await peer.recv_type(Data)
    assert reply.protocol == protocol.UDP and bytes(reply.data) == b"echo:u"
    assert (reply.address, reply.port) == ("127.0.0.1", target.udp_port)
    assert (reply.target_address, reply.target_port) == ("", 0)
    await peer.close()


# ------------------------------------------------------------------ authentication


async def test_url_query_auth_errors(server):
    short = await RawPeer.connect(url(server), extra_query={"token": "abc"})
    assert await short.recv() == AuthResponse(False, "invalid token format")
    assert await short.closed()
    await short.close()
    wrong_role = await RawPeer.connect(url(server), token="ftok", reverse=True)
    assert await wrong_role.recv() == AuthResponse(False, "invalid token")
    assert await wrong_role.closed()
    await wrong_role.close()


async def test_binary_auth(server):
    ok = await RawPeer.connect(url(server, "/socket/"), token="ftok", query=False)
    assert await ok.recv() == AuthResponse(True)
    await ok.close()
    bad = await RawPeer.connect(url(server, "/socket/x"))
    await bad.send(Connect(protocol.TCP, protocol.new_channel_id(), "h", 1))
    assert await bad.recv() == AuthResponse(False, "invalid auth message")
    assert await bad.closed()
    await bad.close()


async def test_connector_of_a_deleted_reverse_token_is_refused(server):
    server.add_reverse_token("rtok", port=0)
    server.add_connector_token("ctok", "rtok")
    server.remove_token("rtok")
    peer = await RawPeer.connect(url(server), token="ctok")
    assert await peer.recv() == AuthResponse(False, "invalid token")
    await peer.close()


# ------------------------------------------------------------------ HTTP endpoints


async def test_banner_404_and_socket_subpaths(server):
    base = f"http://127.0.0.1:{server.ws_address[1]}"
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/") as response:
            assert response.status == 200
            text = await response.text()
            assert text.startswith("LinkSocks ") and "is running" in text and "/api/" not in text
        async with session.get(base + "/nothing") as response:
            assert response.status == 404
    peer = await RawPeer.connect(url(server, "/socket/any/thing"), token="ftok", query=False)
    assert await peer.recv() == AuthResponse(True)
    await peer.close()


async def test_permessage_deflate_is_declined(server):
    peer = await RawPeer.connect(url(server), token="ftok", compress=15)
    assert peer.ws.compress == 0
    assert await peer.recv() == AuthResponse(True)
    await peer.close()


async def test_client_ip_from_headers(server, caplog):
    caplog.set_level("INFO", logger="hatchway.linksocks.server")
    for headers, expected in (({"CF-Connecting-IP": "10.1.1.1", "X-Forwarded-For": "10.2.2.2"}, "10.1.1.1"),
                              ({"X-Forwarded-For": "10.3.3.3, 10.4.4.4"}, "10.3.3.3")):
        peer = await RawPeer.connect(url(server), token="ftok", headers=headers)
        await peer.recv()
        await peer.close()
        assert any(f"from {expected}" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ keepalive


async def test_server_pings_and_a_pong_keeps_the_link_up():
    srv = Server(ws_host="127.0.0.1", ws_port=0, ping_interval=0.2, read_timeout=1.0)
    await srv.start()
    srv.add_forward_token("ftok")
    peer = await RawPeer.connect(url(srv), token="ftok")
    await peer.recv()
    assert not await peer.closed(2.5)  # answering pings for 2.5 s > the 1 s read deadline
    assert peer.pings >= 5
    await peer.close()
    await srv.close()


async def test_server_drops_a_peer_that_sends_nothing():
    srv = Server(ws_host="127.0.0.1", ws_port=0, ping_interval=0.2, read_timeout=1.0)
    await srv.start()
    srv.add_forward_token("ftok")
    peer = await RawPeer.connect(url(srv), token="ftok")
    await peer.recv()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(1.5)  # not reading: pings stay unanswered
    assert await peer.closed(5)
    assert loop.time() - started < 5
    await peer.close()
    await srv.close()


# ------------------------------------------------------------------ reverse, partners, autonomy


async def test_partners_counts_for_connectors_and_providers(server):
    server.add_reverse_token("rtok", port=0)
    server.add_connector_token("ctok", "rtok")
    connector = await RawPeer.connect(url(server), token="ctok")
    assert await connector.recv() == AuthResponse(True)
    assert await connector.recv() == Partners(0)
    provider = await RawPeer.connect(url(server), token="rtok", reverse=True)
    assert await provider.recv() == AuthResponse(True)
    assert await provider.recv_type(Partners) == Partners(1)  # one connector uses this pool
    assert await connector.recv_type(Partners) == Partners(1)  # one provider joined
    second = await RawPeer.connect(url(server), token="ctok")
    assert await second.recv() == AuthResponse(True)
    assert await second.recv() == Partners(1)
    assert await provider.recv_type(Partners) == Partners(2)
    await provider.close()
    assert await connector.recv_type(Partners) == Partners(0)
    await second.close()
    await connector.close()


async def test_connector_counts_only_its_own_pool(server):
    server.add_reverse_token("r1", port=0)
    server.add_reverse_token("r2", port=0)
    server.add_connector_token("c1", "r1")
    provider2 = await RawPeer.connect(url(server), token="r2", reverse=True)
    await provider2.recv()
    connector = await RawPeer.connect(url(server), token="c1")
    await connector.recv()
    assert await connector.recv() == Partners(0)  # r2's provider is not ours (upstream counts all)
    await connector.close()
    await provider2.close()


async def test_autonomy_connector_management(server):
    server.add_reverse_token("auto", allow_manage_connector=True)
    server.add_reverse_token("plain", port=0)
    first = await RawPeer.connect(url(server, "/socket/"), token="auto", reverse=True, query=False)
    assert await first.recv() == AuthResponse(True)
    request = protocol.new_channel_id()
    await first.send(Connector(request, "", protocol.ADD))
    added = await first.recv_type(ConnectorResponse)
    assert added.channel_id == request and added.success and len(added.token) == 16
    second = await RawPeer.connect(url(server, "/socket/"), token="auto", reverse=True, query=False)
    await second.recv()
    await second.send(Connector(request, added.token, protocol.REMOVE))
    refused = await second.recv_type(ConnectorResponse)
    assert not refused.success  # not its own token (upstream lets any provider remove it)
    assert server.tokens.get(added.token) is not None
    plain = await RawPeer.connect(url(server), token="plain", reverse=True)
    await plain.recv()
    await plain.send(Connector(request, "x", protocol.ADD))
    unauthorized = await plain.recv_type(ConnectorResponse)
    assert unauthorized == ConnectorResponse(request, False, "Unauthorized connector management attempt")
    # the generated token works for a connector, reaching the provider that added it
    connector = await RawPeer.connect(url(server), token=added.token)
    assert await connector.recv() == AuthResponse(True)
    channel_id = protocol.new_channel_id()
    await connector.send(Connect(protocol.TCP, channel_id, "example.invalid", 80))
    relayed = await first.recv_type(Connect)
    assert relayed == Connect(protocol.TCP, channel_id, "example.invalid", 80)
    await first.send(ConnectResponse(False, channel_id, "refused by test"))
    assert await connector.recv_type(ConnectResponse) == ConnectResponse(False, channel_id, "refused by test")
    await first.send(Connector(request, added.token, protocol.REMOVE))
    assert (await first.recv_type(ConnectorResponse)).success
    for peer in (first, second, plain, connector):
        await peer.close()


async def test_agent_without_provider_answers_no_available_reverse_clients():
    srv = Server(ws_host="127.0.0.1", ws_port=0, connector_wait=0.3)
    await srv.start()
    srv.add_reverse_token("rtok", port=0)
    srv.add_connector_token("ctok", "rtok")
    connector = await RawPeer.connect(url(srv), token="ctok")
    await connector.recv()
    channel_id = protocol.new_channel_id()
    await connector.send(Connect(protocol.TCP, channel_id, "127.0.0.1", 1))
    answer = await connector.recv_type(ConnectResponse, timeout=5)
    assert answer == ConnectResponse(False, channel_id, "no available reverse clients")
    await connector.close()
    await srv.close()


async def test_reverse_listener_binding_linger_and_nowait():
    import socket as _socket

    def bound(port):
        with _socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    srv = Server(ws_host="127.0.0.1", ws_port=0, listener_linger=2.0)
    await srv.start()
    token, port = srv.add_reverse_token("rtok")
    assert 1024 <= port <= 10240
    assert srv.reverse_port(token) is None and not bound(port)  # waits for the first provider
    provider = await RawPeer.connect(url(srv), token="rtok", reverse=True)
    await provider.recv()
    assert bound(port)
    await provider.close()
    await wait_until(lambda: len(srv.pools[token]) == 0, what="the provider's departure")
    assert bound(port)  # lingers after the last provider left
    await wait_until(lambda: not bound(port), what="the listener to close after the linger")
    await srv.close()
    nowait = Server(ws_host="127.0.0.1", ws_port=0, socks_wait_client=False)
    await nowait.start()
    outside = 20000 + (port % 1000)
    _, explicit = nowait.add_reverse_token("r2", port=outside)
    assert explicit == outside
    await wait_until(lambda: bound(outside), what="--socks-nowait to bind")
    await nowait.close()


async def test_sent_data_respects_the_buffer_size(target):
    srv = Server(ws_host="127.0.0.1", ws_port=0, buffer_size=1000)
    await srv.start()
    srv.add_forward_token("ftok")
    peer = await forward_peer(srv)
    channel_id = await open_channel(peer, target)
    await peer.send(Data(protocol.TCP, channel_id, b"E" + b"b" * 50000))
    got = b""
    while len(got) < 50000:
        message = await peer.recv_type(Data)
        assert 0 < len(message.data) <= 1000
        got += bytes(message.data)
    assert got == b"b" * 50000
    await peer.close()
    await srv.close()


async def test_trace_logging_describes_received_messages(server, target, caplog):
    caplog.set_level(5, logger="hatchway.linksocks.link")
    peer = await forward_peer(server)
    channel_id = await open_channel(peer, target)
    assert any(f"recv Connect {protocol.uuid_text(channel_id)}" in r.getMessage() for r in caplog.records)
    await peer.close()


async def test_removing_a_token_closes_its_links_and_channels(server, target):
    peer = await forward_peer(server)
    channel_id = await open_channel(peer, target)
    assert server.remove_token("ftok")
    assert await peer.closed(5)
    await wait_until(lambda: channel_id not in server.table, what="the channel to be forgotten")
    await peer.close()


async def test_unauthenticated_connections_are_capped_and_never_lock_out_a_client():
    """#6 item 7: at most max_unauthenticated pre-auth connections; the oldest makes room for a new one."""
    async with Server(ws_host="127.0.0.1", ws_port=0, max_unauthenticated=4) as srv:
        srv.add_forward_token("ftok")
        idle = [await RawPeer.connect(url(srv, "/socket/")) for _ in range(10)]  # binary auth, never sends Auth
        assert srv.unauthenticated <= 4
        peer = await RawPeer.connect(url(srv, "/socket/"), token="ftok", query=False)
        assert await peer.recv() == AuthResponse(True)
        assert srv.unauthenticated <= 4
        await peer.close()
        for one in idle:
            await one.close()


async def test_binary_auth_must_arrive_within_the_auth_timeout():
    async with Server(ws_host="127.0.0.1", ws_port=0, auth_timeout=0.3) as srv:
        peer = await RawPeer.connect(url(srv, "/socket/"))
        async with asyncio.timeout(10):
            closed = await peer.ws.receive()
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        await peer.close()


async def test_a_big_message_before_authentication_ends_that_connection_only():
    """#6 item 7: aiohttp would buffer up to 32 MiB per pre-auth connection; the pre-auth byte budget cuts it."""
    async with Server(ws_host="127.0.0.1", ws_port=0) as srv:
        srv.add_forward_token("ftok")
        greedy = await RawPeer.connect(url(srv, "/socket/"))
        try:
            await greedy.send_raw(b"\x01\x04" + b"\0" * (4 * 1024 * 1024))
        except ConnectionError:
            pass
        assert await greedy.closed(10)
        await greedy.close()
        assert srv.pre_auth_overruns == 1
        honest = await RawPeer.connect(url(srv, "/socket/"), token="ftok", query=False)
        assert await honest.recv() == AuthResponse(True)
        await honest.close()
