"""Helpers shared by the packaging tests (imported by tests/packaging/conftest.py,
which puts this directory on sys.path: pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
OCI_TOOL = REPO / "packaging" / "oci_image.py"
PROGRAMS: dict = json.loads((REPO / "packaging" / "programs.json").read_text())["programs"]
PROGRAM_NAMES = sorted(PROGRAMS)
# programs in the musl static build (also in the multi-call dist/hatchway); a program with "libc": "glibc" (sidecar:
# arkitekt-mesh is a glibc extension) is the same build against glibc, started by build/static/launcher.c from memfds
STATIC_PROGRAM_NAMES = sorted(p for p in PROGRAMS if PROGRAMS[p].get("libc", "musl") == "musl")
GLIBC_PROGRAM_NAMES = sorted(set(PROGRAMS) - set(STATIC_PROGRAM_NAMES))
# one /proc/net reader for the tests and the benches (bench/benchlib.py, stdlib only)
if str(REPO / "bench") not in sys.path:
    sys.path.append(str(REPO / "bench"))  # appended: nothing of the tests' own is shadowed
from benchlib import listening  # noqa: E402,F401  (re-exported for the tests)

VERSION: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def require_tool(name: str, *candidates: str) -> str:
    """Path of an external tool the tests need; build/test installs them, so absence is a failure."""
    for cand in candidates:
        if os.access(cand, os.X_OK):
            return cand
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (build/test installs it with apt-get)")
    return path


def run(cmd, *, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd!r} exited {proc.returncode}\nstdout: {proc.stdout[-4000:]!r}\nstderr: {proc.stderr[-4000:]!r}"
        )
    return proc


def run_oci_tool(args, *, epoch: int | None = 1700000000, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    return run([sys.executable, str(OCI_TOOL), *map(str, args)], env=env, timeout=timeout)


def source_date_epoch() -> int:
    """The epoch build/release uses: SOURCE_DATE_EPOCH, else the commit time of HEAD."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"]).stdout.decode().strip()
    return int(out)


def wait_for(cond, what: str, timeout: float = 60.0, alive=()) -> object:
    """Poll ``cond`` until it returns something truthy; each ``alive`` check fails the test if a
    watched process has exited meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        for check in alive:
            check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def exited_check(proc: subprocess.Popen, name: str):
    """An ``alive`` check for :func:`wait_for`: fail when ``proc`` has exited."""

    def check() -> None:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited {proc.returncode}")

    return check
