"""Bounded subprocesses without pipes (the browser opener): posix_spawn + pidfd, and the asyncio fallback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from hatchway.hostproxy import subproc
from hatchway.hostproxy.subproc import failure_text, run_quiet
from helpers import wait_until


@pytest.fixture(params=["default", "asyncio"])
def path(request: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``default``: posix_spawn + pidfd where the kernel has pidfds (Linux 5.3+), else the fallback."""
    if request.param == "asyncio":
        monkeypatch.setattr(subproc, "_pidfd_usable", False)
    yield request.param


def _state(pid: int) -> str:
    """The process state letter ("Z": zombie), "" when no process has this PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def _reaped(pid: int) -> bool:
    return _state(pid) == ""


def _dead(pid: int) -> bool:  # another parent's child: reaping it is not ours to do
    return _state(pid) in ("", "Z", "X")


async def test_exit_codes_and_go_error_text(path: str) -> None:
    assert await run_quiet(["true"]) == 0
    code = await run_quiet(["sh", "-c", "exit 3"])
    assert (code, failure_text(code)) == (3, "exit status 3")
    code = await run_quiet(["sh", "-c", "kill -TERM $$"])
    assert (code, failure_text(code)) == (-15, "signal: terminated")  # Go's text


async def test_missing_command_raises_oserror(path: str) -> None:
    with pytest.raises(FileNotFoundError):
        await run_quiet(["/nonexistent/hatchway-no-such-browser", "https://example.com/"])


async def test_stdio_is_the_null_device_and_no_daemon_fd_leaks(path: str, tmp_path: Any) -> None:
    out = tmp_path / "fds"
    script = ("import os, sys, json; fds = {fd: os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')"
              " if os.path.exists(f'/proc/self/fd/{fd}')}; open(sys.argv[1], 'w').write(json.dumps(fds))")
    assert await run_quiet([sys.executable, "-S", "-c", script, str(out)]) == 0
    fds = json.loads(out.read_text())
    assert [fds["0"], fds["1"], fds["2"]] == [os.devnull] * 3, fds
    ours = {fd for fd in map(int, os.listdir("/proc/self/fd")) if fd > 2 and _inheritable(fd)}  # from our own parent
    # (uvloop's own DEVNULL leaves its /dev/null descriptors open in the child: harmless, not the daemon's)
    leaked = {fd: target for fd, target in fds.items() if int(fd) > 2 and int(fd) not in ours and target != os.devnull}
    assert not leaked, fds  # the daemon's sockets, pidfds and pipes are close-on-exec


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


async def test_timeout_kills_the_whole_group_and_reaps(path: str, tmp_path: Any) -> None:
    pids = tmp_path / "pids"
    argv = ["sh", "-c", 'sleep 600 & echo $$ $! > "$1"; wait', "sh", str(pids)]
    assert await run_quiet(argv, timeout=0.5) is None
    shell, grandchild = (int(p) for p in pids.read_text().split())
    assert _reaped(shell)  # our child: reaped before run_quiet returned
    await wait_until(lambda: _dead(grandchild), what="the group's other process killed")


async def test_cancelled_caller_kills_and_reaps_the_child(path: str, tmp_path: Any) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(run_quiet(["sh", "-c", 'echo $$ > "$1"; exec sleep 600', "sh", str(pidfile)],
                                           timeout=60))
    await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the child started")
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: _reaped(pid), what="the cancelled child killed and reaped")


async def test_command_found_on_path_again_when_it_moves(path: str, tmp_path: Any) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    out = tmp_path / "out"
    env = {"PATH": f"{first}:{second}"}

    def install(where: Any, text: str) -> None:
        script = where / "hatchway-test-opener"
        script.write_text(f'#!/bin/sh\necho {text} > "$1"\n')
        script.chmod(0o755)

    install(first, "first")
    for _ in range(2):  # the second run uses the path found by the first
        assert await run_quiet(["hatchway-test-opener", str(out)], env=env) == 0
        assert out.read_text() == "first\n"
    (first / "hatchway-test-opener").unlink()
    install(second, "second")
    assert await run_quiet(["hatchway-test-opener", str(out)], env=env) == 0
    assert out.read_text() == "second\n"
    (second / "hatchway-test-opener").unlink()
    with pytest.raises(FileNotFoundError):
        await run_quiet(["hatchway-test-opener", str(out)], env=env)
