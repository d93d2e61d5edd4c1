"""The container side's client of the host proxy (stdlib only, synchronous: the helpers are short-lived).

It sends the container's token (``Authorization: Bearer``) and
``Content-Type: application/json`` on every call, which the daemon requires.
The token comes from ``$HATCHWAY_HOSTPROXY_TOKEN``, else from the file named by
``$HATCHWAY_HOSTPROXY_TOKEN_FILE`` (default ``/run/secrets/hatchway-hostproxy-token``).
"""

from __future__ import annotations

import http.client
import json
import os
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PROXY", "ProxyClient", "ProxyReply", "read_token"]

DEFAULT_PROXY = "http://host.docker.internal:18374"
TOKEN_FILE = "/run/secrets/hatchway-hostproxy-token"


def read_token(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    token = env.get("HATCHWAY_HOSTPROXY_TOKEN", "").strip()
    if token:
        return token
    path = env.get("HATCHWAY_HOSTPROXY_TOKEN_FILE", TOKEN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


class ProxyReply:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class ProxyClient:
    def __init__(self, base: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        parts = urlsplit(self.base)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"proxy URL must be http://host:port, got {base!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> ProxyReply:
        """One call; raises OSError (http.client errors included) on transport failure."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            return ProxyReply(response.status, response.read(1 << 20))
        except http.client.HTTPException as exc:
            raise OSError(str(exc)) from exc
        finally:
            conn.close()
