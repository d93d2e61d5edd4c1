"""Host proxy test harness: a recording opener, a client for a running server, server construction."""

from __future__ import annotations

from typing import Any

import aiohttp

from hatchway.hostproxy.browser import BrowserError
from hatchway.hostproxy.gitcred import GitCredentialRunner
from hatchway.hostproxy.server import HostProxyServer, ServerConfig
from hatchway.hostproxy.tokens import Grant, TokenRegistry

TOKEN_A = "a" * 43
TOKEN_B = "b" * 43


class RecordingOpener:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: str | None = None

    async def open(self, url: str) -> None:
        self.calls.append(url)
        if self.fail is not None:
            raise BrowserError(self.fail)


class Proxy:
    """A started server plus a client that sends container A's token by default."""

    def __init__(self, server: HostProxyServer, session: aiohttp.ClientSession, opener: RecordingOpener) -> None:
        self.server = server
        self.http = session
        self.opener = opener
        self.base = f"http://127.0.0.1:{server.port}"

    def headers(self, token: str | None = TOKEN_A, **extra: str) -> dict[str, str]:
        h = {"Content-Type": "application/json", **extra}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return h

    async def post(self, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = TOKEN_A,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        import json

        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(self.base + path, data=data, headers={**self.headers(token), **(headers or {})}) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.content_type == "application/json" else text)

    async def get(self, path: str, *, token: str | None = TOKEN_A) -> tuple[int, Any]:
        import json

        async with self.http.get(self.base + path, headers=self.headers(token)) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.content_type == "application/json" else text)

    async def delete(self, path: str, *, token: str | None = TOKEN_A) -> tuple[int, Any]:
        async with self.http.delete(self.base + path, headers=self.headers(token)) as r:
            return r.status, await r.json()


def make_server(tmp_path: Any, git_home: dict[str, str] | None = None, **config: Any) -> tuple[HostProxyServer, RecordingOpener]:
    opener = RecordingOpener()
    tokens = TokenRegistry(grants=[Grant(TOKEN_A, "container-a", "proj", ["github.com"]),
                                   Grant(TOKEN_B, "container-b", "proj", [])])
    neutral = str(tmp_path / "neutral")
    git = GitCredentialRunner(neutral, environ=git_home, timeout=config.pop("git_timeout", 10.0)) if git_home else None
    server = HostProxyServer(ServerConfig(port=0, bind=["127.0.0.1"], neutral_dir=neutral, **config),
                             tokens=tokens, opener=opener, git=git)
    return server, opener


