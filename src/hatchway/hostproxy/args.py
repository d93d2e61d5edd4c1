"""Command line of hatchway-hostproxy (stdlib only: argparse-manpage execs this by path).

One sub-command per role: ``serve`` (the daemon, foreground), ``status``,
``stop``, ``token`` (host side); ``open``, ``git-credential``,
``callback-forwarder``, ``socket-server`` (container side); ``bridge`` (the
host side of the socket bridge).
"""

from __future__ import annotations

import os
import sys

if not __package__:  # exec'd by path: make the hatchway package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hatchway import __version__
from hatchway.common.cliargs import CommandParser, ParserBuilder, parse_duration
from hatchway.hostproxy import VERSION  # noqa: E402

PROG = VERSION.prog

DEFAULT_PORT = 18374


def duration(text: str) -> float:
    """Go duration (``30s``, ``5m``) or plain seconds."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def _serve(b: ParserBuilder) -> None:
    sb = b.command("serve", help="run the host proxy daemon in the foreground",
                   examples=[(f"{PROG} serve --port 18374", "the daemon on loopback port 18374")])
    sb.option("--port", env="HATCHWAY_HOSTPROXY_PORT", default=DEFAULT_PORT, type=int, help="port to listen on")
    sb.option("--bind", env="HATCHWAY_HOSTPROXY_BIND", default="127.0.0.1,::1",
              help="comma-separated addresses to listen on (never 0.0.0.0; on Linux add the agent network's "
              "gateway IP)")
    sb.option("--poll-interval", env="HATCHWAY_HOSTPROXY_POLL_INTERVAL", default=30.0, type=duration,
              help="seconds (or Go duration) between container counts")
    sb.option("--grace-period", env="HATCHWAY_HOSTPROXY_GRACE_PERIOD", default=60.0, type=duration,
              help="delay before the first container count")
    sb.option("--max-consecutive-errs", env="HATCHWAY_HOSTPROXY_MAX_ERRORS", default=10, type=int,
              help="Docker errors in a row before the daemon exits")
    sb.flag("--no-watch", env="HATCHWAY_HOSTPROXY_NO_WATCH", help="never exit for lack of agent containers")
    sb.flag("--allow-tokenless", env="HATCHWAY_HOSTPROXY_ALLOW_TOKENLESS",
            help="compatibility switch: admit requests without a container token (unmodified upstream "
            "containers); logged as a warning at start")
    sb.option("--git-host", action="append", default=[],
              help="host whose git credentials any container may ask for (repeatable); tokens add their "
              "project's remotes")
    sb.flag("--git-allow-store", env="HATCHWAY_HOSTPROXY_GIT_ALLOW_STORE",
            help="let containers store and erase host git credentials")
    sb.flag("--callback-any-method", env="HATCHWAY_HOSTPROXY_CALLBACK_ANY_METHOD",
            help="capture any method and path on callback listeners (upstream); default GET on the registered path")
    sb.option("--open-rate", env="HATCHWAY_HOSTPROXY_OPEN_RATE", default=10, type=int,
              help="URLs a container may open per minute")
    sb.option("--request-rate", env="HATCHWAY_HOSTPROXY_REQUEST_RATE", default=600, type=int,
              help="requests a container may make per minute (0 = unlimited)")
    sb.option("--callback-per-container", env="HATCHWAY_HOSTPROXY_CALLBACK_PER_CONTAINER", default=2, type=int,
              help="live callback sessions per container")
    sb.option("--callback-total", env="HATCHWAY_HOSTPROXY_CALLBACK_TOTAL", default=64, type=int,
              help="live callback sessions in all")
    sb.option("--browser-command", env="HATCHWAY_HOSTPROXY_BROWSER",
              help="command that opens a URL (the URL is appended as one argument); default per platform")
    sb.option("--browser-timeout", env="HATCHWAY_HOSTPROXY_BROWSER_TIMEOUT", default=10.0, type=duration,
              help="seconds the browser command may take")
    sb.option("--egress-rules", env="HATCHWAY_HOSTPROXY_EGRESS_RULES", default="",
              help="the firewall's egress rules file (egress-rules.yaml): /open/url opens only URLs it allows "
              "(403 'blocked by egress policy'; 500 'egress rules unavailable' when it cannot be read); "
              "default: no check")
    sb.option("--log-level", env="HATCHWAY_LOG_LEVEL", default="info", help="log level")
    sb.log_format()


def build_parser() -> CommandParser:
    parser = ParserBuilder.new_parser(
        PROG, "clawker-compatible host proxy: open URLs, OAuth callbacks and git credentials for containers, "
        "and the SSH/GPG agent socket bridge.", style="cobra")
    b = ParserBuilder(parser)
    b.version(PROG, __version__, flags=VERSION.flags, text=VERSION.line())
    _serve(b)
    b.command("status", help="tell whether the daemon runs")
    stop = b.command("stop", help="stop the daemon (SIGTERM, after checking that the PID is the daemon)")
    stop.option("--wait", type=duration, default=0.0, help="wait this long for the daemon to exit")
    token = b.command("token", help="mint a container token into the tokens file and print it")
    token.option("--container", required=True, help="container id the token belongs to")
    token.option("--project", default="", help="project name")
    token.option("--git-host", action="append", default=[], help="git host of the project's remotes (repeatable)")
    op = b.command("open", help="container side: open a URL in the host browser (the container's BROWSER)")
    op.parser.add_argument("url", help="URL to open")
    cred = b.command("git-credential", help="container side: git credential helper (get, store, erase)")
    cred.parser.add_argument("action", help="git's credential action")
    fw = b.command("callback-forwarder", help="container side: wait for the captured OAuth callback and replay it")
    fw.go_option("session", env="CALLBACK_SESSION", default="", help="callback session id")
    fw.go_option("port", env="CALLBACK_PORT", default=0, type=int, help="port of the in-container listener")
    fw.go_option("proxy", env="CLAWKER_HOST_PROXY", default="", help="host proxy URL")
    fw.go_option("timeout", env="CB_FORWARDER_TIMEOUT", default=300.0, type=duration, help="overall timeout")
    fw.go_option("poll", env="CB_FORWARDER_POLL_INTERVAL", default=2.0, type=duration, help="poll interval")
    fw.go_option("cleanup", env="CB_FORWARDER_CLEANUP", default="true",
                 help="delete the session afterwards (true, 1, yes)")
    fw.go_flag("v", help="verbose")
    b.command("socket-server", help="container side: serve the agent sockets of CLAWKER_REMOTE_SOCKETS over "
              "stdin/stdout (run by docker exec -i)")
    br = b.command("bridge", help="host side: run the socket bridge into a container (docker exec -i)")
    br.option("--container", required=True, help="container id")
    br.option("--server", default="/usr/local/bin/hatchway-hostproxy socket-server",
              help="the in-container socket server command")
    br.flag("--gpg", help="forward the GPG agent (its extra socket) and send the public keyring")
    br.option("--pid-file", default="", help="write the bridge's PID here")
    b.document(
        exit_status=[("0", "success"), ("1", "failure (the reason is printed)"), ("2", "usage error")],
        notes=[("environment", "Host: CLAWKER_STATE_DIR / XDG_STATE_HOME (state directory), DOCKER_HOST, "
                "SSH_AUTH_SOCK. Container: CLAWKER_HOST_PROXY, HATCHWAY_HOSTPROXY_TOKEN or "
                "HATCHWAY_HOSTPROXY_TOKEN_FILE, CLAWKER_REMOTE_SOCKETS.")],
    )
    return parser
