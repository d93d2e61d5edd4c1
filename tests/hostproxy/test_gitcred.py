"""Git credential forwarding with real git and an isolated HOME (cases 47-50, 82, 83, 95)."""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any

import pytest
from hp_harness import TOKEN_B, Proxy

from hatchway.hostproxy.gitcred import GitCredentialRunner, format_input, parse_output

GET = {"action": "get", "protocol": "https", "host": "github.com"}


@pytest.mark.parametrize("body,error", [
    (b"{bad", "invalid JSON request body"),
    (b'{"protocol":"https","host":"h"}', "action must be 'get', 'store', or 'erase'"),
    (b'{"action":"","protocol":"https","host":"h"}', "action must be 'get', 'store', or 'erase'"),
    (b'{"action":"steal","protocol":"https","host":"h"}', "action must be 'get', 'store', or 'erase'"),
    (b'{"action":"get","host":"h"}', "protocol is required"),
    (b'{"action":"get","protocol":"https"}', "host is required"),
    *[((f'{{"action":"get","protocol":"https","host":"h","{field}":"a{ch}b"}}').encode(),
       "credential fields must not contain newlines or null bytes")
      for field in ("protocol", "host", "path", "username", "password") for ch in ("\\n", "\\r", "\\u0000")
      if not (field in ("protocol", "host") and ch == "\\u0000")],
])
async def test_400_cases(proxy: Proxy, body: bytes, error: str) -> None:
    status, reply = await proxy.post("/git/credential", raw=body)
    assert (status, reply) == (400, {"success": False, "error": error})


async def test_oversize(proxy: Proxy) -> None:
    status, reply = await proxy.post("/git/credential", raw=b'{"action":"get"' + b" " * (1 << 20) + b"}")
    assert (status, reply["error"]) == (400, "invalid JSON request body")


def test_format_input() -> None:
    assert format_input("https", "h") == b"protocol=https\nhost=h\n\n"
    assert format_input("https", "h", "p", "u", "pw") == b"protocol=https\nhost=h\npath=p\nusername=u\npassword=pw\n\n"
    assert format_input("ht\rtps", "h\n", "", "u\x00") == b"protocol=https\nhost=h\nusername=u\n\n"


@pytest.mark.parametrize("out,expected", [
    (b"", {}),
    (b"username=u\n", {"username": "u"}),
    (b"protocol=https\nhost=h\nusername=u\npassword=p\n", {"protocol": "https", "host": "h", "username": "u",
                                                            "password": "p"}),
    (b"username=u\n\n", {"username": "u"}),
    (b"quit=1\ncapability[]=authtype\nusername=u\n", {"username": "u"}),
    (b"garbage\nusername=u\n", {"username": "u"}),
    (b"password=a=b==\n", {"password": "a=b=="}),
])
def test_parse_output(out: bytes, expected: dict[str, str]) -> None:
    assert parse_output(out) == expected


async def test_get_from_real_git_store_helper(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    status, reply = await proxy.post("/git/credential", GET)
    assert (status, reply) == (200, {"success": True, "protocol": "https", "host": "github.com", "username": "alice",
                                     "password": "s3cr3t=x"})
    assert "s3cr3t" not in caplog.text and "git get container=container-a" in caplog.text


async def test_git_policy(proxy: Proxy) -> None:
    assert (await proxy.post("/git/credential", {**GET, "host": "gitlab.com"}))[0] == 403
    assert (await proxy.post("/git/credential", GET, token=TOKEN_B))[0] == 403  # not among B's remotes
    assert (await proxy.post("/git/credential", {**GET, "protocol": "http"}))[0] == 403
    for action in ("store", "erase"):
        status, reply = await proxy.post("/git/credential", {**GET, "action": action, "username": "u", "password": "p"})
        assert status == 403 and "disabled" in reply["error"]


async def test_helper_failure_is_200_with_error(proxy: Proxy, git_home: dict[str, str]) -> None:
    subprocess.run(["git", "config", "--global", "credential.helper", "!f() { exit 3; }; f"], env=git_home, check=True)
    subprocess.run(["git", "config", "--global", "--add", "credential.helper", ""], env=git_home, check=True)
    status, reply = await proxy.post("/git/credential", GET)
    assert status == 200 and reply["success"] is False and reply["error"].startswith("credential helper failed: ")


async def test_repository_local_bang_helper_never_runs(proxy: Proxy, git_home: dict[str, str], tmp_path: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 82: the daemon's cwd is a repository whose .git/config sets a `!` helper; it must not run."""
    (tmp_path / "home" / ".git-credentials").unlink()  # nothing stored: git goes on to the next helper
    repo = tmp_path / "project"
    repo.mkdir()
    marker = tmp_path / "pwned"
    subprocess.run(["git", "init", "-q", str(repo)], env=git_home, check=True)
    subprocess.run(["git", "-C", str(repo), "config", "credential.helper", f"!touch {marker}; echo password=x #"],
                   env=git_home, check=True)
    # the attack works with plain git in the repository (the fixture is real) ...
    subprocess.run(["git", "credential", "fill"], input=b"protocol=https\nhost=github.com\n\n", cwd=repo,
                   env={**git_home, "GIT_TERMINAL_PROMPT": "0"}, capture_output=True, timeout=20)
    assert marker.exists()
    marker.unlink()
    # ... and not through the daemon started from inside it, with GIT_DIR pointing there too
    monkeypatch.chdir(repo)
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    status, reply = await proxy.post("/git/credential", GET)
    assert status == 200 and reply["success"] is False  # the global store has nothing; no prompt
    assert not marker.exists()


async def test_helper_that_never_returns_times_out(tmp_path: Any, git_home: dict[str, str]) -> None:
    subprocess.run(["git", "config", "--global", "credential.helper", "!sleep 600 #"], env=git_home, check=True)
    runner = GitCredentialRunner(str(tmp_path / "neutral"), environ=git_home, timeout=0.5)
    result = await runner.run("get", "https", "github.com")
    assert not result.ok and "timed out" in result.error


async def test_browser_command_that_never_exits_times_out() -> None:
    from hatchway.hostproxy.browser import BrowserError, SystemOpener

    with pytest.raises(BrowserError, match="timed out"):
        await SystemOpener(["sh", "-c", "sleep 600", "opener"], timeout=0.3).open("https://example.com/")
    with pytest.raises(BrowserError, match="exit status 1"):
        await SystemOpener(["false"]).open("https://example.com/")


def test_neutral_dir_is_empty_and_isolated(tmp_path: Any) -> None:
    runner = GitCredentialRunner(str(tmp_path / "n"), environ={"PATH": os.defpath, "GIT_DIR": "/x", "HOME": "/h"})
    runner.prepare()
    assert "GIT_DIR" not in runner.env and runner.env["GIT_CEILING_DIRECTORIES"] == str(tmp_path / "n")
    assert runner.env["GIT_TERMINAL_PROMPT"] == "0"


async def test_non_empty_neutral_dir_refuses_to_run_git(proxy: Proxy, tmp_path: Any) -> None:
    neutral = tmp_path / "neutral"
    neutral.mkdir(exist_ok=True)
    (neutral / ".git").mkdir()  # someone planted a repository where git would run
    status, reply = await proxy.post("/git/credential", GET)
    assert (status, reply) == (500, {"success": False, "error": "git credential forwarding is not available"})
