"""The shared core every hatchway program is built on.

Modules here import only the stdlib at package level, so that each program's
``args.py`` (exec'd by path by argparse-manpage) can reach ``cliargs``.
"""
