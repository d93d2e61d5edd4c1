"""Keep-alive main process and attach, against an in-process agent (cases 16-18, 24, 34, 41 of specs/agent.md)."""

from __future__ import annotations

import base64

import aiohttp
from agentwire import b64

from helpers import wait_until


async def test_health_reports_main_process_and_exec_works(start_agent, wire_to) -> None:  # 16
    agent = await start_agent(keep_alive=True, argv=["sh", "-c", "echo main_process_output && sleep 30"])
    host, port = agent.address
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/health") as response:
        body = await response.json()
    assert body["status"] == "ok" and body["exited"] is False and body["pid"] > 0 and "exitCode" not in body
    wire = await wire_to(agent)
    await wire.send(type="exec", id="e", cmd=["echo", "hi"])
    assert (await wire.run("e"))[0] == b"hi\n"


async def test_replay_then_live_then_exit(start_agent, wire_to) -> None:  # 17, 18, 41
    agent = await start_agent(keep_alive=True, argv=["sh", "-c", "echo attach_output; echo to_err >&2; exec cat"])
    await wait_until(lambda: agent.main is not None and agent.main.ring.size(2) > 0, what="main output")
    wire = await wire_to(agent)
    await wire.send(type="attach", id="a1")
    assert await wire.next("a1") == {"type": "stdout", "id": "a1", "data": b64(b"attach_output\n")}
    assert await wire.next("a1") == {"type": "stderr", "id": "a1", "data": b64(b"to_err\n")}
    await wire.send(type="stdin", id="a1", data=b64(b"hello_attach\n"))
    assert await wire.next("a1") == {"type": "stdout", "id": "a1", "data": b64(b"hello_attach\n")}
    second = await wire_to(agent)
    await second.send(type="attach", id="a1", replay=False)  # same id on another connection: independent
    await second.send(type="stdin", id="a1", data=b64(b"both\n"))
    assert await wire.next("a1") == {"type": "stdout", "id": "a1", "data": b64(b"both\n")}
    assert await second.next("a1") == {"type": "stdout", "id": "a1", "data": b64(b"both\n")}
    # a plain attacher leaving (close_stdin from a bridge) does not close the main process's stdin
    await second.send(type="close_stdin", id="a1")
    await second.send(type="stdin", id="a1", data=b64(b"still open\n"))
    assert (await wire.next("a1"))["data"] == b64(b"still open\n")
    assert (await second.next("a1"))["data"] == b64(b"still open\n")
    # stdin-once: this attacher's close_stdin ends the main process (cat sees EOF)
    third = await wire_to(agent)
    await third.send(type="attach", id="once", replay=False, stdin_once=True)
    await third.send(type="exec", id="sync", cmd=["true"])
    await third.run("sync")
    await third.send(type="close_stdin", id="once")
    assert await wire.next("a1") == {"type": "exit", "id": "a1", "code": 0}
    assert await second.next("a1") == {"type": "exit", "id": "a1", "code": 0}
    assert await third.next("once") == {"type": "exit", "id": "once", "code": 0}
    assert await agent.wait() == 0


async def test_attach_after_exit_and_signal_code(start_agent, wire_to) -> None:  # 24, 41
    agent = await start_agent(keep_alive=True, argv=["sh", "-c", "echo hello; exec sleep 30"])
    wire = await wire_to(agent)
    await wire.send(type="attach", id="a")
    assert (await wire.next("a"))["data"] == b64(b"hello\n")
    await wire.send(type="signal", id="a", signal="TERM")
    assert await wire.next("a") == {"type": "exit", "id": "a", "code": 143}
    assert await agent.wait() == 143
    assert agent.main is not None and agent.main.exit_code == 143


async def test_many_subscribers_all_see_the_end(start_agent, wire_to) -> None:  # 24
    agent = await start_agent(keep_alive=True, argv=["sh", "-c", "read x; echo done"])
    wire = await wire_to(agent)
    for i in range(50):
        await wire.send(type="attach", id=f"s{i}", replay=False)
    await wire.send(type="stdin", id="s0", data=b64(b"go\n"))
    for i in range(50):
        assert await wire.next(f"s{i}") == {"type": "stdout", "id": f"s{i}", "data": b64(b"done\n")}
        assert await wire.next(f"s{i}") == {"type": "exit", "id": f"s{i}", "code": 0}
    assert await agent.wait() == 0


async def test_replay_of_more_than_a_mebibyte_is_exact(start_agent, wire_to) -> None:  # 34
    agent = await start_agent(keep_alive=True, argv=["sh", "-c", "head -c 3000000 /dev/urandom | tee /tmp/.hw-agent-ring; "
                                                     "echo; exec cat"])
    await wait_until(lambda: agent.main is not None and agent.main.ring.written[1] >= 3_000_001, what="main output")
    wire = await wire_to(agent)
    await wire.send(type="attach", id="a")
    await wire.send(type="stdin", id="a", data=b64(b"END\n"))
    replay = bytearray()
    while True:
        message = await wire.next("a")
        chunk = base64.b64decode(message["data"])
        assert len(chunk) <= 32768
        replay += chunk
        if replay.endswith(b"END\n"):
            break
    with open("/tmp/.hw-agent-ring", "rb") as f:
        expected = f.read() + b"\n"
    assert bytes(replay[:-4]) == expected[-1024 * 1024:]


async def test_slow_attacher_gets_backpressure_not_drops(start_agent, wire_to) -> None:  # defect 17
    size = 16 * 1024 * 1024
    agent = await start_agent(keep_alive=True, argv=["sh", "-c", f"read x; head -c {size} /dev/zero; exec cat"])
    wire = await wire_to(agent)
    await wire.send(type="attach", id="slow", replay=False)
    await wire.send(type="exec", id="sync", cmd=["true"])
    await wire.run("sync")
    await wire.send(type="stdin", id="slow", data=b64(b"go\n"))
    await wait_until(lambda: agent.main is not None and agent.main.held, what="the main process held back")
    received = 0
    while received < size:
        message = await wire.next("slow")
        received += len(base64.b64decode(message["data"]))
    assert received == size


async def test_tty_main_process_honours_resize_on_attach(start_agent, wire_to) -> None:  # defect 19
    agent = await start_agent(keep_alive=True, tty=True, argv=["sh", "-c", "tty -s && echo main-tty; read x; stty size"])
    wire = await wire_to(agent)
    await wire.send(type="attach", id="a", stdin_once=True)
    await wire.send(type="resize", id="a", width=77, height=22)
    await wire.send(type="stdin", id="a", data=b64(b"go\n"))
    output = b""
    while True:
        message = await wire.next("a")
        if message["type"] == "exit":
            break
        output += base64.b64decode(message["data"])
    assert b"main-tty" in output and output.endswith(b"22 77\r\n") and message["code"] == 0
