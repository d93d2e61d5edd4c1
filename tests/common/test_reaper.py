"""The PID-1 reaper: registered children get their status, orphans are reaped, nothing is stolen.

The unit tests drive the bookkeeping with a scripted waitpid; the namespace test
runs a real program as PID 1 of a new PID namespace (unshare, as root) with a
real orphaned grandchild.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hatchway.common.reaper import Reaper

SRC = str(Path(__file__).resolve().parents[2] / "src")


class ScriptedWaitpid:
    def __init__(self, *statuses):
        self.statuses = list(statuses)

    def __call__(self, pid, options):
        assert (pid, options) == (-1, os.WNOHANG)
        if not self.statuses:
            raise ChildProcessError
        return self.statuses.pop(0)


def status(code=0, signum=None):
    return signum if signum is not None else code << 8


def test_registered_child_gets_its_code_and_strangers_are_kept_then_discarded():
    waitpid = ScriptedWaitpid((10, status(3)), (11, status(signum=9)), (12, status(0)), (0, 0))
    reaper = Reaper(keep=1, waitpid=waitpid)
    got, strangers = [], []
    reaper.watch(10, got.append)
    reaper.on_stranger(lambda pid, code: strangers.append((pid, code)))
    reaper.reap()
    assert got == [3]
    assert strangers == [(11, -9), (12, 0)]
    assert (reaper.reaped, reaper.discarded) == (3, 1)  # 11 dropped when 12 came (keep=1)


def test_a_child_registered_after_it_was_reaped_still_gets_its_status():
    reaper = Reaper(waitpid=ScriptedWaitpid((20, status(5))))
    reaper.reap()
    got = []
    reaper.watch(20, got.append)
    assert got == [5]


def test_no_children_is_not_an_error():
    Reaper(waitpid=ScriptedWaitpid()).reap()


async def test_wait_with_real_children():
    """Two real children: one waited through the reaper, one nobody asked about; both are reaped."""
    reaper = Reaper()
    waited = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 4"], os.environ)
    stranger = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 0"], os.environ)
    import asyncio

    seen = asyncio.Event()
    reaper.on_stranger(lambda pid, code: seen.set() if pid == stranger else None)
    loop = asyncio.get_running_loop()
    reaper.install(loop)
    try:
        assert await asyncio.wait_for(reaper.wait(waited), 10) == 4
        await asyncio.wait_for(seen.wait(), 10)
    finally:
        reaper.uninstall(loop)
    with pytest.raises(ChildProcessError):
        os.waitpid(stranger, os.WNOHANG)


PID1 = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys
    from hatchway.common import lifecycle
    from hatchway.common.reaper import Reaper

    reaper = Reaper()

    def zombies():
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    found.append(int(name))
        return found

    async def main():
        orphan_gone = asyncio.Event()
        orphans = []
        def stranger(pid, code):
            orphans.append([pid, code])
            orphan_gone.set()
        reaper.on_stranger(stranger)
        # A child that leaves a grandchild behind, blocked on a pipe we hold: once the child has
        # exited, the grandchild is an orphan of PID 1 (us); closing the pipe lets it exit (9).
        r, w = os.pipe()
        parent = os.posix_spawn("/bin/sh", ["sh", "-c", "(read line <&3; exit 9) & exit 6"], os.environ,
                                file_actions=[(os.POSIX_SPAWN_DUP2, r, 3)])
        os.close(r)
        own = await reaper.wait(parent)
        os.close(w)
        await orphan_gone.wait()
        print(json.dumps({"pid": os.getpid(), "own": own, "orphans": orphans, "zombies": zombies()}), flush=True)
        lifecycle.announce_ready("pid1")
        await asyncio.Event().wait()

    sys.exit(lifecycle.run(main, reaper=reaper))
    """
)


def test_pid1_in_a_new_pid_namespace_reaps_orphans_and_exits_0_on_sigterm(tmp_path):
    script = tmp_path / "pid1.py"
    script.write_text(PID1)
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(script)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=SRC),
    )
    watchdog = threading.Timer(60, proc.kill)  # a hang fails the test instead of the suite
    watchdog.start()
    try:
        report = json.loads(proc.stdout.readline())
        assert proc.stderr.readline().startswith("READY pid1")
        assert report["pid"] == 1
        assert report["own"] == 6  # a registered child: its status is not stolen
        assert [code for _, code in report["orphans"]] == [9]  # the orphan was reaped by us
        assert report["zombies"] == []
        inner = _child_of(proc.pid)
        os.kill(inner, signal.SIGTERM)  # PID 1 has a handler, so the signal is delivered
        assert proc.wait(timeout=15) == 0
    finally:
        watchdog.cancel()
        watchdog.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _child_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return int(f.read().split()[0])
