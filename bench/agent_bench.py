"""hatchway-agent: exec round trip, non-TTY stdout throughput, 100 concurrent sessions, reverse-mode cold
start, idle RSS; side by side with a plain subprocess (the limit) in the same run.

    .venv-test/bin/python bench/agent_bench.py [--quick] [--agent-cmd dist/hatchway-agent] [--json FILE]

Method: the agent runs as its own process on 127.0.0.1 (server mode, no token, keep-alive main
`sleep 3600`); the bench process (uvloop) is the client, through hatchway.agent.client (one WebSocket).
Round trip = `exec` sent to `exit` received for `true`. Throughput = `head -c N /dev/zero` streamed as
stdout messages (32 KiB raw, base64 in JSON), decimal MB/s of raw bytes, two readers:
  * the hatchway client library (hatchway.agent.client: aiohttp, msgspec JSON + base64 decode), whose
    CPU per GiB is reported beside the agent's (both share the 2 cores with `head`);
  * a raw WebSocket reader (a Protocol that parses frame headers and skips payloads, checking that the
    base64 amounts to N bytes): what the agent itself can send when the peer is cheap (a Go backend).
The plain-subprocess rows run the same command with asyncio's subprocess in the bench process.
Every process is started and stopped here, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
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


class RawReader(asyncio.Protocol):
    """The cheapest WebSocket peer: frame headers parsed, big payloads skipped, small ones decoded.

    For every big stdout message the base64 length and its padding give the raw byte count (checked
    against N by the caller); the ``exit`` message ends the stream.
    """

    SMALL = 512

    def __init__(self, prefix: int) -> None:
        loop = asyncio.get_running_loop()
        self.prefix = prefix  # bytes before the base64 in a stdout message of this session
        self.buf = bytearray()  # a frame header, or a whole small frame, being gathered
        self.left = 0  # payload bytes of the current big frame still to skip
        self.big = 0
        self.tail = b""  # the last bytes of the big frame seen so far (its padding before '"}')
        self.raw = 0
        self.messages = 0
        self.handshake = bytearray()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[int] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.handshake.startswith(b"HTTP/1.1 101"), bytes(self.handshake[:200])
            data = bytes(self.handshake[end + 4:])
            self.ready.set_result(None)
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n:
            if self.left:
                end = pos + min(self.left, n - pos)
                self.tail = (self.tail + bytes(view[max(pos, end - 4):end]))[-4:]
                self.left -= end - pos
                pos = end
                if not self.left:
                    self._big_done()
                continue
            need, final = self._need()
            if len(self.buf) < need:
                take = min(need - len(self.buf), n - pos)
                self.buf += view[pos:pos + take]
                pos += take
                if len(self.buf) < need:
                    return
            if final:
                self._consume()

    def _need(self) -> tuple[int, bool]:
        buf = self.buf
        if len(buf) < 2:
            return 2, False
        length = buf[1] & 0x7F
        hlen = 2 if length < 126 else 4 if length == 126 else 10
        if len(buf) < hlen:
            return hlen, False
        length = self._length(hlen)
        return (hlen + length if length <= self.SMALL else hlen), True

    def _length(self, hlen: int) -> int:
        buf = self.buf
        return buf[1] & 0x7F if hlen == 2 else int.from_bytes(buf[2:hlen], "big")

    def _consume(self) -> None:
        buf = self.buf
        hlen = 2 if buf[1] & 0x7F < 126 else 4 if buf[1] & 0x7F == 126 else 10
        length = self._length(hlen)
        if length <= self.SMALL:
            self._small(bytes(buf[hlen:hlen + length]))
        else:
            self.messages += 1
            self.big = self.left = length
            self.tail = b""
        buf.clear()

    def _big_done(self) -> None:
        chars = self.big - self.prefix - 2  # the message ends with '"}'
        self.raw += chars // 4 * 3 - self.tail[:2].count(b"=")

    def _small(self, payload: bytes) -> None:
        message = json.loads(payload)
        if message.get("type") == "exit":
            self.done.set_result(message.get("code", -1))
        elif message.get("type") == "stdout":
            self.messages += 1
            self.raw += len(base64.b64decode(message.get("data", "")))
        else:
            raise AssertionError(f"unexpected message {message}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def raw_stream(port: int, size: int) -> float:
    ident = "raw"
    prefix = len(b'{"type":"stdout","id":"raw","data":"')
    loop = asyncio.get_running_loop()
    transport, reader = await loop.create_connection(lambda: RawReader(prefix), "127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                        .encode())
        await asyncio.wait_for(reader.ready, 10)
        t0 = time.perf_counter()
        body = json.dumps({"type": "exec", "id": ident, "cmd": ["head", "-c", str(size), "/dev/zero"],
                           "stdin": False}).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(body))
        transport.write(bytes([0x81, 0x80 | len(body)]) + mask + masked)
        code = await asyncio.wait_for(reader.done, 120)
        elapsed = time.perf_counter() - t0
        assert code == 0 and reader.raw == size, (code, reader.raw, size)
        return elapsed
    finally:
        transport.abort()


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


class PrivateDockerd:
    """A dockerd of the bench's own (private data/exec roots and socket, no bridge, no iptables), as the
    packaging tests start it, with one container (a static busybox, `sleep`) to `docker exec` into."""

    def __init__(self, logdir: str) -> None:
        self.root = tempfile.mkdtemp(prefix="agent-bench-dockerd-")
        os.mkdir(os.path.join(self.root, "client"))
        self.sock = os.path.join(self.root, "docker.sock")
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}",
                    "DOCKER_CONFIG": os.path.join(self.root, "client")}
        self.client = shutil.which("docker") or "docker"
        self.daemon = bl.Proc("dockerd", [shutil.which("dockerd") or "/usr/sbin/dockerd",
                                          "--data-root", os.path.join(self.root, "data"),
                                          "--exec-root", os.path.join(self.root, "exec"), "-H", f"unix://{self.sock}",
                                          "-p", os.path.join(self.root, "docker.pid"), "--iptables=false",
                                          "--ip6tables=false", "--bridge=none"], logdir)
        self.container = "agent-bench"

    def docker(self, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.client, *args], env=self.env, capture_output=True, timeout=120, **kw)  # type: ignore[call-overload]

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while self.docker("version").returncode != 0:
            if self.daemon.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {self.daemon.log_tail()}")
            time.sleep(0.2)
        rootfs = os.path.join(self.root, "rootfs.tar")
        with tarfile.open(rootfs, "w") as tar:
            tar.add("/bin/busybox", "bin/busybox")
            for name in ("sh", "true", "head", "sleep"):
                link = tarfile.TarInfo(f"bin/{name}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        self.docker("import", rootfs, "agent-bench/busybox", check=True)
        self.docker("run", "-d", "--network", "none", "--name", self.container, "agent-bench/busybox",
                    "/bin/sleep", "3600", check=True)

    def round_trips(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.docker("exec", self.container, "true", check=True)
            times.append(time.perf_counter() - t0)
        return times

    def stream(self, size: int) -> float:
        t0 = time.perf_counter()
        proc = subprocess.Popen([self.client, "exec", self.container, "head", "-c", str(size), "/dev/zero"],
                                env=self.env, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        got = 0
        while chunk := proc.stdout.read1(256 * 1024):
            got += len(chunk)
        assert proc.wait() == 0 and got == size, (proc.returncode, got)
        return time.perf_counter() - t0

    def stop(self) -> None:
        try:
            self.docker("rm", "-f", self.container)
        finally:
            if self.daemon.popen.poll() is None:  # dockerd first (it stops its containerd), by its PID
                os.kill(self.daemon.pid, signal.SIGTERM)
                try:
                    self.daemon.popen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            self.daemon.stop()  # whatever is left of its tree: SIGTERM, then SIGKILL
            with open("/proc/self/mounts") as f:
                mounts = [line.split()[1] for line in f if line.split()[1].startswith(self.root + "/")]
            for mount in sorted(mounts, key=len, reverse=True):
                if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
                    subprocess.run(["umount", "-l", mount], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)


def docker_figures(logdir: str, n: int, size: int) -> dict[str, float] | str:
    """`docker exec` round trip and stdout throughput on a private dockerd; a reason string when none runs."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None or not os.path.exists("/bin/busybox"):
        return "no dockerd/docker/busybox here"
    dockerd = PrivateDockerd(logdir)
    try:
        dockerd.start()
        dockerd.round_trips(3)  # warm-up
        rt = dockerd.round_trips(n)
        elapsed = min(dockerd.stream(size) for _ in range(2))
        return {"p50_ms": bl.pct(rt, 50) * 1e3, "p99_ms": bl.pct(rt, 99) * 1e3, "MBps": size / elapsed / 1e6}
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"dockerd failed: {exc}"
    finally:
        dockerd.stop()


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
            rt, plain_rt = [], []
            for _ in range(args.n // 10):  # interleaved in blocks of 10: a load burst hits both alike
                rt += await round_trips(client, 10)
                plain_rt += plain_round_trips(10)
            results["rt"] = {"p50_ms": bl.pct(rt, 50) * 1e3, "p99_ms": bl.pct(rt, 99) * 1e3,
                             "plain_p50_ms": bl.pct(plain_rt, 50) * 1e3, "plain_p99_ms": bl.pct(plain_rt, 99) * 1e3}
            size = args.size
            gib = size / 2**30
            plain = await plain_stream(size)
            runs: list[tuple[float, float, float]] = []  # (elapsed, agent CPU s, client CPU s)
            raw_runs: list[tuple[float, float]] = []
            for _ in range(2):  # alternated, best of two each: a load burst from elsewhere hits both alike
                agent0, mine0 = procstat.cpu_seconds(agent.pid), time.process_time()
                elapsed, _ = await stream(client, size)
                runs.append((elapsed, procstat.cpu_seconds(agent.pid) - agent0, time.process_time() - mine0))
                agent0 = procstat.cpu_seconds(agent.pid)
                elapsed = await raw_stream(port, size)
                raw_runs.append((elapsed, procstat.cpu_seconds(agent.pid) - agent0))
            best = min(runs)
            raw_best = min(raw_runs)
            results["throughput"] = {"bytes": size, "agent_MBps": size / best[0] / 1e6, "plain_MBps": size / plain / 1e6,
                                     "agent_cpu_s_per_GiB": best[1] / gib, "client_cpu_s_per_GiB": best[2] / gib,
                                     "raw_MBps": size / raw_best[0] / 1e6, "raw_agent_cpu_s_per_GiB": raw_best[1] / gib,
                                     "all_MBps": [size / r[0] / 1e6 for r in runs],
                                     "all_raw_MBps": [size / r[0] / 1e6 for r in raw_runs]}
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
    if not args.no_docker:
        results["docker"] = docker_figures(logdir, args.docker_n, args.size)
    results["load_after"] = os.getloadavg()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 MiB stream, 200 round trips")
    parser.add_argument("--agent-cmd", default=None, help="agent command (default: python -m hatchway.agent)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-docker", action="store_true", help="skip the `docker exec` rows (private dockerd)")
    args = parser.parse_args()
    args.n = 200 if args.quick else 1000
    args.size = (256 if args.quick else 1024) * 2**20
    args.csize = 1024 * 1024
    args.cold_runs = 3 if args.quick else 7
    args.docker_n = 30 if args.quick else 100
    import gc

    import uvloop

    gc.freeze()  # the client process's start-up objects, as the agent does: no full collection lands on a round trip
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
        [f"stdout {tp['bytes'] // 2**20} MiB non-TTY, hatchway client", bl.fnum(tp["agent_MBps"], 0, " MB/s"),
         bl.fnum(tp["plain_MBps"], 0, " MB/s"), bl.ratio(tp["agent_MBps"], tp["plain_MBps"]), ">= 500 MB/s"],
        ["  agent CPU / client CPU per GiB", f"{tp['agent_cpu_s_per_GiB']:.2f} s / {tp['client_cpu_s_per_GiB']:.2f} s",
         "", "", ""],
        ["stdout, raw WebSocket reader (agent alone)", bl.fnum(tp["raw_MBps"], 0, " MB/s"),
         bl.fnum(tp["plain_MBps"], 0, " MB/s"), bl.ratio(tp["raw_MBps"], tp["plain_MBps"]), ">= 500 MB/s"],
        ["  agent CPU per GiB (raw reader)", bl.fnum(tp["raw_agent_cpu_s_per_GiB"], 2, " s"), "", "", ""],
        ["100 concurrent execs (1 MiB each), wall", bl.fnum(cc["hundred_s"], 2, " s"),
         bl.fnum(cc["plain_hundred_s"], 2, " s"), bl.ratio(cc["hundred_s"], cc["plain_hundred_s"]), ""],
        ["  per-session time vs one alone", bl.fnum(cc["per_session_slowdown"], 2, "x"), "", "", "<= CPU share"],
        ["reverse cold start to connected", bl.fnum(cs["median"], 0, " ms"), "", "", "< 150 ms (release exe)"],
        ["idle RSS", bl.fnum(int(results["idle_rss_bytes"]) / 2**20, 1, " MiB"), "", "", "< 28 MB"],  # type: ignore[call-overload]
        ["RSS after the runs", bl.fnum(int(results["rss_after_bytes"]) / 2**20, 1, " MiB"), "", "", ""],  # type: ignore[call-overload]
    ]
    print(bl.table(["figure", "agent", "plain subprocess", "ratio", "target"], rows, title="hatchway-agent"))
    dk = results.get("docker")
    if isinstance(dk, dict):
        print(bl.table(["figure", "hatchway-agent", "docker exec (CLI, private dockerd)", "ratio"], [
            ["exec `true` round trip p50", bl.fnum(rt["p50_ms"], 2, " ms"), bl.fnum(dk["p50_ms"], 2, " ms"),
             bl.ratio(rt["p50_ms"], dk["p50_ms"])],
            ["exec `true` round trip p99", bl.fnum(rt["p99_ms"], 2, " ms"), bl.fnum(dk["p99_ms"], 2, " ms"),
             bl.ratio(rt["p99_ms"], dk["p99_ms"])],
            [f"stdout {tp['bytes'] // 2**20} MiB non-TTY (hatchway client / docker CLI)",
             bl.fnum(tp["agent_MBps"], 0, " MB/s"), bl.fnum(dk["MBps"], 0, " MB/s"), bl.ratio(tp["agent_MBps"], dk["MBps"])],
        ], title="against docker exec (same run)"))
    elif dk is not None:
        print(f"docker exec rows skipped: {dk}")
    load = results["load_after"]
    print(f"load avg at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # type: ignore[index]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
