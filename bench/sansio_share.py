"""The share of a package's lines that sit in files doing I/O (the Core v2 "Done when" ratio).

A file "does I/O" when it imports asyncio, aiohttp or uvloop anywhere (module
level or inside a function); imports under ``if TYPE_CHECKING:`` do not count,
they are types only. Lines are physical lines (``wc -l``).

    python bench/sansio_share.py                 # tunnel and linksocks
    python bench/sansio_share.py tunnel common   # any packages under src/hatchway
    python bench/sansio_share.py --files tunnel  # and each file's verdict
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

IO_MODULES = ("asyncio", "aiohttp", "uvloop")
SRC = Path(__file__).resolve().parent.parent / "src" / "hatchway"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def io_imports(source: str) -> set[str]:
    """The I/O modules ``source`` imports (outside ``if TYPE_CHECKING:`` blocks)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".", 1)[0]
            if top in IO_MODULES:
                found.add(top)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def measure(package: str) -> tuple[int, int, list[tuple[str, int, set[str]]]]:
    """(all lines, lines in I/O files, per file (name, lines, I/O modules))."""
    files = []
    for path in sorted((SRC / package).rglob("*.py")):
        text = path.read_text()
        files.append((str(path.relative_to(SRC)), len(text.splitlines()), io_imports(text)))
    total = sum(lines for _, lines, _ in files)
    io = sum(lines for _, lines, mods in files if mods)
    return total, io, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=["tunnel", "linksocks"])
    parser.add_argument("--files", action="store_true", help="list every file with its lines and I/O imports")
    args = parser.parse_args(argv)
    grand_total = grand_io = 0
    print(f"{'package':<12} {'lines':>7} {'in I/O files':>13} {'share':>7}")
    for package in args.packages:
        total, io, files = measure(package)
        grand_total += total
        grand_io += io
        print(f"{package:<12} {total:>7} {io:>13} {io / total:>7.1%}")
        if args.files:
            for name, lines, mods in files:
                print(f"    {name:<40} {lines:>5}  {','.join(sorted(mods)) or '-'}")
    if len(args.packages) > 1:
        print(f"{'together':<12} {grand_total:>7} {grand_io:>13} {grand_io / grand_total:>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
