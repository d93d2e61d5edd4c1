"""Loopback origin servers for the proxy tests: they record what arrives and answer as scripted."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable

from hatchway.sidecar import DirectBackend, DirectScript, Sidecar, SidecarConfig
from hatchway.sidecar.signals import SignalWriter

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Origin:
    """``async with Origin(handler) as o``: listening on ``o.port`` (127.0.0.1, or ``host``)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Origin:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._clients.add(writer)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self._clients.discard(writer)

        self.server = await asyncio.start_server(serve, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self._clients):
            writer.close()
        await self.server.wait_closed()

    async def read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head


def fixed(body: bytes, headers: str = "Content-Type: text/plain\r\n") -> Callable[[Origin], Handler]:
    def make(origin: Origin) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await origin.read_head(reader)
            writer.write(f"HTTP/1.1 200 OK\r\n{headers}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()

        return handler

    return make


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


class InProcess:
    """Sidecars started in the test's loop on the direct backend; all closed at teardown."""

    def __init__(self, statedir: str) -> None:
        self.statedir = statedir
        self.started: list[tuple[Sidecar, io.StringIO]] = []

    async def start(self, mode: str = "http", script: DirectScript | None = None, *, statusport: str = "",
                    backend: DirectBackend | None = None, dial_timeout: float = 10.0) -> tuple[Sidecar, io.StringIO]:
        out = io.StringIO()
        config = SidecarConfig(port="0", statusport=statusport, mode=mode, statedir=self.statedir, backend="direct",
                               dial_timeout=dial_timeout)
        sidecar = Sidecar(config, backend=backend or DirectBackend(script or DirectScript()), signals=SignalWriter(out))
        await sidecar.start()
        self.started.append((sidecar, out))
        return sidecar, out

    async def aclose(self) -> None:
        for sidecar, _ in self.started:
            await sidecar.aclose()
