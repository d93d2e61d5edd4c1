"""The host side of the socket bridge: ``docker exec -i <container> <socket server>``, dialing the host agents.

Fixes over upstream: the host always sends a PUBKEY first (empty when there
is no GPG key), so a container waiting for one never deadlocks (defect 13);
``start`` fails after ``ready_timeout`` seconds without READY; the stream
count is capped and a slow local socket pauses the bridge instead of
buffering without bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from typing import Any

from hatchway.common.logsafe import escape
from hatchway.common.relay import Relay
from hatchway.common.sink import LengthPrefixedSink

from .bridgelink import BridgeLink
from .engine import DockerError, EngineClient
from .muxproto import BridgeProtocol, Event, Failed, Opened, Ready

__all__ = ["BridgeError", "HostBridge", "agent_sockets", "check_ssh_agent", "run_bridge", "watch_die"]

log = logging.getLogger(__name__)

READY_TIMEOUT = 10.0


class BridgeError(Exception):
    pass


class _Exec(asyncio.SubprocessProtocol):
    def __init__(self, bridge: HostBridge) -> None:
        self.bridge = bridge
        self._err = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            if self.bridge.link is not None:
                self.bridge.link.data_received(data)
            return
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            log.info("container: %s", escape(line))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.bridge._stdout_closed()

    def process_exited(self) -> None:
        self.bridge._exited()

    def pause_writing(self) -> None:
        if self.bridge.sink is not None:
            self.bridge.sink.pause_writing()

    def resume_writing(self) -> None:
        if self.bridge.sink is not None:
            self.bridge.sink.resume_writing()


class HostBridge:
    def __init__(self, argv: list[str], *, ssh_socket: str | None = None, gpg_socket: str | None = None,
                 pubkey: bytes = b"", ready_timeout: float = READY_TIMEOUT, max_streams: int = 64) -> None:
        self.argv = argv
        self.sockets = {"ssh-agent": ssh_socket, "gpg-agent": gpg_socket}
        self.pubkey = pubkey
        self.ready_timeout = ready_timeout
        self.proto = BridgeProtocol("host", max_streams=max_streams)
        self.link: BridgeLink | None = None
        self.sink: LengthPrefixedSink | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._ready: asyncio.Future[None] | None = None
        self.done: asyncio.Future[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.done = loop.create_future()
        transport, _ = await loop.subprocess_exec(lambda: _Exec(self), *self.argv, stdin=asyncio.subprocess.PIPE,
                                                  stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._transport = transport
        stdin = transport.get_pipe_transport(0)
        self.sink = LengthPrefixedSink(stdin)  # type: ignore[arg-type]
        self.link = BridgeLink(self.proto, self.sink, on_event=self._event)
        self.link.read_transport = transport.get_pipe_transport(1)  # type: ignore[assignment]
        self.link.send(self.proto.pubkey(self.pubkey))  # always, possibly empty: no PUBKEY deadlock
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.ready_timeout)
        except TimeoutError:
            await self.stop()
            raise BridgeError(f"bridge not ready within {self.ready_timeout:g}s") from None
        except BridgeError:
            await self.stop()
            raise

    def _event(self, event: Event) -> None:
        if isinstance(event, Ready):
            self._settle(None)
        elif isinstance(event, Failed):
            self._settle(BridgeError(f"bridge error: {event.message}"))
        elif isinstance(event, Opened):
            self._open(event)

    def _settle(self, exc: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            if exc is None:
                self._ready.set_result(None)
            else:
                self._ready.set_exception(exc)

    def _open(self, event: Opened) -> None:
        assert self.link is not None
        path = self.sockets.get(event.kind)
        if not path:
            log.info("stream %d: no host %s socket", event.stream, event.kind)
            msg = self.proto.close(event.stream)
            if msg is not None:
                self.link.send(msg)
            return
        loop = asyncio.get_running_loop()

        def connect(relay: Relay) -> Any:
            return asyncio.ensure_future(loop.create_unix_connection(relay.back, path))

        self.link.relay(event.stream, connect)

    def _stdout_closed(self) -> None:
        self._settle(BridgeError("bridge exited before READY"))
        if self.link is not None:
            self.link.close()

    def _exited(self) -> None:
        self._settle(BridgeError("bridge exited before READY"))
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def wait(self) -> None:
        assert self.done is not None
        await self.done

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.link is not None:
            await self.link.aclose()
        if self._transport is not None:
            stdin = self._transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()
            if self._transport.get_returncode() is None:
                self._transport.terminate()
            if self.done is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self.done), 5)
                except TimeoutError:
                    self._transport.kill()
                    await self.done
            self._transport.close()


def check_ssh_agent(environ: dict[str, str] | None = None) -> str | None:
    """None when ``SSH_AUTH_SOCK`` names a socket that accepts a connection, else why not (a warning)."""
    import socket

    path = (os.environ if environ is None else environ).get("SSH_AUTH_SOCK", "")
    if not path:
        return "SSH_AUTH_SOCK is not set"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        return f"SSH agent at {path} is not reachable: {exc.strerror or exc}"
    finally:
        probe.close()
    return None


async def watch_die(engine: EngineClient, container: str) -> DockerError | None:
    """Until ``container`` dies: None; a failed or ended event stream: the error (the bridge stops either way)."""
    filters = {"type": ["container"], "container": [container], "event": ["die"]}
    try:
        async for event in engine.events(filters):
            if event.Action == "die" or event.status == "die":
                return None
    except DockerError as exc:
        return exc
    return DockerError(0, "the event stream ended")


async def agent_sockets(gpg: bool) -> tuple[str | None, str | None, bytes]:
    """The host's SSH agent socket, GPG extra socket and public keyring (each None/empty when absent)."""
    ssh = os.environ.get("SSH_AUTH_SOCK") or None
    if not gpg:
        return ssh, None, b""
    from .subproc import run_bounded

    try:
        found = await run_bounded(["gpgconf", "--list-dir", "agent-extra-socket"], timeout=5)
        keys = await run_bounded(["gpg", "--export"], timeout=10)
    except OSError:
        return ssh, None, b""
    extra = found.stdout.decode().strip() if found.returncode == 0 else ""
    return ssh, (extra if extra and os.path.exists(extra) else None), (keys.stdout if keys.returncode == 0 else b"")


async def run_bridge(args: Any) -> int:
    ssh, gpg, pubkey = await agent_sockets(args.gpg)
    argv = ["docker", "exec", "-i", args.container, *shlex.split(args.server)]
    bridge = HostBridge(argv, ssh_socket=ssh, gpg_socket=gpg, pubkey=pubkey)
    if args.pid_file:
        fd = os.open(args.pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
    engine = EngineClient()
    try:
        await bridge.start()
        log.info("bridge to %s ready", escape(args.container))
        died = asyncio.ensure_future(watch_die(engine, args.container))
        ended = asyncio.ensure_future(bridge.wait())
        try:
            await asyncio.wait([died, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (died, ended):
                task.cancel()
            await asyncio.gather(died, ended, return_exceptions=True)
        if died.done() and not died.cancelled():
            error = died.result()
            log.info("stopping the bridge: %s", error if error is not None else "the container died")
        return 0
    except BridgeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        await bridge.stop()
        await engine.close()
        if args.pid_file:
            try:
                os.unlink(args.pid_file)
            except FileNotFoundError:
                pass
