"""The ``mesh`` backend (default): arkitekt-mesh, an in-process Tailscale-compatible node.

``Node.start`` joins; every dial is a CONNECT through the node's own local
proxy (``node.proxy_url``), i.e. common's
:class:`~hatchway.common.dialer.UpstreamProxyDialer`, so names are resolved by
the node's netmap (short name, FQDN, tailnet IP) and nothing falls back to
host DNS. arkitekt-mesh 0.8.0 exposes no peer list, counters or handshake
times: ``/status`` reports self (addresses) and ``"peers": []``.
"""

from __future__ import annotations

import socket
from typing import Any

from ..common import socks5
from ..common.dialer import UpstreamProxy, UpstreamProxyDialer, is_ip_literal
from ..common.dialing import Connected, ProxyError, UdpAssociation
from ..common.httpproxy import HttpProxyError, join_host_port, split_host_port
from .backend import BackendError, JoinConfig, LoginUrlHook, NeedsLoginError, backend_log
from .status import NodeInfo, PeerStatus, Status

__all__ = ["MESH_VERSION", "MeshBackend", "local_proxy", "order_addresses"]

MESH_VERSION = "0.8.0"  # the pinned arkitekt-mesh (pyproject extra "sidecar")
ERROR_BODY_LIMIT = 4096


def order_addresses(addresses: list[str]) -> list[str]:
    """IPv4 first, then IPv6 (Go's ``TailscaleIPs`` order); prefix lengths dropped.

    An IPv6 address always has a colon and an IPv4 one never."""
    parsed = [str(a).split("/")[0] for a in addresses]
    return sorted(parsed, key=lambda a: ":" in a)


def local_proxy(url: str) -> UpstreamProxy:
    """The node's ``proxy_url`` (``http://127.0.0.1:P``) as the upstream every dial goes through.

    The node's 502 body is its error text ("nosuch:80: no peer named nosuch on the mesh"): kept. Parsed with
    common's host:port splitter (``parse_upstream`` would import urllib.parse, ~0.4 MiB of idle RSS)."""
    scheme, sep, authority = url.partition("://")
    try:
        if scheme != "http" or not sep:
            raise HttpProxyError(400, "not an http:// URL")
        host, port = split_host_port(authority.rstrip("/"), 80)
    except HttpProxyError as exc:
        raise BackendError(f"arkitekt-mesh gave an unusable local proxy URL {url!r}: {exc.message}") from None
    return UpstreamProxy("http", host, port, error_body_limit=ERROR_BODY_LIMIT)


class MeshBackend:
    """arkitekt-mesh's ``Node`` as the sidecar's Dialer/Resolver."""

    name = "mesh"

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.node: Any = None
        self.info = NodeInfo()
        self._dialer: UpstreamProxyDialer | None = None

    async def start(self, join: JoinConfig, login_url: LoginUrlHook) -> NodeInfo:
        import arkitekt_mesh  # imported only when this backend runs

        backend_log.debug("arkitekt-mesh: starting node %r in %s (control %s, state present: %s)", join.hostname,
                          join.statedir, join.control_url or "default", arkitekt_mesh.Node.has_state(join.statedir))
        try:
            node = await arkitekt_mesh.Node.start(
                join.statedir,
                join.hostname,
                control_url=join.control_url or None,
                auth_key=join.auth_key or None,
                timeout=join.timeout,
            )
        except arkitekt_mesh.NeedsLogin as exc:
            # arkitekt-mesh gives no login URL: fail fast so the parent's wait_ready() does not hang.
            raise NeedsLoginError(f"needs login: {exc or 'no auth key given'}") from None
        except arkitekt_mesh.MeshError as exc:
            raise BackendError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        self.node = node
        try:
            upstream = local_proxy(str(node.proxy_url))
        except BackendError:
            node.close()
            raise
        self._dialer = UpstreamProxyDialer(upstream, timeout=self.timeout, udp_direct=False)
        self.info = NodeInfo(hostname=join.hostname, tailscale_ips=order_addresses(list(node.addresses)), online=True)
        backend_log.debug("arkitekt-mesh: node running, addresses %s, local proxy %s", self.info.tailscale_ips,
                          node.proxy_url)
        return self.info

    async def status(self) -> Status:
        state = "Running" if self.node is not None else "Stopped"
        return Status(self_=PeerStatus.of(self.info), peers=[], backend_state=state)

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        if self._dialer is None:
            raise ProxyError(socks5.Rep.GENERAL_FAILURE, "the mesh node is not running")
        return await self._dialer.open(host, port, client)

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        raise ProxyError(socks5.Rep.COMMAND_NOT_SUPPORTED, "UDP is not supported")

    async def resolve(
        self, host: str, port: int, *, kind: int = socket.SOCK_STREAM, family: int = 0
    ) -> list[tuple[int, str]]:
        """IP literals only: the node resolves names itself when dialled (it has no lookup API)."""
        if is_ip_literal(host):
            return [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)]
        raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"{join_host_port(host, port)}: names resolve inside the mesh node")

    async def aclose(self) -> None:
        node, self.node = self.node, None
        self._dialer = None
        if node is not None:
            node.close()
            backend_log.debug("arkitekt-mesh: node closed")
