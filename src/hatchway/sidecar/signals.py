"""The ``@@SIDECAR:...@@`` lines and ``>>>`` progress lines on stdout, in the Go sidecar's spelling.

Parents (arkitekt-gateway) match ``@@SIDECAR:(\\w+)@@\\s*(.*)`` on every line,
so every spelling here is the upstream one (sidecar.md 4.1, 4.3). Each line is
flushed as it is written: the parent reads a pipe line by line. The emitter
only writes; *when* a line is written (bind before READY, SHUTDOWN on a
signal) is the caller's responsibility, see :mod:`.service`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import msgspec

from ..common.logsafe import escape

SIGNAL_PATTERN = re.compile(r"@@SIDECAR:(\w+)@@\s*(.*)")

STARTING = "STARTING"
CONNECTING = "CONNECTING"
CONNECTED = "CONNECTED"
LISTENING = "LISTENING"
READY = "READY"
ERROR = "ERROR"
SHUTDOWN = "SHUTDOWN"
AUTH_REQUIRED = "AUTH_REQUIRED"

__all__ = ["SIGNAL_PATTERN", "Signal", "SignalWriter", "parse_signal"]


class Signal(msgspec.Struct, frozen=True):
    """One parsed signal line: ``word`` (READY, ERROR, ...) and its detail text."""

    word: str
    detail: str


def parse_signal(line: str) -> Signal | None:
    """The parent side: the signal in ``line``, or None (the same pattern arkitekt-gateway uses)."""
    match = SIGNAL_PATTERN.match(line)
    if match is None:
        return None
    return Signal(match.group(1), match.group(2).strip())


def go_list(items: Sequence[str]) -> str:
    """Go's ``%v`` of a string slice: ``[a b]``."""
    return "[" + " ".join(items) + "]"


class SignalWriter:
    """Writes the sidecar's stdout lines, one flush per line, and keeps the signals it wrote.

    ``stream`` None is ``sys.stdout``; ``echo=False`` writes nothing (the Python API's default): a parent
    in the same process reads ``seen`` or registers ``listeners`` instead of parsing lines.
    """

    def __init__(self, stream: TextIO | None = None, *, echo: bool = True) -> None:
        self.stream = stream
        self.echo = echo
        self.seen: list[Signal] = []
        self.listeners: list[Callable[[Signal], None]] = []

    def line(self, text: str) -> None:
        if not self.echo:
            return
        stream = self.stream if self.stream is not None else sys.stdout
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # the parent closed our stdout: keep serving, as Go's Printf does
            self.echo = False

    def signal(self, word: str, detail: str = "") -> None:
        self.line(f"@@SIDECAR:{word}@@ {detail}" if detail else f"@@SIDECAR:{word}@@")
        event = Signal(word, detail)
        self.seen.append(event)
        for listener in list(self.listeners):
            listener(event)

    # -- the sequence of sidecar.md 4.1, in order --
    def starting(self, version: str) -> None:
        self.line(f"Arkitekt Sidecar {version}")
        self.signal(STARTING, version)

    def connecting(self, hostname: str) -> None:
        self.line(f">>> Starting Tailscale Node '{hostname}'...")
        self.signal(CONNECTING, hostname)

    def auth_required(self, url: str) -> None:
        self.signal(AUTH_REQUIRED, url)

    def connected(self, ips: Sequence[str]) -> None:
        self.line(">>> Tailscale is Online!")
        self.signal(CONNECTED, f"ips={go_list(ips)}")

    def status_api(self, address: str) -> None:
        self.line(f">>> Status API listening on http://{address}/status")

    def listening(self, mode: str, address: str) -> None:
        label = "HTTP Proxy" if mode == "http" else "SOCKS5 Proxy"
        self.line(f">>> {label} listening on {address}")
        self.line(f">>> Configure your apps to use {label}: {address}")
        self.signal(LISTENING, f"mode={mode} addr={address}")
        self.signal(READY, f"{mode}://{address}")

    def error(self, text: str) -> None:
        self.signal(ERROR, text)

    def shutdown(self) -> None:
        self.signal(SHUTDOWN)

    # -- per-request lines (stdout, as upstream) --
    def http_request(self, client: str, method: str, url: str) -> None:
        self.line(f"[{client}] {escape(method)} {escape(url, 2048)}")  # wire values: one line, no forged signal

    def socks_dial(self, target: str) -> None:
        self.line(f"[SOCKS5] Dialing {escape(target)} via Tailscale")
