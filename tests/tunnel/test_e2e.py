"""End to end: user -> Forwarder -> hatchway runner -> real TunnelClient -> local service (cases 42-44, 48, 49, 53, 55)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

import pytest
from fake_client import TcpService, UdpClient, UdpEcho, echo_handler, tagged_echo

from hatchway.tunnel.client import TunnelClient
from hatchway.tunnel.forward import Forwarder
from hatchway.tunnel.runner import Runner

CID = "kohakuriver-task-7"
BULK = 64 * 1024 * 1024


@pytest.fixture
async def runner():
    async with Runner("127.0.0.1", 0, heartbeat=None) as r:
        yield r


@contextlib.asynccontextmanager
async def tunnel_client(runner, container_id=CID, replacing=None):
    """A real TunnelClient, yielded once the runner has registered its tunnel."""
    async with TunnelClient(runner.url, container_id, reconnect_delay=0.1, heartbeat=0) as client:
        await client.connected(10)
        link = await asyncio.wait_for(runner.wait_registered(container_id, other_than=replacing), 10)
        yield client, link


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()


@pytest.fixture(scope="module")
def bulk_blobs():
    return os.urandom(BULK), os.urandom(BULK)


async def test_64_mib_each_way_is_byte_exact(runner, bulk_blobs):
    upload, download = bulk_blobs

    async def service(reader, writer):
        async def send():
            view = memoryview(download)
            for offset in range(0, BULK, 1024 * 1024):
                writer.write(view[offset:offset + 1024 * 1024])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        digest = hashlib.sha256()
        remaining = BULK
        while remaining:
            chunk = await reader.read(min(remaining, 1024 * 1024))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
        await sender
        writer.write(digest.digest())  # what the service received, as a SHA-256
        await writer.drain()
        await reader.read()  # until the user closes

    # block: every hop backpressures, so nothing is reset when this test's reader (on the
    # same event loop as every other hop) falls behind
    async with TcpService(service) as svc, tunnel_client(runner), Forwarder(
        runner.url, CID, svc.port, local_port=0, slow_consumer="block"
    ) as fwd:
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)

        async def send():
            view = memoryview(upload)
            for offset in range(0, BULK, 1024 * 1024):
                writer.write(view[offset:offset + 1024 * 1024])
                await writer.drain()

        sender = asyncio.ensure_future(send())
        got = hashlib.sha256()
        remaining = BULK
        async with asyncio.timeout(60):
            while remaining:
                chunk = await reader.read(min(remaining, 1024 * 1024))
                assert chunk, "connection closed early"
                got.update(chunk)
                remaining -= len(chunk)
            service_digest = await reader.readexactly(32)
        await sender
        writer.close()
        assert got.digest() == hashlib.sha256(download).digest()
        assert service_digest == hashlib.sha256(upload).digest()


async def test_two_forwarders_with_the_same_ids_reach_only_their_own_service(runner):
    async with TcpService(tagged_echo(b"A:")) as svc_a, TcpService(tagged_echo(b"B:")) as svc_b, tunnel_client(
        runner
    ), Forwarder(runner.url, CID, svc_a.port, local_port=0) as fwd_a, Forwarder(
        runner.url, CID, svc_b.port, local_port=0
    ) as fwd_b:
        ra, wa = await asyncio.open_connection("127.0.0.1", fwd_a.local_port)
        rb, wb = await asyncio.open_connection("127.0.0.1", fwd_b.local_port)
        try:
            for round_ in range(5):
                wa.write(b"alice%d" % round_)
                wb.write(b"bob%d" % round_)
                assert await asyncio.wait_for(ra.readexactly(8), 10) == b"A:alice%d" % round_
                assert await asyncio.wait_for(rb.readexactly(6), 10) == b"B:bob%d" % round_
            # both users' first connection used CLI id 1
            assert set(fwd_a.mux.streams) == {1} and set(fwd_b.mux.streams) == {1}
        finally:
            wa.close()
            wb.close()


async def test_second_tunnel_stays_registered_when_the_first_ends(runner):
    async with TcpService(echo_handler) as echo:
        first = TunnelClient(runner.url, CID, reconnect_delay=0.1, heartbeat=0)
        await first.start()
        try:
            await first.connected(10)
            first_link = await asyncio.wait_for(runner.wait_registered(CID), 10)
            async with tunnel_client(runner, replacing=first_link) as (_, second_link):
                await first.close()
                await asyncio.wait_for(first_link.ended.wait(), 10)
                assert runner.registry.get(CID) is second_link
                async with Forwarder(runner.url, CID, echo.port, local_port=0) as fwd:
                    assert await roundtrip(fwd.local_port, b"still here") == b"still here"
        finally:
            await first.close()


async def test_client_restart_keeps_the_forward_channel_usable(runner):
    async with TcpService(echo_handler) as echo, contextlib.AsyncExitStack() as stack:
        async with tunnel_client(runner) as (_, first_link):
            fwd = await stack.enter_async_context(Forwarder(runner.url, CID, echo.port, local_port=0))
            reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
            writer.write(b"before")
            assert await asyncio.wait_for(reader.readexactly(6), 10) == b"before"
        await asyncio.wait_for(first_link.ended.wait(), 10)
        # the connection open across the drop was told (ERROR) and its local socket closed
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionResetError:
            pass
        writer.close()
        assert fwd.mux.streams == {} and not fwd.done.done()
        async with tunnel_client(runner, replacing=first_link):
            assert await roundtrip(fwd.local_port, b"after the restart") == b"after the restart"


async def test_service_that_closes_first_then_a_new_connection_works(runner):
    async def bye(reader, writer):
        writer.write(b"bye")
        await writer.drain()

    async with TcpService(bye) as svc, tunnel_client(runner), Forwarder(
        runner.url, CID, svc.port, local_port=0
    ) as fwd:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
            assert await asyncio.wait_for(reader.read(), 10) == b"bye"
            writer.close()
        assert svc.accepted == 3


async def test_udp_end_to_end_two_sources_each_get_their_replies(runner):
    async with UdpEcho() as echo, tunnel_client(runner), Forwarder(
        runner.url, CID, echo.port, local_port=0, proto="udp"
    ) as fwd:
        alice = await UdpClient.connect(fwd.local_port)
        bob = await UdpClient.connect(fwd.local_port)
        try:
            for size in (1, 20, 1400, 60000):
                alice.send(b"a" * size)
                bob.send(b"b" * size)
                assert await alice.recv() == b"a" * size
                assert await bob.recv() == b"b" * size
            assert len(echo.sources) == 2
        finally:
            alice.close()
            bob.close()
