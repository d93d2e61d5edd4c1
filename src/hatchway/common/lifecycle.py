"""Process lifecycle shared by every program: loop, signals, logging, readiness.

``run(main)`` is the one entry point a program's ``cli.main`` calls: it installs
uvloop when present, runs ``main()`` as a task, turns the first SIGTERM/SIGINT
into a cancellation of that task (graceful shutdown, bounded by a deadline),
and maps the outcome to an exit code.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import sys
import time
from typing import Any, Awaitable, Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
SHUTDOWN_DEADLINE = 10.0

log = logging.getLogger("hatchway")


class Fatal(Exception):
    """An error that ends the program with a message and an exit code, no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (and not disabled), else asyncio's."""
    if os.environ.get("HATCHWAY_LOOP", "") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Callable[[], Awaitable[Any]], *, deadline: float = SHUTDOWN_DEADLINE) -> int:
    """Run ``main()`` until it returns, fails, or a signal asks it to stop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        try:
            return runner.run(_supervise(main, deadline)) or EXIT_OK
        except Fatal as exc:
            log.error("%s", exc)
            return exc.code
        except KeyboardInterrupt:
            return EXIT_OK


async def _supervise(main: Callable[[], Awaitable[Any]], deadline: float) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        if stopping:  # a second signal: stop now
            os._exit(128 + signum)
        stopping = True
        log.info("received %s, shutting down", signal.Signals(signum).name)
        task.cancel()
        loop.call_later(deadline, _expire, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        result = await task
    except asyncio.CancelledError:
        if not stopping:
            raise
        return EXIT_OK
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return int(result or EXIT_OK)


def _expire(signum: int) -> None:
    log.error("shutdown deadline passed, exiting")
    os._exit(128 + signum)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}
logging.addLevelName(5, "TRACE")


def level_from_name(name: str) -> int:
    """Map a level name (or a RUST_LOG-style ``target=level,...`` directive) to a level."""
    text = name.strip().lower()
    if "," in text or "=" in text:
        # RUST_LOG directives: take the most verbose level named anywhere.
        found = [LEVELS.get(part.split("=")[-1].strip(), logging.INFO) for part in text.split(",") if part]
        return min(found) if found else logging.INFO
    return LEVELS.get(text, logging.INFO)


def setup_logging(level: int | str = logging.INFO, fmt: str | None = None, stream: Any = None) -> None:
    """Log to stderr as text, or as JSON lines when ``fmt`` (or $HATCHWAY_LOG_FORMAT) is ``json``."""
    if isinstance(level, str):
        level = level_from_name(level)
    fmt = fmt or os.environ.get("HATCHWAY_LOG_FORMAT", "text")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def announce_ready(what: str) -> None:
    """One readiness line on stderr, for supervisors and tests: ``READY <what>``."""
    print(f"READY {what}", file=sys.stderr, flush=True)


class Service:
    """Base of every embeddable server and client: ``async with X(...)`` is ``start()`` then ``close()``.

    Subclasses define ``start()`` (plain or async) and ``async close()``.
    """

    async def __aenter__(self) -> Any:
        started = self.start()  # type: ignore[attr-defined]
        if inspect.isawaitable(started):
            await started
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()  # type: ignore[attr-defined]
