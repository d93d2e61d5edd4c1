"""A plain asyncio TCP relay (Protocol-based, uvloop): the "as good as Python gets" limit.

    python3 bench/plain_relay.py LISTEN_PORT:TARGET_PORT [LISTEN_PORT:TARGET_PORT ...]
        [--host 127.0.0.1] [--max-seconds 3600]

Every accepted connection on LISTEN_PORT is relayed to TARGET_PORT on the same
host, byte for byte, with flow control (a peer whose write buffer is full pauses
reading on the other side).  Prints ``READY relay`` once all listeners are up.
Exits by itself after --max-seconds.  Bench helper only.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


_dial_errors = 0


class Half(asyncio.Protocol):
    """One side of a relayed connection; ``peer`` is the other side.

    EOF on either side closes both (after the other side's buffered data is
    flushed): the same semantics as the tunnel protocol, which has no half-close.
    """

    def __init__(self):
        self.transport = None
        self.peer: Half | None = None
        self.pending: list[bytes] = []  # data received before the peer exists
        self.done = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=1 << 20)

    def _peer_open(self) -> bool:
        p = self.peer
        return p is not None and p.transport is not None and not p.transport.is_closing()

    def data_received(self, data):
        if self._peer_open():
            self.peer.transport.write(data)
        elif self.peer is None:
            self.pending.append(data)
            if not self.transport.is_closing():
                self.transport.pause_reading()

    def eof_received(self):
        return False  # the transport closes itself; connection_lost closes the peer

    def connection_lost(self, exc):
        self.done = True
        if self._peer_open():
            self.peer.transport.close()

    def pause_writing(self):
        if self._peer_open():
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self._peer_open():
            self.peer.transport.resume_reading()

    def attach(self, other: "Half"):
        self.peer = other
        for chunk in self.pending:
            if self._peer_open():
                other.transport.write(chunk)
        self.pending.clear()
        if self.done:
            if self._peer_open():
                other.transport.close()
        elif not self.transport.is_closing():
            self.transport.resume_reading()


class Inbound(Half):
    def __init__(self, host: str, port: int):
        super().__init__()
        self.target = (host, port)

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self):
        loop = asyncio.get_running_loop()
        try:
            _, out = await loop.create_connection(Half, *self.target)
        except OSError as e:
            global _dial_errors
            _dial_errors += 1
            if _dial_errors <= 5 or _dial_errors % 1000 == 0:
                print(f"dial {self.target} failed ({_dial_errors} so far): {e!r}", file=sys.stderr, flush=True)
            if not self.transport.is_closing():
                self.transport.close()
            return
        if self.done or self.transport.is_closing():
            out.transport.close()
            return
        self.attach(out)
        out.attach(self)


async def serve(host: str, maps: list[tuple[int, int]], max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for lport, tport in maps:
        servers.append(await loop.create_server(lambda tp=tport: Inbound(host, tp), host, lport,
                                                backlog=4096, reuse_address=True))
    print("READY relay " + " ".join(f"{host}:{l}->{t}" for l, t in maps), file=sys.stderr, flush=True)
    try:
        await asyncio.sleep(max_seconds)
    finally:
        for s in servers:
            s.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maps", nargs="+", help="LISTEN_PORT:TARGET_PORT")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    a = ap.parse_args(argv)
    maps = [tuple(int(x) for x in m.split(":")) for m in a.maps]
    coro = serve(a.host, maps, a.max_seconds)
    if uvloop is not None:
        uvloop.run(coro)
    else:  # pragma: no cover
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
