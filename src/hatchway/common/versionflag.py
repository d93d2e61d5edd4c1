"""A program's version line, and the command line that asks only for it, without argparse.

``--version`` must start as fast as the program it replaces (Go and Rust print
it in a few ms), so ``hatchway-<prog> --version`` answers before the CLI
builder (argparse, re, enum, gettext: ~15 ms) is imported. Each program's
package declares what its parser declares: ``VERSION_FLAGS`` (the parser's
version flags), ``VERSION_COMMANDS`` (sub-commands that print the same line,
such as LinkSocks' ``version``) and ``version_line()``; the program's
``args.py`` builds its parser from the same names, so both paths print the same
bytes (tests/common/test_versionflag.py checks each program). Only a command
line of exactly one of those words takes the short path; anything else goes
through the parser. Stdlib only: ``os`` and ``sys``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["answer_version", "asks_only_version", "go_platform", "go_version_string", "version_string"]

_GO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386",
            "i686": "386", "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}


def go_platform() -> str:
    """``GOOS/GOARCH`` of this process (from uname: no executable scan, unlike platform.platform())."""
    machine = os.uname().machine
    return f"{sys.platform}/{_GO_ARCH.get(machine, machine)}"


def version_string(prog: str, version: str) -> str:
    """clap's ``--version`` line: ``PROG VERSION``."""
    return f"{prog} {version}"


def go_version_string(prog: str, version: str) -> str:
    """The Go programs' version line: ``PROG version vVERSION linux/amd64``."""
    return f"{prog} version v{version.removeprefix('v')} {go_platform()}"


def asks_only_version(argv: Sequence[str], words: Sequence[str]) -> bool:
    """True when ``argv`` (without the program name) is exactly one of ``words``."""
    return len(argv) == 1 and argv[0] in words


def answer_version(argv: Sequence[str], words: Sequence[str], line: Callable[[], str]) -> bool:
    """Print ``line()`` and return True when ``argv`` asks only for the version; else False."""
    if not asks_only_version(argv, words):
        return False
    sys.stdout.write(line() + "\n")
    sys.stdout.flush()
    return True
