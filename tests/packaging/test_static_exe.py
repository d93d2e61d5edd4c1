"""The static executables (issue #7) as a user runs them: one process that writes nothing,
in an empty read-only root with no /tmp as uid 65532; PID 1 that reaps orphans and exits 0
on SIGTERM; nothing left after SIGKILL; the multi-call `hatchway`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import nsroot
import pytest
from pkgtest_helpers import STATIC_PROGRAM_NAMES, VERSION, exited_check, listening, require_tool, wait_for

SERVE = {
    "tunnel": ["runner", "--host", "127.0.0.1", "--port", "{port}"],
    "linksocks": ["server", "-H", "127.0.0.1", "-P", "{port}", "-t", "tok"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_args(prog: str, port: int) -> list[str]:
    return [a.replace("{port}", str(port)) for a in SERVE[prog]]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def exe_processes(path: Path) -> list[int]:
    """PIDs of every process running the executable at ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "exe") == str(path):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.parametrize("prog", STATIC_PROGRAM_NAMES)
def test_version_in_empty_read_only_root_without_tmp_as_nonroot(prog, static_binary, tmp_path):
    root = nsroot.make_root(tmp_path, {f"app/{prog}": static_binary(prog)})
    res = nsroot.run(root, 65532, [f"/app/{prog}", "--version"])
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().startswith(f"hatchway-{prog} ") and VERSION in res.stdout.decode()
    assert sorted(p.name for p in root.iterdir()) == ["app", "proc"]


@pytest.mark.parametrize("prog", sorted(SERVE))
def test_server_as_pid1_in_empty_read_only_root_is_one_process_and_exits_0_on_sigterm(
        prog, static_binary, tmp_path):
    root = nsroot.make_root(tmp_path, {f"app/{prog}": static_binary(prog)})
    port = free_port()
    unshare = subprocess.Popen(nsroot.command(root, 65532, [f"/app/{prog}", *serve_args(prog, port)]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: listening(port), f"hatchway-{prog} listening in the empty root",
                 alive=[exited_check(unshare, "unshare")])
        (pid1,) = nsroot.children(unshare.pid)
        assert nsroot.children(pid1) == [], "the program must run as one process"
        status = Path(f"/proc/{pid1}/status").read_text()
        nspid = [ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")]
        assert nspid and nspid[0][-1] == "1", f"not PID 1 of its namespace: {nspid}"
        assert [ln.split()[1] for ln in status.splitlines() if ln.startswith("Uid:")] == ["65532"]
        assert os.readlink(f"/proc/{pid1}/root") == str(root)
        os.kill(pid1, signal.SIGTERM)
        assert unshare.wait(timeout=30) == 0, unshare.stderr.read()[-3000:]
        assert not listening(port)
    finally:
        stop(unshare)
        unshare.stderr.close()


@pytest.mark.parametrize("prog", sorted(SERVE))
def test_pid1_reaps_orphans(prog, static_binary, tmp_path):
    """An orphan in the program's PID namespace is re-parented to the program (PID 1); when it
    dies, the program reaps it: no zombie stays."""
    nsenter = require_tool("nsenter")
    sh = require_tool("sh")
    root = nsroot.make_root(tmp_path, {f"app/{prog}": static_binary(prog)})
    port = free_port()
    unshare = subprocess.Popen(nsroot.command(root, 65532, [f"/app/{prog}", *serve_args(prog, port)]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: listening(port), f"hatchway-{prog} listening", alive=[exited_check(unshare, "unshare")])
        (pid1,) = nsroot.children(unshare.pid)
        # sh runs in the program's PID namespace (its parent, nsenter, outside it), starts
        # `sleep` and exits: the sleep is orphaned inside the namespace, so its init adopts it.
        for _ in range(3):
            subprocess.run([nsenter, f"--target={pid1}", "--pid", "--", sh, "-c", "sleep 600 >/dev/null 2>&1 &"],
                           check=True, timeout=30, stdin=subprocess.DEVNULL)
        orphans = wait_for(lambda: nsroot.children(pid1) if len(nsroot.children(pid1)) == 3 else None,
                           "three orphans adopted by PID 1")
        for orphan in orphans:
            assert nsroot.proc_state(orphan) in ("S", "R"), orphan
            os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: all(nsroot.proc_state(o) is None for o in orphans),
                 f"orphans {orphans} reaped (states now {[nsroot.proc_state(o) for o in orphans]})", timeout=20)
        assert nsroot.children(pid1) == []
        os.kill(pid1, signal.SIGTERM)
        assert unshare.wait(timeout=30) == 0, unshare.stderr.read()[-3000:]
    finally:
        stop(unshare)
        unshare.stderr.close()


@pytest.mark.parametrize("prog", sorted(SERVE))
def test_sigkill_leaves_no_process_and_frees_the_port(prog, static_binary, tmp_path):
    exe = tmp_path / f"hatchway-{prog}"
    exe.write_bytes(static_binary(prog).read_bytes())
    exe.chmod(0o755)
    port = free_port()
    proc = subprocess.Popen([str(exe), *serve_args(prog, port)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), f"hatchway-{prog} listening", alive=[exited_check(proc, prog)])
        assert exe_processes(exe) == [proc.pid]
        assert nsroot.children(proc.pid) == []
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert exe_processes(exe) == []
        assert not listening(port)
        # the port is free: a new server binds it at once
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    finally:
        stop(proc)


# ------------------------------------------------------------------ multi-call


def test_multicall_runs_each_program_by_first_argument(multicall_binary):
    for prog in STATIC_PROGRAM_NAMES:
        res = subprocess.run([str(multicall_binary), prog, "--version"], capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode().startswith(f"hatchway-{prog} ")
        res = subprocess.run([str(multicall_binary), prog, "--help"], capture_output=True, timeout=60)
        out = res.stdout.decode() + res.stderr.decode()
        assert res.returncode == 0 and out.startswith((f"usage: hatchway-{prog}", f"Usage of hatchway-{prog}"))


def test_multicall_runs_each_program_by_the_name_it_is_called_under(multicall_binary, tmp_path):
    for prog in STATIC_PROGRAM_NAMES:
        link = tmp_path / f"hatchway-{prog}"
        link.symlink_to(multicall_binary)
        res = subprocess.run([str(link), "--version"], capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode().startswith(f"hatchway-{prog} ")


def test_multicall_without_a_program_is_a_usage_error(multicall_binary):
    res = subprocess.run([str(multicall_binary)], capture_output=True, timeout=60)
    assert res.returncode == 2
    assert b"usage: hatchway PROGRAM" in res.stderr and all(p.encode() in res.stderr for p in STATIC_PROGRAM_NAMES)
    res = subprocess.run([str(multicall_binary), "no-such-program"], capture_output=True, timeout=60)
    assert res.returncode == 2 and b"unknown program 'no-such-program'" in res.stderr
    res = subprocess.run([str(multicall_binary), "--help"], capture_output=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith(b"usage: hatchway PROGRAM")


def test_program_file_keeps_its_program_when_renamed(static_binary, tmp_path):
    """dist/hatchway-<prog> renamed (Dockerfile.scratch's /app/entry) still runs <prog>."""
    for prog in STATIC_PROGRAM_NAMES:
        entry = tmp_path / prog / "entry"
        entry.parent.mkdir()
        entry.write_bytes(static_binary(prog).read_bytes())
        entry.chmod(0o755)
        res = subprocess.run([str(entry), "--version"], capture_output=True, timeout=60)
        assert res.returncode == 0 and res.stdout.decode().startswith(f"hatchway-{prog} "), res


def test_program_files_differ_only_by_their_default_program(static_binary, multicall_binary):
    files = [multicall_binary.read_bytes(), *(static_binary(p).read_bytes() for p in STATIC_PROGRAM_NAMES)]
    assert len({len(f) for f in files}) == 1
    marker = b"@@HATCHWAY_DEFAULT_PROGRAM@@="
    at = files[0].index(marker)
    for f in files[1:]:
        assert f[:at] == files[0][:at] and f[at + 64:] == files[0][at + 64:]
