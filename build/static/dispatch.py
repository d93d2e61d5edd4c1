"""Module ``_hatchway_exe``: what the static executable runs (build/static/main.c).

Which program runs, first match wins:
  1. the name it is called under, ``hatchway-<prog>`` (a symlink or a copy);
  2. the default program patched into the per-program file (``dist/hatchway-<prog>``),
     so the file still works renamed (``/app/entry`` in Dockerfile.scratch);
  3. the first argument (the multi-call ``hatchway``: ``hatchway <prog> ARGS...``).
The program's ``main()`` return value becomes the exit code.
"""

import sys

PROGRAMS = ("@PROGRAMS@",)  # filled in by build/static/build.py from packaging/programs.json


def _usage(out) -> None:
    out.write("usage: hatchway PROGRAM [ARGS...]\n\nprograms:\n")
    for prog in PROGRAMS:
        out.write(f"  {prog:<12} same as hatchway-{prog}\n")


def _choose(argv0: str, default: str, args: list) -> "tuple[str, list] | int":
    name = argv0.rsplit("/", 1)[-1]
    if name.startswith("hatchway-") and name[len("hatchway-"):] in PROGRAMS:
        return name[len("hatchway-"):], args
    if default and name != "hatchway":
        return default, args
    if args and args[0] in PROGRAMS:
        return args[0], args[1:]
    if args and args[0] in ("-h", "--help", "help"):
        _usage(sys.stdout)
        return 0
    if args:
        sys.stderr.write(f"hatchway: unknown program {args[0]!r}\n")
    _usage(sys.stderr)
    return 2


def main() -> int:
    argv0 = sys.orig_argv[0] if sys.orig_argv else "hatchway"
    default = str(sys._xoptions.get("hatchway.program", "") or "")
    chosen = _choose(argv0, default, list(sys.argv[1:]))
    if isinstance(chosen, int):
        return chosen
    prog, args = chosen
    sys.argv = [f"hatchway-{prog}", *args]
    # `--version` alone is answered from the program's package (hatchway.common.versionflag) before
    # its cli module (which may import logging, asyncio, ...) and argparse are imported.
    if __import__(f"hatchway.{prog}", fromlist=["VERSION"]).VERSION.answer(args):
        return 0
    module = __import__(f"hatchway.{prog}.cli", fromlist=["main"])
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
