"""Reverse mode against an aiohttp backend route (the client library's ReverseRegistry): connect, exec,
attach, reconnects, the retry schedule, and the agent exiting with the main process's code (cases 27, 48)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import pytest
from agentproc import AgentProcess
from aiohttp import web

from hatchway.agent.client import ReverseRegistry
from hatchway.agent.reverse import redact_url, ws_url
from hatchway.common.httpapi import HttpServer, TcpAddress
from helpers import wait_until

TOKEN = "rev-token"


class Backend:
    def __init__(self) -> None:
        self.registry = ReverseRegistry(tokens={"c1": TOKEN})
        self.refuse = 0  # answer the next N dials with 503
        self.dials: list[float] = []
        self.bearer: list[str] = []
        app = web.Application()
        app.router.add_get("/internal/v1/agent/connect", self.connect)
        self.server = HttpServer(app, [TcpAddress("127.0.0.1", 0)])

    async def connect(self, request: web.Request) -> web.StreamResponse:
        self.dials.append(time.monotonic())
        self.bearer.append(request.headers.get("Authorization", ""))
        if self.refuse:
            self.refuse -= 1
            return web.Response(status=503)
        return await self.registry.handler(request)

    def url(self, ident: str = "c1", token: str = TOKEN) -> str:
        host, port = self.server.addresses[0]  # type: ignore[misc]
        return f"http://{host}:{port}/internal/v1/agent/connect?id={ident}&token={token}"


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    backend = Backend()
    await backend.server.start()
    yield backend
    await backend.registry.aclose()
    await backend.server.aclose()


def test_url_rules() -> None:
    assert ws_url("http://b/x?id=1") == "ws://b/x?id=1"
    assert ws_url("https://b/x") == "wss://b/x"
    assert ws_url("ws://b/x") == "ws://b/x" and ws_url("wss://b/x") == "wss://b/x"
    assert redact_url("ws://b/x?id=1&token=abc") == "ws://b/x?id=1&token=REDACTED"


async def test_reverse_exec_attach_reconnect_and_exit_code(backend: Backend) -> None:
    main = ["sh", "-c", "echo main-started; read line; echo got $line; exit 9"]
    async with AgentProcess(["-callback", backend.url(), "-keep-alive", "--", *main], token=TOKEN,
                            wait_ready=False) as agent:
        client = await backend.registry.wait_for("c1", timeout=20)
        assert backend.bearer[-1] == f"Bearer {TOKEN}"
        result = await client.collect(["sh", "-c", "echo hello; exit 4"])
        assert (result.stdout, result.code) == (b"hello\n", 4)
        await client.aclose()  # the backend drops the socket: the agent dials again (backoff reset to ~1 s)
        client = await backend.registry.wait_for("c1", timeout=20)
        assert backend.registry.registrations == 2
        attach = await client.attach()
        events = attach.events()
        assert (await anext(events)).data == b"main-started\n"
        await attach.write(b"bye\n")
        assert (await anext(events)).data == b"got bye\n"
        assert await attach.wait() == 9  # the attacher's exit comes before the agent closes the socket
        assert await agent.wait() == 9


async def test_reverse_run_imports_no_server_half(backend: Backend) -> None:
    """A reverse-mode start, connection and exec load no aiohttp.web (the server half) and no wsserver/httpapi."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # = python -X importtime: every import on stderr
    async with AgentProcess(["-callback", backend.url(), "-keep-alive", "--", "sh", "-c", "read x; exit 3"],
                            token=TOKEN, env=env, wait_ready=False,
                            command=[sys.executable, "-m", "hatchway.agent"]) as agent:  # the module run, always
        client = await backend.registry.wait_for("c1", timeout=20)
        result = await client.collect(["sh", "-c", "echo hi"])
        assert (result.stdout, result.code) == (b"hi\n", 0)
        agent.signal(signal.SIGTERM)
        assert await agent.wait() == 128 + signal.SIGTERM
    imported = {line.rsplit("|", 1)[1].strip() for line in agent.stderr.decode().splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "hatchway.agent.connection" in imported and "hatchway.common.wsclient" in imported
    server_half = sorted(name for name in imported
                         if name.startswith("aiohttp.web") or name in ("hatchway.common.wsserver",
                                                                       "hatchway.common.httpapi",
                                                                       "hatchway.agent.server"))
    assert server_half == []


async def test_retries_go_beyond_ten_with_capped_backoff_reset_after_success(backend: Backend, start_agent) -> None:
    backend.refuse = 12
    agent = await start_agent(callback=backend.url(), keep_alive=True, argv=["sleep", "30"], token=TOKEN,
                              retry_initial=0.02, retry_max=0.08)
    client = await backend.registry.wait_for("c1", timeout=20)
    assert len(backend.dials) == 13
    gaps = [b - a for a, b in zip(backend.dials, backend.dials[1:], strict=False)]
    assert max(gaps) < 0.08 * 1.2 + 0.5  # capped (jitter 20 %, scheduling slack)
    assert gaps[-1] >= 0.08 * 0.8  # grew to the cap
    before = len(backend.dials)
    await client.aclose()
    assert agent.dialer is not None
    dialer = agent.dialer
    await wait_until(lambda: dialer.connected == 2, what="reconnected")
    assert len(backend.dials) == before + 1  # at once, after the reset backoff (no failed dial between)
    assert backend.dials[-1] - backend.dials[-2] >= 0.02 * 0.8


async def test_retry_limit_gives_up(backend: Backend) -> None:
    backend.refuse = 100
    async with AgentProcess(["-callback", backend.url(), "-reverse-retries", "3", "-keep-alive", "--", "sleep", "30"],
                            wait_ready=False) as agent:
        assert await agent.wait(timeout=30) == 1
    assert len(backend.dials) == 3 and b"reverse connect failed" in agent.stderr


async def test_backend_token_check(backend: Backend, start_agent) -> None:
    backend.registry.tokens["c2"] = "other"
    agent = await start_agent(callback=backend.url("c2", "wrong"), token="", retry_initial=0.01, retry_max=0.01)
    await wait_until(lambda: len(backend.dials) >= 3, what="refused dials repeated")
    assert "c2" not in backend.registry.clients
    assert agent.dialer is not None and agent.dialer.connected == 0
