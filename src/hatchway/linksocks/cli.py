"""``hatchway-linksocks``: server, client, provider, connector, version (linksocks.md section 2).

``LINKSOCKS_MODE`` picks the sub-command when none is given. Every sub-command
logs to stderr (``-d`` debug, ``-dd`` trace; ``--log-format json``) and prints
``READY ...`` once it serves. A client whose token is refused exits 1 (unless
``--retry-auth``). Start-up imports only what the sub-command runs: ``version``
and ``--help`` import no networking, a server no client machinery and the reverse.
"""

from __future__ import annotations

import os
import sys

from . import VERSION

TYPE_CHECKING = False  # no typing/logging imports for `version` and `--help`
if TYPE_CHECKING:
    import argparse
    import logging
    from collections.abc import Sequence
    from typing import Any


EXIT_OK = 0
EXIT_FAILURE = 1


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if VERSION.answer(args_in):
        return EXIT_OK
    from .args import argv_with_mode, build_parser

    parser = build_parser()
    args = parser.parse_args(argv_with_mode(args_in))
    if args.command == "version":
        print(VERSION.line(), flush=True)
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    from hatchway.common import lifecycle

    lifecycle.setup_logging(_level(args.debug), args.log_format)
    if args.command == "server":
        _check_server_args(parser, args)
        return lifecycle.run(lambda: run_server(args))
    return lifecycle.run(lambda: run_client(args))


def _log() -> logging.Logger:
    import logging

    return logging.getLogger(__name__)


def _level(debug: int) -> str:
    return ("info", "debug", "trace")[min(debug, 2)]


def _check_server_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.api_key and args.access_rule:
        parser.error("--access-rule cannot be used together with --api-key (manage rules through the API)")


def server_options(args: argparse.Namespace) -> Any:
    from .options import ServerOptions

    return ServerOptions(
        ws_host=args.ws_host,
        ws_port=args.ws_port,
        socks_host=args.socks_host,
        socks_wait_client=not args.socks_nowait,
        buffer_size=args.buffer_size,
        api_key=args.api_key,
        upstream_proxy=args.upstream_proxy,
        fast_open=args.fast_open,
        connector_wait=args.connector_wait_provider,
        transport_grace=args.transport_grace,
        wire_version=args.wire_version,
        ping_interval=args.ping_interval,
        read_timeout=args.read_timeout,
        stall_timeout=args.stall_timeout,
    )


async def run_server(args: argparse.Namespace) -> int:
    from hatchway.common.lifecycle import Fatal, run_service

    from .access import AccessError
    from .server import Server

    server = Server(options=server_options(args))

    def cannot_listen(exc: Exception) -> int:
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else _reason(exc)
        raise Fatal(f"cannot listen on {args.ws_host}:{args.ws_port}: {reason}") from None

    def configured() -> str:
        """Listening: the command line's tokens go in before READY (a bad rule or token ends the run)."""
        try:
            _configure_tokens(server, args)
        except (ValueError, AccessError) as exc:
            raise Fatal(str(exc)) from None
        return f"linksocks server {url()}"

    def url() -> str:
        return f"ws://{_host_port(server.ws_address)}"

    return await run_service(server, configured, start_failed=cannot_listen, until=server.wait_closed,
                             ready_fields=lambda: {"program": "linksocks", "role": "server", "url": url()})


def _configure_tokens(server: Any, args: argparse.Namespace) -> None:
    """Tokens from the command line (none with an API key, as upstream)."""
    if args.api_key:
        _log().info("API enabled at /api/ (no tokens from the command line)")
        return
    if args.access_rule:  # dial rules in forward mode, entry rules of the SOCKS port in reverse mode
        from .access import AccessRules, parse_rule_flag

        rules = AccessRules([parse_rule_flag(text) for text in args.access_rule])
        if args.reverse:
            server.entry_rules = rules
        else:
            server.dial_rules = rules
    if not args.reverse:
        token = server.add_forward_token(args.token)
        _log().info("forward mode (SOCKS5 on the client); token: %s", _shown(token, args.token))
        return
    token, port = server.add_reverse_token(
        args.token,
        port=args.socks_port,
        username=args.socks_username,
        password=args.socks_password,
        allow_manage_connector=args.connector_autonomy,
    )
    _log().info("reverse mode (SOCKS5 on the server); token: %s", _shown(token, args.token))
    if port and port > 0:
        _log().info("SOCKS5 for this token: %s:%d", args.socks_host, port)
    if not args.connector_autonomy:
        connector = server.add_connector_token(args.connector_token, token)
        _log().info("connector token: %s", _shown(connector, args.connector_token))
    elif args.connector_token:
        _log().warning("--connector-token is ignored with --connector-autonomy")


def _shown(token: str, given: str | None) -> str:
    """A token the user gave is logged as its fingerprint; a generated one in full (the only way to learn it)."""
    from .tokens import fingerprint

    return fingerprint(token) if given else token


def client_options(args: argparse.Namespace) -> Any:
    from .client import ClientOptions

    return ClientOptions(
        token=args.token or "anonymous",
        url=args.url,
        reverse=args.reverse or args.command == "provider",
        connector_token=args.connector_token,
        socks_host=args.socks_host,
        socks_port=args.socks_port,
        socks_username=args.socks_username,
        socks_password=args.socks_password,
        socks_wait_server=not args.socks_no_wait,
        reconnect=not args.no_reconnect,
        retry_auth=args.retry_auth,
        threads=args.threads,
        upstream_proxy=args.upstream_proxy,
        fast_open=args.fast_open,
        no_env_proxy=args.no_env_proxy,
        transport_grace=args.transport_grace,
        access_rules=list(args.access_rule or ()),
        buffer_size=args.buffer_size,
        wire_version=args.wire_version,
        ping_interval=args.ping_interval,
        read_timeout=args.read_timeout,
        stall_timeout=args.stall_timeout,
    )


async def run_client(args: argparse.Namespace) -> int:
    from hatchway.common.lifecycle import Fatal, Service, run_service

    from .access import AccessError
    from .client import AuthError, Client

    if args.direct_mode == "direct-only":
        _log().warning("--direct-mode direct-only: hatchway is relay-only and relays through the server")
    try:
        client = Client(options=client_options(args))
    except (ValueError, AccessError) as exc:
        raise Fatal(str(exc)) from None

    class ReadyClient(Service):
        """The client as run_service starts it: started once authenticated (closed again if that fails)."""

        async def start(self) -> Client:
            await client.start()
            try:
                await client.wait_ready()
            except BaseException:
                await client.aclose()
                raise
            return client

        async def aclose(self) -> None:
            await client.aclose()

    def never_ready(exc: Exception) -> int:
        if isinstance(exc, AuthError):
            raise Fatal(str(exc)) from None
        raise Fatal(f"cannot connect to {client.url}: {_reason(exc)}") from None  # gave up (-R) before connecting

    def socks() -> str | None:
        return f"socks5://{_host_port(client.socks_address)}" if client.socks_address is not None else None

    def ready() -> str:
        what = "provider" if client.options.reverse else "client"
        if client.socks_address is not None:
            what += f" {socks()}"
        return f"linksocks {what} {client.url}"

    async def until_closed() -> None:
        try:
            await client.wait_closed()
        except AuthError as exc:
            raise Fatal(str(exc)) from None

    return await run_service(
        ReadyClient(), ready, start_failed=never_ready, start_errors=(AuthError, OSError), until=until_closed,
        ready_fields=lambda: {"program": "linksocks", "role": "provider" if client.options.reverse else "client",
                              "url": client.url, "socks": socks()},
    )


def _reason(exc: BaseException) -> str:
    """An error's own words (an OSError's strerror: no library decoration such as 'ssl:default')."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _host_port(address: Any) -> str:
    if not address:
        return "?"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
