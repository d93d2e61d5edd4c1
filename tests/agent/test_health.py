"""Health checks with Docker's semantics (case 22 and section 11 of specs/agent.md)."""

from __future__ import annotations

import aiohttp

from hatchway.agent.health import (
    SECOND,
    HealthChecker,
    HealthConfig,
    HealthState,
    go_duration,
    probe_argv,
    rfc3339,
)
from hatchway.common.reaper import Reaper
from helpers import wait_until

MS = SECOND // 1000


def test_state_machine_follows_docker() -> None:
    state = HealthState(HealthConfig(Test=["CMD", "x"], StartPeriod=10 * SECOND, Retries=2), started_ns=0)
    assert state.next_delay(0) == 5 * SECOND  # start interval while starting in the start period
    state.record(1 * SECOND, 1 * SECOND, 1, "no")  # failures during the start period do not count
    state.record(2 * SECOND, 2 * SECOND, 1, "no")
    assert (state.status, state.failing_streak) == ("starting", 0)
    state.record(3 * SECOND, 3 * SECOND, 0, "ok")  # a success ends the start period
    assert (state.status, state.failing_streak) == ("healthy", 0)
    assert state.next_delay(4 * SECOND) == 30 * SECOND
    state.record(11 * SECOND, 11 * SECOND, 1, "")
    assert state.status == "healthy" and state.failing_streak == 1
    state.record(12 * SECOND, 12 * SECOND, 1, "")
    assert state.status == "unhealthy" and state.failing_streak == 2
    for i in range(10):
        state.record(20 * SECOND + i, 20 * SECOND + i, 0, str(i))
    assert [entry.Output for entry in state.log] == ["5", "6", "7", "8", "9"]  # the last 5
    defaults = HealthState(HealthConfig(Test=["CMD", "x"]), started_ns=0)
    assert (defaults.interval, defaults.timeout, defaults.retries) == (30 * SECOND, 30 * SECOND, 3)
    assert defaults.next_delay(0) == 30 * SECOND  # the first probe after one interval


def test_test_forms_and_formats() -> None:
    assert probe_argv(["NONE"]) is None and probe_argv([]) is None
    assert probe_argv(["CMD", "true"]) == ["true"]
    assert probe_argv(["CMD-SHELL", "exit 0"]) == ["/bin/sh", "-c", "exit 0"]
    assert (go_duration(SECOND), go_duration(1500 * MS), go_duration(500 * MS), go_duration(90 * SECOND),
            go_duration(3600 * SECOND)) == ("1s", "1.5s", "500ms", "1m30s", "1h0m0s")
    assert rfc3339(1_775_383_200_123_456_789) == "2026-04-05T10:00:00.123456789Z"
    assert rfc3339(1_775_383_200_000_000_000) == "2026-04-05T10:00:00Z"


async def probe_until(checker: HealthChecker, count: int) -> None:
    while checker.probes < count:
        await checker.probe()


async def test_real_probes(tmp_path) -> None:
    reaper = Reaper()
    import asyncio

    loop = asyncio.get_running_loop()
    reaper.install(loop)
    try:
        ok = HealthChecker(HealthConfig(Test=["CMD", "true"]), reaper, {"PATH": "/usr/bin:/bin"})
        await ok.probe()
        assert (ok.state.status, ok.state.failing_streak) == ("healthy", 0)
        bad = HealthChecker(HealthConfig(Test=["CMD", "false"], Retries=2), reaper, {"PATH": "/usr/bin:/bin"})
        await probe_until(bad, 2)
        assert bad.state.status == "unhealthy" and bad.state.failing_streak >= 2
        slow = HealthChecker(HealthConfig(Test=["CMD", "sleep", "60"], Timeout=SECOND // 5), reaper,
                             {"PATH": "/usr/bin:/bin"})
        await slow.probe()
        entry = slow.state.log[-1]
        assert (entry.ExitCode, entry.Output) == (-1, "Health check exceeded timeout (200ms)")
        big = HealthChecker(HealthConfig(Test=["CMD-SHELL", "head -c 10000 /dev/zero | tr '\\0' a; echo e >&2"]),
                            reaper, {"PATH": "/usr/bin:/bin", "SOCKERLESS_AGENT_TOKEN": "t"})
        await big.probe()
        assert big.state.log[-1].Output == "a" * 4096 + "..."
        assert "SOCKERLESS_AGENT_TOKEN" not in big.environ
        for _ in range(7):
            await bad.probe()
        assert len(bad.state.log) == 5
    finally:
        reaper.uninstall(loop)


async def test_health_in_the_health_endpoint(start_agent) -> None:
    config = HealthConfig(Test=["CMD-SHELL", "echo probe-out"], Interval=SECOND // 20)
    agent = await start_agent(keep_alive=True, argv=["sleep", "30"], health=config)
    host, port = agent.address
    assert agent.health is not None
    await wait_until(lambda: agent.health is not None and agent.health.probes >= 1, what="a probe")
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/health") as response:
        body = await response.json()
    health = body["health"]
    assert health["status"] == "healthy" and health["failingStreak"] == 0
    entry = health["log"][0]
    assert set(entry) == {"Start", "End", "ExitCode", "Output"} and entry["Output"] == "probe-out\n"
    assert entry["Start"].endswith("Z") and entry["ExitCode"] == 0


async def test_health_push_to_subscribed_connections_only(start_agent, wire_to, tmp_path) -> None:
    # extension: {"type":"health"} subscribes a connection: the state now, then one push per status change
    flag = tmp_path / "ok"
    config = HealthConfig(Test=["CMD", "test", "-f", str(flag)], Interval=SECOND // 50, Retries=1)
    agent = await start_agent(keep_alive=True, argv=["sleep", "30"], health=config)
    subscribed, silent = await wire_to(agent), await wire_to(agent)
    await subscribed.send(type="health")
    first = await subscribed.next("")
    assert first["type"] == "health" and first["health"]["status"] in ("starting", "unhealthy")
    if first["health"]["status"] == "starting":
        assert (await subscribed.next(""))["health"]["status"] == "unhealthy"
    flag.write_text("")
    healthy = await subscribed.next("")
    assert healthy["health"]["status"] == "healthy" and healthy["health"]["log"][-1]["ExitCode"] == 0
    flag.unlink()
    assert (await subscribed.next(""))["health"]["status"] == "unhealthy"
    await silent.send(type="exec", id="e", cmd=["true"])  # the other connection got no health message
    assert [m["type"] for m in (await silent.run("e"))[2]] == ["exit"] and not silent.by_id[""]


async def test_health_subscription_without_health_checks_is_an_error(start_agent, wire_to) -> None:
    wire = await wire_to(await start_agent())
    await wire.send(type="health")
    assert await wire.next("") == {"type": "error", "message": "no health check configured"}


async def test_client_subscribe_health(start_agent) -> None:
    from hatchway.agent.client import AgentClient
    from hatchway.agent.protocol import HealthPush

    config = HealthConfig(Test=["CMD", "true"], Interval=SECOND // 50)
    agent = await start_agent(keep_alive=True, argv=["sleep", "30"], health=config, token="")
    host, port = agent.address
    pushed: list[HealthPush] = []
    async with AgentClient.connect(f"{host}:{port}", on_system=lambda m: pushed.append(m)) as client:  # type: ignore[arg-type]
        await client.subscribe_health()
        await wait_until(lambda: any(m.health is not None and m.health.status == "healthy" for m in pushed),
                         what="a healthy push")
    assert all(isinstance(m, HealthPush) for m in pushed)
