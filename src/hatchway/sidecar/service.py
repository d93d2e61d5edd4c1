"""The sidecar as an embeddable service: join, status API, proxy; signal lines in their truthful order.

Python API (``async with``)::

    from hatchway.sidecar import Sidecar, SidecarConfig

    async with Sidecar(SidecarConfig(authkey="tskey-...", coordserver="https://ctl", port=0)) as sidecar:
        print(sidecar.proxy_url)          # http://127.0.0.1:PORT, bound
        print(await sidecar.status())     # the /status body as a Struct

Order (sidecar.md 4.1/4.4): banner + STARTING, CONNECTING, [AUTH_REQUIRED],
join, CONNECTED, status API bound + its line, proxy **bound**, then the
listening lines, LISTENING and READY. Any failure raises :class:`SidecarError`
whose text is the ``@@SIDECAR:ERROR@@`` detail; the caller prints it.
"""

from __future__ import annotations

import os
from typing import Literal

import msgspec

from .. import __version__
from ..common.lifecycle import Service
from ..common.proxyfront import ProxyFront
from .backend import Backend, BackendError, JoinConfig
from .proxy import MODES, build_front
from .signals import SignalWriter
from .status import Status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .statusapi import StatusServer

__all__ = ["Sidecar", "SidecarConfig", "SidecarError", "make_backend"]

BackendName = Literal["mesh", "direct"]


class SidecarError(Exception):
    """A fatal sidecar error; ``str(exc)`` is the ``@@SIDECAR:ERROR@@`` detail (upstream's wording)."""


class SidecarConfig(msgspec.Struct, kw_only=True):
    """The Go sidecar's flags (same names and defaults), plus hatchway's extensions."""

    authkey: str = ""  # "" = TS_AUTHKEY, then TS_AUTH_KEY (resolved by the CLI; the API takes it as given)
    coordserver: str = ""
    hostname: str = "ts-proxy"
    port: str = "8080"  # a string, as upstream; "0" picks a free port
    statedir: str = ""  # "" = the current directory
    mode: str = "http"
    statusport: str = ""  # "" = no status API
    verbose: bool = False
    backend: BackendName = "mesh"
    direct_config: str = ""  # the direct backend's DirectScript (JSON file), tests only
    dial_timeout: float = 10.0
    join_timeout: float = 60.0


def make_backend(config: SidecarConfig) -> Backend:
    if config.backend == "direct":
        from .direct import DirectBackend, DirectScript

        script = DirectScript()
        if config.direct_config:
            with open(config.direct_config, "rb") as fh:
                script = msgspec.json.decode(fh.read(), type=DirectScript)
        return DirectBackend(script, timeout=config.dial_timeout)
    from .mesh import MeshBackend

    return MeshBackend(timeout=config.dial_timeout)


def _port(text: str, what: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise SidecarError(f"{what} failed: listen tcp: lookup tcp/{text}: unknown port") from None
    if not 0 <= port <= 0xFFFF:
        raise SidecarError(f"{what} failed: listen tcp: address {port}: invalid port")
    return port


def _bind_error(what: str, port: int, exc: OSError) -> SidecarError:
    reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()  # Go: "bind: address already in use"
    return SidecarError(f"{what} failed: listen tcp 127.0.0.1:{port}: bind: {reason}")


class Sidecar(Service):
    """One sidecar: a backend node, the optional status API and the proxy front end."""

    def __init__(
        self, config: SidecarConfig, *, backend: Backend | None = None, signals: SignalWriter | None = None
    ) -> None:
        self.config = config
        self.backend = backend if backend is not None else make_backend(config)
        self.signals = signals if signals is not None else SignalWriter(echo=False)  # the CLI echoes to stdout
        self.front: ProxyFront | None = None
        self.status_api: StatusServer | None = None
        self.proxy_url = ""
        self.status_url = ""
        self.ips: list[str] = []

    @property
    def statedir(self) -> str:
        return self.config.statedir or os.getcwd()

    async def start(self) -> None:
        config = self.config
        if config.mode not in MODES:
            raise SidecarError(f"unknown mode: {config.mode}")  # before joining (upstream: after)
        proxy_what = "http server" if config.mode == "http" else "socks5 server"
        port = _port(config.port, proxy_what)
        status_port = _port(config.statusport, "status server") if config.statusport else None
        signals = self.signals
        signals.starting(__version__)
        signals.connecting(config.hostname)
        join = JoinConfig(
            statedir=self.statedir, hostname=config.hostname, control_url=config.coordserver,
            auth_key=config.authkey, timeout=config.join_timeout, verbose=config.verbose,
        )
        try:
            try:
                info = await self.backend.start(join, signals.auth_required)
            except BackendError as exc:
                raise SidecarError(f"tailnet connection failed: {exc}") from None
            self.ips = list(info.tailscale_ips)
            signals.connected(self.ips)
            if status_port is not None:
                from .statusapi import status_server  # imported only when the status API is asked for

                self.status_api = status_server(self.backend, status_port)
                try:
                    await self.status_api.start()
                except OSError as exc:
                    self.status_api = None
                    raise _bind_error("status server", status_port, exc) from None
                bound_at = self.status_api.addresses[0]
                self.status_url = f"http://{bound_at[0]}:{bound_at[1]}/status"
                signals.status_api(f"{bound_at[0]}:{bound_at[1]}")
            self.front = build_front(self.backend, config.mode, port, signals, timeout=config.dial_timeout)
            try:
                await self.front.start()  # bound before any line says so
            except OSError as exc:
                self.front = None
                raise _bind_error(proxy_what, port, exc) from None
            host, bound = self.front.bound[0]
            address = f"{host}:{bound}"
            self.proxy_url = f"{config.mode}://{address}"
            signals.listening(config.mode, address)
        except BaseException:
            await self.aclose()
            raise

    async def status(self) -> Status:
        return await self.backend.status()

    async def aclose(self) -> None:
        """Stop accepting, close the status API, then close the node."""
        front, self.front = self.front, None
        api, self.status_api = self.status_api, None
        try:
            if front is not None:
                await front.aclose()
            if api is not None:
                await api.aclose()
        finally:
            await self.backend.aclose()
