"""The management API mounted on hatchway's real LinkSocks server (api.setup), over loopback HTTP and WebSocket."""

from __future__ import annotations

import aiohttp
import pytest

from hatchway.linksocks import protocol
from hatchway.linksocks.api import DEFAULT_VERSION
from hatchway.linksocks.server import Server

KEY = "engine-key"


@pytest.fixture
async def server():
    async with Server(ws_host="127.0.0.1", ws_port=0, api_key=KEY, api_keys=["spare"]) as running:
        yield running


@pytest.fixture
async def http(server):
    host, port = server.ws_address[:2]
    async with aiohttp.ClientSession(f"http://{host}:{port}", headers={"X-API-Key": KEY}) as session:
        yield session


async def json_of(response: aiohttp.ClientResponse):
    async with response:
        return response.status, await response.json(content_type=None)


async def test_banner_mentions_the_api(http):
    async with http.get("/") as response:
        assert response.status == 200
        assert "is running. API endpoints available at /api/*" in await response.text()


async def test_keys_are_checked(http, server):
    async with http.get("/api/status", headers={"X-API-Key": "nope"}) as response:
        assert response.status == 401
    async with http.get("/api/status", headers={"X-API-Key": "spare"}) as response:
        assert response.status == 200


async def test_tokens_added_through_the_api_authenticate_and_are_counted(http, server):
    status, body = await json_of(await http.post("/api/token", json={"type": "forward", "token": "api-fwd"}))
    assert (status, body) == (200, {"success": True, "token": "api-fwd"})
    query = {"token": protocol.token_hash("api-fwd"), "reverse": "false", "instance": protocol.uuid_text(b"\1" * 16)}
    async with http.ws_connect("/socket", params=query) as ws:
        message = await ws.receive_bytes(timeout=5)
        assert protocol.decode(message)[1] == protocol.AuthResponse(True)
        status, body = await json_of(await http.get("/api/status"))
        assert status == 200
        assert body == {
            "version": getattr(server, "version", DEFAULT_VERSION),
            "tokens": [{"token": "api-fwd", "type": "forward", "clients_count": 1}],
            "direct": {"enabled": False},
        }


async def test_reverse_token_lifecycle(http, server):
    status, body = await json_of(await http.post("/api/token", json={"type": "reverse", "token": "api-rev"}))
    assert status == 200 and body["success"] is True and 1024 <= body["port"] <= 10240
    assert "api-rev" in server.listeners
    status, body = await json_of(await http.delete("/api/token/api-rev"))
    assert (status, body) == (200, {"success": True, "token": "api-rev"})
    assert "api-rev" not in server.listeners and server.tokens.get("api-rev") is None


async def test_access_config_replaces_the_server_rules(http, server):
    put = {"entry": [{"addrs": ["10.0.0.0/8"], "ports": [22]}], "dial": [{"ports": [[1, 1024]]}]}
    status, body = await json_of(await http.put("/api/config/access", json=put))
    assert (status, body) == (200, {"success": True})
    assert server.entry_rules.allows("10.1.1.1", 22) and not server.entry_rules.allows("10.1.1.1", 23)
    assert server.dial_rules.allows("192.0.2.1", 80) and not server.dial_rules.allows("192.0.2.1", 8080)
    status, body = await json_of(await http.get("/api/config/access"))
    assert body == {"entry": [{"Addrs": ["10.0.0.0/8"], "Ports": [22]}], "dial": [{"Addrs": [], "Ports": [[1, 1024]]}]}
