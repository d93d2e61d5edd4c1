"""``hatchway-tunnel``: the tunnel client by default; ``runner`` and ``forward`` sub-commands.

The client keeps upstream's command line (tunnel.md section 3): ``RUST_LOG``,
when set, overrides ``--log-level``; the exit status is non-zero only when
``--max-reconnect`` consecutive attempts failed; SIGTERM/SIGINT close the
WebSocket with a close frame and exit 0.
"""

from __future__ import annotations

import os
import sys

from . import VERSION

TYPE_CHECKING = False  # no typing import for --help and --version
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    if VERSION.answer(sys.argv[1:] if argv is None else argv):
        return 0
    from .args import build_parser

    args = build_parser().parse_args(argv)
    from hatchway.common import lifecycle

    if args.command == "runner":
        lifecycle.setup_logging(args.log_level, args.log_format)
        return lifecycle.run(lambda: run_runner(args))
    if args.command == "forward":
        lifecycle.setup_logging(args.log_level, args.log_format)
        return lifecycle.run(lambda: run_forward(args))
    return lifecycle.run(lambda: run_client(args))


def client_log_level(args: Any) -> str:
    """RUST_LOG wins over --log-level / LOG_LEVEL, as upstream's tracing env filter does."""
    return os.environ.get("RUST_LOG") or str(args.log_level)


async def run_client(args: Any) -> int:
    from hatchway.common import lifecycle
    from hatchway.common.lifecycle import EXIT_FAILURE, EXIT_USAGE, Fatal

    from .client import TunnelClient, TunnelGaveUp

    lifecycle.setup_logging(client_log_level(args), args.log_format)
    announced = False

    def on_connected(_session: Any) -> None:
        nonlocal announced
        if not announced:
            announced = True
            lifecycle.announce_ready(f"tunnel client {client.url}", program="tunnel", role="client",
                                     url=str(client.url))

    try:
        client = TunnelClient(
            args.runner_url,
            args.container_id,
            on_connected=on_connected,
            reconnect_delay=args.reconnect_delay,
            max_reconnect=args.max_reconnect,
            backoff=args.backoff,
            heartbeat=args.heartbeat,
            connect_timeout=args.connect_timeout,
            udp_idle_timeout=args.udp_idle_timeout,
            slow_consumer=args.slow_consumer,
            stall_timeout=args.stall_timeout,
            buffer_limit=args.buffer_limit,
            ipv6_fallback=args.ipv6_fallback == "on",
            token=args.token,
        )
    except ValueError as exc:
        raise Fatal(str(exc), EXIT_USAGE) from None
    try:
        await client.run()
    except TunnelGaveUp as exc:
        raise Fatal(str(exc), EXIT_FAILURE) from None
    return 0


async def run_runner(args: Any) -> int:
    """``hatchway-tunnel runner``: serve until SIGTERM/SIGINT."""
    import logging

    from hatchway.common.lifecycle import Fatal, run_service

    from .runner import Runner

    runner = Runner(
        args.host,
        args.port,
        token=args.token,
        heartbeat=args.heartbeat,
        slow_consumer=args.slow_consumer,
        buffer_limit=args.buffer_limit,
        allow_tokenless_tunnels=args.allow_tokenless_tunnels,
    )

    def cannot_listen(exc: Exception) -> int:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise Fatal(f"cannot listen on {args.host}:{args.port}: {text}") from None

    def listening() -> None:
        logging.getLogger("hatchway.tunnel.runner").info(
            "runner endpoint listening on %s:%d%s", args.host, runner.port,
            " (token required on /ws/forward and /ws/tunnel)" if args.token else "")

    return await run_service(runner, lambda: f"runner {args.host}:{runner.port}", start_failed=cannot_listen,
                             started=listening)


async def run_forward(args: Any) -> int:
    """``hatchway-tunnel forward``: forward until the channel ends (exit 1) or SIGTERM/SIGINT (exit 0)."""
    import logging

    from hatchway.common.lifecycle import run_service

    from .forward import DEFAULT_BUFFER_LIMIT, Forwarder
    from .mux import ForwardError
    from .urls import host_for_url

    server = args.url or f"ws://{host_for_url(args.server_host)}:{args.server_port}"
    forwarder = Forwarder(
        server,
        args.task_id,
        args.remote_port,
        local_port=args.local_port,
        local_host=args.local_host,
        proto=args.proto,
        token=args.token,
        udp_idle_timeout=args.udp_idle_timeout,
        slow_consumer=args.slow_consumer,
        stall_timeout=args.stall_timeout,
        buffer_limit=getattr(args, "buffer_limit", DEFAULT_BUFFER_LIMIT),
    )

    def cannot_open(exc: Exception) -> int:
        print(str(exc), file=sys.stderr, flush=True)
        return 1

    def forwarding() -> None:
        logging.getLogger("hatchway.tunnel.forward").info(
            "forwarding %s:%d/%s -> %s port %d", forwarder.local_host, forwarder.local_port,
            forwarder.proto, args.task_id, args.remote_port,
        )

    return await run_service(
        forwarder, lambda: f"forward {forwarder.local_host}:{forwarder.local_port}", start_errors=(ForwardError,),
        start_failed=cannot_open, started=forwarding, until=forwarder.wait_closed, ended=1,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
