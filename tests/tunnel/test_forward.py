"""The forward CLI against a fake /ws/forward server that shows its exact messages (cases 50-54)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest
from fake_client import FakeForwardServer, Proto, UdpClient, data, free_port, wait_until

from hatchway.tunnel import protocol
from hatchway.tunnel.forward import Forwarder, ForwardError
from hatchway.tunnel.protocol import MsgType
from hatchway.tunnel.urls import forward_url

TASK = "42"


@pytest.fixture
async def server():
    async with FakeForwardServer() as srv:
        yield srv


async def open_local(port: int):
    return await asyncio.open_connection("127.0.0.1", port)


def test_forward_url_shapes():
    assert forward_url("ws://h:8000/", "7", 80) == "ws://h:8000/ws/forward/7/80?proto=tcp"
    assert forward_url("wss://h", "7", 53, "udp") == "wss://h/ws/forward/7/53?proto=udp"
    assert forward_url("localhost:8000", "kohakuriver-vps-7", 22) == (
        "ws://localhost:8000/ws/forward/kohakuriver-vps-7/22?proto=tcp"
    )


async def test_listens_on_loopback_remote_port_by_default(server):
    remote_port = free_port()
    async with Forwarder(server.url, TASK, remote_port) as fwd:
        assert (fwd.local_host, fwd.local_port) == ("127.0.0.1", remote_port)
        channel = await server.channel()
        request = server.requests[0]
        assert request.path == f"/ws/forward/{TASK}/{remote_port}" and request.query["proto"] == "tcp"
        assert "permessage-deflate" not in request.headers.get("Sec-WebSocket-Extensions", "")
        reader, writer = await open_local(remote_port)
        connect = await channel.recv()
        assert (connect.type, connect.proto, connect.client_id, connect.port) == (
            MsgType.CONNECT, Proto.TCP, 1, remote_port,
        )
        writer.close()


async def test_connect_and_data_leave_before_connected_and_the_reply_survives_a_local_eof(server):
    async with Forwarder(server.url, TASK, 8080, local_port=0) as fwd:
        channel = await server.channel()
        reader, writer = await open_local(fwd.local_port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        connect = await channel.recv()
        first = await channel.recv()  # no CONNECTED has been sent yet
        assert (connect.type, connect.client_id, connect.port) == (MsgType.CONNECT, 1, 8080)
        assert (first.type, first.client_id, first.payload) == (MsgType.DATA, 1, b"GET / HTTP/1.0\r\n\r\n")
        await channel.send(protocol.connected(Proto.TCP, 1))
        await channel.send(data(Proto.TCP, 1, b"HTTP/1.0 200 OK\r\n"))
        assert await reader.readexactly(17) == b"HTTP/1.0 200 OK\r\n"
        # the user half-closes after its request: a zero-length DATA (hatchway's half-close) leaves, the
        # stream stays open for the rest of the reply (issue #6 item 15), and no CLOSE leaves meanwhile
        writer.write_eof()
        eof = await channel.recv()
        assert (eof.type, eof.client_id, bytes(eof.payload)) == (MsgType.DATA, 1, b"")
        await channel.send(data(Proto.TCP, 1, b"body"))
        assert await reader.readexactly(4) == b"body"
        await channel.send(protocol.close(Proto.TCP, 1))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the far side's end is the user's EOF
        await wait_until(lambda: fwd.mux.streams == {})
        writer.close()


async def test_local_close_sends_close(server):
    async with Forwarder(server.url, TASK, 8080, local_port=0) as fwd:
        channel = await server.channel()
        _, writer = await open_local(fwd.local_port)
        assert (await channel.recv()).type is MsgType.CONNECT
        await channel.send(protocol.connected(Proto.TCP, 1))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # the user's socket is reset: the stream ends
        close = await channel.recv()
        assert (close.type, close.proto, close.client_id) == (MsgType.CLOSE, Proto.TCP, 1)
        await wait_until(lambda: fwd.mux.streams == {})


async def test_ids_start_at_one_and_increase(server):
    async with Forwarder(server.url, TASK, 8080, local_port=0) as fwd:
        channel = await server.channel()
        writers = []
        for expected in (1, 2, 3):
            _, writer = await open_local(fwd.local_port)
            writers.append(writer)
            connect = await channel.recv()
            assert (connect.type, connect.client_id) == (MsgType.CONNECT, expected)
        for writer in writers:
            writer.close()


async def test_close_from_the_far_side_delivers_then_closes_the_local_socket(server):
    async with Forwarder(server.url, TASK, 8080, local_port=0) as fwd:
        channel = await server.channel()
        reader, writer = await open_local(fwd.local_port)
        await channel.recv()
        await channel.send(protocol.connected(Proto.TCP, 1))
        await channel.send(data(Proto.TCP, 1, b"bye"))
        await channel.send(protocol.close(Proto.TCP, 1))
        assert await asyncio.wait_for(reader.read(), 5) == b"bye"  # then EOF
        writer.close()
        assert fwd.mux.streams == {}


async def test_error_closes_the_local_socket_and_shows_the_text(server, caplog):
    caplog.set_level(logging.WARNING, logger="hatchway.tunnel.forward")
    async with Forwarder(server.url, TASK, 8080, local_port=0) as fwd:
        channel = await server.channel()
        reader, writer = await open_local(fwd.local_port)
        await channel.recv()
        await channel.send(protocol.error(1, "Connection refused (os error 111)"))
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass  # aborted: equally closed
        writer.close()
        assert any("Connection refused (os error 111)" in r.getMessage() for r in caplog.records)


async def test_large_local_writes_become_messages_of_at_most_256_kib(server):
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
    async with Forwarder(server.url, TASK, 8080, local_port=0) as fwd:
        channel = await server.channel()
        _, writer = await open_local(fwd.local_port)
        writer.write(payload)
        await channel.recv()  # CONNECT
        got = bytearray()
        while len(got) < len(payload):
            msg = await channel.recv()
            assert msg.type is MsgType.DATA and 0 < len(msg.payload) <= 256 * 1024
            got += msg.payload
        assert got == payload
        writer.close()


async def test_handshake_error_text_is_raised_verbatim():
    async with FakeForwardServer(reply="Error: Task 42 is not running") as srv:
        with pytest.raises(ForwardError) as info:
            await Forwarder(srv.url, TASK, 8080, local_port=0).start()
        assert str(info.value) == "Error: Task 42 is not running"


async def test_handshake_waits_for_connected_and_times_out():
    async with FakeForwardServer(reply=None) as srv:
        fwd = Forwarder(srv.url, TASK, 8080, local_port=0, handshake_timeout=0.3)
        with pytest.raises(ForwardError, match="Timeout waiting for CONNECTED"):
            await fwd.start()


async def test_unreachable_server_is_a_clear_error():
    with pytest.raises(ForwardError, match="cannot connect"):
        await Forwarder(f"ws://127.0.0.1:{free_port()}", TASK, 8080, local_port=0).start()


async def test_far_side_ending_the_channel_closes_local_connections(server):
    fwd = Forwarder(server.url, TASK, 8080, local_port=0)
    await fwd.start()
    try:
        channel = await server.channel()
        reader, writer = await open_local(fwd.local_port)
        await channel.recv()
        await channel.ws.close()
        await asyncio.wait_for(fwd.wait_closed(), 5)
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass
        writer.close()
    finally:
        await fwd.close()


@pytest.mark.parametrize(
    "policy",
    [{"slow_consumer": "reset"}, {"slow_consumer": "block", "stall_timeout": 0.5}],
    ids=["reset-at-once", "block-then-stall-reset"],
)
async def test_a_local_reader_that_stops_does_not_stall_the_others(server, policy):
    async with Forwarder(server.url, TASK, 8080, local_port=0, buffer_limit=256 * 1024, **policy) as fwd:
        channel = await server.channel()
        _stalled_reader, stalled_writer = await open_local(fwd.local_port)  # never reads
        assert (await channel.recv()).client_id == 1
        reader, writer = await open_local(fwd.local_port)
        assert (await channel.recv()).client_id == 2
        reset = asyncio.ensure_future(channel.recv_until(lambda m: (m.type, m.client_id) == (MsgType.CLOSE, 1), 20))
        chunk = bytes(256 * 1024)
        for _ in range(256):  # up to 64 MiB toward the stalled reader
            if reset.done():
                break
            await channel.send(data(Proto.TCP, 1, chunk))
        await channel.send(data(Proto.TCP, 2, b"you are not blocked"))
        assert await asyncio.wait_for(reader.readexactly(19), 5) == b"you are not blocked"
        await reset  # only the stalled connection was reset
        assert set(fwd.mux.streams) == {2}
        stalled_writer.close()
        writer.close()


async def test_block_policy_waits_for_the_slow_reader_and_loses_nothing(server):
    async with Forwarder(server.url, TASK, 8080, local_port=0, slow_consumer="block", buffer_limit=64 * 1024) as fwd:
        channel = await server.channel()
        slow_reader, slow_writer = await open_local(fwd.local_port)
        await channel.recv()
        reader, writer = await open_local(fwd.local_port)
        await channel.recv()
        total = 8 * 1024 * 1024
        chunk = bytes(range(256)) * 256  # 64 KiB

        async def flood():
            for _ in range(total // len(chunk)):
                await channel.send(data(Proto.TCP, 1, chunk))
            await channel.send(data(Proto.TCP, 2, b"after"))

        sender = asyncio.ensure_future(flood())
        await wait_until(lambda: fwd.gate.blocked)  # the WebSocket is held for the slow reader
        got = await asyncio.wait_for(slow_reader.readexactly(total), 20)
        assert got == chunk * (total // len(chunk))
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"after"
        await sender
        slow_writer.close()
        writer.close()


async def test_block_policy_still_notices_a_lost_channel(server):
    # the heartbeat's ping is what meets the dead socket; the blocked read loop must then notice
    fwd = Forwarder(server.url, TASK, 8080, local_port=0, slow_consumer="block", buffer_limit=64 * 1024,
                    heartbeat=0.3)
    await fwd.start()
    try:
        channel = await server.channel()
        stalled_reader, stalled_writer = await open_local(fwd.local_port)  # never reads
        await channel.recv()
        sender = asyncio.ensure_future(_flood(channel, 1, 64 * 1024 * 1024))
        await wait_until(lambda: fwd.gate.blocked)
        channel.ws.transport.abort()  # the server vanishes while the forwarder waits for its reader
        await asyncio.wait_for(fwd.wait_closed(), 10)
        assert fwd.mux.streams == {}
        sender.cancel()
        stalled_writer.close()
    finally:
        await fwd.close()


async def _flood(channel, client_id, total, chunk=bytes(256 * 1024)):
    try:
        for _ in range(total // len(chunk)):
            await channel.send(data(Proto.TCP, client_id, chunk))
    except ConnectionError:
        pass


async def test_udp_one_id_per_source_and_replies_to_the_right_source(server):
    async with Forwarder(server.url, TASK, 5353, local_port=0, proto="udp", udp_idle_timeout=30) as fwd:
        channel = await server.channel()
        assert server.requests[0].query["proto"] == "udp"
        alice = await UdpClient.connect(fwd.local_port)
        bob = await UdpClient.connect(fwd.local_port)
        try:
            alice.send(b"from alice")
            got = [await channel.recv() for _ in range(2)]
            assert [(m.type, m.proto, m.client_id, m.port) for m in got] == [
                (MsgType.CONNECT, Proto.UDP, 1, 5353), (MsgType.DATA, Proto.UDP, 1, 0),
            ]
            assert got[1].payload == b"from alice"
            bob.send(b"from bob")
            got = [await channel.recv() for _ in range(2)]
            assert [(m.type, m.client_id, m.payload) for m in got] == [
                (MsgType.CONNECT, 2, b""), (MsgType.DATA, 2, b"from bob"),
            ]
            alice.send(b"again")
            again = await channel.recv()  # same source: same id, no new CONNECT
            assert (again.type, again.client_id, again.payload) == (MsgType.DATA, 1, b"again")
            await channel.send(data(Proto.UDP, 2, b"to bob"))
            await channel.send(data(Proto.UDP, 1, b"to alice"))
            assert await bob.recv() == b"to bob"
            assert await alice.recv() == b"to alice"
            await channel.send(protocol.close(Proto.UDP, 1))  # the far side released alice's flow
            await wait_until(lambda: 1 not in fwd.mux.streams)
            alice.send(b"new flow")
            renewed = await channel.recv()
            assert (renewed.type, renewed.client_id) == (MsgType.CONNECT, 3)
        finally:
            alice.close()
            bob.close()


async def test_udp_idle_flows_are_released_with_close(server):
    async with Forwarder(server.url, TASK, 5353, local_port=0, proto="udp", udp_idle_timeout=0.2) as fwd:
        channel = await server.channel()
        client = await UdpClient.connect(fwd.local_port)
        try:
            client.send(b"x")
            assert (await channel.recv()).type is MsgType.CONNECT
            assert (await channel.recv()).type is MsgType.DATA
            close = await channel.recv()
            assert (close.type, close.proto, close.client_id) == (MsgType.CLOSE, Proto.UDP, 1)
            client.send(b"y")
            assert (await channel.recv()).client_id == 2
        finally:
            client.close()
