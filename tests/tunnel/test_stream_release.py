"""Closed connections leave nothing behind: Runner + TunnelClient + Forwarder + an echo service in one process.

A user that closes its socket looks, on the wire, like one that only shut down
its write side; the forwarder keeps such a stream open for the reply (issue #6
item 15). An echo service waits for an EOF the protocol cannot carry, so
without a bound every connection stayed open in the forwarder, the runner, the
client and the service (the bench's ~28 KB per connection never released).
The kept-open stream now ends once the far side stays silent (Channel's
``eof_linger``): the stream tables empty and every channel and relay is
collected.
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
    """Echoes and never closes on its own (it waits for an EOF that never comes)."""

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
            async with Forwarder(runner.url, CID, service_port, local_port=0) as fwd:

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
