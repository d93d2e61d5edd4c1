"""Exec sessions over the real wire against an in-process agent, on real processes and real PTYs.

Numbers refer to the acceptance cases of specs/agent.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from functools import partial

import aiohttp
from agentwire import TOKEN, b64

from helpers import wait_until


async def test_health_and_auth(start_agent, wire_to) -> None:  # 6, 7, 32
    agent = await start_agent()
    host, port = agent.address
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as response:
            assert response.status == 200 and response.content_type == "application/json"
            assert await response.json() == {"status": "ok"}
        async with http.get(f"{base}/nope") as response:
            assert response.status == 401 and await response.text() == "unauthorized\n"
        async with http.get(f"{base}/nope", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 404
        async with http.post(f"{base}/health") as response:
            assert response.status == 405
        for headers, query in (({}, ""), ({"Authorization": "Bearer wrongtoken"}, ""),
                               ({"Authorization": f"bearer {TOKEN}"}, ""),
                               ({"Authorization": "Bearer wrong"}, f"?token={TOKEN}"),
                               ({"Authorization": f"Bearer  {TOKEN}"}, "")):
            async with http.get(f"{base}/ws{query}", headers=headers) as response:
                assert response.status == 401, (headers, query)
        ws = await http.ws_connect(f"ws://{host}:{port}/ws?token={TOKEN}")
        await ws.close()


async def test_echo_stdin_env_workdir_exit_stderr(start_agent, wire_to, tmp_path) -> None:  # 8-13, 29
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="e1", cmd=["echo", "hello"])
    out, err, seen = await wire.run("e1")
    assert out.strip() == b"hello" and seen[-1] == {"type": "exit", "id": "e1", "code": 0}
    await wire.send(type="exec", id="c", cmd=["cat"])
    await wire.send(type="stdin", id="c", data=b64(b"hello from stdin\n"))
    await wire.send(type="close_stdin", id="c")
    assert (await wire.run("c"))[0] == b"hello from stdin\n"
    await wire.send(type="exec", id="v", cmd=["sh", "-c", "echo $MY_TEST_VAR"], env=["MY_TEST_VAR=test_value_123"])
    assert (await wire.run("v"))[0] == b"test_value_123\n"
    await wire.send(type="exec", id="w", cmd=["pwd"], workdir=str(tmp_path))
    assert (await wire.run("w"))[0] == f"{tmp_path}\n".encode()
    await wire.send(type="exec", id="x", cmd=["sh", "-c", "exit 42"])
    assert (await wire.run("x"))[2][-1]["code"] == 42
    await wire.send(type="exec", id="s", cmd=["sh", "-c", "echo error_output >&2"])
    out, err, seen = await wire.run("s")
    assert (out, err) == (b"", b"error_output\n") and [m["type"] for m in seen] == ["stderr", "exit"]


async def test_signals_give_docker_codes(start_agent, wire_to) -> None:  # 14, 38, 46
    wire = await wire_to(await start_agent())
    for ident, name, code in (("t", "SIGTERM", 143), ("k", "kill", 137)):
        await wire.send(type="exec", id=ident, cmd=["sleep", "60"])
        await wire.send(type="signal", id=ident, signal=name)
        assert (await wire.run(ident, timeout=5))[2][-1]["code"] == code
    await wire.send(type="exec", id="b", cmd=["sleep", "60"])
    await wire.send(type="signal", id="b", signal="BOGUS")
    assert await wire.next("b") == {"type": "error", "id": "b", "message": "unknown signal: BOGUS"}
    for name in ("STOP", "CONT", "15"):  # delivered: STOP then CONT keep it alive, 15 ends it
        await wire.send(type="signal", id="b", signal=name)
    assert (await wire.run("b", timeout=5))[2][-1]["code"] == 143


async def test_spawn_failures(start_agent, wire_to, tmp_path) -> None:  # 19, 35
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="n")
    assert await wire.next("n") == {"type": "error", "id": "n", "message": "exec requires cmd"}
    cases = [("a", ["/nonexistent/binary"], "", 127), ("b", ["no-such-command-xyz"], "", 127),
             ("c", [str(tmp_path)], "", 126), ("d", ["true"], "/nonexistent-dir", 126)]
    plain = tmp_path / "plain"
    plain.write_text("not executable")
    cases.append(("e", [str(plain)], "", 126))
    for ident, cmd, workdir, code in cases:
        await wire.send(type="exec", id=ident, cmd=cmd, workdir=workdir)
        error = await wire.next(ident)
        assert error["type"] == "error" and error["message"], error
        assert await wire.next(ident) == {"type": "exit", "id": ident, "code": code}, cmd
    await wire.send(type="exec", cmd=["true"])
    assert await wire.next("") == {"type": "error", "message": "exec requires id"}
    await wire.send(type="attach", id="a1")
    assert await wire.next("a1") == {"type": "error", "id": "a1", "message": "no main process to attach to"}  # 20


async def test_protocol_conformance(start_agent, wire_to) -> None:  # 28, 30, 31
    wire = await wire_to(await start_agent())
    await wire.send(type="foo", id="z")
    assert await wire.next("z") == {"type": "error", "id": "z", "message": "unknown message type: foo"}
    await wire.send_raw("{not json")
    await wire.send(type="exec", id="bad", cmd="echo")  # wrong type: skipped
    await wire.ws.send_bytes(b'{"type":"exec","id":"bin","cmd":["cat"]}')  # binary frames accepted
    await wire.send(type="stdin", id="bin", data="aGVsbG8")  # missing padding: dropped, no reply
    await wire.send(type="stdin", id="bin", data="aGVs!bG8K")  # non-alphabet: dropped
    await wire.send(type="stdin", id="bin")  # zero-length write
    await wire.send(type="stdin", id="bin", data="aGVs\r\nbG8K")
    await wire.send(type="close_stdin", id="bin")
    out, _, seen = await wire.run("bin")
    assert out == b"hello\n" and [m["type"] for m in seen] == ["stdout", "exit"]
    assert "bad" not in wire.by_id or not wire.by_id["bad"]


async def test_concurrent_sessions_and_duplicates(start_agent, wire_to) -> None:  # 15, 42
    agent = await start_agent()
    wire = await wire_to(agent)
    for i in range(3):
        await wire.send(type="exec", id=f"cat{i}", cmd=["cat"])
    await wire.send(type="exec", id="cat0", cmd=["cat"])
    assert (await wire.next("cat0"))["message"] == "session id already in use: cat0"
    for i in (2, 0, 1):
        await wire.send(type="stdin", id=f"cat{i}", data=b64(f"line {i}\n".encode()))
        await wire.send(type="close_stdin", id=f"cat{i}")
    for i in range(3):
        out, _, seen = await wire.run(f"cat{i}")
        assert out == f"line {i}\n".encode() and seen[-1]["code"] == 0
    # connection B cannot drive A's session; closing A does not touch B's session of the same id
    other = await wire_to(agent)
    await wire.send(type="exec", id="same", cmd=["cat"])
    await other.send(type="exec", id="same", cmd=["cat"])
    await other.send(type="signal", id="same", signal="KILL")
    await other.send(type="close_stdin", id="same")
    assert (await other.run("same"))[2][-1]["code"] == 137
    await wire.send(type="stdin", id="same", data=b64(b"still here\n"))
    assert (await wire.next("same"))["data"] == b64(b"still here\n")
    third = await wire_to(agent)
    await third.send(type="exec", id="same", cmd=["cat"])
    await wire.ws.close()  # A's cat is killed; C's goes on
    await third.send(type="stdin", id="same", data=b64(b"C\n"))
    await third.send(type="close_stdin", id="same")
    assert (await third.run("same"))[0] == b"C\n"


async def test_tty_exec(start_agent, wire_to) -> None:  # 36, 37, 43
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="t", cmd=["sh", "-c", "tty -s; echo tty=$?; stty size; echo $TERM"], tty=True,
                    width=100, height=30)
    out, _, seen = await wire.run("t")
    assert out == b"tty=0\r\n30 100\r\nxterm\r\n" and seen[-1]["code"] == 0
    await wire.send(type="exec", id="r", cmd=["sh", "-c", "read x; stty size"], tty=True, env=["TERM=vt100"])
    await wire.send(type="resize", id="r", width=132, height=43)
    await wire.send(type="stdin", id="r", data=b64(b"go\n"))
    out, _, _ = await wire.run("r")
    assert out.endswith(b"43 132\r\n")
    await wire.send(type="exec", id="e", cmd=["sh", "-c", "echo $TERM"], tty=True, env=["TERM=vt100"])
    assert (await wire.run("e"))[0] == b"vt100\r\n"
    # close_stdin does not truncate: output after it still arrives, then exit
    await wire.send(type="exec", id="c", cmd=["sh", "-c", "read x; sleep 0.3; echo after-close"], tty=True)
    await wire.send(type="stdin", id="c", data=b64(b"x\n"))
    await wire.send(type="close_stdin", id="c")
    out, _, seen = await wire.run("c")
    assert out.endswith(b"after-close\r\n") and seen[-1]["code"] == 0


async def test_stdin_false_and_token_scrubbed(start_agent, wire_to, monkeypatch) -> None:  # 44, 45
    monkeypatch.setenv("SOCKERLESS_AGENT_TOKEN", TOKEN)
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="n", cmd=["cat"], stdin=False)
    assert (await wire.run("n", timeout=5))[2][-1]["code"] == 0
    await wire.send(type="exec", id="env", cmd=["env"])
    out = (await wire.run("env"))[0]
    assert b"SOCKERLESS_AGENT_TOKEN" not in out and TOKEN.encode() not in out
    await wire.send(type="exec", id="tty", cmd=["env"], tty=True, env=[f"SOCKERLESS_AGENT_TOKEN={TOKEN}"])
    assert TOKEN.encode() not in (await wire.run("tty"))[0]


async def test_blocked_stdin_stalls_nobody(start_agent, wire_to) -> None:  # 47
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="stuck", cmd=["sleep", "60"])  # never reads stdin
    chunk = b64(b"x" * 32768)
    for _ in range(64):  # 2 MiB: far more than a pipe holds
        await wire.send(type="stdin", id="stuck", data=chunk)
    started = time.monotonic()
    await wire.send(type="exec", id="quick", cmd=["echo", "quick"])
    assert (await wire.run("quick", timeout=5))[0] == b"quick\n"
    await wire.send(type="signal", id="stuck", signal="KILL")
    assert (await wire.run("stuck", timeout=5))[2][-1]["code"] == 137
    assert time.monotonic() - started < 5


async def test_large_output_to_a_slow_reader_is_complete_and_before_exit(start_agent, wire_to) -> None:  # 33
    wire = await wire_to(await start_agent())
    size = 8 * 1024 * 1024
    await wire.send(type="exec", id="big", cmd=["sh", "-c", f"head -c {size} /dev/urandom | tee /dev/stderr | md5sum"])
    early = []
    for _ in range(5):  # a slow reader at first: the agent must hold output back, not drop it
        early.append(await wire.next("big"))
        await asyncio.sleep(0.05)
    _, _, rest = await wire.run("big", timeout=60)
    seen = early + rest
    assert seen[-1]["type"] == "exit" and seen[-1]["code"] == 0
    assert all(m["type"] in ("stdout", "stderr") for m in seen[:-1])
    err = b"".join(base64.b64decode(m["data"]) for m in seen if m["type"] == "stderr")
    out = b"".join(base64.b64decode(m["data"]) for m in seen if m["type"] == "stdout")
    assert len(err) == size and out.split()[0].decode() == hashlib.md5(err).hexdigest()
    assert max(len(base64.b64decode(m.get("data", ""))) for m in seen) <= 32768


async def test_detached_exec_survives_its_connection(start_agent, wire_to, tmp_path) -> None:  # defect 11
    agent = await start_agent()
    wire = await wire_to(agent)
    marker = tmp_path / "done"
    await wire.send(type="exec", id="d", cmd=["sh", "-c", f"sleep 0.5; touch {marker}"])
    await wire.send(type="detach", id="d")
    await wire.send(type="exec", id="k", cmd=["sh", "-c", f"sleep 0.5; touch {marker}.killed"])
    await wire.send(type="exec", id="sync", cmd=["true"])
    await wire.run("sync")
    await wire.ws.close()
    await wait_until(lambda: marker.exists(), what="the detached exec finishing")
    await wait_until(lambda: not agent.runtime.tasks, what="session tasks ending")
    assert not os.path.exists(f"{marker}.killed")


async def test_user_extension(start_agent, wire_to) -> None:
    assert os.getuid() == 0, "the test machine runs the suite as root"
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="u", cmd=["id", "-u"], user="65534:65534")
    assert (await wire.run("u"))[0] == b"65534\n"
    await wire.send(type="exec", id="n", cmd=["id", "-un"], user="nobody")
    assert (await wire.run("n"))[0] == b"nobody\n"
    await wire.send(type="exec", id="x", cmd=["id"], user="no-such-user-xyz")
    assert (await wire.next("x"))["type"] == "error"
    assert (await wire.next("x"))["code"] == 126


async def test_streamed_stdout_is_byte_exact_in_messages_of_at_most_32k(start_agent, wire_to) -> None:  # 33
    # the stdout pipe is widened and read 256 KB at a time, cut into 32 KiB messages sent in one socket write
    wire = await wire_to(await start_agent())
    await wire.send(type="exec", id="seq", cmd=["seq", "1", "600000"], stdin=False)
    out, err, seen = await wire.run("seq", timeout=60)
    expected = "".join(f"{i}\n" for i in range(1, 600001)).encode()
    assert out == expected and err == b"" and seen[-1] == {"type": "exit", "id": "seq", "code": 0}
    sizes = [len(base64.b64decode(m["data"])) for m in seen if m["type"] == "stdout"]
    assert max(sizes) <= 32768 and sum(sizes) == len(expected)


class _ListSink:
    """A TextSink that keeps every message (never paused)."""

    paused = False
    closed = False
    buffered = 0

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send(self, *parts) -> None:
        self.messages.append(b"".join(bytes(p) for p in parts))

    def send_text(self, *parts) -> None:
        self.messages.append(b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in parts))

    def send_many(self, messages, *, text=False) -> None:
        for parts in messages:
            self.send(*parts)

    def add_listener(self, listener) -> None:
        pass

    def remove_listener(self, listener) -> None:
        pass

    async def drained(self) -> None:
        pass

    def mark_closing(self) -> None:
        pass

    def close(self) -> None:
        pass


def _sent_all(sink: _ListSink, size: int) -> bool:
    return sum(len(base64.b64decode(m[m.index(b'"data":"') + 8:-2])) for m in sink.messages) == size


async def test_output_pipe_is_widened_once_a_read_comes_back_full() -> None:
    import fcntl

    from hatchway.agent.exec import read_into
    from hatchway.agent.output import output_writer
    from hatchway.common.pump import PIPE_SIZE_DEFAULT

    wide = 1024 * 1024 if os.geteuid() == 0 else 256 * 1024  # common.pump.widen_pipe's default
    for size, wanted in ((PIPE_SIZE_DEFAULT, wide), (1000, PIPE_SIZE_DEFAULT)):  # a streaming child; a short one
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, b"x" * size)  # the pipe is full (or not) before the first read
            sink = _ListSink()
            done = await read_into(read_end, output_writer(sink, "stdout", "w"), widen=True)
            await wait_until(partial(_sent_all, sink, size), what="the pipe's content sent")
            assert fcntl.fcntl(write_end, 1032) == wanted  # F_GETPIPE_SZ
            assert all(len(m) < 45000 for m in sink.messages)  # 32 KiB of data each at most
        finally:
            os.close(write_end)
        assert await done is None


async def test_execs_started_while_the_connection_is_full_stay_near_the_high_water_mark(start_agent, wire_to) -> None:  # 33
    # one exec fills the WebSocket (the client reads nothing), then 20 execs of 1 MiB each start: their output
    # waits in their pipes (uvloop would read a pipe whose pump paused in connection_made: the agent buffered all)
    from hatchway.common.relay import HIGH_WATER

    agent = await start_agent()
    wire = await wire_to(agent)
    big, size, count = 32 * 1024 * 1024, 1024 * 1024, 20
    await wire.send(type="exec", id="big", cmd=["head", "-c", str(big), "/dev/zero"], stdin=False)
    connection = await wait_until(lambda: next(iter(agent.runtime.connections), None), what="the connection")
    await wait_until(lambda: connection.sink.paused, what="the connection full")
    for i in range(count):
        await wire.send(type="exec", id=f"s{i}", cmd=["head", "-c", str(size), "/dev/zero"], stdin=False)
    await wait_until(lambda: len(connection.sessions) == count + 1, what="all sessions started")
    peak = 0
    for _ in range(300):  # event-loop turns (the agent runs in this loop), not a timed wait
        peak = max(peak, connection.sink.buffered)
        await asyncio.sleep(0)
    assert peak <= 4 * HIGH_WATER + 2 * 1024 * 1024, peak  # high-water mark + a read or two, not 27 MB
    for ident, length in [("big", big)] + [(f"s{i}", size) for i in range(count)]:
        out, _, seen = await wire.run(ident, timeout=60)
        assert len(out) == length and seen[-1]["code"] == 0
