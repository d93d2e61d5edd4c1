"""Fixtures of the agent tests: an in-process agent on loopback, a raw JSON wire to it."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import aiohttp  # noqa: E402
import pytest  # noqa: E402
from agentwire import TOKEN, Wire  # noqa: E402

from hatchway.agent.service import Agent, AgentConfig  # noqa: E402


@pytest.fixture
async def start_agent() -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    agents: list[Agent] = []

    async def start(**options: Any) -> Agent:
        options.setdefault("addr", "127.0.0.1:0")
        options.setdefault("copy_output", False)
        options.setdefault("token", TOKEN)
        agent = Agent(AgentConfig(**options))
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.aclose()


@pytest.fixture
async def wire_to() -> AsyncIterator[Callable[..., Awaitable[Wire]]]:
    sessions: list[aiohttp.ClientSession] = []
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def connect(agent: Agent, token: str | None = TOKEN, **kwargs: Any) -> Wire:
        host, port = agent.address
        session = aiohttp.ClientSession()
        sessions.append(session)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ws = await session.ws_connect(f"ws://{host}:{port}/ws", headers=headers, **kwargs)
        sockets.append(ws)
        return Wire(ws)

    yield connect
    for ws in sockets:
        await ws.close()
    for session in sessions:
        await session.close()


