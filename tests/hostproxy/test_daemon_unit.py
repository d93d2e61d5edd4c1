"""Daemon configuration and shutdown in process (cases 32, 33, 35) and the Manager's health check (43, 44)."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from aiohttp import web
from hp_harness import make_server

from hatchway.hostproxy.daemon import Daemon, DaemonConfig
from hatchway.hostproxy.engine import ContainerSummary
from hatchway.hostproxy.manager import Manager
from hatchway.hostproxy.server import ServerConfig
from hatchway.hostproxy.statedir import StatePaths, state_dir
from hatchway.hostproxy.watcher import WatchEnd


def test_defaults_and_validation() -> None:
    config = DaemonConfig()
    assert (config.port, config.poll_interval, config.grace_period, config.max_consecutive_errs) == (18374, 30.0,
                                                                                                     60.0, 10)
    for bad in ({"port": 0}, {"poll_interval": 0}, {"grace_period": -1}, {"max_consecutive_errs": 0}):
        with pytest.raises(ValueError):
            DaemonConfig(**bad).validate()  # type: ignore[arg-type]


def test_state_dir_resolution() -> None:
    assert state_dir({"CLAWKER_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}) == "/s"
    assert state_dir({"XDG_STATE_HOME": "/x"}) == "/x/clawker"
    assert state_dir({}).endswith("/.local/state/clawker")


class Empty:
    def __init__(self) -> None:
        self.closed = False

    async def list_containers(self, filters: Mapping[str, Sequence[str]] | None = None,
                              *, all: bool = False) -> list[ContainerSummary]:
        return []

    async def close(self) -> None:
        self.closed = True


async def test_idle_exit_closes_the_docker_client_and_removes_the_pid_file(tmp_path: Any) -> None:
    server, _ = make_server(tmp_path)
    lister = Empty()
    paths = StatePaths(str(tmp_path / "state"))
    daemon = Daemon(DaemonConfig(port=1, grace_period=0, poll_interval=0.001), ServerConfig(),
                    paths=paths, lister=lister, server=server)
    assert await daemon.run() == 0
    assert daemon.ended is WatchEnd.IDLE and lister.closed and not server.running
    import os

    assert not os.path.exists(paths.pid_file)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("service,expected", [("clawker-host-proxy", True), ("something-else", False)])
async def test_port_in_use_only_for_the_clawker_identity(service: str, expected: bool, tmp_path: Any) -> None:
    port = free_port()
    manager = Manager(port=port, state_dir=str(tmp_path))
    assert not await manager.is_running()  # nothing listening

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": service})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await manager.is_running() is expected
    finally:
        await runner.cleanup()
