"""The README's Python API example (tests/sidecar/readme_sidecar_example.py) runs as a script, as printed."""

from __future__ import annotations

import asyncio
import os
import sys

from origins import Origin, echo, fixed

HERE = os.path.dirname(os.path.abspath(__file__))


async def test_readme_example_runs() -> None:
    origin = Origin(echo)
    origin.handler = fixed(b"hello from origin")(origin)
    async with origin:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(HERE, "readme_sidecar_example.py"), f"http://127.0.0.1:{origin.port}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HATCHWAY_SIDECAR_BACKEND": "direct"},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "signals: STARTING CONNECTING CONNECTED LISTENING READY"
    assert lines[1].startswith("proxy: http://127.0.0.1:")
    assert lines[2] == "tailnet addresses: 100.64.0.1 fd7a:115c:a1e0::1"
    assert lines[3] == "200 hello from origin"
