"""What build/release writes into dist/: reproducible images for one commit, man pages
dated by SOURCE_DATE_EPOCH, the PEX, and SHA256SUMS (packaging.md 1.1, 2.10, 3; cases 14, 16, 27)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from pkgtest_helpers import DIST, PROGRAM_NAMES, PROGRAMS, REPO, VERSION, run


def git(*args: str) -> str:
    return run(["git", "-C", str(REPO), *args]).stdout.decode().strip()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("what", ["binary", "oci", "man"])
def test_source_date_epoch_defaults_to_the_commit_time(what, build_info):
    info = build_info(PROGRAM_NAMES[0], what)
    assert info["version"] == VERSION
    if os.environ.get("SOURCE_DATE_EPOCH"):
        assert info["source_date_epoch"] == int(os.environ["SOURCE_DATE_EPOCH"])
    else:
        assert info["source_date_epoch"] == int(git("show", "-s", "--format=%ct", info["revision"]))


def image_config(prog: str) -> tuple[dict, bytes]:
    layout = DIST / "oci" / f"hatchway-{prog}"
    (entry,) = json.loads((layout / "index.json").read_bytes())["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == VERSION
    blob = lambda d: (layout / "blobs" / "sha256" / d.split(":")[1]).read_bytes()  # noqa: E731
    manifest = json.loads(blob(entry["digest"]))
    return json.loads(blob(manifest["config"]["digest"])), blob(manifest["layers"][0]["digest"])


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_release_image_is_reproducible(prog, release_artefact, build_info, tmp_path):
    """A second build from the same binary and commit gives byte-identical layout and archive."""
    archive = release_artefact(prog, "oci")
    info = build_info(prog, "oci")
    _, layer_gz = image_config(prog)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_gz))) as tar:
        binary = tar.extractfile(f"app/{prog}").read()
    other = tmp_path / "dist"
    other.mkdir()
    (other / f"hatchway-{prog}").write_bytes(binary)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(info["source_date_epoch"]), "HATCHWAY_REVISION": info["revision"]}
    run([sys.executable, str(REPO / "build" / "release"), "--no-setup", "--only", "oci", "--programs", prog,
         "--dist", str(other)], env=env, timeout=300)
    assert (other / archive.name).read_bytes() == archive.read_bytes()
    assert tree(other / "oci" / f"hatchway-{prog}") == tree(DIST / "oci" / f"hatchway-{prog}")


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_release_image_metadata(prog, build_info):
    info = build_info(prog, "oci")
    config, _ = image_config(prog)
    assert config["created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info["source_date_epoch"]))
    cfg = config["config"]
    assert cfg["Entrypoint"] == [f"/app/{prog}"]
    assert cfg.get("Cmd", []) == PROGRAMS[prog]["cmd"]
    assert sorted(cfg.get("ExposedPorts") or {}) == sorted(PROGRAMS[prog]["expose"])
    assert cfg["User"] == "65532:65532" and cfg["WorkingDir"] == "/home/nonroot"
    assert cfg["Env"] == ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", *PROGRAMS[prog].get("env", [])]
    assert cfg["Labels"]["org.opencontainers.image.revision"] == info["revision"]
    assert cfg["Labels"]["org.opencontainers.image.version"] == VERSION


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_man_page(prog, release_artefact, build_info):
    page = release_artefact(prog, "man").read_text()
    epoch = build_info(prog, "man")["source_date_epoch"]
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch)).replace("-", "\\-")
    assert page.splitlines()[0] == f'.TH HATCHWAY\\-{prog.upper()} "1" "{date}" "hatchway {VERSION}" "hatchway manual"'
    name = page.split(".SH NAME\n", 1)[1].splitlines()[0]
    assert name == f"hatchway\\-{prog} \\- " + PROGRAMS[prog]["description"].replace("-", "\\-")
    assert "\\-\\-version" in page
    man = shutil.which("man")
    if man:  # the page renders without warnings
        res = subprocess.run([man, "--warnings", "-l", "-"], input=page.encode(), capture_output=True,
                             env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0"}, timeout=60)
        assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_pex_runs_with_python311(prog, release_artefact, tmp_path):
    pex = release_artefact(prog, "pex")
    assert pex.read_bytes().startswith(b"#!/usr/bin/env python3.11\n")
    assert os.access(pex, os.X_OK)
    env = {**os.environ, "PEX_ROOT": str(tmp_path / "pex_root")}  # empty PEX_ROOT: the cold path
    env.pop("PYTHONPATH", None)
    res = run([str(pex), "--version"], env=env, timeout=120, cwd=tmp_path)
    assert res.stdout.decode().startswith(f"hatchway-{prog} ") and VERSION in res.stdout.decode()
    res = run([str(pex), "--help"], env=env, timeout=120, cwd=tmp_path)
    out = res.stdout.decode() + res.stderr.decode()
    assert out.startswith((f"usage: hatchway-{prog}", f"Usage of hatchway-{prog}")), out[:300]


def test_sha256sums_cover_dist(release_artefact):
    for prog in PROGRAM_NAMES:
        for what in ("binary", "oci", "pex", "man"):
            release_artefact(prog, what)
    listed = {}
    for line in (DIST / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    for prog in PROGRAM_NAMES:
        for name in (f"hatchway-{prog}", f"hatchway-{prog}.pex", f"hatchway-{prog}.tar", f"man/hatchway-{prog}.1"):
            assert name in listed, name
    assert "hatchway" in listed  # the multi-call executable
    for name, digest in listed.items():
        assert hashlib.sha256((DIST / name).read_bytes()).hexdigest() == digest, name
