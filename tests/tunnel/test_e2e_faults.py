"""Faults and takeovers with the real programs (issue #6 items 1, 2, 4, 15): runner, client and
forward run as separate processes; processes are killed with SIGKILL by their own PID."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from fake_client import RawPeer, TcpService
from test_e2e_cli import Program, address

CID = "kohakuriver-task-77"
TOKEN = "e2e-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHUNK = 64 * 1024


async def source_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A download that never ends on its own."""
    block = b"\x5a" * CHUNK
    while True:
        writer.write(block)
        await writer.drain()


async def request_reply_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads a 7-byte request, answers 1 MiB, then closes (cannot see the user's half-close)."""
    assert await reader.readexactly(7) == b"request"
    for _ in range(16):
        writer.write(b"\x33" * CHUNK)
        await writer.drain()


async def forward_handshake(base: str, container_id: str, headers: dict[str, str] | None = None) -> str:
    peer = await RawPeer.open(f"{base}/ws/forward/{container_id}/80", headers=headers or {})
    try:
        return await peer.text()
    finally:
        await peer.close()


async def registered(base: str, headers: dict[str, str] | None = None) -> bool:
    return await forward_handshake(base, CID, headers) == "CONNECTED"


class Stack:
    """Runner, client(s) and forward processes; everything killed by PID at the end."""

    def __init__(self) -> None:
        self.programs: list[Program] = []
        self.base = ""

    async def start(self, *args: str, ready: bool = True) -> Program:
        program = await Program.start(*args)
        self.programs.append(program)
        if ready:
            await program.ready()
        return program

    async def runner(self, *extra: str) -> Program:
        runner = await self.start("runner", "--host", "127.0.0.1", "--port", "0", "--log-level", "warn", *extra)
        self.base = f"ws://127.0.0.1:{address(await runner.ready())[1]}"
        return runner

    async def client(self, *extra: str) -> Program:
        return await self.start("--runner-url", self.base, "--container-id", CID, "--log-level", "warn",
                                "--reconnect-delay", "0", *extra)

    async def forward(self, port: int, *extra: str) -> tuple[Program, int]:
        program = await self.start("forward", CID, str(port), "-l", "0", "--url", self.base, *extra)
        return program, address(await program.ready())[1]

    def kill_all(self) -> None:
        for program in self.programs:
            program.kill()

    async def reap(self) -> None:
        for program in self.programs:
            program.kill()
            await program.exit_code()


@pytest.fixture
async def stack():
    s = Stack()
    yield s
    await s.reap()


async def _read_until_error(reader: asyncio.StreamReader) -> tuple[int, BaseException | None]:
    received = 0
    try:
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 20):
            received += len(chunk)
    except (ConnectionResetError, BrokenPipeError) as exc:
        return received, exc
    return received, None


async def _download(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"go")
    assert len(await asyncio.wait_for(reader.readexactly(4 * CHUNK), 20)) == 4 * CHUNK  # the download runs
    return reader, writer


async def test_killing_the_client_mid_download_resets_the_user(stack):
    """Item 4: a SIGKILLed tunnel client is an error at the user's socket, never a clean EOF."""
    async with TcpService(source_handler) as service:
        await stack.runner()
        client = await stack.client()
        await _until(lambda: registered(stack.base))
        _, port = await stack.forward(service.port)
        reader, writer = await _download(port)
        client.proc.kill()
        received, error = await _read_until_error(reader)
        assert isinstance(error, ConnectionResetError), f"clean EOF after {received} bytes"
        writer.close()


async def test_killing_the_runner_mid_download_resets_the_user_and_the_service(stack):
    """Item 4: the runner dies; both ends learn it as a reset."""
    service_end: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def watched_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await source_handler(reader, writer)
        except (ConnectionResetError, BrokenPipeError) as exc:
            service_end.set_result(exc)
        finally:
            if not service_end.done():
                service_end.set_result(None)

    async with TcpService(watched_source) as service:
        runner = await stack.runner()
        await stack.client()
        await _until(lambda: registered(stack.base))
        _, port = await stack.forward(service.port)
        reader, writer = await _download(port)
        runner.proc.kill()
        received, error = await _read_until_error(reader)
        assert isinstance(error, ConnectionResetError), f"clean EOF after {received} bytes"
        assert isinstance(await asyncio.wait_for(service_end, 20), (ConnectionResetError, BrokenPipeError))
        writer.close()


async def _half_closed_request(stack, handler) -> bytes:
    """Through runner, client and forward to a service running ``handler``: send ``request``, shut down
    the write side, and return the reply read to its end."""
    async with TcpService(handler) as service:
        await stack.runner()
        await stack.client()
        await _until(lambda: registered(stack.base))
        _, port = await stack.forward(service.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"request")
            writer.write_eof()
            return await asyncio.wait_for(reader.read(-1), 20)
        finally:
            writer.close()


async def test_half_closed_user_gets_the_whole_reply(stack):
    """Item 15: send, shut down the write side, read the reply to its end: nothing truncated."""
    assert await _half_closed_request(stack, request_reply_handler) == b"\x33" * (16 * CHUNK)


async def slow_reply_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request to its EOF (the user's half-close reaches it), thinks 2 s, answers 1 MiB, closes."""
    assert await reader.read() == b"request"
    await asyncio.sleep(2.0)  # the slowness under test (longer than the old 0.5 s linger)
    for _ in range(16):
        writer.write(b"\x44" * CHUNK)
        await writer.drain()


async def test_half_closed_user_gets_the_whole_reply_of_a_service_slow_to_answer(stack):
    """Item 15 with a service that waits for EOF and answers 2 s later: the whole reply, then EOF."""
    assert await _half_closed_request(stack, slow_reply_handler) == b"\x44" * (16 * CHUNK)


async def test_tunnel_registration_needs_the_token_and_cannot_be_taken_over(stack):
    """Items 1 and 2 with processes: a tokenless intruder is refused, a same-token replacement that
    dies (SIGKILL) hands the id back to the client still alive, and forwards keep working."""
    async with TcpService(_echo) as service:
        await stack.runner("--token", TOKEN)
        first = await stack.client("--token", TOKEN)
        await _until(lambda: registered(stack.base, AUTH))
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{stack.base}/ws/tunnel/{CID}")
            assert refused.value.status == 401
        intruder = await stack.start("--runner-url", stack.base, "--container-id", CID, "--log-level", "warn",
                                     "--max-reconnect", "1", "--reconnect-delay", "0", ready=False)
        assert await intruder.exit_code() != 0  # never registered: it gave up
        second = await stack.client("--token", TOKEN)  # the same credential may replace (a reconnect)
        _, port = await stack.forward(service.port, "--token", TOKEN)
        second.proc.kill()
        await second.exit_code()
        # the id falls back to the first client, which never stopped being connected
        await _until(lambda: _echo_once(port))
        assert first.proc.returncode is None


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


async def _echo_once(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"ping")
        return await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    finally:
        writer.close()


async def _until(check, timeout: float = 20.0) -> None:
    """Retry an async check (a handshake, a round trip) until it holds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
