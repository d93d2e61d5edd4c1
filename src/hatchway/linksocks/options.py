"""The options of the LinkSocks server and client: one Struct base for what every link shares.

:class:`LinkOptions` holds what configures a :class:`~hatchway.linksocks.link.Link`
on either side (payload size, wire version, keepalive, stall timeout, grace);
:class:`ServerOptions` and :class:`LinkSocksClientOptions` add their side's
own. Defaults are Go 1.10.3's (linksocks.md sections 2 and 16).
"""

from __future__ import annotations

import os

import msgspec

from . import protocol
from .access import AccessRules

AUTH_TIMEOUT = 10.0  # binary auth: the Auth message must arrive within this


class LinkOptions(msgspec.Struct, kw_only=True):
    """What every link of a server or a client is configured with."""

    buffer_size: int = 1024 * 1024  # largest Data payload sent
    wire_version: int = protocol.VERSION_DEFAULT
    ping_interval: float = 30.0
    read_timeout: float = 60.0
    stall_timeout: float = 10.0  # a local reader that takes nothing for this long is reset (0 = never)
    transport_grace: float = 30.0
    upstream_proxy: str | None = None
    fast_open: bool = False
    http_proxy: bool = True  # HTTP proxy requests on the SOCKS port too


class ServerOptions(LinkOptions, kw_only=True):
    ws_host: str = "0.0.0.0"
    ws_port: int = 8765
    socks_host: str = "127.0.0.1"
    socks_wait_client: bool = True
    api_key: str | None = None
    api_keys: list[str] = msgspec.field(default_factory=list)
    connector_wait: float = 5.0
    max_unauthenticated: int = 64  # connections not yet authenticated; the oldest is closed to admit a new one
    header_timeout: float = 10.0  # the upgrade request's head must arrive within this (slowloris)
    auth_timeout: float = AUTH_TIMEOUT
    listener_linger: float = 30.0
    provider_wait: float = 10.0
    entry_rules: AccessRules = msgspec.field(default_factory=AccessRules)
    dial_rules: AccessRules = msgspec.field(default_factory=AccessRules)


class LinkSocksClientOptions(LinkOptions, kw_only=True):
    token: str = "anonymous"
    url: str = "ws://localhost:8765"
    reverse: bool = False
    connector_token: str | None = None
    socks_host: str = "127.0.0.1"
    socks_port: int = 9870
    socks_username: str | None = None
    socks_password: str | None = None
    socks_wait_server: bool = True
    reconnect: bool = True
    retry_auth: bool = False
    threads: int = 1
    no_env_proxy: bool = False
    access_rules: list[str] = msgspec.field(default_factory=list)
    link_wait: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_factor: float = 1.5
    reconnect_max: float = 600.0


def unknown_options(kind: type[msgspec.Struct], given: dict[str, object]) -> list[str]:
    """Keyword arguments that are not fields of ``kind``."""
    known = set(kind.__struct_fields__)
    return sorted(set(given) - known)


def thread_count(requested: int, cpus: int | None = None) -> int:
    """WebSocket connections of a client: ``-1`` one per CPU, ``0`` one, else at most 100 per CPU."""
    cpus = cpus or os.cpu_count() or 1
    if requested < 0:
        return cpus
    if requested == 0:
        return 1
    return min(requested, 100 * cpus)
