"""The one argparse builder every hatchway program uses.

Stdlib only: each program's ``args.py`` imports this while argparse-manpage
execs it by path in an environment without hatchway's dependencies.

It knows the flag styles of the upstream tools hatchway replaces:

* clap style (Rust): ``-r/--runner-url``, env fallbacks named in the table;
* cobra/pflag style (Go): ``-t/--token``, counted ``-dd``;
* Go ``flag`` style: single-dash long flags such as ``-authkey`` that also
  accept ``--authkey`` and ``-authkey=value``.

An env fallback is resolved when the parser is built, so ``--help`` and the
man page show it as ``(env: NAME)`` and the command line still wins.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Sequence

__all__ = [
    "ParserBuilder",
    "parse_bool",
    "parse_duration",
    "version_string",
]

_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off", ""}


def parse_bool(text: str) -> bool:
    """Parse a boolean the way Go's strconv.ParseBool and clap's env parsing do."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value: {text!r}")


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse a Go duration ("30s", "1m30s", "500ms") or plain seconds into seconds."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    total, number, index = 0.0, "", 0
    if not value:
        raise argparse.ArgumentTypeError("empty duration")
    while index < len(value):
        char = value[index]
        if char.isdigit() or char == ".":
            number += char
            index += 1
            continue
        unit = next((u for u in ("ns", "us", "µs", "ms", "s", "m", "h") if value.startswith(u, index)), None)
        if unit is None or not number:
            raise argparse.ArgumentTypeError(f"invalid duration: {text!r}")
        total += float(number) * _DURATION_UNITS[unit]
        number, index = "", index + len(unit)
    if number:
        raise argparse.ArgumentTypeError(f"missing unit in duration: {text!r}")
    return total


def version_string(prog: str, version: str) -> str:
    return f"{prog} {version}"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


class ParserBuilder:
    """Adds options in one of the upstream styles, with env-var fallbacks.

    ``env`` names the variable that supplies the default when the flag is not
    given; its name is appended to the help text. ``environ`` is injectable
    for tests.
    """

    def __init__(self, parser: argparse.ArgumentParser, environ: dict[str, str] | None = None) -> None:
        self.parser = parser
        self.environ = os.environ if environ is None else environ

    @staticmethod
    def new_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return argparse.ArgumentParser(
            prog=prog, description=description, epilog=epilog, formatter_class=_Formatter
        )

    def sub(self, parser: argparse.ArgumentParser) -> "ParserBuilder":
        return ParserBuilder(parser, self.environ)

    def _env_default(self, env: str | None, default: Any, convert: Callable[[str], Any] | None) -> Any:
        if env is None or env not in self.environ:
            return default
        raw = self.environ[env]
        if convert is None:
            return raw
        try:
            return convert(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            self.parser.error(f"invalid value in ${env}: {raw!r} ({exc})")

    @staticmethod
    def _help(text: str, env: str | None, default: Any, show_default: bool) -> str:
        parts = [text]
        if show_default and default not in (None, False, ""):
            parts.append(f"[default: {default}]")
        if env:
            parts.append(f"(env: {env})")
        return " ".join(parts)

    def option(
        self,
        *flags: str,
        env: str | None = None,
        default: Any = None,
        type: Callable[[str], Any] | None = None,
        help: str = "",
        required: bool = False,
        show_default: bool = True,
        **kwargs: Any,
    ) -> argparse.Action:
        """A value option (``-p/--port 80``)."""
        value = self._env_default(env, default, type)
        needs_value = required and value is None
        return self.parser.add_argument(
            *flags,
            default=value,
            type=type,
            required=needs_value,
            help=self._help(help, env, default, show_default),
            **kwargs,
        )

    def flag(self, *flags: str, env: str | None = None, help: str = "", **kwargs: Any) -> argparse.Action:
        """A boolean switch; its env var takes Go/clap boolean spellings."""
        value = self._env_default(env, False, parse_bool)
        return self.parser.add_argument(
            *flags, action="store_true", default=value, help=self._help(help, env, None, False), **kwargs
        )

    def count(self, *flags: str, help: str = "", **kwargs: Any) -> argparse.Action:
        """A counted flag (``-d``, ``-dd``)."""
        return self.parser.add_argument(*flags, action="count", default=0, help=help, **kwargs)

    def go_option(self, name: str, **kwargs: Any) -> argparse.Action:
        """A Go ``flag``-package option: accepts ``-name``, ``--name`` and ``-name=value``."""
        return self.option(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)

    def go_flag(self, name: str, **kwargs: Any) -> argparse.Action:
        return self.flag(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)

    def version(self, prog: str, version: str, flags: Sequence[str] = ("-V", "--version")) -> argparse.Action:
        return self.parser.add_argument(
            *flags, action="version", version=version_string(prog, version), help="print version and exit"
        )
