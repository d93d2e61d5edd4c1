"""Per-container capability tokens (spec 12.2 item 1).

The host mints a token per container (``hatchway-hostproxy token``) into the
tokens file ``<state>/hostproxy/tokens.json`` (mode 0600) and hands it to the
container (a read-only mounted file, or an environment variable). The daemon
looks tokens up by their SHA-256 digest (no early exit on a prefix), reloads
the file when it changed, and revokes every token of a container on its
``die``/``destroy`` event; a revoked container never comes back on reload.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator

import msgspec

__all__ = ["Grant", "TokenFile", "TokenRegistry", "mint_token"]

TOKEN_BYTES = 32


class Grant(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a token lets its container do."""

    token: str
    container: str
    project: str = ""
    git_hosts: list[str] = []  # the project's remotes (plus explicit config)


class TokenFile(msgspec.Struct, omit_defaults=True):
    tokens: list[Grant] = []


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenRegistry:
    """Token -> :class:`Grant`, loaded from the tokens file and kept in memory."""

    def __init__(self, path: str | None = None, grants: Iterable[Grant] = ()) -> None:
        self.path = path
        self._by_digest: dict[bytes, Grant] = {}
        self._revoked: set[str] = set()
        self._stamp: tuple[int, int] | None = None
        for grant in grants:
            self.add(grant)
        self.reload()

    def add(self, grant: Grant) -> None:
        if grant.container not in self._revoked and len(grant.token) >= 32:
            self._by_digest[_digest(grant.token)] = grant

    def lookup(self, token: str | None) -> Grant | None:
        if not token:
            return None
        grant = self._by_digest.get(_digest(token))
        if grant is None and self.reload():
            grant = self._by_digest.get(_digest(token))
        return grant

    def reload(self) -> bool:
        """Read the file again if it changed; True when something was loaded."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            with open(self.path, "rb") as f:
                loaded = msgspec.json.decode(f.read(), type=TokenFile)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return False
        for grant in loaded.tokens:
            self.add(grant)
        return True

    def revoke_container(self, container_id: str) -> int:
        """Forget every token of ``container_id`` (full id or a 12+ character prefix); returns how many."""
        gone = [d for d, g in self._by_digest.items()
                if g.container == container_id or (len(g.container) >= 12 and container_id.startswith(g.container))
                or (len(container_id) >= 12 and g.container.startswith(container_id))]
        for digest in gone:
            self._revoked.add(self._by_digest.pop(digest).container)
        self._revoked.add(container_id)
        return len(gone)

    def __len__(self) -> int:
        return len(self._by_digest)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def mint_token(path: str, container: str, *, project: str = "", git_hosts: Iterable[str] = ()) -> str:
    """Add a fresh token for ``container`` to the tokens file (atomically, mode 0600); returns it."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with _locked(path):
        try:
            with open(path, "rb") as f:
                current = msgspec.json.decode(f.read(), type=TokenFile)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            current = TokenFile()
        current.tokens.append(Grant(token, container, project, sorted(set(git_hosts))))
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(current))
        os.replace(tmp, path)
    return token
