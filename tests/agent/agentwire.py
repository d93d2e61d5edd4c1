"""The raw JSON wire of the agent for tests: messages kept per session id."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict, deque
from collections.abc import Awaitable
from typing import Any

import aiohttp

TOKEN = "testtoken"


class Wire:
    """The raw JSON message protocol over one WebSocket, messages kept per session id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.by_id: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self.order: list[dict[str, Any]] = []

    async def send(self, **fields: Any) -> None:
        await self.ws.send_str(json.dumps(fields))

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _receive(self, timeout: float) -> dict[str, Any]:
        msg = await self.ws.receive(timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"agent sent {msg.type!r} ({msg.data!r})"
        message: dict[str, Any] = json.loads(msg.data)
        self.order.append(message)
        return message

    async def next(self, ident: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message for session ``ident`` ("" for messages without id)."""
        queue = self.by_id[ident]
        while not queue:
            message = await self._receive(timeout)
            self.by_id[message.get("id", "")].append(message)
        return queue.popleft()

    async def run(self, ident: str, timeout: float = 20.0) -> tuple[bytes, bytes, list[dict[str, Any]]]:
        """Messages of ``ident`` up to its exit: (stdout, stderr, all messages)."""
        out, err, seen = bytearray(), bytearray(), []
        while True:
            message = await self.next(ident, timeout)
            seen.append(message)
            if message["type"] == "stdout":
                out += base64.b64decode(message["data"])
            elif message["type"] == "stderr":
                err += base64.b64decode(message["data"])
            elif message["type"] == "exit":
                return bytes(out), bytes(err), seen


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def gather_all(*aws: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*aws))
