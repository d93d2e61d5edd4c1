"""Tunnel client: tunnel loss, reconnect loop, heartbeat, shutdown (section 12; cases 33-35, 38)."""

import asyncio
import logging

import pytest
from fake_runner import tunnel_client
from local_services import TcpService, echo, read_until_eof

from hatchway.tunnel import TunnelClient, TunnelGaveUp
from hatchway.tunnel.protocol import MsgType


@pytest.fixture
async def service():
    svc = await TcpService().start()
    yield svc
    await svc.stop()


class ClosingListener:
    """Accepts TCP connections and closes them at once: every handshake fails. Records accept times."""

    def __init__(self):
        self.accepted_at = []
        self.server = None

    async def start(self):
        loop = asyncio.get_running_loop()

        async def handle(reader, writer):
            self.accepted_at.append(loop.time())
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def stop(self):
        self.server.close()


async def test_first_attempt_is_immediate(runner):
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with TunnelClient(runner.url, "test", reconnect_delay=5) as client:
        peer = await runner.next_tunnel(timeout=1)
        await client.connected(1)
    assert peer.accepted_at - started < 1


async def test_case33_35_tunnel_loss_resets_the_service_then_a_fresh_tunnel_works(runner, service):
    echo_service = await TcpService(echo).start()
    try:
        async with tunnel_client(runner, reconnect_delay=0.3) as (client, peer):
            await peer.open_tcp(1, service.port)
            reader, _ = await service.accepted()
            await peer.close()
            closed_at = asyncio.get_running_loop().time()
            # case 33, made loud (issue #6 item 4): the service learns within 0.5 s, as a reset, not
            # a clean EOF, since nobody ended this connection on purpose
            with pytest.raises(ConnectionResetError):
                await read_until_eof(reader, timeout=0.5)
            second = await runner.next_tunnel()
            assert second.accepted_at - closed_at >= 0.3  # the delay applies after a clean close too
            session = await client.connected(2)
            assert session.streams == {}  # nothing is resumed
            # Case 35: DATA for an id of the old tunnel is dropped; a new CONNECT works.
            await second.data(1, b"stale")
            await second.open_tcp(2, echo_service.port)
            await second.data(2, b"fresh")
            assert (await second.expect(MsgType.DATA, 2)).payload == b"fresh"
            assert [m.client_id for m in second.log] == [2, 2]
            assert client.connections_made == 2
    finally:
        await echo_service.stop()


async def test_case38_silent_runner_is_detected_by_the_heartbeat(runner):
    runner.behaviour = "silent"  # accepts, then never reads: no pongs, no FIN
    async with TunnelClient(runner.url, "test", heartbeat=0.4, reconnect_delay=0) as client:
        silent = await runner.next_tunnel()
        runner.behaviour = "serve"
        await client.connected(2)
        second = await runner.next_tunnel(timeout=3)
        assert second.accepted_at - silent.accepted_at >= 0.4
        await second.ping(1)
        await second.expect(MsgType.PONG, 1)


async def test_close_sends_a_close_frame(runner):
    async with tunnel_client(runner) as (client, peer):
        pass
    await peer.wait_ended()
    assert peer.client_close_code == 1000


async def test_gives_up_after_max_reconnect_consecutive_failures():
    listener = await ClosingListener().start()
    try:
        client = TunnelClient(listener.url, "test", reconnect_delay=0.2, max_reconnect=2)
        async with asyncio.timeout(5):
            with pytest.raises(TunnelGaveUp):
                await client.run()
        first, second = listener.accepted_at
        assert second - first >= 0.2
    finally:
        listener.stop()


async def test_connected_raises_when_the_client_gave_up():
    listener = await ClosingListener().start()
    try:
        async with TunnelClient(listener.url, "test", reconnect_delay=0, max_reconnect=1) as client:
            with pytest.raises(TunnelGaveUp):
                await client.connected(5)
    finally:
        listener.stop()


async def test_successful_handshakes_reset_the_failure_count(runner):
    runner.behaviour = "close"  # every tunnel is accepted, then closed at once
    async with TunnelClient(runner.url, "test", reconnect_delay=0, max_reconnect=1):
        for _ in range(5):
            await runner.next_tunnel()


def test_options_are_validated():
    with pytest.raises(ValueError):
        TunnelClient("ws://runner:8001", "test", slow_consumer="drop")
    with pytest.raises(ValueError):
        TunnelClient("ws://runner:8001", "test", reconnect_delay=-1)


def test_backoff_policies():
    fixed = TunnelClient("ws://runner:8001", "test", reconnect_delay=5).options.backoff_policy()
    assert [fixed.next() for _ in range(3)] == [5, 5, 5]
    jitter = TunnelClient("ws://runner:8001", "test", reconnect_delay=1, backoff="jitter").options.backoff_policy()
    delays = [jitter.next() for _ in range(8)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert max(delays) <= 60 * 1.2


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999", "not a url", "http://127.0.0.1:1"])
async def test_a_runner_url_that_cannot_be_dialled_is_a_failed_attempt(url, caplog):
    """Upstream retries such a URL under --max-reconnect; it is not a crash at start (issue #11)."""
    client = TunnelClient(url, "test", reconnect_delay=0, max_reconnect=2)
    with caplog.at_level(logging.WARNING, logger="hatchway.tunnel.client"):
        with pytest.raises(TunnelGaveUp):
            await client.run()
    attempts = [r for r in caplog.records if r.getMessage().startswith("cannot connect")]
    assert len(attempts) == 2
