"""Process lifecycle shared by every program: loop, signals, PID-1 reaping, logging, readiness.

``run(main)`` is the one entry point a program's ``cli.main`` calls: it installs
uvloop when present, runs ``main()`` as a task, turns the first SIGTERM/SIGINT
into a cancellation of that task (graceful shutdown, bounded by a deadline; a
``on_signal`` hook may take the signal over instead), reaps orphans when the
process is PID 1 (:mod:`.reaper`), and maps the outcome to an exit code.

Importing this module imports no asyncio (``--help`` and ``--version`` stay free
of networking modules); ``run`` imports it when it starts the loop.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import asyncio

    from .reaper import Reaper

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "SHUTDOWN_DEADLINE",
    "Fatal",
    "JsonFormatter",
    "Service",
    "SignalHook",
    "TextFormatter",
    "announce_ready",
    "level_from_name",
    "loop_factory",
    "run",
    "run_service",
    "setup_logging",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
SHUTDOWN_DEADLINE = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("hatchway")

SignalHook = Callable[[int], bool]
"""Called with the signal number of each stop signal; True means "handled, keep running"
(e.g. the agent forwards it to its main process and exits when that process does)."""


class Fatal(Exception):
    """An error that ends the program with a message and an exit code, no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when it is installed (and not disabled with HATCHWAY_LOOP=asyncio), else asyncio's."""
    import asyncio

    if os.environ.get("HATCHWAY_LOOP", "") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(
    main: Callable[[], Awaitable[Any]],
    *,
    deadline: float = SHUTDOWN_DEADLINE,
    on_signal: SignalHook | None = None,
    signals: Iterable[int] = STOP_SIGNALS,
    reaper: Reaper | None = None,
) -> int:
    """Run ``main()`` until it returns, fails, or a signal asks it to stop; return the exit code.

    * The first of ``signals`` goes to ``on_signal`` when given; unless it returns True, ``main`` is
      cancelled (graceful shutdown, exit 0). A second signal, or ``deadline`` seconds without the
      shutdown finishing, exits at once with 128+N.
    * When the process is PID 1 (or a ``reaper`` is given), every child that exits is reaped: a child
      registered with the reaper gets its status, any other (an orphan) is discarded.
    * :class:`Fatal` ends with its message (one line) and code.
    """
    import asyncio

    if reaper is None and os.getpid() == 1:
        from .reaper import Reaper

        reaper = Reaper()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        try:
            return runner.run(_supervise(main, deadline, on_signal, tuple(signals), reaper)) or EXIT_OK
        except Fatal as exc:
            log.error("%s", exc)
            return exc.code
        except KeyboardInterrupt:
            return EXIT_OK


async def _supervise(main: Callable[[], Awaitable[Any]], deadline: float, on_signal: SignalHook | None,
                     signals: tuple[int, ...], reaper: Reaper | None) -> int:
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()  # main runs in this task: nothing is started that could outlive it
    assert task is not None
    stopping = False

    def stop(signum: int) -> None:
        nonlocal stopping
        if on_signal is not None and not stopping and on_signal(signum):
            return
        if stopping:  # a second signal: stop now
            os._exit(128 + signum)
        stopping = True
        log.info("received %s, shutting down", signal.Signals(signum).name)
        task.cancel()
        loop.call_later(deadline, _expire, signum)

    for signum in signals:
        loop.add_signal_handler(signum, stop, signum)
    if reaper is not None:
        reaper.install(loop)
    try:
        result = await main()
    except asyncio.CancelledError:
        if not stopping:
            raise
        return EXIT_OK
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if reaper is not None:
            reaper.uninstall(loop)
    return int(result or EXIT_OK)


def _expire(signum: int) -> None:
    log.error("shutdown deadline passed, exiting")
    os._exit(128 + signum)


# --- logging -------------------------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The values of a record: ``extra={...}`` keys, and the %-arguments of the message."""
    fields = {key: _json_safe(value) for key, value in vars(record).items()
              if key not in _RECORD_FIELDS and not key.startswith("_")}
    if isinstance(record.args, dict):
        fields.update({str(key): _json_safe(value) for key, value in record.args.items()})
    elif record.args:
        fields["args"] = _json_safe(record.args)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (formatted), template, then one field per value."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.args:
            entry["template"] = str(record.msg)
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        import json  # only with --log-format json: a text-logging process never loads it

        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


def _utc(seconds: float | None) -> time.struct_time:
    return time.gmtime(seconds)


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 INFO name: message`` in UTC (wire values are escaped by their callers: logsafe)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.converter = _utc


LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,  # zerolog's names (the Go agent's -log-level)
    "panic": logging.CRITICAL,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
    "disabled": logging.CRITICAL + 10,
    "5": 5,
    "4": logging.DEBUG,
    "3": logging.INFO,
    "2": logging.WARNING,
    "1": logging.ERROR,
    "0": logging.CRITICAL + 10,
}
logging.addLevelName(5, "TRACE")


def level_from_name(name: str) -> int:
    """The level of a tracing filter (``DEBUG``, ``warning``, ``info,tunnel=debug``, ``RUST_LOG`` values).

    Any case; directives are comma-separated ``level`` or ``target=level``; the most verbose level named
    anywhere applies to the whole program; a directive that names no level is ignored (tracing ignores
    directives it cannot parse); nothing usable means info.
    """
    found = []
    for part in name.split(","):
        level = part.rsplit("=", 1)[-1].strip().lower() if "=" in part else part.strip().lower()
        if level in LEVELS:
            found.append(LEVELS[level])
    return min(found) if found else logging.INFO


_log_format: str | None = None  # set by the first setup_logging()


def setup_logging(level: int | str = logging.INFO, fmt: str | None = None, stream: TextIO | None = None) -> None:
    """Log to stderr as text, or as JSON lines for ``fmt="json"`` (any case).

    Without ``fmt``, the format set by an earlier call stays (so a sub-command that calls this again
    keeps the command line's ``--log-format``); the first call falls back to $HATCHWAY_LOG_FORMAT.
    """
    global _log_format
    if isinstance(level, str):
        level = level_from_name(level)
    if fmt is None:
        fmt = _log_format or os.environ.get("HATCHWAY_LOG_FORMAT", "text")
    _log_format = "json" if fmt.strip().lower() == "json" else "text"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if _log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def announce_ready(what: str, **fields: Any) -> None:
    """One readiness line on stderr, for supervisors and tests: ``READY <what>``.

    Under ``--log-format json`` it is a JSON object with ``"ready": true`` and ``msg`` ``READY <what>``.
    """
    if _log_format == "json":
        import json

        entry = {"ts": round(time.time(), 6), "level": "info", "logger": "hatchway", "msg": f"READY {what}",
                 "ready": True, **{key: _json_safe(value) for key, value in fields.items()}}
        print(json.dumps(entry, separators=(",", ":"), ensure_ascii=False), file=sys.stderr, flush=True)
        return
    print(f"READY {what}", file=sys.stderr, flush=True)


# --- embeddable services -------------------------------------------------------------------------------------


class Service(ABC):
    """Base of every embeddable server and client: ``async with X(...)`` is ``await start()``, then ``aclose()``.

    Subclasses define ``async start()`` and ``async aclose()``; ``close()`` is the same as ``aclose()``.
    """

    @abstractmethod
    async def start(self) -> object:
        """Start serving (bind, connect); return when started."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop and release everything; safe to call twice."""

    async def close(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> Any:
        started: object = self.start()
        if isinstance(started, Awaitable):  # a subclass still on a plain start() returns None
            await started
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def run_service(
    service: Service,
    ready: Callable[[], str],
    *,
    start_failed: Callable[[Exception], int],
    start_errors: tuple[type[Exception], ...] = (OSError,),
    started: Callable[[], None] | None = None,
    until: Callable[[], Awaitable[object]] | None = None,
    ended: int = EXIT_OK,
    ready_fields: Callable[[], dict[str, Any]] | None = None,
) -> int:
    """The body of a serving command: start, announce READY, wait, close; returns the exit code.

    * ``service.start()`` raising one of ``start_errors`` goes to ``start_failed``, which returns the exit
      code or raises :class:`Fatal`;
    * then ``READY <ready()>`` (:func:`announce_ready`, with ``ready_fields()`` as its JSON fields) and
      ``started()`` (e.g. the "listening on" line);
    * then it waits for ``until()`` (default: until cancelled by a stop signal) and returns ``ended``;
    * ``service.aclose()`` runs however the wait ends.
    """
    import asyncio

    try:
        await service.start()
    except start_errors as exc:
        return start_failed(exc)
    try:
        announce_ready(ready(), **(ready_fields() if ready_fields is not None else {}))
        if started is not None:
            started()
        if until is None:
            await asyncio.Event().wait()
        else:
            await until()
        return ended
    finally:
        await service.aclose()
