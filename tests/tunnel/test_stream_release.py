"""Closed connections leave nothing behind: Runner + TunnelClient + Forwarder + an echo service in one process.

A user that closes its socket looks, to the forwarder, like one that only shut
down its write side; the forwarder keeps such a stream open for the reply
(issue #6 item 15). Its EOF crosses the tunnel as a zero-length DATA and the
client half-closes the service's socket, so an echo service sees EOF and
closes, and the stream ends everywhere. These tests turn the forwarder's
fallback (``eof_linger``, for a peer that ignores the EOF) off: nothing here
relies on it. Before, every connection stayed open in the forwarder, the
runner, the client and the service (the bench's ~28 KB per connection).
"""

from __future__ import annotations

import asyncio
import gc
import weakref

from fake_client import wait_until

from hatchway.common.relay import Pump
from hatchway.tunnel.client import TunnelClient
from hatchway.tunnel.forward import Forwarder
from hatchway.tunnel.runner import Runner

CID = "release-test"
N = 40


class _Echo(asyncio.Protocol):
    """Echoes until EOF, then closes (asyncio's default for ``eof_received``)."""

    def connection_made(self, transport):  # an asyncio or a uvloop transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _all_dead(refs: list[weakref.ref[object]]) -> bool:
    gc.collect()
    return all(ref() is None for ref in refs)


async def test_closed_connections_release_every_stream_object():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    service_port = server.sockets[0].getsockname()[1]
    try:
        async with Runner("127.0.0.1", 0, heartbeat=None) as runner, TunnelClient(
            runner.url, CID, reconnect_delay=0.1, heartbeat=0
        ) as client:
            session = await client.connected(10)
            link = await asyncio.wait_for(runner.wait_registered(CID), 10)
            async with Forwarder(runner.url, CID, service_port, local_port=0, eof_linger=None) as fwd:

                async def one(i: int) -> asyncio.StreamWriter:
                    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
                    payload = b"%08d" % i
                    writer.write(payload)
                    assert await asyncio.wait_for(reader.readexactly(8), 10) == payload
                    return writer

                writers = await asyncio.gather(*(one(i) for i in range(N)))
                await wait_until(lambda: len(session.streams) == N and len(link.routes) == N)
                refs: list[weakref.ref[object]] = []
                for table in (session.streams, fwd.mux.streams):
                    for stream in table.values():
                        endpoint = stream.endpoint
                        assert endpoint is not None
                        pump = endpoint.protocol
                        assert isinstance(pump, Pump)
                        refs += [weakref.ref(endpoint), weakref.ref(pump.relay)]  # Stream, Pump: __slots__
                assert len(refs) == 2 * N * 2
                del stream, endpoint, pump
                for writer in writers:
                    writer.close()  # a full close: the forwarder sees only an EOF
                del writers
                await wait_until(lambda: not session.streams and not fwd.mux.streams and not link.routes,
                                 what="every stream table empty after the users closed")
                await wait_until(lambda: _all_dead(refs), what="every channel and relay collected")
                # and the forward still works
                again = await one(N)
                again.close()
    finally:
        server.close()
        await server.wait_closed()


REPLY = 1024 * 1024
SLOW = 2.0  # the service thinks this long after the user's EOF (more than the old 0.5 s linger)


async def _slow_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request to its EOF (it sees the user's half-close), thinks, answers 1 MiB, closes."""
    request = await reader.read()
    await asyncio.sleep(SLOW)  # the slowness under test, not a wait for an event
    writer.write(request[:1] * REPLY)
    await writer.drain()
    writer.close()


async def test_a_half_closed_user_gets_the_whole_reply_of_a_slow_service():
    """#6 item 15: send, shutdown(SHUT_WR), the service sees EOF, replies 2 s later: nothing is cut."""
    server = await asyncio.start_server(_slow_reply, "127.0.0.1", 0)
    service_port = server.sockets[0].getsockname()[1]
    try:
        async with Runner("127.0.0.1", 0, heartbeat=None) as runner, TunnelClient(
            runner.url, CID, reconnect_delay=0.1, heartbeat=0
        ) as client:
            session = await client.connected(10)
            await asyncio.wait_for(runner.wait_registered(CID), 10)
            async with Forwarder(runner.url, CID, service_port, local_port=0) as fwd:
                reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
                writer.write(b"request")
                writer.write_eof()
                reply = await asyncio.wait_for(reader.read(), 20)
                assert len(reply) == REPLY and reply == b"r" * REPLY
                writer.close()
                await wait_until(lambda: not session.streams and not fwd.mux.streams,
                                 what="the stream ended everywhere after the service closed")
    finally:
        server.close()
        await server.wait_closed()
