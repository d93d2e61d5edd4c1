"""FramedSession: multiplexed frames over a unix socketpair and over a pipe pair (the host proxy's bridge)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from hatchway.common.framedsession import FramedSession
from hatchway.common.gate import InboundGate
from hatchway.common.muxhandler import EndKind, ProtocolViolation
from hatchway.common.sink import SinkProtocol
from helpers import wait_until


class Recorder:
    def __init__(self, wait_for=None):
        self.frames: list[bytes] = []
        self.wait_for = wait_for

    def binary_received(self, data: bytes):
        if data == b"bad":
            raise ProtocolViolation("bad frame")
        self.frames.append(data)
        return self.wait_for

    def text_received(self, text: str):
        raise AssertionError("no text on a framed stream")


def frame(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


class Holder:
    name = "holder"

    def reset(self, reason: str) -> None:
        raise AssertionError("not reset")


async def test_frames_are_dispatched_the_gate_holds_reading_and_eof_ends_the_session():
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    gate = InboundGate()
    handler = Recorder()
    session = FramedSession(handler, gate=gate)
    await loop.create_unix_connection(lambda: session, sock=ours)
    await loop.sock_sendall(theirs, frame(b"one") + frame(b"") + frame(b"tw"))
    await wait_until(lambda: len(handler.frames) == 3)
    assert handler.frames == [b"one", b"", b"tw"]
    holder = Holder()
    gate.pause(holder)
    assert not session.reading
    gate.resume(holder)
    assert session.reading
    session.sink.send(b"re", b"ply")
    assert await loop.sock_recv(theirs, 100) == frame(b"reply")
    theirs.shutdown(socket.SHUT_WR)
    ended = await asyncio.wait_for(session.ended, 5)
    assert ended.kind is EndKind.PEER_CLOSED
    theirs.close()
    await session.aclose()


async def test_an_oversize_frame_or_a_protocol_violation_ends_only_that_session():
    loop = asyncio.get_running_loop()
    for wire, detail in ((struct.pack("!I", 1000), "exceeds"), (frame(b"bad"), "bad frame")):
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        session = FramedSession(Recorder(), max_message=100)
        await loop.create_unix_connection(lambda s=session: s, sock=ours)
        await loop.sock_sendall(theirs, wire)
        ended = await asyncio.wait_for(session.ended, 5)
        assert ended.kind is EndKind.PROTOCOL_ERROR and detail in ended.detail
        assert await loop.sock_recv(theirs, 10) == b""  # the connection was dropped
        theirs.close()
        await session.aclose()


async def test_over_a_pipe_pair_with_a_returned_sink_holding_reading_until_it_drains():
    loop = asyncio.get_running_loop()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    out_transport, sink_protocol = await loop.connect_write_pipe(SinkProtocol, os.fdopen(out_w, "wb", buffering=0))
    assert sink_protocol.sink is not None

    class Busy:
        paused = True

        def __init__(self):
            self.event = asyncio.Event()

        async def drained(self):
            await self.event.wait()
            self.paused = False

    busy = Busy()
    handler = Recorder(wait_for=busy)
    session = FramedSession(handler, sink=sink_protocol.sink)
    read_transport, _ = await loop.connect_read_pipe(lambda: session, os.fdopen(in_r, "rb", buffering=0))
    os.write(in_w, frame(b"a"))
    await wait_until(lambda: handler.frames == [b"a"])
    assert not session.reading  # the handler's sink is full: the pipe is not read
    busy.event.set()
    await wait_until(lambda: session.reading)
    session.sink.send(b"out")
    assert os.read(out_r, 100) == frame(b"out")
    os.close(in_w)
    ended = await asyncio.wait_for(session.ended, 5)
    assert ended.kind is EndKind.PEER_CLOSED
    await session.aclose()
    sink_protocol.sink.close()
    out_transport.close()
    await asyncio.wait_for(sink_protocol.lost, 5)
    os.close(out_r)
    read_transport.close()
