"""Safe logging of what came from the wire: escaped, bounded, rate-limited (issue #6 items 10 and 11).

* :func:`escape` makes any peer-supplied text one harmless line: control
  characters (C0, DEL, C1, so also ESC and every terminal escape sequence),
  line/paragraph separators and bidirectional overrides become ``\\xNN`` /
  ``\\uNNNN``; undecodable bytes become ``\\xNN``; long values are cut.
  Use it on every peer-supplied value before it reaches a log:
  ``log.warning("unknown container %s", escape(cid))``.
* :class:`RateLimited` logs one line per interval and counts the rest:
  ``... (37 more suppressed)`` on the next line it lets through.
* :class:`OneLineLogger` is a logger adapter to hand to a library that logs
  bad input loudly (aiohttp's server logs every malformed request at ERROR
  with a traceback): each record becomes one escaped line without
  traceback, at most one per interval.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable

__all__ = ["MAX_FIELD", "OneLineLogger", "RateLimited", "escape"]

MAX_FIELD = 256  # characters of one escaped value kept in a log line

# C0 controls, DEL, C1 controls, and the format characters that reorder or break lines on a terminal.
# Lone surrogates stand for undecodable bytes (surrogateescape) or broken text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
        code -= 0xDC00
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(value: object, limit: int = MAX_FIELD) -> str:
    """``value`` as one safe line (bytes decoded as UTF-8 with ``\\xNN`` for bad bytes), cut at ``limit``."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "surrogateescape")
    else:
        text = str(value)
    cut = len(text) - limit if limit and len(text) > limit else 0
    if cut:
        text = text[:limit]
    text = _UNSAFE.sub(_replace, text.replace("\\", "\\\\")) if _needs_escape(text) else text
    return f"{text}...(+{cut} chars)" if cut else text


def _needs_escape(text: str) -> bool:
    return "\\" in text or _UNSAFE.search(text) is not None


class RateLimited:
    """At most one log line per ``interval`` seconds (per key); the others are counted and reported.

    ``log(key, msg, *args)`` logs ``msg % args`` (callers escape wire values
    with :func:`escape`); when earlier calls for the key were suppressed, the
    line ends with ``(N more suppressed)``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        level: int = logging.WARNING,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.level = level
        self.clock = clock
        self.max_keys = max_keys
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def suppressed(self, key: str = "") -> int:
        return self._suppressed.get(key, 0)

    def allow(self, key: str = "") -> tuple[bool, int]:
        """``(log now?, how many were suppressed before)``; counts the call when it is suppressed."""
        now = self.clock()
        due = self._next.get(key)
        if due is not None and now < due:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if due is None and len(self._next) >= self.max_keys:
            self._forget_expired(now)
        self._next[key] = now + self.interval
        return True, self._suppressed.pop(key, 0)

    def log(self, key: str, msg: str, *args: object, level: int | None = None) -> bool:
        """Log ``msg % args`` unless rate-limited; True when it was logged."""
        emit, suppressed = self.allow(key)
        if emit:
            if suppressed:
                msg = f"{msg} (%d more suppressed)"
                args = (*args, suppressed)
            self.logger.log(self.level if level is None else level, msg, *args)
        return emit

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, due in self._next.items() if due <= now]:
            del self._next[key]
        if len(self._next) >= self.max_keys:  # still full: forget everything rather than grow
            self._next.clear()


class OneLineLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger to hand to a library that logs bad input loudly (aiohttp's server ``logger=``).

    Every record becomes one escaped line without traceback: a record with
    ``exc_info`` becomes ``"<message>: <ExceptionType>: <text>"``. Records
    above ``level`` are lowered to it (WARNING by default: a peer's bad
    input is not our error). At most one line per ``interval`` per message
    template passes; the next one says how many were dropped. Each instance
    has its own rate limit.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        level: int = logging.WARNING,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, {})
        self.level = level
        self._limit = RateLimited(logger, interval, level, clock=clock)

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if not self.logger.isEnabledFor(min(level, self.level)):
            return
        emit, suppressed = self._limit.allow(str(msg))
        if not emit:
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(map(str, (msg, *args)))
        text = escape(text, 1024)
        exc_info = kwargs.get("exc_info")
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if exc_info is True:
            exc = sys.exc_info()[1]
        elif isinstance(exc_info, tuple) and len(exc_info) == 3:
            exc = exc_info[1]
        if exc is not None:
            text = f"{text}: {type(exc).__name__}: {escape(exc)}"
        if suppressed:
            text = f"{text} ({suppressed} more suppressed)"
        self.logger.log(min(level, self.level), "%s", text)
