"""Command line of hatchway-agent (stdlib only: argparse-manpage execs this by path).

The Go agent's flags with Go ``flag`` syntax (one dash or two, ``-x=v`` or
``-x v``, ``-keep-alive=true``); parsing stops at ``--`` or at the first
non-flag word and the rest is the main process's argv. Everything else is a
hatchway extension that upstream backends never pass.
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
from hatchway.agent import VERSION  # noqa: E402

PROG = VERSION.prog
from hatchway.common.cliargs import CommandParser, ParserBuilder, parse_duration  # noqa: E402

TOKEN_ENV = "SOCKERLESS_AGENT_TOKEN"
HEALTH_ENV = "HATCHWAY_AGENT_HEALTHCHECK"
LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled")


def build_parser(environ: Mapping[str, str] | None = None) -> CommandParser:
    parser = ParserBuilder.new_parser(
        PROG,
        "Sockerless-compatible remote execution agent: exec and attach over one WebSocket, "
        "Docker exit codes, PID 1 duties, health checks. Install it as sockerless-agent to replace the Go agent.",
        style="goflag", environ=environ,
    )
    b = ParserBuilder(parser)
    b.go_option("addr", default=":9111", metavar="ADDR", help="listen address (server mode)")
    b.go_option("callback", default="", metavar="URL",
                help="reverse mode: dial this URL (http/https become ws/wss) instead of listening")
    b.go_flag("keep-alive", help="run the remaining arguments as the main process (default /bin/sh); "
              "the agent exits with its exit code")
    b.go_option("log-level", default="info", metavar="LEVEL",
                help=f"log level: {', '.join(LEVELS)} (anything else means info)")
    b.go_flag("tty", help="extension: run the main process on a pseudo-terminal (with -keep-alive)")
    b.go_option("reverse-retries", default=0, type=int, metavar="N",
                help="extension: give up after N consecutive failed reverse dials (0: never)")
    b.go_option("health-cmd", default="", metavar="CMD",
                help="extension: health check command, run with /bin/sh -c (Docker's --health-cmd)")
    b.go_option("health-interval", default=0.0, type=parse_duration, metavar="DURATION",
                help="extension: time between health checks (default 30s)")
    b.go_option("health-timeout", default=0.0, type=parse_duration, metavar="DURATION",
                help="extension: health check timeout (default 30s)")
    b.go_option("health-start-period", default=0.0, type=parse_duration, metavar="DURATION",
                help="extension: start period during which failures do not count (default 0s)")
    b.go_option("health-start-interval", default=0.0, type=parse_duration, metavar="DURATION",
                help="extension: time between health checks during the start period (default 5s)")
    b.go_option("health-retries", default=0, type=int, metavar="N",
                help="extension: consecutive failures needed to report unhealthy (default 3)")
    b.go_option("healthcheck", env=HEALTH_ENV, default="", metavar="JSON",
                help="extension: health check as Docker's HealthConfig JSON "
                '({"Test":["CMD-SHELL","..."],"Interval":30000000000,...}); the -health-* flags override it')
    b.log_format()
    b.rest("argv", help="ARGV after the flags (or after --) is the main process, with -keep-alive.")
    b.version(PROG, __version__, flags=VERSION.flags, text=VERSION.line())
    b.document(
        examples=[
            (f"SOCKERLESS_AGENT_TOKEN=secret {PROG} -addr :9111 -keep-alive -- tail -f /dev/null",
             "server mode with a main process, bearer-token auth"),
            (f"{PROG} -callback 'https://backend/internal/v1/agent/connect?id=c1&token=t' -keep-alive -- node server.js",
             "reverse mode: dial the backend, exit with the main process's code"),
            (f"{PROG} -keep-alive -health-cmd 'test -f /tmp/ready' -health-interval 5s -- sleep infinity",
             "health checks reported in GET /health"),
        ],
        exit_status=[
            ("0..255", "with -keep-alive: the main process's exit code (128+N when signal N ended it)"),
            ("0", "without -keep-alive: stopped by SIGTERM or SIGINT"),
            ("1", "fatal error: cannot listen, the main process cannot start, reverse retries exhausted"),
            ("2", "usage error"),
        ],
        notes=[
            ("environment", f"{TOKEN_ENV}: the bearer token (empty or unset: no auth). Never passed to children, "
             "never logged. " + f"{HEALTH_ENV}: see -healthcheck."),
            ("signals", "SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the main "
             "process; without one, SIGTERM/SIGINT stop the agent. Every orphan is reaped (the agent is a child "
             "subreaper when not PID 1)."),
            ("http", "GET /health (never authenticated), GET /ws (Authorization: Bearer TOKEN, or ?token=TOKEN "
             "when there is no Authorization header)."),
            ("readiness", "server mode prints 'READY agent <host:port>' on stderr once it listens."),
        ],
    )
    return parser


def main_argv(args: object) -> list[str]:
    argv = getattr(args, "argv", None) or []
    return [str(item) for item in argv]
