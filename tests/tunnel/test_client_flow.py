"""Tunnel client flow control and the slow-consumer policy (tunnel.md section 11; cases 30-32, D7)."""

import asyncio

import pytest
from fake_runner import tunnel_client, wait_until
from local_services import TcpService

from hatchway.tunnel.protocol import MsgType

CHUNK = 64 * 1024
FLOOD_MESSAGES = 1024  # 64 MiB
LIMIT = 1024 * 1024


@pytest.fixture
async def stalled_service():
    """Accepts and never reads until the test reads from the accepted reader."""
    service = await TcpService().start()
    yield service
    await service.stop()


class Flood:
    """Sends 1,024 x 64 KiB DATA to one id; watches the local socket's buffer meanwhile."""

    def __init__(self, peer, client_id, connection):
        self.peer = peer
        self.client_id = client_id
        self.connection = connection
        self.sent = 0
        self.max_buffered = 0
        self.task = asyncio.ensure_future(self._send())
        self.monitor = asyncio.ensure_future(self._watch())

    async def _send(self):
        block = b"\xab" * CHUNK
        for _ in range(FLOOD_MESSAGES):
            await self.peer.data(self.client_id, block)
            self.sent += 1

    async def _watch(self):
        local = self.connection.local
        while not self.task.done():
            self.max_buffered = max(self.max_buffered, local.get_write_buffer_size())
            await asyncio.sleep(0.001)

    async def stop(self):
        for task in (self.task, self.monitor):
            task.cancel()
        await asyncio.gather(self.task, self.monitor, return_exceptions=True)


async def drain(reader, nbytes):
    got = 0
    async with asyncio.timeout(30):
        while got < nbytes:
            chunk = await reader.read(1 << 20)
            assert chunk
            got += len(chunk)
    return got


async def test_case30_31_block_policy_freezes_the_tunnel_until_the_consumer_reads(
    runner, echo_service, stalled_service
):
    async with tunnel_client(runner, slow_consumer="block", buffer_limit=LIMIT) as (client, peer):
        await peer.open_tcp(1, stalled_service.port)
        stalled_reader, _ = await stalled_service.accepted()
        await peer.open_tcp(2, echo_service.port)
        flood = Flood(peer, 1, client.session.streams[1].endpoint)
        try:
            await wait_until(lambda: client.session.gate.blocked, timeout=2)  # blocks within 2 s
            await peer.data(2, b"still alive?")
            await peer.quiet(3.0, 2)  # the whole tunnel waits (upstream behaviour)
            assert not flood.task.done() and flood.sent < FLOOD_MESSAGES
            assert flood.max_buffered <= LIMIT + CHUNK  # the per-connection bound holds
            # Case 31: the consumer reads again; everything flows, nothing was lost.
            reading = asyncio.ensure_future(drain(stalled_reader, FLOOD_MESSAGES * CHUNK))
            assert (await peer.expect(MsgType.DATA, 2, timeout=10)).payload == b"still alive?"
            assert await reading == FLOOD_MESSAGES * CHUNK
            await asyncio.wait_for(flood.task, 10)
            assert 1 in client.session.streams
        finally:
            await flood.stop()


async def test_case30_32_reset_policy_closes_only_the_slow_connection(runner, echo_service, stalled_service):
    async with tunnel_client(runner, slow_consumer="reset", buffer_limit=LIMIT) as (client, peer):
        await peer.open_tcp(1, stalled_service.port)
        await stalled_service.accepted()
        await peer.open_tcp(2, echo_service.port)
        flood = Flood(peer, 1, client.session.streams[1].endpoint)
        try:
            # Case 32: while the consumer is stalled, PINGs and new CONNECTs are answered.
            await peer.ping(40)
            await peer.connect(3, echo_service.port)
            await peer.data(2, b"still alive?")
            await peer.expect(MsgType.CLOSE, 1, timeout=3)  # the stalled connection is reset
            assert (await peer.expect(MsgType.DATA, 2, timeout=3)).payload == b"still alive?"
            await peer.expect(MsgType.PONG, 40, timeout=3)
            await peer.expect(MsgType.CONNECTED, 3, timeout=3)
            await asyncio.wait_for(flood.task, 10)  # the rest of the flood is dropped, not queued
            assert flood.max_buffered <= LIMIT + CHUNK
            assert 1 not in client.session.streams
            assert not client.session.gate.blocked
        finally:
            await flood.stop()


async def test_early_data_beyond_the_limit_applies_the_policy_before_the_dial_ends(runner, monkeypatch):
    from hatchway.tunnel import tcp_stream as connection

    dial_may_finish = asyncio.Event()
    real_dial = connection.dial_local

    async def slow_dial(*args, **kwargs):
        await dial_may_finish.wait()
        return await real_dial(*args, **kwargs)

    monkeypatch.setattr(connection, "dial_local", slow_dial)
    sink = await TcpService().start()
    try:
        async with tunnel_client(runner, slow_consumer="block", buffer_limit=LIMIT) as (client, peer):
            await peer.connect(1, sink.port)
            for _ in range(LIMIT // CHUNK + 1):
                await peer.data(1, b"\x01" * CHUNK)
            await wait_until(lambda: client.session.gate.blocked, timeout=3)
            dial_may_finish.set()
            await peer.expect(MsgType.CONNECTED, 1)
            await wait_until(lambda: not client.session.gate.blocked, timeout=3)
            reader, _ = await sink.accepted()
            assert await drain(reader, LIMIT + CHUNK) == LIMIT + CHUNK
        dial_may_finish.clear()
        async with tunnel_client(runner, slow_consumer="reset", buffer_limit=LIMIT) as (client, peer):
            await peer.connect(1, sink.port)
            for _ in range(LIMIT // CHUNK + 1):
                await peer.data(1, b"\x01" * CHUNK)
            await peer.expect(MsgType.CLOSE, 1)
            assert 1 not in client.session.streams
            dial_may_finish.set()
            await peer.settled(1, client.session.tasks)  # the dial ended: no CONNECTED for the reset connection
    finally:
        await sink.stop()


async def test_block_policy_tunnel_lost_while_blocked_reconnects(runner, stalled_service):
    async with tunnel_client(runner, slow_consumer="block", buffer_limit=LIMIT, heartbeat=0.5,
                             reconnect_delay=0) as (client, peer):
        await peer.open_tcp(1, stalled_service.port)
        stalled_reader, _ = await stalled_service.accepted()
        flood = Flood(peer, 1, client.session.streams[1].endpoint)
        try:
            await wait_until(lambda: client.session.gate.blocked, timeout=2)
            await flood.stop()
            peer.abort()
            second = await runner.next_tunnel(timeout=5)  # the heartbeat noticed; a fresh tunnel
            await second.ping(2)
            await second.expect(MsgType.PONG, 2)
            with pytest.raises((ConnectionError, AssertionError)):
                await drain(stalled_reader, FLOOD_MESSAGES * CHUNK)  # the old connection was dropped
        finally:
            await flood.stop()
