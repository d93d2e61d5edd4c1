"""Session store and callback channel without sockets (spec acceptance cases 1-20)."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.hostproxy.session import (
    CallbackAlreadyReceived,
    CallbackChannel,
    CapturedRequest,
    SessionError,
    SessionStore,
    canonical_header,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_ids_are_128_bit_hex_and_differ() -> None:
    store = SessionStore()
    a, b = store.create("callback", 60), store.create("callback", 60)
    assert re.fullmatch(r"[0-9a-f]{32}", a.id) and a.id != b.id


def test_create_get_delete_count_and_metadata() -> None:
    clock = Clock()
    store = SessionStore(clock=clock)
    assert store.count() == 0
    s = store.create("callback", 10, {"k": 1})
    assert store.count() == 1
    assert s.type == "callback" and s.expires_at >= s.created_at and s.get_metadata("k") == (1, True)
    bare = store.create("webhook", 10)
    assert store.count() == 2
    bare.set_metadata("x", "y")
    bare.set_metadata("x", "z")
    assert bare.get_metadata("x") == ("z", True) and bare.get_metadata("missing") == (None, False)
    assert store.get(s.id) is s and store.get("nope") is None
    store.delete(s.id)
    assert store.get(s.id) is None


def test_expiry_is_lazy_on_get_and_swept() -> None:
    clock = Clock()
    store = SessionStore(clock=clock)
    deleted = []
    store.set_on_delete(lambda s: deleted.append(s.id))
    short = store.create("callback", 0.001)
    keep = store.create("callback", 100)
    gone = store.create("callback", 0.001)
    assert not short.is_expired(clock.now)
    clock.now += 0.01
    assert short.is_expired(clock.now) and not keep.is_expired(clock.now)
    assert store.get(short.id) is None and deleted == [short.id]
    assert store.sweep() == 1 and deleted == [short.id, gone.id]
    assert store.get(keep.id) is keep
    store.delete("unknown")
    assert deleted == [short.id, gone.id]


def test_stop_is_idempotent() -> None:
    store = SessionStore()
    for _ in range(3):
        store.stop()
    assert store.stopped


async def test_capture_once_under_100_concurrent_callers() -> None:
    store = SessionStore()
    s = store.create("callback", 60)

    async def attempt() -> bool:
        await asyncio.sleep(0)
        return s.capture_once("received")

    wins = await asyncio.gather(*(attempt() for _ in range(100)))
    assert wins.count(True) == 1 and s.metadata["received"] is True


async def test_concurrent_create_count_cleanup() -> None:
    store = SessionStore()

    async def create() -> None:
        await asyncio.sleep(0)
        store.create("callback", 60)

    async def other() -> None:
        await asyncio.sleep(0)
        store.count()
        store.sweep()

    await asyncio.gather(*(create() for _ in range(50)), *(other() for _ in range(50)))
    assert store.count() == 50 and store.get(store.create("callback", 1).id) is not None


def test_register_validates_ports_and_defaults_path() -> None:
    channel = CallbackChannel(SessionStore())
    s = channel.register(8085, "/cb", 60)
    assert channel.get_port(s.id) == 8085 and channel.get_path(s.id) == "/cb"
    for bad in (0, -1, 65536):
        with pytest.raises(ValueError):
            channel.register(bad)
    assert channel.get_path(channel.register(8086).id) == "/"  # channel-layer default (HTTP layer: /callback)


def test_capture_get_post_duplicate_and_headers() -> None:
    channel = CallbackChannel(SessionStore())
    s = channel.register(8085, "/callback", 60)
    assert channel.get_data(s.id) is None and not channel.is_received(s.id)
    headers = [("Cookie", "c"), ("authorization", "x"), ("X-Forwarded-For", "1"), ("x-real-ip", "2"),
               ("User-Agent", "ua"), ("accept", "a"), ("Host", "h"), ("Accept", "second")]
    data = channel.capture(s.id, CapturedRequest("GET", "/callback", "code=1&state=2", headers))
    assert data.method == "GET" and data.query == "code=1&state=2" and data.received_at
    assert data.headers == {"User-Agent": "ua", "Accept": "a"}
    assert channel.is_received(s.id) and channel.get_data(s.id) == data
    with pytest.raises(CallbackAlreadyReceived, match="callback already received"):
        channel.capture(s.id, CapturedRequest("GET", "/callback", "code=evil"))
    assert channel.get_data(s.id).query == "code=1&state=2"
    post = channel.register(8087, "/p", 60)
    assert channel.capture(post.id, CapturedRequest("POST", "/p", "", [], b"a=b")).body == "a=b"
    with pytest.raises(SessionError, match="session not found"):
        channel.capture("0" * 32, CapturedRequest("GET", "/", ""))
    channel.delete(s.id)
    assert channel.get_port(s.id) is None


def test_capture_refuses_other_session_types() -> None:
    store = SessionStore()
    s = store.create("webhook", 60)
    with pytest.raises(SessionError):
        CallbackChannel(store).capture(s.id, CapturedRequest("GET", "/", ""))


def test_received_never_without_data() -> None:
    channel = CallbackChannel(SessionStore())
    s = channel.register(9000)
    channel.capture(s.id, CapturedRequest("GET", "/", "q"))
    assert channel.is_received(s.id) and channel.get_data(s.id) is not None


@given(st.text(alphabet="abcxyz-", min_size=1, max_size=20))
def test_canonical_header_is_go_like(name: str) -> None:
    out = canonical_header(name)
    assert out.lower() == name.lower()
    assert all(part[:1] == part[:1].upper() for part in out.split("-"))


def test_timestamps_are_go_rfc3339(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as _time

    from hatchway.hostproxy.session import rfc3339_full, rfc3339_seconds

    monkeypatch.setenv("TZ", "UTC")
    _time.tzset()
    try:
        assert rfc3339_seconds(1_700_000_000.75) == "2023-11-14T22:13:20Z"
        assert rfc3339_full(1_700_000_000.5) == "2023-11-14T22:13:20.5Z"
        assert rfc3339_full(1_700_000_000.0) == "2023-11-14T22:13:20Z"
        monkeypatch.setenv("TZ", "Europe/Berlin")
        _time.tzset()
        assert rfc3339_seconds(1_700_000_000) == "2023-11-14T23:13:20+01:00"
    finally:
        monkeypatch.undo()
        _time.tzset()
