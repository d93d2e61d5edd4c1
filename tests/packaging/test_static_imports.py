"""Start-up import graph of the static executable (issue #7: "a server does not import client
machinery", "start-up is paid only for what a run needs"): its packed aiohttp/__init__ re-exports
lazily (build/static/build.py LAZY_INITS), aiohttp.helpers imports urllib.request only for a client's
proxy settings, and the edits of SITE_PATCHES/STDLIB_PATCHES keep attrs, email, html, platform,
typing_extensions, multipart, tempfile, web_fileresponse, msgspec.inspect, msgspec's JSON schema and
inspect's ast/dis/tokenize out of a server's start while those features still work on first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CLIENT_ONLY = ["aiohttp.client", "aiohttp.connector", "aiohttp.client_reqrep", "aiohttp.cookiejar",
               "aiohttp.tracing", "urllib.request", "http.client"]

SCRIPT = r"""
import json, sys
import hatchway.linksocks.server
server = sorted(m for m in CLIENT_ONLY if m in sys.modules)
import aiohttp
from aiohttp import ClientSession, TCPConnector, WSMsgType
from aiohttp.helpers import getproxies, proxy_bypass
assert ClientSession is aiohttp.client.ClientSession and aiohttp.ClientTimeout is aiohttp.client.ClientTimeout
assert isinstance(getproxies(), dict) and proxy_bypass("localhost") in (True, False)
try:
    aiohttp.NoSuchName
except AttributeError:
    pass
else:
    raise SystemExit("aiohttp.NoSuchName did not raise AttributeError")
print(json.dumps({"server": server, "after": sorted(m for m in CLIENT_ONLY if m in sys.modules),
                  "all": sorted(aiohttp.__all__) == sorted(n for n in aiohttp.__all__ if hasattr(aiohttp, n))}))
"""


def test_server_imports_no_client_machinery_and_aiohttp_names_still_resolve(static_binary, tmp_path: Path) -> None:
    python = tmp_path / "python3"  # under a name starting with "python" it is the plain python CLI
    python.symlink_to(static_binary("linksocks"))
    script = f"CLIENT_ONLY = {CLIENT_ONLY!r}\n{SCRIPT}"
    res = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["server"] == []
    assert "aiohttp.client" in out["after"] and "aiohttp.connector" in out["after"]
    assert out["all"] is True


NOT_AT_START = ["attr", "email", "email.message", "html", "platform", "typing_extensions", "aiohttp.multipart",
                "tempfile", "aiohttp.web_fileresponse", "msgspec.inspect", "msgspec._json_schema", "msgspec.yaml",
                "ast", "dis", "tokenize"]

LAZY_SCRIPT = r"""
import asyncio, json, sys
import hatchway.linksocks.server, hatchway.common.httpapi
at_start = sorted(m for m in NOT_AT_START if m in sys.modules)
from aiohttp import web, helpers
import aiohttp
assert web.FileResponse.__module__ == "aiohttp.web_fileresponse"
assert helpers.parse_content_type("multipart/form-data; boundary=xyz")[0] == "multipart/form-data"
assert helpers.parse_content_type("bogus")[0] == "application/octet-stream"
assert helpers.parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").year == 2015
assert helpers.IS_WINDOWS is False and helpers.IS_MACOS is False
t = aiohttp.ClientTimeout(total=3)
assert repr(t).startswith("ClientTimeout(total=3,") and t == aiohttp.ClientTimeout(total=3)
import msgspec
assert msgspec.json.schema(int) == {"type": "integer"} and type(msgspec.inspect.type_info(int)).__name__ == "IntType"
assert msgspec.toml.__name__ == "msgspec.toml"
import inspect
assert inspect.CO_COROUTINE == 128 and str(inspect.signature(sorted)) == "(iterable, /, *, key=None, reverse=False)"
assert inspect.dis.opname[0] == "CACHE" and inspect.ast.parse("x").body

async def upload():
    async def handler(request):
        form = await request.post()
        field = form["f"]
        return web.json_response({"name": field.filename, "data": field.file.read().decode()})
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    form = aiohttp.FormData()
    form.add_field("f", b"payload", filename="a.txt")
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/", data=form) as r:
        body = await r.json()
    await runner.cleanup()
    return body

body = asyncio.run(upload())
assert body == {"name": "a.txt", "data": "payload"}, body
print(json.dumps({"at_start": at_start}))
"""


def test_server_start_skips_unused_libraries_that_still_work_on_first_use(static_binary, tmp_path: Path) -> None:
    python = tmp_path / "python3"
    python.symlink_to(static_binary("linksocks"))
    script = f"NOT_AT_START = {NOT_AT_START!r}\n{LAZY_SCRIPT}"
    res = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1]) == {"at_start": []}


def test_attrs_lite_behaves_as_attrs_for_aiohttps_uses() -> None:
    probe = Path(__file__).with_name("attrs_probe.py")
    real = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=60)
    lite = subprocess.run([sys.executable, str(probe), str(REPO / "build" / "static" / "attrs_lite.py")],
                          capture_output=True, text=True, timeout=60)
    assert real.returncode == 0 and lite.returncode == 0, (real.stderr, lite.stderr)
    assert lite.stdout == real.stdout
    assert "FrozenInstanceError" in real.stdout and "W(ws_receive=None, ws_close=3)" in real.stdout


PACKED_SCRIPT = r"""
import json, sys
import aiohttp.web, email.message, encodings.idna, _hatchway_sys
loader = aiohttp.web.__loader__.__name__
try:
    import no_such_module_anywhere
except ImportError:
    missing = "ImportError"
import codecs
try:
    codecs.lookup("no-such-codec")  # encodings (frozen) looks for encodings.no_such_codec
except LookupError:
    pass
errors = []
for bad in (b"", b"not a frame", b"(\xb5/\xfd\x00\x00"):
    try:
        _hatchway_sys.zstd_decompress(bad, 10)
    except ValueError as exc:
        errors.append(str(exc).split(":")[0])
print(json.dumps({
    "loader": loader,
    "file": aiohttp.web.__file__[len(sys.executable):],
    "path": [p[len(sys.executable):] for p in aiohttp.__path__],
    "exe_on_path": sys.executable in sys.path,
    "zipimporters": sorted(k for k, v in sys.path_importer_cache.items() if type(v).__name__ == "zipimporter"),
    "missing": missing,
    "errors": errors,
    "encodings": sys.modules["encodings"].__loader__.__name__,
}))
"""


def test_packed_importer_serves_every_module_from_the_index(static_binary, tmp_path: Path) -> None:
    """main.c's PackedImporter: modules come from the zip's index (zstd frames), the executable is off
    sys.path so a failed import never builds a zipimporter, encodings is frozen into the executable,
    and a corrupt frame is a ValueError, not a crash."""
    python = tmp_path / "python3"
    python.symlink_to(static_binary("linksocks"))
    res = subprocess.run([str(python), "-c", PACKED_SCRIPT], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out == {"loader": "PackedImporter", "file": "/aiohttp/web.pyc", "path": ["/aiohttp"],
                   "exe_on_path": False, "zipimporters": [], "missing": "ImportError",
                   "errors": ["zstd_decompress"] * 3, "encodings": "FrozenImporter"}


def test_packed_importer_finds_its_index_before_data_appended_after_the_zip(static_binary, tmp_path: Path) -> None:
    """A tool such as patchelf (staticx) appends its segments after the code zip: FINDER then looks for the zip's
    end record in the last 4 MiB, skipping an end record whose comment is not the index."""
    exe = tmp_path / "hatchway-linksocks"
    fake_end = b"PK\x05\x06" + bytes(16) + (5).to_bytes(2, "little") + b"HWIX0"  # an end record, not ours
    exe.write_bytes(static_binary("linksocks").read_bytes() + fake_end + b"\0" * 300_000)
    exe.chmod(0o755)
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr
    python = tmp_path / "python3"
    python.symlink_to(exe)
    res = subprocess.run([str(python), "-c", "import sys, aiohttp; print(aiohttp.__spec__.loader.__name__, "
                          "sys.executable in sys.path)"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.split() == ["PackedImporter", "False"], (res.stdout, res.stderr)


def test_sidecar_executable_runs_from_memfds(static_binary, tmp_path: Path) -> None:
    """The sidecar's executable (the glibc build) is one process whose every mapped file is a memfd: glibc's
    loader and libraries and the program (build/static/launcher.c), and arkitekt-mesh's extension module from the
    code zip (main.c FINDER); the launcher's descriptors are closed. The node here joins a control server that
    accepts and never answers, so the process stays up to be looked at."""
    import signal
    import socket

    from pkgtest_helpers import wait_for

    silent = socket.create_server(("127.0.0.1", 0))
    proc = subprocess.Popen([str(static_binary("sidecar")), "-statedir", str(tmp_path / "state"), "-authkey", "k",
                             "-coordserver", f"http://127.0.0.1:{silent.getsockname()[1]}", "-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    try:
        def mapped() -> str | None:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            return maps if "/memfd:arkitekt_mesh._native (deleted)" in maps else None

        maps = str(wait_for(mapped, "arkitekt-mesh mapped from a memfd", timeout=30))
        # every mapping of code (executable pages) is one of the memfds, or the kernel's vDSO; besides them glibc
        # reads the host's locale and gconv data when they exist (a scratch image has none)
        rows = [line.split(None, 5) for line in maps.splitlines()]
        code = {row[5] for row in rows if len(row) == 6 and "x" in row[1]} - {"[vdso]", "[vsyscall]"}
        memfd = "/memfd:{} (deleted)".format
        needed = {memfd(n) for n in ("program", "arkitekt_mesh._native", "ld-linux-x86-64.so.2", "libc.so.6",
                                     "libm.so.6", "libgcc_s.so.1")}
        stubs = {memfd(n) for n in ("libdl.so.2", "libpthread.so.0", "librt.so.1")}  # glibc 2.34+: near empty
        assert needed <= code <= needed | stubs, sorted(code)
        files = {row[5] for row in rows if len(row) == 6 and row[5].startswith("/") and not row[5].startswith("/memfd:")}
        assert all(f.startswith(("/usr/lib/locale/", "/usr/lib/x86_64-linux-gnu/gconv/")) for f in files), files
        fds = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")}
        assert not any(f.startswith("/memfd:") for f in fds), sorted(fds)  # the launcher's are closed
        assert str(static_binary("sidecar")) in fds  # the code zip is read from the executable itself
        assert not Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()  # no helper process
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        silent.close()
    assert b"@@SIDECAR:CONNECTING@@" in out, (out, err)
    assert b"@@SIDECAR:SHUTDOWN@@" in out and proc.returncode == 0, (proc.returncode, out, err)
