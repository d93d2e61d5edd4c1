"""hatchway-sidecar vs the reference Go arkitekt-sidecar (v0.0.5 from arkitekt-gateway), side by side in one run,
on the offline test tailnet (tests/sidecar: fake control + DERP in a network namespace, caddy-tailscale as `svc`).

    .venv-test/bin/python bench/sidecar_bench.py [--quick] [--hatchway-cmd "dist/hatchway-sidecar"] [--json FILE]

Figures (each sidecar is its own process inside the namespace; the load generator is one uvloop Python process
inside the namespace too):
* start to READY: wall time from spawn until the @@SIDECAR:READY@@ line is read (fresh state dir each time),
  without and with -statusport (hatchway imports aiohttp only for the status API);
* CONNECT throughput: `CONNECT svc:8082` then GET of a 64 MiB file served by caddy over the tailnet, best of N;
* requests/s: 16 concurrent clients, each a new connection with `GET http://svc/` (Connection: close) for T s;
* idle RSS: VmRSS of the sidecar's process tree after READY and 2 s idle (a onefile executable is two processes);
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

async def connect_get(port, host, path):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    writer.write(f"GET {path} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n".encode())
    total = 0
    start = time.perf_counter()
    while chunk := await reader.read(262144):
        total += len(chunk)
    elapsed = time.perf_counter() - start
    writer.close()
    return total, elapsed

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

async def main():
    port, runs, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    best = 0.0
    for _ in range(runs):
        total, elapsed = await connect_get(port, "svc:8082", "/bulk")
        assert total >= BULK_SIZE, total
        best = max(best, total / elapsed / 1e6)
    r, bad = await rps(port, seconds, 16)
    print(json.dumps({"connect_mbps": best, "rps": r, "failed": bad}))

uvloop.run(main())
""".replace("BULK_SIZE", str(BULK))


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
                                     env=net.env(), restore_signals=True)
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


def measure(net: FakeTailnet, argv: list[str], name: str, starts: int, runs: int, seconds: float) -> dict[str, float]:
    ready, ready_status = [], []
    for i in range(starts):
        sidecar = Running(net, argv, f"{name}{i}", bl.free_port())
        ready.append(sidecar.ready)
        sidecar.stop()
        sidecar = Running(net, argv, f"{name}s{i}", bl.free_port(), bl.free_port())
        ready_status.append(sidecar.ready)
        sidecar.stop()
    port = bl.free_port()
    sidecar = Running(net, argv, name, port)
    try:
        time.sleep(2.0)  # idle before the RSS sample (a bench, not a test)
        rss = procstat.sample(sidecar.proc.pid, tree_mode=True).rss / 1e6  # onefile+staticx: parent + child
        out = subprocess.run(net.command([sys.executable, "-c", CLIENT, str(port), str(runs), str(seconds)]),
                             capture_output=True, text=True, timeout=600, env=net.env())
        if out.returncode != 0:
            raise RuntimeError(f"{name} client failed: {out.stderr[-2000:]}")
        load = json.loads(out.stdout)
    finally:
        sidecar.stop()
    return {"ready_s": bl.median(ready), "ready_status_s": bl.median(ready_status), "connect_mbps": load["connect_mbps"], "rps": load["rps"],
            "failed": load["failed"], "idle_rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hatchway-cmd", default=f"{sys.executable} -m hatchway.sidecar")
    parser.add_argument("--json")
    args = parser.parse_args()
    starts, runs, seconds = (2, 2, 3.0) if args.quick else (5, 3, 5.0)
    go_bin = installed_file("arkitekt-gateway", "arkitekt-sidecar")
    hatchway = shlex.split(args.hatchway_cmd)
    net = FakeTailnet()
    try:
        bl.log("starting the test tailnet (control + DERP + caddy svc)")
        net.start()
        with open(os.path.join(net.www, "bulk"), "wb") as fh:
            fh.write(os.urandom(1 << 20) * (BULK >> 20))
        bl.log("Go sidecar")
        go = measure(net, [go_bin], "gosc", starts, runs, seconds)
        bl.log("hatchway sidecar")
        hw = measure(net, hatchway, "hw", starts, runs, seconds)
    finally:
        net.stop()
    dist = os.path.join(bl.REPO, "dist", "hatchway-sidecar")
    sizes = {"go_mb": os.path.getsize(go_bin) / 1e6,
             "hatchway_mb": os.path.getsize(dist) / 1e6 if os.path.exists(dist) else None}
    rows = [
        ["start to READY (s, median)", bl.fnum(go["ready_s"], 3), bl.fnum(hw["ready_s"], 3),
         bl.ratio(go["ready_s"], hw["ready_s"]) + " sooner"],
        ["start to READY with -statusport (s, median)", bl.fnum(go["ready_status_s"], 3),
         bl.fnum(hw["ready_status_s"], 3), bl.ratio(go["ready_status_s"], hw["ready_status_s"]) + " sooner"],
        ["CONNECT throughput (MB/s, best)", bl.fnum(go["connect_mbps"]), bl.fnum(hw["connect_mbps"]),
         bl.ratio(hw["connect_mbps"], go["connect_mbps"])],
        ["requests/s (16 clients, new conn each)", bl.fnum(go["rps"]), bl.fnum(hw["rps"]), bl.ratio(hw["rps"], go["rps"])],
        ["failed requests", go["failed"], hw["failed"], ""],
        ["idle RSS (MB)", bl.fnum(go["idle_rss_mb"]), bl.fnum(hw["idle_rss_mb"]),
         bl.ratio(hw["idle_rss_mb"], go["idle_rss_mb"])],
        ["size (MB)", bl.fnum(sizes["go_mb"]), bl.fnum(sizes["hatchway_mb"]), ""],
    ]
    print(bl.machine_line())
    print(f"hatchway command: {' '.join(hatchway)}")
    print(bl.table(["figure", "Go arkitekt-sidecar v0.0.5", "hatchway-sidecar (mesh)", "hatchway vs Go"], rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"go": go, "hatchway": hw, "sizes": sizes}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
