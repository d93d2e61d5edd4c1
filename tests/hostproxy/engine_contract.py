"""The Engine API contract the host proxy relies on, run against the fake engine and a real dockerd.

``Engine`` is what a test supplies: the socket path and a way to create labelled
containers (running or stopped) in that engine.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from hatchway.hostproxy.engine import DockerError, EngineClient
from hatchway.hostproxy.watcher import AGENT_FILTERS

# make(name, labels, running) -> container id
Make = Callable[[str, dict[str, str], bool], Awaitable[str]]

MANAGED = "dev.clawker.managed"
PURPOSE = "dev.clawker.purpose"


async def raw_get(socket_path: str, path: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path)) as http:
        async with http.get("http://docker" + path) as r:
            return r.status, dict(r.headers), await r.read()


async def run_contract(socket_path: str, make: Make) -> None:
    agent = await make("agent", {MANAGED: "true", PURPOSE: "agent"}, True)
    await make("monitor", {MANAGED: "true", PURPOSE: "monitoring"}, True)
    await make("fw", {MANAGED: "true", PURPOSE: "firewall"}, True)
    stopped = await make("old-agent", {MANAGED: "true", PURPOSE: "agent"}, False)
    client = EngineClient(socket_path)
    try:
        ids = [c.id for c in await client.list_containers(AGENT_FILTERS)]
        assert ids == [agent], ids  # AND of the label filters, running only
        # both encodings of the filter
        from urllib.parse import quote

        for encoded in (json.dumps({"label": {f"{MANAGED}=true": True, f"{PURPOSE}=agent": True}}),
                        json.dumps({"label": [f"{MANAGED}=true", f"{PURPOSE}=agent"]})):
            status, _, body = await raw_get(socket_path, "/containers/json?filters=" + quote(encoded))
            assert status == 200 and [c["Id"] for c in json.loads(body)] == [agent]
        # key presence, exact value, and no != support
        assert len(await client.list_containers({"label": [PURPOSE]})) == 3
        assert len(await client.list_containers({"label": [f"{PURPOSE}=monitoring"]})) == 1
        assert await client.list_containers({"label": [f"{MANAGED}=true", f"{PURPOSE}!=monitoring"]}) == []
        # all=1 lists stopped containers as exited
        every = {c.id: c for c in await client.list_containers(AGENT_FILTERS, all=True)}
        assert set(every) == {agent, stopped} and every[stopped].state == "exited"
        # errors
        try:
            await client.list_containers({"bogus": ["x"]})
            raise AssertionError("unknown filter accepted")
        except DockerError as exc:
            assert exc.status == 400 and exc.message == "Invalid filter 'bogus'"
        status, _, _ = await raw_get(socket_path, "/containers/json?filters=notjson")
        assert status == 500
        status, _, body = await raw_get(socket_path, "/v1.99/containers/json")
        assert status == 400 and json.loads(body)["message"].startswith("client version 1.99 is too new. Maximum "
                                                                         "supported API version is ")
        status, _, _ = await raw_get(socket_path, "/v1.41/containers/json")
        assert status == 200
        status, headers, body = await raw_get(socket_path, "/_ping")
        assert status == 200 and body == b"OK"
        for name in ("Api-Version", "Ostype", "Docker-Experimental", "Server"):
            assert name in headers, name
    finally:
        await client.close()


def unused(*_: Any) -> None:
    pass
