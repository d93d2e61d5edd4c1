"""``hatchway-hostproxy``: one executable, one sub-command per role (see args.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from . import VERSION


def _proxy(url: str | None = None) -> Any:
    from .proxyclient import DEFAULT_PROXY, ProxyClient, read_token

    return ProxyClient(url or os.environ.get("CLAWKER_HOST_PROXY") or DEFAULT_PROXY, read_token())


def main(argv: Sequence[str] | None = None) -> int:
    if VERSION.answer(sys.argv[1:] if argv is None else argv):
        return 0
    from .args import build_parser

    args = build_parser().parse_args(argv)
    command = args.command
    if command == "serve":
        return _serve(args)
    if command == "status":
        from .pidfile import get_daemon_pid
        from .statedir import StatePaths

        pid = get_daemon_pid(StatePaths().pid_file)
        print(f"Host proxy daemon is running (PID: {pid})" if pid else "Host proxy daemon is not running")
        return 0
    if command == "stop":
        return _stop(args)
    if command == "token":
        from .statedir import StatePaths
        from .tokens import mint_token

        print(mint_token(StatePaths().tokens_file, args.container, project=args.project, git_hosts=args.git_host))
        return 0
    if command == "open":
        if not os.environ.get("CLAWKER_HOST_PROXY"):
            print("host-open: CLAWKER_HOST_PROXY is not set", file=sys.stderr)
            return 1
        from .hostopen import run_host_open

        return run_host_open(args.url, _proxy())
    if command == "git-credential":
        from .credhelper import run_credential_helper

        return run_credential_helper(args.action, _proxy())
    if command == "callback-forwarder":
        from .forwarder import run_forwarder

        if not args.session or not args.port:
            print("callback-forwarder: -session and -port are required", file=sys.stderr)
            return 1
        cleanup = str(args.cleanup).lower() in ("true", "1", "yes")
        return run_forwarder(args.session, args.port, _proxy(args.proxy or None), timeout=args.timeout,
                             poll=args.poll, cleanup=cleanup, verbose=args.v)
    if command == "socket-server":
        from hatchway.common import lifecycle

        from .socketserver import serve_sockets

        return lifecycle.run(serve_sockets)
    if command == "bridge":
        from hatchway.common import lifecycle

        from .bridge import run_bridge

        return lifecycle.run(lambda: run_bridge(args))
    from .args import build_parser

    build_parser().print_help()
    return 0


def _serve(args: Any) -> int:
    from hatchway.common import lifecycle

    from .browser import SystemOpener
    from .daemon import Daemon, DaemonConfig
    from .server import HostProxyServer, ServerConfig
    from .statedir import StatePaths
    from .tokens import TokenRegistry

    lifecycle.setup_logging(args.log_level, args.log_format)
    paths = StatePaths()
    config = DaemonConfig(port=args.port, poll_interval=args.poll_interval, grace_period=args.grace_period,
                          max_consecutive_errs=args.max_consecutive_errs, watch=not args.no_watch)
    try:
        config.validate()
        server_config = ServerConfig(
            port=args.port, bind=[b.strip() for b in args.bind.split(",") if b.strip()],
            allow_tokenless=args.allow_tokenless, git_hosts=args.git_host, git_allow_store=args.git_allow_store,
            callback_any_method=args.callback_any_method, open_rate=args.open_rate, neutral_dir=paths.neutral_dir,
            request_rate=args.request_rate, callback_per_container=args.callback_per_container,
            callback_total=args.callback_total, egress_rules=args.egress_rules)
        if "0.0.0.0" in server_config.bind or "::" in server_config.bind:
            raise ValueError("refusing to listen on all interfaces")
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    import shlex

    opener = SystemOpener(shlex.split(args.browser_command) if args.browser_command else None,
                          timeout=args.browser_timeout)
    server = HostProxyServer(server_config, tokens=TokenRegistry(paths.tokens_file), opener=opener)
    daemon = Daemon(config, server_config, paths=paths, server=server)
    return lifecycle.run(daemon.run)


def _stop(args: Any) -> int:
    import time

    from .pidfile import is_daemon_running, stop_daemon
    from .statedir import StatePaths

    paths = StatePaths()
    if not stop_daemon(paths.pid_file, paths.lock_file):
        print("Host proxy daemon is not running")
        return 0
    print("Stop signal sent to host proxy daemon")
    if args.wait > 0:
        deadline = time.monotonic() + args.wait
        while is_daemon_running(paths.pid_file):
            if time.monotonic() > deadline:
                print(f"Error: timeout waiting for daemon to stop after {args.wait:g}s", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print("Host proxy daemon stopped")
    return 0
