"""Tunnel client, TCP connections (tunnel.md sections 5.3 and 7; acceptance cases 10-21)."""

import asyncio
import hashlib
import os
import socket

import pytest
from fake_runner import tunnel_client
from local_services import TcpService, bye_then_close, closed_port, echo, read_until_eof

from hatchway.tunnel import protocol
from hatchway.tunnel.protocol import MAX_DATA_PAYLOAD, Message, MsgType, Proto


@pytest.fixture
async def service():
    """A service whose accepted connections the test drives itself."""
    svc = await TcpService().start()
    yield svc
    await svc.stop()


def messages_for(peer, client_id):
    return [m for m in peer.log if m.client_id == client_id]


async def test_case10_connect_answers_connected_then_echoes(runner, echo_service):
    async with tunnel_client(runner) as (_, peer):
        await peer.connect(1, echo_service.port)
        reply = await peer.recv(1, timeout=2)
        assert reply == Message(MsgType.CONNECTED, Proto.TCP, 1, 0, b"")
        await peer.data(1, b"Hello, Tunnel World!")
        assert await peer.recv(1, timeout=2) == Message(MsgType.DATA, Proto.TCP, 1, 0, b"Hello, Tunnel World!")


async def test_case11_early_data_is_buffered_and_delivered_in_order(runner, service):
    chunks = [bytes([i]) * (1000 + i) for i in range(8)]
    async with tunnel_client(runner) as (_, peer):
        # CONNECT and every DATA go out back to back, before CONNECTED can arrive.
        batch = [protocol.connect(Proto.TCP, 5, service.port)]
        batch += [protocol.data_header(Proto.TCP, 5) + chunk for chunk in chunks]
        for message in batch:
            await peer.send(message)
        reader, writer = await service.accepted()
        await peer.expect(MsgType.CONNECTED, 5)
        await peer.close_id(5)
        assert await read_until_eof(reader) == b"".join(chunks)


async def test_case12_13_refused_dial_gives_error_then_the_id_is_reusable(runner, echo_service):
    port = closed_port()
    async with tunnel_client(runner) as (client, peer):
        await peer.connect(3, port)
        error = await peer.recv(3, timeout=2)
        assert error == Message(MsgType.ERROR, Proto.TCP, 3, 0, b"Connection refused (os error 111)")
        await peer.settled(3, client.session.tasks)  # no CLOSE follows
        assert 3 not in client.session.streams  # D2: the entry is dropped
        await peer.connect(3, echo_service.port)
        assert await peer.recv(3, timeout=2) == Message(MsgType.CONNECTED, Proto.TCP, 3, 0, b"")


async def test_case14_duplicate_connect_gets_one_connected(runner, echo_service):
    async with tunnel_client(runner) as (client, peer):
        await peer.connect(4, echo_service.port)
        await peer.connect(4, echo_service.port)
        await peer.expect(MsgType.CONNECTED, 4)
        await peer.settled(4, client.session.tasks)  # every dial has ended: one CONNECTED only


async def test_case15_16_service_that_writes_and_closes(runner):
    bye = await TcpService(bye_then_close).start()
    try:
        async with tunnel_client(runner) as (client, peer):
            await peer.connect(6, bye.port)
            await peer.expect(MsgType.CONNECTED, 6)
            assert (await peer.expect(MsgType.DATA, 6)).payload == b"bye"
            await peer.expect(MsgType.CLOSE, 6)
            # Case 16: no runner CLOSE, yet the id can be reused at once (D2).
            await peer.connect(6, bye.port)
            await peer.expect(MsgType.CONNECTED, 6)
            assert (await peer.expect(MsgType.DATA, 6)).payload == b"bye"
            await peer.expect(MsgType.CLOSE, 6)
            assert [m.type for m in messages_for(peer, 6)] == [MsgType.CONNECTED, MsgType.DATA, MsgType.CLOSE] * 2
    finally:
        await bye.stop()


async def test_case17_id_reusable_right_after_runner_close(runner, echo_service):
    async with tunnel_client(runner) as (_, peer):
        await peer.open_tcp(7, echo_service.port)
        await peer.close_id(7)
        await peer.connect(7, echo_service.port)
        await peer.expect(MsgType.CONNECTED, 7, timeout=2)
        await peer.data(7, b"again")
        assert (await peer.expect(MsgType.DATA, 7)).payload == b"again"


async def test_case18_runner_close_delivers_queued_bytes_gives_eof_then_silence(runner, service):
    async with tunnel_client(runner) as (client, peer):
        await peer.open_tcp(8, service.port)
        reader, writer = await service.accepted()
        await peer.data(8, b"last words")
        await peer.close_id(8)
        assert await read_until_eof(reader) == b"last words"  # queued bytes, then EOF
        writer.write(b"too late")
        writer.close()
        await writer.wait_closed()
        await peer.settled(8, client.session.tasks)  # D3: no late DATA, no unsolicited CLOSE
        assert 8 not in client.session.streams


async def test_case19_each_connection_is_connected_data_close_in_order(runner):
    bye = await TcpService(bye_then_close).start()
    try:
        async with tunnel_client(runner) as (_, peer):
            ids = range(100, 120)
            await asyncio.gather(*(peer.connect(i, bye.port) for i in ids))
            for i in ids:
                await peer.expect(MsgType.CONNECTED, i)
                assert (await peer.expect(MsgType.DATA, i)).payload == b"bye"
                await peer.expect(MsgType.CLOSE, i)
            for i in ids:
                assert [m.type for m in messages_for(peer, i)] == [MsgType.CONNECTED, MsgType.DATA, MsgType.CLOSE]
    finally:
        await bye.stop()


BULK = 64 * 1024 * 1024  # acceptance case 20 uses 1 GiB: that is a bench item (bench/)


async def test_case20_bulk_runner_to_service_is_byte_exact(runner, service):
    block = os.urandom(1 << 20)
    async with tunnel_client(runner) as (_, peer):
        await peer.open_tcp(20, service.port)
        reader, _ = await service.accepted()
        expected = hashlib.sha256()
        received = hashlib.sha256()

        async def sink() -> int:
            total = 0
            while total < BULK:
                chunk = await reader.read(1 << 20)
                assert chunk, "EOF before all bytes arrived"
                received.update(chunk)
                total += len(chunk)
            return total

        sinking = asyncio.ensure_future(sink())
        view = memoryview(block)
        for n in range(BULK // len(block)):
            rotated = bytes(view[n:]) + bytes(view[:n])  # every MiB differs
            expected.update(rotated)
            for start in range(0, len(rotated), MAX_DATA_PAYLOAD):
                await peer.data(20, rotated[start : start + MAX_DATA_PAYLOAD])
        async with asyncio.timeout(30):
            assert await sinking == BULK
        assert received.hexdigest() == expected.hexdigest()


async def test_case20_bulk_service_to_runner_is_byte_exact_in_64k_messages(runner, service):
    async with tunnel_client(runner) as (_, peer):
        await peer.open_tcp(21, service.port)
        _, writer = await service.accepted()
        expected = hashlib.sha256()

        async def source() -> None:
            for n in range(BULK >> 20):
                block = hashlib.sha256(n.to_bytes(4, "big")).digest() * (1 << 15)  # 1 MiB, distinct per n
                expected.update(block)
                writer.write(block)
                await writer.drain()
            writer.close()

        sourcing = asyncio.ensure_future(source())
        received = hashlib.sha256()
        largest = await peer.collect_data(21, BULK, received.update, timeout=60)
        await sourcing
        assert received.hexdigest() == expected.hexdigest()
        assert largest <= MAX_DATA_PAYLOAD
        await peer.expect(MsgType.CLOSE, 21)


async def test_case21_empty_data_is_the_users_half_close(runner, echo_service):
    """Hatchway's extension of case 21 (upstream: a no-op): a zero-length DATA half-closes the service's
    socket; the echo service sees EOF after what came before it and closes: CLOSE."""
    async with tunnel_client(runner) as (_, peer):
        await peer.open_tcp(22, echo_service.port)
        await peer.data(22, b"x")
        assert await peer.recv(22) == Message(MsgType.DATA, Proto.TCP, 22, 0, b"x")
        await peer.data(22, b"y")
        await peer.data(22, b"")
        assert await peer.recv(22) == Message(MsgType.DATA, Proto.TCP, 22, 0, b"y")
        await peer.expect(MsgType.CLOSE, 22)


async def test_local_reads_larger_than_64k_are_sliced_into_64k_data(runner, service):
    async with tunnel_client(runner) as (_, peer):
        await peer.open_tcp(23, service.port)
        _, writer = await service.accepted()
        payload = os.urandom(1 << 20)
        writer.write(payload)  # one write: the client's reads may be up to 256 KiB
        got = bytearray()
        largest = await peer.collect_data(23, len(payload), got.extend)
        assert bytes(got) == payload and largest <= MAX_DATA_PAYLOAD


async def test_tcp_nodelay_on_the_websocket_and_on_local_sockets(runner, echo_service):
    async with tunnel_client(runner) as (client, peer):
        await peer.open_tcp(24, echo_service.port)
        session = client.session
        ws_socket = session.ws.get_extra_info("socket")
        local_socket = session.streams[24].endpoint.local.get_extra_info("socket")
        assert ws_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert local_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_ipv6_fallback_reaches_a_service_bound_only_to_loopback_v6(runner):
    v6 = await TcpService(echo, host="::1").start()
    try:
        async with tunnel_client(runner) as (_, peer):
            await peer.open_tcp(25, v6.port)
            await peer.data(25, b"six")
            assert (await peer.expect(MsgType.DATA, 25)).payload == b"six"
        async with tunnel_client(runner, ipv6_fallback=False) as (_, peer):
            await peer.connect(26, v6.port)
            error = await peer.expect(MsgType.ERROR, 26)
            assert error.payload == b"Connection refused (os error 111)"
    finally:
        await v6.stop()


async def test_local_dial_timeout_gives_error(runner):
    # A listener that never accepts, with its backlog full: further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        async with tunnel_client(runner, connect_timeout=0.3, ipv6_fallback=False) as (client, peer):
            await peer.connect(27, port)
            error = await peer.expect(MsgType.ERROR, 27, timeout=3)
            assert error.payload == b"Connection timed out (os error 110)"
            assert 27 not in client.session.streams
    finally:
        for sock in fillers + [listener]:
            sock.close()


async def test_close_right_after_early_data_still_delivers_it(runner, service):
    async with tunnel_client(runner) as (client, peer):
        for message in (protocol.connect(Proto.TCP, 30, service.port),
                        protocol.data_header(Proto.TCP, 30) + b"GET / HTTP/1.0\r\n\r\n",
                        protocol.close(Proto.TCP, 30)):
            await peer.send(message)
        reader, _ = await service.accepted()
        assert await read_until_eof(reader) == b"GET / HTTP/1.0\r\n\r\n"
        assert 30 not in client.session.streams
        await peer.ping(30)
        assert (await peer.recv(30)).type is MsgType.PONG  # nothing for id 30 came before the PONG
