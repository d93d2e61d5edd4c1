"""The JSON message protocol, sans-I/O: golden vectors, omission rules, strict base64."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.agent import protocol as p


def test_golden_encodings() -> None:
    assert p.encode(p.Exit(id="e1", code=0)) == b'{"type":"exit","id":"e1","code":0}'
    assert p.encode(p.Exit(id="e1", code=42)) == b'{"type":"exit","id":"e1","code":42}'
    assert p.encode(p.Error(message="exec requires id")) == b'{"type":"error","message":"exec requires id"}'
    assert p.encode(p.Error(id="e1", message="exec requires cmd")) == (
        b'{"type":"error","id":"e1","message":"exec requires cmd"}')
    assert p.encode(p.LifetimeExpired()) == b'{"type":"lifetime_expired"}'
    assert p.encode(p.Stdout(id="e1", data=b"hello\n")) == b'{"type":"stdout","id":"e1","data":"aGVsbG8K"}'
    # zero values omitted (Go omitempty), code absent when unset
    assert p.encode(p.Exec(id="e1", cmd=["true"])) == b'{"type":"exec","id":"e1","cmd":["true"]}'
    assert p.encode(p.Exit(id="x")) == b'{"type":"exit","id":"x"}'
    assert p.encode(p.Stdin(id="x")) == b'{"type":"stdin","id":"x"}'


def test_decodes_the_spec_examples() -> None:
    exec_ = p.decode('{"type":"exec","id":"e1","cmd":["sh","-c","exit 42"],"env":["MY_TEST_VAR=test_value_123"],'
                     '"workdir":"/","tty":false}')
    assert exec_ == p.Exec(id="e1", cmd=["sh", "-c", "exit 42"], env=["MY_TEST_VAR=test_value_123"], workdir="/")
    assert p.decode('{"type":"resize","id":"e1","width":80,"height":24}') == p.Resize(id="e1", width=80, height=24)
    assert p.decode('{"type":"attach","id":"a1"}') == p.Attach(id="a1")
    assert p.decode(b'{"type":"close_stdin","id":"e1"}') == p.CloseStdin(id="e1")  # binary frames too
    assert p.decode('{"type":"signal","id":"e1","signal":"SIGTERM","extra":1}') == p.Signal(id="e1", signal="SIGTERM")
    assert p.decode('{"type":"stdin","id":"e1","data":"aGVsbG8K"}') == p.Stdin(id="e1", data=b"hello\n")
    assert p.decode('{"type":"stdin","id":"e1","data":"aGVs\\r\\nbG8K"}') == p.Stdin(id="e1", data=b"hello\n")
    assert p.decode('{"type":"stdin","id":"e1"}') == p.Stdin(id="e1", data=b"")
    for bad in ("aGVsbG8", "aGVsbG8K!", "aGVsbG8K="):
        assert isinstance(p.decode(json.dumps({"type": "stdin", "id": "e1", "data": bad})), p.BadMessage)


def test_unknown_type_and_bad_messages_are_told_apart() -> None:
    assert p.decode('{"type":"foo","id":"x"}') == p.UnknownType("foo", "x")
    assert p.decode('{"type":"foo"}') == p.UnknownType("foo", "")
    assert isinstance(p.decode("{not json"), p.BadMessage)
    assert isinstance(p.decode('{"type":"exec","id":"e","cmd":"not a list"}'), p.BadMessage)
    assert isinstance(p.decode('{"type":"exec","id":5}'), p.BadMessage)
    assert isinstance(p.decode('{"id":"x"}'), p.BadMessage)


def test_stdin_base64_is_strict_like_go() -> None:
    assert p.decode_data("aGVsbG8K") == b"hello\n"
    assert p.decode_data("aGVs\r\nbG8K") == b"hello\n"  # CR/LF tolerated
    assert p.decode_data("") == b""
    for bad in ("aGVsbG8", "aGVsbG8K!", "aGVs bG8K", "aGVsbG8K=", "é"):
        with pytest.raises(ValueError):
            p.decode_data(bad)


@given(st.binary(max_size=70_000), st.sampled_from(["stdout", "stderr"]), st.text(max_size=20))
def test_fast_output_encoding_equals_msgspec(data: bytes, stream: str, ident: str) -> None:
    fast = b"".join(p.encode_output(p.output_prefix(stream, ident), data))
    cls = p.Stdout if stream == "stdout" else p.Stderr
    assert fast == p.encode(cls(id=ident, data=data))
    assert json.loads(fast).get("data", "") == base64.b64encode(data).decode()
    assert json.loads(fast)["type"] == stream


@given(st.builds(p.Exec, id=st.text(max_size=8), cmd=st.lists(st.text(max_size=8), max_size=3),
                 env=st.lists(st.text(max_size=8), max_size=2), tty=st.booleans(),
                 width=st.integers(0, 500), user=st.text(max_size=5)))
def test_round_trip(message: p.Exec) -> None:
    assert p.decode(p.encode(message)) == message
    assert msgspec.json.decode(p.encode(message))["type"] == "exec"
