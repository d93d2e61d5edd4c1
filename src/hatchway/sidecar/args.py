"""Command line of hatchway-sidecar (stdlib only: argparse-manpage execs this by path).

The Go arkitekt-sidecar's flags with Go ``flag`` syntax (``-x v``, ``--x v``,
``-x=v``; ``-verbose``, ``-verbose=false``); ``-h`` prints Go's usage on
stderr and exits 0, an unknown flag exits 2. ``-backend``, ``-direct-config``,
``-dial-timeout`` and ``-join-timeout`` are hatchway extensions that
upstream's parents never pass.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

if not __package__:  # exec'd by path: make the hatchway package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hatchway import __version__  # noqa: E402
from hatchway.common.cliargs import CommandParser, ParserBuilder, parse_duration  # noqa: E402
from hatchway.sidecar import VERSION  # noqa: E402

PROG = VERSION.prog

AUTHKEY_ENVS = ("TS_AUTHKEY", "TS_AUTH_KEY")
BACKEND_ENV = "HATCHWAY_SIDECAR_BACKEND"


def auth_key(flag: str, environ: Mapping[str, str]) -> str:
    """``-authkey``, else ``TS_AUTHKEY``, else ``TS_AUTH_KEY`` (tsnet's order)."""
    if flag:
        return flag
    for name in AUTHKEY_ENVS:
        value = environ.get(name, "")
        if value:
            return value
    return ""


def build_parser(environ: Mapping[str, str] | None = None) -> CommandParser:
    parser = ParserBuilder.new_parser(
        PROG,
        "Tailnet proxy sidecar, a drop-in replacement for arkitekt-sidecar: joins a Tailscale-compatible tailnet "
        "in-process (arkitekt-mesh) and offers an HTTP/CONNECT or SOCKS5 proxy on 127.0.0.1, a status API and "
        "@@SIDECAR:...@@ lines on stdout.",
        style="goflag", environ=environ,
    )
    b = ParserBuilder(parser)
    b.go_option("authkey", default="", metavar="string",
                help="Tailscale Auth Key (empty: $TS_AUTHKEY, then $TS_AUTH_KEY)")
    b.go_option("coordserver", default="", metavar="string", help="Coordination Server URL")
    b.go_option("hostname", default="ts-proxy", metavar="string", help="Hostname in the Tailnet")
    b.go_option("mode", default="http", metavar="string", help="Proxy mode: 'http' or 'socks5'")
    b.go_option("port", default="8080", metavar="string", help="Port to listen on (127.0.0.1 only)")
    b.go_option("statedir", default="", metavar="string",
                help="State directory (defaults to current working directory; created with mode 0700)")
    b.go_option("statusport", default="", metavar="string", help="Port for status API (disabled if empty)")
    b.go_flag("verbose", help="Enable verbose logging (backend logs on stderr, prefixed '[Tailscale] ')")
    b.go_option("backend", env=BACKEND_ENV, default="mesh", choices=("mesh", "direct"), metavar="string",
                help="extension: network backend: mesh (arkitekt-mesh, in process) or direct (tests only)")
    b.go_option("direct-config", default="", metavar="FILE",
                help="extension: the direct backend's JSON script (name map, scripted status), tests only")
    b.go_option("dial-timeout", default="10s", type=parse_duration, metavar="DURATION",
                help="extension: bound on every dial through the tailnet")
    b.go_option("join-timeout", default="60s", type=parse_duration, metavar="DURATION",
                help="extension: give up joining the tailnet after this long (upstream: 60s)")
    b.log_format()
    b.version(PROG, __version__, flags=VERSION.flags, text=VERSION.line())
    b.document(
        examples=[
            (f"{PROG} -coordserver https://ctl.example -authkey tskey-auth-XXX -port 8080 -statusport 9090",
             "HTTP proxy on 127.0.0.1:8080, status API on 127.0.0.1:9090"),
            (f"TS_AUTHKEY=tskey-auth-XXX {PROG} --coordserver=https://ctl.example -mode socks5 -statedir /var/lib/sc",
             "SOCKS5 proxy; tailnet names resolve inside the tailnet (curl --socks5-hostname)"),
            ("curl -x http://127.0.0.1:8080 http://svc/", "reach the tailnet host svc through the proxy"),
        ],
        exit_status=[
            ("0", "stopped by SIGTERM or SIGINT (after @@SIDECAR:SHUTDOWN@@ and a clean close of the node)"),
            ("1", "fatal error, after an @@SIDECAR:ERROR@@ line: unknown mode, state dir, tailnet connection "
                  "failed (login needed), bind failure"),
            ("2", "usage error"),
        ],
        notes=[
            ("auth key", "TS_AUTHKEY, then TS_AUTH_KEY: the auth key when -authkey is empty (tsnet's order). "
             "ARKITEKT_MESH_CA_FILE: an extra CA (PEM file) arkitekt-mesh trusts for TLS (DERP)."),
            ("shutdown", "SIGTERM and SIGINT print @@SIDECAR:SHUTDOWN@@, stop accepting, close the tailnet node and "
             "exit 0 within 4.5 s (parents such as arkitekt-gateway send SIGKILL after 5 s)."),
            ("stdout", "Arkitekt Sidecar VERSION, then @@SIDECAR:STARTING@@ VERSION, CONNECTING HOSTNAME, "
             "[AUTH_REQUIRED URL], CONNECTED ips=[V4 V6], LISTENING mode=M addr=A and READY M://A (only after "
             "the proxy socket is bound), SHUTDOWN; ERROR TEXT on failure. Parents match "
             "'@@SIDECAR:(\\w+)@@\\s*(.*)'. Each proxied request logs '[CLIENT] METHOD URL' (http) or "
             "'[SOCKS5] Dialing HOST:PORT via Tailscale' (socks5)."),
            ("status api", "GET (any method) /health -> OK; /status -> {\"self\":{...11 keys},\"peers\":[...],"
             "\"backend_state\":...}; peers is always a list (empty on the mesh backend, which exposes no peers)."),
        ],
    )
    return parser
