#!/usr/bin/env python3
"""hatchway-linksocks vs LinkSocks Go 1.10.1, side by side in one run (linksocks.md 24.2 re-implemented).

    HATCHWAY_PEER110=/path/to/venv python3 bench/linksocks_bench.py [--quick] [--reverse]

The harness is the spec's: a target server (separate process; thread per
connection; first byte U/D/E/C selects upload sink / download source / echo /
close-after-send), a blocking SOCKS5 client, and the tests tput, rate, idle,
integrity and closewait, plus a 10,000-connection churn step for the "RSS after
churn" target.  Proxy processes are sampled from procfs (bench/procstat.py).

For each variant (hatchway forward, LinkSocks Go forward; with --reverse also
both reverse) three groups run with freshly started proxy processes:
  1. idle RSS; idle with 1000 tunnels
  2. rate 1 worker; pause; rate 32 workers; RSS; churn 10,000; RSS
  3. integrity 64 MiB; tput 1 up/down random, 1 up/down zeros, 8 up/down random
then closewait (3 runs) against a running proxy.  A "direct" column (harness
straight to the target, no proxy) gives the harness ceiling.

The Go peer is the linksocks==1.10.1 wheel, started through
bench/linksocks_peer_launcher.py with the peer venv's interpreter: the venv is
$HATCHWAY_PEER110 (a venv directory or its python), else ./.venv-peer110, else
it is created (python3 -m venv + pip install --only-binary=:all: linksocks==1.10.1).

Only 127.0.0.1 is used, on ephemeral ports; every step is bounded by socket
timeouts and count/time limits; only processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402
import procstat  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
HOST = "127.0.0.1"
CHUNK = 4 * MiB
perf = time.perf_counter
TOKEN = "benchtoken"
CONN_TOKEN = "conntoken"

# Go anchor figures (linksocks.md 24.3), LinkSocks forward mode, for the notes.
ANCHOR = {
    "up_random": "27.5", "down_random": "25.5", "up_zero": "63.8", "down_zero": "55.5",
    "up8_random": "31.1", "down8_random": "26.3", "rate1": "302/s", "rate32": "344/s",
    "closewait": "5.0 s",
}


# ====================================================================== target server (own process)

def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += d
    return bytes(buf)


def _target_conn(c: socket.socket, rand: bytes, zeros: bytes) -> None:
    try:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(600)
        op = _recv_exact(c, 1)
        if op == b"U":
            n = struct.unpack("!Q", _recv_exact(c, 8))[0]
            buf = bytearray(CHUNK)
            mv = memoryview(buf)
            while n > 0:
                k = c.recv_into(mv, min(n, CHUNK))
                if k == 0:
                    return
                n -= k
            c.sendall(b"K")
            while c.recv(65536):
                pass
        elif op == b"D":
            n = struct.unpack("!Q", _recv_exact(c, 8))[0]
            src = memoryview(rand if _recv_exact(c, 1) == b"r" else zeros)
            while n > 0:
                k = min(n, CHUNK)
                c.sendall(src[:k])
                n -= k
            c.recv(1)
        elif op == b"E":
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)
        elif op == b"C":
            n = struct.unpack("!I", _recv_exact(c, 4))[0]
            c.sendall(bytes(n))
    except OSError:
        pass
    finally:
        c.close()


def target_server(port: int, lifetime: float) -> int:
    rand = os.urandom(CHUNK)
    zeros = bytes(CHUNK)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((HOST, port))
    ls.listen(4096)
    ls.settimeout(1.0)
    print(f"READY target {HOST}:{ls.getsockname()[1]}", flush=True)
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        except OSError:
            time.sleep(0.01)
            continue
        threading.Thread(target=_target_conn, args=(c, rand, zeros), daemon=True).start()
    os._exit(0)


# ====================================================================== SOCKS5 client

class Env:
    """Where the load generator connects: a SOCKS port, or the target directly."""

    def __init__(self, target_port: int, socks_port: int | None):
        self.target_port = target_port
        self.socks_port = socks_port  # None = direct


def socks_connect(env: Env, timeout: float) -> socket.socket:
    if env.socks_port is None:
        s = socket.create_connection((HOST, env.target_port), timeout=timeout)
    else:
        s = socket.create_connection((HOST, env.socks_port), timeout=timeout)
        try:
            s.sendall(b"\x05\x01\x00")
            if _recv_exact(s, 2) != b"\x05\x00":
                raise ConnectionError("SOCKS5 greeting refused")
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(HOST) + struct.pack("!H", env.target_port))
            ver, rep, _rsv, atyp = _recv_exact(s, 4)
            if ver != 5 or rep != 0:
                raise ConnectionError(f"SOCKS5 CONNECT reply {rep}")
            if atyp == 1:
                _recv_exact(s, 6)
            elif atyp == 4:
                _recv_exact(s, 18)
            elif atyp == 3:
                _recv_exact(s, _recv_exact(s, 1)[0] + 2)
            else:
                raise ConnectionError(f"SOCKS5 reply ATYP {atyp}")
        except BaseException:
            s.close()
            raise
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(timeout)
    return s


def echo_op(env: Env, timeout: float, payload: bytes = b"0123456789abcdef") -> None:
    s = socks_connect(env, timeout)
    try:
        s.sendall(b"E" + payload)
        if _recv_exact(s, len(payload)) != payload:
            raise ValueError("echo mismatch")
    finally:
        s.close()


# ====================================================================== tests

LOAD_STOP = threading.Event()  # set by the RSS watchdog: rate/churn loops end early
RAND = os.urandom(CHUNK)
ZEROS = bytes(CHUNK)


def t_tput(env: Env, streams: int, total: int, up: bool, kind: str, timeout: float = 280.0) -> dict:
    per = total // streams
    socks = [socks_connect(env, timeout) for _ in range(streams)]
    barrier = threading.Barrier(streams)
    firsts = [None] * streams
    lasts = [None] * streams
    errs = []
    src = memoryview(RAND if kind == "random" else ZEROS)

    def run(i: int):
        s = socks[i]
        try:
            barrier.wait(timeout=60)
            firsts[i] = perf()
            if up:
                s.sendall(b"U" + struct.pack("!Q", per))
                n = per
                while n > 0:
                    k = min(n, CHUNK)
                    s.sendall(src[:k])
                    n -= k
                if _recv_exact(s, 1) != b"K":
                    raise ValueError("no K")
            else:
                s.sendall(b"D" + struct.pack("!Q", per) + (b"r" if kind == "random" else b"z"))
                buf = bytearray(CHUNK)
                mv = memoryview(buf)
                n = per
                while n > 0:
                    k = s.recv_into(mv, min(n, CHUNK))
                    if k == 0:
                        raise ConnectionError(f"EOF with {n} bytes to go")
                    n -= k
            lasts[i] = perf()
        except (OSError, ValueError, ConnectionError, threading.BrokenBarrierError) as e:
            errs.append(f"{type(e).__name__}: {e}")

    ths = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(streams)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout + 30)
    for s in socks:
        s.close()
    if errs or None in lasts:
        return {"error": "; ".join(errs[:3]) or "timeout"}
    el = max(lasts) - min(firsts)
    return {"mibps": per * streams / MiB / el, "secs": el}


def t_rate(env: Env, workers: int, seconds: float, max_ops: int = 50000, timeout: float = 20.0) -> dict:
    lock = threading.Lock()
    st = {"started": 0, "ok": 0, "fail": 0}
    lat: list[float] = []
    errors: dict[str, int] = {}
    t0 = perf()
    deadline = t0 + seconds

    def run():
        while True:
            with lock:
                if st["started"] >= max_ops or perf() >= deadline or st["fail"] > 1000 or LOAD_STOP.is_set():
                    return
                st["started"] += 1
            t = perf()
            try:
                echo_op(env, timeout)
                d = perf() - t
                with lock:
                    st["ok"] += 1
                    lat.append(d)
            except (OSError, ValueError, ConnectionError) as e:
                with lock:
                    st["fail"] += 1
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

    ths = [threading.Thread(target=run, daemon=True) for _ in range(workers)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(seconds + timeout + 30)
    el = perf() - t0
    return {"ok": st["ok"], "fail": st["fail"], "rate": st["ok"] / el, "elapsed": el,
            "p50_ms": (bl.pct(lat, 50) or 0) * 1e3, "p99_ms": (bl.pct(lat, 99) or 0) * 1e3, "errors": errors}


class _SocksEchoOp:
    """asyncio Protocol: SOCKS5 greeting -> CONNECT -> 'E' + 16 bytes -> echo -> close (no pipelining)."""

    PAYLOAD = b"0123456789abcdef"

    def __init__(self, env: Env, fut):
        self.env = env
        self.fut = fut
        self.buf = b""
        self.state = 0 if env.socks_port is not None else 2
        self.tr = None

    def connection_made(self, tr):
        self.tr = tr
        if self.state == 0:
            tr.write(b"\x05\x01\x00")
        else:
            tr.write(b"E" + self.PAYLOAD)

    def _fail(self, why: str):
        if not self.fut.done():
            self.fut.set_exception(ConnectionError(why))
        self.tr.close()

    def data_received(self, data):
        self.buf += data
        if self.state == 0 and len(self.buf) >= 2:
            if self.buf[:2] != b"\x05\x00":
                return self._fail("greeting refused")
            self.buf = self.buf[2:]
            self.state = 1
            self.tr.write(b"\x05\x01\x00\x01" + socket.inet_aton(HOST) + struct.pack("!H", self.env.target_port))
        if self.state == 1 and len(self.buf) >= 5:
            if self.buf[1] != 0:
                return self._fail(f"CONNECT reply {self.buf[1]}")
            atyp = self.buf[3]
            need = {1: 10, 4: 22}.get(atyp, 7 + self.buf[4])
            if len(self.buf) < need:
                return
            self.buf = self.buf[need:]
            self.state = 2
            self.tr.write(b"E" + self.PAYLOAD)
        if self.state == 2 and len(self.buf) >= 16:
            if self.buf[:16] != self.PAYLOAD:
                return self._fail("echo mismatch")
            if not self.fut.done():
                self.fut.set_result(True)
            self.tr.close()

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        if not self.fut.done():
            self.fut.set_exception(ConnectionError(f"closed in state {self.state}"))

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


def t_rate_uvloop(env: Env, workers: int, seconds: float, max_ops: int = 50000, timeout: float = 20.0) -> dict:
    """The rate test with a uvloop load generator instead of threads (same operation, lower harness cost)."""
    import asyncio

    import uvloop

    async def go():
        loop = asyncio.get_running_loop()
        port = env.socks_port if env.socks_port is not None else env.target_port
        st = {"started": 0, "ok": 0, "fail": 0}
        lat: list[float] = []
        errors: dict[str, int] = {}
        t0 = perf()
        deadline = t0 + seconds

        async def worker():
            while st["started"] < max_ops and perf() < deadline and st["fail"] <= 1000 and not LOAD_STOP.is_set():
                st["started"] += 1
                t = perf()
                fut = loop.create_future()
                tr = None
                try:
                    async with asyncio.timeout(timeout):
                        tr, _ = await loop.create_connection(lambda: _SocksEchoOp(env, fut), HOST, port)
                        await fut
                    st["ok"] += 1
                    lat.append(perf() - t)
                except (OSError, TimeoutError, ConnectionError) as e:
                    st["fail"] += 1
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    if tr is not None:
                        tr.close()

        await asyncio.gather(*(worker() for _ in range(workers)))
        el = perf() - t0
        return {"ok": st["ok"], "fail": st["fail"], "rate": st["ok"] / el, "elapsed": el,
                "p50_ms": (bl.pct(lat, 50) or 0) * 1e3, "p99_ms": (bl.pct(lat, 99) or 0) * 1e3, "errors": errors}

    return uvloop.run(go())


def t_idle(env: Env, n: int, procs: dict, settle: float, timeout: float = 240.0) -> dict:
    socks = []
    fails = 0
    t_end = time.monotonic() + timeout
    res: dict = {}
    try:
        while len(socks) < n and fails < 50 and time.monotonic() < t_end:
            try:
                s = socks_connect(env, 20.0)
                socks.append(s)
                s.sendall(b"E" + b"0123456789abcdef")
                if _recv_exact(s, 16) != b"0123456789abcdef":
                    raise ValueError("echo mismatch")
            except (OSError, ValueError, ConnectionError):
                fails += 1
        res["opened"] = len(socks)
        res["open_fail"] = fails
        time.sleep(settle)
        res["with"] = {k: p.sample() for k, p in procs.items()}
        alive = 0
        for s in socks:
            if time.monotonic() > t_end:
                break
            try:
                s.sendall(b"ping")
                if _recv_exact(s, 4) == b"ping":
                    alive += 1
            except (OSError, ConnectionError):
                pass
        res["alive"] = alive
    finally:
        for s in socks:
            s.close()
    time.sleep(settle)
    res["after"] = {k: p.sample() for k, p in procs.items()}
    return res


def t_integrity(env: Env, total: int = 64 * MiB, timeout: float = 100.0) -> dict:
    s = socks_connect(env, timeout)
    data = os.urandom(total)
    want = hashlib.sha256(data).hexdigest()
    got = {"n": 0, "h": hashlib.sha256(), "err": None}

    def reader():
        try:
            while got["n"] < total:
                d = s.recv(1 << 20)
                if not d:
                    break
                got["h"].update(d)
                got["n"] += len(d)
        except OSError as e:
            got["err"] = repr(e)

    th = threading.Thread(target=reader, daemon=True)
    t0 = perf()
    th.start()
    err = None
    try:
        s.sendall(b"E")
        mv = memoryview(data)
        for i in range(0, total, 65536):
            s.sendall(mv[i:i + 65536])
    except OSError as e:
        err = repr(e)
    th.join(timeout)
    el = perf() - t0
    s.close()
    ok = got["n"] == total and got["h"].hexdigest() == want
    return {"ok": ok, "bytes": got["n"], "secs": el, "error": err or got["err"]}


def t_closewait(env: Env, runs: int = 3, n: int = 1000, timeout: float = 20.0) -> dict:
    data_t, eof_t = [], []
    for _ in range(runs):
        s = socks_connect(env, timeout)
        try:
            t0 = perf()
            s.sendall(b"C" + struct.pack("!I", n))
            got = 0
            t_data = None
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += len(d)
                if got >= n and t_data is None:
                    t_data = perf()
            t_eof = perf()
            if got == n and t_data is not None:
                data_t.append(t_data - t0)
                eof_t.append(t_eof - t0)
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.2)
    return {"data_p50_ms": (bl.pct(data_t, 50) or 0) * 1e3 if data_t else None,
            "data_max_ms": max(data_t) * 1e3 if data_t else None,
            "eof_p50_ms": bl.pct(eof_t, 50) * 1e3 if eof_t else None,
            "eof_max_ms": max(eof_t) * 1e3 if eof_t else None, "runs": len(eof_t)}


# ====================================================================== proxies

def find_peer_python(logdir: str) -> str:
    cand = os.environ.get("HATCHWAY_PEER110")
    if cand:
        py = cand if os.path.isfile(cand) else os.path.join(cand, "bin", "python")
        if os.access(py, os.X_OK):
            return py
        raise RuntimeError(f"HATCHWAY_PEER110={cand!r}: no python there")
    venv = os.path.join(bl.REPO, ".venv-peer110")
    py = os.path.join(venv, "bin", "python")
    if not os.access(py, os.X_OK):
        bl.log(f"creating {venv} (linksocks==1.10.1 wheel)")
        with open(os.path.join(logdir, "peer-venv.log"), "wb") as f:
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, stdout=f, stderr=f, timeout=300)
            subprocess.run([py, "-m", "pip", "install", "--only-binary=:all:", "linksocks==1.10.1"],
                           check=True, stdout=f, stderr=f, timeout=600)
    return py


class Variant:
    def __init__(self, name: str, server: list[str], client: list[str], env: dict | None,
                 reverse: bool, ws_port: int, socks_port: int):
        self.name = name
        self.server_argv = server
        self.client_argv = client
        self.env = env
        self.reverse = reverse
        self.ws_port = ws_port
        self.socks_port = socks_port


def make_variants(args, logdir: str) -> list[Variant]:
    out = []
    hw = bl.split_cmd(args.linksocks_cmd)
    hw_env = bl.hatchway_env()
    peer = None
    if not args.no_go:
        peer_py = find_peer_python(logdir)
        peer = [peer_py, os.path.join(bl.BENCH_DIR, "linksocks_peer_launcher.py")]
    modes = ["fwd"] + (["rev"] if args.reverse else [])
    for mode in modes:
        for label, base, env in (("hatchway", hw, hw_env), ("Go 1.10.1", peer, None)):
            if base is None:
                continue
            ws, sp = bl.free_port(), bl.free_port()
            url = f"ws://{HOST}:{ws}"
            if mode == "fwd":
                server = base + ["server", "-H", HOST, "-P", str(ws), "-t", TOKEN, "-b", "1048576"]
                client = base + ["client", "-t", TOKEN, "-u", url, "-s", HOST, "-p", str(sp),
                                 "--direct-mode", "relay-only"]
            else:
                server = base + ["server", "-H", HOST, "-P", str(ws), "-t", TOKEN, "-b", "1048576", "-r",
                                 "-s", HOST, "-p", str(sp), "-c", CONN_TOKEN]
                client = base + ["provider", "-t", TOKEN, "-u", url, "--direct-mode", "relay-only"]
            out.append(Variant(f"{label} {mode}", server, client, env, mode == "rev", ws, sp))
    return out


class Running:
    """A freshly started server + client pair, with an RSS watchdog.

    The Go peer's RSS grows by gigabytes under connection churn (12-16 GB seen
    after 10 s rate tests + 10,000 connections); on a shared machine the
    watchdog kills the pair (by PID) once one process passes rss_cap bytes.
    """

    def __init__(self, v: Variant, logdir: str, tag: str, rss_cap: int = 0):
        self.group = bl.ProcGroup()
        self.peak = {"server": 0, "client": 0}
        self.capped: str | None = None
        self.killed = False
        self._stop = threading.Event()
        LOAD_STOP.clear()
        slug = v.name.replace(" ", "-").replace(".", "")
        try:
            self.server = self.group.add(bl.Proc(f"{slug}-{tag}-server", v.server_argv, logdir, v.env))
            deadline = time.monotonic() + 30
            while not bl.port_open(HOST, v.ws_port, 0.3):
                if not self.server.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{v.name} server not listening: {self.server.log_tail(8)}")
                time.sleep(0.05)
            self.client = self.group.add(bl.Proc(f"{slug}-{tag}-client", v.client_argv, logdir, v.env))
            self.procs = {"server": self.server, "client": self.client}
            self.socks_port = v.socks_port
        except BaseException:
            self.group.stop_all()
            raise
        self.rss_cap = rss_cap
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self._watch.start()

    def _watchdog(self):
        while not self._stop.wait(0.25):
            for k, p in self.procs.items():
                r = p.sample().rss
                self.peak[k] = max(self.peak[k], r)
                if self.rss_cap and r > self.rss_cap and not LOAD_STOP.is_set():
                    LOAD_STOP.set()
                    self.capped = (f"{k} RSS {r / 1e6:,.0f} MB > cap {self.rss_cap / 1e6:,.0f} MB: "
                                   "connection load stopped for the rest of the group")
                    bl.log(f"watchdog: {self.capped}")
                if self.rss_cap and r > 1.5 * self.rss_cap and not self.killed:
                    self.killed = True
                    self.capped = f"{k} RSS {r / 1e6:,.0f} MB > 1.5 × cap: proxies killed"
                    bl.log(f"watchdog: {self.capped}")
                    for q in self.procs.values():
                        try:
                            os.kill(q.pid, 9)
                        except ProcessLookupError:
                            pass

    def wait_ready(self, target_port: int, timeout: float = 40.0) -> None:
        env = Env(target_port, self.socks_port)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.server.alive() or not self.client.alive():
                break
            try:
                echo_op(env, 3.0)
                return
            except (OSError, ValueError, ConnectionError) as e:
                last = e
                time.sleep(0.1)
        raise RuntimeError(f"no SOCKS echo within {timeout:.0f} s ({last!r}); server: {self.server.log_tail(4)!r}; "
                           f"client: {self.client.log_tail(4)!r}")

    def stop(self):
        # SIGTERM both, 1 s, SIGKILL, reap; then a short pause (spec: 2 s)
        self._stop.set()
        self._watch.join(2)
        self.group.stop_all(grace=1.0)


def sample_all(procs: dict) -> dict:
    out = {k: p.sample() for k, p in procs.items()}
    out["harness"] = procstat.self_sample()
    return out


def cpu_delta(a: dict, b: dict) -> dict:
    return {k: b[k].cpu - a[k].cpu for k in a}


TPUT_TESTS = [  # key, streams, up, kind
    ("up_random", 1, True, "random"), ("down_random", 1, False, "random"),
    ("up_zero", 1, True, "zero"), ("down_zero", 1, False, "zero"),
    ("up8_random", 8, True, "random"), ("down8_random", 8, False, "random"),
]


def run_variant(v: Variant, args, target_port: int, logdir: str) -> dict:
    R: dict = {"errors": {}}
    env = Env(target_port, v.socks_port)
    pause = args.pause

    def group(tag: str, body):
        bl.log(f"{v.name}: group {tag}")
        try:
            run = Running(v, logdir, tag, args.rss_cap_mb * 1000 * 1000)
        except Exception as e:  # noqa: BLE001
            R["errors"][tag] = f"{type(e).__name__}: {e}"
            return
        try:
            run.wait_ready(target_port)
            time.sleep(args.settle)
            body(run)
        except Exception as e:  # noqa: BLE001 - report and go on
            R["errors"][tag] = f"{type(e).__name__}: {e}"
            bl.log(f"{v.name}: {tag} failed: {e}")
        finally:
            alive = {k: p.alive() for k, p in run.procs.items()}
            run.stop()
            R[f"peak_{tag}"] = dict(run.peak)
            if run.capped:
                R["errors"][f"{tag} watchdog"] = run.capped
            if not all(alive.values()):
                R["errors"][f"{tag} exited"] = ", ".join(
                    f"{k} (status {run.procs[k].popen.returncode})" for k, a in alive.items() if not a)
            time.sleep(pause)

    def g1(run):
        R["idle"] = {k: p.sample() for k, p in run.procs.items()}
        R["idle_test"] = t_idle(env, args.idle_n, run.procs, args.idle_settle)
        bl.log(f"{v.name}:   idle {args.idle_n}: alive {R['idle_test'].get('alive')}")

    def g2(run):
        R["idle2"] = {k: p.sample() for k, p in run.procs.items()}
        a = sample_all(run.procs)
        R["rate1"] = t_rate(env, 1, args.rate_seconds)
        R["rate1"]["cpu"] = cpu_delta(a, sample_all(run.procs))
        bl.log(f"{v.name}:   rate 1: {R['rate1']['rate']:.0f}/s")
        time.sleep(args.rate_pause)
        a = sample_all(run.procs)
        R["rate32"] = t_rate(env, 32, args.rate_seconds)
        R["rate32"]["cpu"] = cpu_delta(a, sample_all(run.procs))
        bl.log(f"{v.name}:   rate 32: {R['rate32']['rate']:.0f}/s")
        time.sleep(args.rate_pause)
        a = sample_all(run.procs)
        R["rate32u"] = t_rate_uvloop(env, 32, args.rate_seconds)
        R["rate32u"]["cpu"] = cpu_delta(a, sample_all(run.procs))
        bl.log(f"{v.name}:   rate 32 (uvloop generator): {R['rate32u']['rate']:.0f}/s")
        R["after_rate"] = {k: p.sample() for k, p in run.procs.items()}
        t0 = perf()
        R["churn"] = t_rate_uvloop(env, 32, args.churn_seconds, max_ops=args.churn_n)
        bl.log(f"{v.name}:   churn {R['churn']['ok']} ok / {R['churn']['fail']} failed in {perf() - t0:.1f} s")
        time.sleep(args.churn_settle)
        R["after_churn"] = {k: p.sample() for k, p in run.procs.items()}

    def g3(run):
        R["integrity"] = t_integrity(env)
        bl.log(f"{v.name}:   integrity {R['integrity']['ok']}")
        for key, streams, up, kind in TPUT_TESTS:
            a = sample_all(run.procs)
            r = t_tput(env, streams, args.size * MiB, up, kind)
            b = sample_all(run.procs)
            gib = args.size * MiB / GiB
            r["cpu_per_gib"] = {k: d / gib for k, d in cpu_delta(a, b).items()}
            r["rss"] = {k: b[k] for k in run.procs}
            R[key] = r
            bl.log(f"{v.name}:   {key}: " + (f"{r['mibps']:.1f} MiB/s" if "mibps" in r else r["error"]))

    def g4(run):
        R["closewait"] = t_closewait(env)
        bl.log(f"{v.name}:   closewait EOF p50 {R['closewait']['eof_p50_ms']}")

    sel = set(args.groups.split(","))
    if "idle" in sel:
        group("idle", g1)
    if "rate" in sel:
        group("rate", g2)
    if "tput" in sel:
        group("tput", g3)
    if "closewait" in sel:
        group("closewait", g4)
    return R


def run_direct(args, target_port: int) -> dict:
    env = Env(target_port, None)
    R: dict = {}
    bl.log("direct (harness ceiling)")
    for key, streams, up, kind in TPUT_TESTS:
        R[key] = t_tput(env, streams, args.size * MiB, up, kind)
    R["rate1"] = t_rate(env, 1, min(args.rate_seconds, 3.0))
    R["rate32"] = t_rate(env, 32, min(args.rate_seconds, 3.0))
    R["rate32u"] = t_rate_uvloop(env, 32, min(args.rate_seconds, 3.0))
    R["closewait"] = t_closewait(env)
    return R


# ====================================================================== report

def f(x, nd=1):
    return bl.fnum(x, nd)


def report(args, variants: list[Variant], results: dict, direct: dict | None) -> str:
    out = [f"hatchway-linksocks vs LinkSocks Go 1.10.1 — {time.strftime('%Y-%m-%d %H:%M:%S')}; {bl.machine_line()}",
           f"tput {args.size} MiB per test; rate {args.rate_seconds:g} s; idle {args.idle_n} tunnels; "
           f"churn {args.churn_n} connections (32 workers); Go server -b 1048576, clients --direct-mode relay-only. "
           "MiB/s binary; CPU = utime+stime per GiB of payload; RSS = VmRSS in MB (10^6)."]
    modes = ["fwd"] + (["rev"] if args.reverse else [])
    for mode in modes:
        hwn, gon = f"hatchway {mode}", f"Go 1.10.1 {mode}"
        H = results.get(hwn, {})
        G = results.get(gon, {})
        D = direct or {}
        rows = []

        def tput_cell(r):
            if not r:
                return "–"
            if "error" in r:
                return "failed: " + r["error"][:60]
            c = r["cpu_per_gib"]
            return f"{r['mibps']:.1f} (CPU {c['server']:.1f} / {c['client']:.1f})"

        def mib(r):
            return r.get("mibps") if r else None

        for key, streams, up, kind in TPUT_TESTS:
            label = f"{streams} stream{'s' if streams > 1 else ''} {'up' if up else 'down'}, {kind}, MiB/s"
            h, g = H.get(key), G.get(key)
            tgt, ok = "", None
            if key in ("up_random", "down_random"):
                tgt = "≥ 5× Go and ≥ 300"
                if mib(h) is not None:
                    ok = mib(h) >= 300 and (mib(g) is None or mib(h) >= 5 * mib(g))
            rows.append([label, tput_cell(h), tput_cell(g), bl.ratio(mib(h), mib(g)), f(mib(D.get(key)), 0),
                         ANCHOR.get(key, "") if mode == "fwd" else "", tgt, passfail(ok)])

        # CPU target: worst random-data test, per process
        def worst_cpu(R):
            xs = [max(R[k]["cpu_per_gib"]["server"], R[k]["cpu_per_gib"]["client"])
                  for k, *_ in TPUT_TESTS if R.get(k) and "mibps" in R[k] and "random" in k]
            return max(xs) if xs else None
        wh, wg = worst_cpu(H), worst_cpu(G)
        rows.append(["worst CPU-s per GiB of one process (random data)", f(wh, 2), f(wg, 2), bl.ratio(wh, wg), "",
                     "18.5 / 29.5" if mode == "fwd" else "", "≤ 3", passfail(None if wh is None else wh <= 3)])

        def rate_cell(r):
            if not r:
                return "–"
            s = f"{r['rate']:,.0f}/s (p50 {r['p50_ms']:.1f}, p99 {r['p99_ms']:.1f} ms)"
            if r["fail"]:
                s += f", {r['fail']} failed"
            return s

        for key, label, tgt in (("rate1", "conn rate, 1 at a time (connect+16 B echo+close)", None),
                                ("rate32", "conn rate, 32 at once (32 threads, spec harness)", 2000),
                                ("rate32u", "conn rate, 32 at once (uvloop load generator)", 2000)):
            h, g = H.get(key), G.get(key)
            rows.append([label, rate_cell(h), rate_cell(g), bl.ratio(h and h["rate"], g and g["rate"]),
                         rate_cell(D.get(key)).split(" (")[0], ANCHOR.get(key, "") if mode == "fwd" else "",
                         f"≥ {tgt:,}" if tgt else "", passfail(None if (tgt is None or not h) else h["rate"] >= tgt)])

        def pair(d, a="server", b="client"):
            if not d:
                return "–"
            return f"{d[a].rss_mb:.1f} / {d[b].rss_mb:.1f}"

        rows.append(["idle RSS server / client, MB", pair(H.get("idle")), pair(G.get("idle")), "", "",
                     "40 / 40" if mode == "fwd" else "", "", ""])
        it_h, it_g = H.get("idle_test"), G.get("idle_test")
        rows.append([f"RSS with {args.idle_n} idle tunnels, MB", pair(it_h and it_h.get("with")),
                     pair(it_g and it_g.get("with")), "", "", "101 / 107" if mode == "fwd" else "", "", ""])

        def per_tunnel(R):
            it = R.get("idle_test")
            if not it or "with" not in it or not R.get("idle") or not it.get("opened"):
                return None
            return max((it["with"][k].rss - R["idle"][k].rss) / it["opened"] / 1e3 for k in ("server", "client"))
        ph, pg = per_tunnel(H), per_tunnel(G)
        rows.append(["KB per idle tunnel (worse process)", f(ph, 1), f(pg, 1), bl.ratio(ph, pg), "",
                     "60–67" if mode == "fwd" else "", "≤ 30", passfail(None if ph is None else ph <= 30)])
        rows.append([f"idle tunnels alive after {args.idle_settle:g} s",
                     f"{it_h['alive']}/{it_h['opened']}" if it_h and "alive" in it_h else "–",
                     f"{it_g['alive']}/{it_g['opened']}" if it_g and "alive" in it_g else "–", "", "", "", "", ""])
        rows.append(["RSS after the rate tests, MB", pair(H.get("after_rate")), pair(G.get("after_rate")), "", "",
                     "2,388 / 276" if mode == "fwd" else "", "", ""])

        def churn_delta(R):
            if not R.get("after_churn") or not R.get("idle2"):
                return None
            return max((R["after_churn"][k].rss - R["idle2"][k].rss) / 1e6 for k in ("server", "client"))
        ch, cg = churn_delta(H), churn_delta(G)
        cn_h = H.get("churn", {}).get("ok")
        cn_g = G.get("churn", {}).get("ok")
        rows.append([f"RSS after rate tests + churn, MB (churn ok: hw {cn_h}, Go {cn_g})", pair(H.get("after_churn")),
                     pair(G.get("after_churn")), "", "", "", "", ""])
        def peak(R):
            pk = R.get("peak_rate")
            return f"{pk['server'] / 1e6:,.0f} / {pk['client'] / 1e6:,.0f}" if pk else "–"
        rows.append(["peak RSS during rate + churn (watchdog, 0.25 s), MB", peak(H), peak(G), "", "", "", "", ""])
        rows.append(["  growth over idle (worse process), MB", f(ch, 1), f(cg, 1), bl.ratio(ch, cg), "", "",
                     "≤ 20", passfail(None if ch is None else ch <= 20)])

        def cw(R, k):
            c = R.get("closewait")
            return c.get(k) if c else None
        rows.append(["closewait: remote close → local EOF, ms (p50 / max)",
                     f"{f(cw(H, 'eof_p50_ms'), 1)} / {f(cw(H, 'eof_max_ms'), 1)}",
                     f"{f(cw(G, 'eof_p50_ms'), 1)} / {f(cw(G, 'eof_max_ms'), 1)}",
                     bl.ratio(cw(H, "eof_p50_ms"), cw(G, "eof_p50_ms")), f(cw(D, "eof_p50_ms"), 2),
                     ANCHOR["closewait"] if mode == "fwd" else "", "< 10",
                     passfail(None if cw(H, "eof_max_ms") is None else cw(H, "eof_max_ms") < 10)])
        rows.append(["closewait: all 1000 bytes arrived, ms (p50)", f(cw(H, "data_p50_ms"), 1),
                     f(cw(G, "data_p50_ms"), 1), "", f(cw(D, "data_p50_ms"), 2), "", "", ""])
        ih, ig = H.get("integrity"), G.get("integrity")
        rows.append(["64 MiB SHA-256 echo integrity",
                     ("ok" if ih["ok"] else f"FAILED ({ih})") if ih else "–",
                     ("ok" if ig["ok"] else f"FAILED ({ig})") if ig else "–", "", "", "ok", "ok",
                     passfail(None if not ih else ih["ok"])])
        out.append("")
        out.append(bl.table([f"{mode} mode", "hatchway", "LinkSocks Go 1.10.1", "hatchway/Go", "direct",
                             "Go anchor (24.3)", "target", ""], rows,
                            f"## {'Forward' if mode == 'fwd' else 'Reverse'} mode (tput cells: MiB/s (CPU-s per GiB "
                            "server / client))"))
        for name, R in ((hwn, H), (gon, G)):
            for k, e in R.get("errors", {}).items():
                out.append(f"  NOT MEASURED / ERROR — {name}, {k}: {e}")
    out.append("")
    out.append("direct = harness straight to the target (no proxy): the harness ceiling on this machine. "
               "Go anchor = linksocks.md 24.3 (another 2-core machine), for reference only.")
    return "\n".join(out)


def passfail(ok) -> str:
    return "–" if ok is None else ("PASS" if ok else "FAIL")


def to_jsonable(x):
    if isinstance(x, procstat.Sample):
        return {"cpu": x.cpu, "rss": x.rss, "hwm": x.hwm, "threads": x.threads}
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: the whole run in a few minutes")
    ap.add_argument("--reverse", action="store_true", help="also run reverse mode (server SOCKS, provider dials)")
    ap.add_argument("--size", type=int, help="MiB per tput test [1024; --quick 128]")
    ap.add_argument("--rate-seconds", type=float, help="seconds per rate test [10; --quick 3]")
    ap.add_argument("--idle-n", type=int, help="tunnels in the idle test [1000; --quick 1000]")
    ap.add_argument("--churn-n", type=int, help="connections in the churn step [10000; --quick 10000]")
    ap.add_argument("--groups", default="idle,rate,tput,closewait")
    ap.add_argument("--rss-cap-mb", type=int, default=8000,
                    help="shared-machine guard: when a proxy process passes this RSS the connection load of its "
                    "group stops; at 1.5x the pair is killed [8000]")
    ap.add_argument("--no-go", action="store_true", help="hatchway only (no peer)")
    ap.add_argument("--no-hatchway", action="store_true", help="Go peer only")
    ap.add_argument("--no-direct", action="store_true", help="skip the harness-ceiling column")
    ap.add_argument("--linksocks-cmd", default=f"{shlex.quote(sys.executable)} -m hatchway.linksocks",
                    help="command that runs hatchway-linksocks")
    ap.add_argument("--json", help="also write raw results here")
    ap.add_argument("--logdir")
    ap.add_argument("--target-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--lifetime", type=float, default=7000.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.target_server is not None:
        return target_server(args.target_server, args.lifetime)
    q = args.quick
    args.size = args.size or (128 if q else 1024)
    args.rate_seconds = args.rate_seconds or (3.0 if q else 10.0)
    args.idle_n = args.idle_n or 1000
    args.churn_n = args.churn_n or 10000
    args.churn_seconds = 120.0
    args.idle_settle = 2.0 if q else 5.0
    args.rate_pause = 2.0 if q else 6.0
    args.churn_settle = 6.0  # > Go's 5 s channel hold after close
    args.pause = 1.0 if q else 2.0
    args.settle = 1.0
    bl.raise_nofile()
    logdir = args.logdir or tempfile.mkdtemp(prefix="linksocks-bench-")
    os.makedirs(logdir, exist_ok=True)
    bl.log(f"logs in {logdir}")
    t_start = time.monotonic()
    with bl.ProcGroup() as g:
        tport = bl.free_port()
        target = g.add(bl.Proc("target", [sys.executable, os.path.abspath(__file__), "--target-server", str(tport),
                                          "--lifetime", "7000"], logdir))
        if not target.wait_line("READY", 20):
            print(f"target server failed: {target.log_tail()}", file=sys.stderr)
            return 1
        variants = make_variants(args, logdir)
        if args.no_hatchway:
            variants = [v for v in variants if not v.name.startswith("hatchway")]
        direct = None if args.no_direct else run_direct(args, tport)
        results = {}
        for v in variants:
            results[v.name] = run_variant(v, args, tport, logdir)
    text = report(args, variants, results, direct)
    print(text)
    print(f"\n(total bench time {time.monotonic() - t_start:.0f} s; logs in {logdir})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(to_jsonable({"results": results, "direct": direct}), fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
