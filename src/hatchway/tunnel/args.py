"""Command line of hatchway-tunnel (stdlib only: argparse-manpage execs this by path).

Without a sub-command it is the KohakuRiver tunnel client, flag for flag
(tunnel.md section 3). ``runner`` serves the runner-side WebSocket endpoint and
``forward`` is the user-side forwarder (``kohakuriver forward``).
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
from hatchway.common.cliargs import CommandParser, ParserBuilder  # noqa: E402
from hatchway.tunnel import VERSION  # noqa: E402

PROG = VERSION.prog

SUBCOMMANDS = ("runner", "forward")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
LOG_LEVEL_HELP = ("log filter as tracing's EnvFilter takes it: a level (trace, debug, info, warn, error; any case) "
                  "or directives such as 'info,tunnel=debug'; RUST_LOG, when set, overrides it")
DEFAULT_RUNNER_PORT = 8001


def _add_policy(b: ParserBuilder) -> None:
    b.option(
        "--slow-consumer",
        env="HATCHWAY_SLOW_CONSUMER",
        default="block",
        choices=("block", "reset"),
        help="what a connection whose local reader falls behind does: block (the whole tunnel waits, "
        "as upstream) or reset (only that connection is closed)",
    )
    b.option(
        "--stall-timeout",
        env="HATCHWAY_STALL_TIMEOUT",
        default=10.0,
        type=float,
        help="block policy: reset a connection whose local reader has drained nothing for this many seconds, "
        "so the others go on; 0 = wait forever (upstream)",
    )
    b.option(
        "--buffer-limit",
        env="HATCHWAY_BUFFER_LIMIT",
        default=1024 * 1024,
        type=int,
        help="bytes buffered per connection toward its local socket before the slow-consumer policy applies",
    )


def _add_client_options(b: ParserBuilder) -> None:
    b.option("-r", "--runner-url", env="RUNNER_URL", required=True,
             help="base WebSocket URL of the runner, e.g. ws://host:8001")
    b.option("-c", "--container-id", env="CONTAINER_ID", required=True, help="tunnel identity (the container name)")
    b.option("--token", env="HATCHWAY_TUNNEL_TOKEN",
             help="token for a runner started with --token (sent as 'Authorization: Bearer TOKEN' on the "
             "upgrade request; without it the request is upstream's, header for header)")
    b.option(
        "--reconnect-delay",
        env="RECONNECT_DELAY",
        default=5,
        type=int,
        help="seconds to sleep between tunnel connections or attempts",
    )
    b.option(
        "--max-reconnect",
        env="MAX_RECONNECT",
        default=0,
        type=int,
        help="give up after this many consecutive failed connection attempts; 0 = never",
    )
    b.option("--log-level", env="LOG_LEVEL", default="info", metavar="FILTER", help=LOG_LEVEL_HELP)
    b.log_format()
    b.option(
        "--backoff",
        env="HATCHWAY_BACKOFF",
        default="fixed",
        choices=("fixed", "jitter"),
        help="fixed: sleep --reconnect-delay after every attempt (upstream); "
        "jitter: exponential backoff from --reconnect-delay up to 60 s with +/-20%% jitter",
    )
    b.option("--heartbeat", env="HATCHWAY_HEARTBEAT", default=20.0, type=float,
             help="seconds between WebSocket pings; no pong within half of it reconnects")
    b.option("--connect-timeout", env="HATCHWAY_CONNECT_TIMEOUT", default=10.0, type=float,
             help="timeout in seconds for the WebSocket connect and for local dials")
    b.option("--udp-idle-timeout", env="HATCHWAY_UDP_IDLE_TIMEOUT", default=300.0, type=float,
             help="seconds after which an idle UDP flow is released (CLOSE is sent)")
    b.option("--ipv6-fallback", env="HATCHWAY_IPV6_FALLBACK", default="on", choices=("on", "off"),
             help="when 127.0.0.1:PORT refuses a TCP connection, try [::1]:PORT")
    _add_policy(b)


def _add_runner(b: ParserBuilder) -> None:
    b.command(
        "runner",
        help="serve the runner-side endpoint: /ws/tunnel/{id} and /ws/forward/{id}/{port}",
        description="Serve the KohakuRiver runner's tunnel and forward WebSocket routes.",
        examples=[("hatchway-tunnel runner --port 8001 --token secret", "a runner endpoint that asks for a token")],
        build=_runner_options,
    )


def _runner_options(rb: ParserBuilder) -> None:
    rb.option("--host", env="HATCHWAY_RUNNER_HOST", default="0.0.0.0", help="address to listen on")
    rb.option("--port", env="RUNNER_PORT", default=DEFAULT_RUNNER_PORT, type=int, help="port to listen on")
    rb.option(
        "--token",
        env="HATCHWAY_TUNNEL_TOKEN",
        help="require this token on /ws/forward and /ws/tunnel (header 'Authorization: Bearer TOKEN' or "
        "query ?token=)",
    )
    rb.flag("--allow-tokenless-tunnels", env="HATCHWAY_RUNNER_ALLOW_TOKENLESS_TUNNELS",
            help="with --token: still admit tunnel clients that send no token (unmodified upstream clients), "
            "with a warning")
    rb.option("--heartbeat", env="HATCHWAY_HEARTBEAT", default=20.0, type=float,
              help="seconds between WebSocket pings on tunnel connections")
    rb.option("--slow-consumer", env="HATCHWAY_RUNNER_SLOW_CONSUMER", default="block", choices=("block", "reset"),
              help="when one forward WebSocket cannot keep up: block (the tunnel waits for it; nothing is dropped) "
              "or reset (only the connection that overflows is closed)")
    rb.option("--buffer-limit", env="HATCHWAY_RUNNER_BUFFER_LIMIT", default=4 * 1024 * 1024, type=int,
              help="bytes buffered toward one forward WebSocket before the slow-consumer policy applies")
    rb.option("--log-level", env="LOG_LEVEL", default="info", metavar="FILTER", help=LOG_LEVEL_HELP)
    rb.log_format()


def _add_forward(b: ParserBuilder) -> None:
    b.command(
        "forward",
        help="forward a local port to a port inside a container (kohakuriver forward)",
        description="Listen locally and forward each connection (or UDP flow) to REMOTE_PORT "
        "inside the task's container, over one WebSocket.",
        examples=[("hatchway-tunnel forward --url ws://runner:8001 kohakuriver-task-42 8888 -l 18888",
                   "reach Jupyter inside a container on 127.0.0.1:18888")],
        build=_forward_options,
    )


def _forward_options(fb: ParserBuilder) -> None:
    p = fb.parser
    p.add_argument("task_id", metavar="TASK_ID", help="task id (via the host) or container name (direct to a runner)")
    p.add_argument("remote_port", metavar="REMOTE_PORT", type=int, help="port inside the container")
    fb.option("-l", "--local-port", type=int, help="local port to listen on [default: REMOTE_PORT]")
    fb.option("-H", "--local-host", default="127.0.0.1", help="local address to listen on")
    fb.option("-p", "--proto", default="tcp", choices=("tcp", "udp"), help="protocol to forward")
    fb.option("--host", dest="server_host", env="KOHAKURIVER_HOST", default="localhost",
              help="KohakuRiver host (or runner) address")
    fb.option("--port", dest="server_port", env="KOHAKURIVER_PORT", default=8000, type=int,
              help="KohakuRiver host (or runner) port")
    fb.option("--url", env="HATCHWAY_FORWARD_URL",
              help="base WebSocket URL (ws:// or wss://) instead of --host/--port, e.g. ws://runner:8001")
    fb.option("--token", env="HATCHWAY_TUNNEL_TOKEN", help="token for a runner started with --token")
    fb.option("--udp-idle-timeout", env="HATCHWAY_UDP_IDLE_TIMEOUT", default=300.0, type=float,
              help="seconds after which an idle UDP source is forgotten")
    fb.option("--slow-consumer", env="HATCHWAY_FORWARD_SLOW_CONSUMER", default="block", choices=("block", "reset"),
              help="when one local connection does not read fast enough: block (every connection waits for it, "
              "at most --stall-timeout while it reads nothing) or reset (only that connection is closed at once)")
    fb.option("--stall-timeout", env="HATCHWAY_STALL_TIMEOUT", default=10.0, type=float,
              help="block policy: reset a local connection that has read nothing for this many seconds; 0 = never")
    fb.option("--buffer-limit", env="HATCHWAY_FORWARD_BUFFER_LIMIT", default=16 * 1024 * 1024, type=int,
              help="bytes buffered per local connection before the slow-consumer policy applies")
    fb.option("--log-level", env="LOG_LEVEL", default="info", metavar="FILTER", help=LOG_LEVEL_HELP)
    fb.log_format()


EXAMPLES = [
    ("hatchway-tunnel --runner-url ws://172.30.0.1:8001 --container-id kohakuriver-task-42 --log-level info",
     "the tunnel client, as the KohakuRiver runner starts it inside a container"),
    ("RUNNER_URL=ws://runner:8001 CONTAINER_ID=vps-1 hatchway-tunnel --max-reconnect 5",
     "the same from the environment, giving up after 5 failed attempts in a row"),
]
EXIT_STATUS = [
    ("0", "stopped by SIGTERM/SIGINT (the WebSocket is closed with a close frame); --help; --version"),
    ("1", ("the client gave up after --max-reconnect consecutive failed attempts; a runner or forwarder "
     "that cannot listen or whose channel failed")),
    ("2", "usage error: unknown flag, bad value, missing --runner-url/--container-id, bad environment variable"),
    ("128+N", "a second signal N during shutdown, or the shutdown deadline passed"),
]
NOTES = [
    ("logging", ("Logs go to stderr, as text or, with --log-format json (or HATCHWAY_LOG_FORMAT=json), one JSON "
     "object per line with the fields ts, level, logger, msg and one field per value. Once connected (client) "
     "or listening (runner, forward), the program prints one line 'READY <what> <address>' on stderr "
     "(a JSON object with ready=true under --log-format json), for supervisors and scripts to wait on.")),
]


def build_parser(environ: Mapping[str, str] | None = None) -> CommandParser:
    parser = ParserBuilder.new_parser(
        PROG,
        "KohakuRiver-compatible tunnel client. Dials the runner over a WebSocket and relays "
        "TCP/UDP connections to 127.0.0.1:{port} inside the container.",
        epilog="Sub-commands 'runner' and 'forward' serve the runner endpoint and forward a local port.",
        style="clap",
        environ=environ,
    )
    b = ParserBuilder(parser)
    b.version(PROG, __version__, flags=VERSION.flags, text=VERSION.line())
    _add_client_options(b)
    _add_runner(b)
    _add_forward(b)
    b.document(examples=EXAMPLES, exit_status=EXIT_STATUS, notes=NOTES)
    return parser
