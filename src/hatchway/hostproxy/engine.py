"""A thin Docker Engine API client over ``DOCKER_HOST``'s unix socket (aiohttp + msgspec, no Docker SDK)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ContainerSummary", "DockerError", "EngineClient", "EngineEvent", "socket_path"]

DEFAULT_HOST = "unix:///var/run/docker.sock"


class DockerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"docker: {status}: {message}" if status else f"docker: {message}")
        self.status = status
        self.message = message


class ContainerSummary(msgspec.Struct, rename="pascal"):
    id: str = ""
    names: list[str] = []
    image: str = ""
    labels: dict[str, str] | None = None
    state: str = ""
    status: str = ""


class EventActor(msgspec.Struct, frozen=True, rename="pascal"):
    id: str = ""
    attributes: dict[str, str] | None = None


class EngineEvent(msgspec.Struct):
    Type: str = ""
    Action: str = ""
    Actor: EventActor = EventActor()
    id: str = ""
    status: str = ""

    @property
    def container_id(self) -> str:
        return self.Actor.id or self.id


class _Message(msgspec.Struct):
    message: str = ""


def socket_path(environ: Mapping[str, str] | None = None) -> str:
    host = (os.environ if environ is None else environ).get("DOCKER_HOST") or DEFAULT_HOST
    if not host.startswith("unix://"):
        raise DockerError(0, f"only unix:// DOCKER_HOST is supported, got {host!r}")
    return host[len("unix://"):]


def encode_filters(filters: Mapping[str, Sequence[str]]) -> str:
    return json.dumps({key: list(values) for key, values in filters.items()}, separators=(",", ":"))


class EngineClient:
    """``list_containers`` and ``events``; ``close`` ends the connection pool."""

    def __init__(self, path: str | None = None, *, timeout: float = 10.0) -> None:
        self.path = path or socket_path()
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # the client half of aiohttp only where a Docker call is made (not with --no-watch)

            self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.path))
        return self._session

    async def _get(self, path: str, params: dict[str, str]) -> bytes:
        import aiohttp

        try:
            async with self._http().get("http://docker" + path, params=params,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                body = await r.read()
                if r.status != 200:
                    raise DockerError(r.status, _message(body))
                return body
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DockerError(0, str(exc) or type(exc).__name__) from None

    async def list_containers(self, filters: Mapping[str, Sequence[str]] | None = None,
                              *, all: bool = False) -> list[ContainerSummary]:
        params = {"filters": encode_filters(filters or {})}
        if all:
            params["all"] = "1"
        body = await self._get("/containers/json", params)
        try:
            return msgspec.json.decode(body, type=list[ContainerSummary])
        except msgspec.DecodeError as exc:
            raise DockerError(0, f"bad container list: {exc}") from None

    async def events(self, filters: Mapping[str, Sequence[str]]) -> AsyncIterator[EngineEvent]:
        """Stream events until the engine ends the stream; DockerError on failure."""
        import aiohttp

        try:
            async with self._http().get("http://docker/events", params={"filters": encode_filters(filters)},
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)) as r:
                if r.status != 200:
                    raise DockerError(r.status, _message(await r.read()))
                decoder = msgspec.json.Decoder(EngineEvent)
                async for line in r.content:
                    if line.strip():
                        yield decoder.decode(line)
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerError(0, str(exc) or type(exc).__name__) from None

    async def close(self) -> None:
        self.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(body: bytes) -> str:
    try:
        return msgspec.json.decode(body, type=_Message).message or body.decode("utf-8", "replace").strip()
    except (msgspec.DecodeError, msgspec.ValidationError):
        return body.decode("utf-8", "replace").strip()
