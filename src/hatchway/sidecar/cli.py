"""``hatchway-sidecar``: the command line around :class:`~.service.Sidecar`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from ..common.lifecycle import EXIT_FAILURE, run, setup_logging
from . import VERSION
from .args import auth_key, build_parser
from .backend import verbose_backend_log
from .signals import SignalWriter

log = logging.getLogger("hatchway.sidecar")

SHUTDOWN_DEADLINE = 4.5  # the arkitekt-gateway wrapper sends SIGKILL 5 s after SIGTERM


def fatal_line(text: str) -> None:
    """Go's ``log.Fatalf`` line on stderr (after the ERROR signal on stdout)."""
    sys.stderr.write(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {text}\n")
    sys.stderr.flush()


def prepare_statedir(statedir: str) -> str:
    """The state dir (default: the current directory), created with mode 0700; OSError -> upstream's text."""
    if not statedir:
        try:
            return os.getcwd()
        except OSError as exc:
            raise RuntimeError(f"failed to get cwd: {exc.strerror or exc}") from None
    try:
        os.makedirs(statedir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"failed to create state dir: mkdir {statedir}: {(exc.strerror or str(exc)).lower()}") from None
    return statedir


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    if VERSION.answer(sys.argv[1:] if argv is None else argv):
        return 0
    env = os.environ if environ is None else environ
    args = build_parser(env).parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING, args.log_format)
    if args.verbose:
        verbose_backend_log()
    signals = SignalWriter()

    from .service import Sidecar, SidecarConfig, SidecarError

    if args.mode not in ("http", "socks5"):  # checked before joining the tailnet (upstream: after)
        signals.error(f"unknown mode: {args.mode}")
        fatal_line(f"unknown mode: {args.mode}")
        return EXIT_FAILURE
    try:
        statedir = prepare_statedir(args.statedir)
    except RuntimeError as exc:
        signals.error(str(exc))
        fatal_line(str(exc))
        return EXIT_FAILURE
    config = SidecarConfig(
        authkey=auth_key(args.authkey, env), coordserver=args.coordserver, hostname=args.hostname, port=args.port,
        statedir=statedir, mode=args.mode, statusport=args.statusport, verbose=args.verbose, backend=args.backend,
        direct_config=args.direct_config, dial_timeout=args.dial_timeout, join_timeout=args.join_timeout,
    )

    async def serve() -> int:
        try:
            async with Sidecar(config, signals=signals):
                await asyncio.Event().wait()  # until SIGTERM/SIGINT cancels us
        except SidecarError as exc:
            signals.error(str(exc))
            fatal_line(str(exc))
            return EXIT_FAILURE
        return 0

    def on_signal(signum: int) -> bool:
        signals.shutdown()
        return False  # go on: cancel serve(), which closes the proxy, the status API and the node

    return run(serve, deadline=SHUTDOWN_DEADLINE, on_signal=on_signal)
