"""``git-credential``: the container's git credential helper; forwards to ``POST /git/credential``."""

from __future__ import annotations

import sys
from typing import TextIO

from .proxyclient import ProxyClient

__all__ = ["read_request", "run_credential_helper"]

KEYS = ("protocol", "host", "path", "username", "password")


def read_request(stream: TextIO) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stream:
        line = line.rstrip("\n")
        if not line:
            break
        key, sep, value = line.partition("=")
        if sep and key in KEYS:
            fields[key] = value
    return fields


def run_credential_helper(action: str, proxy: ProxyClient, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout,
                          err: TextIO = sys.stderr) -> int:
    fields = read_request(stdin)
    try:
        reply = proxy.request("POST", "/git/credential", {"action": action, **fields})
    except OSError as exc:
        print(f"git-credential: host proxy unreachable: {exc}", file=err)
        return 1
    body = reply.json()
    if reply.status >= 400:
        print(f"git-credential: {body.get('error') or reply.status}", file=err)
        return 1
    if action != "get":
        return 0
    if body.get("success") is not True:
        print(f"git-credential: {body.get('error', 'failed')}", file=err)
        return 1
    for key, value in body.items():
        if key not in ("success", "error") and isinstance(value, str) and value:
            out.write(f"{key}={value}\n")
    return 0
