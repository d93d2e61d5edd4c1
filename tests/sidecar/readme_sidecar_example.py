"""Reach a tailnet service through hatchway's sidecar, embedded in your asyncio program."""

import asyncio
import os
import sys
import tempfile

import aiohttp

from hatchway.sidecar import Sidecar, SidecarConfig


async def main() -> int:
    config = SidecarConfig(
        coordserver=os.environ.get("COORD_SERVER", "https://control.example"),
        authkey=os.environ.get("TS_AUTHKEY", ""),
        hostname="my-app",
        port="0",  # any free port on 127.0.0.1
        statedir=os.environ.get("SIDECAR_STATE", tempfile.mkdtemp(prefix="my-app-sidecar-")),
        backend="direct" if os.environ.get("HATCHWAY_SIDECAR_BACKEND") == "direct" else "mesh",
    )
    url = sys.argv[1] if len(sys.argv) > 1 else "http://svc/"
    async with Sidecar(config) as sidecar:  # joined, proxy bound: sidecar.proxy_url is ready to use
        print("signals:", " ".join(s.word for s in sidecar.signals.seen))
        print("proxy:", sidecar.proxy_url)
        status = await sidecar.status()
        print("tailnet addresses:", " ".join(status.self_.tailscale_ips))
        async with aiohttp.ClientSession() as session, session.get(url, proxy=sidecar.proxy_url) as response:
            print(response.status, await response.text())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
