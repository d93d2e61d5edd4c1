"""Exit codes of the built executables (issue #7): every exit-code case of each program,
run against dist/hatchway-<prog> and, for parity, against the venv's console script.
The packaged entry points must return main()'s value as the process exit code."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pkgtest_helpers import exited_check, wait_for

VENV_BIN = Path(sys.executable).parent
CLOSED = "{closed}"  # replaced by ws://127.0.0.1:<a bound, not listening port>: connection refused

# (program, args, extra environment, expected exit code, what the case is): the table in
# the programs' --help "Exit status" sections (clap conventions for the tunnel, cobra for linksocks)
CASES = [
    ("tunnel", ["--version"], {}, 0, "--version"),
    ("tunnel", ["-V"], {}, 0, "-V"),
    ("tunnel", ["--help"], {}, 0, "--help"),
    ("tunnel", ["runner", "--help"], {}, 0, "runner --help"),
    ("tunnel", [], {}, 2, "usage error: --runner-url/--container-id missing"),
    ("tunnel", ["--bogus-flag"], {}, 2, "usage error: unknown flag"),
    ("tunnel", ["forward"], {}, 2, "usage error: forward without its arguments"),
    ("tunnel", ["-r", "ws://127.0.0.1:1", "-c", "x"], {"MAX_RECONNECT": "abc"}, 2, "usage error: bad env value"),
    ("tunnel", ["-r", CLOSED, "-c", "x", "--max-reconnect", "2", "--reconnect-delay", "0"], {}, 1,
     "gave up after --max-reconnect"),
    ("tunnel", ["-r", "ws://127.0.0.1:99999", "-c", "x", "--max-reconnect", "1", "--reconnect-delay", "0"], {}, 1,
     "unparsable runner URL"),
    ("tunnel", ["forward", "1", "2", "--url", CLOSED], {}, 1, "forward: runner refused"),
    ("linksocks", [], {}, 0, "no arguments: help"),
    ("linksocks", ["version"], {}, 0, "version"),
    ("linksocks", ["--version"], {}, 0, "--version"),
    ("linksocks", ["--help"], {}, 0, "--help"),
    ("linksocks", ["help", "server"], {}, 0, "help server"),
    ("linksocks", ["completion", "bash"], {}, 0, "completion"),
    ("linksocks", ["server", "--bogus"], {}, 1, "unknown flag"),
    ("linksocks", ["server", "-P", "abc"], {}, 1, "bad int"),
    ("linksocks", ["bogus"], {}, 1, "unknown command"),
    ("linksocks", ["client", "--transport-grace", "30"], {}, 1, "bad duration"),
    ("linksocks", ["server"], {"LINKSOCKS_WEBSOCKET_PORT": "abc"}, 1, "bad env of the running sub-command"),
    ("linksocks", ["client", "--help"], {"LINKSOCKS_WEBSOCKET_PORT": "abc"}, 0, "bad env of another sub-command"),
    ("linksocks", ["server", "-k", "key", "--access-rule", "1.2.3.4:80"], {}, 1, "-k with --access-rule"),
    ("linksocks", ["client", "-R", "-t", "t", "-u", CLOSED, "-p", "0"], {}, 1, "client -R cannot connect"),
]


@pytest.fixture
def closed_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused at once
    yield f"ws://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def _run(exe: Path | str, args: list[str], env: dict, closed: str) -> subprocess.CompletedProcess:
    argv = [str(exe), *[closed if a == CLOSED else a for a in args]]
    return subprocess.run(argv, capture_output=True, timeout=90, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", **env})


@pytest.mark.parametrize("prog,args,env,code,what", CASES, ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_exit_code_of_built_executable(static_binary, closed_url, prog, args, env, code, what):
    venv = _run(VENV_BIN / f"hatchway-{prog}", args, env, closed_url)
    built = _run(static_binary(prog), args, env, closed_url)
    assert venv.returncode == code, f"venv hatchway-{prog} {args}: {venv.returncode}\n{venv.stderr[-2000:]!r}"
    assert built.returncode == code, (
        f"dist/hatchway-{prog} {args} ({what}) exited {built.returncode}, expected {code}\n"
        f"stderr: {built.stderr[-2000:]!r}")


SERVE = {
    "tunnel": ["runner", "--host", "127.0.0.1", "--port", "{port}"],
    "linksocks": ["server", "-H", "127.0.0.1", "-P", "{port}", "-t", "tok"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("prog", sorted(SERVE))
def test_sigterm_exits_zero_and_busy_port_exits_one(static_binary, prog):
    """A server stopped by SIGTERM exits 0; one that cannot listen exits 1."""
    from pkgtest_helpers import listening

    port = _free_port()
    args = [a.replace("{port}", str(port)) for a in SERVE[prog]]
    proc = subprocess.Popen([str(static_binary(prog)), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: listening(port), f"hatchway-{prog} listening on {port}",
                 alive=[exited_check(proc, f"hatchway-{prog}")])
        busy = subprocess.run([str(static_binary(prog)), *args], capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert busy.returncode == 1, f"second server on a busy port exited {busy.returncode}: {busy.stderr!r}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
