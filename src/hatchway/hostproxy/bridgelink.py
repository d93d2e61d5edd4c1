"""The asyncio driver of a socket bridge connection, shared by the host bridge and the container socket server.

Streams are :class:`~hatchway.common.channel.Channel` s sending through the
common :class:`~hatchway.common.sink.LengthPrefixedSink`; each is relayed to
a unix socket with the common :class:`~hatchway.common.relay.Relay`. The
sans-I/O :class:`~.muxproto.BridgeProtocol` decides everything else. When a
local socket is slow, the common :class:`~hatchway.common.gate.InboundGate`
pauses the bridge's read side (no unbounded buffering; nothing dropped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hatchway.common.channel import Channel
from hatchway.common.gate import InboundGate
from hatchway.common.relay import Pump, Relay
from hatchway.common.sink import Buffer, LengthPrefixedSink, MessageSink, SinkClosed
from hatchway.common.tasks import TaskSet

from .muxproto import MAX_DATA, BridgeProtocol, Closed, Data, Event, FrameError

__all__ = ["PIPE_SIZE", "BridgeChannel", "BridgeLink"]

log = logging.getLogger(__name__)

PIPE_SIZE = 1 << 20  # Linux's default limit for an unprivileged process (/proc/sys/fs/pipe-max-size)


class _AcceptedPump(Pump):
    """The relay's back end for an accepted socket: joins the relay when its transport is connected."""

    def __init__(self, relay: Relay, on_made: Callable[[], None]) -> None:
        super().__init__(relay)
        relay.b = self
        self._on_made = on_made

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._on_made()


class BridgeChannel(Channel):
    def __init__(self, link: BridgeLink, stream: int) -> None:
        super().__init__(link.sink, link.gate, started=False, hold_limit=1 << 20)
        self.link = link
        self.stream = stream
        self.name = str(stream)
        self._header = link.proto.data_header(stream)

    def _send_data(self, writer: MessageSink, data: Buffer) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_DATA):
            writer.send(self._header, view[start:start + MAX_DATA])

    def _send_close(self, writer: MessageSink, reason: str | None) -> None:
        msg = self.link.proto.close(self.stream)
        if msg is not None:
            writer.send(msg)

    def _forget(self) -> None:
        self.link.channels.pop(self.stream, None)


class BridgeLink:
    """Feeds received bytes to the protocol, dispatches its events, and owns the per-stream relays."""

    def __init__(self, proto: BridgeProtocol, sink: LengthPrefixedSink, *,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.proto = proto
        self.sink = sink
        self.gate = InboundGate()
        self.channels: dict[int, BridgeChannel] = {}
        self.on_event = on_event
        self.tasks = TaskSet("bridge streams", logger=log)
        self.read_transport: asyncio.ReadTransport | None = None
        self.failure: FrameError | None = None
        self.closed = False

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.proto.receive_data(data)
        except FrameError as exc:
            log.error("bridge: %s", exc)
            self.failure = exc
            self.close()
            return
        for event in events:
            if isinstance(event, Data):
                channel = self.channels.get(event.stream)
                if channel is not None:
                    channel.feed(event.payload)
            elif isinstance(event, Closed):
                channel = self.channels.pop(event.stream, None)
                if channel is not None:
                    channel.remote_closed()
            elif self.on_event is not None:
                self.on_event(event)
        self.flush()
        if self.gate.blocked and self.read_transport is not None:
            self.read_transport.pause_reading()
            self.tasks.spawn(self._resume_when_open(), name="bridge gate")

    async def _resume_when_open(self) -> None:
        if await self.gate.wait_until_open(lambda: not self.closed) and self.read_transport is not None:
            self.read_transport.resume_reading()

    def flush(self) -> None:
        for msg in self.proto.messages_to_send():
            self.send(msg)

    def send(self, msg: bytes) -> None:
        try:
            self.sink.send(msg)
        except SinkClosed:
            self.close()

    def relay(self, stream: int, connect: Callable[[Relay], asyncio.Future[object] | asyncio.Task[object]]) -> None:
        """Relay ``stream`` to a local socket; ``connect(relay)`` connects ``relay.back`` (or adopts a transport)."""
        channel = BridgeChannel(self, stream)
        self.channels[stream] = channel
        self.tasks.spawn(self._run_relay(channel, connect), name=f"bridge stream {stream}")

    async def _run_relay(self, channel: BridgeChannel,
                         connect: Callable[[Relay], asyncio.Future[object] | asyncio.Task[object]]) -> None:
        relay = Relay()
        channel.set_protocol(relay.front())
        try:
            await connect(relay)
        except OSError as exc:
            log.info("bridge stream %d: cannot connect the local socket: %s", channel.stream, exc)
            channel.close()  # sends CLOSE when the stream still exists
            return
        relay.join()
        channel.start()
        await relay.done

    def accept(self, kind: str) -> asyncio.Protocol:
        """Container side: a client connected to ``kind``'s socket; returns the protocol for its transport."""
        stream, msg = self.proto.open_stream(kind)
        self.send(msg)
        channel = BridgeChannel(self, stream)
        self.channels[stream] = channel
        relay = Relay()
        channel.set_protocol(relay.front())

        def join() -> None:  # once the accepted transport is connected
            relay.join()
            channel.start()

        return _AcceptedPump(relay, join)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for channel in list(self.channels.values()):
            channel.link_lost()
        self.channels.clear()
        self.gate.close()

    async def aclose(self) -> None:
        self.close()
        await self.tasks.aclose()
