#!/usr/bin/env python3
"""Host proxy bench: the daemon against a minimal aiohttp app doing the same work, in one run.

    .venv-test/bin/python bench/hostproxy_bench.py [--requests 3000] [--sessions 1000] [--idle 10]

Measures (2-core machine targets from issue #10 in brackets):
* /health and /open/url latency p50/p99 over one keep-alive connection [p99 < 2 ms], and requests/s with
  32 concurrent clients [>= 8,000/s on one core]; the same against a minimal aiohttp app (uvloop, same JSON
  work, the same `true` browser command) as the limit;
* 1,000 concurrent callback sessions: register, capture over real sockets on 1,000 dynamic listeners,
  poll, delete;
* socket bridge throughput and added round trip [>= 500 MB/s, < 0.2 ms] through the socket server
  subprocess, against a direct unix socket;
* daemon idle CPU and RSS [< 0.05 %, < 30 MB], next to the minimal app's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import procstat  # noqa: E402

sys.path.insert(0, benchlib.SRC)

MINIMAL_APP = r'''
import asyncio, sys, msgspec, uvloop
from aiohttp import web
class Req(msgspec.Struct):
    url: str = ""
async def health(request):
    return web.Response(body=b'{"status":"ok","service":"clawker-host-proxy"}\n', content_type="application/json")
async def open_url(request):
    body = msgspec.json.decode(await request.read(), type=Req)
    proc = await asyncio.create_subprocess_exec("true", body.url)
    await proc.wait()
    return web.Response(body=msgspec.json.encode({"success": True, "url": body.url}) + b"\n",
                        content_type="application/json")
app = web.Application()
app.router.add_get("/health", health)
app.router.add_post("/open/url", open_url)
uvloop.install()
print("READY", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''


async def latency(base: str, path: str, n: int, headers: dict[str, str], body: bytes | None) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
        for _ in range(n):
            t = time.perf_counter()
            if body is None:
                async with http.get(base + path, headers=headers) as r:
                    await r.read()
            else:
                async with http.post(base + path, data=body, headers=headers) as r:
                    await r.read()
            assert r.status == 200, r.status
            out.append((time.perf_counter() - t) * 1000)
    return out


async def throughput(base: str, path: str, seconds: float, headers: dict[str, str], concurrency: int = 32) -> float:
    import aiohttp

    done = 0
    stop = time.perf_counter() + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            async with http.get(base + path, headers=headers) as r:
                await r.read()
            done += 1

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def sessions_bench(base: str, token: str, count: int) -> dict[str, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ports = []
    while len(ports) < count:
        p = benchlib.free_port()
        if p not in ports:
            ports.append(p)
    res: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, force_close=True)) as http:
        async def register(port: int) -> str:
            async with http.post(base + "/callback/register", json={"port": port}, headers=headers) as r:
                body = await r.json()
                assert r.status == 200, body
                return str(body["session_id"])

        t = time.perf_counter()
        ids = await asyncio.gather(*(register(p) for p in ports))
        res["register"] = time.perf_counter() - t

        async def capture(port: int) -> None:
            async with http.get(f"http://127.0.0.1:{port}/callback?code={port}&state=s") as r:
                await r.read()
                assert r.status == 200

        t = time.perf_counter()
        await asyncio.gather(*(capture(p) for p in ports))
        res["capture"] = time.perf_counter() - t

        async def poll(sid: str, port: int) -> None:
            async with http.get(f"{base}/callback/{sid}/data", headers=headers) as r:
                body = await r.json()
                assert body["callback"]["query"] == f"code={port}&state=s"

        t = time.perf_counter()
        await asyncio.gather(*(poll(s, p) for s, p in zip(ids, ports, strict=True)))
        res["poll"] = time.perf_counter() - t

        async def delete(sid: str) -> None:
            async with http.delete(f"{base}/callback/{sid}", headers=headers) as r:
                await r.read()

        t = time.perf_counter()
        await asyncio.gather(*(delete(s) for s in ids))
        res["delete"] = time.perf_counter() - t
    return res


async def echo_server(path: str) -> asyncio.AbstractServer:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(data)  # type: ignore[attr-defined]

    return await asyncio.get_running_loop().create_unix_server(Echo, path)


async def sink_server(path: str, total: int, done: asyncio.Future[float]) -> asyncio.AbstractServer:
    """Counts what arrives; resolves ``done`` with the time the last byte came."""

    class Sink(asyncio.Protocol):
        got = 0

        def data_received(self, data: bytes) -> None:
            Sink.got += len(data)
            if Sink.got >= total and not done.done():
                done.set_result(time.perf_counter())

    return await asyncio.get_running_loop().create_unix_server(Sink, path)


async def one_way(path: str, total: int, done: asyncio.Future[float]) -> float:
    _, writer = await asyncio.open_unix_connection(path)
    chunk = b"\0" * (256 * 1024)
    t = time.perf_counter()
    sent = 0
    while sent < total:
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)
    end = await done
    writer.close()
    return total / (end - t) / 1e6


async def pingpong(path: str, n: int) -> list[float]:
    reader, writer = await asyncio.open_unix_connection(path)
    out = []
    msg = b"x" * 64
    for _ in range(n):
        t = time.perf_counter()
        writer.write(msg)
        await reader.readexactly(64)
        out.append((time.perf_counter() - t) * 1000)
    writer.close()
    return out


async def stream(path: str, total: int) -> float:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    chunk = b"\0" * (256 * 1024)

    async def send() -> None:
        sent = 0
        while sent < total:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    async def recv() -> None:
        got = 0
        while got < total:
            data = await reader.read(1 << 20)
            assert data
            got += len(data)

    t = time.perf_counter()
    await asyncio.gather(send(), recv())
    elapsed = time.perf_counter() - t
    writer.close()
    return 2 * total / elapsed / 1e6  # bytes through the bridge, both directions


async def bridge_bench(tmp: str, megabytes: int, n: int) -> dict[str, float]:
    from hatchway.hostproxy.bridge import HostBridge

    agent = os.path.join(tmp, "echo.sock")
    inside = os.path.join(tmp, "ctr", "agent.sock")
    server = await echo_server(agent)
    os.environ["CLAWKER_REMOTE_SOCKETS"] = json.dumps([{"path": inside, "type": "ssh-agent"}])
    bridge = HostBridge([sys.executable, "-m", "hatchway.hostproxy", "socket-server"], ssh_socket=agent)
    await bridge.start()
    try:
        direct = await pingpong(agent, n)
        through = await pingpong(inside, n)
        direct_mb = await stream(agent, megabytes << 20)
        through_mb = await stream(inside, megabytes << 20)
    finally:
        await bridge.stop()
        server.close()
    # one way: the container-side client writes, the host "agent" only counts
    loop = asyncio.get_running_loop()
    total = megabytes << 20
    one = {}
    for label in ("direct", "bridge"):
        done: asyncio.Future[float] = loop.create_future()
        sink_path = os.path.join(tmp, f"sink-{label}.sock")
        sink = await sink_server(sink_path, total, done)
        if label == "direct":
            one[label] = await one_way(sink_path, total, done)
        else:
            inside2 = os.path.join(tmp, "ctr2", "agent.sock")
            os.environ["CLAWKER_REMOTE_SOCKETS"] = json.dumps([{"path": inside2, "type": "ssh-agent"}])
            bridge = HostBridge([sys.executable, "-m", "hatchway.hostproxy", "socket-server"], ssh_socket=sink_path)
            await bridge.start()
            try:
                one[label] = await one_way(inside2, total, done)
            finally:
                await bridge.stop()
        sink.close()
    return {"rtt_direct_p50": benchlib.pct(direct, 50), "rtt_bridge_p50": benchlib.pct(through, 50),
            "rtt_bridge_p99": benchlib.pct(through, 99), "mb_direct": direct_mb, "mb_bridge": through_mb,
            "one_direct": one["direct"], "one_bridge": one["bridge"]}


def run_uvloop(coro: Any) -> Any:
    """The host side of the bridge under uvloop, as the hatchway-hostproxy bridge runs."""
    from hatchway.common.lifecycle import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


def idle(proc: benchlib.Proc, seconds: float) -> tuple[float, int]:
    c0 = procstat.cpu_seconds(proc.pid)
    time.sleep(seconds)
    c1 = procstat.cpu_seconds(proc.pid)
    rss = procstat.status(proc.pid)[0]
    return (c1 - c0) / seconds * 100, rss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--megabytes", type=int, default=256)
    ap.add_argument("--idle", type=float, default=10.0)
    args = ap.parse_args()
    benchlib.raise_nofile()
    print(benchlib.machine_line())
    from hatchway.hostproxy.tokens import mint_token

    with tempfile.TemporaryDirectory() as tmp, benchlib.ProcGroup() as group:
        state = os.path.join(tmp, "state")
        token = mint_token(os.path.join(state, "hostproxy", "tokens.json"), "bench-ctr")
        port, base_port = benchlib.free_port(), benchlib.free_port()
        env = benchlib.hatchway_env({"CLAWKER_STATE_DIR": state})
        daemon = group.add(benchlib.Proc("daemon", [
            sys.executable, "-m", "hatchway.hostproxy", "serve", "--port", str(port), "--bind", "127.0.0.1",
            "--no-watch", "--browser-command", "true", "--open-rate", "0", "--request-rate", "0",
            "--callback-per-container", str(args.sessions), "--callback-total", str(args.sessions),
            "--log-level", "warning"], tmp, env=env))
        minimal = group.add(benchlib.Proc("minimal", [sys.executable, "-c", MINIMAL_APP, str(base_port)], tmp,
                                          env=env))
        assert daemon.wait_line("READY", 20), daemon.log_tail()
        assert minimal.wait_line("READY", 20), minimal.log_tail()
        for _ in range(100):
            if benchlib.port_open("127.0.0.1", base_port):
                break
            time.sleep(0.05)
        cpu, rss = idle(daemon, args.idle)
        cpu0, rss0 = idle(minimal, args.idle)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps({"url": "https://example.com/login?x=1"}).encode()
        rows = []
        for name, base, hdrs in (("hostproxy", f"http://127.0.0.1:{port}", auth),
                                 ("minimal aiohttp", f"http://127.0.0.1:{base_port}", {"Content-Type": "application/json"})):
            h = asyncio.run(latency(base, "/health", args.requests, hdrs, None))
            o = asyncio.run(latency(base, "/open/url", max(args.requests // 3, 100), hdrs, body))
            rps = asyncio.run(throughput(base, "/health", args.seconds, hdrs))
            rows.append([name, benchlib.fnum(benchlib.pct(h, 50), 3), benchlib.fnum(benchlib.pct(h, 99), 3),
                         benchlib.fnum(benchlib.pct(o, 50), 3), benchlib.fnum(benchlib.pct(o, 99), 3),
                         benchlib.fnum(rps, 0)])
        rows.append(["ratio (hostproxy/minimal)", *(benchlib.ratio(float(a.replace(",", "")), float(b.replace(",", ""))) for a, b in
                                                     zip(rows[0][1:], rows[1][1:], strict=True))])
        print(benchlib.table(["server", "/health p50 ms", "/health p99 ms", "/open/url p50 ms", "/open/url p99 ms",
                              "/health req/s (32 clients)"], rows, "HTTP latency and rate"))
        print(benchlib.table(["server", "idle CPU %", "RSS MB"], [
            ["hostproxy", benchlib.fnum(cpu, 3), benchlib.fnum(rss / 1e6, 1)],
            ["minimal aiohttp", benchlib.fnum(cpu0, 3), benchlib.fnum(rss0 / 1e6, 1)],
            ["ratio", benchlib.ratio(cpu, cpu0) if cpu0 else "-", benchlib.ratio(rss, rss0)]], "idle"))
        s = asyncio.run(sessions_bench(f"http://127.0.0.1:{port}", token, args.sessions))
        rss_after = procstat.status(daemon.pid)[0]
        print(benchlib.table(["phase", f"{args.sessions} sessions, s", "per session ms"],
                             [[k, benchlib.fnum(v, 3), benchlib.fnum(v * 1000 / args.sessions, 3)]
                              for k, v in s.items()],
                             f"concurrent callback sessions (daemon RSS after: {rss_after / 1e6:.1f} MB)"))
        b = run_uvloop(bridge_bench(tmp, args.megabytes, args.requests))
        print(benchlib.table(["path", "64 B round trip p50 ms", "echo MB/s (both directions)", "one-way MB/s"], [
            ["direct unix socket", benchlib.fnum(b["rtt_direct_p50"], 3), benchlib.fnum(b["mb_direct"], 0),
             benchlib.fnum(b["one_direct"], 0)],
            ["through the bridge", benchlib.fnum(b["rtt_bridge_p50"], 3), benchlib.fnum(b["mb_bridge"], 0),
             benchlib.fnum(b["one_bridge"], 0)],
            ["added / ratio", benchlib.fnum(b["rtt_bridge_p50"] - b["rtt_direct_p50"], 3),
             benchlib.ratio(b["mb_bridge"], b["mb_direct"]), benchlib.ratio(b["one_bridge"], b["one_direct"])]],
            f"socket bridge (bridge p99 {b['rtt_bridge_p99']:.3f} ms)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
