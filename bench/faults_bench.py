#!/usr/bin/env python3
"""Issue #6 ("No silent loss") figures, re-measured: the code before the fixes and today's, in one run.

Each measurement runs against BOTH trees (``--baseline-src``, default /tmp/baseline/src, and
``--current-src``, default this repo's src/) with the same python, and the bench prints one table
"figure | baseline | hatchway now | issue's figure".  Loopback only, ephemeral ports, every loop
bounded in count and time, and every process this bench starts is stopped by its own PID.  A
watchdog SIGKILLs (by PID) any of our server processes whose RSS passes ``--rss-cap`` (default
1.5 GB) so the baseline cannot eat the shared machine; a capped figure is shown as "> X".

Run (about 4 minutes):
    .venv-test/bin/python bench/faults_bench.py
    .venv-test/bin/python bench/faults_bench.py --only 7,8,4     # items of the issue, in that order

Items (issue #6 numbering): 7 unauthenticated memory, 8 slowloris, 4 kill -9 mid-download,
5 one stalled SOCKS reader, 9 orphan buffer, 10 log flood, 3 cut WebSocket + Resume, 15 half-close.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

import benchlib as bl
import procstat

HOST = "127.0.0.1"
TOKEN = "faultbench-token"
MiB = 1 << 20
ITEMS = ["7", "8", "4", "5", "9", "10", "3", "15"]
ISSUE = {
    "7ls": "54 -> 569 MB",
    "7rn": "61 -> 1,091 MB (357 MB held after close)",
    "8": "fd limit pinned, real clients locked out",
    "4": "clean EOF at 4-52 MB of 256 MiB",
    "5": "40 s frozen (forward mode)",
    "9": "44 -> 1,012 MB",
    "10": "ERROR + traceback per request (21x)",
    "3d": "8/10 rounds: clean EOF after a 6-16 MB hole",
    "3e": "9/10 rounds: uploads/echoes hang, no error",
    "15": "0 of 1 MiB",
}


# ============================================================================ process plumbing

class Side:
    """One tree of the code (baseline or current) and the processes started from it."""

    def __init__(self, label: str, src: str, python: str, logdir: str, watchdog: Watchdog):
        self.label = label
        self.src = src
        self.python = python
        self.logdir = logdir
        self.watchdog = watchdog
        self.n = 0

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.src
        env["PYTHONUNBUFFERED"] = "1"
        for k in list(env):
            if k.startswith(("LINKSOCKS_", "RUNNER_", "HATCHWAY_")):
                del env[k]
        return env

    def spawn(self, group: bl.ProcGroup, name: str, prog: str, argv: list[str], watch: bool = True) -> bl.Proc:
        self.n += 1
        # the fd limit a service usually gets (soft 1024); the program may raise its soft limit itself
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        cmd = ["prlimit", f"--nofile=1024:{hard}", "--", self.python, "-m", f"hatchway.{prog}"] + argv
        p = group.add(bl.Proc(f"{self.label}-{self.n}-{name}", cmd, self.logdir, self.env()))
        if watch:
            self.watchdog.watch(p)
        return p


class Watchdog(threading.Thread):
    """SIGKILLs (by PID) a watched process whose VmRSS passes the cap; remembers peaks."""

    def __init__(self, cap: int):
        super().__init__(daemon=True)
        self.cap = cap
        self.procs: list[bl.Proc] = []
        self.capped: set[int] = set()
        self.peak: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def watch(self, p: bl.Proc) -> None:
        with self.lock:
            self.procs.append(p)

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            with self.lock:
                procs = [p for p in self.procs if p.alive()]
                self.procs = procs
            for p in procs:
                rss = rss_of(p.pid)
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
                if rss > self.cap:
                    self.capped.add(p.pid)
                    try:
                        os.kill(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def rss_of(pid: int) -> int:
    try:
        return procstat.status(pid)[0]
    except Exception:  # noqa: BLE001 - gone
        return 0


def mb(n: int | float | None) -> str:
    return "?" if n is None else f"{n / 1e6:.0f} MB"


def wait_port(p: bl.Proc, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not bl.port_open(HOST, port, 0.2):
        if not p.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{p.name} did not listen on {port}: {p.log_tail()}")
        time.sleep(0.05)


def settle(seconds: float) -> None:
    time.sleep(seconds)  # bench only: give a process time to free or log (bounded)


# ============================================================================ local services

class Service(threading.Thread):
    """A thread-per-connection TCP service on 127.0.0.1 (bounded: 64 connections at once)."""

    def __init__(self, kind: str):
        super().__init__(daemon=True)
        self.kind = kind
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        try:
            if self.kind == "echo":
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    conn.sendall(b)
            elif self.kind == "source":  # 256 MiB then close
                chunk = memoryview(bytes(MiB))
                for _ in range(256):
                    conn.sendall(chunk)
            elif self.kind == "endless":  # zeros until the peer goes (<= 60 s)
                chunk = memoryview(bytes(256 * 1024))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    conn.sendall(chunk)
            elif self.kind == "reply":  # read a line, then 1 MiB, then close
                buf = b""
                while b"\n" not in buf:
                    b = conn.recv(4096)
                    if not b:
                        break
                    buf += b
                time.sleep(0.3)  # the client has shut its write side by now
                conn.sendall(bytes(MiB))
        except OSError:
            pass
        finally:
            conn.close()


# ============================================================================ raw WebSocket / SOCKS

def ws_frame(payload: bytes | memoryview, opcode: int = 2) -> list:
    """A masked client frame with the all-zero mask key (payload unchanged on the wire)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return [head + b"\0\0\0\0", payload]


def ws_open(port: int, path: str, headers: str = "", timeout: float = 5.0) -> tuple[socket.socket | None, str]:
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n").encode())
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            b = s.recv(4096)
            if not b:
                break
            buf += b
    except OSError as e:
        s.close()
        return None, repr(e)
    status = buf.split(b"\r\n", 1)[0].decode("latin-1")
    if " 101 " not in status + " ":
        s.close()
        return None, status
    return s, status


def socks_connect(sport: int, dport: int, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection((HOST, sport), timeout=timeout)
    s.sendall(b"\x05\x01\x00")
    if recv_exact(s, 2) != b"\x05\x00":
        raise OSError("SOCKS greeting refused")
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(HOST) + struct.pack("!H", dport))
    rep = recv_exact(s, 10)
    if rep[1] != 0:
        raise OSError(f"SOCKS reply {rep[1]}")
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise OSError("EOF")
        buf += b
    return buf


def drain(s: socket.socket, limit: int, timeout: float) -> tuple[int, str]:
    """Read until EOF/error/limit/timeout: (bytes, how it ended: EOF, RST, hang, complete)."""
    got = 0
    s.settimeout(timeout)
    try:
        while got < limit:
            b = s.recv(1 << 20)
            if not b:
                return got, "EOF"
            got += len(b)
        return got, "complete"
    except ConnectionResetError:
        return got, "RST"
    except TimeoutError:
        return got, f"hang {timeout:.0f} s"
    except OSError as e:
        return got, type(e).__name__


# ============================================================================ program setups

def start_runner(side: Side, g: bl.ProcGroup, extra: list[str] | None = None) -> tuple[bl.Proc, int]:
    port = bl.free_port()
    p = side.spawn(g, "runner", "tunnel", ["runner", "--host", HOST, "--port", str(port)] + (extra or []))
    wait_port(p, port)
    return p, port


def start_tunnel(side: Side, g: bl.ProcGroup, svc_port: int) -> tuple[bl.Proc, bl.Proc, int]:
    """runner + client + forward to svc_port: (client, runner, local port), echo-independent readiness."""
    runner, rport = start_runner(side, g)
    client = side.spawn(g, "client", "tunnel", ["--runner-url", f"ws://{HOST}:{rport}/", "--container-id", "fb",
                                                 "--reconnect-delay", "1"])
    # the client registers asynchronously; today's forward refuses to start before that
    deadline = time.monotonic() + 20
    registered = False
    while time.monotonic() < deadline and not registered:
        try:
            ws, _status = ws_open(rport, "/ws/forward/fb/1")
            if ws is not None:
                ws.settimeout(2)
                registered = b"CONNECTED" in ws.recv(64)
                ws.close()
        except OSError:
            pass
        if not registered:
            time.sleep(0.1)
    if not registered:
        raise RuntimeError(f"tunnel not registered: {client.log_tail()}")
    lport = bl.free_port()
    fwd = side.spawn(g, "forward", "tunnel", ["forward", "--url", f"ws://{HOST}:{rport}", "-l", str(lport),
                                              "fb", str(svc_port)])
    wait_port(fwd, lport)
    return client, runner, lport


def start_linksocks(side: Side, g: bl.ProcGroup, server_extra: list[str] | None = None,
                    client_extra: list[str] | None = None, with_client: bool = True):
    ws = bl.free_port()
    server = side.spawn(g, "ls-server", "linksocks", ["server", "-H", HOST, "-P", str(ws), "-t", TOKEN,
                                                      "-b", "1048576"] + (server_extra or []))
    wait_port(server, ws)
    if not with_client:
        return server, None, ws, None
    sp = bl.free_port()
    client = side.spawn(g, "ls-client", "linksocks", ["client", "-t", TOKEN, "-u", f"ws://{HOST}:{ws}", "-s", HOST,
                                                      "-p", str(sp), "--direct-mode", "relay-only"]
                        + (client_extra or []))
    wait_port(client, sp, 30)
    return server, client, ws, sp


def ls_messages():
    sys.path.insert(0, os.path.join(bl.REPO, "src"))
    from hatchway.linksocks import protocol  # the wire format is the same in both trees
    return protocol


# ============================================================================ the items

def item7(side: Side, args) -> list[tuple[str, str]]:
    """16 unauthenticated WebSockets, each sending one message of the size limit."""
    out = []
    for prog, path_fmt, size, key in (("LinkSocks server", "/socket", 32 * MiB, "7ls"),
                                      ("tunnel runner (--token)", "/ws/tunnel/u{i}", 64 * MiB - 65536, "7rn")):
        try:
            with bl.ProcGroup() as g:
                if key == "7ls":
                    p, _, port, _ = start_linksocks(side, g, with_client=False)
                else:
                    p, port = start_runner(side, g, ["--token", TOKEN])
                settle(0.5)
                before = rss_of(p.pid)
                payload = memoryview(bytes(size))
                socks: list[socket.socket] = []
                refused = 0
                for i in range(16):
                    s, _status = ws_open(port, path_fmt.format(i=i))
                    if s is None:
                        refused += 1
                    else:
                        socks.append(s)

                def send(s: socket.socket, payload: memoryview = payload) -> None:
                    try:
                        s.settimeout(15)
                        for part in ws_frame(payload):
                            s.sendall(part)
                    except OSError:
                        pass

                ts = [threading.Thread(target=send, args=(s,), daemon=True) for s in socks]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(20)
                settle(1.5)
                capped = p.pid in side.watchdog.capped
                peak = max(side.watchdog.peak.get(p.pid, 0), procstat.status(p.pid)[1] if p.alive() else 0)
                for s in socks:
                    s.close()
                settle(2.0)
                after = rss_of(p.pid) if p.alive() else None
                peak_txt = f"> {mb(args.rss_cap)} (bench cap: killed)" if capped else mb(peak)
                out.append((f"7 {prog}: RSS idle -> peak -> after close (16 x {size / MiB:.0f} MiB, no auth)",
                            f"{mb(before)} -> {peak_txt} -> {mb(after) if after else 'dead'}"
                            + (f"; {refused} refused at handshake" if refused else ""), key))
        except Exception as e:  # noqa: BLE001 - the other rows still run
            out.append((f"7 {prog}", f"bench error: {e}"[:200], key))
    return out


def slowloris(port: int, n: int, partial: bytes) -> list[socket.socket]:
    """n connections that each send a partial request head and stop (non-blocking, <= 10 s)."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    pending = len(socks)
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            try:
                s.send(partial)
            except OSError:
                pass
    sel.close()
    return socks


def real_request(port: int, path: str, timeout: float = 10.0) -> str:
    t0 = time.perf_counter()
    try:
        s = socket.create_connection((HOST, port), timeout=timeout)
        s.settimeout(max(0.1, timeout - (time.perf_counter() - t0)))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        first = s.recv(64)
        s.close()
    except TimeoutError:
        return f"NO: no answer in {timeout:.0f} s"
    except OSError as e:
        return f"NO: {type(e).__name__}"
    dt = (time.perf_counter() - t0) * 1e3
    if not first:
        return f"NO: closed without an answer ({dt:.0f} ms)"
    status = first.split(b"\r\n", 1)[0].decode("latin-1")[9:]
    return f"yes, {dt:.0f} ms ({status})"


def item8(side: Side, args) -> list[tuple[str, str, str]]:
    out = []
    for prog in ("tunnel runner", "LinkSocks server"):
        try:
            with bl.ProcGroup() as g:
                if prog == "tunnel runner":
                    p, port = start_runner(side, g)
                    path = "/ws/forward/x/1"
                else:
                    p, _, port, _ = start_linksocks(side, g, with_client=False)
                    path = "/"
                socks = slowloris(port, args.slowloris, b"GET / HTTP/1.1\r\nHost: a\r\n")
                settle(1.0)
                res = real_request(port, path, 10.0)
                for s in socks:
                    s.close()
                out.append((f"8 {prog}: real client served during {args.slowloris} half-sent requests", res, "8"))
        except Exception as e:  # noqa: BLE001 - the other rows still run
            out.append((f"8 {prog}", f"bench error: {e}"[:200], "8"))
    return out


def item4(side: Side, args, svc: dict) -> list[tuple[str, str, str]]:
    out = []
    cut = 20 * MiB
    for what in ("tunnel: kill -9 client", "LinkSocks: kill -9 server"):
        try:
            with bl.ProcGroup() as g:
                if what.startswith("tunnel"):
                    victim, _, lport = start_tunnel(side, g, svc["source"])
                    s = socket.create_connection((HOST, lport), timeout=10)
                else:
                    victim, _, _, sp = start_linksocks(side, g, client_extra=["--transport-grace", "2s"])
                    s = socks_connect(sp, svc["source"])
                got, how = drain(s, cut, 20)
                if got >= cut:
                    os.kill(victim.pid, signal.SIGKILL)
                    more, how = drain(s, 256 * MiB - got, 30)
                    got += more
                s.close()
                verdict = {"EOF": "clean EOF (looks complete)", "RST": "reset (error)"}.get(how, how)
                out.append((f"4 {what} at 20 MB of a 256 MiB download", f"{verdict} at {got / 1e6:.0f} MB", "4"))
        except Exception as e:  # noqa: BLE001 - the other rows still run
            out.append((f"4 {what}", f"bench error: {e}"[:200], "4"))
    return out


def item5(side: Side, args, svc: dict) -> list[tuple[str, str, str]]:
    with bl.ProcGroup() as g:
        _, _, _, sp = start_linksocks(side, g)
        stalled = socks_connect(sp, svc["endless"])  # never read
        settle(3.0)
        t0 = time.monotonic()
        bound = args.freeze_bound
        res = f"> {bound:.0f} s (no echo)"
        try:
            other = socks_connect(sp, svc["echo"], timeout=bound)
            other.settimeout(max(0.1, bound - (time.monotonic() - t0)))
            other.sendall(b"ping")
            if recv_exact(other, 4) == b"ping":
                dt = time.monotonic() - t0
                res = f"{dt + 3:.1f} s ({dt:.1f} s until another connection's echo, started 3 s into the stall)"
            other.close()
        except TimeoutError:
            pass
        except OSError as e:
            dt = time.monotonic() - t0
            res = f"{dt + 3:.1f} s: the other connection failed after {dt:.1f} s ({e}), no echo"
        stalled.close()
    return [("5 LinkSocks fwd: another connection frozen by one stalled reader", res, "5")]


def item9(side: Side, args) -> list[tuple[str, str, str]]:
    proto = ls_messages()
    with bl.ProcGroup() as g:
        p, _, port, _ = start_linksocks(side, g, with_client=False)
        settle(0.5)
        before = rss_of(p.pid)
        s, status = ws_open(port, "/socket")
        if s is None:
            return [("9 orphan buffer", f"handshake failed: {status}", "9")]
        s.settimeout(10)
        for part in ws_frame(proto.encode(proto.Auth(TOKEN, False, os.urandom(16)))):
            s.sendall(part)
        s.recv(256)  # AuthResponse
        # the baseline keeps up to 1000 messages for each of 4096 unknown channels for 30 s, and a
        # zero-length message costs nothing against its byte budget: one batch = one Data and one
        # Disconnect for each of 4096 channel ids, sent again and again
        ids = [os.urandom(16) for _ in range(4096)]
        frames = []
        for cid in ids:
            frames.extend(ws_frame(proto.encode(proto.Data(proto.TCP, cid, b""))))
            frames.extend(ws_frame(proto.encode(proto.Disconnect(cid))))
        wire = b"".join(frames)
        sent, batch, ended = 0, 2 * len(ids), ""
        t0 = time.monotonic()
        peak = before
        while sent < args.orphan_max and time.monotonic() - t0 < args.orphan_seconds:
            try:
                s.sendall(wire)
            except OSError as e:
                ended = f"; server closed after {sent:,} ({type(e).__name__})"
                break
            sent += batch
            peak = max(peak, rss_of(p.pid))
            if p.pid in side.watchdog.capped or not p.alive():
                break
            if peak > args.orphan_stop:
                break
        settle(1.0)
        peak = max(peak, rss_of(p.pid), side.watchdog.peak.get(p.pid, 0))
        s.close()
        grew = f"{mb(before)} -> {mb(peak)} ({(peak - before) / max(sent, 1):.0f} B per message)"
        if p.pid in side.watchdog.capped or peak > args.orphan_stop:
            grew = f"{mb(before)} -> > {mb(peak)} (stopped)"
    return [(f"9 LinkSocks orphan Data/Disconnect: server RSS ({sent:,} msgs in {time.monotonic() - t0:.0f} s)",
             grew + ended, "9")]


def item10(side: Side, args) -> list[tuple[str, str, str]]:
    out = []
    bad = b"GET /\x00\x01 HTTP/1.1\r\nHost: a\r\nContent-Length: zz\r\n\r\n"
    n = 50
    for prog in ("tunnel runner", "LinkSocks server"):
        try:
            with bl.ProcGroup() as g:
                if prog == "tunnel runner":
                    p, port = start_runner(side, g)
                else:
                    p, _, port, _ = start_linksocks(side, g, with_client=False)
                settle(0.5)
                text0 = p.log_text()
                for _ in range(n):
                    try:
                        s = socket.create_connection((HOST, port), timeout=5)
                        s.sendall(bad)
                        s.recv(4096)
                        s.close()
                    except OSError:
                        pass
                settle(1.0)
                grown = p.log_text()[len(text0):]
                lines = grown.count("\n")
                out.append((f"10 {prog}: log per malformed request (x{n})",
                            f"{lines} lines, {len(grown.encode()):,} B in all: {len(grown.encode()) / n / len(bad):.2f}x"
                            f" the request bytes",
                            "10"))
        except Exception as e:  # noqa: BLE001 - the other rows still run
            out.append((f"10 {prog}", f"bench error: {e}"[:200], "10"))
    return out


class CutProxy(threading.Thread):
    """TCP proxy in front of the LinkSocks server whose live connections can be cut (RST) on demand."""

    def __init__(self, target: int):
        super().__init__(daemon=True)
        self.target = target
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.live: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_once = False
        self.start()

    def run(self) -> None:
        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection((HOST, self.target), timeout=5)
            except OSError:
                a.close()
                continue
            with self.lock:
                self.live += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self.pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def pipe(x: socket.socket, y: socket.socket) -> None:
        x.settimeout(None)
        try:
            while True:
                d = x.recv(256 * 1024)
                if not d:
                    break
                y.sendall(d)
        except OSError:
            pass
        for z in (x, y):
            try:
                z.close()
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            live, self.live = self.live, []
        for z in live:
            try:
                z.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                z.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv
            except OSError:
                pass
            try:
                z.close()
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        self.cut()


def item3(side: Side, args, svc: dict) -> list[tuple[str, str, str]]:
    """WebSocket cut mid-transfer, the client reconnects and Resumes: hole / hang / intact, per round."""
    rows = []
    for kind, rounds, size in (("download", args.resume_rounds, 64 * MiB),
                               ("echo (upload + download)", args.resume_echo_rounds, 16 * MiB)):
        try:
            res = resume_rounds(side, args, svc, kind, rounds, size)
        except Exception as e:  # noqa: BLE001 - the other rows still run
            res = f"bench error: {e}"[:200]
        cut = "8 MB" if kind == "download" else "1/3"
        rows.append((f"3 LinkSocks {kind} cut at {cut} + Resume ({rounds} rounds of {size // MiB} MiB;"
                     f" hang = no byte for {args.hang_after:.0f} s)", res, "3d" if kind == "download" else "3e"))
    return rows


def resume_rounds(side: Side, args, svc: dict, kind: str, rounds: int, size: int) -> str:
    tally = {"intact": 0, "hole": 0, "hang": 0, "short EOF": 0, "reset": 0, "no reconnect": 0}
    for _ in range(rounds):  # a fresh pair per round: a stuck round does not spoil the next
        with bl.ProcGroup() as g:
            _server, _, ws, _ = start_linksocks(side, g, with_client=False)
            proxy = CutProxy(ws)
            sp = bl.free_port()
            client = side.spawn(g, "ls-client", "linksocks", ["client", "-t", TOKEN, "-u",
                                                              f"ws://{HOST}:{proxy.port}", "-s", HOST, "-p", str(sp),
                                                              "--direct-mode", "relay-only"])
            got, intact_so_far, how = 0, True, "EOF"
            writer = None
            try:
                wait_port(client, sp, 30)
                if kind == "download":
                    s = socks_connect(sp, svc["pattern"])
                else:
                    s = socks_connect(sp, svc["echo"])

                    def upload(s: socket.socket = s, proxy: CutProxy = proxy) -> None:
                        sent, step = 0, 251 * 1024
                        try:
                            while sent < size:
                                n = min(step, size - sent)
                                s.sendall(PATTERN[sent % 251:sent % 251 + n])
                                sent += n
                                if sent >= size // 3 and not proxy.cut_once:
                                    proxy.cut_once = True
                                    proxy.cut()
                        except OSError:
                            pass

                    writer = threading.Thread(target=upload, daemon=True)
                s.settimeout(args.hang_after)
                if writer is not None:
                    writer.start()
                while got < size:
                    b = s.recv(1 << 20)
                    if not b:
                        break
                    # the pattern is byte i % 251 at offset i: a hole shifts it
                    if intact_so_far and b != PATTERN[got % 251:got % 251 + len(b)]:
                        intact_so_far = False
                    got += len(b)
                    if kind == "download" and not proxy.cut_once and got >= 8 * MiB:
                        proxy.cut_once = True
                        proxy.cut()
                s.close()
            except TimeoutError:
                how = "hang"
            except OSError:
                how = "reset"
            except RuntimeError:
                how = "no reconnect"
            proxy.close()
            if writer is not None:
                writer.join(5)
            if not intact_so_far:
                tally["hole"] += 1
            elif got == size:
                tally["intact"] += 1
            elif how == "EOF":
                tally["short EOF"] += 1
            else:
                tally[how] += 1
    return ", ".join(f"{v} {k}" for k, v in tally.items() if v)


PATTERN = bytes(i % 251 for i in range(251)) * (4 * MiB // 251 + 2)


class PatternService(Service):
    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        try:
            sent, size, step = 0, 64 * MiB, 251 * 1024
            while sent < size:
                n = min(step, size - sent)
                off = sent % 251
                conn.sendall(PATTERN[off:off + n])
                sent += n
        except OSError:
            pass
        finally:
            conn.close()


def item15(side: Side, args, svc: dict) -> list[tuple[str, str, str]]:
    out = []
    for what in ("tunnel", "LinkSocks"):
        try:
            with bl.ProcGroup() as g:
                if what == "tunnel":
                    _, _, lport = start_tunnel(side, g, svc["reply"])
                    s = socket.create_connection((HOST, lport), timeout=10)
                else:
                    _, _, _, sp = start_linksocks(side, g)
                    s = socks_connect(sp, svc["reply"])
                s.sendall(b"request\n")
                settle(0.1)
                s.shutdown(socket.SHUT_WR)
                got, how = drain(s, MiB + 1, 10)
                s.close()
                out.append((f"15 {what}: send, SHUT_WR, wait for a 1 MiB reply", f"{got:,} of {MiB:,} B ({how})", "15"))
        except Exception as e:  # noqa: BLE001 - the other rows still run
            out.append((f"15 {what}", f"bench error: {e}"[:200], "15"))
    return out


# ============================================================================ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-src", default="/tmp/baseline/src")
    ap.add_argument("--current-src", default=os.path.join(bl.REPO, "src"))
    ap.add_argument("--python", default=sys.executable, help="python that runs both trees")
    ap.add_argument("--only", default=",".join(ITEMS), help="issue items, e.g. 7,8,4")
    ap.add_argument("--rss-cap", type=float, default=1.5e9, help="SIGKILL a server above this RSS (bytes)")
    ap.add_argument("--slowloris", type=int, default=1100)
    ap.add_argument("--freeze-bound", type=float, default=15.0)
    ap.add_argument("--orphan-max", type=int, default=3_900_000, help="orphan messages at most")
    ap.add_argument("--orphan-seconds", type=float, default=25.0)
    ap.add_argument("--orphan-stop", type=float, default=1.0e9, help="stop sending at this server RSS")
    ap.add_argument("--resume-rounds", type=int, default=5)
    ap.add_argument("--resume-echo-rounds", type=int, default=3)
    ap.add_argument("--hang-after", type=float, default=10.0, help="item 3: no byte for this long = hang")
    args = ap.parse_args()
    bl.raise_nofile(8192)
    logdir = tempfile.mkdtemp(prefix="faultbench-")
    wd = Watchdog(int(args.rss_cap))
    wd.start()
    sides = [Side("baseline", args.baseline_src, args.python, logdir, wd),
             Side("now", args.current_src, args.python, logdir, wd)]
    svc = {k: Service(k).port for k in ("echo", "source", "endless", "reply")}
    svc["pattern"] = PatternService("pattern").port
    print(f"faults_bench (issue #6) {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {bl.machine_line()}", flush=True)
    print(f"logs: {logdir}", flush=True)
    rows: list[list[str]] = []
    t_all = time.monotonic()
    for item in [i.strip() for i in args.only.split(",") if i.strip()]:
        fn = {"7": item7, "8": item8, "4": item4, "5": item5, "9": item9, "10": item10, "3": item3,
              "15": item15}[item]
        results = {}
        for side in sides:
            t0 = time.monotonic()
            try:
                res = fn(side, args, svc) if item in ("4", "5", "3", "15") else fn(side, args)
            except Exception as e:  # noqa: BLE001 - one failing item must not stop the table
                res = [(f"{item} (failed)", f"bench error: {e}"[:160], item)]
            results[side.label] = res
            bl.log(f"item {item} {side.label}: {time.monotonic() - t0:.0f} s: "
                   + " | ".join(r[1] for r in res))
        for i, (fig, val, key) in enumerate(results["baseline"]):
            now = results["now"][i][1] if i < len(results["now"]) else "?"
            rows.append([fig, val, now, ISSUE.get(key, "")])
    wd.stopping.set()
    print(bl.table(["figure", "baseline", "hatchway now", "issue's figure"], rows,
                   f"## Issue #6 figures, baseline ({args.baseline_src}) vs now ({args.current_src})"))
    print(f"total {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
