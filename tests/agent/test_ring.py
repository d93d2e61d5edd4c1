"""The interleaved output ring (sans-I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hatchway.agent.ring import STDERR, STDOUT, OutputRing


def test_small_write_reads_back() -> None:
    ring = OutputRing(8)
    ring.append(STDOUT, b"abc")
    assert ring.replay() == [(STDOUT, b"abc")]


def test_keeps_the_last_bytes_in_order() -> None:
    ring = OutputRing(8)
    ring.append(STDOUT, b"01234567")
    ring.append(STDOUT, b"89AB")  # 12 bytes into an 8-byte ring
    assert ring.replay() == [(STDOUT, b"456789AB")]
    full = OutputRing(8)
    full.append(STDOUT, b"01234567")
    assert full.size(STDOUT) == 8 and full.replay() == [(STDOUT, b"01234567")]


def test_interleaving_is_kept_and_pieces_are_bounded() -> None:
    ring = OutputRing(1024 * 1024)
    ring.append(STDOUT, b"a")
    ring.append(STDERR, b"b")
    ring.append(STDOUT, b"c" * 70_000)
    replay = ring.replay()
    assert replay[:2] == [(STDOUT, b"a"), (STDERR, b"b")]
    assert all(len(data) <= 32 * 1024 for _, data in replay)
    assert b"".join(d for s, d in replay[2:]) == b"c" * 70_000


@given(st.lists(st.tuples(st.sampled_from([STDOUT, STDERR]), st.binary(min_size=1, max_size=300)), max_size=40))
def test_each_stream_keeps_exactly_its_most_recent_bytes(writes: list[tuple[int, bytes]]) -> None:
    ring = OutputRing(512)
    for stream, data in writes:
        ring.append(stream, data)
    replay = ring.replay()
    for stream in (STDOUT, STDERR):
        everything = b"".join(d for s, d in writes if s == stream)
        assert b"".join(d for s, d in replay if s == stream) == everything[-512:]
