import asyncio
import hashlib
import os

from common.wirepair import read_until_end
from hatchway.common.relay import Relay


async def start_echo():
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def start_relay(target_port):
    loop = asyncio.get_running_loop()
    relays = []

    def factory():
        relay = Relay()
        relays.append(relay)

        async def dial_back():
            await loop.create_connection(relay.back, "127.0.0.1", target_port)
            relay.join()

        asyncio.ensure_future(dial_back())
        return relay.front()

    server = await loop.create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], relays


async def test_relay_echoes_bytes_in_order_and_counts_them():
    echo, echo_port = await start_echo()
    relay_server, port, relays = await start_relay(echo_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = os.urandom(8 * 1024 * 1024)

    async def send():
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.ensure_future(send())
    got = await asyncio.wait_for(reader.read(-1), 30)
    await sender
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    writer.close()
    await asyncio.wait_for(relays[0].done, 5)
    assert relays[0].bytes_a_to_b == len(payload) == relays[0].bytes_b_to_a
    relay_server.close()
    echo.close()


async def test_relay_propagates_close_when_target_closes():
    async def handle(reader, writer):
        writer.write(b"bye")
        writer.close()

    target = await asyncio.start_server(handle, "127.0.0.1", 0)
    relay_server, port, relays = await start_relay(target.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(-1), 5) == b"bye"
    writer.close()
    await asyncio.wait_for(relays[0].done, 5)
    relay_server.close()
    target.close()


async def test_a_target_reset_reaches_the_client_as_a_reset_not_a_fin():
    """#6 item 4: asyncio's and uvloop's abort() alone would send FIN here (nothing unread)."""
    import socket
    import struct

    async def handle(reader, writer):
        writer.write(b"partial")
        await writer.drain()
        await reader.readexactly(4)  # the client saw "partial": now fail
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    target = await asyncio.start_server(handle, "127.0.0.1", 0)
    relay_server, port, relays = await start_relay(target.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.readexactly(7), 5) == b"partial"
    writer.write(b"next")
    _, error = await asyncio.wait_for(read_until_end(reader), 5)
    assert isinstance(error, ConnectionResetError)
    writer.close()
    await asyncio.wait_for(relays[0].done, 5)
    assert isinstance(relays[0].error, ConnectionResetError)
    relay_server.close()
    target.close()


async def test_relay_abort_resets_both_ends():
    async def handle(reader, writer):
        handled.set_result(await read_until_end(reader))

    handled = asyncio.get_running_loop().create_future()
    target = await asyncio.start_server(handle, "127.0.0.1", 0)
    relay_server, port, relays = await start_relay(target.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    await wait_joined(relays)
    relays[0].abort()
    _, error = await asyncio.wait_for(read_until_end(reader), 5)
    assert isinstance(error, ConnectionResetError)
    _, target_error = await asyncio.wait_for(handled, 5)
    assert isinstance(target_error, ConnectionResetError)
    writer.close()
    relay_server.close()
    target.close()


async def wait_joined(relays):
    from helpers import wait_until

    await wait_until(lambda: relays and relays[0].b.peer is not None, what="the relay joins")
