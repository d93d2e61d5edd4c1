"""The tunnel's URL rules, sans-I/O: where the client dials and where a forward channel goes.

* The client: take ``--runner-url``, strip trailing ``/``, append
  ``/ws/tunnel/{container_id}`` (upstream's rule, kept even when the runner URL
  has a path or query, with a warning: D12). On the wire the id is
  percent-encoded where a request line needs it (spaces, control and non-ASCII
  characters), as upstream's URL parser does; ``%`` and ``?`` stay as given.
  A URL that cannot be dialled is reported as a ``ValueError`` by
  :func:`dialable_url`; the client counts it as a failed attempt (upstream
  retries it under ``--max-reconnect``).
* The forward CLI: ``{base}/ws/forward/{task_id}/{port}?proto=tcp|udp``.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

import yarl

log = logging.getLogger(__name__)

TUNNEL_PATH = "/ws/tunnel/"

# What may stay raw in a request path: printable ASCII but space " # < > ` { } (the WHATWG path
# percent-encode set upstream's URL parser applies; '%' and '?' stay as given).
_PATH_SAFE = "!$%&'()*+,-./:;=?@[\\]^_|~"


def tunnel_url(runner_url: str, container_id: str) -> str:
    """Upstream's rule: strip trailing '/', append /ws/tunnel/{id} verbatim (section 4.1)."""
    return runner_url.rstrip("/") + TUNNEL_PATH + container_id


def wire_url(runner_url: str, container_id: str) -> str:
    """The URL as it goes out: the id percent-encoded where a request line needs it
    (spaces, control and non-ASCII characters), as upstream's URL parser does."""
    return tunnel_url(runner_url, quote(container_id, safe=_PATH_SAFE))


def check_runner_url(runner_url: str) -> None:
    """Reject schemes other than ws/wss; warn when the URL has a path or query (D12)."""
    parts = urlsplit(runner_url.rstrip("/"))
    if parts.scheme.lower() not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"runner URL must be ws://host[:port] or wss://host[:port], got {runner_url!r}")
    if parts.path or parts.query:
        log.warning(
            "runner URL %r has a path or query; /ws/tunnel/{id} is appended after it (upstream's rule)",
            runner_url,
        )


def dialable_url(runner_url: str, container_id: str) -> yarl.URL:
    """The URL the client dials (already encoded); ValueError when it cannot be dialled."""
    check_runner_url(runner_url)
    url = yarl.URL(wire_url(runner_url, container_id), encoded=True)
    _ = url.port  # yarl checks the port range lazily
    return url


def forward_url(server: str, task_id: str, remote_port: int, proto: str = "tcp") -> str:
    """``{base}/ws/forward/{task_id}/{port}?proto=...``; ``server`` is a ws(s):// base URL or host[:port]."""
    base = server if "://" in server else f"ws://{server}"
    return f"{base.rstrip('/')}/ws/forward/{task_id}/{remote_port}?proto={proto}"


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
