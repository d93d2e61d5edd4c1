"""A fake Docker Engine API on a unix socket, with Docker's real filter rules and errors (spec 13.2).

Test control is in-process: ``add``/``stop``/``remove`` containers, ``fail_next``
to make the next N requests answer 500, ``emit`` to push an event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from aiohttp import web

MAX_API = "1.41"


class FakeContainer:
    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.id = hashlib.sha256(f"{name}{time.time_ns()}".encode()).hexdigest()
        self.name = name
        self.labels = labels
        self.running = True


def _labels(value: Any) -> list[str]:
    if isinstance(value, dict):  # the set form Go clients send: {"k=v": true}
        return [k for k, v in value.items() if v]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise ValueError("bad filter")


class FakeEngine:
    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.failures = 0
        self.requests = 0
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.streams = 0
        self.runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._middleware])
        for prefix in ("", "/v{version}"):
            app.router.add_get(prefix + "/_ping", self.ping)
            app.router.add_get(prefix + "/version", self.version)
            app.router.add_get(prefix + "/containers/json", self.list)
            app.router.add_get(prefix + "/events", self.stream_events)
        self.app = app

    # -- control
    def add(self, name: str, **labels: str) -> FakeContainer:
        c = FakeContainer(name, {k.replace("__", "."): v for k, v in labels.items()})
        self.containers[c.id] = c
        return c

    def stop(self, c: FakeContainer) -> None:
        c.running = False
        self.events.put_nowait({"Type": "container", "Action": "die", "Actor": {"ID": c.id, "Attributes": {}},
                                "id": c.id, "status": "die"})

    def fail_next(self, n: int) -> None:
        self.failures = n

    async def start(self, path: str) -> None:
        self.runner = web.AppRunner(self.app, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.UnixSite(self.runner, path).start()

    async def aclose(self) -> None:
        for _ in range(self.streams):
            self.events.put_nowait(None)  # ends each open event stream
        if self.runner is not None:
            await self.runner.cleanup()

    # -- API
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        version = request.match_info.get("version")
        if version is not None and tuple(map(int, version.split("."))) > tuple(map(int, MAX_API.split("."))):
            return web.json_response({"message": f"client version {version} is too new. Maximum supported API "
                                                 f"version is {MAX_API}"}, status=400)
        if self.failures > 0 and request.path.endswith("/containers/json"):
            self.failures -= 1
            return web.json_response({"message": "injected failure"}, status=500)
        return await handler(request)

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Api-Version": MAX_API, "Ostype": "linux",
                                                "Docker-Experimental": "false", "Server": "Docker/20.10.24 (linux)"})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": MAX_API, "Version": "20.10.24-fake"})

    async def list(self, request: web.Request) -> web.Response:
        try:
            filters = json.loads(request.query.get("filters") or "{}")
        except ValueError:
            return web.json_response({"message": "invalid character in filters"}, status=500)
        for key in filters:
            if key not in ("label", "status", "id", "name"):
                return web.json_response({"message": f"Invalid filter '{key}'"}, status=400)
        wanted = _labels(filters.get("label", []))
        show_all = request.query.get("all") in ("1", "true", "True")
        out = []
        for c in self.containers.values():
            if not c.running and not show_all:
                continue
            ok = True
            for item in wanted:
                key, sep, value = item.partition("=")  # first '=': "k!=v" asks for label "k!"
                if key not in c.labels or (sep and c.labels[key] != value):
                    ok = False
            if ok:
                out.append({"Id": c.id, "Names": [f"/{c.name}"], "Image": "busybox", "ImageID": "sha256:0",
                            "Command": "sleep", "Created": 0, "Ports": [], "Labels": c.labels,
                            "State": "running" if c.running else "exited", "Status": "Up" if c.running else "Exited",
                            "HostConfig": {}, "NetworkSettings": {}, "Mounts": []})
        return web.json_response(out)

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        try:
            filters = json.loads(request.query.get("filters") or "{}")
        except ValueError:
            return web.json_response({"message": "invalid filters"}, status=500)
        for key in filters:
            if key not in ("type", "container", "event", "label"):
                return web.json_response({"message": f"Invalid filter '{key}'"}, status=400)

        def wanted(event: dict[str, Any]) -> bool:
            for key, field in (("type", event["Type"]), ("event", event["Action"])):
                if key in filters and field not in _labels(filters[key]):
                    return False
            if "container" in filters:
                ids = _labels(filters["container"])
                c = self.containers.get(event["Actor"]["ID"])
                if not any(event["Actor"]["ID"].startswith(i) or (c is not None and c.name == i) for i in ids):
                    return False
            return True

        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        self.streams += 1
        try:
            while True:
                event = await self.events.get()
                if event is None:
                    return response
                if not wanted(event):
                    continue
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        finally:
            self.streams -= 1
