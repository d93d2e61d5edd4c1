"""Per-process CPU and memory accounting from procfs (bench helper, stdlib only).

CPU seconds = (utime + stime) from ``/proc/PID/stat`` / ``CLK_TCK``.
Memory = ``VmRSS`` / ``VmHWM`` and ``Threads`` from ``/proc/PID/status``.

With ``tree=True`` the figures are summed over the process and all its
descendants, found by following the ``children`` list of every task under
``/proc/PID/task/`` (a PyInstaller/staticx executable is a chain of 2-3
processes; the interesting one is the last).  VmHWM of a tree is the sum of
the per-process peaks, an upper bound of the tree's real peak.

Usage as a library::

    p = ProcStat(pid, tree=True)
    before = p.sample()
    ...
    after = p.sample()
    cpu = after.cpu - before.cpu

Usage from the shell: ``python3 bench/procstat.py PID [--tree]`` prints one line.
"""

from __future__ import annotations

import dataclasses
import os
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Sample:
    cpu: float  # CPU seconds (user + system)
    rss: int  # bytes (VmRSS)
    hwm: int  # bytes (VmHWM, peak RSS)
    threads: int
    nprocs: int = 1

    @property
    def rss_mb(self) -> float:
        return self.rss / 1e6

    @property
    def hwm_mb(self) -> float:
        return self.hwm / 1e6

    def __sub__(self, other: "Sample") -> "Sample":
        return Sample(self.cpu - other.cpu, self.rss - other.rss, self.hwm - other.hwm,
                      self.threads - other.threads, self.nprocs)


ZERO = Sample(0.0, 0, 0, 0, 0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status(pid: int) -> tuple[int, int, int]:
    """(VmRSS bytes, VmHWM bytes, Threads) of one process; zeros if it is gone."""
    rss = hwm = threads = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith(b"Threads:"):
                    threads = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm, threads


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants (breadth first)."""
    seen = [pid]
    i = 0
    while i < len(seen) and len(seen) < 10000:
        for c in children(seen[i]):
            if c not in seen:
                seen.append(c)
        i += 1
    return seen


def sample(pid: int, tree_mode: bool = False) -> Sample:
    pids = tree(pid) if tree_mode else [pid]
    cpu = 0.0
    rss = hwm = threads = 0
    n = 0
    for p in pids:
        r, h, t = status(p)
        if t == 0:
            continue
        n += 1
        cpu += cpu_seconds(p)
        rss += r
        hwm += h
        threads += t
    return Sample(cpu, rss, hwm, threads, n)


class ProcStat:
    """A sampler bound to one PID (optionally its whole tree)."""

    def __init__(self, pid: int, tree: bool = False, name: str = ""):
        self.pid = pid
        self.tree = tree
        self.name = name or str(pid)

    def sample(self) -> Sample:
        return sample(self.pid, self.tree)

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}/stat")


def self_sample() -> Sample:
    """The calling process (the harness itself)."""
    return sample(os.getpid())


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    pid = int(argv[0])
    s = sample(pid, "--tree" in argv)
    print(f"pid={pid} procs={s.nprocs} cpu={s.cpu:.2f}s rss={s.rss_mb:.1f}MB hwm={s.hwm_mb:.1f}MB "
          f"threads={s.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
