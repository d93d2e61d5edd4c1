"""hatchway-sidecar vs the reference Go arkitekt-sidecar (v0.0.5 from arkitekt-gateway), side by side in one run,
on the offline test tailnet (tests/sidecar: fake control + DERP in a network namespace, caddy-tailscale as `svc`).

    .venv-test/bin/python bench/sidecar_bench.py [--quick] [--connect-only] [--rounds N] [--tcp-buffers B1,B2]
        [--hatchway-cmd "dist/hatchway-sidecar"] [--json FILE]

Figures (each sidecar is its own process inside the namespace; the load generator is one uvloop Python process
inside the namespace too):
* start to READY: wall time from spawn until the @@SIDECAR:READY@@ line is read (fresh state dir each time),
  without and with -statusport (hatchway imports aiohttp only for the status API);
* CONNECT throughput: `CONNECT svc:8082` then GET of a 64 MiB file served by caddy over the tailnet, rounds in
  round robin: the Go sidecar, hatchway, and the mesh's own ceiling (a Python process that is itself an
  arkitekt-mesh node dialling through the node's local proxy: hatchway's backend path without the sidecar relay),
  with the CPU seconds each sidecar's process tree spends per MB;
* requests/s: 16 concurrent clients, each a new connection with `GET http://svc/` (Connection: close) for T s;
* idle RSS: VmRSS of the sidecar's process tree after READY and 2 s idle (the release executable is one process;
  the PyInstaller onefile was three),
  without and with -statusport (hatchway's status API is aiohttp; arkitekt-gateway passes -statusport by default);
* a venv run gets bytecode as an installed package has it (private PYTHONPYCACHEPREFIX, one warm-up start);
* size: the Go binary vs hatchway's executable (dist/hatchway-sidecar when present).
Root is needed (ip netns). Every process is started and stopped here, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402
import procstat  # noqa: E402

sys.path.insert(0, os.path.join(bl.REPO, "tests"))
sys.path.insert(0, os.path.join(bl.REPO, "tests", "sidecar"))
sys.path.insert(0, bl.SRC)

from peers import installed_file  # noqa: E402
from tailnet import AUTH_KEY, CONTROL_URL, FakeTailnet  # noqa: E402

BULK = 64 * 1024 * 1024

CLIENT = r"""
import asyncio, json, sys, time
import uvloop

async def connect_get(host, port, target, path):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    writer.write(f"GET {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".encode())
    total = 0
    start = time.perf_counter()
    while chunk := await reader.read(262144):
        total += len(chunk)
    elapsed = time.perf_counter() - start
    writer.close()
    assert total >= BULK_SIZE, total
    return total / elapsed / 1e6

async def one_request(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET http://svc/ HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data.startswith(b"HTTP/1.1 200")

async def rps(port, seconds, workers):
    ok = bad = 0
    deadline = time.perf_counter() + seconds
    async def worker():
        nonlocal ok, bad
        while time.perf_counter() < deadline:
            try:
                good = await one_request(port)
            except OSError:
                good = False
            if good: ok += 1
            else: bad += 1
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok / (time.perf_counter() - start), bad

async def mesh(statedir, hostname, tcp_buffer):
    # the mesh's own ceiling: this process is an arkitekt-mesh node and dials through the node's local proxy
    # itself (the path hatchway's mesh backend uses), no sidecar in between
    import arkitekt_mesh
    node = await arkitekt_mesh.Node.start(statedir, hostname, control_url="CONTROL", auth_key="AUTHKEY",
                                          tcp_buffer=tcp_buffer or None)
    try:
        host, port = node.proxy_url.rsplit("/", 1)[1].rsplit(":", 1)
        cpu = time.process_time()
        mbps = await connect_get(host, int(port), "svc:8082", "/bulk")
        cpu = time.process_time() - cpu
        return {"mbps": mbps, "cpu_s": cpu}
    finally:
        node.close()

async def main():
    mode = sys.argv[1]
    if mode == "connect":
        cpu = time.process_time()
        mbps = await connect_get("127.0.0.1", int(sys.argv[2]), "svc:8082", "/bulk")
        print(json.dumps({"mbps": mbps, "client_cpu_s": time.process_time() - cpu}))
    elif mode == "rps":
        r, bad = await rps(int(sys.argv[2]), float(sys.argv[3]), 16)
        print(json.dumps({"rps": r, "failed": bad}))
    else:
        print(json.dumps(await mesh(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)))

uvloop.run(main())
""".replace("BULK_SIZE", str(BULK)).replace("CONTROL", CONTROL_URL).replace("AUTHKEY", AUTH_KEY)


def client(net: FakeTailnet, *args: str) -> dict[str, float]:
    """One run of the load generator inside the namespace (its own process)."""
    out = subprocess.run(net.command([sys.executable, "-c", CLIENT, *args]), capture_output=True, text=True,
                         timeout=600, env=net.env())
    if out.returncode != 0:
        raise RuntimeError(f"client {args} failed: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


# A venv run imports hatchway from src/: give it bytecode as an installed package has (a private cache dir; the
# shell may carry PYTHONDONTWRITEBYTECODE=1, and compiling every module at each start is not what users run).
# The first start of each sidecar in measure() is a warm-up that writes the cache and is not counted.
BYTECODE_ENV = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(),
                                                                                   "hatchway-bench-pycache")}


class Running:
    """A sidecar process inside the namespace, READY timed."""

    def __init__(self, net: FakeTailnet, argv: list[str], name: str, port: int, status_port: int | None = None) -> None:
        self.state = tempfile.mkdtemp(prefix=f"bench-{name}-")
        args = [*argv, "-coordserver", CONTROL_URL, "-authkey", AUTH_KEY, "-statedir", self.state,
                "-hostname", name, "-port", str(port)]
        if status_port is not None:
            args += ["-statusport", str(status_port)]
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(net.command(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=net.env(BYTECODE_ENV), restore_signals=True)
        self.ready = None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.startswith(b"@@SIDECAR:READY@@"):
                self.ready = time.perf_counter() - self.start
                break
            if raw.startswith(b"@@SIDECAR:ERROR@@"):
                raise RuntimeError(f"{name}: {raw.decode().strip()}")
        if self.ready is None:
            raise RuntimeError(f"{name} exited before READY")
        # keep reading stdout as a parent does: per-request lines would fill the pipe and stall the sidecar
        self.drain = threading.Thread(target=self._drain, name=f"drain {name}", daemon=True)
        self.drain.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def idle_rss(sidecar: Running) -> float:
    time.sleep(2.0)  # idle before the sample (a bench, not a test)
    return procstat.sample(sidecar.proc.pid, tree_mode=True).rss / 1e6  # the whole process tree (a onefile is three processes)


def measure(net: FakeTailnet, argv: list[str], name: str, starts: int, seconds: float) -> dict[str, float]:
    """start to READY (median of ``starts`` after one warm-up, without and with -statusport), idle RSS without and
    with -statusport (arkitekt-gateway's wrapper passes -statusport 9090 by default) and requests/s."""
    Running(net, argv, f"{name}w", bl.free_port(), bl.free_port()).stop()  # warm-up: bytecode cache, page cache
    ready, ready_status = [], []
    for i in range(starts):
        sidecar = Running(net, argv, f"{name}{i}", bl.free_port())
        ready.append(sidecar.ready)
        sidecar.stop()
        sidecar = Running(net, argv, f"{name}s{i}", bl.free_port(), bl.free_port())
        ready_status.append(sidecar.ready)
        sidecar.stop()
    sidecar = Running(net, argv, f"{name}st", bl.free_port(), bl.free_port())
    try:
        rss_status = idle_rss(sidecar)
    finally:
        sidecar.stop()
    port = bl.free_port()
    sidecar = Running(net, argv, name, port)
    try:
        rss = idle_rss(sidecar)
        load = client(net, "rps", str(port), str(seconds))
    finally:
        sidecar.stop()
    return {"ready_s": bl.median(ready), "ready_status_s": bl.median(ready_status), "rps": load["rps"],
            "failed": load["failed"], "idle_rss_mb": rss, "idle_rss_status_mb": rss_status}


def main_threads_cpu(pid: int) -> float:
    """CPU seconds of the main thread of every process in the tree: for hatchway, the Python thread that runs the
    event loop and the relay (arkitekt-mesh works in its own tokio threads)."""
    total = 0.0
    for p in procstat.tree(pid):
        try:
            with open(f"/proc/{p}/task/{p}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def connect_rounds(net: FakeTailnet, go_argv: list[str], hw_argv: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """CONNECT svc:8082 + GET of the 64 MiB file, round robin in each round (a load burst hits all three alike):
    through the Go sidecar, through hatchway, and the mesh's own ceiling (a Python process that is itself an
    arkitekt-mesh node and dials through the node's local proxy, hatchway's mesh backend path without the
    sidecar's relay). Besides MB/s, the CPU seconds the sidecar's process tree spent per transfer."""
    go_port, hw_port = bl.free_port(), bl.free_port()
    go = Running(net, go_argv, "goconn", go_port)
    hw = Running(net, hw_argv, "hwconn", hw_port)
    runs: dict[str, list[dict[str, float]]] = {"go": [], "hatchway": [], "mesh": []}
    caddy = net.procs[1].pid  # the service node, the sender of the bytes (control is procs[0])
    try:
        order = ["go", "hatchway", "mesh"]
        for r in range(rounds):
            for who in order[r % 3:] + order[:r % 3]:
                svc_cpu = procstat.sample(caddy, tree_mode=True).cpu
                if who == "mesh":
                    state = tempfile.mkdtemp(prefix="bench-mesh-")
                    got = client(net, "mesh", state, f"meshdirect{r}")
                    got["sidecar_cpu_s"] = got.pop("cpu_s")  # the node runs in the client process itself
                else:
                    sidecar = go if who == "go" else hw
                    cpu = procstat.sample(sidecar.proc.pid, tree_mode=True).cpu
                    main_cpu = main_threads_cpu(sidecar.proc.pid)
                    got = client(net, "connect", str(go_port if who == "go" else hw_port))
                    got["sidecar_cpu_s"] = procstat.sample(sidecar.proc.pid, tree_mode=True).cpu - cpu
                    got["main_thread_cpu_s"] = main_threads_cpu(sidecar.proc.pid) - main_cpu
                got["svc_cpu_s"] = procstat.sample(caddy, tree_mode=True).cpu - svc_cpu
                runs[who].append(got)
                bl.log(f"round {r}: {who} {got['mbps']:.1f} MB/s, CPU s: sidecar {got['sidecar_cpu_s']:.2f}, "
                       f"service node {got['svc_cpu_s']:.2f}")
    finally:
        go.stop()
        hw.stop()
    out: dict[str, dict[str, float]] = {}
    for who, got in runs.items():
        mbps = [g["mbps"] for g in got]
        out[who] = {"best_mbps": max(mbps), "median_mbps": bl.median(mbps),
                    "cpu_ms_per_mb": bl.median([g["sidecar_cpu_s"] * 1000 / (BULK / 1e6) for g in got]),
                    "svc_cpu_ms_per_mb": bl.median([g["svc_cpu_s"] * 1000 / (BULK / 1e6) for g in got]),
                    "main_thread_cpu_ms_per_mb": bl.median([g.get("main_thread_cpu_s", 0.0) * 1000 / (BULK / 1e6)
                                                            for g in got])}
    return out


def tcp_buffer_rounds(net: FakeTailnet, buffers: list[int], rounds: int) -> dict[int, dict[str, float]]:
    """The mesh's own ceiling by arkitekt-mesh's ``tcp_buffer`` (bytes in flight per connection and direction,
    default 1 MiB; throughput <= tcp_buffer / RTT), round robin, with the service node's CPU per MB."""
    caddy = net.procs[1].pid
    runs: dict[int, list[dict[str, float]]] = {b: [] for b in buffers}
    for r in range(rounds):
        for buf in buffers[r % len(buffers):] + buffers[:r % len(buffers)]:
            svc_cpu = procstat.sample(caddy, tree_mode=True).cpu
            got = client(net, "mesh", tempfile.mkdtemp(prefix="bench-mesh-"), f"meshbuf{r}x{buf}", str(buf))
            got["svc_cpu_s"] = procstat.sample(caddy, tree_mode=True).cpu - svc_cpu
            runs[buf].append(got)
            bl.log(f"round {r}: mesh tcp_buffer={buf} {got['mbps']:.1f} MB/s, service node CPU {got['svc_cpu_s']:.2f} s")
    return {b: {"median_mbps": bl.median([g["mbps"] for g in got]), "best_mbps": max(g["mbps"] for g in got),
                "svc_cpu_ms_per_mb": bl.median([g["svc_cpu_s"] * 1000 / (BULK / 1e6) for g in got])}
            for b, got in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--connect-only", action="store_true", help="only the CONNECT throughput rounds")
    parser.add_argument("--rounds", type=int, help="CONNECT rounds (default 5, --quick 3)")
    parser.add_argument("--tcp-buffers", help="also: the mesh ceiling for these arkitekt-mesh tcp_buffer sizes "
                        "(comma-separated bytes, e.g. 131072,1048576)")
    parser.add_argument("--hatchway-cmd", default=f"{sys.executable} -m hatchway.sidecar")
    parser.add_argument("--json")
    args = parser.parse_args()
    starts, rounds, seconds = (2, 3, 3.0) if args.quick else (5, 5, 5.0)
    rounds = args.rounds or rounds
    go_bin = installed_file("arkitekt-gateway", "arkitekt-sidecar")
    hatchway = shlex.split(args.hatchway_cmd)
    net = FakeTailnet()
    go: dict[str, float] = {}
    hw: dict[str, float] = {}
    try:
        bl.log("starting the test tailnet (control + DERP + caddy svc)")
        net.start()
        with open(os.path.join(net.www, "bulk"), "wb") as fh:
            fh.write(os.urandom(1 << 20) * (BULK >> 20))
        if not args.connect_only:
            bl.log("Go sidecar")
            go = measure(net, [go_bin], "gosc", starts, seconds)
            bl.log("hatchway sidecar")
            hw = measure(net, hatchway, "hw", starts, seconds)
        bl.log("CONNECT throughput rounds")
        conn = connect_rounds(net, [go_bin], hatchway, rounds)
        bufs = tcp_buffer_rounds(net, [int(b) for b in args.tcp_buffers.split(",")], rounds) if args.tcp_buffers else {}
    finally:
        net.stop()
    dist = os.path.join(bl.REPO, "dist", "hatchway-sidecar")
    sizes = {"go_mb": os.path.getsize(go_bin) / 1e6,
             "hatchway_mb": os.path.getsize(dist) / 1e6 if os.path.exists(dist) else None}
    cg, ch, cm = conn["go"], conn["hatchway"], conn["mesh"]
    rows = [
        ["CONNECT throughput (MB/s, best)", bl.fnum(cg["best_mbps"]), bl.fnum(ch["best_mbps"]),
         bl.ratio(ch["best_mbps"], cg["best_mbps"])],
        ["CONNECT throughput (MB/s, median)", bl.fnum(cg["median_mbps"]), bl.fnum(ch["median_mbps"]),
         bl.ratio(ch["median_mbps"], cg["median_mbps"])],
        ["mesh ceiling: direct arkitekt-mesh dial, no proxy (MB/s, best / median)", "",
         f"{bl.fnum(cm['best_mbps'])} / {bl.fnum(cm['median_mbps'])}",
         "hatchway/ceiling " + bl.ratio(ch["median_mbps"], cm["median_mbps"])],
        ["sidecar CPU per MB moved (ms, median; mesh ceiling: the dialing process)", bl.fnum(cg["cpu_ms_per_mb"], 2),
         f"{bl.fnum(ch['cpu_ms_per_mb'], 2)} (ceiling {bl.fnum(cm['cpu_ms_per_mb'], 2)})", ""],
        ["  of which hatchway's Python thread (event loop + relay; the rest is arkitekt-mesh's threads)", "",
         bl.fnum(ch["main_thread_cpu_ms_per_mb"], 2), ""],
        ["service node (caddy, the sender) CPU per MB (ms, median)", bl.fnum(cg["svc_cpu_ms_per_mb"], 2),
         f"{bl.fnum(ch['svc_cpu_ms_per_mb'], 2)} (ceiling {bl.fnum(cm['svc_cpu_ms_per_mb'], 2)})", ""],
    ]
    if go:
        rows = [
            ["start to READY (s, median)", bl.fnum(go["ready_s"], 3), bl.fnum(hw["ready_s"], 3),
             bl.ratio(go["ready_s"], hw["ready_s"]) + " sooner"],
            ["start to READY with -statusport (s, median)", bl.fnum(go["ready_status_s"], 3),
             bl.fnum(hw["ready_status_s"], 3), bl.ratio(go["ready_status_s"], hw["ready_status_s"]) + " sooner"],
            *rows,
            ["requests/s (16 clients, new conn each)", bl.fnum(go["rps"]), bl.fnum(hw["rps"]),
             bl.ratio(hw["rps"], go["rps"])],
            ["failed requests", go["failed"], hw["failed"], ""],
            ["idle RSS (MB)", bl.fnum(go["idle_rss_mb"]), bl.fnum(hw["idle_rss_mb"]),
             bl.ratio(hw["idle_rss_mb"], go["idle_rss_mb"])],
            ["idle RSS with -statusport (MB)", bl.fnum(go["idle_rss_status_mb"]), bl.fnum(hw["idle_rss_status_mb"]),
             bl.ratio(hw["idle_rss_status_mb"], go["idle_rss_status_mb"])],
        ]
    rows.append(["size (MB)", bl.fnum(sizes["go_mb"]), bl.fnum(sizes["hatchway_mb"]), ""])
    for buf, fig in bufs.items():
        rows.append([f"mesh ceiling with tcp_buffer={buf} (MB/s median / best; service node CPU ms/MB)", "",
                     f"{bl.fnum(fig['median_mbps'])} / {bl.fnum(fig['best_mbps'])}; {bl.fnum(fig['svc_cpu_ms_per_mb'], 2)}",
                     bl.ratio(fig["median_mbps"], cg["median_mbps"])])
    print(bl.machine_line())
    print(f"hatchway command: {' '.join(hatchway)}")
    print(bl.table(["figure", "Go arkitekt-sidecar v0.0.5", "hatchway-sidecar (mesh)", "hatchway vs Go"], rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"go": go, "hatchway": hw, "connect": conn, "tcp_buffers": bufs, "sizes": sizes}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
