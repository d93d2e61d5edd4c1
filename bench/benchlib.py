"""Shared helpers for the benches: process control by PID, ports, readiness, tables.

Stdlib only.  Every wait is bounded; processes are stopped by their own PID
(SIGTERM, then SIGKILL after a grace period) and always reaped.
"""

from __future__ import annotations

import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

import procstat

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
SRC = os.path.join(REPO, "src")


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Is something listening on TCP ``port``? Read from /proc/net, no connection made."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hatchway_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def split_cmd(cmd: str | list[str]) -> list[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


class Proc:
    """A child process started by the bench, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], logdir: str, env: dict | None = None,
                 cwd: str | None = None):
        self.name = name
        self.argv = argv
        safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name)
        self.logpath = os.path.join(logdir, f"{safe}.log")
        self._log = open(self.logpath, "wb")
        self.t_spawn = time.perf_counter()
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, cwd=cwd or REPO)
        self.pid = self.popen.pid
        self.stat = procstat.ProcStat(self.pid, tree=True, name=name)

    def sample(self) -> procstat.Sample:
        return self.stat.sample()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_line(self, needle: str, timeout: float) -> bool:
        """Wait until needle appears in the output; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            if not self.alive():
                return needle in self.log_text()
            time.sleep(0.02)
        return False

    def stop(self, grace: float = 1.0) -> int | None:
        """SIGTERM this PID (and the descendants it started), SIGKILL after grace, reap."""
        if self.popen.poll() is None:
            family = procstat.tree(self.pid)
            for pid in family:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            for pid in family:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()
        return self.popen.returncode


class ProcGroup:
    """Processes stopped together (reverse start order) on exit or error."""

    def __init__(self):
        self.procs: list[Proc] = []

    def add(self, p: Proc) -> Proc:
        self.procs.append(p)
        return p

    def stop_all(self, grace: float = 1.0) -> None:
        while self.procs:
            self.procs.pop().stop(grace)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()


# ---------------------------------------------------------------- statistics and formatting

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, p: float):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def fnum(x, nd: int = 1, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 100 and nd > 0:
        nd = 0
    return f"{x:,.{nd}f}{unit}"


def ratio(a, b, nd: int = 2) -> str:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or b == 0:
        return "–"
    return f"{a / b:.{nd}f}×"


def table(headers: list[str], rows: list[list], title: str = "") -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in cells) for i in range(len(headers))]
    out = []
    if title:
        out.append(title)
    def line(r):
        return "| " + " | ".join((r[i] if i < len(r) else "").ljust(widths[i]) for i in range(len(headers))) + " |"
    out.append(line(cells[0]))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        out.append(line(r))
    return "\n".join(out)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_line() -> str:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0, 0, 0)
    return (f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, "
            f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
