"""common.logsafe: escaping wire text, rate-limited lines, one-line logger for libraries."""

from __future__ import annotations

import logging
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.common.logsafe import OneLineLogger, RateLimited, escape


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain-id_123", "plain-id_123"),
        ("a\nFAKE LOG LINE", "a\\nFAKE LOG LINE"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("tab\there\r", "tab\\there\\r"),
        ("nul\x00del\x7fc1\x9b", "nul\\x00del\\x7fc1\\x9b"),
        ("bidi\u202eevil\u2028line", "bidi\\u202eevil\\u2028line"),
        ("back\\slash", "back\\\\slash"),
        (b"bytes\xff\x1b", "bytes\\xff\\x1b"),
        ("ünïcode ok", "ünïcode ok"),
    ],
)
def test_escape_golden(value, expected):
    assert escape(value) == expected


def test_escape_cuts_long_values():
    assert escape("x" * 300, 10) == "x" * 10 + "...(+290 chars)"


@given(st.text() | st.binary())
def test_escape_output_is_one_safe_line(value):
    out = escape(value, 0)
    unsafe = {"Cc", "Zl", "Zp", "Cs"}
    bidi = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")
    assert not [ch for ch in out if unicodedata.category(ch) in unsafe or ch in bidi], out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_counts_what_it_drops(caplog):
    clock = Clock()
    limited = RateLimited(logging.getLogger("test.logsafe"), interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.logsafe"):
        assert limited.log("bad", "bad frame from %s", escape("peer\n1"))
        for _ in range(5):
            assert not limited.log("bad", "bad frame from %s", "peer2")
        assert limited.log("other", "another kind")  # keys are independent
        assert limited.suppressed("bad") == 5
        clock.now = 10.0
        assert limited.log("bad", "bad frame from %s", "peer3")
    assert [r.getMessage() for r in caplog.records] == [
        "bad frame from peer\\n1",
        "another kind",
        "bad frame from peer3 (5 more suppressed)",
    ]


def test_one_line_logger_strips_tracebacks_and_lowers_level(caplog):
    clock = Clock()
    adapter = OneLineLogger(logging.getLogger("test.logsafe.lib"), interval=5.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="test.logsafe.lib"):
        for i in range(3):
            try:
                raise ValueError(f"bad\x1b byte {i}")
            except ValueError:
                adapter.exception("Error handling request from %s", "1.2.3.4\nforged")
        clock.now = 5.0
        try:
            raise KeyError("k")
        except KeyError as exc:
            adapter.error("Error handling request from %s", "5.6.7.8", exc_info=exc)
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records] == [
        (logging.WARNING, "Error handling request from 1.2.3.4\\nforged: ValueError: bad\\x1b byte 0", None),
        (logging.WARNING, "Error handling request from 5.6.7.8: KeyError: 'k' (2 more suppressed)", None),
    ]
