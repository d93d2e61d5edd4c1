"""ForwardStreams: a forward channel's streams without sockets (golden bytes, events to local ends)."""

from __future__ import annotations

import logging

from hatchway.tunnel import protocol
from hatchway.tunnel.forward_streams import ForwardStreams
from hatchway.tunnel.mux import ForwardMux
from hatchway.tunnel.protocol import Proto

H = bytes.fromhex


class ListSink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.paused = False
        self.closed = False

    def send(self, *parts: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise ConnectionError("closed")
        self.sent.append(b"".join(bytes(p) for p in parts))


class End:
    """A stream's local end that records what happens to it."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def feed(self, payload: memoryview | bytes) -> None:
        self.events.append(("data", bytes(payload)))

    def remote_closed(self, error: str | None = None) -> None:
        self.events.append(("closed", error))

    def link_lost(self) -> None:
        self.events.append("lost")


def _open(streams: ForwardStreams):
    stream = streams.open_stream(Proto.TCP)
    assert stream is not None
    stream.endpoint = End()
    return stream, stream.endpoint


def test_open_sends_connect_and_ids_go_up():
    sink = ListSink()
    streams = ForwardStreams(ForwardMux(8080), sink)
    first, _ = _open(streams)
    second, _ = _open(streams)
    assert (first.client_id, second.client_id) == (1, 2)
    assert sink.sent == [H("0100000000011f90"), H("0100000000021f90")]


def test_without_a_sink_or_with_a_closed_one_nothing_opens_and_the_id_is_not_kept():
    mux = ForwardMux(8080)
    assert ForwardStreams(mux).open_stream(Proto.TCP) is None
    sink = ListSink()
    sink.closed = True
    assert ForwardStreams(mux, sink).open_stream(Proto.TCP) is None
    assert mux.streams == {}


def test_data_close_and_error_reach_the_local_end(caplog):
    streams = ForwardStreams(ForwardMux(8080), ListSink())
    a, end_a = _open(streams)
    b, end_b = _open(streams)
    streams.receive(protocol.connected(Proto.TCP, 1))
    streams.receive(H("0300000000010000") + b"hello")
    streams.receive(protocol.close(Proto.TCP, 1))
    with caplog.at_level(logging.WARNING, logger="hatchway.tunnel.forward"):
        streams.receive(protocol.error(2, "refused\x1b[31m"))
    assert end_a.events == [("data", b"hello"), ("closed", None)]
    assert end_b.events == [("closed", "refused\x1b[31m")]
    assert "\x1b" not in caplog.text and "connection 2" in caplog.text  # logged escaped


def test_malformed_messages_are_dropped_and_lost_resets_every_open_stream():
    sink = ListSink()
    streams = ForwardStreams(ForwardMux(8080), sink)
    _, end_a = _open(streams)
    _, end_b = _open(streams)
    streams.receive(b"\x03\x00")  # a short header: dropped, nothing else happens
    streams.lost()
    assert end_a.events == ["lost"] and end_b.events == ["lost"]


def test_congested_follows_the_sink():
    sink = ListSink()
    streams = ForwardStreams(ForwardMux(8080), sink)
    assert not streams.congested and not ForwardStreams(ForwardMux(1)).congested
    sink.paused = True
    assert streams.congested
