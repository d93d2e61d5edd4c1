"""The runner's registry of tunnel links by container id, sans-I/O (issue #6 items 1 and 2; D4).

* Every registration of a container id is kept, newest last; the current one
  is the newest that is still alive. When it goes away the id goes back to the
  newest registration still alive, so the real container stays reachable.
* A live registration is never replaced by another peer's: when the runner
  has a token, a new registration is refused while a live one holds the id,
  unless it presents the token (the real client reconnecting; a token holder
  may also displace a tokenless registration). Tokenless registrations
  (admitted only under the compatibility switch) can never replace a live
  one. A runner without a token keeps upstream's last-registration-wins
  (anyone may register; there is nothing to compare).
* Unregistering is by identity (D4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Registrant(Protocol):
    """What the registry needs to know about a tunnel link."""

    @property
    def container_id(self) -> str: ...
    @property
    def credential(self) -> str | None: ...
    @property
    def live(self) -> bool: ...


R = TypeVar("R", bound=Registrant)


class TunnelRegistry(Generic[R]):
    """container_id -> its tunnel links; see the module docstring for the rules.

    ``on_register(container_id)`` is called after every accepted registration
    (the runner wakes its waiters there).
    """

    def __init__(self, *, guarded: bool = False, on_register: Callable[[str], None] | None = None) -> None:
        self.guarded = guarded  # the runner has a token: registrations need matching credentials to replace
        self.on_register = on_register
        self._links: dict[str, list[R]] = {}

    def register(self, link: R) -> bool:
        """Make ``link`` current for its container id; False when a live registration may not be replaced."""
        current = self.get(link.container_id)
        if self.guarded and current is not None:
            if link.credential is None or current.credential not in (None, link.credential):
                return False
        self._links.setdefault(link.container_id, []).append(link)
        if self.on_register is not None:
            self.on_register(link.container_id)
        return True

    def replaces(self, link: R) -> bool:
        """Whether an earlier live registration exists for ``link``'s id (for the log line)."""
        return any(other is not link and other.live for other in self._links.get(link.container_id, ()))

    def unregister(self, link: R) -> bool:
        """Remove ``link`` (by identity, D4); the id falls back to the newest live registration left."""
        links = self._links.get(link.container_id)
        if links is None or link not in links:
            return False
        links.remove(link)
        if not links:
            del self._links[link.container_id]
        return True

    def get(self, container_id: str) -> R | None:
        """The current live tunnel link for ``container_id``, resolved at send time (D5)."""
        for link in reversed(self._links.get(container_id, ())):
            if link.live:
                return link
        return None

    def links(self) -> list[R]:
        return [link for links in self._links.values() for link in links]
