"""The status API on the direct backend: /health, /status shape and fields, 404, 500 (cases 16-22)."""

from __future__ import annotations

import datetime
import json

import aiohttp
import pytest
from origins import InProcess

from hatchway.sidecar import DirectScript
from hatchway.sidecar.status import NodeInfo, PeerStatus, Status, rfc3339

KEYS = ["name", "hostname", "tailscale_ips", "online", "direct", "relayed_via", "current_address", "rx_bytes",
        "tx_bytes", "last_seen", "last_handshake"]


async def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_health_any_method(method: str, sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start(statusport="0")
    base = sidecar.status_url.removesuffix("/status")
    assert await get(base + "/health", method) == (200, "text/plain; charset=utf-8", b"OK")


async def test_status_shape_no_peers(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start(statusport="0", script=DirectScript(fqdn="ts-proxy.tail.example."))
    status, ctype, body = await get(sidecar.status_url)
    assert (status, ctype) == (200, "application/json")
    assert body.endswith(b"}\n") and b" " not in body.strip()  # compact, Go json.Encoder's newline
    doc = json.loads(body)
    assert list(doc) == ["self", "peers", "backend_state"]
    assert doc["peers"] == []  # never null (upstream defect D3)
    assert list(doc["self"]) == KEYS
    assert doc["self"]["tailscale_ips"] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    assert doc["self"]["hostname"] == "ts-proxy" and doc["self"]["name"] == "ts-proxy.tail.example."
    assert doc["backend_state"] == "Running"


async def test_unknown_path_404(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start(statusport="0")
    base = sidecar.status_url.removesuffix("/status")
    assert await get(base + "/nosuch") == (404, "text/plain; charset=utf-8", b"404 page not found\n")


def test_direct_is_current_address_set() -> None:
    """Upstream's formula (CurAddr set and Relay empty) is false on a direct path; hatchway's is the CLI's (D4)."""
    direct = PeerStatus.of(NodeInfo(current_address="10.99.0.1:50881", relay="fake"))
    assert direct.direct is True and direct.relayed_via == "fake"
    relayed = PeerStatus.of(NodeInfo(relay="fake"))
    assert relayed.direct is False and relayed.relayed_via == "fake"


def test_times_rfc3339_or_empty() -> None:
    when = datetime.datetime(2026, 12, 2, 16, 40, 44, 123456, tzinfo=datetime.UTC)
    peer = PeerStatus.of(NodeInfo(last_seen=when))
    assert peer.last_seen == "2026-12-02T16:40:44Z" and peer.last_handshake == ""
    plus2 = datetime.datetime(2026, 12, 2, 18, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert rfc3339(plus2) == "2026-12-02T18:00:00+02:00"


async def test_scripted_peers(sidecars: InProcess) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    peer = NodeInfo(name="svc.tail.example.", hostname="svc", tailscale_ips=["100.64.0.2"], online=True,
                    current_address="10.99.0.1:41641", relay="fake", rx_bytes=5, tx_bytes=7, last_handshake=when)
    sidecar, _ = await sidecars.start(statusport="0", script=DirectScript(peers=[peer]))
    doc = json.loads((await get(sidecar.status_url))[2])
    assert doc["peers"] == [{
        "name": "svc.tail.example.", "hostname": "svc", "tailscale_ips": ["100.64.0.2"], "online": True,
        "direct": True, "relayed_via": "fake", "current_address": "10.99.0.1:41641", "rx_bytes": 5, "tx_bytes": 7,
        "last_seen": "", "last_handshake": "2026-01-02T03:04:05Z",
    }]
    assert Status(self_=PeerStatus()).encode().startswith(b'{"self":{"name":""')


async def test_status_api_loopback_only(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start(statusport="0")
    assert sidecar.status_api is not None
    assert [host for host, _ in sidecar.status_api.addresses] == ["127.0.0.1"]  # type: ignore[misc]
    assert sidecar.front is not None and [host for host, _ in sidecar.front.bound] == ["127.0.0.1"]


async def test_status_error_500(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start(statusport="0", script=DirectScript(status_error="LocalAPI down"))
    assert await get(sidecar.status_url) == (500, "text/plain; charset=utf-8", b"failed to get status: LocalAPI down\n")
