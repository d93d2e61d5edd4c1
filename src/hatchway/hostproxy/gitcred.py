"""Git credential forwarding on the host: git's credential format, and git run so that no repository is read.

Upstream ran ``git credential fill`` in the daemon's inherited working
directory (often the project, writable from the container) with the daemon's
environment and no timeout, so a repository-local ``credential.helper = !cmd``
ran on the host (defect 6). Here git runs in an empty directory of the state
dir, with ``GIT_CEILING_DIRECTORIES`` set to it (no discovery upward), an
explicit environment (no ``GIT_DIR``/``GIT_*`` from the daemon's), no prompts,
and a timeout.
"""

from __future__ import annotations

import os

import msgspec

from .subproc import run_bounded

__all__ = ["ACTIONS", "GitCredentialRunner", "GitResult", "format_input", "parse_output"]

ACTIONS = {"get": "fill", "store": "approve", "erase": "reject"}
FIELDS = ("protocol", "host", "username", "password")
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR",
              "DBUS_SESSION_BUS_ADDRESS", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_SYSTEM",
              "GNUPGHOME", "PASSWORD_STORE_DIR", "GH_CONFIG_DIR")


def _clean(value: str) -> str:
    return value.replace("\r", "").replace("\n", "").replace("\x00", "")


def format_input(protocol: str, host: str, path: str = "", username: str = "", password: str = "") -> bytes:
    lines = [f"protocol={_clean(protocol)}", f"host={_clean(host)}"]
    for key, value in (("path", path), ("username", username), ("password", password)):
        if value:
            lines.append(f"{key}={_clean(value)}")
    return ("\n".join(lines) + "\n\n").encode()


def parse_output(output: bytes | str) -> dict[str, str]:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in FIELDS:
            found[key] = value
    return found


class GitResult(msgspec.Struct, frozen=True):
    ok: bool
    error: str = ""
    fields: dict[str, str] = {}


class GitCredentialRunner:
    def __init__(self, neutral_dir: str, *, git: str = "git", timeout: float = 10.0,
                 environ: dict[str, str] | None = None) -> None:
        self.neutral_dir = neutral_dir
        self.git = git
        self.timeout = timeout
        source = os.environ if environ is None else environ
        self.env = {k: source[k] for k in PASSED_ENV if k in source}
        self.env.update({
            "GIT_CEILING_DIRECTORIES": neutral_dir,
            "GIT_TERMINAL_PROMPT": "0",
            "GCM_INTERACTIVE": "never",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
        })
        self.env.setdefault("PATH", os.defpath)

    def prepare(self) -> None:
        os.makedirs(self.neutral_dir, mode=0o700, exist_ok=True)
        if os.listdir(self.neutral_dir):
            raise RuntimeError(f"the neutral directory {self.neutral_dir} is not empty")

    async def run(self, action: str, protocol: str, host: str, path: str = "", username: str = "",
                  password: str = "") -> GitResult:
        self.prepare()
        argv = [self.git, "credential", ACTIONS[action]]
        stdin = format_input(protocol, host, path, username, password)
        try:
            done = await run_bounded(argv, stdin=stdin, cwd=self.neutral_dir, env=self.env, timeout=self.timeout)
        except OSError as exc:
            return GitResult(False, f"credential helper failed: {exc.strerror or exc}")
        if done.returncode is None:
            return GitResult(False, f"credential helper failed: timed out after {self.timeout:g}s")
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip() or (done.failure or "")
            return GitResult(False, f"credential helper failed: {detail}")
        return GitResult(True, fields=parse_output(done.stdout) if action == "get" else {})
