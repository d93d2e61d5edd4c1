"""The agent as PID 1 of a new PID namespace (a container without an init): orphans reaped, exit codes
right while the reaper runs (case 39), SIGTERM reaches the main process (case 40), the agent exits with
the main process's code (case 41)."""

from __future__ import annotations

import os
import signal

from agentproc import AgentProcess

from hatchway.agent.client import AgentClient
from helpers import wait_until

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]  # no agent outlives a failed test


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(item) for item in f.read().split()]
    return found


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def test_pid1_reaps_orphans_keeps_codes_and_forwards_sigterm() -> None:
    main = ["sh", "-c", "trap 'echo got TERM; exit 3' TERM; while :; do sleep 0.05; done"]
    async with AgentProcess(["-addr", "127.0.0.1:0", "-keep-alive", "--", *main], prefix=UNSHARE) as agent:
        assert agent.proc is not None
        (agent_pid,) = children(agent.proc.pid)  # the agent, PID 1 inside
        async with AgentClient.connect(agent.addr) as client:
            inside = await client.collect(["sh", "-c", "cat /proc/1/cmdline; echo; echo $$"])
            assert b"hatchway.agent" in inside.stdout or b"hatchway-agent" in inside.stdout
            # each exec leaves an orphan that PID 1 inherits and must reap; our own children keep their codes
            for _ in range(20):
                result = await client.collect(["sh", "-c", "(sleep 0.2 >/dev/null 2>&1 &); exit 42"])
                assert result.code == 42
            result = await client.collect(["sh", "-c", "kill -TERM $$"])
            assert result.code == 143

            def no_orphans_left() -> bool:
                kids = children(agent_pid)
                return all(state(pid) != "Z" for pid in kids) and len(kids) == 1  # only the main process

            await wait_until(no_orphans_left, timeout=20, what="orphans reaped by PID 1")
        os.kill(agent_pid, signal.SIGTERM)  # what docker stop does
        assert await agent.wait() == 3
    assert b"got TERM" in agent.stdout


async def test_not_pid1_the_agent_is_a_child_subreaper() -> None:
    async with AgentProcess(["-addr", "127.0.0.1:0"]) as agent:
        assert agent.proc is not None
        async with AgentClient.connect(agent.addr) as client:
            result = await client.collect(["sh", "-c", "(sleep 30 >/dev/null 2>&1 & echo $! > /dev/stderr); exit 5"])
            assert result.code == 5
            orphan = int(result.stderr)
            await wait_until(lambda: orphan in children(agent.proc.pid), what="the orphan adopted by the agent")
            os.kill(orphan, signal.SIGKILL)
            await wait_until(lambda: state(orphan) == "gone", what="the orphan reaped by the agent")
        agent.signal(signal.SIGTERM)
        assert await agent.wait() == 0
