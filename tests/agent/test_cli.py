"""The hatchway-agent command: Go flags, exit codes, signal forwarding, the token kept secret (cases 40, 41, 50)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import aiohttp
import pytest
from agentproc import AGENT, AgentProcess, free_port

from hatchway.agent.client import AgentClient

TOKEN = "s3cr3t-token-value"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=30)


def test_go_flag_usage() -> None:
    helped = run_cli("-h")
    assert helped.returncode == 0 and "Usage of hatchway-agent" in helped.stderr and "-keep-alive" in helped.stderr
    bad = run_cli("-bogus")
    assert bad.returncode == 2 and "flag provided but not defined: -bogus" in bad.stderr
    assert run_cli("-health-interval", "30").returncode == 2  # Go durations need a unit
    assert run_cli("--version").returncode == 0


@pytest.mark.parametrize("args", [["--addr", "ADDR", "--keep-alive", "--"], ["-addr=ADDR", "-keep-alive=true"],
                                  ["-addr", "ADDR", "-keep-alive"]])
async def test_flag_forms_and_main_exit_code(args: list[str]) -> None:
    port = free_port()
    argv = [a.replace("ADDR", f"127.0.0.1:{port}") for a in args] + ["sh", "-c", "echo out; exit 7"]
    async with AgentProcess(argv, wait_ready=False) as agent:
        assert await agent.wait() == 7
    assert b"out\n" in agent.stdout  # the main process's output is copied to the agent's stdout


async def test_positional_args_without_keep_alive_are_ignored() -> None:
    async with AgentProcess(["-addr", "127.0.0.1:0", "--", "false"]) as agent:
        async with AgentClient.connect(agent.addr) as client:
            assert (await client.collect(["echo", "ok"])).stdout == b"ok\n"
        agent.signal(signal.SIGTERM)
        assert await agent.wait() == 0  # no main process: SIGTERM stops the agent


async def test_signals_are_forwarded_and_the_agent_exits_with_the_main_code() -> None:  # 40, 41
    script = ("for s in INT HUP QUIT USR1 USR2 WINCH; do trap \"echo got $s\" $s; done; "
              "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done")
    async with AgentProcess(["-addr", "127.0.0.1:0", "-keep-alive", "--", "sh", "-c", script], token=TOKEN) as agent:
        async with AgentClient.connect(agent.addr, TOKEN) as client:
            attach = await client.attach()
            events = attach.events()
            assert (await anext(events)).data == b"ready\n"
            for name in ("INT", "HUP", "QUIT", "USR1", "USR2", "WINCH"):
                agent.signal(getattr(signal, f"SIG{name}"))
                assert (await anext(events)).data == f"got {name}\n".encode()
            agent.signal(signal.SIGTERM)
            assert (await anext(events)).data == b"got TERM\n"
            assert await attach.wait() == 42  # the attacher's exit arrives before the agent goes
        assert await agent.wait() == 42


async def test_signal_death_of_main_gives_128_plus_n() -> None:
    async with AgentProcess(["-addr", "127.0.0.1:0", "-keep-alive", "--", "sleep", "30"]) as agent:
        agent.signal(signal.SIGTERM)  # forwarded: sleep dies of it
        assert await agent.wait() == 143


async def test_token_never_logged_nor_inherited() -> None:  # 44, 50
    url = f"http://127.0.0.1:{free_port()}/internal/v1/agent/connect?id=c1&token={TOKEN}"
    async with AgentProcess(["-callback", url, "-reverse-retries", "2", "-log-level", "debug", "-keep-alive", "--",
                             "sh", "-c", "env; sleep 30"], token=TOKEN, wait_ready=False) as agent:
        assert await agent.wait(timeout=30) == 1  # reverse retries exhausted: fatal
    assert b"reverse connect" in agent.stderr and b"REDACTED" in agent.stderr
    assert TOKEN.encode() not in agent.stderr
    assert b"SOCKERLESS_AGENT_TOKEN" not in agent.stdout and TOKEN.encode() not in agent.stdout


async def test_main_process_that_cannot_start_is_fatal() -> None:
    async with AgentProcess(["-addr", "127.0.0.1:0", "-keep-alive", "--", "/nonexistent"], wait_ready=False) as agent:
        assert await agent.wait() == 1
    assert b"main process failed to start" in agent.stderr


async def test_listen_failure_is_fatal() -> None:
    async with AgentProcess(["-addr", "127.0.0.1:0"]) as first:
        async with AgentProcess(["-addr", first.addr], wait_ready=False) as second:
            assert await second.wait() == 1
        first.signal(signal.SIGINT)
        assert await first.wait() == 0
    assert b"listen tcp" in second.stderr


async def fetch_health_until(addr: str, predicate, timeout: float = 20.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"http://{addr}/health") as response:
                body = await response.json()
            if predicate(body):
                return body
            assert loop.time() < deadline, f"/health never matched: {body}"


@pytest.mark.parametrize("how", ["flags", "env"])
async def test_health_check_configuration(how: str) -> None:
    env = dict(os.environ)
    if how == "flags":
        args = ["-health-cmd", "echo probe; exit 1", "-health-interval", "20ms", "-health-retries", "2"]
    else:
        env["HATCHWAY_AGENT_HEALTHCHECK"] = json.dumps({"Test": ["CMD-SHELL", "echo probe; exit 1"],
                                                         "Interval": 20_000_000, "Retries": 2})
        args = []
    async with AgentProcess(["-addr", "127.0.0.1:0", *args, "-keep-alive", "--", "sleep", "30"], env=env) as agent:
        body = await fetch_health_until(agent.addr, lambda b: b.get("health", {}).get("status") == "unhealthy")
        assert body["health"]["failingStreak"] >= 2 and body["health"]["log"][-1]["Output"] == "probe\n"
        assert body["health"]["log"][-1]["ExitCode"] == 1
