"""The static build step itself (build/static/build.py): pinned sources with checksums, the same
bytes from two builds, nothing of the checkout's path inside, and the cache outside the checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

from pkgtest_helpers import REPO

BUILD = REPO / "build" / "static" / "build.py"
PINS = json.loads((REPO / "build" / "static" / "pins.json").read_text())


def build(out, src) -> None:
    # --no-setup: build/test (via build/release) has installed the toolchain and filled the cache
    res = subprocess.run([sys.executable, str(BUILD), "--no-setup", "--out", str(out), "--src", str(src)],
                         capture_output=True,
                         timeout=1800, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode()[-4000:] + res.stdout.decode()[-4000:]


def test_every_source_is_pinned_with_a_sha256():
    files = {n: d for p in PINS["debian"].values() for n, d in p["files"].items()} | PINS["pypi"] | PINS["pypi_glibc"]
    assert len(files) >= 15
    for name, digest in files.items():
        assert re.fullmatch(r"[0-9a-f]{64}", digest), name
    for pkg, meta in PINS["debian"].items():
        assert meta["version"] and any(".orig.tar" in n for n in meta["files"]), pkg
    assert isinstance(PINS["source_date_epoch"], int)


def test_two_builds_give_the_same_bytes_and_embed_no_checkout_path(static_binary, tmp_path):
    static_binary("tunnel")  # the cache is filled by build/release
    # one snapshot of src/ for both builds (other work may edit the checkout meanwhile)
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    build(tmp_path / "a", src)
    build(tmp_path / "b", src)
    names = sorted(p.name for p in (tmp_path / "a").iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith("."))
    assert {"hatchway", "hatchway-tunnel", "hatchway-sidecar"} <= set(names)  # the sidecar: the glibc build
    for name in names:
        data = (tmp_path / "a" / name).read_bytes()
        assert data == (tmp_path / "b" / name).read_bytes(), name
        assert str(REPO).encode() not in data, f"{name} embeds the checkout path {REPO}"
        assert str(tmp_path).encode() not in data, f"{name} embeds the output path"


def test_code_zip_holds_only_bytecode_with_fixed_dates(static_binary):
    with zipfile.ZipFile(static_binary("linksocks")) as z:
        infos = z.infolist()
    files = [i for i in infos if not i.filename.endswith("/")]
    assert files and all(i.filename.endswith(".pyc") for i in files)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    names = {i.filename for i in files}
    assert {"hatchway/tunnel/cli.pyc", "hatchway/linksocks/cli.pyc", "aiohttp/__init__.pyc",
            "asyncio/__init__.pyc", "_hatchway_exe.pyc"} <= names
    assert not any(n.startswith(("test/", "tkinter/", "idlelib/", "lib2to3/")) for n in names)


def test_c_extensions_are_built_in(static_binary, tmp_path):
    python = tmp_path / "python3"
    python.symlink_to(static_binary("linksocks"))
    code = ("import importlib, sys, ssl; mods = sys.argv[1:]; "
            "print(all(importlib.import_module(m).__spec__.origin == 'built-in' for m in mods), ssl.OPENSSL_VERSION)")
    mods = ["msgspec._core", "uvloop.loop", "aiohttp._http_parser", "aiohttp._http_writer", "aiohttp._websocket.mask",
            "aiohttp._websocket.reader_c", "yarl._quoting_c", "propcache._helpers_c", "multidict._multidict",
            "_ssl", "_hashlib", "zlib", "_decimal", "_asyncio", "unicodedata"]
    res = subprocess.run([str(python), "-c", code, *mods], capture_output=True, timeout=60,
                         env={"PATH": os.environ["PATH"]})
    assert res.returncode == 0, res.stderr.decode()
    ok, version = res.stdout.decode().split(" ", 1)
    assert ok == "True" and version.startswith("OpenSSL 3.")


def test_cache_lives_outside_the_checkout():
    spec = importlib.util.spec_from_file_location("hatchway_static_build", BUILD)
    static_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(static_build)
    assert REPO not in static_build.CACHE.resolve().parents
