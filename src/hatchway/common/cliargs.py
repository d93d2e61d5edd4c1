"""The one command-line builder every hatchway program uses.

Stdlib only, and no networking: each program's ``args.py`` imports this while
argparse-manpage execs it by path, and ``--help``/``--version`` must start fast.

A program picks the conventions of the upstream tool it replaces with a *style*:

* ``"cobra"`` (Go cobra/pflag, e.g. LinkSocks): ``-t v``, ``--token v``,
  ``--token=v``, ``-t=v``; booleans as ``--flag``, ``--flag=true|false``;
  a usage error (unknown flag, bad int, unknown command) is one line
  ``Error: ...`` on stderr and exit status 1; no arguments at all prints the
  help and exits 0; ``help <command>`` and ``completion bash|zsh|fish|powershell``.
* ``"goflag"`` (Go's ``flag`` package, e.g. the agent and the sidecar): every
  long flag takes one dash or two (``-addr``, ``--addr``, ``-addr=v``),
  booleans ``-keep-alive`` or ``-keep-alive=false``; parsing stops at ``--`` or
  at the first non-flag word, and the rest of argv is kept (:meth:`ParserBuilder.rest`);
  ``-h`` prints Go's ``Usage of PROG:`` text on stderr and exits 0; a usage
  error exits 2.
* ``"clap"`` (Rust clap, e.g. the tunnel client): argparse's own rules, exit 2.

In every style:

* Environment variables are read after parsing, and only for the sub-command
  that runs (an invalid ``LINKSOCKS_WEBSOCKET_PORT`` does not break ``client``,
  ``--help`` or ``--version``); the command line wins over the environment;
  an empty variable counts as unset. ``--help`` and the man page show them as
  ``(env: NAME)``.
* Go styles parse booleans with Go's ``strconv.ParseBool`` (``yes`` is an error)
  and durations with Go's ``time.ParseDuration`` (``30`` is an error, ``30s`` is not).
* The root parser carries the man page's extra sections (SYNOPSIS without
  hyphenation, ENVIRONMENT built from the options, EXIT STATUS, SIGNALS,
  LOGGING, EXAMPLES) for argparse-manpage, and ``--help`` ends with the examples.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

from hatchway.common.versionflag import go_platform, go_version_string, version_string

TYPE_CHECKING = False  # typing is not imported at run time: --help and --version start faster without it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, Literal, NoReturn, TypeAlias, TypeVar, overload

    _N = TypeVar("_N")

    Style: TypeAlias = Literal["cobra", "goflag", "clap"]

__all__ = [
    "LOG_FORMATS",
    "SIGNALS_TEXT",
    "CommandParser",
    "ParserBuilder",
    "Style",
    "go_platform",
    "go_version_string",
    "parse_bool",
    "parse_boolish",
    "parse_duration",
    "parse_go_int",
    "version_string",
]

USAGE_EXIT: dict[str, int] = {"cobra": 1, "goflag": 2, "clap": 2}
SHELLS = ("bash", "zsh", "fish", "powershell")
LOG_FORMATS = ("text", "json")

# What lifecycle.run does with signals; every program's man page says it.
SIGNALS_TEXT = (
    ("SIGTERM, SIGINT", ("graceful shutdown: stop accepting, close connections with a close frame, exit 0; "
     "a second signal, or the shutdown deadline (10 s) passing, exits at once with 128+N.")),
    ("SIGKILL", "the process ends at once; a static executable leaves no other process behind."),
    ("SIGCHLD", "as PID 1 (in a container without an init), every orphaned child is reaped."),
)

_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>", "__bool__": lambda self: False})()


# --- value parsers -----------------------------------------------------------------------------------------

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: 1 t T TRUE true True / 0 f F FALSE false False, nothing else."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


_BOOLISH_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_BOOLISH_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


def parse_boolish(text: str) -> bool:
    """clap's boolish parser (Rust programs): true/false, yes/no, on/off, 1/0, any case."""
    value = text.strip().lower()
    if value in _BOOLISH_TRUE:
        return True
    if value in _BOOLISH_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value: {text!r}")


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` ("30s", "1m30s", "500ms", "-1.5h", "0"), in seconds.

    A number without a unit is an error, as in Go (only "0" needs none).
    """
    value = text
    sign = 1.0
    if value[:1] in ("+", "-"):
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == "0":
        return 0.0
    if not value:
        raise argparse.ArgumentTypeError(f'time: invalid duration "{text}"')
    total, index = 0.0, 0
    while index < len(value):
        match = _DURATION_PART.match(value, index)
        if match is None:
            if re.fullmatch(r"[0-9]*\.?[0-9]*", value[index:]):
                raise argparse.ArgumentTypeError(f'time: missing unit in duration "{text}"')
            raise argparse.ArgumentTypeError(f'time: invalid duration "{text}"')
        number, unit = match.groups()
        if number in ("", "."):
            raise argparse.ArgumentTypeError(f'time: invalid duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        index = match.end()
    return sign * total


def parse_go_int(text: str) -> int:
    """Go's ``strconv.ParseInt(s, 0, 64)`` as pflag uses it: decimal, 0x.., 0o.., 0b.., leading-zero octal."""
    value = text.replace("_", "") if "_" in text[1:] else text
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", value):
            return int(value, 8)
        return int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


parse_go_int.__name__ = "int"


# --- parser --------------------------------------------------------------------------------------------------


class _EnvOption:
    __slots__ = ("convert", "default", "dest", "env", "flags")

    def __init__(self, dest: str, env: str, convert: Callable[[str], Any] | None, default: Any,
                 flags: tuple[str, ...]) -> None:
        self.dest, self.env, self.convert, self.default, self.flags = dest, env, convert, default, flags


class _Doc:
    __slots__ = ("command", "env", "flags", "help")

    def __init__(self, env: str, flags: str, command: str, help: str) -> None:
        self.env, self.flags, self.command, self.help = env, flags, command, help


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def _roff(text: str) -> str:
    """Escape text for a roff line (backslashes, hyphens as minus, a leading dot or quote)."""
    out = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in out.split("\n"))


class CommandParser(argparse.ArgumentParser):
    """argparse with the upstream's conventions (see the module docstring); build it with :class:`ParserBuilder`."""

    def __init__(self, *args: Any, style: Style = "clap", environ: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("allow_abbrev", False)  # pflag, Go flag and clap take no abbreviated long options
        if style == "goflag":
            kwargs["add_help"] = False
        self.actions: list[argparse.Action] = []  # before argparse's __init__, which adds -h
        self.style: Style = style
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.examples: list[tuple[str, str]] = []
        self.base_epilog = str(kwargs.get("epilog") or "")
        self.exit_status: list[tuple[str, str]] = []
        self.notes: list[tuple[str, str]] = []
        self.env_docs: list[_Doc] = []
        self._env_options: list[_EnvOption] = []
        self._bool_options: dict[str, str] = {}
        self._value_options: set[str] = set()
        self._required: list[tuple[str, str]] = []
        self._commands: dict[str, CommandParser] = {}
        self._command_dest: str | None = None
        self._rest_dest: str | None = None
        self._extra_man: list[dict[str, str]] = []
        self._deferred: list[Callable[[], None]] = []
        super().__init__(*args, **kwargs)
        if style == "goflag":
            self.add_argument("-h", "-help", "--help", action=_GoHelpAction, nargs=0, default=argparse.SUPPRESS,
                              help="show this help and exit")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.actions.append(action)
        return action

    def defer(self, build: Callable[[], None]) -> None:
        """Add options later: when this (sub-)command runs or is documented, not on every start."""
        self._deferred.append(build)

    def materialize(self, *, tree: bool = False) -> None:
        """Run the deferred option builders (of the sub-commands too with ``tree``)."""
        while self._deferred:
            self._deferred.pop(0)()
        if tree:
            for parser in self._commands.values():
                parser.materialize(tree=True)

    @property
    def commands(self) -> dict[str, CommandParser]:
        """The sub-commands by name (help and completion included)."""
        return dict(self._commands)

    # argparse-manpage reads the extra sections of a page from ``parser._manpage`` (a list of
    # {"heading", "content"}; its --include option fills the same list). It is the one hook that both
    # build/release (--pyfile/--function) and pyproject's build_manpages reach; tests/common/test_cliargs.py
    # renders a page with the installed argparse-manpage so an upgrade that drops the hook fails loudly.
    @property
    def _manpage(self) -> list[dict[str, str]]:
        self.materialize(tree=True)  # read by Manpage() before it walks the sub-commands' option groups
        return self.man_sections() + self._extra_man

    @_manpage.setter
    def _manpage(self, sections: list[dict[str, str]]) -> None:
        self._extra_man = list(sections)

    # -- parsing --

    if TYPE_CHECKING:  # argparse's own overloads (typing is not imported at run time)
        @overload
        def parse_known_args(self, args: Iterable[str] | None = None,
                             namespace: None = None) -> tuple[argparse.Namespace, list[str]]: ...

        @overload
        def parse_known_args(self, args: Iterable[str] | None, namespace: _N) -> tuple[_N, list[str]]: ...

        @overload
        def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        self.materialize()
        if self.style == "cobra" and not argv and self._commands:
            self.print_help()
            self.exit(0)
        rest: list[str] | None = None
        if self._rest_dest is not None:
            argv, rest = self._split_rest(argv)
        argv, explicit = self._rewrite_bools(argv)
        ns, extras = super().parse_known_args(argv, namespace)
        for dest, value in explicit.items():
            setattr(ns, dest, value)
        if self._rest_dest is not None:
            setattr(ns, self._rest_dest, rest or [])
        chosen = getattr(ns, self._command_dest, None) if self._command_dest else None
        self._resolve_env(ns, read_env=chosen is None)
        if chosen is None:
            missing = [shown for dest, shown in self._required if getattr(ns, dest, None) in (None, "")]
            if missing:
                self.error("the following arguments are required: " + ", ".join(missing))
        return ns, extras

    def _split_rest(self, argv: list[str]) -> tuple[list[str], list[str]]:
        """Go flag: parsing stops at ``--`` (dropped) or at the first non-flag word (kept)."""
        index = 0
        while index < len(argv):
            token = argv[index]
            if token == "--":
                return argv[:index], argv[index + 1:]
            if not token.startswith("-") or token == "-":
                return argv[:index], argv[index:]
            if "=" not in token and token in self._value_options:
                index += 1
            index += 1
        return argv, []

    def _rewrite_bools(self, argv: list[str]) -> tuple[list[str], dict[str, bool]]:
        """``--flag=true|false`` for this parser's booleans; the last occurrence wins."""
        out: list[str] = []
        explicit: dict[str, bool] = {}
        convert = parse_boolish if self.style == "clap" else parse_bool
        for index, token in enumerate(argv):
            if token == "--" or token in self._commands:
                return out + argv[index:], explicit
            name, eq, value = token.partition("=")
            dest = self._bool_options.get(name)
            if dest is None:
                out.append(token)
                continue
            if not eq:
                explicit[dest] = True
                out.append(token)
                continue
            try:
                explicit[dest] = convert(value)
            except argparse.ArgumentTypeError:
                self.error(f"argument {name}: invalid bool value: '{value}'")
            if explicit[dest]:
                out.append(name)
        return out, explicit

    def _resolve_env(self, ns: argparse.Namespace, *, read_env: bool) -> None:
        for option in self._env_options:
            if getattr(ns, option.dest, None) is not _UNSET:
                continue
            raw = self.environ.get(option.env, "") if read_env else ""
            if raw == "":
                setattr(ns, option.dest, option.default)
                continue
            if option.convert is None:
                setattr(ns, option.dest, raw)
                continue
            try:
                setattr(ns, option.dest, option.convert(raw))
            except (ValueError, argparse.ArgumentTypeError) as exc:
                self.error(f'invalid value "{raw}" in ${option.env} (for {"/".join(option.flags)}): {exc}')

    # -- errors and help --

    def error(self, message: str) -> NoReturn:
        if self.style == "cobra":
            self.exit(USAGE_EXIT["cobra"], f"Error: {self._go_message(message)}\n")
        if self.style == "goflag":
            self._print_message(self._go_message(message) + "\n", sys.stderr)
            self._print_message(self.format_help(), sys.stderr)
            self.exit(USAGE_EXIT["goflag"])
        super().error(message)

    def _go_message(self, message: str) -> str:
        """argparse's wording in the shape pflag / Go flag print."""
        if self.style == "goflag":
            return self._goflag_message(message)
        match = re.fullmatch(r"unrecognized arguments: (\S+).*", message, re.DOTALL)
        if match:
            word = match.group(1)
            if not word.startswith("-") or word == "-":
                return f'unknown command "{word}" for "{self.prog}"'
            if word.startswith("--"):
                return f"unknown flag: {word.split('=', 1)[0]}"
            return f"unknown shorthand flag: '{word[1:2]}' in {word}"
        match = re.fullmatch(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)", message, re.DOTALL)
        if match:
            name, value, choices = match.groups()
            if not name.startswith("-"):
                return f'unknown command "{value}" for "{self.prog}"'
            return f'invalid argument "{value}" for "{name.replace("/", ", ")}" flag: must be one of {choices}'
        match = re.fullmatch(r"argument (\S+): invalid \S+ value: '(.*)'", message, re.DOTALL)
        if match:
            name, value = match.groups()
            return f'invalid argument "{value}" for "{name.replace("/", ", ")}" flag'
        match = re.fullmatch(r"argument (\S+): (.*)", message, re.DOTALL)
        if match:
            name, rest = match.groups()
            if rest.startswith("expected one argument"):
                return f"flag needs an argument: {name.split('/')[-1]}"
            quoted = re.search(r'"(.*?)"', rest)
            value = f' "{quoted.group(1)}"' if quoted else ""
            return f'invalid argument{value} for "{name.replace("/", ", ")}" flag: {rest}'
        return message

    def _goflag_message(self, message: str) -> str:
        """Go flag's wording: ``flag provided but not defined: -x``, ``invalid value "v" for flag -x: ...``."""
        match = re.fullmatch(r"unrecognized arguments: (\S+).*", message, re.DOTALL)
        if match:
            return f"flag provided but not defined: -{match.group(1).lstrip('-').split('=', 1)[0]}"
        match = re.fullmatch(r"argument (\S+): (.*)", message, re.DOTALL)
        if not match:
            return message
        name, rest = "-" + match.group(1).split("/")[0].lstrip("-"), match.group(2)
        if rest.startswith("expected one argument"):
            return f"flag needs an argument: {name}"
        value = re.search(r"value: '(.*)'|\"(.*?)\"", rest)
        shown = next((group for group in value.groups() if group is not None), "") if value else ""
        return f'invalid value "{shown}" for flag {name}: parse error'

    def format_usage(self) -> str:
        self.materialize()
        return super().format_usage()

    def format_help(self) -> str:
        self.materialize()
        if self.style == "goflag":
            return self._go_usage()
        return super().format_help()

    def _go_usage(self) -> str:
        """Go flag's PrintDefaults: ``Usage of PROG:`` then one entry per flag, sorted by name."""
        lines = [f"Usage of {self.prog}:"]
        entries: list[tuple[str, str]] = []
        for action in self.actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or isinstance(action, _GoHelpAction):
                continue
            name = max(action.option_strings, key=len).lstrip("-")
            kind = "" if action.nargs == 0 else (action.metavar or _type_name(action.type))
            head = f"  -{name}" + (f" {kind}" if kind else "")
            head += "\t" if len(head) <= 4 else "\n    \t"
            text = (action.help or "").replace("\n", "\n    \t")
            default = self._doc_defaults.get(action.dest, action.default)
            if default not in (None, False, "", 0, 0.0, _UNSET, argparse.SUPPRESS):
                text += f' (default "{default}")' if isinstance(default, str) else f" (default {default})"
            entries.append((name, head + text))
        lines.extend(entry for _, entry in sorted(entries))
        return "\n".join(lines) + "\n"

    @property
    def _doc_defaults(self) -> dict[str, Any]:
        return {option.dest: option.default for option in self._env_options}

    def print_help(self, file: Any = None) -> None:
        if self.style == "goflag" and file is None:
            file = sys.stderr
        super().print_help(file)

    # -- documentation --

    def man_sections(self) -> list[dict[str, str]]:
        """The extra man page sections (argparse-manpage prints them after the options)."""
        self.materialize(tree=True)
        usage = self.format_usage().split(":", 1)[-1].split()
        sections = [{"heading": "synopsis",
                     "content": ".nh\n.ad l\n.B " + _roff(usage[0]) + "\n" + _roff(" ".join(usage[1:]))}]
        # COMMENTS: the epilog as written, not the examples/exit status appended for --help (they get sections).
        hint = (f"Run '{self.prog} COMMAND --help' for the options of one command." if self._commands
                else f"Run '{self.prog} --help' for a summary.")
        sections.append({"heading": "comments", "content": _roff(f"{self.base_epilog}\n\n{hint}".strip())})
        docs = self.all_env_docs()
        if docs:
            items = []
            for doc in docs:
                where = f" ({doc.command})" if doc.command else ""
                text = doc.help.rstrip(". ")
                text = f"{text[:1].upper()}{text[1:]}. " if text else ""
                items.append(f".TP\n.B {_roff(doc.env)}\n{_roff(f'{text}Same as {doc.flags}{where}.')}")
            intro = ("Each variable supplies the default of one option; the command line wins. Only the "
                     "variables of the sub-command that runs are read; an empty variable counts as unset.")
            sections.append({"heading": "environment", "content": _roff(intro) + "\n" + "\n".join(items)})
        if self.exit_status:
            sections.append({"heading": "exit status", "content": "\n".join(
                f".TP\n.B {_roff(code)}\n{_roff(text)}" for code, text in self.exit_status)})
        sections.append({"heading": "signals", "content": "\n".join(
            f".TP\n.B {_roff(name)}\n{_roff(text)}" for name, text in SIGNALS_TEXT)})
        for heading, text in self.notes:
            sections.append({"heading": heading.lower(), "content": _roff(text)})
        if self.examples:
            sections.append({"heading": "examples", "content": "\n".join(
                f".PP\n{_roff(text)}\n.PP\n.RS 4\n.nf\n\\fB{_roff(command)}\\fR\n.fi\n.RE"
                for command, text in self.examples)})
        return sections

    def all_env_docs(self) -> list[_Doc]:
        seen: dict[str, _Doc] = {}
        for doc in self.env_docs:
            seen.setdefault(doc.env + "\0" + doc.command, doc)
        for parser in self._commands.values():
            for doc in parser.all_env_docs():
                seen.setdefault(doc.env + "\0" + doc.command, doc)
        merged: dict[str, _Doc] = {}
        for doc in seen.values():  # one entry per variable; list the sub-commands that read it
            if doc.env in merged:
                old = merged[doc.env]
                commands = ", ".join(c for c in (old.command, doc.command) if c)
                merged[doc.env] = _Doc(doc.env, old.flags, commands, old.help)
            else:
                merged[doc.env] = doc
        return sorted(merged.values(), key=lambda doc: doc.env)


def _type_name(convert: Any) -> str:
    if convert in (int, parse_go_int):
        return "int"
    if convert is float:
        return "float"
    if convert is parse_duration:
        return "duration"
    return "string" if convert in (None, str) else "value"


class _GoHelpAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.print_help()
        parser.exit(0)


class _PrintAction(argparse.Action):
    """``--version`` and friends: print a fixed text on stdout and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, text: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.text = text

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(self.text, flush=True)
        parser.exit(0)


class _RootAction(argparse.Action):
    """An action that needs the root :class:`CommandParser` (passed as ``root=``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, root: CommandParser | None = None,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.root = root


class _HelpCommandAction(_RootAction):
    """``help [command]``: the command's help (or the program's) on stdout, exit 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        assert self.root is not None
        target = self.root._commands.get(values) if isinstance(values, str) else self.root
        if target is None:
            self.root.error(f"unrecognized arguments: {values}")
        target.print_help()
        parser.exit(0)


class _CompletionAction(_RootAction):
    """``completion SHELL``: the completion script on stdout, exit 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        assert self.root is not None
        from . import completion

        sys.stdout.write(completion.script(self.root, str(values)))
        sys.stdout.flush()
        parser.exit(0)


# --- builder -------------------------------------------------------------------------------------------------


class ParserBuilder:
    """Adds options in the parser's style, with environment fallbacks, sub-commands and documentation."""

    def __init__(self, parser: CommandParser, command: str = "") -> None:
        self.parser = parser
        self.command_name = command
        self._subparsers: argparse._SubParsersAction[CommandParser] | None = None

    @staticmethod
    def new_parser(prog: str, description: str, epilog: str | None = None, *, style: Style = "clap",
                   environ: Mapping[str, str] | None = None) -> CommandParser:
        return CommandParser(prog=prog, description=description, epilog=epilog, style=style, environ=environ)

    # -- options --

    @staticmethod
    def _help(text: str, env: str | None, default: Any, show_default: bool) -> str:
        parts = [text.replace("%", "%%")] if text else []
        if show_default and default not in (None, False, ""):
            parts.append(f"[default: {default}]".replace("%", "%%"))
        if env:
            parts.append(f"(env: {env})")
        return " ".join(parts)

    def _register_env(self, action: argparse.Action, env: str, convert: Callable[[str], Any] | None,
                      default: Any, text: str) -> None:
        self.parser._env_options.append(_EnvOption(action.dest, env, convert, default, tuple(action.option_strings)))
        self.parser.env_docs.append(_Doc(env, "/".join(action.option_strings), self.command_name, text))

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
        """A value option (``-p/--port 80``); ``env`` names the variable that supplies its default."""
        if type is int and self.parser.style != "clap":
            type = parse_go_int
        if env is not None and kwargs.get("action") == "append":
            raise ValueError("an appending option cannot have an environment fallback")
        action = self.parser.add_argument(
            *flags,
            default=_UNSET if env else default,
            type=type,
            help=self._help(help, env, default, show_default and self.parser.style != "goflag"),
            **kwargs,
        )
        self.parser._value_options.update(flags)
        if env:
            convert = type
            choices = kwargs.get("choices")
            if choices is not None:
                convert = _with_choices(type, choices)
            self._register_env(action, env, convert, default, help)
        if required:
            self.parser._required.append((action.dest, "/".join(flags)))
        return action

    def flag(self, *flags: str, env: str | None = None, help: str = "", **kwargs: Any) -> argparse.Action:
        """A boolean switch: ``--flag``, ``--flag=true|false``; its variable takes the style's boolean spellings."""
        action = self.parser.add_argument(
            *flags, action="store_true", default=_UNSET if env else False,
            help=self._help(help, env, None, False), **kwargs,
        )
        for name in flags:
            self.parser._bool_options[name] = action.dest
        if env:
            self._register_env(action, env, parse_boolish if self.parser.style == "clap" else parse_bool, False, help)
        return action

    def count(self, *flags: str, help: str = "", **kwargs: Any) -> argparse.Action:
        """A counted flag (``-d``, ``-dd``)."""
        return self.parser.add_argument(*flags, action="count", default=0, help=help, **kwargs)

    def go_option(self, name: str, **kwargs: Any) -> argparse.Action:
        """A Go ``flag``-package option: ``-name v``, ``--name v``, ``-name=v``."""
        return self.option(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)

    def go_flag(self, name: str, **kwargs: Any) -> argparse.Action:
        """A Go ``flag``-package boolean: ``-name``, ``--name``, ``-name=false``."""
        return self.flag(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)

    def rest(self, dest: str = "rest", help: str = "") -> None:
        """Keep everything after ``--`` or after the first non-flag word (Go flag) as ``dest``."""
        self.parser._rest_dest = dest
        if help:
            self.parser.notes.append(("arguments", help))

    def version(self, prog: str, version: str, flags: Sequence[str] = ("-V", "--version"),
                text: str | None = None) -> argparse.Action:
        """``--version``: prints ``text`` (default: clap's ``PROG VERSION``) and exits 0."""
        return self.parser.add_argument(*flags, action=_PrintAction, text=text or version_string(prog, version),
                                        help="print version and exit")

    def log_format(self, env: str = "HATCHWAY_LOG_FORMAT") -> argparse.Action:
        """``--log-format text|json`` (any case), with an environment fallback."""
        flags = ("-log-format", "--log-format") if self.parser.style == "goflag" else ("--log-format",)
        return self.option(*flags, env=env, default="text", type=str.lower, choices=LOG_FORMATS,
                           metavar="{text,json}", dest="log_format",
                           help="log lines as text, or as JSON objects with one field per value")

    # -- sub-commands --

    def command(self, name: str, help: str, description: str | None = None,
                examples: Iterable[tuple[str, str]] = (),
                build: Callable[[ParserBuilder], None] | None = None) -> ParserBuilder:
        """A sub-command; its variables are looked up only when it runs. ``build(sub_builder)``, when given,
        adds its options only when it runs or is documented (a start pays for one sub-command's parser)."""
        sub = self._subparsers_action()
        examples = list(examples)
        parser = sub.add_parser(name, help=help, description=description or help, style=self.parser.style,
                                environ=self.parser.environ, epilog=_examples_epilog(examples))
        parser.examples.extend(examples)
        self.parser._commands[name] = parser
        sub_builder = ParserBuilder(parser, f"{self.command_name} {name}".strip())
        if build is not None:
            parser.defer(lambda: build(sub_builder))
        return sub_builder

    def _subparsers_action(self) -> argparse._SubParsersAction[CommandParser]:
        if self._subparsers is None:
            self.parser._command_dest = "command"
            self._subparsers = self.parser.add_subparsers(dest="command", parser_class=CommandParser,
                                                          metavar="COMMAND")
        return self._subparsers

    def help_command(self) -> None:
        """cobra's ``help [command]``."""
        parser = self._subparsers_action().add_parser("help", help="help about any command",
                                                      description="Help about any command.",
                                                      style=self.parser.style, environ=self.parser.environ)
        parser.add_argument("topic", nargs="?", metavar="COMMAND", action=_HelpCommandAction, root=self.parser)
        self.parser._commands["help"] = parser

    def completion_command(self) -> None:
        """cobra's ``completion bash|zsh|fish|powershell``: print the shell's completion script."""
        parser = self._subparsers_action().add_parser(
            "completion", help="print a shell completion script",
            description="Print the completion script for bash, zsh, fish or powershell, e.g. "
            f"'source <({self.parser.prog} completion bash)'.",
            style=self.parser.style, environ=self.parser.environ)
        parser.add_argument("shell", choices=SHELLS, action=_CompletionAction, root=self.parser)
        self.parser._commands["completion"] = parser

    # -- documentation --

    def document(self, *, examples: Iterable[tuple[str, str]] = (), exit_status: Iterable[tuple[str, str]] = (),
                 notes: Iterable[tuple[str, str]] = ()) -> None:
        """Examples (``--help`` and man EXAMPLES), exit codes (man EXIT STATUS), extra man sections."""
        self.parser.examples.extend(examples)
        self.parser.exit_status.extend(exit_status)
        self.parser.notes.extend(notes)
        lines = [self.parser.epilog] if self.parser.epilog else []
        for heading, text in self.parser.notes:
            lines.append(f"{heading.capitalize()}:\n" + textwrap.fill(text, 98, initial_indent="  ",
                                                                       subsequent_indent="  "))
        if self.parser.exit_status:
            lines.append("Exit status:\n" + "\n".join(
                textwrap.fill(text, 98, initial_indent=f"  {code:<7}", subsequent_indent=" " * 9)
                for code, text in self.parser.exit_status))
        examples_text = _examples_epilog(self.parser.examples)
        if examples_text:
            lines.append(examples_text)
        self.parser.epilog = "\n\n".join(lines) or None


def _examples_epilog(examples: list[tuple[str, str]]) -> str | None:
    if not examples:
        return None
    return "Examples:\n" + "\n".join(f"  # {text}\n  {command}\n" for command, text in examples).rstrip()


def _with_choices(convert: Callable[[str], Any] | None, choices: Iterable[Any]) -> Callable[[str], Any]:
    allowed = list(choices)

    def checked(text: str) -> Any:
        value = convert(text) if convert is not None else text
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, allowed))}")
        return value

    return checked

