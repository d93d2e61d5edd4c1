"""A tiny multiplexer over a socketpair, for tests of Channel, the gate and the relay.

Each side is a :class:`WireEnd`: length-prefixed frames (``LengthPrefixedSink``
and ``FrameDecoder``) carrying ``kind(1) + channel id(1) + payload``:
O = open (the other side dials its target), D = data, E = EOF (only when the
wire has half-close), C = close (payload: error text, empty = clean end).
Inbound frames honour the side's InboundGate through ``add_watcher``.

``relay_through(...)`` builds the whole path:
client -> TCP listener -> Relay -> channel (side A) == socketpair == channel
(side B) -> Relay -> TCP target.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hatchway.common.channel import Channel
from hatchway.common.gate import InboundGate
from hatchway.common.relay import Relay
from hatchway.common.sink import Buffer, FrameDecoder, LengthPrefixedSink, MessageSink


class WireChannel(Channel):
    def __init__(self, end: WireEnd, cid: int, **kwargs: Any) -> None:
        assert end.sink is not None
        super().__init__(end.sink, end.gate, half_close=end.half_close, **kwargs)
        self.end = end
        self.cid = bytes([cid])
        self.name = str(cid)
        end.channels[cid] = self

    def _send_data(self, writer: MessageSink, data: Buffer) -> None:
        writer.send(b"D" + self.cid, data)

    def _send_close(self, writer: MessageSink, reason: str | None) -> None:
        writer.send(b"C" + self.cid, (reason or "").encode())

    def _send_eof(self, writer: MessageSink) -> None:
        writer.send(b"E" + self.cid)

    def _forget(self) -> None:
        self.end.channels.pop(self.cid[0], None)


class WireEnd(asyncio.Protocol):
    def __init__(self, gate: InboundGate, half_close: bool, target: tuple[str, int] | None = None,
                 relay_limit: int = 1 << 20, keep_open: bool = True) -> None:
        self.gate = gate
        self.keep_open = keep_open
        self.half_close = half_close
        self.target = target
        self.relay_limit = relay_limit
        self.sink: LengthPrefixedSink | None = None
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder()
        self.channels: dict[int, WireChannel] = {}
        self.relays: list[Relay] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.lost = asyncio.get_running_loop().create_future()
        gate.add_watcher(self._gate_changed)

    def _gate_changed(self, blocked: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if blocked:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.sink = LengthPrefixedSink(transport)

    def data_received(self, data: bytes) -> None:
        for message in self.decoder.feed(data):
            kind, cid = message[0:1], message[1]
            if kind == b"O":
                self._open(cid)
                continue
            channel = self.channels.get(cid)
            if channel is None:
                continue
            if kind == b"D":
                channel.feed(memoryview(message)[2:])
            elif kind == b"E":
                channel.remote_eof()
            elif kind == b"C":
                channel.remote_closed(message[2:].decode() or None)

    def pause_writing(self) -> None:
        assert self.sink is not None
        self.sink.pause_writing()

    def resume_writing(self) -> None:
        assert self.sink is not None
        self.sink.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.sink is not None
        self.sink.connection_lost(exc)
        for channel in list(self.channels.values()):
            channel.link_lost()
        if not self.lost.done():
            self.lost.set_result(None)

    # -- the dialing side
    def _open(self, cid: int) -> None:
        channel = WireChannel(self, cid, started=False, hold_limit=self.relay_limit)
        task = asyncio.ensure_future(self._dial(channel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _dial(self, channel: WireChannel) -> None:
        assert self.target is not None
        relay = Relay(high_water=self.relay_limit, low_water=self.relay_limit // 4)
        self.relays.append(relay)
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(relay.back, *self.target)
        except OSError as exc:
            channel.reset(str(exc))
            return
        if channel.is_closing():  # closed while dialing (this test wire delivers nothing then)
            transport.close()
            return
        channel.set_protocol(relay.front())
        relay.join()
        channel.start()

    # -- the listening side
    def accept(self, cid: int) -> asyncio.Protocol:
        """Protocol factory body for a TCP listener: one relay and channel per connection."""
        end = self

        class Acceptor(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                relay = Relay(high_water=end.relay_limit, low_water=end.relay_limit // 4)
                end.relays.append(relay)
                channel = WireChannel(end, cid, started=False, keep_open_on_eof=end.keep_open)
                assert end.sink is not None
                end.sink.send(b"O" + channel.cid)
                relay.adopt(relay.front(), transport)
                channel.set_protocol(relay.back())
                relay.join()
                channel.start()

        return Acceptor()


class WirePath:
    def __init__(self, a: WireEnd, b: WireEnd, server: asyncio.AbstractServer) -> None:
        self.a, self.b, self.server = a, b, server
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        for end in (self.a, self.b):
            if end.transport is not None:
                end.transport.close()
        await asyncio.gather(self.a.lost, self.b.lost)
        for end in (self.a, self.b):
            for task in list(end.tasks):
                task.cancel()
            await asyncio.gather(*end.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def relay_through(target_port: int, *, half_close: bool = False, gate_a: InboundGate | None = None,
                        relay_limit: int = 1 << 20, keep_open: bool = True) -> WirePath:
    loop = asyncio.get_running_loop()
    sa, sb = socket.socketpair()
    a = WireEnd(gate_a or InboundGate(), half_close, relay_limit=relay_limit, keep_open=keep_open)
    b = WireEnd(InboundGate(), half_close, target=("127.0.0.1", target_port), relay_limit=relay_limit)
    await loop.create_unix_connection(lambda: a, sock=sa)
    await loop.create_unix_connection(lambda: b, sock=sb)
    ids = iter(range(1, 256))
    server = await loop.create_server(lambda: a.accept(next(ids)), "127.0.0.1", 0)
    return WirePath(a, b, server)
