#!/usr/bin/env python3
"""Start-up, memory, size and throughput of the release executables, side by side in one run:
the static executable (dist/hatchway-<prog>, build/static) and the PyInstaller onefile +
staticx format (dist/onefile/hatchway-<prog>), with ratios (issue #7).

  python3 bench/startup_bench.py                      # formats found in dist/
  python3 bench/startup_bench.py --runs 20 --transfer-mib 256
  python3 bench/startup_bench.py --format static=dist/hatchway-{prog} --format old=/path/hatchway-{prog}

Figures per format:
  --version, --help      median (min-max) wall time of N runs of hatchway-<prog> --version / --help
                         (and "CPU": user+sys ms; formats run round-robin, one run each in turn)
  start -> listening     linksocks server: spawn until its WebSocket port is in /proc/net/tcp LISTEN
  start -> connected     tunnel client: spawn until its WebSocket upgrade reaches a stand-in runner
  idle RSS               VmRSS summed over the whole process tree, 1 s after listening; processes
  file size              bytes of the file
  KB per open tunnel     (client+server tree RSS with --tunnels open SOCKS5 tunnels - without) / tunnels
  throughput             MiB/s of --transfer-mib through linksocks client -> server (both this format)
                         via the client's SOCKS5 port, upload and download (0 = skip)
Targets (issue #7, 2 cores): --version/--help <= 25 ms, start <= 120 ms, idle RSS <= 28 MB,
at most 2 KB more per open tunnel than onefile, size <= 16 MB, throughput within noise.  Stdlib only (the stand-in runner is a raw socket).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import procstat  # noqa: E402

REPO = Path(benchlib.REPO)


def linksocks_server(group: benchlib.ProcGroup, name: str, exe: str, ws: int, logdir: str) -> benchlib.Proc:
    """A LinkSocks server (this format) on 127.0.0.1:ws, returned once it listens."""
    server = group.add(benchlib.Proc(name, [exe, "server", "-H", "127.0.0.1", "-P", str(ws), "-t", "tok"], logdir))
    deadline = time.monotonic() + 30
    while not benchlib.listening(ws):
        if not server.alive() or time.monotonic() > deadline:
            raise SystemExit(server.log_tail())
        time.sleep(0.01)
    return server


def timed_runs(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall ms, CPU ms = user+sys of the process and its children) of each run."""
    walls, cpus = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((ru.ru_utime + ru.ru_stime) * 1000)
        if p.returncode != 0:
            raise SystemExit(f"{argv} exited {p.returncode}")
    return walls, cpus


def cpu_ms(pid: int) -> float:
    """user+sys CPU ms of the process tree at pid so far (procstat's tree)."""
    return procstat.sample(pid, tree_mode=True).cpu * 1000


def start_to_listening(exe: str, runs: int, logdir: str) -> tuple[list[float], list[float], float, int]:
    """linksocks server: ms from spawn to LISTEN and the CPU ms spent by then; the last run's idle
    tree RSS (MB) and process count."""
    times, cpus, rss, nprocs = [], [], 0.0, 0
    for i in range(runs):
        port = benchlib.free_port()
        p = benchlib.Proc(f"server-{i}", [exe, "server", "-H", "127.0.0.1", "-P", str(port), "-t", "tok"], logdir)
        try:
            deadline = time.monotonic() + 30
            while not benchlib.listening(port):
                if not p.alive() or time.monotonic() > deadline:
                    raise SystemExit(f"server did not listen: {p.log_tail()}")
                time.sleep(0.0005)
            times.append((time.perf_counter() - p.t_spawn) * 1000)
            cpus.append(cpu_ms(p.pid))
            if i == runs - 1:
                time.sleep(1.0)
                s = procstat.sample(p.pid, tree_mode=True)
                rss, nprocs = s.rss_mb, s.nprocs
        finally:
            p.stop()
    return times, cpus, rss, nprocs


class StandInRunner:
    """Accepts TCP connections and records when the first HTTP upgrade request arrives; answers
    nothing useful (the client's reconnect loop is stopped by the bench)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.event = threading.Event()
        self.t = 0.0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if b"Upgrade" in data or b"upgrade" in data:
                    self.t = time.perf_counter()
                    self.event.set()
                conn.close()
            except OSError:
                pass

    def close(self):
        self.sock.close()


def start_to_connected(exe: str, runs: int, logdir: str) -> tuple[list[float], list[float]]:
    """tunnel client: ms from spawn to its WebSocket upgrade request, and the CPU ms spent by then."""
    times, cpus = [], []
    for i in range(runs):
        runner = StandInRunner()
        p = benchlib.Proc(f"client-{i}", [exe, "--runner-url", f"ws://127.0.0.1:{runner.port}",
                                          "--container-id", "bench"], logdir)
        try:
            if not runner.event.wait(30):
                raise SystemExit(f"tunnel client never connected: {p.log_tail()}")
            times.append((runner.t - p.t_spawn) * 1000)
            cpus.append(cpu_ms(p.pid))
        finally:
            p.stop()
            runner.close()
    return times, cpus


def socks_connect(port: int, host: str, dport: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", dport))
    rep = b""
    while len(rep) < 10:
        rep += s.recv(10 - len(rep))
    assert rep[1] == 0, rep
    return s


def throughput(exe: str, mib: int, logdir: str) -> tuple[float, float]:
    """(upload, download) MiB/s through linksocks client -> server (forward mode)."""
    size = mib * 2**20
    blob = os.urandom(1 << 20)
    ws, sp = benchlib.free_port(), benchlib.free_port()
    sink = socket.create_server(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    results: dict[str, float] = {}

    def serve_sink():
        while True:
            try:
                conn, _ = sink.accept()
            except OSError:
                return
            mode = conn.recv(1)
            if mode == b"u":  # upload: read size bytes, then ack
                n, buf = 0, bytearray(256 * 1024)
                while n < size:
                    k = conn.recv_into(buf)
                    if not k:
                        break
                    n += k
                conn.sendall(b"k")
            else:  # download: send size bytes
                for _ in range(mib):
                    conn.sendall(blob)
            conn.close()

    threading.Thread(target=serve_sink, daemon=True).start()
    with benchlib.ProcGroup() as group:
        linksocks_server(group, "tp-server", exe, ws, logdir)
        client = group.add(benchlib.Proc("tp-client", [exe, "client", "-t", "tok", "-u", f"ws://127.0.0.1:{ws}",
                                                        "-p", str(sp)], logdir))
        time.sleep(0.5)
        deadline = time.monotonic() + 30
        while True:
            try:
                socks_connect(sp, "127.0.0.1", 9).close()
            except (OSError, AssertionError):
                pass
            if client.wait_line("READY", 0.2) or time.monotonic() > deadline:
                break
        s = socks_connect(sp, "127.0.0.1", sink_port)
        s.sendall(b"u")
        t0 = time.perf_counter()
        for _ in range(mib):
            s.sendall(blob)
        assert s.recv(1) == b"k"
        results["up"] = mib / (time.perf_counter() - t0)
        s.close()
        s = socks_connect(sp, "127.0.0.1", sink_port)
        s.sendall(b"d")
        t0 = time.perf_counter()
        n, buf = 0, bytearray(256 * 1024)
        while n < size:
            k = s.recv_into(buf)
            if not k:
                break
            n += k
        results["down"] = mib / (time.perf_counter() - t0) if n == size else 0.0
        s.close()
    sink.close()
    return results["up"], results["down"]


def tunnels_rss(exe: str, n: int, logdir: str) -> tuple[float, float, float, int]:
    """linksocks client -> server (this format) with n open tunnels (SOCKS5 CONNECTs held open to a
    target that accepts and holds them): (idle RSS MB, RSS MB with the n tunnels, KB per tunnel,
    tunnels opened), RSS summed over both process trees, each sample 1 s after the last change."""
    import selectors

    ws, sp = benchlib.free_port(), benchlib.free_port()
    target = socket.create_server(("127.0.0.1", 0), backlog=4096)
    tport = target.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_all():
        sel = selectors.DefaultSelector()
        sel.register(target, selectors.EVENT_READ)
        while not stop.is_set():
            for _ in sel.select(0.2):
                try:
                    held.append(target.accept()[0])
                except OSError:
                    pass
        sel.close()

    threading.Thread(target=accept_all, daemon=True).start()
    socks: list[socket.socket] = []
    with benchlib.ProcGroup() as group:
        server = linksocks_server(group, "tun-server", exe, ws, logdir)
        client = group.add(benchlib.Proc("tun-client", [exe, "client", "-t", "tok", "-u", f"ws://127.0.0.1:{ws}",
                                                         "-p", str(sp)], logdir))
        deadline = time.monotonic() + 30
        while not client.wait_line("READY", 0.2) and time.monotonic() < deadline:
            pass

        def rss() -> float:
            return sum(procstat.sample(p.pid, tree_mode=True).rss_mb for p in (server, client))

        socks_connect(sp, "127.0.0.1", tport).close()  # one tunnel through, so both sides are warm
        time.sleep(1.0)
        idle = rss()
        try:
            for _ in range(n):
                socks.append(socks_connect(sp, "127.0.0.1", tport))
            time.sleep(1.0)
            loaded = rss()
        finally:
            for s in socks:
                s.close()
    stop.set()
    target.close()
    for s in held:
        s.close()
    return idle, loaded, (loaded - idle) * 1000 / max(len(socks), 1), len(socks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", action="append", default=[], metavar="NAME=PATH",
                   help="a format to bench; {prog} in PATH is the program [static, onefile from dist/]")
    p.add_argument("--runs", type=int, default=20, help="runs of --version/--help [20]")
    p.add_argument("--start-runs", type=int, default=7, help="runs of the start-up measurements [7]")
    p.add_argument("--transfer-mib", type=int, default=256, help="MiB each way for throughput; 0 skips [256]")
    p.add_argument("--tunnels", type=int, default=1000, help="open tunnels for the per-tunnel memory figure; 0 skips [1000]")
    p.add_argument("--json", help="write the raw figures here")
    args = p.parse_args(argv)
    formats = dict(f.split("=", 1) for f in args.format) or {
        "static": str(REPO / "dist" / "hatchway-{prog}"), "onefile": str(REPO / "dist" / "onefile" / "hatchway-{prog}")}
    formats = {k: v for k, v in formats.items() if Path(v.format(prog="linksocks")).exists()}
    if not formats:
        raise SystemExit("no executables found: run build/release first")
    logdir = tempfile.mkdtemp(prefix="startup-bench-")
    benchlib.log(f"{benchlib.machine_line()}; logs in {logdir}")
    data: dict[str, dict] = {name: {} for name in formats}
    # Timed figures run round-robin (one run of each format in turn), so a burst of load on the
    # shared machine hits every format alike; CPU ms (user+sys) beside wall ms is the steadier figure.
    benchlib.log("--version / --help, start -> listening / connected (formats interleaved)")
    for name in formats:
        for key in ("--version", "--help"):
            for prog in ("linksocks", "tunnel"):
                data[name][f"{prog} {key}"], data[name][f"{prog} {key} CPU"] = [], []
        for key in ("start->listening", "start->listening CPU", "start->connected", "start->connected CPU"):
            data[name][key] = []
    for _ in range(args.runs):
        for name, pattern in formats.items():
            for prog in ("linksocks", "tunnel"):
                for key in ("--version", "--help"):
                    w, c = timed_runs([pattern.format(prog=prog), key], 1)
                    data[name][f"{prog} {key}"] += w
                    data[name][f"{prog} {key} CPU"] += c
    for _ in range(args.start_runs):
        for name, pattern in formats.items():
            d = data[name]
            w, c, d["idle RSS MB"], d["processes"] = start_to_listening(pattern.format(prog="linksocks"), 1, logdir)
            d["start->listening"] += w
            d["start->listening CPU"] += c
            w, c = start_to_connected(pattern.format(prog="tunnel"), 1, logdir)
            d["start->connected"] += w
            d["start->connected CPU"] += c
    for name, pattern in formats.items():
        ls = pattern.format(prog="linksocks")
        d = data[name]
        d["size MB"] = os.path.getsize(ls) / 1e6
        if args.tunnels:
            benchlib.log(f"{name}: {args.tunnels} open tunnels")
            (d["client+server RSS MB, idle"], d[f"client+server RSS MB, {args.tunnels} tunnels"],
             d["KB per open tunnel"], d["tunnels opened"]) = tunnels_rss(ls, args.tunnels, logdir)
        if args.transfer_mib:
            benchlib.log(f"{name}: throughput {args.transfer_mib} MiB each way")
            d["upload MiB/s"], d["download MiB/s"] = throughput(ls, args.transfer_mib, logdir)

    def cell(v, nd=1):
        if isinstance(v, list):
            return f"{benchlib.median(v):.{nd}f} ({min(v):.0f}-{max(v):.0f})"
        return benchlib.fnum(v, nd)

    def val(v):
        return benchlib.median(v) if isinstance(v, list) else v

    names = list(data)
    rows = []
    for key in data[names[0]]:
        row = [key, *(cell(data[n].get(key)) for n in names)]
        if len(names) > 1:
            row.append(benchlib.ratio(val(data[names[0]][key]), val(data[names[1]][key])))
        rows.append(row)
    headers = ["figure (ms unless stated; median (min-max))", *names] + ([f"{names[0]}/{names[1]}"]
                                                                         if len(names) > 1 else [])
    print(benchlib.machine_line())
    print(benchlib.table(headers, rows, title="hatchway executables, one run"))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
