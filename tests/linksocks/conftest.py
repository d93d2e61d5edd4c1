"""LinkSocks test fixtures: real peers (PyPI wheels in venvs), targets, processes, engine threads.

The peers come from $HATCHWAY_PEER110 (linksocks 1.10.1 + pywssocks 1.5.1) and
$HATCHWAY_PEER19 (linksocks 1.9.5), or from .venv-peer110 / .venv-peer19 in
the repository, which are created (wheels only) when missing. Never skipped.
"""

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import ls_harness  # noqa: E402


def _peer(env_name: str, default_dir: str, packages: list[str]) -> ls_harness.Peer:
    path = os.environ.get(env_name) or os.path.join(ls_harness.REPO, default_dir)
    return ls_harness.Peer(ls_harness.ensure_peer_venv(path, packages))


@pytest.fixture(scope="session")
def peer110() -> ls_harness.Peer:
    return _peer("HATCHWAY_PEER110", ".venv-peer110", ["linksocks==1.10.1", "pywssocks==1.5.1"])


@pytest.fixture(scope="session")
def peer19() -> ls_harness.Peer:
    return _peer("HATCHWAY_PEER19", ".venv-peer19", ["linksocks==1.9.5"])


@pytest.fixture(scope="session")
def target():
    server = ls_harness.Target()
    yield server
    server.close()


@pytest.fixture
def procs(tmp_path):
    """Start processes with ``procs.start(argv, name)``; all are stopped (by PID) at teardown."""

    class Procs:
        def __init__(self) -> None:
            self.started: list[ls_harness.Proc] = []

        def start(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> ls_harness.Proc:
            proc = ls_harness.Proc(argv, str(tmp_path / f"{name}.log"), env)
            self.started.append(proc)
            return proc

        def hatchway(self, *args: str, name: str = "hatchway", env: dict[str, str] | None = None) -> ls_harness.Proc:
            merged = dict(ls_harness.HATCHWAY_ENV)
            merged.update(env or {})
            return self.start(ls_harness.hatchway_argv(*args), name, merged)

    holder = Procs()
    yield holder
    for proc in reversed(holder.started):
        proc.stop()


@pytest.fixture
def eng():
    with ls_harness.engine() as thread:
        yield thread
