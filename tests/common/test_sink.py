"""MessageSink implementations: length-prefixed frames over pipes, and the one-way pump (pipes, os.pipe)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.common.pump import OneWayPump, SinkWriter
from hatchway.common.sink import FrameDecoder, MessageSink, SinkClosed, SinkProtocol
from helpers import wait_until


class Listener:
    def __init__(self) -> None:
        self.events: list[str] = []

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


# -- FrameDecoder: sans-I/O, golden vectors and hypothesis


def test_decoder_golden_frames_split_anywhere():
    wire = b"\x00\x00\x00\x03abc" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x01z"
    for cut in range(len(wire) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert got == [b"abc", b"", b"z"] and decoder.pending == 0


def test_decoder_refuses_an_oversize_frame():
    decoder = FrameDecoder(max_message=10)
    with pytest.raises(ValueError, match="exceeds"):
        decoder.feed(b"\x00\x00\x00\x0b")


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 64), min_size=1, max_size=50))
def test_decoder_round_trips_any_messages_in_any_chunking(messages, cuts):
    wire = b"".join(struct.pack("!I", len(m)) + m for m in messages)
    decoder = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += decoder.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert out == messages and decoder.pending == 0


# -- LengthPrefixedSink over a real pipe


async def open_pipe_sink() -> tuple[SinkProtocol, int]:
    """A LengthPrefixedSink on the write end of an os.pipe; returns it and the read fd."""
    read_fd, write_fd = os.pipe()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(SinkProtocol, os.fdopen(write_fd, "wb", buffering=0))
    opened.append(transport)
    return protocol, read_fd


opened: list[asyncio.BaseTransport] = []


@pytest.fixture(autouse=True)
def close_pipes():
    yield
    while opened:
        opened.pop().close()


async def read_frames(read_fd: int, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    decoder = FrameDecoder()
    out: list[bytes] = []
    try:
        while len(out) < count:
            data = await reader.read(65536)
            assert data, "EOF before every frame arrived"
            out += decoder.feed(data)
    finally:
        transport.close()
    return out


async def test_length_prefixed_sink_sends_whole_frames_and_refuses_after_closing():
    protocol, read_fd = await open_pipe_sink()
    sink = protocol.sink
    assert sink is not None and isinstance(sink, MessageSink)
    sink.send(b"ab", memoryview(b"cd"))
    sink.send(b"")
    big = os.urandom(200_000)
    sink.send(big)
    assert await read_frames(read_fd, 3) == [b"abcd", b"", big]
    sink.mark_closing()
    assert sink.closed
    with pytest.raises(SinkClosed):
        sink.send(b"late")
    sink.close()


async def test_length_prefixed_sink_pauses_listeners_while_the_pipe_is_full():
    protocol, read_fd = await open_pipe_sink()
    sink = protocol.sink
    assert sink is not None
    listener = Listener()
    sink.add_listener(listener)
    chunk = os.urandom(65536)
    sent = 0
    while not sink.paused:  # nobody reads the pipe: its buffer and the transport's fill up
        sink.send(chunk)
        sent += 1
        assert sent < 10_000
    assert listener.events == ["pause"]
    frames = asyncio.ensure_future(read_frames(read_fd, sent))
    await asyncio.wait_for(sink.drained(), 10)
    await wait_until(lambda: listener.events == ["pause", "resume"])
    assert await asyncio.wait_for(frames, 20) == [chunk] * sent
    sink.close()


# -- OneWayPump over os.pipe


async def test_one_way_pump_pipe_to_pipe_with_backpressure():
    loop = asyncio.get_running_loop()
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    pump = OneWayPump()
    target, _ = await loop.connect_write_pipe(pump.target_protocol, os.fdopen(dst_w, "wb", buffering=0))
    target.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
    source, _ = await loop.connect_read_pipe(lambda: pump, os.fdopen(src_r, "rb", buffering=0))
    writer_t, writer_p = await loop.connect_write_pipe(asyncio.BaseProtocol, os.fdopen(src_w, "wb", buffering=0))
    payload = os.urandom(4 * 1024 * 1024)
    writer_t.write(payload)  # nobody reads dst yet: the pump must stop reading the source
    await wait_until(lambda: pump.reading_paused, what="the pump pauses its source")
    assert pump.received < len(payload)
    writer_t.close()  # EOF on the source once everything is through
    reader = asyncio.StreamReader(limit=1 << 24)
    read_t, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(dst_r, "rb", buffering=0)
    )
    got = await asyncio.wait_for(reader.read(), 30)  # until the pump passes the EOF on
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert await asyncio.wait_for(pump.done, 5) is None
    read_t.close()
    source.close()


async def test_one_way_pump_into_a_message_sink_frames_each_read_and_reports_the_end():
    loop = asyncio.get_running_loop()
    protocol, frames_fd = await open_pipe_sink()
    sink = protocol.sink
    assert sink is not None
    ended: list[Exception | None] = []
    src_r, src_w = os.pipe()
    pump = OneWayPump(SinkWriter(sink, ended.append, max_message=1000))
    await loop.connect_read_pipe(lambda: pump, os.fdopen(src_r, "rb", buffering=0))
    os.write(src_w, b"x" * 2500)
    os.close(src_w)
    assert await asyncio.wait_for(pump.done, 5) is None
    assert ended == [None]
    frames = await read_frames(frames_fd, 3)
    assert b"".join(frames) == b"x" * 2500 and max(len(f) for f in frames) <= 1000
    sink.close()


async def test_one_way_pump_from_a_pty_ends_cleanly_when_the_child_exits():
    import subprocess

    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    child = subprocess.Popen(["sh", "-c", "printf 'out of the pty'"], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    protocol, frames_fd = await open_pipe_sink()
    sink = protocol.sink
    assert sink is not None
    ended: list[Exception | None] = []
    pump = OneWayPump(SinkWriter(sink, ended.append), pty=True)
    source, _ = await loop.connect_read_pipe(lambda: pump, os.fdopen(master, "rb", buffering=0))
    assert await asyncio.wait_for(pump.done, 10) is None  # EIO at the end of a PTY is not an error
    assert ended == [None]
    frames = await read_frames(frames_fd, 1)
    assert b"".join(frames).startswith(b"out of the pty")
    source.close()
    await asyncio.get_running_loop().run_in_executor(None, child.wait)
    sink.close()


async def test_sink_writer_encodes_each_slice_and_can_discard_after_the_sink_closes():
    sent: list[tuple[bytes, ...]] = []

    class Sink:
        closed = False
        paused = False

        def send(self, *parts):
            if self.closed:
                raise SinkClosed("gone")
            sent.append(tuple(bytes(p) for p in parts))

        def add_listener(self, listener):
            pass

        def remove_listener(self, listener):
            pass

    sink = Sink()
    writer = SinkWriter(sink, max_message=3, encode=lambda chunk: (b"<", chunk, b">"), discard_when_closed=True)
    writer.write(b"abcdefg")
    assert sent == [(b"<", b"abc", b">"), (b"<", b"def", b">"), (b"<", b"g", b">")]
    sink.closed = True
    writer.write(b"xyz")
    assert not writer.is_closing() and writer.discarded == 3 and writer.sent == 7


class _CountingTarget:
    """A WriteEnd that only counts (the pump's target in the pause test)."""

    def __init__(self) -> None:
        self.got = 0

    def write(self, data) -> None:
        self.got += len(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name, default=None):
        return default


async def test_one_way_pump_paused_before_it_connects_reads_at_most_once():
    # uvloop starts a read pipe AFTER connection_made, so a pause made there is undone: the pump stops
    # the source at its first read (one read through, not the whole source); asyncio reads nothing
    loop = asyncio.get_running_loop()
    src_r, src_w = os.pipe()
    target = _CountingTarget()
    pump = OneWayPump(target)
    pump.pause_writing()  # the target is full before the source is connected
    os.write(src_w, b"x" * 30000)
    source, _ = await loop.connect_read_pipe(lambda: pump, os.fdopen(src_r, "rb", buffering=0))
    for _ in range(20):  # loop iterations (each polls the pipe), not a timed wait
        await asyncio.sleep(0)
    first = target.got
    assert first in (0, 30000)
    os.write(src_w, b"y" * 30000)  # both writes fit in the pipe: a blocking write never waits here
    for _ in range(20):
        await asyncio.sleep(0)
    assert target.got == first  # paused: nothing more is read
    pump.resume_writing()
    await wait_until(lambda: target.got == 60000, what="everything after the resume")
    os.close(src_w)
    assert await asyncio.wait_for(pump.done, 5) is None
    source.close()
