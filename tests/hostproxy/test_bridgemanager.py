"""Bridge processes: PID files, idempotent ensure, stop and stop-all (cases 59-63)."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from hatchway.hostproxy.bridgemanager import BridgeManager
from hatchway.hostproxy.manager import ManagerError
from hatchway.hostproxy.pidfile import is_alive

# stands in for `hatchway-hostproxy bridge --container C --pid-file P`: writes its PID file, waits for SIGTERM
FAKE_BRIDGE = """
import os, signal, sys, time
args = sys.argv[1:]
if "--never-ready" in os.environ.get("FAKE_MODE", ""):
    signal.pause()
path = args[args.index("--pid-file") + 1]
with open(path + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\\n")
os.replace(path + ".tmp", path)
signal.pause()
"""


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


async def test_ensure_stop_stop_all(tmp_path: Any) -> None:
    manager = BridgeManager(str(tmp_path), command=[sys.executable, "-c", FAKE_BRIDGE, "bridge-fake"])
    pid = await manager.ensure_bridge("ctr1")
    assert is_alive(pid) and open(manager.pid_file("ctr1")).read().strip() == str(pid)
    assert await manager.ensure_bridge("ctr1") == pid  # tracked: idempotent
    fresh = BridgeManager(str(tmp_path), command=manager.command)
    assert await fresh.ensure_bridge("ctr1") == pid  # found through its PID file
    other = await manager.ensure_bridge("ctr2", gpg=True)
    manager.stop_bridge("ctr1")
    reap(pid)
    assert not os.path.exists(manager.pid_file("ctr1")) and not is_alive(pid)
    manager.stop_all()
    reap(other)
    assert not os.path.exists(manager.pid_file("ctr2")) and not is_alive(other)
    manager.stop_bridge("ctr1")  # twice is safe


async def test_pid_file_wait_times_out(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "--never-ready")
    manager = BridgeManager(str(tmp_path), command=[sys.executable, "-c", FAKE_BRIDGE], spawn_wait=0.5)
    with pytest.raises(ManagerError, match="timeout"):
        await manager.ensure_bridge("ctr")


def test_a_foreign_pid_is_not_signalled(tmp_path: Any) -> None:
    import subprocess

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        manager = BridgeManager(str(tmp_path))
        with open(manager.pid_file("ctr"), "w") as f:
            f.write(str(sleeper.pid))
        manager.stop_bridge("ctr")
        assert sleeper.poll() is None and not os.path.exists(manager.pid_file("ctr"))
    finally:
        sleeper.kill()
        sleeper.wait()
