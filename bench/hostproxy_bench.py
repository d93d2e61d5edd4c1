#!/usr/bin/env python3
"""Host proxy bench: the daemon against a minimal aiohttp app doing the same work, in one run.

    .venv-test/bin/python bench/hostproxy_bench.py [--requests 5000] [--sessions 1000] [--idle 10]
    .venv-test/bin/python bench/hostproxy_bench.py --daemon-cmd /tmp/dist/hatchway-hostproxy   # the static exe

Measures (2-core machine targets from issue #10 in brackets):
* /health and /open/url latency p50/p99, one request at a time over one keep-alive connection
  [p99 < 2 ms], from a raw-socket client (a blocking socket: a few microseconds of client time, so
  the figure is the server's); /health requests/s from a raw-socket load generator in a separate
  process (32 keep-alive connections, one request in flight each) with the server pinned to CPU 0
  and the client to CPU 1 [>= 8,000/s on one core], and the same with ``wrk -t1 -c32`` when wrk is
  on PATH (Debian ``wrk``) as a cross-check that the client is not the bound; the same against a
  minimal aiohttp app (uvloop, same JSON work, the same ``true`` browser command) as the limit;
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
import selectors
import shutil
import socket
import subprocess
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


FAKE_ENGINE = r'''
import asyncio, os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "hostproxy"))
from fake_engine import FakeEngine
async def main():
    engine = FakeEngine()
    engine.add("agent", dev__clawker__managed="true", dev__clawker__purpose="agent")
    await engine.start(sys.argv[1])
    print("READY", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


def http_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class ResponseReader:
    """Splits HTTP/1.1 responses (Content-Length framed) out of a byte stream; counts non-200s."""

    def __init__(self) -> None:
        self.buf = b""
        self.bad = 0

    def feed(self, data: bytes) -> int:
        """Add ``data``; the number of complete responses now taken out."""
        self.buf += data
        done = 0
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return done
            head = self.buf[:head_end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            total = head_end + 4 + length
            if len(self.buf) < total:
                return done
            if not self.buf.startswith(b"HTTP/1.1 200"):
                self.bad += 1
            self.buf = self.buf[total:]
            done += 1


def latency(port: int, request: bytes, n: int) -> list[float]:
    """ms per request, one at a time over one keep-alive connection (blocking socket, no event loop)."""
    out = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = ResponseReader()
        for _ in range(n):
            t = time.perf_counter()
            sock.sendall(request)
            while not reader.feed(sock.recv(65536)):
                pass
            out.append((time.perf_counter() - t) * 1000)
        assert not reader.bad, f"{reader.bad} answers were not 200"
    return out


def spawn_floor(n: int) -> list[float]:
    """ms to run the same browser command (``true``) directly: posix_spawn + wait, no server, no HTTP."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        pid = os.posix_spawnp("true", ["true", "https://example.com/login?x=1"], os.environ, setsid=True)
        os.waitpid(pid, 0)
        out.append((time.perf_counter() - t) * 1000)
    return out


def load_main(port: int, request_hex: str, seconds: float, connections: int, cpu: int) -> int:
    """The load generator (run as its own process): closed loop, one request in flight per connection."""
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    request = bytes.fromhex(request_hex)
    sel = selectors.DefaultSelector()
    readers = {}
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        readers[sock] = ResponseReader()
    done = 0
    lat: list[float] = []
    sent_at: dict[socket.socket, float] = {}
    start = time.perf_counter()
    stop = start + seconds
    for sock in readers:
        sent_at[sock] = time.perf_counter()
        sock.send(request)
    now = start
    while now < stop:
        for key, _ in sel.select(0.5):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            data = conn.recv(65536)
            if not data:
                raise SystemExit("server closed a connection")
            got = readers[conn].feed(data)
            if got:
                now = time.perf_counter()
                done += got
                lat.append((now - sent_at[conn]) * 1000)
                sent_at[conn] = now
                conn.send(request)
    elapsed = time.perf_counter() - start
    bad = sum(r.bad for r in readers.values())
    print(json.dumps({"rps": done / elapsed, "p50": benchlib.pct(lat, 50), "p99": benchlib.pct(lat, 99), "bad": bad}))
    return 0


def load(port: int, request: bytes, seconds: float, connections: int = 32, cpu: int = 1) -> dict[str, float]:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--load", str(port), request.hex(), str(seconds),
                          str(connections), str(cpu)], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    assert not result["bad"], f"{result['bad']} answers were not 200"
    return result


def wrk(port: int, path: str, seconds: float, headers: dict[str, str], connections: int = 32,
        cpu: int = 1) -> dict[str, float] | None:
    """``wrk -t1 -c32`` on CPU ``cpu``: requests/s and p99 ms (None when wrk is not installed)."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    argv = [exe, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    out = subprocess.run([*argv, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True,
                         preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu >= 0 else None).stdout
    result: dict[str, float] = {}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(words[1])
        elif words[:1] == ["99%"]:
            value = words[1]
            scale = 1e-3 if value.endswith("us") else 1000.0 if value.endswith("s") and not value.endswith("ms") else 1.0
            result["p99"] = float(value.rstrip("mus")) * scale
        elif "Non-2xx" in line:
            raise AssertionError(line)
    return result


async def sessions_bench(base: str, token: str, count: int) -> dict[str, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ports: list[int] = []
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


async def bridge_bench(tmp: str, megabytes: int, n: int, program: list[str]) -> dict[str, float]:
    from hatchway.hostproxy.bridge import HostBridge

    agent = os.path.join(tmp, "echo.sock")
    inside = os.path.join(tmp, "ctr", "agent.sock")
    server = await echo_server(agent)
    os.environ["CLAWKER_REMOTE_SOCKETS"] = json.dumps([{"path": inside, "type": "ssh-agent"}])
    bridge = HostBridge([*program, "socket-server"], ssh_socket=agent)
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
            bridge = HostBridge([*program, "socket-server"], ssh_socket=sink_path)
            await bridge.start()
            try:
                one[label] = await one_way(inside2, total, done)
            finally:
                await bridge.stop()
        sink.close()
    return {"rtt_direct_p50": benchlib.pct(direct, 50), "rtt_direct_p99": benchlib.pct(direct, 99),
            "rtt_bridge_p50": benchlib.pct(through, 50),
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


def rss_split(pid: int) -> str:
    """``anon + file`` MB from /proc (the file-backed part moves with the page cache from run to run)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024 / 1e6
    return f"{fields.get('RssAnon', 0):.1f} + {fields.get('RssFile', 0):.1f}"


def pin(pid: int, cpu: int) -> None:
    if cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})


def unpin(pid: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, range(os.cpu_count() or 1))


def main() -> int:
    if sys.argv[1:2] == ["--load"]:  # the load generator's own process
        load_args = sys.argv[2:7]
        return load_main(int(load_args[0]), load_args[1], float(load_args[2]), int(load_args[3]), int(load_args[4]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=5000, help="sequential /health requests (/open/url: a third)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each rate run")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--megabytes", type=int, default=256)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--daemon-cmd", default="", help="the hostproxy program (default: python -m hatchway.hostproxy)")
    ap.add_argument("--cpu", type=int, default=0, help="pin the servers to this CPU, the load client to the other "
                                                       "(-1: no pinning)")
    ap.add_argument("--only", default="http,idle,sessions,bridge", help="sections, comma-separated")
    args = ap.parse_args()
    only = set(args.only.split(","))
    program = benchlib.split_cmd(args.daemon_cmd) if args.daemon_cmd else [sys.executable, "-m", "hatchway.hostproxy"]
    client_cpu = -1 if args.cpu < 0 else (args.cpu + 1) % max(2, os.cpu_count() or 2)
    benchlib.raise_nofile()
    print(benchlib.machine_line())
    print(f"hostproxy: {' '.join(program)}")
    from hatchway.hostproxy.tokens import mint_token

    with tempfile.TemporaryDirectory() as tmp, benchlib.ProcGroup() as group:
        state = os.path.join(tmp, "state")
        token = mint_token(os.path.join(state, "hostproxy", "tokens.json"), "bench-ctr")
        port, base_port = benchlib.free_port(), benchlib.free_port()
        docker_sock = os.path.join(tmp, "docker.sock")
        env = benchlib.hatchway_env({"CLAWKER_STATE_DIR": state, "DOCKER_HOST": f"unix://{docker_sock}"})
        if only & {"http", "idle", "sessions"}:
            # the daemon as deployed: its watcher polls the (fake) engine and follows its event stream
            engine = group.add(benchlib.Proc("fake engine", [sys.executable, "-c", FAKE_ENGINE, docker_sock], tmp,
                                              env=env))
            assert engine.wait_line("READY", 20), engine.log_tail()
            daemon = group.add(benchlib.Proc("daemon", [
                *program, "serve", "--port", str(port), "--bind", "127.0.0.1",
                "--browser-command", "true", "--open-rate", "0", "--request-rate", "0",
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
        if "idle" in only:
            cpu, rss = idle(daemon, args.idle)
            cpu0, rss0 = idle(minimal, args.idle)
            print(benchlib.table(["server", "idle CPU %", "RSS MB", "anon + file MB"], [
                ["hostproxy (watching the fake engine)", benchlib.fnum(cpu, 3), benchlib.fnum(rss / 1e6, 1),
                 rss_split(daemon.pid)],
                ["minimal aiohttp", benchlib.fnum(cpu0, 3), benchlib.fnum(rss0 / 1e6, 1), rss_split(minimal.pid)],
                ["ratio", benchlib.ratio(cpu, cpu0) if cpu0 else "-", benchlib.ratio(rss, rss0), "-"]],
                f"idle ({args.idle:g} s each)"))
        if "http" in only:
            auth = {"Authorization": f"Bearer {token}"}
            body = json.dumps({"url": "https://example.com/login?x=1"}).encode()
            servers: list[tuple[str, int, dict[str, str], benchlib.Proc]] = [
                ("hostproxy", port, auth, daemon), ("minimal aiohttp", base_port, {}, minimal)]
            requests = {name: (http_request("GET", "/health", p, h),
                               http_request("POST", "/open/url", p, {**h, "Content-Type": "application/json"}, body))
                        for name, p, h, _ in servers}
            lat: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, *_ in servers}
            floor: list[float] = []
            for name, p, _, _ in servers:
                latency(p, requests[name][0], 200)  # warm up
            rounds = 10  # interleaved: a burst of load from elsewhere hits both servers alike
            for _ in range(rounds):
                for name, p, _, _ in servers:
                    lat[name][0].extend(latency(p, requests[name][0], max(args.requests // rounds, 10)))
                    lat[name][1].extend(latency(p, requests[name][1], max(args.requests // 3 // rounds, 10)))
                floor.extend(spawn_floor(max(args.requests // 3 // rounds, 10)))
            rows = []
            for name, p, hdrs, proc in servers:
                pin(proc.pid, args.cpu)  # the rate runs: the server on one core, the client on the other
                rate = load(p, requests[name][0], args.seconds, cpu=client_cpu)
                w = wrk(p, "/health", args.seconds, hdrs, cpu=client_cpu)
                unpin(proc.pid)
                h, o = lat[name]
                rows.append([name, benchlib.fnum(benchlib.pct(h, 50), 3), benchlib.fnum(benchlib.pct(h, 99), 3),
                             benchlib.fnum(benchlib.pct(o, 50), 3), benchlib.fnum(benchlib.pct(o, 99), 3),
                             benchlib.fnum(rate["rps"], 0), benchlib.fnum(rate["p99"], 2),
                             benchlib.fnum(w["rps"], 0) if w else "-", benchlib.fnum(w["p99"], 2) if w else "-"])
            rows.append(["ratio (hostproxy/minimal)", *(
                benchlib.ratio(float(a.replace(",", "")), float(b.replace(",", ""))) if a != "-" else "-"
                for a, b in zip(rows[0][1:], rows[1][1:], strict=True))])
            rows.append(["floor: `true` spawned + waited, no HTTP", "-", "-", benchlib.fnum(benchlib.pct(floor, 50), 3),
                         benchlib.fnum(benchlib.pct(floor, 99), 3), "-", "-", "-", "-"])
            print(benchlib.table(["server", "/health p50 ms", "/health p99 ms", "/open/url p50 ms", "/open/url p99 ms",
                                  "/health req/s (raw, 32 conn)", "p99 ms", "/health req/s (wrk -t1 -c32)", "p99 ms"],
                                 rows, f"HTTP latency (one keep-alive connection, one request at a time, {rounds} "
                                       f"interleaved rounds) and rate (server pinned to CPU {args.cpu}, client to "
                                       f"CPU {client_cpu})"))
        if "sessions" in only:
            s = asyncio.run(sessions_bench(f"http://127.0.0.1:{port}", token, args.sessions))
            rss_after = procstat.status(daemon.pid)[0]
            print(benchlib.table(["phase", f"{args.sessions} sessions, s", "per session ms"],
                                 [[k, benchlib.fnum(v, 3), benchlib.fnum(v * 1000 / args.sessions, 3)]
                                  for k, v in s.items()],
                                 f"concurrent callback sessions (daemon RSS after: {rss_after / 1e6:.1f} MB)"))
        if "bridge" in only:
            b = run_uvloop(bridge_bench(tmp, args.megabytes, args.requests, program))
            print(benchlib.table(["path", "64 B round trip p50 ms", "p99 ms", "echo MB/s (both directions)",
                                  "one-way MB/s"], [
                ["direct unix socket", benchlib.fnum(b["rtt_direct_p50"], 3), benchlib.fnum(b["rtt_direct_p99"], 3),
                 benchlib.fnum(b["mb_direct"], 0), benchlib.fnum(b["one_direct"], 0)],
                ["through the bridge", benchlib.fnum(b["rtt_bridge_p50"], 3), benchlib.fnum(b["rtt_bridge_p99"], 3),
                 benchlib.fnum(b["mb_bridge"], 0), benchlib.fnum(b["one_bridge"], 0)],
                ["added / ratio", benchlib.fnum(b["rtt_bridge_p50"] - b["rtt_direct_p50"], 3),
                 benchlib.fnum(b["rtt_bridge_p99"] - b["rtt_direct_p99"], 3),
                 benchlib.ratio(b["mb_bridge"], b["mb_direct"]), benchlib.ratio(b["one_bridge"], b["one_direct"])]],
                "socket bridge"))
        print(f"load average after: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
