"""A fake KohakuRiver runner for tests: the runner side of ``/ws/tunnel/{id}``.

It speaks the real wire protocol (``hatchway.tunnel.protocol``) over aiohttp
on 127.0.0.1 and records what the client does:

* :class:`FakeRunner` accepts a WebSocket on *any* path (so URL-rule tests can
  see doubled paths and queries) and hands each one out as a
  :class:`TunnelPeer` via :meth:`FakeRunner.next_tunnel`. ``behaviour``
  decides what it does with the next tunnels: ``"serve"`` (read and record),
  ``"close"`` (close right after the handshake) or ``"silent"`` (accept and
  never read again: no pongs, no FIN).
* :class:`TunnelPeer` sends tunnel messages and receives the client's,
  decoded, per client id and in arrival order.
* :class:`FrameTap` is a TCP proxy that parses the frames the client sends,
  to check masking and opcodes on the wire.

Every wait is bounded by a timeout. Reusable by any test that needs a runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from hatchway.tunnel import protocol
from hatchway.tunnel.protocol import Message, MsgType, Proto

TIMEOUT = 5.0
TUNNEL_MARK = "/ws/tunnel/"


class TunnelPeer:
    """The runner's end of one tunnel WebSocket."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._barriers = 0
        self.transport = request.transport
        self.path = request.raw_path.split("?", 1)[0]
        self.raw_path = request.raw_path  # path and query exactly as requested
        self.query_string = request.query_string
        self.headers = dict(request.headers)
        self.header_names = [name for name, _ in request.raw_headers]
        self.container_id = request.raw_path.rpartition(TUNNEL_MARK)[2] if TUNNEL_MARK in request.raw_path else None
        self.accepted_at = asyncio.get_running_loop().time()
        self.log: list[Message] = []  # every message from the client, in order
        self.texts: list[str] = []  # text messages from the client (must stay empty)
        self.ended = asyncio.Event()
        self.ended_at: float | None = None
        self.client_close_code: int | None = None  # the code of a close frame the client sent
        self._queues: dict[int, asyncio.Queue[Message]] = {}
        self._arrived = asyncio.Event()

    # -- receiving
    async def read_loop(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    decoded = protocol.decode(msg.data)
                    message = Message(decoded.type, decoded.proto, decoded.client_id, decoded.port,
                                      bytes(decoded.payload))
                    self.log.append(message)
                    self.queue(message.client_id).put_nowait(message)
                    self._arrived.set()
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    self.texts.append(msg.data)
        finally:
            if self.ws.close_code is not None and self.client_close_code is None:
                self.client_close_code = self.ws.close_code
            self.mark_ended()

    def mark_ended(self) -> None:
        if not self.ended.is_set():
            self.ended_at = asyncio.get_running_loop().time()
            self.ended.set()

    def queue(self, client_id: int) -> asyncio.Queue[Message]:
        queue = self._queues.get(client_id)
        if queue is None:
            queue = self._queues[client_id] = asyncio.Queue()
        return queue

    async def recv(self, client_id: int, timeout: float = TIMEOUT) -> Message:
        """The next message the client sent for ``client_id``."""
        async with asyncio.timeout(timeout):
            return await self.queue(client_id).get()

    async def expect(self, mtype: MsgType, client_id: int, timeout: float = TIMEOUT) -> Message:
        """The next message for ``client_id``, which must be of type ``mtype``."""
        message = await self.recv(client_id, timeout)
        assert message.type is mtype, f"expected {mtype.name} for id {client_id}, got {message}"
        return message

    def pending(self, client_id: int) -> int:
        return self.queue(client_id).qsize()

    async def quiet(self, seconds: float, client_id: int | None = None) -> None:
        """Assert that nothing (for ``client_id``, or at all) arrives within ``seconds``."""
        before = len(self.log)
        queue = None if client_id is None else self.queue(client_id)
        assert queue is None or queue.empty(), f"unexpected pending message: {queue.get_nowait()}"
        await asyncio.sleep(seconds)  # the spec states these cases as "nothing within N s"
        if client_id is None:
            assert len(self.log) == before, f"unexpected messages: {self.log[before:]}"
        else:
            assert queue.empty(), f"unexpected message for id {client_id}: {queue.get_nowait()}"

    async def barrier(self) -> None:
        """A PING/PONG round trip: everything the client sent before answering it has arrived."""
        self._barriers += 1
        barrier_id = 0xFFFFFF00 + self._barriers % 256
        await self.ping(barrier_id)
        await self.expect(MsgType.PONG, barrier_id)

    async def settled(self, client_id: int, tasks: Any = None) -> None:
        """Nothing more is pending for ``client_id`` once the client's own tasks (its dials) have
        finished (``tasks``: the session's TaskSet) and a barrier has come back: event-based, no window."""
        if tasks is not None:
            await tasks.join()
        await self.barrier()
        queue = self.queue(client_id)
        assert queue.empty(), f"unexpected message for id {client_id}: {queue.get_nowait()}"

    async def collect_data(self, client_id: int, nbytes: int, sink: Any, timeout: float = 30.0) -> int:
        """Receive DATA for ``client_id`` into ``sink(payload)`` until ``nbytes``; returns max payload size."""
        got = largest = 0
        async with asyncio.timeout(timeout):
            while got < nbytes:
                message = await self.queue(client_id).get()
                assert message.type is MsgType.DATA, message
                sink(message.payload)
                got += len(message.payload)
                largest = max(largest, len(message.payload))
        assert got == nbytes, (got, nbytes)
        return largest

    # -- sending
    async def send(self, raw: bytes | bytearray | memoryview) -> None:
        await self.ws.send_bytes(raw)

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def connect(self, client_id: int, port: int, proto: Proto = Proto.TCP) -> None:
        await self.send(protocol.connect(proto, client_id, port))

    async def data(self, client_id: int, payload: bytes | memoryview, proto: Proto = Proto.TCP) -> None:
        await self.send(protocol.data_header(proto, client_id) + bytes(payload))

    async def close_id(self, client_id: int, proto: Proto = Proto.TCP) -> None:
        await self.send(protocol.close(proto, client_id))

    async def ping(self, client_id: int = 0, proto: Proto = Proto.TCP, port: int = 0, payload: bytes = b"") -> None:
        await self.send(protocol.pack_header(MsgType.PING, proto, client_id, port) + payload)

    async def open_tcp(self, client_id: int, port: int, timeout: float = TIMEOUT) -> Message:
        """CONNECT and wait for the reply, which must be CONNECTED."""
        await self.connect(client_id, port)
        return await self.expect(MsgType.CONNECTED, client_id, timeout)

    async def close(self, code: int = 1000) -> None:
        """Close the tunnel WebSocket from the runner side."""
        try:
            async with asyncio.timeout(TIMEOUT):
                await self.ws.close(code=code)
        except (TimeoutError, ConnectionError):
            pass
        self.mark_ended()

    def abort(self) -> None:
        """The runner vanishes: reset the TCP connection without a close frame."""
        if self.transport is not None:
            self.transport.abort()
        self.mark_ended()

    async def wait_ended(self, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            await self.ended.wait()


class FakeRunner:
    """An aiohttp server on 127.0.0.1 that accepts tunnel WebSockets on any path."""

    def __init__(self, behaviour: str = "serve") -> None:
        self.behaviour = behaviour
        self.tunnels: list[TunnelPeer] = []
        self.port = 0
        self.scheme = "ws"
        self._new: asyncio.Queue[TunnelPeer] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0, ssl_context: Any = None) -> FakeRunner:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_context)
        self.scheme = "wss" if ssl_context is not None else "ws"
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def next_tunnel(self, timeout: float = TIMEOUT) -> TunnelPeer:
        async with asyncio.timeout(timeout):
            return await self._new.get()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        peer = TunnelPeer(request, ws)
        self.tunnels.append(peer)
        behaviour = self.behaviour
        self._new.put_nowait(peer)
        if behaviour == "close":
            await peer.close()
        elif behaviour == "silent":  # accept, then never read: pings go unanswered
            await self._stopping.wait()
            peer.mark_ended()
        else:
            await peer.read_loop()
        return ws

    async def stop(self) -> None:
        self._stopping.set()
        open_peers = [peer.close() for peer in self.tunnels if not peer.ws.closed]
        if open_peers:
            await asyncio.gather(*open_peers)
        if self._runner is not None:
            await self._runner.cleanup()


from helpers import wait_until  # noqa: E402,F401  (the one wait helper; re-exported for the tunnel tests)


@contextlib.asynccontextmanager
async def tunnel_client(
    runner: FakeRunner, container_id: str = "test", url: str | None = None, **options: Any
) -> AsyncIterator[tuple[Any, TunnelPeer]]:
    """A hatchway TunnelClient (Python API) connected to ``runner``: yields (client, peer)."""
    from hatchway.tunnel.client import TunnelClient

    options.setdefault("reconnect_delay", 0.1)
    async with TunnelClient(url or runner.url, container_id, **options) as client:
        peer = await runner.next_tunnel()
        await client.connected(TIMEOUT)
        yield client, peer


class FrameTap:
    """A TCP proxy in front of a runner that parses the frames the client sends.

    ``frames`` lists ``(opcode, masked, payload_length)`` for every client frame
    after the HTTP upgrade request.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frames: list[tuple[int, bool, int]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> FrameTap:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        down = asyncio.ensure_future(_copy(up_reader, writer))
        self._tasks.add(down)
        parser = _FrameParser(self.frames)
        try:
            while chunk := await reader.read(65536):
                parser.feed(chunk)
                up_writer.write(chunk)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            up_writer.close()
            await asyncio.wait({down})  # ends on its own, or was cancelled by stop()
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class _FrameParser:
    """Incremental RFC 6455 frame-header parser for one direction of a connection."""

    def __init__(self, frames: list[tuple[int, bool, int]]) -> None:
        self.frames = frames
        self.buffer = bytearray()
        self.upgraded = False

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buffer[: end + 4]
            self.upgraded = True
        while self._one_frame():
            pass

    def _one_frame(self) -> bool:
        buf = self.buffer
        if len(buf) < 2:
            return False
        opcode, masked, length = buf[0] & 0x0F, bool(buf[1] & 0x80), buf[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return False
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return False
            (length,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        offset += 4 if masked else 0
        if len(buf) < offset + length:
            return False
        self.frames.append((opcode, masked, length))
        del buf[: offset + length]
        return True
