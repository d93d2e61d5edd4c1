"""The runner endpoint with raw WebSocket peers: exact messages (acceptance cases 40-48, D1-D16)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from fake_client import Proto, RawPeer, data, open_forward, open_tunnel, wait_until

from hatchway.tunnel import protocol
from hatchway.tunnel.protocol import MsgType
from hatchway.tunnel.runner import ENDPOINT_KEY, Runner, make_app

CID = "kohakuriver-task-1"


@pytest.fixture
async def runner():
    async with Runner("127.0.0.1", 0, heartbeat=None) as r:
        yield r


@pytest.fixture
async def tunnel(runner):
    """A raw tunnel client registered under CID."""
    peer = await open_tunnel(runner.url, CID)
    await asyncio.wait_for(runner.wait_registered(CID), 5)
    yield peer
    await peer.close()


@pytest.fixture
async def peers():
    opened: list[RawPeer] = []
    yield opened
    for peer in opened:
        await peer.close()


async def forward(runner, peers, port=8080, proto="tcp", container=CID):
    peer = await open_forward(runner.url, container, port, proto)
    peers.append(peer)
    return peer


async def test_forward_without_tunnel_gets_error_text_and_1011(runner):
    peer = await RawPeer.open(f"{runner.url}/ws/forward/{CID}/8080?proto=tcp")
    try:
        assert await peer.text() == f"Error: Container tunnel not connected (container={CID})"
        assert await peer.wait_closed() == 1011
    finally:
        await peer.close()


async def test_messages_are_relayed_both_ways_with_ids_rewritten(runner, tunnel, peers):
    cli = await forward(runner, peers)
    await cli.send(protocol.connect(Proto.TCP, 7, 8080))
    await cli.send(data(Proto.TCP, 7, b"request"))
    connect = await tunnel.recv()
    assert (connect.type, connect.proto, connect.port, connect.payload) == (MsgType.CONNECT, Proto.TCP, 8080, b"")
    tid = connect.client_id
    sent = await tunnel.recv()
    assert (sent.type, sent.client_id, sent.payload) == (MsgType.DATA, tid, b"request")

    await tunnel.send(protocol.connected(Proto.TCP, tid))
    await tunnel.send(data(Proto.TCP, tid, b"reply"))
    await tunnel.send(protocol.close(Proto.TCP, tid))
    got = [await cli.recv() for _ in range(3)]
    assert [(m.type, m.client_id, m.port, m.payload) for m in got] == [
        (MsgType.CONNECTED, 7, 0, b""),
        (MsgType.DATA, 7, 0, b"reply"),
        (MsgType.CLOSE, 7, 0, b""),
    ]

    await cli.send(protocol.connect(Proto.TCP, 8, 8080))
    tid8 = (await tunnel.recv()).client_id
    await tunnel.send(protocol.error(tid8, "Connection refused (os error 111)"))
    err = await cli.recv()
    assert (err.type, err.client_id, err.payload) == (MsgType.ERROR, 8, b"Connection refused (os error 111)")

    await cli.send(protocol.connect(Proto.TCP, 9, 8080))
    tid9 = (await tunnel.recv()).client_id
    await cli.send(protocol.close(Proto.TCP, 9))
    close = await tunnel.recv()
    assert (close.type, close.client_id) == (MsgType.CLOSE, tid9)


async def test_two_forward_channels_with_the_same_cli_id_do_not_cross(runner, tunnel, peers):
    alice = await forward(runner, peers)
    bob = await forward(runner, peers)
    await alice.send(protocol.connect(Proto.TCP, 1, 8080))
    tid_alice = (await tunnel.recv()).client_id
    await bob.send(protocol.connect(Proto.TCP, 1, 8080))
    tid_bob = (await tunnel.recv()).client_id
    assert tid_alice != tid_bob

    await bob.send(data(Proto.TCP, 1, b"from bob"))
    msg = await tunnel.recv()
    assert (msg.client_id, msg.payload) == (tid_bob, b"from bob")
    await tunnel.send(data(Proto.TCP, tid_alice, b"for alice"))
    await tunnel.send(data(Proto.TCP, tid_bob, b"for bob"))
    assert (await alice.recv()).payload == b"for alice"
    assert (await bob.recv()).payload == b"for bob"


async def test_tunnel_ids_are_monotonic_and_never_reused(runner, tunnel, peers):
    cli = await forward(runner, peers)
    seen = []
    for _ in range(3):
        await cli.send(protocol.connect(Proto.TCP, 1, 8080))  # the CLI reuses its id each time
        tid = (await tunnel.recv()).client_id
        seen.append(tid)
        await tunnel.send(protocol.close(Proto.TCP, tid))  # the service closed first (D2)
        assert (await cli.recv()).type is MsgType.CLOSE
    assert seen == sorted(set(seen)) and len(seen) == 3


async def test_second_registration_survives_the_first_ending(runner, peers):
    first = await open_tunnel(runner.url, CID)
    first_link = await asyncio.wait_for(runner.wait_registered(CID), 5)
    second = await open_tunnel(runner.url, CID)
    second_link = await asyncio.wait_for(runner.wait_registered(CID, other_than=first_link), 5)
    try:
        await first.close()
        await asyncio.wait_for(first_link.ended.wait(), 5)
        assert runner.registry.get(CID) is second_link
        cli = await forward(runner, peers)
        await cli.send(protocol.connect(Proto.TCP, 1, 8080))
        msg = await second.recv()
        assert (msg.type, msg.port) == (MsgType.CONNECT, 8080)
    finally:
        await second.close()


async def test_forward_channel_rebinds_after_tunnel_reconnect_and_lost_ids_get_error(runner, peers):
    first = await open_tunnel(runner.url, CID)
    first_link = await asyncio.wait_for(runner.wait_registered(CID), 5)
    cli = await forward(runner, peers)
    await cli.send(protocol.connect(Proto.TCP, 1, 8080))
    tid = (await first.recv()).client_id
    await first.send(protocol.connected(Proto.TCP, tid))
    assert (await cli.recv()).type is MsgType.CONNECTED

    await first.close()
    lost = await cli.recv()
    assert (lost.type, lost.client_id, lost.payload) == (MsgType.ERROR, 1, b"Container tunnel disconnected")
    await asyncio.wait_for(first_link.ended.wait(), 5)

    await cli.send(protocol.connect(Proto.TCP, 2, 8080))
    refused = await cli.recv()  # no tunnel right now: answered, not dropped
    assert (refused.type, refused.client_id) == (MsgType.ERROR, 2)
    assert refused.payload == f"Container tunnel not connected (container={CID})".encode()

    second = await open_tunnel(runner.url, CID)
    try:
        await asyncio.wait_for(runner.wait_registered(CID), 5)
        await cli.send(protocol.connect(Proto.TCP, 3, 8080))
        connect = await second.recv()
        assert connect.type is MsgType.CONNECT and connect.client_id > tid
        await second.send(protocol.connected(Proto.TCP, connect.client_id))
        assert (await cli.recv()).client_id == 3
    finally:
        await second.close()


async def test_connect_with_another_port_gets_error_and_nothing_is_forwarded(runner, tunnel, peers):
    cli = await forward(runner, peers, port=8080)
    await cli.send(protocol.connect(Proto.TCP, 1, 22))
    await cli.send(data(Proto.TCP, 1, b"not routed"))
    err = await cli.recv()
    assert (err.type, err.client_id) == (MsgType.ERROR, 1)
    assert b"22" in err.payload and b"8080" in err.payload
    await cli.send(protocol.connect(Proto.TCP, 2, 8080))
    first_seen = await tunnel.recv()  # the bad CONNECT and its DATA never reached the container
    assert (first_seen.type, first_seen.port) == (MsgType.CONNECT, 8080)


async def test_forward_channel_end_closes_every_active_id(runner, tunnel, peers):
    cli = await forward(runner, peers)
    tids = {}
    for cli_id in (1, 2, 3):
        await cli.send(protocol.connect(Proto.TCP, cli_id, 8080))
        tids[cli_id] = (await tunnel.recv()).client_id
    await cli.send(protocol.close(Proto.TCP, 2))
    assert (await tunnel.recv()).client_id == tids[2]
    await cli.close()
    closes = [await tunnel.recv() for _ in range(2)]
    assert {(m.type, m.client_id) for m in closes} == {(MsgType.CLOSE, tids[1]), (MsgType.CLOSE, tids[3])}
    # nothing else was sent for the ended channel: the next message is a new CONNECT
    other = await forward(runner, peers)
    await other.send(protocol.connect(Proto.TCP, 1, 8080))
    assert (await tunnel.recv()).type is MsgType.CONNECT


async def test_late_and_junk_messages_from_the_client_are_ignored(runner, tunnel, peers):
    cli = await forward(runner, peers)
    await cli.send(protocol.connect(Proto.TCP, 1, 8080))
    tid = (await tunnel.recv()).client_id
    await cli.send(protocol.close(Proto.TCP, 1))
    assert (await tunnel.recv()).type is MsgType.CLOSE
    # an upstream client sends late DATA and an unsolicited CLOSE for the id (D3), plus other noise
    await tunnel.send(data(Proto.TCP, tid, b"late"))
    await tunnel.send(protocol.close(Proto.TCP, tid))
    await tunnel.send(data(Proto.TCP, 987654, b"unknown"))
    await tunnel.send(protocol.pong(0))
    await tunnel.send(b"\x03\x00")
    await tunnel.ws.send_str("hello")
    await cli.send(protocol.connect(Proto.TCP, 2, 8080))
    tid2 = (await tunnel.recv()).client_id
    await tunnel.send(protocol.connected(Proto.TCP, tid2))
    msg = await cli.recv()  # the first thing the CLI sees: nothing leaked from the ignored messages
    assert (msg.type, msg.client_id) == (MsgType.CONNECTED, 2)
    assert runner.registry.get(CID) is not None


async def test_junk_from_the_cli_is_dropped_and_duplicate_connect_ignored(runner, tunnel, peers):
    cli = await forward(runner, peers)
    await cli.send(b"\x01")
    await cli.ws.send_str("hello")
    await cli.send(data(Proto.TCP, 5, b"no such id"))
    await cli.send(protocol.close(Proto.TCP, 5))
    await cli.send(protocol.connect(Proto.TCP, 1, 8080))
    await cli.send(protocol.connect(Proto.TCP, 1, 8080))
    await cli.send(protocol.ping(1))
    first = await tunnel.recv()
    assert first.type is MsgType.CONNECT
    second = await tunnel.recv()  # the duplicate CONNECT was not forwarded; the PING was (raw)
    assert (second.type, second.client_id) == (MsgType.PING, 1)


async def test_udp_forward_channel_relays_datagrams(runner, tunnel, peers):
    cli = await forward(runner, peers, port=5353, proto="udp")
    await cli.send(protocol.connect(Proto.UDP, 1, 5353))
    await cli.send(data(Proto.UDP, 1, b"query"))
    connect = await tunnel.recv()
    assert (connect.type, connect.proto) == (MsgType.CONNECT, Proto.UDP)
    dgram = await tunnel.recv()
    assert (dgram.proto, dgram.payload) == (Proto.UDP, b"query")
    await tunnel.send(data(Proto.UDP, connect.client_id, b"answer"))
    reply = await cli.recv()
    assert (reply.type, reply.proto, reply.client_id, reply.payload) == (MsgType.DATA, Proto.UDP, 1, b"answer")


@pytest.mark.parametrize(
    "path, expected",
    [
        (f"/ws/forward/{CID}/70000?proto=tcp", "Error: invalid port '70000'"),
        (f"/ws/forward/{CID}/http?proto=tcp", "Error: invalid port 'http'"),
        (f"/ws/forward/{CID}/80?proto=sctp", "Error: invalid proto 'sctp' (expected tcp or udp)"),
    ],
)
async def test_bad_forward_urls_are_refused_with_1008(runner, path, expected):
    peer = await RawPeer.open(runner.url + path)
    try:
        assert await peer.text() == expected
        assert await peer.wait_closed() == 1008
    finally:
        await peer.close()


async def test_token_guards_forward_channels():
    async with Runner("127.0.0.1", 0, token="s3cret", heartbeat=None) as r:
        tunnel = await open_tunnel(r.url, CID, headers={"Authorization": "Bearer s3cret"})
        try:
            await asyncio.wait_for(r.wait_registered(CID), 5)
            for extra in ({}, {"headers": {"Authorization": "Bearer wrong"}}):
                peer = await RawPeer.open(f"{r.url}/ws/forward/{CID}/80", **extra)
                assert await peer.text() == "Error: unauthorized"
                assert await peer.wait_closed() == 1008
                await peer.close()
            wrong_query = await RawPeer.open(f"{r.url}/ws/forward/{CID}/80?token=nope")
            assert await wrong_query.text() == "Error: unauthorized"
            await wrong_query.close()
            by_header = await open_forward(r.url, CID, 80, headers={"Authorization": "Bearer s3cret"})
            by_query = await RawPeer.open(f"{r.url}/ws/forward/{CID}/80?proto=tcp&token=s3cret")
            assert await by_query.text() == "CONNECTED"
            await by_header.close()
            await by_query.close()
        finally:
            await tunnel.close()


async def _upgrade_status(url: str, **kwargs) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, **kwargs)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def test_token_guards_tunnel_registrations():
    """Issue #6 item 1: with a token, /ws/tunnel needs it (HTTP 401 before any WebSocket otherwise)."""
    async with Runner("127.0.0.1", 0, token="s3cret", heartbeat=None) as r:
        url = f"{r.url}/ws/tunnel/{CID}"
        assert await _upgrade_status(url) == 401
        assert await _upgrade_status(url, headers={"Authorization": "Bearer wrong"}) == 401
        assert await _upgrade_status(url + "?token=nope") == 401
        assert r.registry.get(CID) is None
        real = await open_tunnel(r.url, CID, headers={"Authorization": "Bearer s3cret"})
        try:
            link = await asyncio.wait_for(r.wait_registered(CID), 5)
            assert link.credential == "s3cret"
        finally:
            await real.close()


async def test_tokenless_tunnels_only_under_the_compatibility_switch_and_never_as_a_takeover(caplog):
    async with Runner("127.0.0.1", 0, token="s3cret", heartbeat=None, allow_tokenless_tunnels=True) as r:
        real = await open_tunnel(r.url, CID, headers={"Authorization": "Bearer s3cret"})
        try:
            real_link = await asyncio.wait_for(r.wait_registered(CID), 5)
            intruder = await RawPeer.open(f"{r.url}/ws/tunnel/{CID}")  # no token: admitted, but the id is held
            assert await intruder.text() == "Error: container id already registered by another tunnel"
            assert await intruder.wait_closed() == 1008
            await intruder.close()
            assert r.registry.get(CID) is real_link
        finally:
            await real.close()
        await asyncio.wait_for(real_link.ended.wait(), 5)
        # with the id free, an upstream client (no token) may register, with a warning
        upstream = await open_tunnel(r.url, CID)
        try:
            await asyncio.wait_for(r.wait_registered(CID), 5)
            assert any("without a token admitted" in rec.getMessage() for rec in caplog.records)
        finally:
            await upstream.close()


async def test_a_live_registration_is_never_replaced_and_the_id_falls_back_to_a_live_one(peers):
    """Issue #6 items 1 and 2: another peer cannot take the id over; a same-token replacement that
    leaves hands the id back to the registration still alive."""
    async with Runner("127.0.0.1", 0, token="s3cret", heartbeat=None) as r:
        auth = {"headers": {"Authorization": "Bearer s3cret"}}
        first = await open_tunnel(r.url, CID, **auth)
        first_link = await asyncio.wait_for(r.wait_registered(CID), 5)
        second = await open_tunnel(r.url, CID, **auth)  # the same credential may replace (a reconnect)
        second_link = await asyncio.wait_for(r.wait_registered(CID, other_than=first_link), 5)
        try:
            await second.close()
            await asyncio.wait_for(second_link.ended.wait(), 5)
            assert r.registry.get(CID) is first_link  # back to the one still alive
            cli = await open_forward(r.url, CID, 8080, headers={"Authorization": "Bearer s3cret"})
            peers.append(cli)
            await cli.send(protocol.connect(Proto.TCP, 1, 8080))
            msg = await first.recv()
            assert (msg.type, msg.port) == (MsgType.CONNECT, 8080)
        finally:
            await first.close()


async def test_dead_tunnel_is_unregistered_by_the_heartbeat():
    async with Runner("127.0.0.1", 0, heartbeat=0.4) as r:
        async with aiohttp.ClientSession() as session:
            # autoping off and nobody reading: pings from the runner are never answered
            ws = await session.ws_connect(f"{r.url}/ws/tunnel/{CID}", autoping=False)
            link = await asyncio.wait_for(r.wait_registered(CID), 5)
            await asyncio.wait_for(link.ended.wait(), 5)
            assert r.registry.get(CID) is None
            peer = await RawPeer.open(f"{r.url}/ws/forward/{CID}/80")
            assert (await peer.text()).startswith("Error: Container tunnel not connected")
            await peer.close()
            await ws.close()


async def test_reset_policy_resets_only_the_route_of_a_stalled_forward_channel(peers):
    async with Runner("127.0.0.1", 0, heartbeat=None, slow_consumer="reset", buffer_limit=64 * 1024) as r:
        tunnel = await open_tunnel(r.url, CID)
        try:
            await asyncio.wait_for(r.wait_registered(CID), 5)
            stalled = await forward(r, peers)  # never reads after this
            healthy = await forward(r, peers)
            await stalled.send(protocol.connect(Proto.TCP, 1, 8080))
            tid_stalled = (await tunnel.recv()).client_id
            await healthy.send(protocol.connect(Proto.TCP, 1, 8080))
            tid_healthy = (await tunnel.recv()).client_id

            chunk = bytes(256 * 1024)
            reset = asyncio.ensure_future(
                tunnel.recv_until(lambda m: (m.type, m.client_id) == (MsgType.CLOSE, tid_stalled), timeout=20)
            )
            for _ in range(256):  # 64 MiB: far more than the socket buffers and the 64 KiB limit
                if reset.done():
                    break
                await tunnel.send(data(Proto.TCP, tid_stalled, chunk))
            await reset
            await tunnel.send(data(Proto.TCP, tid_healthy, b"still flowing"))
            msg = await healthy.recv()
            assert (msg.client_id, msg.payload) == (1, b"still flowing")
        finally:
            await tunnel.close()


async def test_block_policy_delivers_everything_to_a_slow_forward_channel(peers):
    async with Runner("127.0.0.1", 0, heartbeat=None, slow_consumer="block", buffer_limit=64 * 1024) as r:
        tunnel = await open_tunnel(r.url, CID)
        try:
            await asyncio.wait_for(r.wait_registered(CID), 5)
            slow = await forward(r, peers)
            other = await forward(r, peers)
            await slow.send(protocol.connect(Proto.TCP, 1, 8080))
            tid_slow = (await tunnel.recv()).client_id
            await other.send(protocol.connect(Proto.TCP, 1, 8080))
            tid_other = (await tunnel.recv()).client_id
            total = 16 * 1024 * 1024
            chunk = bytes(range(256)) * 1024

            async def flood():
                for _ in range(total // len(chunk)):
                    await tunnel.send(data(Proto.TCP, tid_slow, chunk))
                await tunnel.send(data(Proto.TCP, tid_other, b"after the flood"))

            sender = asyncio.ensure_future(flood())
            # wait (polling a condition, bounded) until the slow user's buffer is over the limit
            (slow_channel,) = [f for f in r.endpoint.forwards if f.routes.get(1) and f.routes[1].tunnel_id == tid_slow]
            await wait_until(lambda: slow_channel.sink.paused)
            received = 0
            while received < total:
                msg = await slow.recv()
                assert msg.client_id == 1 and msg.payload == chunk
                received += len(msg.payload)
            await sender
            assert (await other.recv()).payload == b"after the flood"
        finally:
            await tunnel.close()


async def test_make_app_embeds_the_routes_in_a_user_app(unused_tcp_port):
    app = web.Application()

    async def health(_request):
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    make_app(app=app, heartbeat=None)
    endpoint = app[ENDPOINT_KEY]
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    base = f"ws://127.0.0.1:{unused_tcp_port}"
    try:
        tunnel = await open_tunnel(base, CID)
        await asyncio.wait_for(endpoint.wait_registered(CID), 5)
        cli = await open_forward(base, CID, 80)
        await cli.send(protocol.connect(Proto.TCP, 1, 80))
        assert (await tunnel.recv()).type is MsgType.CONNECT
        await cli.close()
        await tunnel.close()
    finally:
        await app_runner.cleanup()


async def test_container_id_from_the_url_is_escaped_in_logs(caplog):
    """Issue #6 item 11: no forged lines or terminal escapes from an unauthenticated URL."""
    import logging

    async with Runner("127.0.0.1", 0, heartbeat=None) as r:
        with caplog.at_level(logging.INFO, logger="hatchway.tunnel.runner"):
            evil = "%1B%5B31mred%0Aforged line%0D"
            peer = await RawPeer.open(f"{r.url}/ws/tunnel/{evil}")
            await asyncio.wait_for(r.wait_registered("\x1b[31mred\nforged line\r"), 5)
            await peer.close()
            refused = await RawPeer.open(f"{r.url}/ws/forward/{evil}/80")
            await refused.text()
            await refused.close()
            await wait_until(lambda: any("tunnel disconnected" in rec.getMessage() for rec in caplog.records))
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "hatchway.tunnel.runner"]
    assert any("red" in line for line in lines)
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line, line


async def test_slow_request_heads_are_closed_and_do_not_lock_clients_out():
    """Issue #6 items 7 and 8: a header deadline, and a cap on unauthenticated connections that
    evicts the oldest slow one; registered tunnels do not count against it."""
    async with Runner("127.0.0.1", 0, heartbeat=None, header_timeout=0.5, max_unauthenticated=2) as r:
        tunnels = [await open_tunnel(r.url, f"c{i}") for i in range(3)]  # more than the cap: all stay
        try:
            for i in range(3):
                await asyncio.wait_for(r.wait_registered(f"c{i}"), 5)
            slow = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
                writer.write(b"GET /ws/tunnel/x HTTP/1.1\r\nHost: a\r\n")  # never finished
                slow.append((reader, writer))
            # the first slow one was evicted to make room, the others hit the deadline
            for reader, writer in slow:
                assert await asyncio.wait_for(reader.read(), 5) in (b"", b"HTTP/1.1 503 Service Unavailable\r\n"
                                                                        b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                writer.close()
            assert all(r.registry.get(f"c{i}") is not None for i in range(3))
            late = await open_forward(r.url, "c0", 80)  # a real client is served
            await late.close()
        finally:
            for tunnel in tunnels:
                await tunnel.close()


class _FullSink:
    def __init__(self) -> None:
        self.paused = True
        self.resumed = asyncio.Event()
        self.waits = 0

    async def drained(self) -> None:
        self.waits += 1
        await self.resumed.wait()


async def test_a_read_loop_held_for_a_full_sink_stops_waiting_when_its_own_websocket_is_gone():
    """What the runner relies on (through MuxSession) to never hang on a dead peer while blocked."""
    from hatchway.common.gate import wait_drained

    full, alive = _FullSink(), [True]
    waiter = asyncio.ensure_future(wait_drained(full, lambda: alive[0], poll=0.01))
    await wait_until(lambda: full.waits >= 3)
    assert not waiter.done()  # three polls later it still waits: nothing drained, nothing lost
    alive[0] = False
    assert await asyncio.wait_for(waiter, 5) is False
    draining = _FullSink()
    waiter = asyncio.ensure_future(wait_drained(draining, lambda: True, poll=0.01))
    draining.paused = False
    draining.resumed.set()
    assert await asyncio.wait_for(waiter, 5) is True


async def test_a_refused_peer_cannot_make_the_runner_buffer_big_messages():
    """Issue #6 item 7: before its checks pass a connection may send little; a refused forward
    channel that sends a big message anyway is cut, and nothing else is disturbed."""
    async with Runner("127.0.0.1", 0, token="s3cret", heartbeat=None) as r:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{r.url}/ws/forward/{CID}/80")
            assert (await ws.receive()).data == "Error: unauthorized"
            try:
                await ws.send_bytes(bytes(1024 * 1024))
            except ConnectionError:
                pass
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            await ws.close()
        tunnel = await open_tunnel(r.url, CID, headers={"Authorization": "Bearer s3cret"})
        try:
            await asyncio.wait_for(r.wait_registered(CID), 5)
        finally:
            await tunnel.close()
