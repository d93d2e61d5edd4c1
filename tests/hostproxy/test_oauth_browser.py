"""The OAuth flow end to end in a real browser (headless Debian chromium) and the real daemon process.

A local sign-in page (``signin.test``, mapped to 127.0.0.1 inside chromium)
redirects to the registered ``http://localhost:P/callback``; the daemon's
dynamic listener captures it; the forwarder started by ``hatchway-hostproxy
open`` replays it to a listener standing in for the tool in the container,
which must receive the exact query. The container's separate network
namespace is stood in for by pointing the forwarder at the tool's own port
(``HATCHWAY_HOSTPROXY_FORWARDER``), since here both sides share host loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from typing import Any

import aiohttp
from aiohttp import web

from hatchway.hostproxy.tokens import mint_token
from helpers import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_oauth_flow_in_headless_chromium(tmp_path: Any) -> None:
    assert os.path.exists(CHROMIUM), "Debian chromium is required (build/test installs it)"
    state_dir = tmp_path / "state"
    token = mint_token(str(state_dir / "hostproxy" / "tokens.json"), "ctr-1", project="p")
    daemon_port, signin_port, callback_port, tool_port = free_port(), free_port(), free_port(), free_port()
    code, state = "4/0Ab-CODE_~.x%2F", "st%20ate-123"

    async def authorize(request: web.Request) -> web.StreamResponse:
        # a raw Location header (yarl would normalise %2F in the query)
        return web.Response(status=302, headers={"Location": f"{request.query['redirect_uri']}?code={code}&state={state}"})

    received: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def tool(request: web.Request) -> web.StreamResponse:
        if not received.done():
            received.set_result(request.raw_path.partition("?")[2])
        return web.Response(text="tool got it")

    signin_app = web.Application()
    signin_app.router.add_get("/authorize", authorize)
    tool_app = web.Application()
    tool_app.router.add_get("/callback", tool)
    runners = [await serve(signin_app, signin_port), await serve(tool_app, tool_port)]
    browser = (f"{CHROMIUM} --headless=new --no-sandbox --disable-gpu --no-first-run --disable-extensions "
               f"--user-data-dir={tmp_path / 'chromium'} "
               f"'--host-resolver-rules=MAP signin.test 127.0.0.1' --dump-dom")
    env = {**os.environ, "CLAWKER_STATE_DIR": str(state_dir)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "hatchway.hostproxy", "serve", "--port", str(daemon_port), "--bind", "127.0.0.1",
         "--no-watch", "--browser-command", browser, "--browser-timeout", "60"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "wb"))
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{daemon_port}/health") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(200):
                if await healthy():
                    break
                await asyncio.sleep(0.05)
            assert await healthy(), (tmp_path / "daemon.log").read_text()
        url = (f"http://signin.test:{signin_port}/authorize?client_id=c&response_type=code&"
               f"redirect_uri=http%3A%2F%2Flocalhost%3A{callback_port}%2Fcallback&state=x")
        opened = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hatchway.hostproxy", "open", url,
            env={**os.environ, "CLAWKER_HOST_PROXY": f"http://127.0.0.1:{daemon_port}",
                 "HATCHWAY_HOSTPROXY_TOKEN": token, "CB_FORWARDER_POLL_INTERVAL": "0.1",
                 "HATCHWAY_HOSTPROXY_FORWARDER":
                     f"{sys.executable} -m hatchway.hostproxy callback-forwarder -v -port {tool_port}"},
            stderr=open(tmp_path / "open.log", "wb"))
        assert await asyncio.wait_for(opened.wait(), 90) == 0, (tmp_path / "open.log").read_text()
        try:
            query = await wait_until(received, timeout=60, what="the tool's listener receives the replayed callback")
        except AssertionError:
            raise AssertionError((tmp_path / "open.log").read_text() + (tmp_path / "daemon.log").read_text()) from None
        assert query == f"code={code}&state={state}"
        # the forwarder cleans up: the session is deleted and the host port closed
        await wait_until(lambda: refuses(callback_port), timeout=30, what="callback listener closed after cleanup")
    finally:
        daemon.terminate()
        assert daemon.wait(10) == 0
        for runner in runners:
            await runner.cleanup()
    assert not (state_dir / "pids" / "hostproxy.pid").exists()
