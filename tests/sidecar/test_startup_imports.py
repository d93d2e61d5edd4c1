"""Start-up imports only what the run needs (issue #9 idle RSS; rules: "import only what this run needs").

The sidecar runs as a process with ``-X importtime`` until READY; the module list on stderr says what it imported.
No run imports aiohttp (about 14.5 MiB of RSS with aiohttp.web), ``-statusport`` included; each backend imports only
itself;
a mesh run without credentials to check imports no hmac/hashlib (0.9 MiB of RSS) and no urllib.parse (0.4 MiB); and no run starts uvloop's
resolver thread pool (the listeners bind their IP literal themselves).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from scproc import SidecarProc, free_port
from tailnet import AUTH_KEY, CONTROL_URL, FakeTailnet

IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)
PYTHON = [sys.executable, "-X", "importtime", "-m", "hatchway.sidecar"]


def thread_names(pid: int) -> list[str]:
    return sorted(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip() for tid in os.listdir(f"/proc/{pid}/task"))


async def imports_until_ready(sc: SidecarProc) -> set[str]:
    async with sc:
        await sc.ready()
        assert sc.proc is not None
        # the proxy (and status API) bind 127.0.0.1 themselves: uvloop's resolver pool (4 threads, ~0.7 MB) never starts
        assert "libuv-worker" not in thread_names(sc.proc.pid)
        assert await sc.terminate() == 0
    modules = set(IMPORTED.findall(sc.stderr.decode(errors="replace")))
    assert "hatchway.sidecar.service" in modules, sc.stderr[-2000:]  # the list is real
    return modules


async def test_direct_backend_without_status_api_imports_no_aiohttp_and_no_mesh(tmp_path: Path) -> None:
    args = ["-backend", "direct", "-statedir", str(tmp_path), "-port", str(free_port())]
    modules = await imports_until_ready(SidecarProc(args, command=PYTHON))
    for unwanted in ("aiohttp", "aiohttp.web", "hatchway.common.httpapi", "hatchway.sidecar.statusapi",
                     "hatchway.sidecar.mesh", "arkitekt_mesh"):
        assert unwanted not in modules, unwanted
    assert "hatchway.sidecar.direct" in modules


async def test_status_api_imports_no_aiohttp(tmp_path: Path) -> None:
    """The status API is served by the sidecar's own two-endpoint server, not aiohttp's (4.5 MB of RSS)."""
    args = ["-backend", "direct", "-statedir", str(tmp_path), "-port", str(free_port()),
            "-statusport", str(free_port())]
    modules = await imports_until_ready(SidecarProc(args, command=PYTHON))
    assert "hatchway.sidecar.statusapi" in modules
    for unwanted in ("aiohttp", "aiohttp.web", "hatchway.common.httpapi", "arkitekt_mesh"):
        assert unwanted not in modules, unwanted


@pytest.mark.interop
async def test_mesh_backend_imports_no_direct_backend_and_no_aiohttp(fake_tailnet: FakeTailnet,
                                                                       tmp_path: Path) -> None:
    net = fake_tailnet
    args = ["-coordserver", CONTROL_URL, "-authkey", AUTH_KEY, "-statedir", str(tmp_path), "-hostname", "hwimports",
            "-port", str(free_port())]
    modules = await imports_until_ready(SidecarProc(args, command=net.command(PYTHON), env=net.env()))
    assert {"arkitekt_mesh", "hatchway.sidecar.mesh"} <= modules
    for unwanted in ("aiohttp", "hatchway.sidecar.direct", "hatchway.sidecar.statusapi", "hmac", "hashlib",
                     "urllib.parse"):
        assert unwanted not in modules, unwanted
