"""``callback-forwarder``: polls the host proxy for the captured OAuth callback and replays it in the container.

Differences from upstream (defects 8 and 9): the next host (``127.0.0.1``, then
``[::1]``) is tried only when the previous one cannot be connected to; an HTTP
answer of any status ends the replay (a 4xx is not replayed elsewhere, and the
forwarder exits 1). Redirects are not followed, and ``Host``,
``Content-Length`` and hop-by-hop headers of the capture are not resent.
"""

from __future__ import annotations

import http.client
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import quote

from .proxyclient import ProxyClient

__all__ = ["FORWARD_HOSTS", "HOP_BY_HOP", "ForwardError", "build_url", "forward", "run_forwarder"]

FORWARD_HOSTS = ("localhost", "127.0.0.1", "::1")
HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
                        "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"})


class ForwardError(Exception):
    pass


def build_url(host: str, port: int, path: str, query: str = "") -> str:
    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}:{port}{path}" + (f"?{query}" if query else "")


def forward(callback: dict[str, Any], port: int, *, timeout: float = 10.0) -> tuple[str, int]:
    """Replay ``callback`` on ``localhost``/``127.0.0.1``/``[::1]`` port ``port``; returns (host, status).

    Raises ForwardError when no host could be connected to (the text names each host).
    """
    method = str(callback.get("method") or "GET")
    path = str(callback.get("path") or "/")
    query = str(callback.get("query") or "")
    body = str(callback.get("body") or "").encode()
    headers = {k: str(v) for k, v in dict(callback.get("headers") or {}).items() if k.lower() not in HOP_BY_HOP}
    target = path + (f"?{query}" if query else "")
    failures = []
    for host in FORWARD_HOSTS:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, target, body=body or None, headers=headers)
            response = conn.getresponse()
            response.read()
            return host, response.status
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{host}:{port}: {exc}")
        finally:
            conn.close()
    raise ForwardError("forwarding failed on every host: " + "; ".join(failures))


def run_forwarder(session: str, port: int, proxy: ProxyClient, *, timeout: float = 300.0, poll: float = 2.0,
                  cleanup: bool = True, verbose: bool = False, err: TextIO = sys.stderr,
                  sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> int:
    def say(text: str) -> None:
        print(f"callback-forwarder: {text}", file=err, flush=True)

    deadline = clock() + timeout
    errors = 0
    last_warning = 0.0
    path = f"/callback/{quote(session, safe='')}/data"
    try:
        while clock() < deadline:
            try:
                reply = proxy.request("GET", path)
            except OSError as exc:
                errors += 1
                now = clock()
                if errors == 3 or (errors > 3 and now - last_warning >= 30):
                    last_warning = now
                    say(f"cannot reach the host proxy ({exc}); {deadline - now:.0f}s left")
                sleep(poll)
                continue
            errors = 0
            if reply.status == 404:
                say("session not found or expired")
                return 1
            if reply.status != 200:
                say(f"unexpected status {reply.status} from the host proxy")
                sleep(poll)
                continue
            data = reply.json()
            if not data:
                sleep(poll)
                continue
            if data.get("error"):
                say(str(data["error"]))
                return 1
            callback = data.get("callback")
            if data.get("received") is True and isinstance(callback, dict):
                try:
                    host, status = forward(callback, port)
                except ForwardError as exc:
                    say(str(exc))
                    return 1
                if verbose:
                    say(f"callback forwarded to {host}:{port} (HTTP {status})")
                if status >= 400:
                    say(f"the listener on {host}:{port} answered HTTP {status}; not replayed elsewhere")
                    return 1
                return 0
            sleep(poll)
        say("Timeout waiting for OAuth callback")
        return 1
    finally:
        if cleanup:
            try:
                proxy.request("DELETE", f"/callback/{quote(session, safe='')}")
            except OSError:
                pass
