"""hatchway.common.subreaper against the real kernel: in the static executable (built-in
_hatchway_sys, no ctypes there) and in the venv (ctypes).  An orphaned grandchild must come
to the subreaper: its parent PID becomes ours and we reap it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The middle child exits; once we have reaped it the kernel has already reparented the
# grandchild (exit_notify runs before the zombie is reapable), which then tells us its parent.
SCRIPT = r"""
import os, sys
from hatchway.common import subreaper
me = os.getpid()
before = subreaper.is_child_subreaper()
done = subreaper.set_child_subreaper()
go_r, go_w = os.pipe()
rep_r, rep_w = os.pipe()
mid = os.fork()
if mid == 0:
    if os.fork() == 0:
        os.read(go_r, 1)
        os.write(rep_w, str(os.getppid()).encode())
        os._exit(7)
    os._exit(0)
os.waitpid(mid, 0)
os.write(go_w, b"g")
os.close(rep_w)
ppid = int(os.read(rep_r, 32))
_, status = os.wait()
print(before, done, subreaper.is_child_subreaper(), ppid == me, os.waitstatus_to_exitcode(status),
      "_hatchway_sys" in sys.modules, "ctypes" in sys.modules)
"""


def run(python: list[str]) -> list[str]:
    res = subprocess.run([*python, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_venv_becomes_subreaper_through_ctypes() -> None:
    assert run([sys.executable]) == ["False", "True", "True", "True", "7", "False", "True"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_static_executable_becomes_subreaper_through_its_builtin_module(static_binary, tmp_path: Path) -> None:
    python = tmp_path / "python3"  # under a name starting with "python" it is the plain python CLI
    python.symlink_to(static_binary("tunnel"))
    assert run([str(python)]) == ["False", "True", "True", "True", "7", "True", "False"]
