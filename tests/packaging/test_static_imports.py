"""Start-up import graph of the static executable (issue #7: "a server does not import client
machinery"): its packed aiohttp/__init__ re-exports lazily (build/static/build.py LAZY_INITS) and
aiohttp.helpers imports urllib.request only for a client's proxy settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

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
