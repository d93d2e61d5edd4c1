"""ClientStreams: the client's handling of the runner's messages, without sockets (golden bytes)."""

from __future__ import annotations

from test_forward_streams import End, ListSink

from hatchway.tunnel import protocol
from hatchway.tunnel.client_streams import ClientStreams
from hatchway.tunnel.mux import ClientMux
from hatchway.tunnel.protocol import Proto

H = bytes.fromhex


def test_connect_asks_the_driver_to_open_then_data_and_close_reach_the_local_end():
    sink = ListSink()
    streams = ClientStreams(ClientMux(), sink)
    stream = streams.receive(H("0100000000071f90"))  # CONNECT tcp id 7 port 8080
    assert stream is not None and (stream.client_id, stream.port, stream.proto) == (7, 8080, Proto.TCP)
    stream.endpoint = end = End()
    assert streams.receive(H("0300000000070000") + b"hi") is None
    assert streams.receive(protocol.close(Proto.TCP, 7)) is None
    assert end.events == [("data", b"hi"), ("closed", None)]
    assert sink.sent == []  # nothing is answered for these


def test_ping_is_answered_and_malformed_messages_are_dropped():
    sink = ListSink()
    streams = ClientStreams(ClientMux(), sink)
    assert streams.receive(H("0600000000090000")) is None  # PING id 9
    assert sink.sent == [H("0700000000090000")]  # PONG tcp, same id, port 0
    assert streams.receive(b"\x01") is None and len(sink.sent) == 1


def test_a_closed_sink_makes_send_false_and_lost_resets_every_stream():
    sink = ListSink()
    streams = ClientStreams(ClientMux(), sink)
    ends = []
    for header in (H("0100000000011f90"), H("0100000000021f90")):
        stream = streams.receive(header)
        assert stream is not None
        stream.endpoint = end = End()
        ends.append(end)
    sink.closed = True
    assert streams.send(b"x") is False
    streams.lost()
    assert [e.events for e in ends] == [["lost"], ["lost"]]
