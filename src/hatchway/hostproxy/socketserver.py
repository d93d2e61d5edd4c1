"""The container side of the socket bridge: agent sockets in the container, multiplexed over stdin/stdout.

Reads ``CLAWKER_REMOTE_SOCKETS`` (a JSON array of ``{"path","type"}``). With a
``gpg-agent`` entry it waits (at most ``pubkey_timeout``) for the host's PUBKEY
and sets up ``~/.gnupg``. Then it listens on each socket (0600, parent 0700),
sends READY, and relays every client as a stream until stdin ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import sys
from collections.abc import Mapping

import msgspec

from hatchway.common.pump import widen_pipe
from hatchway.common.sink import SinkProtocol

from .bridgelink import PIPE_SIZE, BridgeLink
from .muxproto import SOCKET_TYPES, BridgeProtocol, Event, PubKey

__all__ = ["RemoteSocket", "serve_sockets", "setup_gnupg"]

log = logging.getLogger(__name__)

PUBKEY_TIMEOUT = 10.0


class RemoteSocket(msgspec.Struct, frozen=True):
    path: str
    type: str


def _owner(path: str) -> tuple[int, int] | None:
    match = re.match(r"^/home/([^/]+)/", path)
    if match is None or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(match.group(1))
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _chown(path: str, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)


def setup_gnupg(socket_path: str, keyring: bytes) -> str:
    home = os.path.dirname(socket_path)
    owner = _owner(socket_path)
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.chmod(home, 0o700)
    _chown(home, owner)
    for name, content in (("pubring.kbx", keyring), ("gpg.conf", b"no-autostart\n"),
                          ("gpg-agent.conf", b"no-grab\ndisable-scdaemon\n")):
        path = os.path.join(home, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(path, 0o600)
        _chown(path, owner)
    return home


class _Stdin(asyncio.Protocol):
    def __init__(self, link: BridgeLink, ended: asyncio.Future[None]) -> None:
        self.link = link
        self.ended = ended

    def data_received(self, data: bytes) -> None:
        self.link.data_received(data)
        if self.link.failure is not None and not self.ended.done():
            self.ended.set_result(None)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


async def serve_sockets(environ: Mapping[str, str] | None = None, *, stdin: int = 0, stdout: int = 1,
                        pubkey_timeout: float = PUBKEY_TIMEOUT) -> int:
    env = os.environ if environ is None else environ
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="socket-server: %(message)s")
    try:
        entries = msgspec.json.decode(env.get("CLAWKER_REMOTE_SOCKETS", ""), type=list[RemoteSocket])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("CLAWKER_REMOTE_SOCKETS is missing or invalid: %s", exc)
        return 1
    if not entries:
        log.error("CLAWKER_REMOTE_SOCKETS lists no sockets")
        return 1
    loop = asyncio.get_running_loop()
    for fd in (stdin, stdout):
        widen_pipe(fd, PIPE_SIZE)
    out_transport, out_proto = await loop.connect_write_pipe(SinkProtocol, os.fdopen(stdout, "wb", 0, closefd=False))
    assert out_proto.sink is not None
    pubkeys: asyncio.Queue[bytes] = asyncio.Queue()

    def on_event(event: Event) -> None:
        if isinstance(event, PubKey):
            pubkeys.put_nowait(event.keyring)

    proto = BridgeProtocol("container")
    link = BridgeLink(proto, out_proto.sink, on_event=on_event)
    ended: asyncio.Future[None] = loop.create_future()
    in_transport, _ = await loop.connect_read_pipe(lambda: _Stdin(link, ended),
                                                   os.fdopen(stdin, "rb", 0, closefd=False))
    link.read_transport = in_transport
    servers: list[asyncio.AbstractServer] = []
    try:
        gpg = [e for e in entries if e.type == "gpg-agent"]
        if gpg:
            try:
                keyring = await asyncio.wait_for(pubkeys.get(), pubkey_timeout)
            except TimeoutError:
                link.send(proto.error(f"no PUBKEY from the host within {pubkey_timeout:g}s"))
                return 1
            setup_gnupg(gpg[0].path, keyring)
            try:
                proc = await asyncio.create_subprocess_exec(
                    "gpgconf", "--homedir", os.path.dirname(gpg[0].path), "--kill", "gpg-agent",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                await proc.wait()
            except OSError:
                pass
        for entry in entries:
            if entry.type not in SOCKET_TYPES:
                link.send(proto.error(f"unknown socket type {entry.type!r}"))
                return 1
            try:
                parent = os.path.dirname(entry.path)
                os.makedirs(parent, mode=0o700, exist_ok=True)
                owner = _owner(entry.path)
                _chown(parent, owner)
                if os.path.lexists(entry.path):
                    os.unlink(entry.path)
                kind = entry.type
                server = await loop.create_unix_server(lambda kind=kind: link.accept(kind), entry.path)  # type: ignore[misc]
                servers.append(server)
                os.chmod(entry.path, 0o600)
                _chown(entry.path, owner)
            except OSError as exc:
                link.send(proto.error(f"cannot listen on {entry.path}: {exc}"))
                return 1
        link.send(proto.ready())
        await ended
        return 0 if link.failure is None else 1
    finally:
        for listening in servers:
            listening.close()
        await link.aclose()
        in_transport.close()
        out_transport.close()
