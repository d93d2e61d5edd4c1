"""The tunnel multiplexers without sockets: literal bytes in, events and bytes out (tunnel.md 5-7, 14)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.tunnel import mux
from hatchway.tunnel.mux import (
    ClientMux,
    Closed,
    Connected,
    ForwardMux,
    ForwardSide,
    HalfClosed,
    Ignored,
    Opened,
    Phase,
    Received,
    Reply,
    Router,
    ToTunnel,
    ToUser,
    TunnelSide,
)
from hatchway.tunnel.protocol import MsgType, Proto, ProtocolError

H = bytes.fromhex


# ---------------------------------------------------------------- client
def test_client_connect_then_connected_then_data():
    m = ClientMux()
    ev = m.receive(H("0100000000011f90"))  # CONNECT TCP id 1 port 8080
    assert isinstance(ev, Opened)
    stream = ev.stream
    assert (stream.client_id, stream.proto, stream.port, stream.phase) == (1, Proto.TCP, 8080, Phase.DIALING)
    ev = m.receive(H("0300000000010000") + b"early")  # DATA while dialing: handed on (the driver holds it)
    assert isinstance(ev, Received) and ev.stream is stream and bytes(ev.payload) == b"early"
    assert m.connected(stream) == H("0200000000010000")
    assert stream.phase is Phase.OPEN
    assert m.connected(stream) is None  # only once


def test_client_duplicate_connect_is_ignored_and_changes_nothing():
    m = ClientMux()
    first = m.receive(H("0100000000071f90"))
    assert isinstance(first, Opened)
    ev = m.receive(H("0100000000070050"))
    assert isinstance(ev, Ignored) and "duplicate CONNECT" in ev.reason
    assert m.streams[7] is first.stream and first.stream.port == 8080


def test_client_close_while_dialing_ends_the_stream_and_nothing_more_is_sent():
    m = ClientMux()
    stream = m.receive(H("0100000000021f90")).stream  # type: ignore[union-attr]
    m.receive(H("0300000000020000") + b"queued")
    ev = m.receive(H("0400000000020000"))
    assert isinstance(ev, Closed) and ev.stream is stream and ev.error is None
    assert stream.phase is Phase.CLOSED and 2 not in m.streams
    # the dial finishing or failing later sends nothing for the id (D3)
    assert m.connected(stream) is None
    assert m.failed(stream, "Connection refused (os error 111)") is None
    assert m.finished(stream) is None


def test_client_failed_dial_answers_error_and_frees_the_id_for_reuse():
    m = ClientMux()
    stream = m.receive(H("0100000000031f90")).stream  # type: ignore[union-attr]
    assert m.failed(stream, "Connection refused (os error 111)") == (
        H("0500000000030000") + b"Connection refused (os error 111)"
    )
    assert 3 not in m.streams
    again = m.receive(H("0100000000031f90"))
    assert isinstance(again, Opened) and again.stream is not stream  # D2: reusable at once


def test_client_local_close_sends_close_once_with_the_stream_proto():
    m = ClientMux()
    stream = m.receive(H("0101000000040035")).stream  # type: ignore[union-attr]  # CONNECT UDP
    assert m.connected(stream) == H("0201000000040000")
    assert m.finished(stream) == H("0401000000040000")
    assert m.finished(stream) is None
    assert m.streams == {}


def test_client_unknown_ids_warn_once_per_run():
    m = ClientMux()
    first = m.receive(H("0300000f12060000") + b"x")
    assert isinstance(first, Ignored) and "unknown id 987654" in first.reason
    assert m.receive(H("0300000f12060000") + b"y") is None
    assert m.receive(H("0400000f12060000")) is None
    other = m.receive(H("0400000000050000"))
    assert isinstance(other, Ignored) and "CLOSE for unknown id 5" in other.reason


def test_client_ping_with_any_fields_gets_pong_tcp_same_id_port_zero():
    m = ClientMux()
    ev = m.receive(H("0601000000090 4d2".replace(" ", "")) + b"abc")
    assert isinstance(ev, Reply) and ev.message == H("0700000000090000")
    ev = m.receive(H("0600000000000000"))
    assert isinstance(ev, Reply) and ev.message == H("0700000000000000")


@pytest.mark.parametrize("raw", [H("0200000000010000"), H("0500000000010000") + b"x", H("0700000000010000")])
def test_client_ignores_connected_error_pong_from_the_runner(raw):
    ev = ClientMux().receive(raw)
    assert isinstance(ev, Ignored) and "from the runner" in ev.reason


@pytest.mark.parametrize("raw", [b"", b"\x01\x00", H("0900000000010000"), H("0107000000011f90")])
def test_client_malformed_messages_raise_protocol_error(raw):
    with pytest.raises(ProtocolError):
        ClientMux().receive(raw)


def test_client_empty_data_is_the_users_half_close_on_tcp_and_nothing_on_udp():
    m = ClientMux()
    tcp = m.receive(H("0100000000011f90")).stream  # type: ignore[union-attr]
    ev = m.receive(H("0300000000010000"))  # zero-length DATA: the user's EOF, the stream stays open
    assert isinstance(ev, HalfClosed) and ev.stream is tcp and tcp.phase is Phase.DIALING and 1 in m.streams
    m.receive(H("0101000000020035"))  # UDP: an empty DATA is an empty datagram, dropped as before
    assert m.receive(H("0301000000020000")) is None
    assert m.receive(H("0300000000090000")) == Ignored("dropping DATA for unknown id 9")


def test_client_half_close_is_told_once_and_later_data_is_dropped():
    m = ClientMux()
    tcp = m.receive(H("0100000000071f90")).stream  # type: ignore[union-attr]
    assert m.connected(tcp) == H("0200000000070000")
    assert isinstance(m.receive(H("0300000000070000")), HalfClosed)
    assert m.receive(H("0300000000070000")) is None  # a repeated EOF changes nothing
    assert m.receive(H("0300000000070000") + b"late") == Ignored("dropping DATA for id 7 after its EOF")
    assert isinstance(m.receive(H("0400000000070000")), Closed)  # CLOSE still ends it


def test_client_lost_closes_every_stream():
    m = ClientMux()
    a = m.receive(H("0100000000011f90")).stream  # type: ignore[union-attr]
    b = m.receive(H("0101000000020035")).stream  # type: ignore[union-attr]
    assert set(m.lost()) == {a, b}
    assert m.streams == {} and a.phase is b.phase is Phase.CLOSED


def test_data_payload_is_a_view_not_a_copy():
    m = ClientMux()
    m.receive(H("0100000000011f90"))
    raw = bytearray(H("0300000000010000") + b"abc")
    ev = m.receive(raw)
    raw[8] = ord("x")
    assert isinstance(ev, Received) and bytes(ev.payload) == b"xbc"


# ---------------------------------------------------------------- forward CLI
def test_forward_ids_start_at_one_and_go_up():
    m = ForwardMux(8080)
    s1, c1 = m.open(Proto.TCP)
    s2, c2 = m.open(Proto.UDP)
    assert c1 == H("0100000000011f90") and c2 == H("0101000000021f90")
    assert (s1.client_id, s2.client_id, m.opened) == (1, 2, 2)


def test_forward_connected_data_error_close():
    m = ForwardMux(80)
    s, _ = m.open(Proto.TCP)
    ev = m.receive(H("0200000000010000"))
    assert isinstance(ev, Connected) and s.phase is Phase.OPEN
    ev = m.receive(H("0300000000010000") + b"hi")
    assert isinstance(ev, Received) and bytes(ev.payload) == b"hi"
    ev = m.receive(H("0500000000010000") + b"Connection refused (os error 111)")
    assert isinstance(ev, Closed) and ev.error == "Connection refused (os error 111)"
    assert m.receive(H("0300000000010000") + b"late") is None  # gone
    assert m.finished(s) is None


def test_forward_half_close_both_ways_as_zero_length_data():
    m = ForwardMux(80)
    s, _ = m.open(Proto.TCP)
    assert m.eof(s) == H("0300000000010000")  # the user's EOF, before CONNECTED too
    ev = m.receive(H("0300000000010000"))  # the service's EOF
    assert isinstance(ev, HalfClosed) and ev.stream is s and s.live
    assert m.receive(H("0300000000010000")) is None  # told once
    assert m.receive(H("0300000000010000") + b"x") is None  # DATA after the far side's EOF: dropped
    assert s.live and m.eof(s) == H("0300000000010000")  # our direction goes on
    u, _ = m.open(Proto.UDP)
    assert m.receive(H("0301000000020000")) is None and m.eof(u) is None
    assert m.finished(s) == H("0400000000010000") and m.eof(s) is None


def test_forward_local_close_sends_close_once():
    m = ForwardMux(80)
    s, _ = m.open(Proto.TCP)
    assert m.finished(s) == H("0400000000010000")
    assert m.finished(s) is None and m.streams == {}


def test_forward_close_from_the_far_side():
    m = ForwardMux(80)
    s, _ = m.open(Proto.TCP)
    ev = m.receive(H("0400000000010000"))
    assert isinstance(ev, Closed) and ev.error is None and s.phase is Phase.CLOSED


# ---------------------------------------------------------------- runner
def _route_setup(reset_slow: bool = False):
    router = Router(reset_slow=reset_slow)
    tunnel = TunnelSide("c1")
    a = ForwardSide("c1", 8080, Proto.TCP)
    b = ForwardSide("c1", 8080, Proto.TCP)
    return router, tunnel, a, b


def _one(out):
    assert len(out) == 1
    return out[0]


def test_router_remaps_cli_ids_so_two_users_never_collide():
    router, tunnel, a, b = _route_setup()
    ta = _one(router.from_user(a, tunnel, H("0100000000011f90")))
    tb = _one(router.from_user(b, tunnel, H("0100000000011f90")))
    assert isinstance(ta, ToTunnel) and ta.head == H("0100000000011f90")  # tunnel id 1
    assert isinstance(tb, ToTunnel) and tb.head == H("0100000000021f90")  # tunnel id 2
    # replies go back to the right user with the CLI's own id
    reply = _one(router.from_tunnel(tunnel, H("0300000000020000") + b"for b"))
    assert isinstance(reply, ToUser) and reply.forward is b
    assert reply.head == H("0300000000010000") and bytes(reply.payload) == b"for b"
    data = _one(router.from_user(a, tunnel, H("0300000000010000") + b"from a"))
    assert isinstance(data, ToTunnel) and data.head == H("0300000000010000") and bytes(data.payload) == b"from a"


def test_router_relays_zero_length_data_both_ways_with_ids_rewritten():
    router = Router()
    tunnel, a, b = _Tunnel("c1"), _Forward("c1"), _Forward("c1")
    router.deliver(router.from_user(b, tunnel, H("0100000000011f90")))  # tunnel id 1
    router.deliver(router.from_user(a, tunnel, H("0100000000011f90")))  # tunnel id 2
    down = _one(router.from_user(a, tunnel, H("0300000000010000")))  # the user's EOF
    assert isinstance(down, ToTunnel) and down.head == H("0300000000020000") and bytes(down.payload) == b""
    up = _one(router.from_tunnel(tunnel, H("0300000000020000")))  # the service's EOF
    assert isinstance(up, ToUser) and up.forward is a and up.head == H("0300000000010000") and bytes(up.payload) == b""
    assert 1 in a.routes and 2 in tunnel.routes  # a half-close ends nothing
    assert router.deliver([down, up]) is None
    assert tunnel.sink.sent[-1] == H("0300000000020000")  # header-only messages on the wire
    assert a.sink.sent == [H("0300000000010000")] and b.sink.sent == []


def test_router_port_mismatch_is_an_error_and_reaches_no_container():
    router, tunnel, a, _ = _route_setup()
    out = _one(router.from_user(a, tunnel, H("0100000000010016")))
    assert isinstance(out, ToUser) and out.head == H("0500000000010000")
    assert b"Port mismatch" in bytes(out.payload)
    assert tunnel.routes == {} and a.routes == {}


def test_router_without_tunnel_answers_not_connected():
    router, _, a, _ = _route_setup()
    out = _one(router.from_user(a, None, H("0100000000011f90")))
    assert isinstance(out, ToUser) and bytes(out.payload) == b"Container tunnel not connected (container=c1)"


def test_router_never_reuses_a_tunnel_id():
    router, tunnel, a, _ = _route_setup()
    router.from_user(a, tunnel, H("0100000000011f90"))
    assert _one(router.from_tunnel(tunnel, H("0400000000010000"))).head == H("0400000000010000")
    again = _one(router.from_user(a, tunnel, H("0100000000011f90")))
    assert again.head == H("0100000000021f90")


def test_router_ignores_late_messages_for_forgotten_ids():
    router, tunnel, a, _ = _route_setup()
    router.from_user(a, tunnel, H("0100000000011f90"))
    close = _one(router.from_user(a, tunnel, H("0400000000010000")))
    assert isinstance(close, ToTunnel) and close.head == H("0400000000010000") and close.route is None
    assert router.from_tunnel(tunnel, H("0300000000010000") + b"late") == []
    assert router.from_tunnel(tunnel, H("0400000000010000")) == []
    assert router.from_tunnel(tunnel, H("0700000000010000")) == []  # PONG


def test_router_tunnel_end_tells_each_user():
    router, tunnel, a, b = _route_setup()
    router.from_user(a, tunnel, H("0100000000011f90"))
    router.from_user(b, tunnel, H("0101000000051f90"))
    out = router.tunnel_ended(tunnel)
    assert {(o.forward is a, o.head) for o in out} == {(True, H("0500000000010000")), (False, H("0501000000050000"))}
    assert all(bytes(o.payload) == mux.ERROR_TUNNEL_LOST.encode() for o in out)
    assert a.routes == b.routes == {} and not tunnel.alive


def test_router_forward_end_closes_its_ids_in_the_container():
    router, tunnel, a, b = _route_setup()
    router.from_user(a, tunnel, H("0100000000011f90"))
    router.from_user(b, tunnel, H("0100000000011f90"))
    out = _one(router.forward_ended(a))
    assert isinstance(out, ToTunnel) and out.head == H("0400000000010000")
    assert list(tunnel.routes) == [2]


def test_router_reset_policy_resets_only_the_congested_route():
    router, tunnel, a, b = _route_setup(reset_slow=True)
    router.from_user(a, tunnel, H("0100000000011f90"))
    router.from_user(b, tunnel, H("0100000000011f90"))
    a.congested = True
    out = router.from_tunnel(tunnel, H("0300000000010000") + b"x")
    assert [(type(o), o.head) for o in out] == [(ToUser, H("0500000000010000")), (ToTunnel, H("0400000000010000"))]
    ok = _one(router.from_tunnel(tunnel, H("0300000000020000") + b"y"))
    assert isinstance(ok, ToUser) and ok.forward is b


def test_router_send_failed_answers_error():
    router, tunnel, a, _ = _route_setup()
    connect = _one(router.from_user(a, tunnel, H("0100000000011f90")))
    out = _one(router.send_failed(connect.route))
    assert bytes(out.payload) == b"Tunnel send failed" and a.routes == {} and tunnel.routes == {}


# ---------------------------------------------------------------- hypothesis
_ids = st.integers(min_value=0, max_value=4)
_msg = st.one_of(
    st.binary(max_size=12),
    st.builds(
        lambda t, p, i, port, payload: bytes([t, p]) + i.to_bytes(4, "big") + port.to_bytes(2, "big") + payload,
        st.integers(0, 9), st.integers(0, 2), _ids, st.sampled_from([0, 80, 8080]), st.binary(max_size=4),
    ),
)
_client_ops = st.lists(st.tuples(st.sampled_from(["rx", "connected", "failed", "finished"]), _msg, _ids), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_client_ops)
def test_client_mux_random_sequences_keep_invariants(ops):
    m = ClientMux()
    closed_ids_sent: list[int] = []
    for op, raw, pick in ops:
        streams = list(m.streams.values())
        if op == "rx":
            try:
                ev = m.receive(raw)
            except ProtocolError:
                continue
            if isinstance(ev, (Received, Closed)):
                assert ev.stream.client_id == int.from_bytes(raw[2:6], "big")
        elif streams:
            s = streams[pick % len(streams)]
            out = {"connected": m.connected, "finished": m.finished}.get(op, lambda s: m.failed(s, "x"))(s)
            if op != "connected":
                assert out is not None and s.client_id not in m.streams
                closed_ids_sent.append(s.client_id)
                assert getattr(m, op if op == "finished" else "failed")(s, *(() if op == "finished" else ("x",))) is None
        for cid, s in m.streams.items():
            assert s.client_id == cid and s.phase in (Phase.DIALING, Phase.OPEN)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "t", "enda", "endt"]), _msg), max_size=40))
def test_router_random_sequences_keep_both_tables_consistent(ops):
    router, tunnel, a, b = _route_setup(reset_slow=True)
    for op, raw in ops:
        try:
            if op in ("a", "b"):
                side = a if op == "a" else b
                if side.closed:
                    continue
                out = router.from_user(side, tunnel if tunnel.alive else None, raw)
            elif op == "t":
                if not tunnel.alive:
                    continue
                a.congested = not a.congested
                out = router.from_tunnel(tunnel, raw)
            elif op == "enda":
                out = router.forward_ended(a)
            else:
                out = router.tunnel_ended(tunnel)
        except ProtocolError:
            continue
        for o in out:
            assert len(o.head) == 8
            if isinstance(o, ToUser):
                assert not o.forward.closed
        for tid, route in tunnel.routes.items():
            assert route.tunnel_id == tid and route.forward.routes.get(route.cli_id) is route
        for side in (a, b):
            for cid, route in side.routes.items():
                assert route.cli_id == cid and route.tunnel.routes.get(route.tunnel_id) is route


def test_client_dial_outcomes():
    m = ClientMux()
    open_ = m.receive(H("0100000000011f90")).stream  # type: ignore[union-attr]
    assert m.dialed(open_) == (mux.DialOutcome.OPEN, H("0200000000010000"))
    closed = m.receive(H("0100000000021f90")).stream  # type: ignore[union-attr]
    m.receive(H("0300000000020000") + b"held")
    m.receive(H("0400000000020000"))  # CLOSE while dialing: the held DATA still goes out (D3)
    assert m.dialed(closed) == (mux.DialOutcome.DELIVER_AND_CLOSE, None)
    reset = m.receive(H("0100000000031f90")).stream  # type: ignore[union-attr]
    assert m.finished(reset) == H("0400000000030000")  # e.g. a slow-consumer reset while dialing
    assert m.dialed(reset) == (mux.DialOutcome.ABORT, None)
    lost = m.receive(H("0100000000041f90")).stream  # type: ignore[union-attr]
    m.lost()
    assert m.dialed(lost) == (mux.DialOutcome.ABORT, None)


@pytest.mark.parametrize(
    "first, shown",
    [
        ("Error: Container tunnel not connected (container=x)", "Error: Container tunnel not connected (container=x)"),
        ("Error: bad\x1b[2J\nline", "Error: bad\\x1b[2J\\nline"),
        ("HELLO", "Error: unexpected reply 'HELLO'"),
        (b"\x01", "Error: expected CONNECTED, got a binary message"),
    ],
)
def test_forward_handshake(first, shown):
    ForwardMux.handshake("CONNECTED")
    with pytest.raises(mux.ForwardError) as refused:
        ForwardMux.handshake(first)
    assert str(refused.value) == shown


# ---------------------------------------------------------------- Router.deliver: the slow-consumer decision
class _ListSink:
    """A sink without sockets: records what is sent; ``paused``/``closed`` set by the test."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.paused = False
        self.closed = False

    def send(self, *parts: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise ConnectionError("closed")
        self.sent.append(b"".join(bytes(p) for p in parts))

    async def drained(self) -> None:  # pragma: no cover - never awaited here
        raise AssertionError("not awaited in a sans-I/O test")


class _Tunnel(TunnelSide):
    __slots__ = ("sink",)

    def __init__(self, container_id: str) -> None:
        super().__init__(container_id)
        self.sink = _ListSink()


class _Forward(ForwardSide):
    __slots__ = ("sink",)

    def __init__(self, container_id: str) -> None:
        super().__init__(container_id, 8080, Proto.TCP)
        self.sink = _ListSink()


def _deliver_setup(reset_slow: bool = False):
    router = Router(reset_slow=reset_slow)
    tunnel, user = _Tunnel("c1"), _Forward("c1")
    router.deliver(router.from_user(user, tunnel, H("0100000000011f90")))  # CONNECT: tunnel id 1
    return router, tunnel, user


@pytest.mark.parametrize("reset_slow", [False, True])
def test_deliver_sends_in_order_and_waits_only_for_a_full_sink_under_block(reset_slow):
    router, tunnel, user = _deliver_setup(reset_slow)
    assert tunnel.sink.sent == [H("0100000000011f90")]
    assert router.deliver(router.from_tunnel(tunnel, H("0300000000010000") + b"one")) is None
    user.sink.paused = True
    waited = router.deliver(router.from_tunnel(tunnel, H("0300000000010000") + b"two"))
    assert user.sink.sent == [H("0300000000010000") + b"one", H("0300000000010000") + b"two"]
    assert waited is (None if reset_slow else user.sink)  # reset never stops the tunnel's reader


def test_deliver_a_full_tunnel_always_stops_the_user_reader():
    router, tunnel, user = _deliver_setup(reset_slow=True)
    tunnel.sink.paused = True
    assert router.deliver(router.from_user(user, tunnel, H("0300000000010000") + b"up")) is tunnel.sink


def test_deliver_a_tunnel_that_cannot_take_data_fails_the_route_with_an_error_to_the_user():
    router, tunnel, user = _deliver_setup()
    tunnel.sink.closed = True
    assert router.deliver(router.from_user(user, tunnel, H("0300000000010000") + b"lost")) is None
    assert len(user.sink.sent) == 1 and user.sink.sent[0][0] == MsgType.ERROR
    assert not user.routes and not tunnel.routes


def test_deliver_a_closing_user_link_drops_its_message_and_keeps_the_route():
    router, tunnel, user = _deliver_setup()
    user.sink.closed = True
    assert router.deliver(router.from_tunnel(tunnel, H("0300000000010000") + b"late")) is None
    assert user.sink.sent == [] and tunnel.routes
