"""Local services on 127.0.0.1 that the tunnel client dials in tests.

* :class:`TcpService` with a handler (``echo``, ``bye_then_close``), or with
  none: accepted connections are then handed to the test (``await accepted()``)
  so it can stall, read, write and watch for EOF itself.
* :class:`UdpEcho`: echoes every datagram.
* :func:`closed_port`: a port nothing listens on (TCP and UDP).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

TIMEOUT = 5.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpService:
    def __init__(self, handler: Handler | None = None, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self._accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> TcpService:
        self._server = await asyncio.start_server(self._handle, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.handler is None:
            self._accepted.put_nowait((reader, writer))
            return
        try:
            await self.handler(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def accepted(self, timeout: float = TIMEOUT) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(timeout):
            return await self._accepted.get()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self.writers:
            writer.transport.abort()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def bye_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"bye")
    await writer.drain()


async def read_until_eof(reader: asyncio.StreamReader, timeout: float = TIMEOUT) -> bytes:
    """Everything the service receives until EOF."""
    chunks = []
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.received: list[int] = []  # sizes, in order

    async def start(self) -> UdpEcho:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        assert self.transport is not None
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(len(data))
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port with no listener (bound once to pick it, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
