#!/usr/bin/env python3
"""hatchway-tunnel benchmark: everything side by side in one run, printed with ratios.

    python3 bench/tunnel_bench.py              # full run (1 GiB transfers)
    python3 bench/tunnel_bench.py --quick      # 256 MiB transfers, fewer connections
    python3 bench/tunnel_bench.py --binary dist/hatchway-tunnel   # + start-and-connect of the binary

Sections (``--only e2e,limits,client,startup``):

* e2e     (a)-(d): user TCP -> ``forward`` -> ``runner`` -> client -> service, all hatchway
          processes; single-stream MB/s both directions, CPU-s per GiB of every
          process, new connections/s (sequential and 32 at once), RSS idle and with
          1000 open connections.
* limits  (e): the same transfers and connection rates through a plain uvloop
          Protocol relay (bench/plain_relay.py), straight to the services (harness
          ceiling) and iperf3 on loopback.
* client  (f): the spec's client-only method ("Anchor figures" -> "Measurement
          method"): this process plays the runner with aiohttp on uvloop and hosts
          the services; the client process is measured alone.
* startup (g): time from exec of a client until this process's runner has the
          WebSocket, median of 10 (``--binary`` adds the release binary).

The upstream Rust client cannot be built here (no access to the crate registry),
so the upstream columns are the spec's anchor figures (2-core VM), not measured
in this run.  Only 127.0.0.1 is used; every loop is bounded in count and time;
only processes this script started are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aiohttp  # noqa: E402
import benchlib as bl  # noqa: E402
import procstat  # noqa: E402
import uvloop  # noqa: E402
from aiohttp import web  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
HOST = "127.0.0.1"
perf = time.perf_counter

HDR = struct.Struct("!BBIH")
CONNECT, CONNECTED, DATA, CLOSE, ERROR, PING, PONG = 1, 2, 3, 4, 5, 6, 7
TCP = 0

BLOCK = os.urandom(MiB)  # incompressible, repeated
BLOCK_MV = memoryview(BLOCK)
P16 = b"0123456789abcdef"

# Upstream reference figures (tunnel.md "Anchor figures"), client-only method, stock build.
UP = {
    "r2s": (400.0, "≈400 (180–550)"),
    "s2r": (630.0, "≈630 (300–900)"),
    "cpu_r2s": (1.5, "≈1.5 (1.45–2.0)"),
    "cpu_r2s16": (2.0, "1.7–2.2"),
    "cpu_s2r": (0.8, "≈0.8 (0.7–0.9)"),
    "rtt": (85.0, "≈85 µs"),
    "rtt99": (None, "0.15–4.4 ms"),
    "seq_cc": (75.0, "46–75 (NODELAY build 2,131)"),
    "seq_echo": (23.0, "21–23 (NODELAY build 873)"),
    "conc32": (1960.0, "870–1,960 (NODELAY build 2,958)"),
    "idle_rss": (5.9, "≈5.9"),
    "bulk_rss": (6.5, "6.5"),
    "bulk_hwm": (22.5, "22.5"),
    "c1000_rss": (21.5, "21–22"),
    "c1000_after": (21.0, "≈21"),
    "threads": (3, "3"),
    "e2e": (116.0, "58–116 (upstream Python runner+CLI)"),
    "e2e_seq": (35.0, "33–35 (upstream Python runner+CLI)"),
}


# ====================================================================== in-process services

class Writer(asyncio.Protocol):
    """Writes nbytes (1 MiB chunks of BLOCK) with flow control; optionally closes after."""

    def __init__(self, nbytes: int, close_after: bool, fut: asyncio.Future | None = None):
        self.left = nbytes
        self.close_after = close_after
        self.paused = False
        self.fut = fut
        self.tr = None

    def connection_made(self, tr):
        self.tr = tr
        tr.set_write_buffer_limits(high=4 * MiB)
        self._pump()

    def _pump(self):
        tr = self.tr
        while self.left > 0 and not self.paused and not tr.is_closing():
            n = min(MiB, self.left)
            self.left -= n
            tr.write(BLOCK_MV[:n] if n < MiB else BLOCK)
        if self.left == 0:
            if self.fut is not None and not self.fut.done():
                self.fut.set_result(perf())
            if self.close_after:
                self.left = -1
                tr.close()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._pump()

    def data_received(self, data):
        pass

    def eof_received(self):
        return False


class Reader(asyncio.BufferedProtocol):
    """Counts bytes; resolves fut with the time the target count was reached."""

    def __init__(self, target: int, fut: asyncio.Future | None):
        self.buf = bytearray(MiB)
        self.target = target
        self.fut = fut
        self.count = 0
        self.tr = None

    def connection_made(self, tr):
        self.tr = tr

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.count += n
        if self.count >= self.target and self.fut is not None and not self.fut.done():
            self.fut.set_result(perf())

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError(f"closed after {self.count} of {self.target} bytes"))


class Echo(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr

    def data_received(self, data):
        self.tr.write(data)

    def eof_received(self):
        return False


class Services:
    """Echo, sink (counts) and source (sends a set number of bytes, then closes) on 127.0.0.1."""

    def __init__(self):
        self.sink_target = 0
        self.sink_done: asyncio.Future | None = None
        self.source_nbytes = 0
        self.servers = []

    async def start(self):
        loop = asyncio.get_running_loop()
        self.echo = await loop.create_server(Echo, HOST, 0, backlog=4096)
        self.sink = await loop.create_server(lambda: Reader(self.sink_target, self.sink_done), HOST, 0,
                                             backlog=4096)
        self.source = await loop.create_server(lambda: Writer(self.source_nbytes, True), HOST, 0,
                                               backlog=4096)
        self.servers = [self.echo, self.sink, self.source]
        self.echo_port = self.echo.sockets[0].getsockname()[1]
        self.sink_port = self.sink.sockets[0].getsockname()[1]
        self.source_port = self.source.sockets[0].getsockname()[1]

    def arm_sink(self, n: int) -> asyncio.Future:
        self.sink_target = n
        self.sink_done = asyncio.get_running_loop().create_future()
        return self.sink_done

    def close(self):
        for s in self.servers:
            s.close()


# ====================================================================== TCP-side measurements

class EchoOp(asyncio.Protocol):
    """Connect, write payload, wait for the same bytes back; closes unless hold=True."""

    def __init__(self, payload: bytes, fut: asyncio.Future, hold: bool = False):
        self.payload = payload
        self.fut = fut
        self.hold = hold
        self.got = b""
        self.tr = None

    def connection_made(self, tr):
        self.tr = tr
        tr.write(self.payload)

    def data_received(self, data):
        self.got += data
        if len(self.got) >= len(self.payload) and not self.fut.done():
            if self.got[:len(self.payload)] == self.payload:
                self.fut.set_result(True)
            else:
                self.fut.set_exception(ValueError("echo mismatch"))
            if not self.hold:
                self.tr.close()

    def connection_lost(self, exc):
        if not self.fut.done():
            self.fut.set_exception(ConnectionError("closed before the echo"))


async def echo_once(port: int, timeout: float = 5.0, payload: bytes = P16, hold: bool = False):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    tr = None
    try:
        async with asyncio.timeout(timeout):
            tr, _ = await loop.create_connection(lambda: EchoOp(payload, fut, hold), HOST, port)
            await fut
        return tr
    except BaseException:
        if tr is not None:
            tr.close()
        raise


async def tcp_rate(port: int, workers: int, max_ops: int, max_seconds: float) -> dict:
    """connect + 16-byte echo + close, `workers` at once, bounded by count and time."""
    ok = fail = started = 0
    lat: list[float] = []
    t0 = perf()
    deadline = t0 + max_seconds
    errors: dict[str, int] = {}

    async def worker():
        nonlocal ok, fail, started
        while started < max_ops and perf() < deadline:
            started += 1
            t = perf()
            try:
                await echo_once(port, timeout=10.0)
                ok += 1
                lat.append(perf() - t)
            except (OSError, TimeoutError, ConnectionError, ValueError) as e:
                fail += 1
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                if fail > 50 and fail > ok:
                    return

    await asyncio.gather(*(worker() for _ in range(workers)))
    el = perf() - t0
    return {"ok": ok, "fail": fail, "elapsed": el, "rate": ok / el if el > 0 else 0.0,
            "p50_ms": (bl.pct(lat, 50) or 0) * 1e3, "p99_ms": (bl.pct(lat, 99) or 0) * 1e3,
            "errors": errors}


def samples(procs: dict) -> dict:
    out = {name: p.sample() for name, p in procs.items()}
    out["harness"] = procstat.self_sample()
    return out


def cpu_per_gib(before: dict, after: dict, nbytes: int) -> dict:
    return {k: (after[k].cpu - before[k].cpu) / (nbytes / GiB) for k in before}


async def bulk_up(port: int, nbytes: int, svc: Services, procs: dict) -> dict:
    """harness writes nbytes into `port`; the sink service must receive all of it."""
    loop = asyncio.get_running_loop()
    done = svc.arm_sink(nbytes)
    before = samples(procs)
    t0 = perf()
    tr = None
    try:
        async with asyncio.timeout(30 + nbytes / 5e6):
            tr, _ = await loop.create_connection(lambda: Writer(nbytes, False), HOST, port)
            t1 = await done
    finally:
        if tr is not None:
            tr.close()
    after = samples(procs)
    return {"mbps": nbytes / (t1 - t0) / 1e6, "secs": t1 - t0, "cpu": cpu_per_gib(before, after, nbytes)}


async def bulk_down(port: int, nbytes: int, svc: Services, procs: dict) -> dict:
    """the source service sends nbytes; the harness reads them from `port`."""
    loop = asyncio.get_running_loop()
    svc.source_nbytes = nbytes
    fut = loop.create_future()
    before = samples(procs)
    t0 = perf()
    tr = None
    try:
        async with asyncio.timeout(30 + nbytes / 5e6):
            tr, _ = await loop.create_connection(lambda: Reader(nbytes, fut), HOST, port)
            t1 = await fut
    finally:
        if tr is not None:
            tr.close()
    after = samples(procs)
    return {"mbps": nbytes / (t1 - t0) / 1e6, "secs": t1 - t0, "cpu": cpu_per_gib(before, after, nbytes)}


async def open_many(port: int, n: int, timeout: float = 60.0) -> list:
    """n connections, each verified by a 16-byte echo and kept open (50 dialled at once)."""
    trs = []
    sem = asyncio.Semaphore(50)

    async def one():
        async with sem:
            trs.append(await echo_once(port, timeout=15.0, hold=True))

    async with asyncio.timeout(timeout):
        await asyncio.gather(*(one() for _ in range(n)))
    return trs


# ====================================================================== the paths under test

class Path:
    """A way from the harness to the services: (echo, sink, source) local ports + processes."""

    def __init__(self, name: str, echo: int, sink: int, source: int, procs: dict, group: bl.ProcGroup):
        self.name = name
        self.echo, self.sink, self.source = echo, sink, source
        self.procs = procs
        self.group = group


async def wait_echo(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            tr = await echo_once(port, timeout=2.0)
            tr.close()
            return
        except (OSError, TimeoutError, ConnectionError, ValueError) as e:
            last = e
            await asyncio.sleep(0.1)
    raise TimeoutError(f"no echo through port {port} within {timeout:.0f} s ({last!r})")


async def wait_tunnel_registered(runner_port: int, cid: str, timeout: float) -> None:
    """Open /ws/forward/{cid}/1 until the runner answers the text CONNECTED."""
    deadline = time.monotonic() + timeout
    last = ""
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.ws_connect(f"ws://{HOST}:{runner_port}/ws/forward/{cid}/1",
                                        timeout=aiohttp.ClientWSTimeout(ws_receive=2.0), autoping=True) as ws:
                    msg = await ws.receive(timeout=2.0)
                    if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "CONNECTED":
                        return
                    last = str(msg.data)
            except (TimeoutError, OSError, aiohttp.ClientError) as e:
                last = repr(e)
            await asyncio.sleep(0.1)
    raise TimeoutError(f"tunnel {cid!r} not registered at the runner within {timeout:.0f} s ({last})")


async def start_hatchway_path(args, svc: Services, logdir: str) -> Path:
    cmd = bl.split_cmd(args.tunnel_cmd)
    env = bl.hatchway_env()
    group = bl.ProcGroup()
    loop = asyncio.get_running_loop()
    try:
        rport = bl.free_port()
        runner = group.add(bl.Proc("tunnel-runner", cmd + ["runner", "--host", HOST, "--port", str(rport),
                                                            "--log-level", "warn"] + shlex.split(args.runner_args),
                                   logdir, env))
        deadline = time.monotonic() + 20
        while not bl.port_open(HOST, rport, 0.2):
            if not runner.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"runner did not listen on {rport}: {runner.log_tail()}")
            await asyncio.sleep(0.05)
        client = group.add(bl.Proc("tunnel-client", cmd + ["--runner-url", f"ws://{HOST}:{rport}/",
                                                            "--container-id", "bench", "--log-level", "warn",
                                                            "--reconnect-delay", "1"] + shlex.split(args.client_args),
                                   logdir, env))
        try:
            await wait_tunnel_registered(rport, "bench", 20.0)
        except TimeoutError as e:
            raise RuntimeError(f"{e}; client log: {client.log_tail()}") from None
        procs = {"client": client, "runner": runner}
        ports = {}
        for svcname, sport in (("echo", svc.echo_port), ("sink", svc.sink_port), ("source", svc.source_port)):
            lport = bl.free_port()
            p = group.add(bl.Proc(f"tunnel-forward-{svcname}",
                                  cmd + ["forward", "--url", f"ws://{HOST}:{rport}", "-l", str(lport),
                                         "--log-level", "warn"] + shlex.split(args.forward_args)
                                  + ["bench", str(sport)], logdir, env))
            ok = await loop.run_in_executor(None, p.wait_line, "READY", 20.0)
            if not ok and not bl.port_open(HOST, lport):
                raise RuntimeError(f"forward for {svcname} not ready: {p.log_tail()}")
            ports[svcname] = lport
            procs[f"fwd-{svcname}"] = p
        await wait_echo(ports["echo"], 20.0)
        return Path("hatchway", ports["echo"], ports["sink"], ports["source"], procs, group)
    except BaseException:
        group.stop_all()
        raise


async def start_relay_path(svc: Services, logdir: str, hops: int = 1) -> Path:
    """`hops` plain relay processes in a chain (3 = as many process hops as forward/runner/client)."""
    group = bl.ProcGroup()
    loop = asyncio.get_running_loop()
    try:
        targets = [svc.echo_port, svc.sink_port, svc.source_port]
        procs = {}
        for h in range(hops, 0, -1):  # last hop first, so each listens before its feeder starts
            listen = [bl.free_port() for _ in targets]
            name = "relay" if hops == 1 else f"relay{h}"
            p = group.add(bl.Proc(f"plain-{name}", [sys.executable, os.path.join(bl.BENCH_DIR, "plain_relay.py")]
                                  + [f"{lp}:{t}" for lp, t in zip(listen, targets, strict=True)] + ["--max-seconds", "3600"],
                                  logdir))
            if not await loop.run_in_executor(None, p.wait_line, "READY", 20.0):
                raise RuntimeError(f"plain relay not ready: {p.log_tail()}")
            procs[name] = p
            targets = listen
        await wait_echo(targets[0], 10.0)
        label = "plain relay" if hops == 1 else f"plain relay ×{hops}"
        return Path(label, targets[0], targets[1], targets[2], dict(reversed(list(procs.items()))), group)
    except BaseException:
        group.stop_all()
        raise


def direct_path(svc: Services) -> Path:
    return Path("direct", svc.echo_port, svc.sink_port, svc.source_port, {}, bl.ProcGroup())


def iperf3(nbytes: int, reverse: bool, logdir: str) -> float | None:
    """Single-stream iperf3 on loopback, receiver MB/s (decimal)."""
    port = bl.free_port()
    with bl.ProcGroup() as g:
        srv = g.add(bl.Proc("iperf3-server", ["iperf3", "-s", "-1", "-B", HOST, "-p", str(port), "--forceflush"],
                            logdir))
        if not srv.wait_line("listening", 10.0):
            time.sleep(0.5)
        cmd = ["iperf3", "-c", HOST, "-p", str(port), "-n", str(nbytes), "-J"] + (["-R"] if reverse else [])
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
            j = json.loads(r.stdout)
            return j["end"]["sum_received"]["bits_per_second"] / 8 / 1e6
        except (subprocess.TimeoutExpired, ValueError, KeyError) as e:
            bl.log(f"iperf3 failed: {e!r}")
            return None


async def measure_path(path: Path, args, svc: Services) -> dict:
    """(a) (b) (c) [and (d) for hatchway] on one path."""
    res: dict = {"up": [], "down": []}
    n = args.size * MiB
    if path.procs:
        await asyncio.sleep(2.0)
        res["idle"] = {k: p.sample() for k, p in path.procs.items()}
    res["up_fail"], res["down_fail"] = [], []
    for i in range(args.repeat):
        for key, fn, port in (("up", bulk_up, path.sink), ("down", bulk_down, path.source)):
            bl.log(f"{path.name}: bulk {key} {args.size} MiB ({i + 1}/{args.repeat})")
            try:
                res[key].append(await fn(port, n, svc, path.procs))
                bl.log(f"{path.name}:   {res[key][-1]['mbps']:.0f} MB/s")
            except (OSError, TimeoutError, ConnectionError) as e:
                res[f"{key}_fail"].append(f"{type(e).__name__}: {e}")
                bl.log(f"{path.name}:   FAILED: {e!r}")
                await asyncio.sleep(1.0)
    if path.procs:
        res["after_bulk"] = {k: p.sample() for k, p in path.procs.items()}
    # Fast paths burn ephemeral ports quickly: TIME_WAIT entries are reusable on loopback
    # (tcp_tw_reuse) only once they are a second old, so pause before each rate test.
    await asyncio.sleep(2.0)
    bl.log(f"{path.name}: connection rate, one at a time")
    res["seq"] = await tcp_rate(path.echo, 1, args.rate_ops, args.rate_seconds)
    bl.log(f"{path.name}:   {res['seq']['rate']:.0f}/s; 32 at once")
    await asyncio.sleep(2.0)
    res["c32"] = await tcp_rate(path.echo, 32, args.rate_ops, args.rate_seconds)
    bl.log(f"{path.name}:   {res['c32']['rate']:.0f}/s")
    if path.procs and args.conns:
        await asyncio.sleep(1.0)
        bl.log(f"{path.name}: {args.conns} open connections")
        before = {k: p.sample() for k, p in path.procs.items()}
        trs = []
        try:
            trs = await open_many(path.echo, args.conns)
            await asyncio.sleep(0.5)
            res["many"] = {k: p.sample() for k, p in path.procs.items()}
            res["many_before"] = before
        except (OSError, TimeoutError, ConnectionError, ValueError) as e:
            res["many_error"] = f"{type(e).__name__}: {e} after {len(trs)} connections"
        finally:
            for tr in trs:
                tr.close()
        await asyncio.sleep(1.0)
        res["many_after"] = {k: p.sample() for k, p in path.procs.items()}
    return res


# ====================================================================== client-only: the harness is the runner

class Conn:
    __slots__ = ("id", "connected", "closed", "rx", "target", "done", "buf", "want", "waiter", "error")

    def __init__(self, cid: int, loop):
        self.id = cid
        self.connected = loop.create_future()
        self.closed = loop.create_future()
        self.rx = 0
        self.target = 0
        self.done: asyncio.Future | None = None
        self.buf: bytearray | None = None
        self.want = 0
        self.waiter: asyncio.Future | None = None
        self.error = b""


class HarnessRunner:
    """/ws/tunnel/{id} served by aiohttp on this loop: no size limit, auto-ping on, no deflate."""

    def __init__(self):
        self.ws: web.WebSocketResponse | None = None
        self.conns: dict[int, Conn] = {}
        self.next_id = 101
        self.handshakes: list[dict] = []
        self.seen: dict[str, asyncio.Future] = {}
        self.ws_by_cid: dict[str, web.WebSocketResponse] = {}
        self.bench_ws: asyncio.Future | None = None

    async def start(self):
        app = web.Application()
        app.router.add_get("/ws/tunnel/{cid}", self.handler)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"ws://{HOST}:{self.port}/"

    async def stop(self):
        await self.runner.cleanup()

    def expect(self, cid: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.seen[cid] = fut
        return fut

    async def handler(self, request: web.Request):
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True, compress=False)
        await ws.prepare(request)
        t = perf()
        cid = request.match_info["cid"]
        self.handshakes.append({"t": t, "path": request.path, "cid": cid, "headers": dict(request.headers)})
        self.ws_by_cid[cid] = ws
        fut = self.seen.get(cid)
        if fut is not None and not fut.done():
            fut.set_result(t)
        if cid == "bench":
            self.ws = ws
            if self.bench_ws is not None and not self.bench_ws.done():
                self.bench_ws.set_result(t)
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.dispatch(msg.data)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                  aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        finally:
            if self.ws is ws:
                self.ws = None
            self.ws_by_cid.pop(cid, None)
        return ws

    def dispatch(self, data: bytes):
        if len(data) < 8:
            return
        typ, _proto, cid, _port = HDR.unpack_from(data)
        c = self.conns.get(cid)
        if c is None:
            return
        if typ == DATA:
            n = len(data) - 8
            c.rx += n
            if c.buf is not None:
                c.buf += memoryview(data)[8:]
                if c.waiter is not None and len(c.buf) >= c.want and not c.waiter.done():
                    c.waiter.set_result(None)
            if c.done is not None and c.rx >= c.target and not c.done.done():
                c.done.set_result(perf())
        elif typ == CONNECTED:
            if not c.connected.done():
                c.connected.set_result(None)
        elif typ in (CLOSE, ERROR):
            if typ == ERROR:
                c.error = bytes(data[8:])
            if not c.connected.done():
                c.connected.set_exception(ConnectionError(f"ERROR {c.error!r}" if typ == ERROR else "CLOSE"))
            if not c.closed.done():
                c.closed.set_result(typ)
            for f in (c.waiter, c.done):
                if f is not None and not f.done():
                    f.set_exception(ConnectionError("closed by the client"))

    def new_conn(self) -> Conn:
        c = Conn(self.next_id, asyncio.get_running_loop())
        self.next_id += 1
        self.conns[c.id] = c
        return c

    async def send(self, data: bytes):
        await self.ws.send_bytes(data)

    async def connect(self, port: int, timeout: float = 10.0) -> Conn:
        c = self.new_conn()
        await self.send(HDR.pack(CONNECT, TCP, c.id, port))
        async with asyncio.timeout(timeout):
            await c.connected
        return c

    async def close(self, c: Conn):
        self.conns.pop(c.id, None)
        if self.ws is not None:
            await self.send(HDR.pack(CLOSE, TCP, c.id, 0))

    async def echo(self, c: Conn, payload: bytes, timeout: float = 10.0):
        loop = asyncio.get_running_loop()
        if c.buf is None:
            c.buf = bytearray()
        c.want = len(payload)
        c.waiter = loop.create_future()
        if len(c.buf) >= c.want:
            c.waiter.set_result(None)
        await self.send(HDR.pack(DATA, TCP, c.id, 0) + payload)
        async with asyncio.timeout(timeout):
            await c.waiter
        got = bytes(c.buf[:c.want])
        del c.buf[:c.want]
        if got != payload:
            raise ValueError("echo mismatch")


async def client_only(args, svc: Services, logdir: str) -> dict:
    """tunnel.md "Measurement method", steps 1-7, against the client process alone."""
    res: dict = {}
    hr = HarnessRunner()
    await hr.start()
    loop = asyncio.get_running_loop()
    hr.bench_ws = loop.create_future()
    cmd = bl.split_cmd(args.tunnel_cmd)
    group = bl.ProcGroup()
    step = "start"
    try:
        client = group.add(bl.Proc("tunnel-client-only", cmd + ["--runner-url", hr.url, "--container-id", "bench",
                                                                 "--log-level", "warn", "--reconnect-delay", "1"]
                                   + shlex.split(args.client_args),
                                   logdir, bl.hatchway_env()))
        st = client.stat
        try:
            async with asyncio.timeout(10):
                await hr.bench_ws
        except TimeoutError:
            raise RuntimeError(f"the client did not connect within 10 s: {client.log_tail()}") from None
        hs = hr.handshakes[-1]
        res["path"] = hs["path"]
        res["headers"] = {k: v for k, v in hs["headers"].items() if k.lower().startswith("sec-websocket")}
        # 1. idle
        await asyncio.sleep(2.0)
        res["idle"] = st.sample()
        bl.log(f"client-only: idle RSS {res['idle'].rss_mb:.1f} MB, path {res['path']}")
        # 2. RTT
        step = "RTT"
        c = await hr.connect(svc.echo_port)
        payload = os.urandom(32)
        rtts = []
        t_end = perf() + args.rate_seconds
        for _ in range(3000):
            t = perf()
            await hr.echo(c, payload)
            rtts.append(perf() - t)
            if perf() > t_end:
                break
        await hr.close(c)
        res["rtt_p50_us"] = bl.pct(rtts, 50) * 1e6
        res["rtt_p99_us"] = bl.pct(rtts, 99) * 1e6
        bl.log(f"client-only: RTT p50 {res['rtt_p50_us']:.0f} µs")
        # 3. bulk runner -> service
        n = args.size * MiB
        for msg_size, key in ((64 * 1024, "r2s"), (16 * 1024, "r2s16")):
            step = f"bulk runner->service {msg_size} B messages"
            done = svc.arm_sink(n)  # before CONNECT: the sink takes its target when it accepts
            c = await hr.connect(svc.sink_port)
            hdr = HDR.pack(DATA, TCP, c.id, 0)
            msg = hdr + BLOCK[:msg_size]
            count = n // msg_size
            before = st.sample()
            hbefore = procstat.self_sample()
            t0 = perf()
            async with asyncio.timeout(30 + n / 5e6):
                for _ in range(count):
                    await hr.ws.send_bytes(msg)
                t1 = await done
            after = st.sample()
            hafter = procstat.self_sample()
            await hr.close(c)
            res[key] = {"mbps": n / (t1 - t0) / 1e6, "cpu": (after.cpu - before.cpu) / (n / GiB),
                        "harness_cpu": (hafter.cpu - hbefore.cpu) / (n / GiB)}
            bl.log(f"client-only: runner->service {msg_size // 1024} KiB msgs: {res[key]['mbps']:.0f} MB/s, "
                   f"{res[key]['cpu']:.2f} CPU-s/GiB")
        # 4. bulk service -> runner
        step = "bulk service->runner"
        svc.source_nbytes = n
        c = hr.new_conn()
        c.target = n
        c.done = loop.create_future()
        before = st.sample()
        hbefore = procstat.self_sample()
        t0 = perf()
        await hr.send(HDR.pack(CONNECT, TCP, c.id, svc.source_port))
        async with asyncio.timeout(30 + n / 5e6):
            t1 = await c.done
        after = st.sample()
        hafter = procstat.self_sample()
        await hr.close(c)
        res["s2r"] = {"mbps": n / (t1 - t0) / 1e6, "cpu": (after.cpu - before.cpu) / (n / GiB),
                      "harness_cpu": (hafter.cpu - hbefore.cpu) / (n / GiB)}
        res["after_bulk"] = st.sample()
        bl.log(f"client-only: service->runner: {res['s2r']['mbps']:.0f} MB/s, {res['s2r']['cpu']:.2f} CPU-s/GiB")
        # 5. sequential setup
        step = "sequential setup"
        nset = args.setup_n
        t0 = perf()
        done_n = 0
        for _ in range(nset):
            c = await hr.connect(svc.echo_port)
            await hr.close(c)
            done_n += 1
            if perf() - t0 > args.rate_seconds:
                break
        res["seq_cc"] = done_n / (perf() - t0)
        get = b"GET / HTTP/1.0\r\n\r\n"
        t0 = perf()
        done_n = 0
        for _ in range(nset):
            c = await hr.connect(svc.echo_port)
            await hr.echo(c, get)
            await hr.close(c)
            done_n += 1
            if perf() - t0 > args.rate_seconds:
                break
        res["seq_echo"] = done_n / (perf() - t0)
        bl.log(f"client-only: sequential {res['seq_cc']:.0f}/s, with echo {res['seq_echo']:.0f}/s")
        # 6. 32 concurrent workers
        step = "32 concurrent setup"
        per = max(1, nset // 32)
        completed = 0
        t0 = perf()

        async def worker():
            nonlocal completed
            for _ in range(per):
                c = await hr.connect(svc.echo_port)
                await hr.echo(c, b"hello")
                await hr.close(c)
                completed += 1
                if perf() - t0 > args.rate_seconds:
                    return

        async with asyncio.timeout(args.rate_seconds + 30):
            await asyncio.gather(*(worker() for _ in range(32)))
        res["conc32"] = completed / (perf() - t0)
        bl.log(f"client-only: 32 concurrent {res['conc32']:.0f}/s")
        await asyncio.sleep(1.0)
        res["after_setup"] = st.sample()
        # 7. many open connections
        step = f"{args.conns} open connections"
        if args.conns:
            cs = [hr.new_conn() for _ in range(args.conns)]
            for c in cs:
                await hr.send(HDR.pack(CONNECT, TCP, c.id, svc.echo_port))
            async with asyncio.timeout(60):
                await asyncio.gather(*(c.connected for c in cs))
            await asyncio.sleep(0.5)
            res["many"] = st.sample()
            for c in cs:
                await hr.close(c)
            await asyncio.sleep(0.5)
            res["many_after"] = st.sample()
            bl.log(f"client-only: {args.conns} connections: RSS {res['many'].rss_mb:.1f} MB, "
                   f"after close {res['many_after'].rss_mb:.1f} MB")
        res["alive"] = client.alive()
        return res
    except (TimeoutError, ConnectionError, ValueError, OSError) as e:
        raise RuntimeError(f"step {step!r}: {type(e).__name__} {e}; client alive: {client.alive()}; "
                           f"log: {client.log_tail(5)!r}") from None
    finally:
        group.stop_all()
        await hr.stop()


async def startup(args, label: str, cmd: list[str], logdir: str, runs: int) -> dict:
    """(g) exec -> WebSocket handshake complete at this process's runner, `runs` times."""
    hr = HarnessRunner()
    await hr.start()
    loop = asyncio.get_running_loop()
    times, rss = [], []
    err = None
    try:
        for i in range(runs):
            cid = f"start{i}"
            fut = hr.expect(cid)
            t0 = perf()
            p = bl.Proc(f"startup-{label}-{i}", cmd + ["--runner-url", hr.url, "--container-id", cid,
                                                         "--log-level", "warn", "--reconnect-delay", "1"],
                        logdir, bl.hatchway_env())
            try:
                async with asyncio.timeout(15):
                    t1 = await fut
                times.append(t1 - t0)
                await asyncio.sleep(0.5)
                rss.append(p.sample().rss)
            except TimeoutError:
                err = f"no WebSocket within 15 s: {p.log_tail(5)}"
            finally:
                await loop.run_in_executor(None, p.stop)
            if err:
                break
    finally:
        await hr.stop()
    return {"times": times, "rss": rss, "error": err}


# ====================================================================== report

def med(rs: list[dict], key: str = "mbps"):
    return bl.median([r[key] for r in rs]) if rs else None


def rng(rs: list[dict], key: str = "mbps") -> str:
    xs = [r[key] for r in rs]
    if len(xs) < 2:
        return ""
    return f" ({min(xs):.0f}–{max(xs):.0f})"


def tput_cell(P: dict | None, key: str) -> str:
    if not P:
        return "–"
    s = (bl.fnum(med(P[key]), 0) + rng(P[key])) if P[key] else "–"
    fails = P.get(f"{key}_fail") or []
    if fails:
        s += f" [{len(fails)} of {len(fails) + len(P[key])} runs FAILED: {fails[0]}]"
    return s


def cpu_med(rs: list[dict], proc: str):
    xs = [r["cpu"].get(proc) for r in rs]
    xs = [x for x in xs if x is not None]
    return bl.median(xs)


def passfail(ok) -> str:
    return "–" if ok is None else ("PASS" if ok else "FAIL")


def report(args, R: dict) -> str:
    out = []
    out.append(f"hatchway-tunnel bench — {time.strftime('%Y-%m-%d %H:%M:%S')}; {bl.machine_line()}")
    extra = " ".join(f"{k}={v!r}" for k, v in (("client", args.client_args), ("runner", args.runner_args),
                                                ("forward", args.forward_args)) if v)
    out.append("hatchway processes run with their default flags" + (f" plus {extra}" if extra else "") + ".")
    out.append(f"transfer size {args.size} MiB × {args.repeat} run(s) (median shown, range in parentheses); "
               f"TCP rate tests ≤ {args.rate_seconds:g} s / ≤ {args.rate_ops} ops; client-only setup n = {args.setup_n}; "
               f"{args.conns} open connections")
    out.append("Upstream Rust client: NOT measured here — it cannot be built offline (crate registry unreachable); "
               "the 'upstream' columns are tunnel.md's anchor figures (2-core VM, loaded), for reference only.")
    out.append("")
    H = R.get("hatchway")
    RL = R.get("relay")
    R3 = R.get("relay3")
    D = R.get("direct")
    ip = R.get("iperf3", {})

    # ---------------- (a)(e) throughput
    if H or RL or D:
        rows = []
        for key, label, ipk in (("up", "single stream user→service (runner→service), MB/s", "up"),
                                ("down", "single stream service→user (service→runner), MB/s", "down")):
            h = med(H[key]) if H else None
            r = med(RL[key]) if RL else None
            r3 = med(R3[key]) if R3 else None
            d = med(D[key]) if D else None
            i = ip.get(ipk)
            failed = bool(H and H.get(f"{key}_fail"))
            rows.append([label, tput_cell(H, key), tput_cell(R3, key), tput_cell(RL, key),
                         bl.fnum(d, 0), bl.fnum(i, 0), bl.ratio(h, r3), bl.ratio(h, r), bl.ratio(h, i), UP["e2e"][1],
                         "≥ 300", passfail(None if h is None else (h >= 300 and not failed))])
        out.append(bl.table(["(a)(e) end to end", "hatchway", "plain relay ×3", "plain relay", "direct", "iperf3",
                             "hw/relay×3", "hw/relay", "hw/iperf3", "upstream", "target", ""], rows,
                            "## Throughput: user TCP → forward → runner → client → service (1 stream, decimal MB/s)"))
        out.append("  plain relay = one uvloop Protocol relay process (bench/plain_relay.py); ×3 = three chained, as many "
                   "process hops as forward→runner→client; direct = harness straight to the service (harness ceiling); "
                   "iperf3 = kernel loopback, single stream.")
        out.append("")

    # ---------------- (b) CPU
    if H:
        rows = []
        procs = [k for k in H["up"][0]["cpu"].keys()] if H["up"] else []
        for k in procs:
            if k.startswith("fwd-") and k not in ("fwd-sink", "fwd-source"):
                continue
            up = cpu_med(H["up"], k)
            dn = cpu_med(H["down"], k)
            rows.append([k, bl.fnum(up, 2), bl.fnum(dn, 2),
                         "≤ 1.5" if k == "client" else "",
                         passfail((up <= 1.5 and dn <= 1.5) if k == "client" and up is not None else None)])
        if RL and RL["up"] and RL["up"][0]["cpu"].get("relay") is not None:
            rows.append(["plain relay process (for scale)", bl.fnum(cpu_med(RL["up"], "relay"), 2),
                         bl.fnum(cpu_med(RL["down"], "relay"), 2), "", ""])
        if R3 and R3["up"]:
            def tot(rs: list) -> float:
                return bl.median([sum(v for k, v in r["cpu"].items() if k.startswith("relay")) for r in rs])

            rows.append(["plain relay ×3, all three (for scale)", bl.fnum(tot(R3["up"]), 2),
                         bl.fnum(tot(R3["down"]), 2), "", ""])
            def hw(rs: list) -> float:
                return bl.median([sum(v for k, v in r["cpu"].items() if k != "harness") for r in rs])

            rows.append(["hatchway, all processes", bl.fnum(hw(H["up"]), 2), bl.fnum(hw(H["down"]), 2), "", ""])
        out.append(bl.table(["(b) CPU-s per GiB, by process", "user→service", "service→user", "target", ""], rows,
                            "## CPU cost end to end (utime+stime per GiB moved)"))
        out.append("  upstream client (anchor, client-only method): 1.5 runner→service, 0.8 service→runner. "
                   "fwd-sink carries the up test, fwd-source the down test; harness = this process.")
        out.append("")

    # ---------------- (c) connection rate
    if H or RL or D:
        rows = []
        for key, label, up_ref, target in (("seq", "one at a time", UP["e2e_seq"][1], None),
                                           ("c32", "32 at once", "–", 2000)):
            h = H[key] if H else None
            r = RL[key] if RL else None
            r3 = R3[key] if R3 else None
            d = D[key] if D else None
            def cell(x):
                if x is None:
                    return "–"
                s = f"{x['rate']:,.0f}/s (p50 {x['p50_ms']:.1f} ms, p99 {x['p99_ms']:.1f} ms)"
                if x["fail"]:
                    s += f" {x['fail']} failed {x['errors']}"
                return s
            rows.append([label, cell(h), cell(r3), cell(r), cell(d), bl.ratio(h and h["rate"], r3 and r3["rate"]),
                         bl.ratio(h and h["rate"], r and r["rate"]), up_ref,
                         f"≥ {target:,}" if target else "",
                         passfail(None if (target is None or h is None) else h["rate"] >= target)])
        out.append(bl.table(["(c) connect + 16 B echo + close", "hatchway", "plain relay ×3", "plain relay", "direct",
                             "hw/relay×3", "hw/relay", "upstream e2e", "target", ""], rows,
                            "## New connections per second through the forward port"))
        out.append("")

    # ---------------- (d) memory
    if H and "idle" in H:
        rows = []
        for k in H["idle"]:
            idle = H["idle"][k]
            many = H.get("many", {}).get(k)
            aft = H.get("many_after", {}).get(k)
            ab = H.get("after_bulk", {}).get(k)
            per = (many.rss - idle.rss) / args.conns / 1e3 if many else None
            rows.append([k, bl.fnum(idle.rss_mb, 1), str(idle.threads), bl.fnum(ab and ab.rss_mb, 1),
                         bl.fnum(ab and ab.hwm_mb, 1), bl.fnum(many and many.rss_mb, 1), bl.fnum(per, 1),
                         bl.fnum(aft and aft.rss_mb, 1)])
        out.append(bl.table(["(d) process", "idle RSS MB", "threads", "after bulk MB", "peak (HWM) MB",
                             f"{args.conns} conns MB", "KB/conn over idle", "after close MB"], rows,
                            "## Memory end to end (VmRSS, whole process tree)"))
        if H.get("many_error"):
            out.append(f"  {args.conns}-connection test: {H['many_error']}")
        out.append("  upstream client (anchor): idle 5.9 MB, 1000 connections 21–22 MB (15–16 KB each).")
        out.append("")

    # ---------------- (f) client only
    C = R.get("client")
    if C:
        def row(label, val, key, nd=0, lower_better=False, target=None, unit=""):
            ref = UP[key][0] if key else None
            refs = UP[key][1] if key else "–"
            ok = None
            if target is not None and val is not None:
                ok = val <= target if lower_better else val >= target
            tgt = "" if target is None else (("≤ " if lower_better else "≥ ") + f"{target:,}{unit}")
            return [label, bl.fnum(val, nd), refs, bl.ratio(val, ref), tgt, passfail(ok)]
        rows = [
            row("bulk runner→service, 64 KiB DATA, MB/s", C["r2s"]["mbps"], "r2s"),
            row("  client CPU-s per GiB", C["r2s"]["cpu"], "cpu_r2s", 2, True, 1.5),
            row("bulk runner→service, 16 KiB DATA, MB/s", C["r2s16"]["mbps"], None),
            row("  client CPU-s per GiB", C["r2s16"]["cpu"], "cpu_r2s16", 2, True),
            row("bulk service→runner, MB/s", C["s2r"]["mbps"], "s2r"),
            row("  client CPU-s per GiB", C["s2r"]["cpu"], "cpu_s2r", 2, True, 1.5),
            row("RTT 32 B echo p50, µs", C["rtt_p50_us"], "rtt", 0, True),
            row("RTT 32 B echo p99, µs", C["rtt_p99_us"], "rtt99", 0, True),
            row("sequential CONNECT→CONNECTED→CLOSE /s", C["seq_cc"], "seq_cc"),
            row("sequential + 1 echo /s", C["seq_echo"], "seq_echo"),
            row("32 concurrent (connect+echo+close) /s", C["conc32"], "conc32", 0, False, 2000),
            row("idle RSS MB", C["idle"].rss_mb, "idle_rss", 1, True),
            row("threads (idle)", C["idle"].threads, "threads", 0, True),
            row("RSS after bulk MB", C["after_bulk"].rss_mb, "bulk_rss", 1, True),
            row("peak RSS (VmHWM) after bulk MB", C["after_bulk"].hwm_mb, "bulk_hwm", 1, True),
        ]
        if "many" in C:
            rows.append(row(f"RSS with {args.conns} open connections MB", C["many"].rss_mb, "c1000_rss", 1, True))
            rows.append(row("RSS after closing them MB", C["many_after"].rss_mb, "c1000_after", 1, True))
        out.append(bl.table(["(f) client only (harness = runner)", "hatchway", "upstream Rust (anchor)",
                             "hatchway/upstream", "target", ""], rows,
                            "## Client alone, spec method (aiohttp runner on uvloop in this process)"))
        out.append(f"  handshake path {C['path']!r} (trailing slash stripped: {C['path'] == '/ws/tunnel/bench'}); "
                   f"headers {C['headers']}; harness CPU-s/GiB r→s {C['r2s']['harness_cpu']:.2f}, "
                   f"s→r {C['s2r']['harness_cpu']:.2f}; client alive at the end: {C['alive']}")
        out.append("")

    # ---------------- (g) startup
    S = R.get("startup")
    if S:
        rows = []
        for label, s in S.items():
            t = s["times"]
            is_bin = label != "python -m"
            m = bl.median(t)
            rows.append([label, str(len(t)), bl.fnum(m and m * 1e3, 0), bl.fnum(t and min(t) * 1e3, 0),
                         bl.fnum(t and max(t) * 1e3, 0), bl.fnum(bl.median(s["rss"]) and bl.median(s["rss"]) / 1e6, 1),
                         "< 400" if is_bin else "", passfail(m < 0.4 if (is_bin and m is not None) else None),
                         s["error"] or ""])
        out.append(bl.table(["(g) client", "runs", "median ms", "min ms", "max ms", "RSS MB (tree)",
                             "target", "", "note"], rows,
                            "## Start and connect: exec → WebSocket complete at the runner"))
        for label in S:
            if label != "python -m" and os.path.exists(label):
                st_ = os.stat(label)
                out.append(f"  {label}: {st_.st_size:,} bytes, built {time.strftime('%Y-%m-%d %H:%M', time.localtime(st_.st_mtime))}")
        out.append("  upstream Rust binary: not measurable here (cannot be built offline).")
        out.append("")

    for k, v in R.get("errors", {}).items():
        out.append(f"NOT MEASURED — {k}: {v}")
    return "\n".join(out)


# ====================================================================== main

async def run(args) -> dict:
    R: dict = {"errors": {}}
    logdir = args.logdir or tempfile.mkdtemp(prefix="tunnel-bench-")
    os.makedirs(logdir, exist_ok=True)
    bl.log(f"logs in {logdir}")
    svc = Services()
    await svc.start()
    sections = set(args.only.split(","))
    loop = asyncio.get_running_loop()
    try:
        if "e2e" in sections:
            try:
                path = await start_hatchway_path(args, svc, logdir)
                try:
                    R["hatchway"] = await measure_path(path, args, svc)
                    dead = [k for k, p in path.procs.items() if not p.alive()]
                    if dead:
                        R["errors"]["e2e processes exited"] = ", ".join(dead)
                finally:
                    await loop.run_in_executor(None, path.group.stop_all)
            except Exception as e:  # noqa: BLE001 - report and go on
                R["errors"]["e2e (a)-(d)"] = f"{type(e).__name__}: {e}"
                bl.log(f"e2e failed: {e}")
        if "limits" in sections:
            for hops, key in ((1, "relay"), (3, "relay3")):
                try:
                    path = await start_relay_path(svc, logdir, hops)
                    try:
                        R[key] = await measure_path(path, args, svc)
                    finally:
                        await loop.run_in_executor(None, path.group.stop_all)
                except Exception as e:  # noqa: BLE001
                    R["errors"][f"plain relay ×{hops} (e)"] = f"{type(e).__name__}: {e}"
            try:
                R["direct"] = await measure_path(direct_path(svc), args, svc)
            except Exception as e:  # noqa: BLE001
                R["errors"]["direct (e)"] = f"{type(e).__name__}: {e}"
            n = args.size * MiB
            bl.log("iperf3")
            R["iperf3"] = {"up": await loop.run_in_executor(None, iperf3, n, False, logdir),
                           "down": await loop.run_in_executor(None, iperf3, n, True, logdir)}
        if "client" in sections:
            try:
                R["client"] = await client_only(args, svc, logdir)
            except Exception as e:  # noqa: BLE001
                R["errors"]["client-only (f)"] = f"{type(e).__name__}: {e}"
                bl.log(f"client-only failed: {e!r}")
        if "startup" in sections:
            R["startup"] = {}
            cands = [("python -m", bl.split_cmd(args.tunnel_cmd))]
            if args.binary:
                if os.access(args.binary, os.X_OK):
                    cands.append((args.binary, [os.path.abspath(args.binary)]))
                else:
                    R["errors"]["startup (g) binary"] = f"{args.binary} not found or not executable (build/release)"
            for label, cmd in cands:
                bl.log(f"startup: {label}")
                try:
                    R["startup"][label] = await startup(args, label, cmd, logdir, args.startup_runs)
                except Exception as e:  # noqa: BLE001
                    R["errors"][f"startup (g) {label}"] = f"{type(e).__name__}: {e}"
    finally:
        svc.close()
    return R


def to_jsonable(x):
    if isinstance(x, procstat.Sample):
        return {"cpu": x.cpu, "rss": x.rss, "hwm": x.hwm, "threads": x.threads, "nprocs": x.nprocs}
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, help="MiB per bulk transfer [1024; --quick 256]")
    ap.add_argument("--repeat", type=int, help="runs per transfer direction, median reported [3; --quick 1]")
    ap.add_argument("--setup-n", type=int, help="connections per setup-rate test [2000; --quick 1000]")
    ap.add_argument("--rate-seconds", type=float, help="time bound per rate test [10; --quick 5]")
    ap.add_argument("--rate-ops", type=int, default=10000,
                    help="at most this many connections per TCP rate test (c) [10000; more can exhaust "
                    "ephemeral ports on the fast reference paths]")
    ap.add_argument("--conns", type=int, default=1000, help="open connections for the memory test [1000]")
    ap.add_argument("--quick", action="store_true", help="smaller sizes so the whole run takes a few minutes")
    ap.add_argument("--only", default="e2e,limits,client,startup", help="comma list of sections")
    ap.add_argument("--tunnel-cmd", default=f"{shlex.quote(sys.executable)} -m hatchway.tunnel",
                    help="command that runs hatchway-tunnel (client; 'runner'/'forward' sub-commands)")
    ap.add_argument("--client-args", default="", help="extra flags for the tunnel client, e.g. '--buffer-limit 4194304'")
    ap.add_argument("--runner-args", default="", help="extra flags for 'runner'")
    ap.add_argument("--forward-args", default="", help="extra flags for 'forward', e.g. '--slow-consumer block'")
    ap.add_argument("--binary", help="release binary to time in (g), e.g. dist/hatchway-tunnel")
    ap.add_argument("--startup-runs", type=int, default=10)
    ap.add_argument("--json", help="also write raw results here")
    ap.add_argument("--logdir", help="where process logs go [a new temp dir]")
    args = ap.parse_args(argv)
    q = args.quick
    args.size = args.size or (256 if q else 1024)
    args.repeat = args.repeat or (1 if q else 3)
    args.setup_n = args.setup_n or (1000 if q else 2000)
    args.rate_seconds = args.rate_seconds or (5.0 if q else 10.0)
    if args.binary is None and os.access(os.path.join(bl.REPO, "dist", "hatchway-tunnel"), os.X_OK):
        args.binary = os.path.join(bl.REPO, "dist", "hatchway-tunnel")
    bl.raise_nofile()
    t0 = time.monotonic()
    R = uvloop.run(run(args))
    text = report(args, R)
    print(text)
    print(f"\n(total bench time {time.monotonic() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_jsonable(R), f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
