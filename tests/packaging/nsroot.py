"""Empty container roots for the static executable, built with unshare + chroot (no engine).

A root holds only what a test puts in it (the executable, maybe /etc files) plus an
empty ``proc`` directory; it is bind-mounted read-only onto itself inside a new mount
namespace, /proc is mounted, and the program runs chrooted as the given uid. With
``pid=True`` the program is PID 1 of a new PID namespace; with ``net`` it joins the
network namespace at that path (created by :func:`netns`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pkgtest_helpers import require_tool

ENTER = r"""
import json, os, subprocess, sys
root, uid, env = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
argv = sys.argv[4:]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "--bind", root, root], check=True)
subprocess.run(["mount", "-t", "proc", "proc", root + "/proc"], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", root], check=True)
os.chroot(root)
os.chdir("/")
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
os.execve(argv[0], argv, env)
"""


def make_root(base: Path, files: dict[str, bytes | Path], name: str = "root") -> Path:
    """An otherwise empty root: ``files`` maps paths in the root to contents (a Path is
    copied, mode 0755); parents 0755; ``proc`` exists as a mount point. No /tmp."""
    root = base / name
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    (root / "proc").mkdir(mode=0o555)
    for rel, content in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            path.write_bytes(content.read_bytes())
            os.chmod(path, 0o755)
        else:
            path.write_bytes(content)
            os.chmod(path, 0o644)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir() and p.name != "proc"]]:
        os.chmod(d, 0o755)
    return root


def command(root: Path, uid: int, argv: list[str], *, env: dict | None = None, pid: bool = True,
            netns: str | None = None) -> list[str]:
    if os.geteuid() != 0:
        pytest.fail("the empty-root tests need root (unshare, chroot, setuid)")
    cmd = []
    if netns:
        cmd += [require_tool("nsenter"), f"--net={netns}"]
    cmd += [require_tool("unshare"), "--mount", *(["--pid", "--fork"] if pid else []),
            sys.executable, "-c", ENTER, str(root), str(uid), json.dumps(env or {"PATH": "/app"}), *argv]
    return cmd


def run(root: Path, uid: int, argv: list[str], *, timeout=90, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(command(root, uid, argv, **kw), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except FileNotFoundError:
        return out
    for task in tasks:
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return out


def proc_state(pid: int) -> str | None:
    """The State letter of ``pid`` (R, S, Z, ...), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None
