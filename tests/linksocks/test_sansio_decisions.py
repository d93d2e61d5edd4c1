"""The sans-I/O decisions of LinkSocks, without sockets: which Connect does what (routing.connect_step),
provider round-robin (routing.Rotation), Resume on the dialer side and the ledger handshake (mux), what
a cut does to a channel without the ledger (mux.resumable_after_cut, grace.GraceKeeper.announce_cut), and
the management API's answers (management.Management) down to the JSON bytes."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.linksocks import protocol as p
from hatchway.linksocks.api_bodies import AccessConfigRequest, TokenRequest
from hatchway.linksocks.grace import GraceKeeper
from hatchway.linksocks.management import BadBody, Management, link_counter
from hatchway.linksocks.mux import (
    UNPROVABLE,
    ChannelState,
    Ledger,
    ResumeKind,
    learn_peer,
    on_resume_request,
    resumable_after_cut,
)
from hatchway.linksocks.protocol import Connect, Data, Disconnect
from hatchway.linksocks.routing import ConnectStep, Rotation, connect_step, describe, replay_early
from hatchway.linksocks.tokens import TokenRegistry

CID = bytes(range(16))


# ------------------------------------------------------------------ connect_step: from the wire bytes


@pytest.mark.parametrize(
    ("wire", "live", "step"),
    [
        # Connect: version 01, type 03, protocol 01 (tcp), id, address len + "h", port 80, Resume byte
        (bytes.fromhex("010301") + CID + b"\x01h\x00\x50\x00", False, ConnectStep.OPEN_TCP),
        (bytes.fromhex("010301") + CID + b"\x01h\x00\x50\x00", True, ConnectStep.DUPLICATE),
        (bytes.fromhex("010301") + CID + b"\x01h\x00\x50\x01", True, ConnectStep.RESUME),
        (bytes.fromhex("010301") + CID + b"\x01h\x00\x50\x01", False, ConnectStep.EXPIRED),
        (bytes.fromhex("010302") + CID + b"\x00", False, ConnectStep.OPEN_UDP),
        (bytes.fromhex("010302") + CID + b"\x01", False, ConnectStep.EXPIRED),
    ],
    ids=["tcp", "tcp-duplicate", "resume", "resume-unknown", "udp", "udp-resume-unknown"],
)
def test_connect_step_from_wire_bytes(wire, live, step):
    message = p.decode(wire)[1]
    assert isinstance(message, Connect)
    assert connect_step(message, live) is step


@given(st.booleans(), st.booleans(), st.sampled_from([p.TCP, p.UDP]))
def test_a_resume_never_dials_and_a_live_id_is_never_dialed_twice(resume, live, proto):
    step = connect_step(Connect(proto, CID, "h", 1, resume), live)
    dials = step in (ConnectStep.OPEN_TCP, ConnectStep.OPEN_UDP)
    assert not (dials and (resume or live))
    assert (step is ConnectStep.RESUME) == (resume and live)


def test_replay_early_hands_data_and_disconnect_in_order():
    seen = []

    class Endpoint:
        def on_data(self, link, message):
            seen.append(("data", bytes(message.data)))

        def on_disconnect(self, link, message):
            seen.append(("disconnect", message.error))

    replay_early(Endpoint(), None, [Data(p.TCP, CID, b"a"), Data(p.TCP, CID, b"b"), Disconnect(CID, "EOF")])
    assert seen == [("data", b"a"), ("data", b"b"), ("disconnect", "EOF")]
    assert describe(Data(p.TCP, CID, b"abc")) == f"Data {p.uuid_text(CID)} 3 bytes"


# ------------------------------------------------------------------ Rotation


class FakeLink:
    def __init__(self, name: str, alive: bool = True) -> None:
        self.name, self.alive = name, alive


def test_rotation_is_round_robin_and_skips_dead_links():
    joined = []
    pool: Rotation[FakeLink] = Rotation("t", lambda: joined.append(1))
    a, b, c = FakeLink("a"), FakeLink("b", alive=False), FakeLink("c")
    for link in (a, b, c):
        pool.add(link)
    assert len(joined) == 3
    assert [pool.next_alive().name for _ in range(4)] == ["a", "c", "a", "c"]
    pool.remove(a)
    assert pool.next_alive().name == "c"
    c.alive = False
    assert pool.next_alive() is None


@given(st.lists(st.booleans(), min_size=1, max_size=8), st.integers(0, 20))
def test_rotation_only_returns_live_members(alive, picks):
    pool: Rotation[FakeLink] = Rotation()
    links = [FakeLink(str(i), flag) for i, flag in enumerate(alive)]
    for link in links:
        pool.add(link)
    for _ in range(picks):
        link = pool.next_alive()
        assert (link is None) == (not any(alive))
        assert link is None or link.alive


# ------------------------------------------------------------------ Resume decisions (mux)


def test_a_channel_without_the_ledger_is_never_resumed():
    assert resumable_after_cut(Ledger(keep=True))
    assert not resumable_after_cut(Ledger(keep=False))
    step = on_resume_request(ChannelState.OPEN, Ledger(), peer_ledger=True, peer_received=None)
    assert step.kind is ResumeKind.REFUSE and step.reason == UNPROVABLE
    step = on_resume_request(ChannelState.OPEN, Ledger(), peer_ledger=False, peer_received=0)
    assert step.kind is ResumeKind.REFUSE


def test_resume_request_rewinds_and_answers_our_count():
    ledger = Ledger()
    ledger.record(b"abcdef")
    while (item := ledger.next_unsent()) is not None:
        ledger.transmitted(item[0])
    ledger.accept(4, 0)
    step = on_resume_request(ChannelState.SUSPENDED, ledger, peer_ledger=True, peer_received=2)
    assert step.kind is ResumeKind.ANSWER and step.answer == 4
    assert ledger.next_unsent() == (6, b"cdef")
    assert on_resume_request(ChannelState.CONNECTING, Ledger(), peer_ledger=True, peer_received=0).kind \
        is ResumeKind.AWAIT_DIAL
    assert on_resume_request(ChannelState.OPEN, Ledger(), peer_ledger=True, peer_received=9).kind is ResumeKind.FAILED


def test_learn_peer_from_the_connect_response():
    kept = Ledger(keep=True)
    assert learn_peer(kept, success=True, received=0, offer_ledger=True, peer_ledger=False) is True and kept.keep
    assert learn_peer(kept, success=True, received=None, offer_ledger=True, peer_ledger=False) is False
    assert not kept.keep  # an upstream dialer: nothing kept for a re-send it could not ask for
    failed = Ledger(keep=True)
    assert learn_peer(failed, success=False, received=None, offer_ledger=True, peer_ledger=False) is False
    assert failed.keep


# ------------------------------------------------------------------ GraceKeeper: a cut without the ledger


class Timer:
    def __init__(self, callback) -> None:
        self.callback, self.cancelled = callback, False

    def cancel(self) -> None:
        self.cancelled = True


class CutEndpoint:
    """An endpoint whose peer keeps no ledger: suspend() resets it, cut_id() names it."""

    resumable = True
    suspended = False
    suspended_at = 0.0

    def __init__(self) -> None:
        self.lost = False

    def suspend(self) -> None:
        self.lost = True

    def cut_id(self) -> bytes | None:
        return CID

    def link_lost(self) -> None:
        self.lost = True


class RecordingLink:
    def __init__(self) -> None:
        self.channels: set = set()
        self.sent: list = []

    def try_send(self, message) -> bool:
        self.sent.append(p.encode(message))
        return True


def test_a_cut_channel_is_disconnected_on_the_next_link_in_wire_bytes():
    timers: list[Timer] = []
    keeper = GraceKeeper(30.0, lambda delay, fn: timers.append(Timer(fn)) or timers[-1])
    old, new = RecordingLink(), RecordingLink()
    endpoint = CutEndpoint()
    old.channels.add(endpoint)
    keeper.link_lost("key", old)
    assert endpoint.lost and keeper.take("key") == []
    assert keeper.resume_requests("key", new) == 0
    text = UNPROVABLE.encode()
    assert new.sent == [bytes.fromhex("0106") + CID + len(text).to_bytes(1, "big") + text]
    assert keeper.announce_cut("key", RecordingLink()) == 0  # told once


def test_a_cut_channel_is_forgotten_when_the_grace_period_ends():
    timers: list[Timer] = []
    keeper = GraceKeeper(30.0, lambda delay, fn: timers.append(Timer(fn)) or timers[-1])
    old = RecordingLink()
    old.channels.add(CutEndpoint())
    keeper.link_lost("key", old)
    timers[0].callback()
    assert keeper.announce_cut("key", RecordingLink()) == 0


# ------------------------------------------------------------------ Management: body in, status and bytes out


def management() -> Management:
    return Management(TokenRegistry(), version="v1.10.3")


def test_add_forward_token_answers_gos_json():
    status, answer = management().add_token(TokenRequest(type="forward", token="abc"))
    assert status == 200 and msgspec.json.encode(answer) == b'{"success":true,"token":"abc"}'


def test_add_token_of_unknown_type_is_400():
    status, answer = management().add_token(TokenRequest(type="sideways"))
    assert status == 400 and msgspec.json.encode(answer) == b'{"success":false,"error":"invalid token type"}'


def test_connector_without_reverse_token_and_delete_without_token():
    m = management()
    status, answer = m.add_token(TokenRequest(type="connector"))
    assert status == 200 and not answer.success and answer.error
    status, answer = m.delete_token("")
    assert status == 200 and not answer.success and answer.error


def test_a_bad_rule_is_a_bad_body_and_changes_nothing():
    m = management()
    before = m.access_rules()
    with pytest.raises(BadBody):
        m.put_access(AccessConfigRequest(entry=[{"addrs": ["127.0.0.1"]}], dial=[{"ports": [0]}]))
    assert m.access_rules() == before


def test_status_counts_clients_per_token():
    registry = TokenRegistry()

    class Counted:
        def __init__(self, token, pool_key=None) -> None:
            self.token, self.pool_key = token, pool_key

    links = [Counted("f"), Counted("f"), Counted("x", "r")]
    m = Management(registry, version="v1", clients_count=link_counter(lambda: links))
    m.add_token(TokenRequest(type="forward", token="f"))
    m.add_token(TokenRequest(type="reverse", token="r"))
    encoded = msgspec.json.decode(msgspec.json.encode(m.status()))
    counts = {entry["token"]: entry["clients_count"] for entry in encoded["tokens"]}
    assert counts == {"f": 2, "r": 1}


@given(st.text(max_size=20), st.text(max_size=20))
def test_add_token_never_raises_past_the_body(kind, token):
    status, answer = management().add_token(TokenRequest(type=kind, token=token))
    assert status in (200, 400)
    assert answer.success == (status == 200 and answer.error == "")
