"""Opening a URL in the host browser: the per-platform command, run with a timeout (injectable for tests)."""

from __future__ import annotations

import sys
from typing import Protocol

from .subproc import failure_text, run_bounded, run_quiet

__all__ = ["BrowserError", "Opener", "SystemOpener", "browser_command"]


class BrowserError(Exception):
    """The browser command failed; the text goes to the client as ``error``."""


class Opener(Protocol):
    async def open(self, url: str) -> None:
        """Open ``url``; raise :class:`BrowserError` on failure."""
        ...


def browser_command(url: str, platform: str = sys.platform) -> list[str]:
    """argv for ``url`` (one argv element, no shell), as upstream; BrowserError on other platforms."""
    if platform == "darwin":
        return ["open", url]
    if platform.startswith("linux"):
        return ["xdg-open", url]
    if platform in ("win32", "cygwin"):
        return ["rundll32", "url.dll,FileProtocolHandler", url]
    raise BrowserError("unsupported platform")


class SystemOpener:
    """Runs the platform's command (or ``command + [url]`` when given), waiting at most ``timeout`` seconds."""

    def __init__(self, command: list[str] | None = None, *, timeout: float = 10.0, cwd: str | None = None) -> None:
        self.command = command
        self.timeout = timeout
        self.cwd = cwd

    async def open(self, url: str) -> None:
        argv = [*self.command, url] if self.command else browser_command(url)
        try:
            if self.cwd is None:  # output discarded, as Go's exec with no Stdout/Stderr does
                returncode = await run_quiet(argv, timeout=self.timeout)
            else:
                returncode = (await run_bounded(argv, cwd=self.cwd, timeout=self.timeout)).returncode
        except OSError as exc:
            raise BrowserError(f"exec: {argv[0]!r}: {exc.strerror or exc}") from None
        if returncode is None:
            raise BrowserError(f"browser command timed out after {self.timeout:g}s")
        failure = failure_text(returncode)
        if failure is not None:
            raise BrowserError(failure)
