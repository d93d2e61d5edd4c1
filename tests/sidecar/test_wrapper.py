"""The upstream consumer, arkitekt-gateway's Python wrapper, drives hatchway's binary (wait_ready, get_status, stop).

The wrapper runs in the peer venv with its bundled binary path pointed at hatchway-sidecar (on the direct
backend: the wrapper passes only upstream's flags, the backend comes from $HATCHWAY_SIDECAR_BACKEND).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from peers import peer_python
from scproc import SIDECAR, free_port

pytestmark = pytest.mark.interop

DRIVER = r"""
import asyncio, json, sys
import arkitekt_gateway.sidecar as gw

gw.get_binary_path = lambda: sys.argv[1]

async def main():
    config = gw.SidecarConfig(authkey="tskey-auth-test", coordserver="http://127.0.0.1:1", port=sys.argv[2],
                              statusport=sys.argv[3], statedir=sys.argv[4], mode=gw.ProxyMode(sys.argv[5]))
    sidecar = gw.Sidecar(config)
    await sidecar.start()
    url = await sidecar.wait_ready(timeout=30)
    status = await sidecar.get_status()
    healthy = await sidecar.health_check()
    code = await sidecar.stop()
    lines = []
    while not sidecar._log_queue.empty():
        lines.append(sidecar._log_queue.get_nowait().line)
    print(json.dumps({"url": url, "ips": status.self_info.tailscale_ips, "peers": len(status.peers),
                      "state": status.backend_state, "healthy": healthy, "code": code, "lines": lines}))

asyncio.run(main())
"""


def drive(sidecar: list[str], mode: str, tmp_path: Path) -> None:
    """arkitekt-gateway's wrapper starts ``sidecar`` (through a shim at its bundled binary's place), waits for READY,
    reads /status and /health, and stops it."""
    shim = tmp_path / "arkitekt-sidecar"
    shim.write_text(f"#!/bin/sh\nexec {shlex.join(sidecar)} \"$@\"\n")
    shim.chmod(0o755)
    port, status_port = free_port(), free_port()
    env = {**os.environ, "HATCHWAY_SIDECAR_BACKEND": "direct"}
    done = subprocess.run(
        [peer_python(), "-c", DRIVER, str(shim), str(port), str(status_port), str(tmp_path / "state"), mode],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["url"] == f"{mode}://127.0.0.1:{port}"
    assert result["ips"] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    assert result["peers"] == 0 and result["state"] == "Running" and result["healthy"] is True
    assert result["code"] == 0  # SIGTERM -> SHUTDOWN and a clean exit, well inside the wrapper's 5 s
    assert "@@SIDECAR:SHUTDOWN@@" in result["lines"]


@pytest.mark.parametrize("mode", ["http", "socks5"])
def test_arkitekt_gateway_wrapper_drives_hatchway(mode: str, tmp_path: Path) -> None:
    drive(SIDECAR, mode, tmp_path)
