"""hatchway-agent: exec round trip, non-TTY stdout throughput, 100 concurrent sessions, reverse-mode cold
start, idle RSS; side by side with a plain subprocess (the limit) in the same run.

    .venv-test/bin/python bench/agent_bench.py [--quick] [--agent-cmd dist/hatchway-agent] [--json FILE]

Method: the agent runs as its own process on 127.0.0.1 (server mode, no token, keep-alive main
`sleep 3600`); the bench process (uvloop) is the client, through hatchway.agent.client (one WebSocket).
Round trip = `exec` sent to `exit` received for `true`. Throughput = `head -c N /dev/zero` streamed as
stdout messages (32 KiB raw, base64 in JSON) and decoded by the client, decimal MB/s of raw bytes.
The plain-subprocess rows run the same command with asyncio's subprocess in the bench process.
Every process is started and stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402
import procstat  # noqa: E402

sys.path.insert(0, bl.SRC)

from hatchway.agent.client import AgentClient, ReverseRegistry  # noqa: E402


def agent_argv(cmd: str | None, *args: str) -> list[str]:
    return [*(bl.split_cmd(cmd) if cmd else [sys.executable, "-m", "hatchway.agent"]), *args]


async def round_trips(client: AgentClient, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = await client.collect(["true"])
        times.append(time.perf_counter() - t0)
        assert result.code == 0
    return times


def plain_round_trips(n: int) -> list[float]:
    """The limit: spawn and reap `true` directly (subprocess.run: vfork + waitpid), no network."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["true"], check=True)
        times.append(time.perf_counter() - t0)
    return times


async def stream(client: AgentClient, size: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    session = await client.exec(["head", "-c", str(size), "/dev/zero"], stdin=False)
    got = 0
    async for chunk in session.events():
        got += len(chunk.data)
    assert session.code == 0 and got == size, (session.code, got)
    return time.perf_counter() - t0, got


async def plain_stream(size: int) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("head", "-c", str(size), "/dev/zero", stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    got = 0
    while chunk := await proc.stdout.read(256 * 1024):
        got += len(chunk)
    await proc.wait()
    assert got == size
    return time.perf_counter() - t0


async def concurrent(client: AgentClient, n: int, size: int) -> float:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client.collect(["head", "-c", str(size), "/dev/zero"]) for _ in range(n)))
    assert all(r.code == 0 and len(r.stdout) == size for r in results)
    return time.perf_counter() - t0


async def plain_concurrent(n: int, size: int) -> float:
    async def one() -> None:
        proc = await asyncio.create_subprocess_exec("head", "-c", str(size), "/dev/zero", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert len(out) == size

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


async def cold_start(cmd: str | None, logdir: str, runs: int) -> list[float]:
    from aiohttp import web

    from hatchway.common.httpapi import HttpServer, TcpAddress

    registry = ReverseRegistry()
    app = web.Application()
    app.router.add_get("/internal/v1/agent/connect", registry.handler)
    server = HttpServer(app, [TcpAddress("127.0.0.1", 0)])
    await server.start()
    host, port = server.addresses[0]  # type: ignore[misc]
    times = []
    try:
        for i in range(runs):
            url = f"http://{host}:{port}/internal/v1/agent/connect?id=cold{i}"
            t0 = time.perf_counter()
            proc = bl.Proc(f"agent-cold{i}", agent_argv(cmd, "-callback", url, "-keep-alive", "--", "sleep", "60"),
                           logdir, env=bl.hatchway_env())
            try:
                await registry.wait_for(f"cold{i}", timeout=30)
                times.append(time.perf_counter() - t0)
            finally:
                proc.stop()
    finally:
        await registry.aclose()
        await server.aclose()
    return times


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    logdir = tempfile.mkdtemp(prefix="agent-bench-")
    bl.log(f"logs in {logdir}")
    port = bl.free_port()
    agent = bl.Proc("agent", agent_argv(args.agent_cmd, "-addr", f"127.0.0.1:{port}", "-keep-alive", "--",
                                        "sleep", "3600"), logdir, env=bl.hatchway_env())
    results: dict[str, object] = {}
    try:
        if not agent.wait_line("READY agent", 30):
            raise SystemExit(f"agent did not start:\n{agent.log_tail()}")
        await asyncio.sleep(0.5)
        results["idle_rss_bytes"] = procstat.status(agent.pid)[0]
        async with AgentClient.connect(f"127.0.0.1:{port}") as client:
            await round_trips(client, 20)  # warm-up
            rt = await round_trips(client, args.n)
            plain_rt = plain_round_trips(args.n)
            results["rt"] = {"p50_ms": bl.pct(rt, 50) * 1e3, "p99_ms": bl.pct(rt, 99) * 1e3,
                             "plain_p50_ms": bl.pct(plain_rt, 50) * 1e3, "plain_p99_ms": bl.pct(plain_rt, 99) * 1e3}
            size = args.size
            elapsed, _ = await stream(client, size)
            plain = await plain_stream(size)
            cpu_before = procstat.cpu_seconds(agent.pid)
            elapsed2, _ = await stream(client, size)
            cpu = procstat.cpu_seconds(agent.pid) - cpu_before
            best = min(elapsed, elapsed2)
            results["throughput"] = {"bytes": size, "agent_MBps": size / best / 1e6, "plain_MBps": size / plain / 1e6,
                                     "agent_cpu_s_per_GiB": cpu / (size / 2**30)}
            one = await concurrent(client, 1, args.csize)
            hundred = await concurrent(client, 100, args.csize)
            plain100 = await plain_concurrent(100, args.csize)
            results["concurrent"] = {"one_s": one, "hundred_s": hundred, "plain_hundred_s": plain100,
                                     "per_session_slowdown": hundred / 100 / one}
        results["rss_after_bytes"] = procstat.status(agent.pid)[0]
    finally:
        agent.stop()
    cold = await cold_start(args.agent_cmd, logdir, args.cold_runs)
    results["cold_start_ms"] = {"median": bl.median(cold) * 1e3, "min": min(cold) * 1e3}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 MiB stream, 200 round trips")
    parser.add_argument("--agent-cmd", default=None, help="agent command (default: python -m hatchway.agent)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.n = 200 if args.quick else 1000
    args.size = (256 if args.quick else 1024) * 2**20
    args.csize = 1024 * 1024
    args.cold_runs = 3 if args.quick else 7
    import uvloop

    results = uvloop.run(main_async(args))
    print(bl.machine_line())
    rt = results["rt"]
    tp = results["throughput"]
    cc = results["concurrent"]
    cs = results["cold_start_ms"]
    assert isinstance(rt, dict) and isinstance(tp, dict) and isinstance(cc, dict) and isinstance(cs, dict)
    rows = [
        ["exec `true` round trip p50", bl.fnum(rt["p50_ms"], 2, " ms"), bl.fnum(rt["plain_p50_ms"], 2, " ms"),
         bl.ratio(rt["p50_ms"], rt["plain_p50_ms"]), "< 2 ms"],
        ["exec `true` round trip p99", bl.fnum(rt["p99_ms"], 2, " ms"), bl.fnum(rt["plain_p99_ms"], 2, " ms"),
         bl.ratio(rt["p99_ms"], rt["plain_p99_ms"]), "< 5 ms"],
        [f"stdout {tp['bytes'] // 2**20} MiB non-TTY", bl.fnum(tp["agent_MBps"], 0, " MB/s"),
         bl.fnum(tp["plain_MBps"], 0, " MB/s"), bl.ratio(tp["agent_MBps"], tp["plain_MBps"]), ">= 500 MB/s"],
        ["agent CPU per GiB streamed", bl.fnum(tp["agent_cpu_s_per_GiB"], 2, " s"), "", "", ""],
        ["100 concurrent execs (1 MiB each), wall", bl.fnum(cc["hundred_s"], 2, " s"),
         bl.fnum(cc["plain_hundred_s"], 2, " s"), bl.ratio(cc["hundred_s"], cc["plain_hundred_s"]), ""],
        ["  per-session time vs one alone", bl.fnum(cc["per_session_slowdown"], 2, "x"), "", "", "<= CPU share"],
        ["reverse cold start to connected", bl.fnum(cs["median"], 0, " ms"), "", "", "< 150 ms (release exe)"],
        ["idle RSS", bl.fnum(int(results["idle_rss_bytes"]) / 2**20, 1, " MiB"), "", "", "< 28 MB"],  # type: ignore[call-overload]
        ["RSS after the runs", bl.fnum(int(results["rss_after_bytes"]) / 2**20, 1, " MiB"), "", "", ""],  # type: ignore[call-overload]
    ]
    print(bl.table(["figure", "agent", "plain subprocess", "ratio", "target"], rows, title="hatchway-agent"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
