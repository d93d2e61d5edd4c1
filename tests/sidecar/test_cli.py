"""hatchway-sidecar as a process on the direct backend: flags, env, state dir, signal lines (cases 1-15)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import msgspec
import pytest
from scproc import SIDECAR, SidecarProc, free_port

from hatchway.sidecar.direct import DirectScript

FLAGS = ("authkey", "coordserver", "hostname", "port", "statedir", "mode", "statusport", "verbose")


def script(tmp_path: Path, **fields: object) -> tuple[str, Path]:
    record = tmp_path / "join.json"
    path = tmp_path / "direct.json"
    path.write_bytes(msgspec.json.encode(DirectScript(record=str(record), **fields)))  # type: ignore[arg-type]
    return str(path), record


def joined(record: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads(record.read_text())
    return result


def test_usage_and_unknown_flag() -> None:
    helped = subprocess.run([*SIDECAR, "-h"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and helped.stdout == ""
    assert helped.stderr.startswith("Usage of hatchway-sidecar:\n")
    for flag in FLAGS:
        assert f"\n  -{flag}" in helped.stderr
    assert '-hostname string\n    \tHostname in the Tailnet (default "ts-proxy")' in helped.stderr
    bad = subprocess.run([*SIDECAR, "-nosuch"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "flag provided but not defined: -nosuch" in bad.stderr


@pytest.mark.parametrize("form", ["-port P", "-port=P", "--port P", "--port=P"])
async def test_port_flag_forms_listen_on_loopback(form: str, tmp_path: Path) -> None:
    port = free_port()
    args = form.replace("P", str(port)).split()
    async with SidecarProc([*args, "-statedir", str(tmp_path)]) as sc:
        assert await sc.ready() == f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert await sc.terminate() == 0


async def test_unknown_mode_fails_before_joining(tmp_path: Path) -> None:
    config, record = script(tmp_path)
    async with SidecarProc(["-mode", "bogus", "-direct-config", config, "-statedir", str(tmp_path)]) as sc:
        assert await sc.wait() == 1
    assert "@@SIDECAR:ERROR@@ unknown mode: bogus" in sc.lines
    assert not record.exists()  # the control server was never contacted
    assert b"unknown mode: bogus" in sc.stderr


@pytest.mark.parametrize(("env", "flag", "expected"), [
    ({"TS_AUTHKEY": "k1"}, [], "k1"),
    ({"TS_AUTH_KEY": "k2"}, [], "k2"),
    ({"TS_AUTHKEY": "k1", "TS_AUTH_KEY": "k2"}, [], "k1"),
    ({"TS_AUTHKEY": "k1"}, ["-authkey", "k0"], "k0"),
    ({}, [], ""),
])
async def test_auth_key_env_fallback(env: dict[str, str], flag: list[str], expected: str, tmp_path: Path) -> None:
    config, record = script(tmp_path)
    clean = {"TS_AUTHKEY": "", "TS_AUTH_KEY": "", **env}
    async with SidecarProc([*flag, "-port", "0", "-direct-config", config, "-statedir", str(tmp_path)], env=clean) as sc:
        await sc.ready()
        assert joined(record)["auth_key"] == expected
        assert await sc.terminate() == 0


async def test_statedir_created_0700_and_default_is_cwd(tmp_path: Path) -> None:
    config, record = script(tmp_path)
    state = tmp_path / "a" / "state"
    async with SidecarProc(["-port", "0", "-direct-config", config, "-statedir", str(state)]) as sc:
        await sc.ready()
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert joined(record)["statedir"] == str(state)
        await sc.terminate()
    work = tmp_path / "cwd"
    work.mkdir()
    async with SidecarProc(["-port", "0", "-direct-config", config], cwd=str(work)) as sc:
        await sc.ready()
        assert joined(record)["statedir"] == str(work)
        await sc.terminate()


async def test_statedir_failure_is_an_error_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with SidecarProc(["-port", "0", "-statedir", str(blocker / "sub")]) as sc:
        assert await sc.wait() == 1
    errors = [s.detail for s in sc.signals if s.word == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("failed to create state dir: ")


@pytest.mark.parametrize("mode", ["http", "socks5"])
async def test_signal_lines_in_order(mode: str, tmp_path: Path) -> None:
    port, status_port = free_port(), free_port()
    args = ["-port", str(port), "-statusport", str(status_port), "-mode", mode, "-hostname", "me",
            "-statedir", str(tmp_path)]
    async with SidecarProc(args) as sc:
        url = await sc.ready()
        # bound before READY: a connect issued as soon as the line is read succeeds (case 10)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert await sc.terminate() == 0
    label = "HTTP Proxy" if mode == "http" else "SOCKS5 Proxy"
    addr = f"127.0.0.1:{port}"
    from hatchway import __version__

    status_line = f">>> Status API listening on http://127.0.0.1:{status_port}/status"
    assert sc.lines.index(status_line) > sc.lines.index("@@SIDECAR:CONNECTED@@ ips=[100.64.0.1 fd7a:115c:a1e0::1]")
    assert [line for line in sc.lines if line != status_line] == [
        f"Arkitekt Sidecar {__version__}",
        f"@@SIDECAR:STARTING@@ {__version__}",
        ">>> Starting Tailscale Node 'me'...",
        "@@SIDECAR:CONNECTING@@ me",
        ">>> Tailscale is Online!",
        "@@SIDECAR:CONNECTED@@ ips=[100.64.0.1 fd7a:115c:a1e0::1]",
        f">>> {label} listening on {addr}",
        f">>> Configure your apps to use {label}: {addr}",
        f"@@SIDECAR:LISTENING@@ mode={mode} addr={addr}",
        f"@@SIDECAR:READY@@ {mode}://{addr}",
        "@@SIDECAR:SHUTDOWN@@",
    ]
    # both parent styles get exactly the proxy URL (case 12)
    ready_line = next(line for line in sc.lines if line.startswith("@@SIDECAR:READY@@"))
    assert url == ready_line.split(" ", 1)[1] == f"{mode}://{addr}"


@pytest.mark.parametrize("mode", ["http", "socks5"])
async def test_port_in_use_no_ready(mode: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with SidecarProc(["-port", str(port), "-mode", mode, "-statedir", str(tmp_path)]) as sc:
            assert await sc.wait() == 1
    words = [s.word for s in sc.signals]
    assert "READY" not in words and "LISTENING" not in words and words[-1] == "ERROR"
    what = "http server" if mode == "http" else "socks5 server"
    assert sc.signals[-1].detail == f"{what} failed: listen tcp 127.0.0.1:{port}: bind: address already in use"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_on_signal_closes_the_node(sig: int, tmp_path: Path) -> None:
    config, record = script(tmp_path)
    async with SidecarProc(["-port", "0", "-direct-config", config, "-statedir", str(tmp_path)]) as sc:
        await sc.ready()
        assert not Path(str(record) + ".closed").exists()
        assert await sc.terminate(sig) == 0  # within 5 s (terminate's bound)
    assert sc.lines[-1] == "@@SIDECAR:SHUTDOWN@@"
    assert Path(str(record) + ".closed").exists()


async def test_auth_required_then_shutdown(tmp_path: Path) -> None:
    config, record = script(tmp_path, login_url="http://ctl.test/a/abc", login_wait=-1)
    async with SidecarProc(["-port", "0", "-direct-config", config, "-statedir", str(tmp_path)]) as sc:
        assert (await sc.wait_signal("AUTH_REQUIRED")).detail == "http://ctl.test/a/abc"
        assert await sc.terminate() == 0
    assert [s.word for s in sc.signals] == ["STARTING", "CONNECTING", "AUTH_REQUIRED", "SHUTDOWN"]
    assert Path(str(record) + ".closed").exists()


async def test_auth_required_then_timeout(tmp_path: Path) -> None:
    config, _ = script(tmp_path, login_url="http://ctl.test/a/abc", login_wait=0.2)
    async with SidecarProc(["-port", "0", "-direct-config", config, "-statedir", str(tmp_path)]) as sc:
        assert await sc.wait() == 1
    assert [s.word for s in sc.signals] == ["STARTING", "CONNECTING", "AUTH_REQUIRED", "ERROR"]
    assert sc.signals[-1].detail == "tailnet connection failed: context deadline exceeded"


async def test_needs_login_is_an_error(tmp_path: Path) -> None:
    config, _ = script(tmp_path, needs_login=True)
    async with SidecarProc(["-port", "0", "-direct-config", config, "-statedir", str(tmp_path)]) as sc:
        assert await sc.wait() == 1
    assert sc.signals[-1].word == "ERROR"
    assert sc.signals[-1].detail.startswith("tailnet connection failed: needs login")


async def test_start_failure(tmp_path: Path) -> None:
    config, _ = script(tmp_path, start_error="Refused: invalid key")
    async with SidecarProc(["-port", "0", "-direct-config", config, "-statedir", str(tmp_path)]) as sc:
        assert await sc.wait() == 1
    assert sc.lines[-1] == "@@SIDECAR:ERROR@@ tailnet connection failed: Refused: invalid key"
    assert b"tailnet connection failed: Refused: invalid key" in sc.stderr


async def test_lines_reach_the_pipe_unbuffered(tmp_path: Path) -> None:
    """The parent sees READY while the sidecar is still running (stdout is flushed per line, not at exit)."""
    async with SidecarProc(["-port", "0", "-statedir", str(tmp_path)]) as sc:
        await sc.ready()
        assert sc.proc is not None and sc.proc.returncode is None
        await sc.terminate()


async def test_verbose_backend_logs_on_stderr(tmp_path: Path) -> None:
    async with SidecarProc(["-port", "0", "-verbose", "-hostname", "vv", "-statedir", str(tmp_path)]) as sc:
        await sc.ready()
        await sc.terminate()
    assert b"[Tailscale] direct: node 'vv' up (scripted)" in sc.stderr
    async with SidecarProc(["-port", "0", "-hostname", "vv", "-statedir", str(tmp_path)]) as quiet:
        await quiet.ready()
        await quiet.terminate()
    assert b"[Tailscale]" not in quiet.stderr
