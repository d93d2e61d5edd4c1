"""The runner's access rules, the forward CLI's UDP source table and the client's UDP flow rules, without sockets."""

from __future__ import annotations

import pytest

from hatchway.tunnel.access import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    Admission,
    forward_refusal,
    presented_token,
    tunnel_admission,
)
from hatchway.tunnel.mux import ForwardMux, Phase
from hatchway.tunnel.protocol import Proto
from hatchway.tunnel.udp_sources import UdpSources


@pytest.mark.parametrize(
    "authorization, query, ok",
    [
        ("Bearer tok", None, True),
        ("bearer   tok  ", None, True),
        ("Bearer wrong", None, False),
        ("", "tok", True),
        ("", "nope", False),
        ("Basic tok", None, False),
        ("", None, False),
    ],
)
def test_presented_token(authorization, query, ok):
    assert (presented_token("tok", authorization, query) == "tok") is ok
    assert presented_token(None, authorization, query) is None  # no token configured: nothing to present


@pytest.mark.parametrize(
    "port, proto, authorized, live, expected",
    [
        ("80", "tcp", True, True, None),
        ("80", "UDP", True, True, None),
        ("80", "tcp", False, True, ("Error: unauthorized", CLOSE_POLICY)),
        ("70000", "tcp", True, True, ("Error: invalid port '70000'", CLOSE_POLICY)),
        ("0", "tcp", True, True, ("Error: invalid port '0'", CLOSE_POLICY)),
        ("http", "tcp", True, True, ("Error: invalid port 'http'", CLOSE_POLICY)),
        ("80", "sctp", True, True, ("Error: invalid proto 'sctp' (expected tcp or udp)", CLOSE_POLICY)),
        ("80", "tcp", True, False, ("Error: Container tunnel not connected (container=c)", CLOSE_INTERNAL)),
    ],
)
def test_forward_refusal(port, proto, authorized, live, expected):
    assert forward_refusal("c", port, proto, authorized=authorized, tunnel_live=live) == expected


class _Opener:
    def __init__(self) -> None:
        self.mux = ForwardMux(53)
        self.sent: list[bytes] = []
        self.congested = False

    def open_stream(self, proto):
        stream, connect = self.mux.open(proto)
        self.sent.append(connect)
        return stream

    def finished(self, stream):
        return self.mux.finished(stream)

    def release(self, stream):
        self.mux.release(stream)

    def send(self, *parts):
        self.sent.append(b"".join(bytes(p) for p in parts))
        return True


def test_udp_sources_one_stream_per_address_replies_and_idle_expiry():
    now = [100.0]
    opener, replies = _Opener(), []
    table = UdpSources(opener, 30.0, lambda data, addr: replies.append((bytes(data), addr)), lambda: now[0])
    a, b = ("127.0.0.1", 4000), ("127.0.0.1", 4001)
    new_a = table.datagram(b"q1", a)
    assert new_a is not None and table.datagram(b"q2", a) is None  # the same source
    new_b = table.datagram(b"q3", b)
    assert new_b is not None and new_b.client_id == 2
    assert opener.sent[:3] == [bytes.fromhex("0101000000010035"), bytes.fromhex("0301000000010000") + b"q1",
                               bytes.fromhex("0301000000010000") + b"q2"]
    new_a.feed(b"r1")
    assert replies == [(b"r1", a)]
    now[0] = 120.0
    assert table.idle_check(new_a) == 130.0  # active 20 s ago: not yet
    now[0] = 131.0
    assert table.idle_check(new_a) is None  # idle: released with CLOSE
    assert opener.sent[-1] == bytes.fromhex("0401000000010000") and a not in table.by_addr
    assert new_a.stream.phase is Phase.CLOSED
    opener.congested = True
    table.datagram(b"dropped", b)
    assert table.dropped == 1
    new_b.remote_closed("gone")
    assert table.by_addr == {} and opener.mux.streams == {}
    again = table.datagram(b"q4", b)
    assert again is not None and again.client_id == 3 and again.stream.proto is Proto.UDP


def test_udp_flow_state_holds_drops_and_expires():
    from hatchway.tunnel.udp_flow import UdpFlowState

    state = UdpFlowState(limit=10, idle_timeout=30.0, now=0.0)
    assert not state.to_service(b"12345", 1.0, ready=False, buffered=0)  # held
    assert not state.to_service(b"123456", 2.0, ready=False, buffered=0)  # over the hold limit: dropped
    assert not state.to_service(b"abcde", 3.0, ready=False, buffered=0)  # fits: held
    assert state.take_held() == [b"12345", b"abcde"] and state.take_held() == []
    assert state.to_service(b"x", 4.0, ready=True, buffered=10)
    assert not state.to_service(b"x", 5.0, ready=True, buffered=11)  # the service's socket is backed up
    assert state.to_runner(6.0, paused=False) and not state.to_runner(7.0, paused=True)
    assert state.idle_delay(20.0) == 17.0  # last activity at 7.0
    assert state.idle_delay(37.0) is None
    assert state.end() and not state.end()
    assert not state.to_service(b"late", 40.0, ready=True, buffered=0) and not state.to_runner(40.0, paused=False)


@pytest.mark.parametrize(("token", "credential", "allow", "expected"), [
    (None, None, False, Admission.ADMIT),
    ("t", "t", False, Admission.ADMIT),
    ("t", None, False, Admission.REFUSE),
    ("t", None, True, Admission.ADMIT_WITHOUT_TOKEN),
    ("t", "t", True, Admission.ADMIT),
])
def test_tunnel_admission(token, credential, allow, expected):
    assert tunnel_admission(token, credential, allow_tokenless=allow) is expected
