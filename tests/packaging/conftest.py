"""Shared fixtures of the packaging tests: repo paths, the program list, the
release binaries in dist/ (built once per run by build/test) and one private
dockerd per session (packaging.md 4.2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pkgtest_helpers import DIST, REPO, require_tool, run  # noqa: E402

# ---------------------------------------------------------------- release artefacts


def _ensure_built(prog: str, what: str, path: Path) -> Path:
    if not (REPO / "src" / "hatchway" / prog / "cli.py").exists():
        pytest.fail(f"src/hatchway/{prog}/cli.py does not exist: program {prog} cannot be packaged")
    if not path.exists():
        # build/test builds everything once before pytest; this covers a bare `pytest` run.
        run([str(REPO / "build" / "release"), "--only", what, "--programs", prog], timeout=1200)
    assert path.exists(), f"build/release did not write {path}"
    return path


ARTEFACTS = {
    "binary": lambda prog: DIST / f"hatchway-{prog}",
    "onefile": lambda prog: DIST / "onefile" / f"hatchway-{prog}",
    "oci": lambda prog: DIST / f"hatchway-{prog}.tar",
    "pex": lambda prog: DIST / f"hatchway-{prog}.pex",
    "man": lambda prog: DIST / "man" / f"hatchway-{prog}.1",
}


@pytest.fixture(scope="session")
def release_artefact():
    """Function (prog, format) -> Path of that artefact in dist/, built if it is missing."""
    cache: dict[tuple[str, str], Path] = {}

    def get(prog: str, what: str) -> Path:
        if (prog, what) not in cache:
            if what == "oci":
                get(prog, "binary")
            cache[prog, what] = _ensure_built(prog, what, ARTEFACTS[what](prog))
        return cache[prog, what]

    return get


@pytest.fixture(scope="session")
def static_binary(release_artefact):
    """Function prog -> Path of dist/hatchway-<prog> (the static executable, build/static)."""
    return lambda prog: release_artefact(prog, "binary")


@pytest.fixture(scope="session")
def multicall_binary(release_artefact):
    """Path of dist/hatchway, the multi-call executable (built with the binaries)."""
    first = json.loads((REPO / "packaging" / "programs.json").read_text())["programs"]
    release_artefact(next(iter(first)), "binary")
    path = DIST / "hatchway"
    assert path.exists(), f"build/release did not write {path}"
    return path


@pytest.fixture(scope="session")
def onefile_binary(release_artefact):
    """Function prog -> Path of dist/onefile/hatchway-<prog> (PyInstaller onefile + staticx)."""
    return lambda prog: release_artefact(prog, "onefile")


@pytest.fixture(scope="session")
def image_archive(release_artefact):
    """Function prog -> Path of dist/hatchway-<prog>.tar."""
    return lambda prog: release_artefact(prog, "oci")


@pytest.fixture(scope="session")
def build_info(release_artefact):
    """Function (prog, format) -> the dist/BUILDINFO.json entry of that artefact:
    version, source_date_epoch and revision it was built from."""

    def get(prog: str, what: str) -> dict:
        path = release_artefact(prog, what)
        table = json.loads((DIST / "BUILDINFO.json").read_text())
        return table[str(path.relative_to(DIST))]

    return get


# ---------------------------------------------------------------- private dockerd


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if p.startswith(prefix)]


def _iptables_rules() -> str | None:
    tool = shutil.which("iptables-save")
    if tool is None:
        return None
    proc = subprocess.run([tool], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return "\n".join(line for line in proc.stdout.splitlines() if not line.startswith(("#", ":")))


class Docker:
    def __init__(self, client: str, host: str, root: Path, pid: int):
        self.client, self.host, self.root, self.pid = client, host, root, pid
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(root / "client")}

    def cmd(self, *args: str) -> list[str]:
        return [self.client, *args]

    def run(self, *args: str, timeout=120, check=True, **kw) -> subprocess.CompletedProcess:
        """`docker ARGS` against this daemon; ``env=`` replaces the environment (keep DOCKER_HOST from .env)."""
        env = kw.pop("env", self.env)
        return run(self.cmd(*args), env=env, timeout=timeout, check=check, **kw)


@pytest.fixture(scope="session")
def dockerd():
    """One dockerd with private data/exec roots, socket and pidfile, no bridge and no iptables."""
    daemon = require_tool("dockerd", "/usr/sbin/dockerd", "/usr/bin/dockerd")
    # The client from Debian's docker.io matches the daemon's API (1.41).
    client = require_tool("docker", "/usr/bin/docker")
    require_tool("ip")
    assert not _link_exists("docker0"), "a docker0 bridge exists before the test daemon started"
    rules_before = _iptables_rules()
    root = Path(tempfile.mkdtemp(prefix="hatchway-dockerd-"))
    (root / "client").mkdir()
    sock, pidfile = root / "docker.sock", root / "docker.pid"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [daemon, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "-H", f"unix://{sock}", "-p", str(pidfile),
         "--iptables=false", "--ip6tables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    docker = Docker(client, f"unix://{sock}", root, proc.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited {proc.returncode}: {(root / 'dockerd.log').read_text()[-3000:]}")
            if sock.exists() and docker.run("version", check=False, timeout=30).returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd not ready in 60 s: {(root / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.1)
        assert int(pidfile.read_text().strip()) == proc.pid
        assert not _link_exists("docker0"), "the private dockerd created a docker0 bridge"
        yield docker
    finally:
        pid = int(pidfile.read_text().strip()) if pidfile.exists() else proc.pid
        if proc.poll() is None:
            os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
        for mount in sorted(_mounts_under(root), key=len, reverse=True):  # e.g. exec/netns/default
            if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mount], capture_output=True)
        leftover = _mounts_under(root)
        if not leftover:
            shutil.rmtree(root)
    assert not leftover, f"mounts left behind by dockerd: {leftover}"
    assert proc.returncode == 0, f"dockerd exited {proc.returncode} after SIGTERM"
    assert not _link_exists("docker0"), "dockerd left a docker0 bridge behind"
    if rules_before is not None:
        assert _iptables_rules() == rules_before, "dockerd changed the iptables rules"
