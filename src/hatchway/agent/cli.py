"""``hatchway-agent`` (also installable as ``sockerless-agent``): parse, set up logging, run the agent."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import VERSION
from .args import HEALTH_ENV, TOKEN_ENV, build_parser, main_argv

if TYPE_CHECKING:
    from .health import HealthConfig

__all__ = ["main"]

_LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL, "panic": logging.CRITICAL,
           "disabled": logging.CRITICAL + 10}


def log_level(name: str) -> int:
    """zerolog's level names; anything unparsable means info (upstream)."""
    return _LEVELS.get(name.strip().lower(), logging.INFO)


class RedactFilter(logging.Filter):
    """Replaces the token wherever it would appear in a log line."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.secret in text:
            record.msg = text.replace(self.secret, "REDACTED")
            record.args = None
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and self.secret in value and key not in ("msg", "message"):
                setattr(record, key, value.replace(self.secret, "REDACTED"))
        return True


def become_subreaper() -> bool:
    """Orphans of our children come to us (when not PID 1), so the one reaper reaps them.

    :mod:`hatchway.common.subreaper` works in the static executable too (its built-in
    ``_hatchway_sys``; no ctypes there).
    """
    if os.getpid() == 1:
        return False
    from hatchway.common.subreaper import set_child_subreaper

    try:
        return set_child_subreaper()
    except OSError as exc:
        logging.getLogger("hatchway.agent").debug("not a child subreaper: %s", exc)
        return False


def health_config(args: Any) -> HealthConfig | None:
    import msgspec

    from hatchway.common.lifecycle import Fatal

    from .health import SECOND, HealthConfig

    config = HealthConfig()
    if args.healthcheck:
        try:
            config = msgspec.json.decode(args.healthcheck.encode(), type=HealthConfig)
        except msgspec.DecodeError as exc:
            raise Fatal(f"invalid {HEALTH_ENV} / -healthcheck: {exc}") from None
    if args.health_cmd:
        config.Test = ["CMD-SHELL", args.health_cmd]
    for name, field in (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                        ("health_start_period", "StartPeriod"), ("health_start_interval", "StartInterval")):
        value = getattr(args, name)
        if value:
            setattr(config, field, int(value * SECOND))
    if args.health_retries:
        config.Retries = args.health_retries
    return config if config.enabled else None


def main(argv: Sequence[str] | None = None) -> int:
    if VERSION.answer(sys.argv[1:] if argv is None else argv):
        return 0
    gc.disable()  # start-up makes only long-lived objects: no collections while importing (enabled in run())
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from hatchway.common import lifecycle

    lifecycle.setup_logging(log_level(args.log_level), args.log_format)
    token = os.environ.get(TOKEN_ENV, "")
    if token:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactFilter(token))
    from hatchway.common.reaper import Reaper

    from .service import Agent, AgentConfig

    try:
        health = health_config(args)
    except lifecycle.Fatal as exc:
        logging.getLogger("hatchway.agent").error("%s", exc)
        return exc.code
    environ = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    config = AgentConfig(addr=args.addr, callback=args.callback, keep_alive=args.keep_alive,
                         argv=main_argv(args) if args.keep_alive else [], tty=args.tty, token=token,
                         health=health, reverse_retries=args.reverse_retries, environ=environ)
    reaper = Reaper()
    become_subreaper()
    agent = Agent(config, reaper=reaper)

    async def run() -> int:
        await agent.start()
        # Everything made so far lives as long as the process: keep it out of every later collection, so
        # a full collection (7 ms over the ~40k start-up objects) never lands on an exec's round trip.
        gc.freeze()
        gc.enable()
        try:
            if agent.server is not None:
                host, port = agent.address
                lifecycle.announce_ready(f"agent {host or '0.0.0.0'}:{port}", addr=f"{host}:{port}")
            return await agent.wait()
        finally:
            await agent.aclose()

    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                 signal.SIGWINCH)
    return lifecycle.run(run, on_signal=agent.forward_signal, signals=forwarded, reaper=reaper)
