"""Fixtures for the host proxy tests: a running server with tokens, a recording opener, git with a private HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from hp_harness import Proxy, make_server  # noqa: E402


@pytest.fixture
def git_home(tmp_path: Any) -> dict[str, str]:
    """An isolated git environment: HOME, global config with the store helper, no system config."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": os.environ.get("PATH", os.defpath),
    }
    subprocess.run(["git", "config", "--global", "credential.helper", "store"], env=env, check=True)
    (home / ".git-credentials").write_text("https://alice:s3cr3t=x@github.com\n")
    return env


@pytest_asyncio.fixture
async def proxy(tmp_path: Any, git_home: dict[str, str]) -> AsyncIterator[Proxy]:
    server, opener = make_server(tmp_path, git_home)
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield Proxy(server, session, opener)
    await server.aclose()
