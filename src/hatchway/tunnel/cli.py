"""``hatchway-tunnel``: the tunnel client by default; ``runner`` and ``forward`` sub-commands.

The client keeps upstream's command line (tunnel.md section 3): ``RUST_LOG``,
when set, overrides ``--log-level``; the exit status is non-zero only when
``--max-reconnect`` consecutive attempts failed; SIGTERM/SIGINT close the
WebSocket with a close frame and exit 0.
"""

from __future__ import annotations

import os
import sys

from .args import build_parser

TYPE_CHECKING = False  # no typing import for --help and --version
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any



def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hatchway.common import lifecycle

    if args.command == "runner":
        from .runner import run_from_args as run_runner

        lifecycle.setup_logging(args.log_level, args.log_format)
        return lifecycle.run(lambda: run_runner(args))
    if args.command == "forward":
        from .forward import run_from_args as run_forward

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
