"""Tunnel client, UDP flows (tunnel.md section 8; acceptance cases 27-29)."""

import asyncio
import socket

from fake_runner import tunnel_client
from local_services import closed_port

from hatchway.tunnel.protocol import Message, MsgType, Proto


async def test_case27_one_datagram_per_data_each_way(runner, udp_echo):
    sizes = [1, 20, 1400, 60000]
    async with tunnel_client(runner) as (_, peer):
        await peer.connect(1, udp_echo.port, Proto.UDP)
        assert await peer.recv(1) == Message(MsgType.CONNECTED, Proto.UDP, 1, 0, b"")
        for size in sizes:
            await peer.data(1, bytes([size % 251]) * size, Proto.UDP)
        for size in sizes:
            reply = await peer.expect(MsgType.DATA, 1)
            assert (reply.proto, reply.payload) == (Proto.UDP, bytes([size % 251]) * size)
        assert udp_echo.received == sizes


async def test_udp_datagrams_sent_right_after_connect_are_kept(runner, udp_echo):
    async with tunnel_client(runner) as (_, peer):
        await peer.connect(2, udp_echo.port, Proto.UDP)
        await peer.data(2, b"early", Proto.UDP)
        await peer.expect(MsgType.CONNECTED, 2)
        assert (await peer.expect(MsgType.DATA, 2)).payload == b"early"


async def test_case28_closed_udp_port_connected_then_close_after_a_datagram(runner):
    port = closed_port(socket.SOCK_DGRAM)
    async with tunnel_client(runner) as (client, peer):
        await peer.connect(3, port, Proto.UDP)
        assert await peer.recv(3) == Message(MsgType.CONNECTED, Proto.UDP, 3, 0, b"")
        await peer.data(3, b"anyone?", Proto.UDP)
        reply = await peer.recv(3, timeout=2)
        assert reply.type in (MsgType.CLOSE, MsgType.ERROR)
        assert 3 not in client.session.streams


async def test_case29_idle_udp_flow_is_released_with_close(runner, udp_echo):
    async with tunnel_client(runner, udp_idle_timeout=0.3) as (client, peer):
        loop_time = asyncio.get_running_loop().time
        await peer.connect(4, udp_echo.port, Proto.UDP)
        await peer.expect(MsgType.CONNECTED, 4)
        await peer.data(4, b"ping", Proto.UDP)
        await peer.expect(MsgType.DATA, 4)
        last_traffic = loop_time()
        assert 4 in client.session.streams
        closed = await peer.expect(MsgType.CLOSE, 4, timeout=3)
        assert closed == Message(MsgType.CLOSE, Proto.UDP, 4, 0, b"")
        assert loop_time() - last_traffic >= 0.25
        assert 4 not in client.session.streams
        await peer.connect(4, udp_echo.port, Proto.UDP)  # the id is free again
        await peer.expect(MsgType.CONNECTED, 4)


async def test_runner_close_releases_the_udp_flow_silently(runner, udp_echo):
    async with tunnel_client(runner) as (client, peer):
        await peer.connect(5, udp_echo.port, Proto.UDP)
        await peer.expect(MsgType.CONNECTED, 5)
        await peer.close_id(5, Proto.UDP)
        await peer.data(5, b"late", Proto.UDP)  # dropped: unknown id now
        await peer.ping(5)
        assert (await peer.recv(5)).type is MsgType.PONG
        assert 5 not in client.session.streams


async def test_udp_connect_then_close_at_once_logs_no_task_error(runner, udp_echo, caplog):
    """Issue #6 item 12: CLOSE before the flow's setup task ran must not end in a ValueError."""
    import logging

    async with tunnel_client(runner) as (client, peer):
        with caplog.at_level(logging.WARNING):
            for client_id in range(100, 120):
                await peer.connect(client_id, udp_echo.port, Proto.UDP)
                await peer.close_id(client_id, Proto.UDP)
            for client_id in range(100, 120):
                assert (await peer.recv(client_id)).type is MsgType.CONNECTED
            await peer.ping(7)
            await peer.expect(MsgType.PONG, 7)
            await client.session.tasks.join()  # every setup task has finished
        assert client.session.streams == {}
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR or "never retrieved" in r.getMessage()]
        assert problems == []
