#!/usr/bin/env python3
"""Build hatchway's static executables (issue #7): one CPython 3.11 built with musl,
every stdlib and third-party C extension linked in as a built-in, mimalloc as the
allocator, and all Python code as .pyc in a zip appended to the file.

  build/static/build.py --out DIR [--programs tunnel,linksocks]

writes DIR/hatchway (multi-call) and DIR/hatchway-<prog> (the same executable with
<prog> as its default program).  Sources come only from the package registries:
Debian source packages (`apt-get source`, a deb-src stanza is added when missing)
and PyPI; every file is pinned with its sha256 in build/static/pins.json.

The slow stages (zlib, OpenSSL, mimalloc, CPython, the extensions, the stdlib .pyc)
are cached in HATCHWAY_BUILD_CACHE (default /var/cache/hatchway-build), a directory
outside the checkout that persists on the machine, each keyed on its pinned inputs
and recipe.  They are built in fixed paths under that directory, so the bytes do not
depend on where the checkout is.  Each run links main.c and packs the project's own
code, which takes seconds.  SOURCE_DATE_EPOCH fixes every date that is embedded.
Stdlib only; needs root for apt-get on a fresh machine.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PINS = json.loads((HERE / "pins.json").read_text())
CACHE = Path(os.environ.get("HATCHWAY_BUILD_CACHE", "/var/cache/hatchway-build"))
JOBS = str(os.cpu_count() or 2)
APT_PACKAGES = ["musl-tools", "musl-dev", "dpkg-dev", "make", "cmake", "gcc", "binutils", "xz-utils", "zstd",
                "bzip2", "pkg-config", "perl", "linux-libc-dev"]
# Recipe versions: bump one to rebuild that stage (and everything keyed on it).
RECIPE = {"toolchain": 1, "zlib": 1, "openssl": 1, "mimalloc": 1, "zstd": 1, "cpython": 1, "ext": 1, "stdlib": 1,
          "exe": 1}
# Stdlib packages/modules no hatchway program imports (and some that cannot work here).
STDLIB_DROP = {
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "lib2to3", "ensurepip", "distutils", "pydoc_data",
    "venv", "sqlite3", "dbm", "curses", "msilib", "unittest", "doctest.py", "pydoc.py", "site-packages",
    "__phello__", "xmlrpc", "wsgiref", "tabnanny.py", "lib-dynload", "ctypes", "multiprocessing",
    "concurrent/futures/process.py", "imaplib.py", "nntplib.py", "smtplib.py", "poplib.py",
    "ftplib.py", "telnetlib.py", "mailbox.py", "cgi.py", "cgitb.py", "pdb.py", "profile.py", "cProfile.py",
    "trace.py", "tracemalloc.py", "zipapp.py", "mailcap.py", "sndhdr.py", "imghdr.py", "aifc.py", "sunau.py",
    "wave.py", "chunk.py", "xdrlib.py", "pipes.py", "crypt.py", "nis.py", "spwd.py", "uu.py", "smtpd.py",
    "asynchat.py", "asyncore.py", "this.py", "antigravity.py", "__hello__.py", "config-3.11-x86_64-linux-musl",
    "config-3.11-x86_64-linux-gnu",
}
# xml: nothing here uses it, and it cannot parse without pyexpat (dropped below).  Of encodings/,
# only the codecs a network program meets (the rest: LookupError), which also keeps the zip
# directory zipimport reads at every start short.
STDLIB_DROP |= {"xml"}
ENCODINGS_KEEP = {
    "__init__", "aliases", "ascii", "latin_1", "utf_8", "utf_8_sig", "utf_16", "utf_16_le", "utf_16_be", "utf_32",
    "utf_32_le", "utf_32_be", "idna", "punycode", "raw_unicode_escape", "unicode_escape", "charmap", "cp437",
    "cp1252", "iso8859_1", "iso8859_15", "base64_codec", "hex_codec", "quopri_codec", "uu_codec", "zlib_codec",
    "rot_13", "undefined",
}


def stdlib_drop(lib: Path) -> set[str]:
    """STDLIB_DROP plus every encodings/*.py not in ENCODINGS_KEEP (paths relative to Lib/)."""
    return STDLIB_DROP | {f"encodings/{f.name}" for f in (lib / "encodings").glob("*.py")
                          if f.stem not in ENCODINGS_KEEP}


def log(msg: str) -> None:
    print(f"[static] {msg}", flush=True)


def sh(cmd, *, cwd=None, env=None, quiet_ok=False, logfile: Path | None = None) -> None:
    cmd = [str(c) for c in cmd]
    full_env = {**os.environ, **(env or {})}
    if logfile is None:
        res = subprocess.run(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL)
    else:
        with open(logfile, "ab") as out:
            out.write(("$ " + " ".join(cmd) + "\n").encode())
            out.flush()
            res = subprocess.run(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT)
    if res.returncode != 0:
        if logfile is not None:
            tail = logfile.read_bytes()[-6000:].decode(errors="replace")
            print(tail, file=sys.stderr)
        raise SystemExit(f"[static] FAILED ({res.returncode}): {' '.join(cmd)}" +
                         (f" (log: {logfile})" if logfile else ""))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recipe(fn) -> str:
    """A stage function's own source: part of its cache key, so editing a recipe rebuilds it."""
    return inspect.getsource(fn)


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class Stage:
    """A cached build directory CACHE/<name>-<key>; done when it holds .done."""

    def __init__(self, name: str, *inputs):
        self.name = name
        self.key = key(name, RECIPE[name], PINS["source_date_epoch"], *inputs)
        self.dir = CACHE / f"{name}-{self.key}"
        self.log = CACHE / f"{name}-{self.key}.log"

    @property
    def done(self) -> bool:
        return (self.dir / ".done").exists()

    def start(self) -> Path:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.log.unlink(missing_ok=True)
        self.t0 = time.monotonic()
        log(f"building {self.name} in {self.dir} (log {self.log})")
        return self.dir

    def finish(self) -> None:
        (self.dir / ".done").write_text("")
        log(f"{self.name} built in {time.monotonic() - self.t0:.1f} s")


# ------------------------------------------------------------------ host set-up and sources


def apt_get(*args: str) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, stdin=subprocess.DEVNULL).returncode


def host_setup() -> None:
    missing = [p for p in APT_PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout.find("install ok installed") < 0]
    need_src = not deb_src_configured()
    if not missing and not need_src:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"[static] need root to install {missing} / add a deb-src stanza")
    if need_src:
        add_deb_src()
    for attempt in range(3):
        if apt_get("update", "-q") == 0 and (not missing or apt_get(
                "install", "-y", "-q", "--no-install-recommends", *missing) == 0):
            return
        time.sleep(5 * (attempt + 1))
    raise SystemExit(f"[static] apt-get install {missing} failed")


def deb_src_configured() -> bool:
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        if re.search(r"^\s*(deb-src\s|Types:.*\bdeb-src\b)", text, re.M):
            return True
    return False


def add_deb_src() -> None:
    """A deb-src twin of every enabled `deb` stanza (deb822 or one-line)."""
    stanzas = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not path.is_file() or not (path.suffix in (".sources", ".list") or path.name == "sources.list"):
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for block in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", block, re.M))
                if "deb" in fields.get("Types", "").split() and "debian" in fields.get("URIs", ""):
                    stanzas.append("\n".join([
                        "Types: deb-src", f"URIs: {fields['URIs']}", f"Suites: {fields.get('Suites', '')}",
                        f"Components: {fields.get('Components', 'main')}",
                        *([f"Signed-By: {fields['Signed-By']}"] if "Signed-By" in fields else [])]))
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(.*debian.*)$", line)
                if m:
                    stanzas.append(f"deb-src {m[1]}")
    if not stanzas:
        raise SystemExit("[static] no Debian `deb` source found to derive a deb-src stanza from")
    deb822 = [s for s in stanzas if s.startswith("Types:")]
    oneline = [s for s in stanzas if not s.startswith("Types:")]
    if deb822:
        Path("/etc/apt/sources.list.d/hatchway-deb-src.sources").write_text("\n\n".join(deb822) + "\n")
    if oneline:
        Path("/etc/apt/sources.list.d/hatchway-deb-src.list").write_text("\n".join(oneline) + "\n")
    log("added deb-src stanzas for apt-get source")


def fetch_sources() -> Path:
    src = CACHE / "src"
    src.mkdir(parents=True, exist_ok=True)
    want = {name: digest for pkg in PINS["debian"].values() for name, digest in pkg["files"].items()}

    def missing() -> list[str]:
        return [n for n, d in want.items() if not (src / n).exists() or sha256(src / n) != d]

    if missing():
        specs = [f"{pkg}={meta['version']}" for pkg, meta in PINS["debian"].items()
                 if any(n in missing() for n in meta["files"])]
        log(f"apt-get source --download-only {' '.join(specs)}")
        subprocess.run(["apt-get", "source", "--download-only", "-q", *specs], cwd=src,
                       stdin=subprocess.DEVNULL)  # a 404 on a file we do not need is fine: checked below
    bad = missing()
    if bad:
        raise SystemExit(f"[static] Debian source files missing or with a wrong sha256: {bad} (in {src})")
    pypi = CACHE / "pypi"
    pypi.mkdir(parents=True, exist_ok=True)
    for name, digest in {**PINS["pypi"], **PINS["pypi_glibc"]}.items():
        path = pypi / name
        if path.exists() and sha256(path) == digest:
            continue
        fetch_pypi(name, path)
        if sha256(path) != digest:
            path.unlink()
            raise SystemExit(f"[static] {name} from PyPI has a wrong sha256")
    return src


def fetch_pypi(filename: str, dest: Path) -> None:
    """One pinned file from PyPI: pip download for wheels; the JSON API's URL for sdists
    (pip download would build each sdist's metadata, minutes of work for nothing)."""
    if filename.endswith(".whl"):
        dist, version = filename.split("-")[:2]
        spec = f"{dist}=={version}"
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "any",
            "-d", dest.parent, spec])
        return
    dist, version = filename[:-len(".tar.gz")].rsplit("-", 1)
    with urllib.request.urlopen(f"https://pypi.org/pypi/{dist}/{version}/json", timeout=60) as r:
        info = json.load(r)
    url = next(u["url"] for u in info["urls"] if u["filename"] == filename)
    tmp = dest.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    os.replace(tmp, dest)


# ------------------------------------------------------------------ stages


def toolchain(libc: str = "musl") -> Path:
    """musl-cc: musl-gcc that answers --print-multiarch as musl (Debian's CPython configure
    checks it) and sees the kernel UAPI headers (linux/, asm/, asm-generic/).

    libc "glibc": the host's gcc as it is (its directory name keys every glibc stage apart from the
    musl ones): for a program whose dependency is a glibc shared library (the sidecar's arkitekt-mesh),
    linked dynamically against glibc and started by launcher.c (see launched())."""
    if libc == "glibc":
        tc = CACHE / f"toolchain-glibc-{RECIPE['toolchain']}"
        (tc / "bin").mkdir(parents=True, exist_ok=True)
        cc = tc / "bin" / "glibc-cc"
        if not cc.exists():
            cc.write_text('#!/bin/sh\nexec gcc "$@"\n')
            cc.chmod(0o755)
        return tc
    tc = CACHE / f"toolchain-{RECIPE['toolchain']}"
    cc = tc / "bin" / "musl-cc"
    if cc.exists():
        return tc
    (tc / "bin").mkdir(parents=True, exist_ok=True)
    kinc = tc / "kinc"
    kinc.mkdir(exist_ok=True)
    for name, target in (("linux", "/usr/include/linux"), ("asm-generic", "/usr/include/asm-generic"),
                         ("asm", "/usr/include/x86_64-linux-gnu/asm"), ("mtd", "/usr/include/mtd")):
        if Path(target).exists() and not (kinc / name).exists():
            (kinc / name).symlink_to(target)
    musl_gcc = shutil.which("musl-gcc") or "/usr/bin/musl-gcc"
    cc.write_text("#!/bin/sh\n"
                  'case "$1" in --print-multiarch) echo x86_64-linux-musl; exit 0;; esac\n'
                  f'exec {musl_gcc} "$@" -isystem {kinc}\n')
    cc.chmod(0o755)
    return tc


def is_glibc(tc: Path) -> bool:
    return tc.name.startswith("toolchain-glibc-")


def base_env(tc: Path) -> dict:
    # The cached stages are shared by every commit, so their embedded dates (sys.version's
    # build date, OpenSSL's buildinf) come from the pins, not from the commit.
    epoch = str(PINS["source_date_epoch"])
    return {"CC": str(tc / "bin" / ("glibc-cc" if is_glibc(tc) else "musl-cc")), "AR": "ar", "RANLIB": "ranlib",
            "PATH": f"{tc / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "SOURCE_DATE_EPOCH": epoch, "LC_ALL": "C", "TZ": "UTC", "ZERO_AR_DATE": "1"}


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a tarball into dest; returns its single top directory."""
    dest.mkdir(parents=True, exist_ok=True)
    sh(["tar", "-xf", archive, "-C", dest])
    tops = [p for p in dest.iterdir() if p.is_dir()]
    return tops[0]


def dpkg_source(src: Path, pkg: str, dest: Path) -> Path:
    meta = PINS["debian"][pkg]
    dsc = next(n for n in meta["files"] if n.endswith(".dsc"))
    out = dest / pkg
    sh(["dpkg-source", "--no-check", "-x", src / dsc, out], cwd=dest)
    return out


def build_zlib(src: Path, tc: Path, env: dict) -> Path:
    st = Stage("zlib", PINS["debian"]["zlib"], tc.name, recipe(build_zlib))
    if st.done:
        return st.dir / "prefix"
    d = st.start()
    tree = dpkg_source(src, "zlib", d)
    sh(["./configure", "--static", f"--prefix={d / 'prefix'}"], cwd=tree,
       env={**env, "CFLAGS": f"-O2 -ffile-prefix-map={tree}=zlib"}, logfile=st.log)
    sh(["make", f"-j{JOBS}", "libz.a"], cwd=tree, env=env, logfile=st.log)
    sh(["make", "install"], cwd=tree, env=env, logfile=st.log)
    st.finish()
    return d / "prefix"


def build_openssl(src: Path, tc: Path, env: dict) -> Path:
    st = Stage("openssl", PINS["debian"]["openssl"], tc.name, recipe(build_openssl), OPENSSL_NO)
    if st.done:
        return st.dir / "prefix"
    d = st.start()
    orig = next(n for n in PINS["debian"]["openssl"]["files"] if ".orig.tar" in n)
    tree = extract(src / orig, d / "s")
    sh(["perl", "./Configure", "linux-x86_64", "no-shared", "no-tests", "no-afalgeng", "no-engine", "no-async",
        "no-legacy", "no-module", "no-dso", "no-ui-console", *OPENSSL_NO, f"--prefix={d / 'prefix'}", "--libdir=lib",
        "--openssldir=/etc/ssl", f"-ffile-prefix-map={tree}=openssl", "-O2"], cwd=tree,
       env={**env, "CC": env["CC"]}, logfile=st.log)
    sh(["make", f"-j{JOBS}", "build_libs"], cwd=tree, env=env, logfile=st.log)
    sh(["make", "install_dev"], cwd=tree, env=env, logfile=st.log)
    st.finish()
    return d / "prefix"


def build_mimalloc(src: Path, tc: Path, env: dict) -> Path:
    st = Stage("mimalloc", PINS["debian"]["mimalloc"], tc.name, recipe(build_mimalloc))
    if st.done:
        return st.dir / "mimalloc.o"
    d = st.start()
    tree = dpkg_source(src, "mimalloc", d)
    sh([env["CC"], "-O2", "-DNDEBUG", "-DMI_MALLOC_OVERRIDE", "-DMI_DEBUG=0", f"-I{tree / 'include'}",
        f"-ffile-prefix-map={tree}=mimalloc", "-c", tree / "src" / "static.c", "-o", d / "mimalloc.o"],
       env=env, logfile=st.log)
    st.finish()
    return d / "mimalloc.o"


def build_zstd(src: Path, tc: Path, env: dict) -> Path:
    """libzstd's decompressor only (lib/common + lib/decompress, no legacy formats) as libzstd.a: the
    executable inflates its packed modules with it (main.c _hatchway_sys.zstd_decompress)."""
    st = Stage("zstd", PINS["debian"]["libzstd"], tc.name, recipe(build_zstd))
    if st.done:
        return st.dir
    d = st.start()
    tree = dpkg_source(src, "libzstd", d)
    lib = tree / "lib"
    objs = []
    for c in sorted((lib / "common").glob("*.c")) + sorted((lib / "decompress").glob("*.[cS]")):
        o = d / f"{c.parent.name}_{c.name}.o"
        sh([env["CC"], "-c", "-O2", "-DNDEBUG", "-DZSTD_LEGACY_SUPPORT=0", f"-ffile-prefix-map={tree}=zstd",
            f"-I{lib}", f"-I{lib / 'common'}", c, "-o", o], env=env, logfile=st.log)
        objs.append(o)
    sh(["ar", "rcsD", d / "libzstd.a", *objs], env=env, logfile=st.log)
    shutil.copy(lib / "zstd.h", d / "zstd.h")
    st.finish()
    return d


# OpenSSL parts nothing in CPython's _ssl/_hashlib needs for TLS
OPENSSL_NO = ["no-cms", "no-ts", "no-srp", "no-idea", "no-seed", "no-rc2", "no-rc4", "no-rc5", "no-md4", "no-mdc2",
              "no-whirlpool", "no-camellia", "no-aria", "no-sm2", "no-sm3", "no-sm4", "no-bf", "no-cast", "no-comp",
              "no-gost", "no-siphash"]
# Stdlib C modules left out: no dependency here (_ctypes: libffi, _sqlite3, ...), not compilable as built-ins (CJK
# codecs), or unused.  _decimal stays: msgspec imports decimal at start, and _pydecimal costs ~17 ms.
SETUP_DROP = re.compile(r"^(_codecs_\w+|_multibytecodec|_crypt|_ctypes\w*|_testcapi|_testinternalcapi|_testbuffer|"
                        r"_testimportmultiple|_testmultiphase|_xxtestfuzz|xxsubtype|_xxsubinterpreters|"
                        r"_tkinter|nis|_curses\w*|_dbm|_gdbm|_sqlite3|_uuid|readline|_lzma|_bz2|ossaudiodev|"
                        r"spwd|syslog|_lsprof|audioop|xxlimited\w*|_elementtree|pyexpat|cmath|_multiprocessing|"
                        r"_posixshmem|_xxsubinterpreters|_testclinic)\b")


def build_cpython(src: Path, tc: Path, env: dict, zlib: Path, ssl: Path) -> Path:
    st = Stage("cpython", PINS["debian"]["python3.11"], tc.name, str(zlib), str(ssl), recipe(build_cpython),
               SETUP_DROP.pattern)
    if st.done:
        return st.dir / "python3.11"
    d = st.start()
    tree = dpkg_source(src, "python3.11", d)
    # Debian applies its patches with quilt at dpkg-source -x (3.0 (quilt)).
    prefix_map = f"-ffile-prefix-map={tree}=python3.11"
    cenv = {**env, "PKG_CONFIG_LIBDIR": f"{zlib}/lib/pkgconfig:{ssl}/lib/pkgconfig", "PKG_CONFIG_PATH": "",
            "CFLAGS": f"-O2 {prefix_map}", "OPT": "-DNDEBUG -fwrapv -O2 -Wall",  # no -g: stripped anyway
            "CPPFLAGS": f"-I{zlib}/include -I{ssl}/include",
            "LDFLAGS": f"{'' if is_glibc(tc) else '-static '}-L{zlib}/lib -L{ssl}/lib", "MODULE_BUILDTYPE": "static"}
    sh(["./configure", "--disable-shared", "--disable-test-modules", "--without-ensurepip", "--prefix=/",
        f"--with-openssl={ssl}", "--with-openssl-rpath=no", "MODULE_BUILDTYPE=static"], cwd=tree, env=cenv, logfile=st.log)
    # MODULE_BUILDTYPE=static alone leaves MODULES_SETUP_STDLIB empty on Linux, so the
    # stdlib extensions would go through setup.py as .so: put their lines in Setup.local.
    stdlib = (tree / "Modules" / "Setup.stdlib").read_text().splitlines()
    keep = [ln for ln in stdlib if not SETUP_DROP.match(ln)]
    (tree / "Modules" / "Setup.local").write_text("*static*\n" + "\n".join(
        ln for ln in keep if not ln.startswith("*")) + "\n")
    sh(["make", f"-j{JOBS}", "python", "pybuilddir.txt"], cwd=tree, env=cenv, logfile=st.log)
    st.finish()
    return tree


def pyext_sources(pypi: Path, d: Path) -> dict[str, Path]:
    trees = {}
    for name in PINS["pypi"]:
        if name.endswith(".tar.gz"):
            dist = name[:-len(".tar.gz")].rsplit("-", 1)[0]
            trees[dist] = extract(pypi / name, d / "sdist" / dist)
    return trees


# (module name, sources relative to the sdist, extra flags)
def ext_table(t: dict[str, Path]) -> list[tuple[str, list[Path], list[str]]]:
    ah, uv = t["aiohttp"], t["uvloop"]
    llhttp = ["-I", str(ah / "vendor/llhttp/build"), "-DLLHTTP_STRICT_MODE=0"]
    return [
        ("msgspec._core", [t["msgspec"] / "src/msgspec/_core.c"], ["-D_GNU_SOURCE", "-std=gnu11"]),
        ("multidict._multidict", [t["multidict"] / "multidict/_multidict.c"], []),
        ("uvloop.loop", [uv / "uvloop/loop.c"],
         ["-I", str(uv / "vendor/libuv/include"), "-I", str(uv / "uvloop"), "-D_GNU_SOURCE",
          "-D_Py_RestoreSignals=uvloop_Py_RestoreSignals"]),
        ("aiohttp._http_parser", [ah / "aiohttp/_http_parser.c", ah / "aiohttp/_find_header.c",
                                  ah / "vendor/llhttp/build/c/llhttp.c", ah / "vendor/llhttp/src/native/api.c",
                                  ah / "vendor/llhttp/src/native/http.c"], llhttp),
        ("aiohttp._http_writer", [ah / "aiohttp/_http_writer.c"], []),
        ("aiohttp._websocket.mask", [ah / "aiohttp/_websocket/mask.c"], []),
        ("aiohttp._websocket.reader_c", [ah / "aiohttp/_websocket/reader_c.c"], []),
        ("yarl._quoting_c", [t["yarl"] / "yarl/_quoting_c.c"], []),
        ("propcache._helpers_c", [t["propcache"] / "src/propcache/_helpers_c.c"], []),
    ]


def build_ext(pypi: Path, tc: Path, env: dict, cpython: Path) -> Path:
    st = Stage("ext", PINS["pypi"], tc.name, str(cpython), recipe(build_ext), recipe(ext_table),
               recipe(pyext_sources))
    if st.done:
        return st.dir
    d = st.start()
    t = pyext_sources(pypi, d)
    # Cython (from its PyPI wheel, run by the host python) for the sdists that ship only .pyx
    cy = d / "cython"
    with zipfile.ZipFile(next(pypi / n for n in PINS["pypi"] if n.startswith("cython-"))) as z:
        z.extractall(cy)
    cyenv = {**env, "PYTHONPATH": str(cy)}
    for pyx in (t["yarl"] / "yarl/_quoting_c.pyx", t["propcache"] / "src/propcache/_helpers_c.pyx"):
        sh([sys.executable, "-m", "cython", "-3", "-X", "language_level=3", pyx], cwd=pyx.parent, env=cyenv,
           logfile=st.log)
    # libuv (vendored by uvloop) with cmake
    uv = t["uvloop"] / "vendor" / "libuv"
    sh(["cmake", "-S", uv, "-B", d / "libuv-build", "-DCMAKE_BUILD_TYPE=Release", "-DLIBUV_BUILD_TESTS=OFF",
        "-DLIBUV_BUILD_BENCH=OFF", "-DLIBUV_BUILD_SHARED=OFF", f"-DCMAKE_C_COMPILER={env['CC']}",
        f"-DCMAKE_C_FLAGS=-O2 -ffile-prefix-map={uv}=libuv"], env=env, logfile=st.log)
    sh(["cmake", "--build", d / "libuv-build", f"-j{JOBS}"], env=env, logfile=st.log)
    shutil.copy(d / "libuv-build" / "libuv.a", d / "libuv.a")
    inc = ["-I", str(cpython / "Include"), "-I", str(cpython), "-I", str(cpython / "Include" / "internal")]
    objs = d / "obj"
    objs.mkdir()
    inittab = []
    for mod, sources, flags in ext_table(t):
        leaf = mod.rsplit(".", 1)[-1]
        sym = "PyInit_" + mod.replace(".", "_")
        for i, c in enumerate(sources):
            o = objs / f"{mod}.{i}.o"
            sh([env["CC"], "-c", "-O2", "-DNDEBUG", f"-DPyInit_{leaf}={sym}", "-fno-strict-overflow",
                f"-ffile-prefix-map={d}=.", *inc, "-I", str(c.parent), *flags, c, "-o", o], env=env,
               logfile=st.log)
        inittab.append((mod, sym))
    (d / "extmods.json").write_text(json.dumps(inittab))
    # the pure-Python side of the dependencies, laid out as site-packages
    site = d / "site"
    site.mkdir()
    for dist, tree in t.items():
        pkgdir = next((p for p in (tree / "src" / dist.replace("-", "_"), tree / dist.replace("-", "_"))
                       if p.is_dir()), None)
        if pkgdir is None:
            raise SystemExit(f"[static] no package directory in the {dist} sdist")
        shutil.copytree(pkgdir, site / pkgdir.name,
                        ignore=shutil.ignore_patterns("*.c", "*.h", "*.pyx", "*.pxd", "*.so", "*.pyi", "__pycache__",
                                                      "_testcapi*", "*.txt", "*.hash"))
    for name in PINS["pypi"]:
        if name.endswith(".whl") and not name.startswith("cython-"):
            with zipfile.ZipFile(pypi / name) as z:
                for member in z.namelist():
                    if ".dist-info/" in member or member.endswith((".so", ".pyx", ".pxd", ".pyi", ".c", ".h")):
                        continue
                    z.extract(member, site)
    st.finish()
    return d


COMPILE = r"""
import ast, importlib._bootstrap_external as be, os, sys
root, out, drop, strip = sys.argv[1], sys.argv[2], set(sys.argv[3].split(",")) - {""}, sys.argv[4] == "1"

def strip_docstrings(tree):
    # -OO's docstring removal without -O's: asserts stay (code may rely on them)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass(lineno=body[0].lineno, col_offset=0)]
    return tree

for dirpath, dirs, files in os.walk(root):
    rel = os.path.relpath(dirpath, root)
    rel = "" if rel == "." else rel
    dirs[:] = sorted(x for x in dirs if os.path.join(rel, x) not in drop and x != "__pycache__")
    for f in sorted(files):
        if not f.endswith(".py") or os.path.join(rel, f) in drop:
            continue
        with open(os.path.join(dirpath, f), "rb") as fh:
            data = fh.read()
        name = os.path.join(rel, f)
        try:
            tree = ast.parse(data, name)
        except SyntaxError as e:
            print("skip", name, e, file=sys.stderr)
            continue
        code = compile(strip_docstrings(tree) if strip else tree, name, "exec", dont_inherit=True, optimize=0)
        dst = os.path.join(out, name + "c")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as fh:
            fh.write(be._code_to_timestamp_pyc(code, 0, 0))
"""


def compile_tree(python: Path, root: Path, out: Path, drop=frozenset(), strip_docs: bool = True) -> None:
    """Every .py under root -> sourceless .pyc in out/ (mtime 0; co_filename is the path inside
    the zip, so no build path is embedded); docstrings dropped unless strip_docs is False.
    -X no_debug_ranges: no column tables (tracebacks keep their line numbers, lose the ^^^
    marks): ~9% smaller code, less to unmarshal and keep in memory at start."""
    out.mkdir(parents=True, exist_ok=True)
    sh([python, "-X", "no_debug_ranges", "-c", COMPILE, root, out, ",".join(sorted(drop)), "1" if strip_docs else "0"])


# Source edits to third-party pure-Python code, applied before compiling (each must apply).
SITE_PATCHES = {
    # aiohttp builds two SSL contexts (and loads the CA store) when aiohttp.connector is imported,
    # i.e. by every program that imports aiohttp, TLS or not: ~50-80 ms of every start.  Build
    # them on first use instead (the first TLS connection pays it once).
    "aiohttp/connector.py": [
        ("_SSL_CONTEXT_VERIFIED = _make_ssl_context(True)\n_SSL_CONTEXT_UNVERIFIED = _make_ssl_context(False)\n",
         "_ssl_context = functools.lru_cache(maxsize=None)(_make_ssl_context)\n\n\n"
         "def __getattr__(name: str) -> Any:\n"
         "    if name in ('_SSL_CONTEXT_VERIFIED', '_SSL_CONTEXT_UNVERIFIED'):\n"
         "        return _ssl_context(name == '_SSL_CONTEXT_VERIFIED')\n"
         "    raise AttributeError(name)\n"),
        ("            return _SSL_CONTEXT_UNVERIFIED\n        sslcontext = self._ssl",
         "            return _ssl_context(False)\n        sslcontext = self._ssl"),
        ("            return _SSL_CONTEXT_UNVERIFIED\n        return _SSL_CONTEXT_VERIFIED",
         "            return _ssl_context(False)\n        return _ssl_context(True)"),
    ],
    # aiohttp.helpers imports urllib.request (http.client, email, tempfile, ...) for the proxy
    # environment of client sessions only: import it when a client first asks.
    "aiohttp/helpers.py": [
        ("from urllib.request import getproxies, proxy_bypass\n",
         "def getproxies() -> dict[str, str]:\n"
         "    from urllib.request import getproxies as _getproxies\n\n"
         "    return _getproxies()\n\n\n"
         "def proxy_bypass(host: str) -> bool:\n"
         "    from urllib.request import proxy_bypass as _proxy_bypass\n\n"
         "    return bool(_proxy_bypass(host))\n\n\n"),
    ],
}

# aiohttp's `import attr` (attrs: ~18 ms at every start, ~0.7 ms per class) -> the subset aiohttp uses
# (build/static/attrs_lite.py, packed as aiohttp/_attrs_lite.py; tests/packaging/test_static_imports.py
# checks it behaves as attrs does for aiohttp's uses).
ATTR_USERS = ("client.py", "client_ws.py", "client_reqrep.py", "helpers.py", "tracing.py", "web_protocol.py",
              "web_request.py", "web_routedef.py", "web_ws.py")
for _rel in ATTR_USERS:
    SITE_PATCHES.setdefault(f"aiohttp/{_rel}", []).append(("\nimport attr\n", "\nfrom . import _attrs_lite as attr\n"))
SITE_FILES = {"aiohttp/_attrs_lite.py": HERE / "attrs_lite.py"}

# aiohttp.helpers: the email package (~7 ms) only for Content-Type parameters and HTTP dates, on
# first use; platform.system() -> sys.platform (platform costs ~2 ms).
SITE_PATCHES["aiohttp/helpers.py"] += [
    ("from email.message import EmailMessage\nfrom email.parser import HeaderParser\nfrom email.policy import HTTP\n"
     "from email.utils import parsedate\n", ""),
    ("import platform\n", ""),
    ('IS_MACOS = platform.system() == "Darwin"\nIS_WINDOWS = platform.system() == "Windows"\n',
     'IS_MACOS = sys.platform == "darwin"\nIS_WINDOWS = sys.platform == "win32"\n'),
    ("class EnsureOctetStream(EmailMessage):\n",
     "@functools.lru_cache(maxsize=None)\ndef _ensure_octet_stream() -> type:\n"
     "    from email.message import EmailMessage\n\n"
     "    class EnsureOctetStream(EmailMessage):\n"
     "        def __init__(self) -> None:\n"
     "            super().__init__()\n"
     "            self.set_default_type(\"application/octet-stream\")\n\n"
     "        def get_content_type(self) -> str:\n"
     "            value = self.get(\"content-type\", \"\").lower()\n"
     "            ctype, _, _ = value.partition(\";\")\n"
     "            ctype = ctype.strip()\n"
     "            if ctype.count(\"/\") != 1:\n"
     "                return self.get_default_type()\n"
     "            return ctype\n\n"
     "    return EnsureOctetStream\n\n\n"
     "class _UnusedEnsureOctetStream:\n"),
    ("    msg = HeaderParser(EnsureOctetStream, policy=HTTP).parsestr(",
     "    from email.parser import HeaderParser\n    from email.policy import HTTP\n\n"
     "    msg = HeaderParser(_ensure_octet_stream(), policy=HTTP).parsestr("),
    ("        timetuple = parsedate(date_str)\n",
     "        from email.utils import parsedate\n\n        timetuple = parsedate(date_str)\n"),
]
# html (html.entities: ~2.5 ms) only when an error page or a directory index is rendered
SITE_PATCHES["aiohttp/web_protocol.py"] = SITE_PATCHES.get("aiohttp/web_protocol.py", []) + [
    ("from html import escape as html_escape\n",
     "def html_escape(s: str, quote: bool = True) -> str:\n    from html import escape\n\n    return escape(s, quote)\n"),
]
SITE_PATCHES["aiohttp/web_urldispatcher.py"] = SITE_PATCHES.get("aiohttp/web_urldispatcher.py", []) + [
    ("\nimport html\n", "\n"),
    ("\nimport platform\n", "\n"),
    ("html_escape = functools.partial(html.escape, quote=True)\n",
     "def html_escape(s: str) -> str:\n    from html import escape\n\n    return escape(s, quote=True)\n"),
    ('platform.system() == "Windows"', 'sys.platform == "win32"'),
]

# multidict: platform only for python_implementation(), pathlib only for get_include().
SITE_PATCHES["multidict/_compat.py"] = [
    ("import platform\n", "import sys\n"),
    ('PYPY = platform.python_implementation() == "PyPy"', 'PYPY = sys.implementation.name == "pypy"'),
]
SITE_PATCHES["multidict/__init__.py"] = [
    ("from pathlib import Path\n", ""),
    ("    return str(Path(__file__).absolute().parent)\n",
     "    import os\n\n    return os.path.dirname(os.path.abspath(__file__))\n"),
]
# typing_extensions (~3.5 ms) only for type-checker details on 3.11: TypeVar/TypeVarTuple defaults
# (the runtime objects behave the same without them) and msgspec's get_type_hints (typing's is
# equivalent on 3.11, which has Required/NotRequired).
for _rel in ("aiohttp/web_ws.py", "aiohttp/client_ws.py"):
    SITE_PATCHES[_rel] += [
        ("    from typing_extensions import TypeVar\n", "    from typing import TypeVar\n"),
        ('TypeVar("_DecodeText", bound=bool, covariant=True, default=Literal[True])',
         'TypeVar("_DecodeText", bound=bool, covariant=True)'),
    ]
SITE_PATCHES["aiosignal/__init__.py"] = [
    ("    from typing_extensions import TypeVarTuple\n", "    from typing import TypeVarTuple\n"),
    ('_Ts = TypeVarTuple("_Ts", default=Unpack[tuple[()]])', '_Ts = TypeVarTuple("_Ts")'),
]
SITE_PATCHES["msgspec/_utils.py"] = [
    ("try:\n    from typing_extensions import get_type_hints as _get_type_hints\nexcept Exception:\n"
     "    from typing import get_type_hints as _get_type_hints\n",
     "from typing import get_type_hints as _get_type_hints\n"),
    ("try:\n    from typing_extensions import NotRequired, Required\nexcept Exception:\n    try:\n"
     "        from typing import NotRequired, Required\n    except Exception:\n        Required = NotRequired = None\n",
     "from typing import NotRequired, Required\n"),
]
# multipart/tempfile/shutil (~4 ms) when a request body is multipart; web_fileresponse (~3.5 ms)
# when a static file is served.
SITE_PATCHES["aiohttp/web_request.py"] += [
    ("from .multipart import BodyPartReader, MultipartReader\n", ""),
    ("if sys.version_info >= (3, 11):\n    from tempfile import SpooledTemporaryFile\nelse:",
     "if sys.version_info >= (3, 11):\n    pass\nelse:"),
    ("    async def multipart(self) -> MultipartReader:\n",
     '    async def multipart(self) -> "MultipartReader":\n        from .multipart import MultipartReader\n\n'),
    ("                if isinstance(field, BodyPartReader):\n",
     "                from .multipart import BodyPartReader\n\n                if isinstance(field, BodyPartReader):\n"),
    ("                        tmp = SpooledTemporaryFile(_FILE_SPOOL_MAX_SIZE)\n",
     "                        from tempfile import SpooledTemporaryFile\n\n"
     "                        tmp = SpooledTemporaryFile(_FILE_SPOOL_MAX_SIZE)\n"),
]
SITE_PATCHES["aiohttp/web_urldispatcher.py"] += [
    ("from .web_fileresponse import FileResponse\n", ""),
    ("        return FileResponse(file_path, chunk_size=self._chunk_size)\n",
     "        from .web_fileresponse import FileResponse\n\n"
     "        return FileResponse(file_path, chunk_size=self._chunk_size)\n"),
]
SITE_PATCHES["aiohttp/web.py"] = [
    ("from .web_fileresponse import FileResponse as FileResponse\n", ""),
    (None, "\n\ndef __getattr__(name: str) -> Any:\n"
           "    if name == 'FileResponse':\n"
           "        from .web_fileresponse import FileResponse\n\n"
           "        return FileResponse\n"
           "    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')\n"),
]

# msgspec: msgspec.inspect (~40 Struct types), the JSON-schema generator, toml and yaml on first use.
SITE_PATCHES["msgspec/__init__.py"] = [
    ("from . import inspect, json, msgpack, structs, toml, yaml\n", "from . import json, msgpack, structs\n"),
    (None, "\n\ndef __getattr__(name):\n"
           "    if name in ('inspect', 'toml', 'yaml'):\n"
           "        import importlib\n\n"
           "        return importlib.import_module('msgspec.' + name)\n"
           "    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')\n"),
]
SITE_PATCHES["msgspec/json.py"] = [
    ("from ._json_schema import schema, schema_components\n", ""),
    (None, "\n\ndef __getattr__(name):\n"
           "    if name in ('schema', 'schema_components'):\n"
           "        from . import _json_schema\n\n"
           "        return getattr(_json_schema, name)\n"
           "    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')\n"),
]

# Stdlib edits, same rules.  uuid (msgspec imports it at start) imports platform only for
# platform.system(), i.e. os.uname().sysname.
# gettext.find: argparse asks for a translation ~60 times per run, each one ~15 stat() calls for .mo
# files under /share/locale (the executable's prefix) plus `import locale`: ~4 ms of --help and of
# every start.  When the locale directory does not exist no .mo file can be found: answer at once.
# linecache (logging -> traceback) imports tokenize only to read a source file for a traceback.
def lazy_class_finder(text: str) -> str:
    """inspect.py: `class _ClassFinder(ast.NodeVisitor)` (used only by getsource for a class) built on first
    use, so importing inspect does not import ast."""
    head = "\nclass _ClassFinder(ast.NodeVisitor):\n"
    start = text.find(head)
    end = text.find("\n\n\ndef findsource(", start)
    if start < 0 or end < 0 or text.count("_ClassFinder(qualname)") != 1:
        raise SystemExit("[static] patch for inspect.py no longer applies: _ClassFinder moved")
    block = text[start + 1:end]
    wrapped = ("@functools.lru_cache(maxsize=None)\ndef _class_finder_type():\n"
               + "".join("    " + ln if ln.strip() else ln for ln in block.splitlines(keepends=True))
               + "\n    return _ClassFinder\n")
    return (text[:start + 1] + wrapped + text[end:]).replace("_ClassFinder(qualname)", "_class_finder_type()(qualname)")


# inspect (imported by asyncio) imports ast, dis, tokenize and token at the top, for getsource,
# signatures of builtins parsed from text and disassembly: ~0.6 MB and ~4 ms of every start.  They
# become modules loaded at their first attribute access.
_LAZY_MODULES = (
    "class _LazyModule:\n"
    "    # a module imported at its first attribute access (the build's edit: see build/static/build.py)\n"
    "    def __init__(self, name):\n"
    "        self._name = name\n\n"
    "    def __getattr__(self, attr):\n"
    "        module = __import__(self._name)\n"
    "        globals()[self._name] = module\n"
    "        return getattr(module, attr)\n\n\n"
    "ast = _LazyModule('ast')\ndis = _LazyModule('dis')\ntokenize = _LazyModule('tokenize')\n"
    "token = _LazyModule('token')\n")

STDLIB_PATCHES = {
    "inspect.py": [
        ("import ast\nimport dis\n", ""),
        ("import tokenize\nimport token\n", ""),
        ("from collections import namedtuple, OrderedDict\n",
         "from collections import namedtuple, OrderedDict\n\n" + _LAZY_MODULES),
        ("for k, v in dis.COMPILER_FLAG_NAMES.items():\n",
         "for k, v in {1: 'OPTIMIZED', 2: 'NEWLOCALS', 4: 'VARARGS', 8: 'VARKEYWORDS', 16: 'NESTED', 32: 'GENERATOR',\n"
         "             64: 'NOFREE', 128: 'COROUTINE', 256: 'ITERABLE_COROUTINE', 512: 'ASYNC_GENERATOR'}.items():\n"
         "    # dis.COMPILER_FLAG_NAMES of 3.11, so that importing inspect does not import dis\n"),
        (lazy_class_finder, None),
    ],
    "uuid.py": [("    import platform\n    _platform_system = platform.system()\n",
                 "    _platform_system = os.uname().sysname\n")],
    "gettext.py": [("    if localedir is None:\n        localedir = _default_localedir\n    if languages is None:\n",
                    "    if localedir is None:\n        localedir = _default_localedir\n"
                    "    if not os.path.isdir(localedir):\n        return [] if all else None\n"
                    "    if languages is None:\n")],
    "linecache.py": [("\nimport tokenize\n", "\n"),
                     ("        with tokenize.open(fullname) as fp:", "        import tokenize\n\n"
                      "        with tokenize.open(fullname) as fp:")],
}

# Package __init__ files whose re-exports become lazy (lazy_package_init): `import aiohttp`
# (every aiohttp.web user) no longer imports aiohttp.client/connector/cookiejar/tracing/...
# a server never uses; `aiohttp.ClientSession` still works (imported on first use).
LAZY_INITS = {"aiohttp/__init__.py": frozenset({"hdrs"})}


def lazy_package_init(text: str, keep: frozenset = frozenset()) -> str:
    """The package __init__ `text` with its top-level `from .mod import a as a, b` statements
    (except those from the modules in `keep`) replaced by a PEP 562 module __getattr__ that
    imports `.mod` when a name is first used; the rest of the file stays as it is (an existing
    module __getattr__ becomes the fallback)."""
    import ast

    tree = ast.parse(text)
    lazy: dict[str, tuple[str, str]] = {}
    cut = []
    for node in tree.body:
        if (isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
                and node.module.split(".")[0] not in keep and all(a.name != "*" for a in node.names)):
            for a in node.names:
                lazy[a.asname or a.name] = (node.module, a.name)
            cut.append((node.lineno, node.end_lineno))
    if not lazy:
        raise SystemExit("[static] lazy_package_init: no relative imports to make lazy")
    lines = text.splitlines(keepends=True)
    for start, end in reversed(cut):
        del lines[start - 1:end]
    body = "".join(lines)
    if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        body = body.replace("def __getattr__(", "def _eager_getattr(", 1)
        fallback = "        return _eager_getattr(name)\n"
    else:
        fallback = "        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')\n"
    return body + (
        "\n\n_LAZY = " + repr(lazy) + "\n\n\n"
        "def __getattr__(name: str) -> object:\n"
        "    spec = _LAZY.get(name)\n"
        "    if spec is None:\n" + fallback +
        "    import importlib\n\n"
        "    value = getattr(importlib.import_module('.' + spec[0], __name__), spec[1])\n"
        "    globals()[name] = value\n"
        "    return value\n")


def patches_key(patches: dict) -> dict:
    """The patches as the stage key sees them (a transformation by its source)."""
    return {rel: [[recipe(old) if callable(old) else old, new] for old, new in edits] for rel, edits in patches.items()}


def apply_edits(rel: str, text: str, edits: list) -> str:
    """`text` with each (old, new) edit applied once (old None: append new; old callable: text = old(text));
    an edit whose `old` is missing or found twice stops the build (a new upstream version moved the code:
    look again)."""
    for old, new in edits:
        if old is None:  # append
            text += new
            continue
        if callable(old):  # a transformation, which checks its own anchors
            text = old(text)
            continue
        if text.count(old) != 1:
            raise SystemExit(f"[static] patch for {rel} no longer applies: {old!r} found {text.count(old)} times")
        text = text.replace(old, new)
    return text


def build_stdlib(cpython: Path, ext: Path, pyexe: Path) -> Path:
    st = Stage("stdlib", str(cpython), str(ext), sorted(stdlib_drop(cpython / "Lib")), patches_key(SITE_PATCHES),
               patches_key(STDLIB_PATCHES),
               {k: sha256(v) for k, v in SITE_FILES.items()}, recipe(apply_edits),
               recipe(compile_tree),
               {k: sorted(v) for k, v in LAZY_INITS.items()}, recipe(lazy_package_init), recipe(build_stdlib),
               COMPILE)
    if st.done:
        return st.dir
    d = st.start()
    compile_tree(pyexe, cpython / "Lib", d / "pyc", stdlib_drop(cpython / "Lib"))
    patched = d / "stdlib-patched"
    patched.mkdir()
    for rel, edits in STDLIB_PATCHES.items():
        (patched / rel).parent.mkdir(parents=True, exist_ok=True)
        (patched / rel).write_text(apply_edits(rel, (cpython / "Lib" / rel).read_text(), edits))
    compile_tree(pyexe, patched, d / "pyc")  # over the unpatched .pyc
    # _sysconfigdata (sysconfig) from the build tree
    builddir = cpython / (cpython / "pybuilddir.txt").read_text().strip()
    compile_tree(pyexe, builddir, d / "pyc")
    site = d / "site"
    shutil.copytree(ext / "site", site)
    for rel, edits in SITE_PATCHES.items():
        (site / rel).write_text(apply_edits(rel, (site / rel).read_text(), edits))
    for rel, source in SITE_FILES.items():
        shutil.copy(source, site / rel)
    for rel, keep in LAZY_INITS.items():
        (site / rel).write_text(lazy_package_init((site / rel).read_text(), keep))
    compile_tree(pyexe, site, d / "pyc")
    st.finish()
    return d


# Modules frozen into the executable (PyImport_FrozenModules, main.c): those the interpreter imports
# during initialisation, before the packed-code importer is installed.
FROZEN = (("encodings", "encodings/__init__.py", True), ("encodings.aliases", "encodings/aliases.py", False),
          ("encodings.utf_8", "encodings/utf_8.py", False))

FREEZE = r"""
import marshal, sys
lib, out, spec = sys.argv[1], sys.argv[2], eval(sys.argv[3])
parts, table = [], []
for i, (name, rel, is_pkg) in enumerate(spec):
    with open(lib + "/" + rel, "rb") as f:
        code = compile(f.read(), rel, "exec", dont_inherit=True, optimize=0)
    data = marshal.dumps(code)
    parts.append("static const unsigned char M%d[] = {%s};" % (i, ",".join(str(b) for b in data)))
    table.append('    {"%s", M%d, (int)sizeof(M%d), %d, NULL},' % (name, i, i, int(is_pkg)))
with open(out, "w") as f:
    f.write("\n".join(parts) + "\nstatic const struct _frozen hatchway_frozen[] = {\n" + "\n".join(table)
            + "\n    {NULL, NULL, 0, 0, NULL},\n};\n")
"""


def freeze_modules(pyexe: Path, lib: Path, out: Path) -> None:
    """frozen_modules.h: the FROZEN modules' code (marshalled by the build tree's interpreter, so the
    format matches) as C arrays and the hatchway_frozen table main.c installs."""
    sh([pyexe, "-X", "no_debug_ranges", "-c", FREEZE, lib, out, repr(FROZEN)])


def link_exe(tc: Path, env: dict, cpython: Path, ext: Path, zlib: Path, ssl: Path, mimalloc: Path,
             zstd: Path) -> Path:
    main_c = HERE / "main.c"
    st = Stage("exe", str(cpython), str(ext), str(zlib), str(ssl), str(mimalloc), str(zstd), sha256(main_c),
               recipe(link_exe),
               FROZEN, FREEZE, recipe(freeze_modules))
    if st.done:
        return st.dir / "hatchway.exe"
    d = st.start()
    inittab = json.loads((ext / "extmods.json").read_text())
    lines = [f"extern PyObject *{sym}(void);" for _, sym in inittab]
    lines.append("#define EXTMODS \\")
    lines += [f'    EXTMOD("{mod}", {sym}) \\' for mod, sym in inittab]
    lines.append("")
    (d / "extmods.h").write_text("\n".join(lines) + "\n")
    shutil.copy(main_c, d / "main.c")
    freeze_modules(cpython / "python", cpython / "Lib", d / "frozen_modules.h")
    inc = ["-I", str(cpython / "Include"), "-I", str(cpython), "-I", str(d), "-I", str(zstd)]
    sh([env["CC"], "-c", "-O2", f"-ffile-prefix-map={d}=.", *inc, d / "main.c", "-o", d / "main.o"], env=env,
       logfile=st.log)
    objs = sorted((ext / "obj").glob("*.o"))
    libs = [cpython / "libpython3.11.a", cpython / "Modules/_decimal/libmpdec/libmpdec.a",
            cpython / "Modules/expat/libexpat.a", ext / "libuv.a", ssl / "lib/libssl.a", ssl / "lib/libcrypto.a",
            zlib / "lib/libz.a", zstd / "libzstd.a"]
    libs = [x for x in libs if x.exists()]
    if is_glibc(tc):
        # Dynamic against glibc, for extension modules loaded from the packed zip (main.c FINDER): the C API is
        # exported to them (Py*, _Py*: what an abi3 extension links against; nothing else), and the libraries
        # they need are linked whether or not the executable uses them (the launcher carries and preloads them).
        # glibc's malloc stays: mimalloc would replace it for the extensions too.
        sh([env["CC"], "-no-pie", "-Wl,--build-id=none", "-Wl,--export-dynamic-symbol=Py*",
            "-Wl,--export-dynamic-symbol=_Py*", "-o", d / "hatchway.exe", d / "main.o", *objs,
            "-Wl,--start-group", *libs, "-Wl,--end-group", "-Wl,--no-as-needed", "-lm", "-lpthread", "-ldl",
            "-lrt", "-lutil", "-lgcc_s", "-Wl,--as-needed"], env=env, logfile=st.log)
    else:
        # mimalloc first: its malloc/free/... replace musl's (mallocng mmaps every big buffer)
        sh([env["CC"], "-static", "-Wl,--build-id=none", "-o", d / "hatchway.exe", mimalloc, d / "main.o", *objs,
            "-Wl,--start-group", *libs, "-Wl,--end-group", "-lm", "-lpthread"], env=env, logfile=st.log)
    sh(["strip", "--strip-all", d / "hatchway.exe"], logfile=st.log)
    st.finish()
    return d / "hatchway.exe"


# ------------------------------------------------------------------ pack


TRACE = r"""
import pkgutil, sys, importlib
import hatchway
for m in pkgutil.walk_packages(hatchway.__path__, "hatchway.", onerror=lambda name: None):
    if m.name.endswith(".__main__"):
        continue
    try:
        importlib.import_module(m.name)
    except Exception as e:  # a module another change breaks must not stop the build
        print("trace: cannot import", m.name, repr(e), file=sys.stderr)
import _hatchway_exe, encodings.idna, encodings.ascii, encodings.latin_1
for name, mod in sorted(sys.modules.items()):
    spec = getattr(mod, "__spec__", None)
    origin = getattr(spec, "origin", None) or ""
    if ".zip" in origin or origin.startswith(sys.executable):
        print(origin[len(sys.executable) + 1:])
"""


def zstd_frames(blobs: dict[str, bytes]) -> dict[str, bytes]:
    """Each blob as one zstd frame (level 19, no checksum: the .pyc is checked by marshal), by the host's
    zstd (Debian's, APT_PACKAGES) in one run; deterministic for a given zstd version."""
    with tempfile.TemporaryDirectory(prefix="hatchway-zstd-") as tmp:
        files = []
        for i, name in enumerate(sorted(blobs)):
            f = Path(tmp) / f"{i}.bin"
            f.write_bytes(blobs[name])
            files.append((name, f))
        with open(Path(tmp) / "zstd.log", "wb") as log_out:
            subprocess.run(["zstd", "-19", "--no-check", "-q", "-f", *[str(f) for _, f in files]], check=True,
                           stdin=subprocess.DEVNULL, stdout=log_out)
        return {name: Path(str(f) + ".zst").read_bytes() for name, f in files}


def write_zip(path: Path, trees: list[Path], stored: set[str], compress: str = "zstd-all",
              ) -> dict[str, tuple[int, int]]:
    """One zip of every .pyc under trees, sorted, with fixed dates and modes.  The names in `stored` are
    stored as they are (all, when `stored` is empty); the rest are compressed: "zstd" stores one zstd
    frame (zipfile cannot write method 93, so the entry is marked stored and the index says what it
    holds), "deflate" deflates, "zstd-all" (default)/"deflate-all" compress every entry, "stored"
    none.  Returns
    {name: (method, size of the .pyc)} for the index (0 stored, 8 deflated, 93 zstd frame)."""
    entries: dict[str, bytes] = {}
    for tree in trees:
        for f in sorted([*tree.rglob("*.pyc"), *tree.rglob("*.so")]):
            entries[f.relative_to(tree).as_posix()] = f.read_bytes()
    every = compress.endswith("-all")
    kind = compress.removesuffix("-all")
    squeeze = set() if kind == "stored" else {n for n in entries if every or (stored and n not in stored)}
    frames = zstd_frames({n: entries[n] for n in squeeze}) if kind == "zstd" else {}
    methods: dict[str, tuple[int, int]] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        dirs = set()
        for name in sorted(entries):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]) + "/")
        for name in sorted(dirs | set(entries)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o40755 << 16) if name.endswith("/") else (0o100644 << 16)
            info.create_system = 3
            if name.endswith("/"):
                z.writestr(info, b"")
                continue
            data = entries[name]
            method = 0
            if name in squeeze and kind == "deflate":
                info.compress_type = zipfile.ZIP_DEFLATED
                method = 8
            elif name in frames:
                data, method = frames[name], 93
            z.writestr(info, data, compresslevel=9)
            methods[name] = (method, len(entries[name]))
    return methods


def write_index(path: Path, methods: dict[str, tuple[int, int]]) -> None:
    """The zip's comment becomes the packed-code importer's index (main.c FINDER): b"HWIX1" + marshal of
    {module: (path in the zip, data offset from the zip's start, size in the zip, method, is_package,
    size of the .pyc)}, sorted; method as write_zip returns it.  A shared-library extension module
    (``pkg/_mod.abi3.so``, glibc executables only) has is_package 2: FINDER loads it from a memfd.
    Offsets are relative to the zip, so the same index works after the zip is appended to the exe."""
    import marshal

    index = {}
    with open(path, "rb") as raw, zipfile.ZipFile(path) as z:
        for info in z.infolist():
            name = info.filename
            if not name.endswith((".pyc", ".so")):
                continue
            raw.seek(info.header_offset)
            head = raw.read(30)
            if head[:4] != b"PK\x03\x04":
                raise SystemExit(f"[static] {path}: no local header for {name}")
            data_at = info.header_offset + 30 + int.from_bytes(head[26:28], "little") + \
                int.from_bytes(head[28:30], "little")
            is_pkg = 2 if name.endswith(".so") else name.endswith("/__init__.pyc")
            if is_pkg == 2:
                head, _, leaf = name.rpartition("/")
                module = f"{head}/{leaf.split('.')[0]}".replace("/", ".")
            else:
                module = (name[:-len("/__init__.pyc")] if is_pkg else name[:-len(".pyc")]).replace("/", ".")
            method, size = methods[name]
            index[module] = (name, data_at, info.compress_size, method, is_pkg, size)
    comment = b"HWIX1" + marshal.dumps(dict(sorted(index.items())), 4)
    if len(comment) > 65535:
        raise SystemExit(f"[static] the module index ({len(comment)} bytes) does not fit in a zip comment")
    with zipfile.ZipFile(path, "a") as z:
        z.comment = comment


def wheel_tree(pyexe: Path, wheels: list[Path], out: Path) -> Path:
    """Binary wheels (the glibc executables' arkitekt-mesh) as a tree to pack: their Python code as .pyc,
    their extension modules (*.so) as they are, nothing else."""
    raw = out.with_name(out.name + "-src")
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            for member in z.namelist():
                if ".dist-info/" not in member and member.endswith((".py", ".so")):
                    z.extract(member, raw)
    compile_tree(pyexe, raw, out)
    for so in sorted(raw.rglob("*.so")):
        (out / so.relative_to(raw)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(so, out / so.relative_to(raw))
    return out


def shared_libraries(objects: list[Path]) -> list[str]:
    """The host libraries these ELF objects load (ldd: absolute paths; the loader and the vDSO left out)."""
    libs: set[str] = set()
    for obj in objects:
        out = subprocess.run(["ldd", obj], capture_output=True, text=True, check=True).stdout
        libs |= {m.group(1) for m in re.finditer(r"=> (/\S+)", out)}
    return sorted(libs)


LOADER = Path("/lib64/ld-linux-x86-64.so.2")
LAUNCH_MAGIC = b"HWLAUNCH"


def launcher(tc: Path) -> Path:
    """launcher.c as a static musl program (a few KB; built at every pack, it takes a fraction of a second)."""
    out = CACHE / "launcher" / f"launcher-{key(sha256(HERE / 'launcher.c'), recipe(launcher))}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        env = base_env(tc)
        tmp = out.with_suffix(".tmp")
        sh([env["CC"], "-static", "-O2", "-Wall", "-Werror", "-Wl,--build-id=none", "-o", tmp, HERE / "launcher.c"],
           env=env)
        sh(["strip", "--strip-all", tmp])
        os.replace(tmp, out)
    return out


def launched(stub: Path, program: bytes, code_zip: bytes, libs: list[str]) -> bytes:
    """stub + glibc's loader + libs (libc first) + the program (its ELF part) + its code zip + the table
    launcher.c reads: one file that runs the glibc program from memfds, with nothing on the file system but
    itself.  The zip is not copied to a memfd: the program reads it from this file (main.c FINDER finds its
    end record before the table)."""
    order = sorted(libs, key=lambda lib: (Path(lib).name != "libc.so.6", Path(lib).name))
    parts = [(LOADER.name, LOADER.resolve().read_bytes())]
    parts += [(Path(lib).name, Path(lib).resolve().read_bytes()) for lib in order]
    parts.append(("program", program))
    blob = bytearray(stub.read_bytes())
    table = bytearray()
    for name, data in parts:
        blob += b"\0" * (-len(blob) % 4096)  # page-aligned: sendfile copies whole pages
        table += name.encode().ljust(48, b"\0")[:48] + len(blob).to_bytes(8, "little") + len(data).to_bytes(8, "little")
        blob += data
    blob += code_zip
    return bytes(blob + table + len(parts).to_bytes(4, "little") + bytes(4) + LAUNCH_MAGIC)


def pack(exe: Path, stdlib: Path, out: Path, programs: list[str], pyexe: Path, compress: str = "zstd-all",
         src: Path = REPO / "src", wheels: tuple[Path, ...] = (), multicall: bool = True) -> None:
    """The project's code (compiled by the build tree's interpreter: same magic number)
    plus the cached stdlib/dependency .pyc (and the code of `wheels`), as one stored zip appended
    to the executable."""
    work = out / ".build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    own = work / "own"
    compile_tree(pyexe, src, own)  # docstrings dropped: nothing reads them at run time
    trees = [stdlib / "pyc", own]
    needs: list[str] = []
    if wheels:
        trees.append(wheel_tree(pyexe, list(wheels), work / "wheels"))
        # what the executable and its extension modules load: the launcher carries them (launcher.c)
        needs = shared_libraries([exe, *sorted(trees[-1].rglob("*.so"))])
        stub = launcher(toolchain("musl"))
    disp = (HERE / "dispatch.py").read_text().replace('("@PROGRAMS@",)', repr(tuple(programs)))
    (work / "disp").mkdir()
    (work / "disp" / "_hatchway_exe.py").write_text(disp)
    compile_tree(pyexe, work / "disp", own, strip_docs=False)
    # First pass, all stored: trace the modules any run can import at start (every hatchway module's
    # imports).  zstd-all (default): every module is a zstd frame, 15.9 MB a file; inflating costs
    # ~800 MB/s, i.e. ~1 ms of --help and ~5 ms of a LinkSocks server's start.  zstd: the traced
    # modules stay stored (read in place) and the rest are zstd frames, 19.3 MB.  deflate(-all): the
    # same with zlib (~3x slower to inflate).
    z = work / "code.zip"
    write_zip(z, trees, set(), "stored")
    probe = work / "python3"
    probe.write_bytes(exe.read_bytes() + z.read_bytes())
    probe.chmod(0o755)
    hot = subprocess.run([probe, "-c", TRACE], capture_output=True, text=True, check=True).stdout.split()
    if len(hot) < 50:
        raise SystemExit(f"[static] the import trace found only {len(hot)} modules: {hot}")
    write_index(z, write_zip(z, trees, set(hot), compress))
    blob = exe.read_bytes()
    marker = b"@@HATCHWAY_DEFAULT_PROGRAM@@="
    at = blob.index(marker)
    zip_bytes = z.read_bytes()
    for prog in ["", *programs] if multicall else programs:
        name = f"hatchway-{prog}" if prog else "hatchway"
        field = (marker + prog.encode()).ljust(64, b"\0")
        data = blob[:at] + field + blob[at + 64:] + zip_bytes
        if wheels:  # a glibc executable: the launcher runs it from memfds with glibc's loader and libraries
            data = launched(stub, data[:len(blob)], zip_bytes, needs)
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        os.replace(tmp, out / name)
    shutil.rmtree(work)


def prune_cache(libc: str, current: set[str]) -> None:
    """Remove the cached stages of other keys (older recipes or pins): the cache stays one build's size.
    Each libc's current stages are recorded (CACHE/current-<libc>.json), so a build of one keeps the other's."""
    (CACHE / f"current-{libc}.json").write_text(json.dumps(sorted(current)))
    for other in CACHE.glob("current-*.json"):
        current = current | set(json.loads(other.read_text()))
    for path in CACHE.iterdir():
        name, _, rest = path.name.partition("-")
        if name in RECIPE and name != "toolchain" and path.name.split(".")[0] not in current:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="build/static/build.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--programs", default=None, help="comma-separated programs [all in packaging/programs.json]")
    p.add_argument("--no-setup", action="store_true", help="no apt-get")
    p.add_argument("--src", default=str(REPO / "src"), help="the tree whose packages are packed [src]")
    p.add_argument("--compress", default="zstd-all", choices=("zstd-all", "zstd", "deflate-all", "deflate"),
                   help="how modules are packed: every one compressed (zstd-all, deflate-all), or those a run "
                        "can import at start stored and the rest compressed (zstd, deflate) [zstd-all]")
    args = p.parse_args(argv)
    meta = json.loads((REPO / "packaging" / "programs.json").read_text())["programs"]
    programs = args.programs.split(",") if args.programs else list(meta)
    t0 = time.monotonic()
    if not args.no_setup:
        host_setup()
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = open(CACHE / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per cache (CI and a developer on one machine)
    src = fetch_sources()
    out = Path(args.out).resolve()
    for libc in ("musl", "glibc"):
        # "libc": "glibc" in programs.json: a program whose dependency only exists as a glibc shared library
        # (the sidecar: arkitekt-mesh) is built against glibc: OUT/hatchway-<prog> with its launcher, not in the
        # multi-call OUT/hatchway
        progs = [p for p in programs if meta[p].get("libc", "musl") == libc]
        if not progs:
            continue
        tc = toolchain(libc)
        env = base_env(tc)
        zlib = build_zlib(src, tc, env)
        ssl = build_openssl(src, tc, env)
        mimalloc = build_mimalloc(src, tc, env)
        zstd = build_zstd(src, tc, env)
        cpython = build_cpython(src, tc, env, zlib, ssl)
        ext = build_ext(CACHE / "pypi", tc, env, cpython)
        exe = link_exe(tc, env, cpython, ext, zlib, ssl, mimalloc, zstd)
        stdlib = build_stdlib(cpython, ext, cpython / "python")
        prune_cache(libc, {p.name for p in (zlib.parent, ssl.parent, mimalloc.parent, zstd, cpython.parent, ext,
                                            exe.parent, stdlib)})
        out.mkdir(parents=True, exist_ok=True)
        wheels = tuple(CACHE / "pypi" / n for n in PINS["pypi_glibc"]) if libc == "glibc" else ()
        pack(exe, stdlib, out, progs, cpython / "python", args.compress, Path(args.src).resolve(), wheels,
             multicall=libc == "musl")
        log(f"wrote {', '.join(f'{out}/hatchway-{x}' for x in progs)} "
            f"({(out / f'hatchway-{progs[0]}').stat().st_size / 1e6:.2f} MB each) in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
