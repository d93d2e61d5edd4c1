"""The client library: bridges to Docker stream framing against a mock agent (cases 1-5, 49), and the
collect helpers, resize and signal against the real agent."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from agentwire import TOKEN, b64
from aiohttp import WSMsgType, web

from hatchway.agent.client import AgentClient, AgentError, bridge_attach, bridge_exec
from hatchway.agent.dockerstream import FrameReader, frame_header
from hatchway.common.httpapi import HttpServer, TcpAddress


class MockAgent:
    """Answers exec with stdout "<cmd joined>\\n" then exit 0, attach with "attached\\n" then exit 0."""

    def __init__(self, flood: int = 0) -> None:
        self.flood = flood
        app = web.Application()
        app.router.add_get("/ws", self.ws)
        self.server = HttpServer(app, [TcpAddress("127.0.0.1", 0)])

    async def ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            ident = message.get("id", "")
            if message["type"] == "exec":
                for i in range(self.flood):
                    await ws.send_str(json.dumps({"type": "stdout", "id": ident, "data": b64(f"{i:08d}".encode())}))
                text = " ".join(message["cmd"]) + "\n"
                await ws.send_str(json.dumps({"type": "stdout", "id": ident, "data": b64(text.encode())}))
                await ws.send_str(json.dumps({"type": "exit", "id": ident, "code": 0}))
            elif message["type"] == "attach":
                await ws.send_str(json.dumps({"type": "stdout", "id": ident, "data": b64(b"attached\n")}))
                await ws.send_str(json.dumps({"type": "exit", "id": ident, "code": 0}))
        return ws

    @property
    def addr(self) -> str:
        host, port = self.server.addresses[0]  # type: ignore[misc]
        return f"{host}:{port}"


@pytest.fixture
async def mock_agent() -> AsyncIterator[MockAgent]:
    agent = MockAgent()
    await agent.server.start()
    yield agent
    await agent.server.aclose()


class DockerSide:
    """A socket pair standing in for the hijacked Docker connection."""

    async def __aenter__(self) -> DockerSide:
        ours, theirs = socket.socketpair()
        self.reader, self.writer = await asyncio.open_connection(sock=ours)
        self.docker_reader, self.docker_writer = await asyncio.open_connection(sock=theirs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in (self.writer, self.docker_writer):
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def test_bridge_exec_non_tty_frames(mock_agent: MockAgent) -> None:  # 1
    async with AgentClient.connect(mock_agent.addr) as client, DockerSide() as docker:
        task = asyncio.ensure_future(bridge_exec(client, docker.reader, docker.writer, ["echo", "hello"]))
        header = await docker.docker_reader.readexactly(8)
        assert header == bytes([1, 0, 0, 0, 0, 0, 0, 11])
        assert await docker.docker_reader.readexactly(11) == b"echo hello\n"
        docker.docker_writer.close()
        assert await asyncio.wait_for(task, 5) == 0


async def test_bridge_exec_tty_raw_and_attach(mock_agent: MockAgent) -> None:  # 2, 5
    async with AgentClient.connect(mock_agent.addr) as client, DockerSide() as docker:
        code = await bridge_exec(client, docker.reader, docker.writer, ["echo", "hi"], tty=True)
        assert code == 0 and await docker.docker_reader.readexactly(8) == b"echo hi\n"
        code = await bridge_attach(client, docker.reader, docker.writer, tty=True)
        assert code == 0 and await docker.docker_reader.readexactly(9) == b"attached\n"


async def test_three_concurrent_bridges_and_close(mock_agent: MockAgent) -> None:  # 3, 4
    async with AgentClient.connect(mock_agent.addr) as client:
        sides = [await DockerSide().__aenter__() for _ in range(3)]
        try:
            codes = await asyncio.gather(*(bridge_exec(client, None, side.writer, ["echo", f"n{i}"], id=f"id{i}")
                                           for i, side in enumerate(sides)))
            assert codes == [0, 0, 0]
            for i, side in enumerate(sides):
                reader = FrameReader()
                frames = reader.feed(await side.docker_reader.readexactly(8 + len(f"echo n{i}\n")))
                assert frames == [(1, f"echo n{i}\n".encode())]
        finally:
            for side in sides:
                await side.__aexit__()
        await client.aclose()
        await asyncio.wait_for(client.done, 1)


async def test_flood_then_exit_is_never_dropped() -> None:  # 49
    agent = MockAgent(flood=5000)
    await agent.server.start()
    try:
        async with AgentClient.connect(agent.addr) as client, DockerSide() as docker:
            task = asyncio.ensure_future(bridge_exec(client, None, docker.writer, ["x"]))
            reader = FrameReader()
            frames: list[tuple[int, bytes]] = []
            while len(frames) < 5001:
                frames += reader.feed(await docker.docker_reader.read(65536))
                if len(frames) < 50:
                    await asyncio.sleep(0.01)  # a slow Docker client at first
            assert [f[1] for f in frames[:5000]] == [f"{i:08d}".encode() for i in range(5000)]
            assert await task == 0
    finally:
        await agent.server.aclose()


async def test_collect_error_text_resize_and_signal(start_agent) -> None:
    agent = await start_agent()
    host, port = agent.address
    async with AgentClient.connect(f"{host}:{port}", TOKEN) as client, DockerSide() as docker:
        result = await client.collect(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"x" * 100_000)
        assert (len(result.stdout), result.stderr, result.code) == (100_000, b"err\n", 3)
        code = await bridge_exec(client, None, docker.writer, ["no-such-command-xyz"])
        assert code == 127
        header = await docker.docker_reader.readexactly(8)
        stream, length = struct.unpack(">BxxxI", header)
        text = await docker.docker_reader.readexactly(length)
        assert stream == 2 and b"executable file not found" in text and header == frame_header(2, length)
        session = await client.exec(["sh", "-c", "read x; stty size; sleep 30"], tty=True)
        await session.resize(90, 20)
        await session.write(b"\n")
        events = session.events()
        output = b""
        while b"20 90" not in output:
            output += (await anext(events)).data
        await session.signal("KILL")
        async for _ in events:
            pass
        assert session.code == 137
    with pytest.raises(AgentError):
        await client.collect(["true"])


class UpstreamStyleAgent(MockAgent):
    """Behaves like the Go agent on a spawn failure (an `error`, never an `exit`) and sends a system message."""

    async def ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"lifetime_expired"}')
        async for msg in ws:
            message = json.loads(msg.data)
            if message["type"] == "exec":
                await ws.send_str(json.dumps({"type": "error", "id": message["id"],
                                              "message": "fork/exec /nope: no such file or directory"}))
        return ws


async def test_upstream_agent_errors_and_system_messages() -> None:
    agent = UpstreamStyleAgent()
    await agent.server.start()
    system: list[object] = []
    try:
        async with AgentClient.connect(agent.addr, on_system=system.append, upstream_errors=True) as client:
            with pytest.raises(AgentError, match="agent error: fork/exec /nope"):
                await client.collect(["/nope"])
            assert [type(m).__name__ for m in system] == ["LifetimeExpired"]
    finally:
        await agent.server.aclose()


async def test_reverse_registry_replaces_an_older_registration(start_agent) -> None:  # 27
    from hatchway.agent.client import ReverseRegistry

    registry = ReverseRegistry()
    app = web.Application()
    app.router.add_get("/internal/v1/agent/connect", registry.handler)
    server = HttpServer(app, [TcpAddress("127.0.0.1", 0)])
    await server.start()
    try:
        host, port = server.addresses[0]  # type: ignore[misc]
        url = f"http://{host}:{port}/internal/v1/agent/connect?id=dup"
        await start_agent(callback=url, token="", retry_initial=60.0)  # once replaced, it stays away
        first = await registry.wait_for("dup")
        await start_agent(callback=url, token="", retry_initial=60.0)
        await asyncio.wait_for(first.done, 10)  # the older one is closed when the newer registers
        second = await registry.wait_for("dup")
        assert second is not first and registry.registrations >= 2
        assert (await second.collect(["echo", "second"])).stdout == b"second\n"
    finally:
        await registry.aclose()
        await server.aclose()
