"""A program's version line, and the command line that asks only for it, without argparse.

``--version`` must start as fast as the program it replaces (Go and Rust print
it in a few ms), so ``hatchway-<prog> --version`` answers before the CLI
builder (argparse, re, enum, gettext: ~15 ms) is imported. Each program's
package declares one :class:`Version` (``VERSION``); the program's ``args.py``
builds its parser's version flag from it, so both paths print the same bytes
(tests/common/test_versionflag.py checks each program). Only a command line of
exactly one of its words takes the short path; anything else goes through the
parser. Stdlib only: ``os`` and ``sys``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Version", "go_platform", "go_version_string", "version_string"]

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


class Version:
    """A program's version line and the command-line words that ask only for it.

    ``flags`` are the parser's version flags (``args.py`` builds them from here); ``commands`` are
    sub-commands that print the same line (LinkSocks' ``version``); ``go`` picks Go's line
    (``PROG version vX linux/amd64``) over clap's (``PROG X``).
    """

    __slots__ = ("commands", "flags", "go", "prog")

    def __init__(self, prog: str, flags: tuple[str, ...] = ("-V", "--version"), commands: tuple[str, ...] = (),
                 *, go: bool = False) -> None:
        self.prog = prog
        self.flags = flags
        self.commands = commands
        self.go = go

    def line(self) -> str:
        from hatchway import __version__

        return (go_version_string if self.go else version_string)(self.prog, __version__)

    def asked(self, argv: Sequence[str]) -> bool:
        """True when ``argv`` (without the program name) is exactly one of the version words."""
        return len(argv) == 1 and (argv[0] in self.flags or argv[0] in self.commands)

    def answer(self, argv: Sequence[str]) -> bool:
        """Print the version line and return True when ``argv`` asks only for it; else False."""
        if not self.asked(argv):
            return False
        sys.stdout.write(self.line() + "\n")
        sys.stdout.flush()
        return True
