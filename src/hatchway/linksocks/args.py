"""Command line of hatchway-linksocks (stdlib only: argparse-manpage execs this by path).

The sub-commands, flags, defaults and ``LINKSOCKS_*`` variables of LinkSocks Go
1.10.x (linksocks.md section 2). ``LINKSOCKS_MODE`` picks the sub-command when
none is given (see :func:`argv_with_mode`). The ``--direct-*`` options are
accepted for compatibility; hatchway is relay-only.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

if not __package__:  # exec'd by path: make the hatchway package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hatchway import __version__  # noqa: E402
from hatchway.common.cliargs import (  # noqa: E402
    CommandParser,
    ParserBuilder,
    parse_duration,
)
from hatchway.linksocks import VERSION  # noqa: E402

PROG = VERSION.prog

SUBCOMMANDS = ("server", "client", "provider", "connector", "version")
COMMANDS = (*SUBCOMMANDS, "help", "completion")
DIRECT_MODES = ("relay-only", "auto", "direct-only")
DIRECT_DISCOVERY = ("stun", "server", "auto")
DIRECT_ONLY_ACTIONS = ("exit", "refuse")
MODE_TO_COMMAND = {
    "server": "server",
    "client": "client",
    "forward": "client",
    "connector": "connector",
    "provider": "provider",
    "reverse": "provider",
}
DEFAULT_WS_PORT = 8765
DEFAULT_SOCKS_PORT = 9870
DEFAULT_BUFFER_SIZE = 1048576


def parse_wire_version(text: str) -> int:
    """A protocol version byte: ``1``, ``2``, ``0x01``, ``0x02`` (major nibble must be 0)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid protocol version: {text!r}") from None
    if not 0x01 <= value <= 0x0F:
        raise argparse.ArgumentTypeError("protocol version must be 0x01..0x0F (major 0)")
    return value


def _add_common(b: ParserBuilder) -> None:
    b.count("-d", "--debug", help="debug logging (-d debug, -dd trace)")
    b.log_format()
    b.option("-x", "--upstream-proxy", env="LINKSOCKS_UPSTREAM_PROXY",
             help="upstream proxy for the dials this side performs: socks5://[user:pass@]host[:port] "
             "or http://[user:pass@]host[:port]")
    b.flag("-f", "--fast-open", env="LINKSOCKS_FASTOPEN",
           help="answer SOCKS clients as soon as Connect is sent and stream data at once")
    b.option("--transport-grace", default=30.0, type=parse_duration, metavar="DURATION",
             help="how long channels survive a broken WebSocket, waiting for a reconnect, e.g. 30s, 1m (0 disables)")
    b.option("--access-rule", action="append", default=None, metavar="ADDR:PORT",
             help="destination allow rule, repeatable (e.g. 192.168.1.0/24:22)")
    b.option("--wire-version", env="HATCHWAY_LINKSOCKS_WIRE_VERSION", default=0x01, type=parse_wire_version,
             help="protocol version byte sent on the wire (0x01 talks to every peer; Go 1.10 sends 0x02)")
    b.option("--ping-interval", env="HATCHWAY_LINKSOCKS_PING_INTERVAL", default=30.0, type=parse_duration,
             metavar="DURATION", help="WebSocket ping interval, e.g. 30s")
    b.option("--read-timeout", env="HATCHWAY_LINKSOCKS_READ_TIMEOUT", default=60.0, type=parse_duration,
             metavar="DURATION", help="close a WebSocket that received nothing (no message, no pong) for this long")
    b.option("--stall-timeout", env="HATCHWAY_LINKSOCKS_STALL_TIMEOUT", default=10.0, type=parse_duration,
             metavar="DURATION", help="reset a connection whose local reader has taken nothing for this long, so "
             "the others on its WebSocket go on (0 = wait forever, as upstream)")


SERVER_EXAMPLES = [
    ("hatchway-linksocks server -t secret", "forward mode: clients get a local SOCKS5 port, this server dials"),
    ("hatchway-linksocks server -r -t secret -p 1080", "reverse mode: SOCKS5 on 127.0.0.1:1080, providers dial"),
]
CLIENT_EXAMPLES = [
    ("hatchway-linksocks client -t secret -u ws://server:8765 -p 1080", "forward mode: SOCKS5 on 127.0.0.1:1080"),
    ("hatchway-linksocks provider -t secret -u ws://server:8765", "reverse mode: dial for the server's SOCKS5 users"),
]


def _add_server(b: ParserBuilder) -> None:
    b.command(
        "server",
        help="start the LinkSocks server (WebSocket endpoint; SOCKS5 port in reverse mode)",
        description="Start a SOCKS5-over-WebSocket server: forward mode dials targets for clients; "
        "reverse mode (-r) offers a SOCKS5 port served by connected providers; "
        "agent mode (-r -c) relays connectors to providers.",
        examples=SERVER_EXAMPLES,
        build=_server_options,
    )


def _server_options(sb: ParserBuilder) -> None:
    sb.option("-H", "--ws-host", env="LINKSOCKS_WEBSOCKET_HOST", default="0.0.0.0",
              help="WebSocket server listen address")
    sb.option("-P", "--ws-port", env="LINKSOCKS_WEBSOCKET_PORT", default=DEFAULT_WS_PORT, type=int,
              help="WebSocket server listen port")
    sb.option("-t", "--token", env="LINKSOCKS_TOKEN", help="auth token, generated when not given")
    sb.option("-c", "--connector-token", env="LINKSOCKS_CONNECTOR_TOKEN",
              help="connector token for reverse mode (generated in reverse mode without -a)")
    sb.flag("-a", "--connector-autonomy", env="LINKSOCKS_CONNECTOR_AUTONOMY",
            help="let providers manage their own connector tokens")
    sb.option("-b", "--buffer-size", default=DEFAULT_BUFFER_SIZE, type=int,
              help="largest Data payload sent, in bytes")
    sb.flag("-r", "--reverse", help="reverse mode: SOCKS5 on the server, providers dial")
    _add_socks(sb, " (reverse mode)")
    sb.flag("-i", "--socks-nowait", help="bind the SOCKS5 port at once instead of at the first provider")
    sb.option("-k", "--api-key", env="LINKSOCKS_API_KEY", help="enable the HTTP API with this key")
    sb.option("--connector-wait-provider", default=5.0, type=parse_duration, metavar="DURATION",
              help="how long a connector's request waits for a provider, e.g. 5s")
    sb.flag("--direct-enable", help="accepted for compatibility; hatchway is relay-only")
    sb.flag("--direct-rendezvous-udp", help="accepted for compatibility; hatchway is relay-only")
    sb.option("--direct-rendezvous-host", help="accepted for compatibility; hatchway is relay-only")
    sb.option("--direct-rendezvous-port", type=int, help="accepted for compatibility; hatchway is relay-only")
    _add_common(sb)


def _add_socks(b: ParserBuilder, where: str) -> None:
    """The SOCKS5 listener's options, the same on the server (reverse mode) and the client."""
    b.option("-s", "--socks-host", env="LINKSOCKS_SOCKS_HOST", default="127.0.0.1",
             help=f"SOCKS5 listen address{where}")
    b.option("-p", "--socks-port", env="LINKSOCKS_SOCKS_PORT", default=DEFAULT_SOCKS_PORT, type=int,
             help=f"SOCKS5 listen port{where}")
    b.option("-n", "--socks-username", env="LINKSOCKS_SOCKS_USERNAME", help="SOCKS5 username")
    b.option("-w", "--socks-password", env="LINKSOCKS_SOCKS_PASSWORD", help="SOCKS5 password")


def _add_client(b: ParserBuilder, name: str, summary: str) -> None:
    sub = b.command(name, help=summary, examples=CLIENT_EXAMPLES, build=_client_options)
    sub.parser.set_defaults(reverse_mode=name == "provider")


def _client_options(cb: ParserBuilder) -> None:
    cb.option("-t", "--token", env="LINKSOCKS_TOKEN", default="anonymous", help="authentication token")
    cb.option("-u", "--url", env="LINKSOCKS_URL", default="ws://localhost:8765", help="WebSocket server address")
    cb.flag("-r", "--reverse", help="reverse mode: act as a provider that dials for the server")
    cb.option("-c", "--connector-token", env="LINKSOCKS_CONNECTOR_TOKEN",
              help="with -r: connector token to add after connecting")
    _add_socks(cb, "")
    cb.flag("-i", "--socks-no-wait", help="open the SOCKS5 port before the first authentication")
    cb.flag("-R", "--no-reconnect", help="stop when the server disconnects")
    cb.flag("--retry-auth", env="LINKSOCKS_RETRY_AUTH", help="keep retrying after an authentication failure")
    cb.option("-T", "--threads", default=1, type=int,
              help="parallel WebSocket connections (negative: number of CPUs)")
    cb.flag("-E", "--no-env-proxy", help="ignore http_proxy/https_proxy for the WebSocket connection")
    cb.option("-b", "--buffer-size", default=DEFAULT_BUFFER_SIZE, type=int,
              help="largest Data payload sent, in bytes")
    cb.option("--direct-mode", default="auto", choices=DIRECT_MODES,
              help="accepted for compatibility; hatchway is relay-only")
    cb.option("--direct-discovery", default="stun", choices=DIRECT_DISCOVERY, help="accepted for compatibility")
    cb.option("--direct-host-candidates", default="auto", help="accepted for compatibility")
    cb.option("--stun-server", action="append", default=None, help="accepted for compatibility")
    cb.option("--direct-only-action", default="exit", choices=DIRECT_ONLY_ACTIONS, help="accepted for compatibility")
    cb.flag("--direct-upnp", help="accepted for compatibility")
    cb.option("--direct-upnp-lease", type=parse_duration, metavar="DURATION", help="accepted for compatibility")
    cb.flag("--direct-upnp-keep", help="accepted for compatibility")
    cb.option("--direct-upnp-external-port", type=int, help="accepted for compatibility")
    _add_common(cb)


EXIT_STATUS = [
    ("0", ("stopped by SIGTERM/SIGINT, 'version', '--help', 'help', 'completion'; a client run with -R whose "
     "server went away")),
    ("1", ("usage error (unknown flag or command, bad value, bad environment variable: one line 'Error: ...'); "
     "cannot listen; authentication refused (without --retry-auth); a client with -R that cannot connect")),
    ("128+N", "a second signal N during shutdown, or the shutdown deadline passed"),
]
NOTES = [
    ("logging", ("Logs go to stderr, as text or, with --log-format json, one JSON object per line with the "
     "fields ts, level, logger, msg and one field per value. Once a sub-command serves, it prints one line "
     "'READY <what> <address>' on stderr (a JSON object with ready=true under --log-format json), e.g. "
     "'READY linksocks server ws://0.0.0.0:8765', for supervisors and scripts to wait on.")),
    ("mode", ("LINKSOCKS_MODE (server, client, forward, connector, provider, reverse) selects the sub-command "
     "when the command line names none.")),
]


def build_parser(environ: Mapping[str, str] | None = None) -> CommandParser:
    parser = ParserBuilder.new_parser(
        PROG,
        "LinkSocks-compatible SOCKS5/HTTP proxy over WebSocket: server, client, provider, connector.",
        style="cobra",
        environ=environ,
    )
    b = ParserBuilder(parser)
    b.version(PROG, __version__, flags=VERSION.flags, text=VERSION.line())
    _add_server(b)
    _add_client(b, "client", "start a client (forward mode: local SOCKS5 port; -r: provider)")
    _add_client(b, "provider", "start a provider (a client in reverse mode; dials for the server)")
    _add_client(b, "connector", "start a connector (a client with a local SOCKS5 port, agent mode)")
    b.command("version", help="print the version")
    b.help_command()
    b.completion_command()
    b.document(examples=SERVER_EXAMPLES + CLIENT_EXAMPLES, exit_status=EXIT_STATUS, notes=NOTES)
    return parser


def argv_with_mode(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Prepend the sub-command named by LINKSOCKS_MODE when the command line names none."""
    environ = os.environ if environ is None else environ
    args = list(argv)
    mode = environ.get("LINKSOCKS_MODE", "").strip().lower()
    if not mode or any(arg in COMMANDS for arg in args[:1]):
        return args
    if args[:1] and args[0] in ("-h", "--help", "-V", "--version"):
        return args
    command = MODE_TO_COMMAND.get(mode)
    if command is None:
        return args
    return [command, *args]
