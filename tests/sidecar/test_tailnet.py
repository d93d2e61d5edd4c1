"""On a real tailnet, offline (sidecar.md 11, cases 37-44): hatchway's sidecar on the arkitekt-mesh backend
reaches caddy's tsnet node ``svc`` by short name, full name and IP through HTTP absolute-URI, CONNECT and SOCKS5;
the reference Go sidecar (from arkitekt-gateway) runs on the same tailnet for the differential test."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest
from peers import installed_file
from scproc import SIDECAR, SidecarProc
from tailnet import AUTH_KEY, CONTROL_URL, SVC_BODY, FakeTailnet

from helpers import wait_until

pytestmark = pytest.mark.interop

PROXY_PORT, STATUS_PORT = 18080, 19090
GO_PORT, GO_STATUS_PORT = 28080, 29090


HATCHWAY = SIDECAR  # $HATCHWAY_SIDECAR_CMD: a built executable instead of the venv


def hatchway(net: FakeTailnet, state: Path, *extra: str) -> SidecarProc:
    args = ["-coordserver", CONTROL_URL, "-authkey", AUTH_KEY, "-statedir", str(state), "-hostname", "hw", *extra]
    return SidecarProc(args, command=net.command(HATCHWAY), env=net.env())


def go_sidecar(net: FakeTailnet, state: Path, *extra: str) -> SidecarProc:
    binary = installed_file("arkitekt-gateway", "arkitekt-sidecar")
    args = ["-coordserver", CONTROL_URL, "-authkey", AUTH_KEY, "-statedir", str(state), "-hostname", "gosc", *extra]
    return SidecarProc(args, command=net.command([binary]), env=net.env())


async def curl(net: FakeTailnet, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*net.command(["curl", "-sS", "-m", "20", *args]),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def status_of(net: FakeTailnet, port: int) -> dict[str, object]:
    code, body = await curl(net, f"http://127.0.0.1:{port}/status")
    assert code == 0, body
    doc: dict[str, object] = json.loads(body)
    return doc


@pytest.mark.asyncio(loop_scope="function")
async def test_mesh_sidecar_reaches_service_by_every_name(fake_tailnet: FakeTailnet, tmp_path: Path) -> None:
    net = fake_tailnet
    svc_ip = net.ipv4_of("svc")
    async with hatchway(net, tmp_path / "state", "-port", str(PROXY_PORT), "-statusport", str(STATUS_PORT)) as sc:
        assert await sc.ready() == f"http://127.0.0.1:{PROXY_PORT}"
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        for url in ("http://svc/", "http://svc.tail.example/", f"http://{svc_ip}/"):
            assert await curl(net, "-x", proxy, url) == (0, SVC_BODY), url
            assert await curl(net, "-p", "-x", proxy, url) == (0, SVC_BODY), f"CONNECT {url}"
        assert await curl(net, "-x", proxy, "http://svc:8081/") == (0, "port 8081")
        code, body = await curl(net, "-i", "-x", proxy, "http://nosuch/")
        assert code == 0 and body.startswith("HTTP/1.1 502 ")  # no host DNS fallback (decision 8.3, case 41)
        assert body.endswith("\r\n\r\nProxy Error: nosuch:80: no peer named nosuch on the mesh\n")
        doc = await status_of(net, STATUS_PORT)
        connected = sc.signal_of("CONNECTED")
        assert connected is not None
        assert doc["peers"] == []  # arkitekt-mesh 0.8.0 exposes no peers (documented limitation)
        assert f"ips=[{' '.join(doc['self']['tailscale_ips'])}]" == connected.detail  # type: ignore[index]
        assert doc["backend_state"] == "Running"
        assert (net.node("hw") or {}).get("online") is True
        assert await sc.terminate() == 0
    assert sc.lines[-1] == "@@SIDECAR:SHUTDOWN@@"
    await wait_until(lambda: (net.node("hw") or {}).get("online") is False, what="control sees hw go offline")


@pytest.mark.asyncio(loop_scope="function")
async def test_mesh_socks5_resolves_tailnet_names(fake_tailnet: FakeTailnet, tmp_path: Path) -> None:
    net = fake_tailnet
    async with hatchway(net, tmp_path / "state", "-port", str(PROXY_PORT), "-mode", "socks5") as sc:
        assert await sc.ready() == f"socks5://127.0.0.1:{PROXY_PORT}"
        for url in ("http://svc/", "http://svc.tail.example/", f"http://{net.ipv4_of('svc')}/"):
            assert await curl(net, "--socks5-hostname", f"127.0.0.1:{PROXY_PORT}", url) == (0, SVC_BODY), url
        await sc.terminate()
    assert "[SOCKS5] Dialing svc:80 via Tailscale" in sc.lines


SIGNAL_FORMATS = {
    "STARTING": r"v?\d+\.\d+\.\d+",
    "CONNECTING": r"\S+",
    "CONNECTED": r"ips=\[100\.64\.0\.\d+ fd7a:115c:a1e0::\d+\]",
    "LISTENING": r"mode=(http|socks5) addr=127\.0\.0\.1:\d+",
    "READY": r"(http|socks5)://127\.0\.0\.1:\d+",
}


async def head_and_body(net: FakeTailnet, url: str, *args: str) -> tuple[str, str, bytes]:
    """(status line, Content-Type, body) of one request through curl inside the namespace."""
    proc = await asyncio.create_subprocess_exec(*net.command(["curl", "-sS", "-i", "-m", "20", *args, url]),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("content-type:")), "")
    return lines[0], ctype, body


def key_types(entry: dict[str, object]) -> dict[str, str]:
    return {k: type(v).__name__ for k, v in entry.items()}


@pytest.mark.asyncio(loop_scope="function")
async def test_differential_against_the_go_sidecar(fake_tailnet: FakeTailnet, tmp_path: Path) -> None:
    """Same tailnet, same requests. Allowed differences: SHUTDOWN (Go prints none), peers [] on mesh (Go lists them),
    the `direct` fix, header stripping, no added gzip."""
    net = fake_tailnet
    go = go_sidecar(net, tmp_path / "go", "-port", str(GO_PORT), "-statusport", str(GO_STATUS_PORT))
    hw = hatchway(net, tmp_path / "hw", "-port", str(PROXY_PORT), "-statusport", str(STATUS_PORT))
    async with go, hw:
        await asyncio.gather(go.ready(), hw.ready())
        go_status, hw_status = await status_of(net, GO_STATUS_PORT), await status_of(net, STATUS_PORT)
        assert list(go_status) == list(hw_status) == ["self", "peers", "backend_state"]
        assert key_types(go_status["self"]) == key_types(hw_status["self"])  # type: ignore[arg-type]
        go_peers = go_status["peers"]
        assert isinstance(go_peers, list) and go_peers  # Go sees caddy (and hw); mesh cannot list peers
        svc = next(p for p in go_peers if p["hostname"] == "svc")
        assert key_types(svc) == key_types(hw_status["self"])  # type: ignore[arg-type]
        assert hw_status["peers"] == []
        for url in ("http://svc/", "http://svc.tail.example/", f"http://{net.ipv4_of('svc')}/"):
            assert await curl(net, "-x", f"http://127.0.0.1:{GO_PORT}", url) == \
                await curl(net, "-x", f"http://127.0.0.1:{PROXY_PORT}", url)
            assert await curl(net, "-p", "-x", f"http://127.0.0.1:{GO_PORT}", url) == \
                await curl(net, "-p", "-x", f"http://127.0.0.1:{PROXY_PORT}", url)
        for path in ("/health", "/status", "/nosuch"):
            theirs = await head_and_body(net, f"http://127.0.0.1:{GO_STATUS_PORT}{path}")
            ours = await head_and_body(net, f"http://127.0.0.1:{STATUS_PORT}{path}")
            assert theirs[:2] == ours[:2], path  # status line and Content-Type byte for byte
            if path != "/status":
                assert theirs[2] == ours[2], path  # "OK" with no newline; "404 page not found\n"
            else:
                assert theirs[2].endswith(b"}\n") and ours[2].endswith(b"}\n")
        # a refused port on the tailnet: same 502 status line, Content-Type and "Proxy Error: " prefix
        theirs = await head_and_body(net, "http://svc:81/", "-x", f"http://127.0.0.1:{GO_PORT}")
        ours = await head_and_body(net, "http://svc:81/", "-x", f"http://127.0.0.1:{PROXY_PORT}")
        assert theirs[:2] == ours[:2] and theirs[2].startswith(b"Proxy Error: ") and ours[2].startswith(b"Proxy Error: ")
        # case 37: the Go sidecar reports the caddy peer with counters, a handshake and a direct UDP path ...
        def go_svc() -> dict[str, object] | None:
            out = subprocess.run(net.command(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{GO_STATUS_PORT}/status"]),
                                 capture_output=True, timeout=10)
            peers = json.loads(out.stdout)["peers"]
            peer: dict[str, object] = next(p for p in peers if p["hostname"] == "svc")
            return peer if peer["current_address"] and peer["last_handshake"] else None

        svc = await wait_until(go_svc, timeout=20, interval=0.2, what="a direct path to svc in the Go sidecar's /status")
        assert svc["rx_bytes"] > 0 and svc["tx_bytes"] > 0  # type: ignore[operator]
        assert svc["name"] == "svc.tail.example." and svc["online"] is True
        # ... yet, upstream defect D4 as observed: direct=false with a direct current_address
        assert svc["direct"] is False and svc["relayed_via"] == "fake"
        await go.terminate()
        await hw.terminate()
    go_words = [s.word for s in go.signals]
    hw_words = [s.word for s in hw.signals]
    assert go_words == ["STARTING", "CONNECTING", "CONNECTED", "LISTENING", "READY"]
    assert hw_words == [*go_words, "SHUTDOWN"]  # deliberate fix D1/D12
    for theirs, ours in zip(go.signals, hw.signals, strict=False):
        pattern = SIGNAL_FORMATS[theirs.word]
        assert re.fullmatch(pattern, theirs.detail) and re.fullmatch(pattern, ours.detail), (theirs, ours)


@pytest.mark.asyncio(loop_scope="function")
async def test_go_sidecar_socks5_cannot_resolve_tailnet_names(fake_tailnet: FakeTailnet, tmp_path: Path) -> None:
    """Upstream defect D10, observed: the reference fails what hatchway's SOCKS5 test above passes."""
    net = fake_tailnet
    async with go_sidecar(net, tmp_path / "go", "-port", str(GO_PORT), "-mode", "socks5") as go:
        await go.ready()
        code, _ = await curl(net, "--socks5-hostname", f"127.0.0.1:{GO_PORT}", "http://svc/")
        assert code != 0
        assert await curl(net, "--socks5-hostname", f"127.0.0.1:{GO_PORT}", f"http://{net.ipv4_of('svc')}/") == \
            (0, SVC_BODY)
        await go.terminate()


@pytest.mark.asyncio(loop_scope="function")
async def test_mesh_needs_login_is_an_error_line(fake_tailnet: FakeTailnet, tmp_path: Path) -> None:
    """No auth key and no state: arkitekt-mesh raises NeedsLogin (no URL to show) -> ERROR and exit 1, fast."""
    net = fake_tailnet
    args = ["-coordserver", CONTROL_URL, "-statedir", str(tmp_path / "state"), "-port", str(PROXY_PORT),
            "-join-timeout", "20s"]
    env = net.env({"TS_AUTHKEY": "", "TS_AUTH_KEY": ""})
    async with SidecarProc(args, command=net.command(HATCHWAY), env=env) as sc:
        assert await sc.wait(30) == 1
    assert [s.word for s in sc.signals] == ["STARTING", "CONNECTING", "ERROR"]
    assert sc.signals[-1].detail.startswith("tailnet connection failed: needs login"), sc.signals[-1]
