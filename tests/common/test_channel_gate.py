"""InboundGate and Channel: slow-consumer policies, half-close, resets (RST) on abnormal ends, held data."""

import asyncio
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.wirepair import TRANSPORTS, read_until_end, served
from hatchway.common.channel import InboundGate, SlowConsumerPolicy
from helpers import wait_until


class FakeChannel:
    name = "test"

    def __init__(self, gate):
        self.gate = gate
        self.reset_reason = None
        self.reset_event = asyncio.Event()

    def reset(self, reason):
        self.reset_reason = reason
        self.gate.resume(self)
        self.reset_event.set()


async def test_block_holds_the_gate_until_every_paused_channel_resumes():
    gate = InboundGate(SlowConsumerPolicy.BLOCK)
    a, b = FakeChannel(gate), FakeChannel(gate)
    gate.pause(a)
    gate.pause(b)
    assert gate.blocked
    gate.resume(a)
    assert gate.blocked
    gate.resume(b)
    assert not gate.blocked
    await asyncio.wait_for(gate.wait_open(), 1)
    assert a.reset_reason is None and b.reset_reason is None


async def test_reset_policy_resets_at_once_and_never_blocks():
    gate = InboundGate(SlowConsumerPolicy.RESET)
    channel = FakeChannel(gate)
    gate.pause(channel)
    assert channel.reset_reason == "slow consumer" and not gate.blocked


async def test_block_resets_a_channel_that_stays_stalled_past_the_timeout():
    gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0.05)
    stalled, slow = FakeChannel(gate), FakeChannel(gate)
    gate.pause(stalled)
    gate.pause(slow)
    gate.resume(slow)  # a slow reader that keeps draining is never reset
    await asyncio.wait_for(stalled.reset_event.wait(), 5)
    assert stalled.reset_reason == "stalled consumer" and slow.reset_reason is None
    assert not gate.blocked


async def test_resuming_in_time_cancels_the_stall_timer():
    gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0.05)
    channel, witness = FakeChannel(gate), FakeChannel(gate)
    gate.pause(channel)
    gate.resume(channel)
    gate.pause(witness)  # its timer firing proves the first one's would have fired by then
    await asyncio.wait_for(witness.reset_event.wait(), 5)
    assert channel.reset_reason is None


# -- Channel over a real wire (a framed socketpair, see wirepair.py) between two relays



REPLY = 1024 * 1024


@pytest.mark.parametrize("wire", TRANSPORTS)
async def test_half_close_without_wire_support_keeps_the_channel_open_for_the_reply(wire):
    """#6 item 15: send, shutdown(SHUT_WR), read the whole 1 MiB reply."""
    reply = os.urandom(REPLY)
    answered = asyncio.Event()

    async def handle(reader, writer):
        request = await reader.readexactly(5)
        assert request == b"hello"
        writer.write(reply)
        await writer.drain()
        writer.close()
        answered.set()

    async with served(handle, transport=wire, half_close=False) as path:
        reader, writer = await asyncio.open_connection("127.0.0.1", path.port)
        writer.write(b"hello")
        writer.write_eof()
        got, error = await asyncio.wait_for(read_until_end(reader), 20)
        assert error is None and got == reply
        await wait_until(answered)
        writer.close()


@pytest.mark.parametrize("wire", TRANSPORTS)
async def test_a_kept_open_channel_whose_far_side_stays_silent_ends(wire):
    """A local EOF looks the same whether the user closed or only shut down its write side: when the far
    side then says nothing (an echo service waiting for EOF), the channel ends after ``eof_linger``
    instead of holding both connections forever: the service's connection ends (as the wire's close
    says: an EOF, or a reset where the close carries the reason), the user gets a reset."""
    service_ended = asyncio.Event()

    async def handle(reader, writer):
        writer.write(await reader.readexactly(5))
        await writer.drain()
        try:
            assert await reader.read() == b""  # waits for an EOF the wire cannot carry
        except ConnectionError:
            pass
        service_ended.set()
        writer.close()

    async with served(handle, transport=wire, half_close=False) as path:
        reader, writer = await asyncio.open_connection("127.0.0.1", path.port)
        writer.write(b"hello")
        writer.write_eof()
        got, error = await asyncio.wait_for(read_until_end(reader), 20)
        assert got == b"hello" and isinstance(error, ConnectionResetError)
        await wait_until(service_ended)
        writer.close()


@pytest.mark.parametrize("wire", TRANSPORTS)
async def test_without_keep_open_a_local_eof_closes_the_channel_and_cuts_the_reply(wire):
    """The dialing side's rule (and the old behaviour everywhere): EOF closes; shows what keep_open_on_eof fixes."""
    async def handle(reader, writer):
        try:
            await reader.readexactly(5)
            while True:
                writer.write(b"z" * 65536)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    async with served(handle, transport=wire, keep_open=False) as path:
        reader, writer = await asyncio.open_connection("127.0.0.1", path.port)
        writer.write(b"hello")
        writer.write_eof()
        got, error = await asyncio.wait_for(read_until_end(reader), 20)  # ends: the channel closed
        assert error is None and len(got) < REPLY
        writer.close()


@pytest.mark.parametrize("wire", TRANSPORTS)
async def test_half_close_with_wire_support_carries_the_eof(wire):
    """A wire that has half-close passes the EOF on: an echo server that reads to EOF answers."""
    payload = os.urandom(300_000)

    async def handle(reader, writer):
        data = await reader.read()  # until EOF: only arrives if the half-close was carried
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    async with served(handle, transport=wire, half_close=True) as path:
        reader, writer = await asyncio.open_connection("127.0.0.1", path.port)
        writer.write(payload)
        writer.write_eof()
        got, error = await asyncio.wait_for(read_until_end(reader), 20)
        assert error is None and got == payload[::-1]
        writer.close()


@pytest.mark.parametrize("wire", TRANSPORTS)
async def test_a_link_lost_mid_transfer_resets_both_applications(wire):
    """#6 item 4: the wire dies; the client and the service each get ECONNRESET, never a clean EOF."""
    service_end = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        writer.write(b"x" * 100_000)  # some of a reply, then the stream stays open
        await writer.drain()
        service_end.set_result(await read_until_end(reader))

    async with served(handle, transport=wire) as path:
        reader, writer = await asyncio.open_connection("127.0.0.1", path.port)
        first = await asyncio.wait_for(reader.readexactly(1000), 10)
        assert first == b"x" * 1000
        path.a.cut()  # cut the link under both channels
        _, error = await asyncio.wait_for(read_until_end(reader), 10)
        assert isinstance(error, ConnectionResetError)
        _, service_error = await asyncio.wait_for(service_end, 10)
        assert isinstance(service_error, ConnectionResetError)
        writer.close()


@pytest.mark.parametrize("wire", TRANSPORTS)
async def test_a_stall_reset_reaches_the_stopped_reader_as_a_reset(wire):
    """The gate's stall timeout resets the channel; its local reader sees ECONNRESET, not EOF."""
    gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0.2)
    chunk = b"y" * 65536

    async def handle(reader, writer):
        try:
            while True:
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async with served(handle, transport=wire, gate_a=gate, relay_limit=64 * 1024) as path:
        sock = socket.create_connection(("127.0.0.1", path.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await wait_until(lambda: path.a.channels, what="the channel opens")
        channel = next(iter(path.a.channels.values()))
        await wait_until(channel.is_closing, timeout=20, what="the stall reset")
        loop = asyncio.get_running_loop()
        error = None
        try:
            while await loop.sock_recv(sock, 65536):
                pass
        except ConnectionResetError as exc:
            error = exc
        assert isinstance(error, ConnectionResetError)
        sock.close()


async def test_fail_ends_without_sending_close_and_start_releases_held_data():
    sent = []

    class Sink:
        paused = False
        buffered = 0
        closed = False

        def send(self, *parts):
            sent.append(b"".join(parts))

        def add_listener(self, listener):
            pass

        def remove_listener(self, listener):
            pass

    class Proto:
        def __init__(self):
            self.data = []
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            transport.pause_reading()  # the relay's wiring pause: ignored before start()

        def data_received(self, data):
            self.data.append(bytes(data))

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    from hatchway.common.channel import Channel

    class C(Channel):
        def _send_close(self, writer, reason):
            writer.send(b"close")

    gate = InboundGate(SlowConsumerPolicy.BLOCK)
    channel = C(Sink(), gate, started=False, hold_limit=4)
    channel.feed(b"abc")
    assert not gate.blocked and channel.held_bytes == 3
    channel.feed(b"de")  # past the hold limit: the gate holds the read loop
    assert gate.blocked
    proto = Proto()
    channel.set_protocol(proto)
    assert gate.blocked is not False and proto.data == []  # still held: not started
    channel.start()
    assert proto.data == [b"abc", b"de"] and not gate.blocked
    channel.fail(ConnectionResetError("gone"))
    assert isinstance(await proto.lost, ConnectionResetError)
    assert sent == []  # fail() sends no close


def test_every_gate_has_a_stall_timeout_unless_it_opts_out():
    from hatchway.common.gate import DEFAULT_STALL_TIMEOUT

    assert InboundGate().stall_timeout == DEFAULT_STALL_TIMEOUT > 0
    assert InboundGate(stall_timeout=0).stall_timeout == 0
    assert SlowConsumerPolicy.parse(" Reset ") is SlowConsumerPolicy.RESET
    with pytest.raises(ValueError, match="block or reset"):
        SlowConsumerPolicy.parse("drop")


class _RecordingSink:
    paused = False
    buffered = 0
    closed = False

    def __init__(self):
        self.sent = []

    def send(self, *parts):
        self.sent.append(b"".join(bytes(p) for p in parts))

    def add_listener(self, listener):
        pass

    def remove_listener(self, listener):
        pass


class _RecordingProtocol:
    def __init__(self):
        self.data = bytearray()
        self.eof = False
        self.lost = []

    def connection_made(self, transport):
        transport.pause_reading()  # as a relay Pump does before it is joined

    def data_received(self, data):
        assert not self.eof and not self.lost, "data after the end"
        self.data += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.append(exc)

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=12),
    set_at=st.integers(0, 12),
    start_at=st.integers(0, 12),
    end=st.sampled_from(["clean", "eof", "reset", None]),
    limit=st.sampled_from([None, 1, 40, 10_000]),
)
def test_held_data_reaches_the_protocol_once_in_order_whatever_the_interleaving(chunks, set_at, start_at, end, limit):
    """feed / set_protocol / start / the far side's end in any order: every byte once, in order; the gate reopens."""

    async def scenario():
        from hatchway.common.channel import Channel

        class C(Channel):
            def _send_close(self, writer, reason):
                writer.send(b"close")

        gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0)
        channel = C(_RecordingSink(), gate, started=False, hold_limit=limit, half_close=True)
        proto = _RecordingProtocol()
        steps = max(len(chunks), set_at, start_at) + 1
        fed = bytearray()
        for i in range(steps):
            if i == set_at:
                channel.set_protocol(proto)
            if i == start_at:
                channel.start()
            if i < len(chunks):
                channel.feed(chunks[i])
                fed += chunks[i]
        channel.resume_reading()  # the relay's join resumes what its connection_made paused
        if end == "clean":
            channel.remote_closed(None)
        elif end == "eof":
            channel.remote_eof()
        elif end == "reset":
            channel.remote_closed("boom")
        return channel, gate, proto, fed

    async def check(channel, gate, proto, fed):  # a new task: runs after the channel's call_soon(connection_lost)
        if end == "reset":
            assert bytes(proto.data) == bytes(fed)[: len(proto.data)]  # a prefix, then the reset
            assert len(proto.lost) == 1 and isinstance(proto.lost[0], ConnectionResetError)
        else:
            assert bytes(proto.data) == bytes(fed)
            assert proto.eof == (end == "eof")
            assert proto.lost == ([None] if end == "clean" else [])
        assert not gate.blocked and channel.held_bytes == 0

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(check(*loop.run_until_complete(scenario())))
    finally:
        loop.close()


async def test_a_half_closing_kept_open_channel_sends_its_eof_and_falls_back_to_the_linger():
    """half_close + keep_open_on_eof (the tunnel's forward side): a local EOF is sent on at once; a far side
    that answers nothing (an older peer that ignores the wire's EOF) ends the channel after ``eof_linger``
    of silence; any far-side byte restarts that wait."""
    from hatchway.common.channel import Channel

    class C(Channel):
        def _send_eof(self, writer):
            writer.send(b"eof")

        def _send_close(self, writer, reason):
            writer.send(b"close")

    gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0)
    sink = _RecordingSink()
    channel = C(sink, gate, half_close=True, keep_open_on_eof=True, eof_linger=0.2)
    proto = _RecordingProtocol()
    channel.set_protocol(proto)
    channel.resume_reading()
    assert channel.can_write_eof()
    channel.write_eof()
    channel.write_eof()  # once
    assert sink.sent == [b"eof"] and not channel.is_closing()
    channel.feed(b"reply")  # the far side is alive: the wait restarts
    await wait_until(lambda: proto.lost, what="the linger ends a silent far side")
    assert sink.sent == [b"eof", b"close"] and bytes(proto.data) == b"reply"
    assert isinstance(proto.lost[0], ConnectionResetError)
