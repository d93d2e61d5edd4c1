"""The state directory: ``$CLAWKER_STATE_DIR``, ``$XDG_STATE_HOME/clawker``, ``~/.local/state/clawker``."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["StatePaths", "state_dir"]


def state_dir(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("CLAWKER_STATE_DIR"):
        return env["CLAWKER_STATE_DIR"]
    if env.get("XDG_STATE_HOME"):
        return os.path.join(env["XDG_STATE_HOME"], "clawker")
    if sys.platform == "win32" and env.get("APPDATA"):
        return os.path.join(env["APPDATA"], "clawker", "state")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "clawker")


class StatePaths:
    def __init__(self, root: str | None = None) -> None:
        self.root = root or state_dir()

    def _sub(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    @property
    def pid_file(self) -> str:
        return os.path.join(self._sub("pids"), "hostproxy.pid")

    @property
    def lock_file(self) -> str:
        return os.path.join(self._sub("pids"), "hostproxy.lock")

    @property
    def log_file(self) -> str:
        return os.path.join(self._sub("logs"), "hostproxy.log")

    @property
    def tokens_file(self) -> str:
        return os.path.join(self._sub("hostproxy"), "tokens.json")

    @property
    def neutral_dir(self) -> str:
        return os.path.join(self._sub("hostproxy"), "git-neutral")
