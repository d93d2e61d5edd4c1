"""``host-open``: the container's ``$BROWSER``. Opens a URL in the host browser; sets up OAuth capture first.

The URL is parsed properly (upstream matched substrings): the first
``redirect_uri`` (else ``callback``) query value that is an ``http`` URL on a
loopback host with a port (``localhost``, ``127.0.0.1``, ``[::1]``) makes it
an OAuth flow. The request bodies are real JSON (control characters escaped).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import parse_qsl, urlsplit

from .policy import loopback_callback
from .proxyclient import ProxyClient

__all__ = ["oauth_callback", "run_host_open", "self_command"]

REGISTER_HELP = """Could not set up the OAuth callback on the host. Possible causes:
  - the host proxy is not running (it starts with the container);
  - it is not reachable from this container;
  - port {port} is already in use on the host by another program."""


def oauth_callback(url: str) -> tuple[int, str] | None:
    """``(port, path)`` of the URL's loopback ``redirect_uri`` (or ``callback``), else None."""
    try:
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        return None
    for key in ("redirect_uri", "callback"):
        for name, value in query:
            if name == key:
                return loopback_callback(value)
    return None


def self_command() -> list[str]:
    """How to run this program again (the static executable, or the Python module)."""
    if getattr(sys, "frozen", False) or os.path.basename(sys.executable).startswith("hatchway-hostproxy"):
        return [sys.executable]
    return [sys.executable, "-m", "hatchway.hostproxy"]


def run_host_open(url: str, proxy: ProxyClient, *, err: TextIO = sys.stderr,
                  forwarder: Sequence[str] | None = None) -> int:
    def say(text: str) -> None:
        print(text, file=err, flush=True)

    callback = oauth_callback(url)
    if callback is not None:
        port, path = callback
        try:
            reply = proxy.request("POST", "/callback/register", {"port": port, "path": path, "timeout_seconds": 300})
        except OSError as exc:
            say(f"host-open: cannot reach the host proxy: {exc}")
            say(REGISTER_HELP.format(port=port))
            return 1
        session = reply.json().get("session_id")
        if reply.status != 200 or not isinstance(session, str):
            say(f"host-open: callback registration failed: {reply.json().get('error') or reply.status}")
            say(REGISTER_HELP.format(port=port))
            return 1
        custom = os.environ.get("HATCHWAY_HOSTPROXY_FORWARDER")
        argv = [*(forwarder or (shlex.split(custom) if custom else [*self_command(), "callback-forwarder"]))]
        env = {**os.environ, "CALLBACK_SESSION": session, "CALLBACK_PORT": str(port),
               "CLAWKER_HOST_PROXY": proxy.base}
        if proxy.token:
            env["HATCHWAY_HOSTPROXY_TOKEN"] = proxy.token
        try:
            subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            say(f"host-open: cannot start the callback forwarder: {exc}")
            return 1
    try:
        reply = proxy.request("POST", "/open/url", {"url": url})
    except OSError as exc:
        say(f"Failed to open URL: {exc}")
        return 1
    if reply.status == 200 and reply.json().get("success") is True:
        return 0
    say(f"Failed to open URL: {reply.json().get('error') or reply.status}")
    return 1
