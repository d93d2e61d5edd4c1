"""The runner's registration rules without sockets (issue #6 items 1 and 2; D4)."""

from __future__ import annotations

from dataclasses import dataclass

from hatchway.tunnel.registry import TunnelRegistry


@dataclass(eq=False)
class Link:
    container_id: str
    credential: str | None
    live: bool = True


def test_without_a_token_the_last_registration_wins_and_the_id_falls_back():
    registry: TunnelRegistry[Link] = TunnelRegistry()
    first, second = Link("c", None), Link("c", None)
    assert registry.register(first) and registry.register(second)
    assert registry.get("c") is second and registry.replaces(second)
    registry.unregister(second)
    assert registry.get("c") is first  # item 2: back to the one still alive


def test_with_a_token_a_live_registration_is_replaced_only_by_the_same_credential():
    registry: TunnelRegistry[Link] = TunnelRegistry(guarded=True)
    real = Link("c", "tok")
    assert registry.register(real)
    assert not registry.register(Link("c", None))  # item 1: a tokenless peer cannot take it over
    assert not registry.register(Link("c", "other"))
    assert registry.get("c") is real
    again = Link("c", "tok")  # a reconnect of the real client
    assert registry.register(again) and registry.get("c") is again


def test_a_tokenless_registration_never_replaces_a_live_one_but_takes_a_free_id():
    registry: TunnelRegistry[Link] = TunnelRegistry(guarded=True)
    upstream = Link("c", None)
    assert registry.register(upstream)
    assert not registry.register(Link("c", None))
    upstream.live = False  # heartbeat found it dead: the id is free again
    assert registry.register(Link("c", None))


def test_unregister_is_by_identity_and_dead_links_are_never_current():
    woken: list[str] = []
    registry: TunnelRegistry[Link] = TunnelRegistry(on_register=woken.append)
    a, b = Link("c", None), Link("c", None)
    registry.register(a)
    registry.register(b)
    assert not registry.unregister(Link("c", None))
    b.live = False
    assert registry.get("c") is a
    a.live = False
    assert registry.get("c") is None
    assert woken == ["c", "c"] and len(registry.links()) == 2


def test_a_token_holder_displaces_a_tokenless_registration_but_not_the_reverse():
    registry: TunnelRegistry[Link] = TunnelRegistry(guarded=True)
    squatter = Link("c", None)
    assert registry.register(squatter)
    real = Link("c", "tok")
    assert registry.register(real) and registry.get("c") is real
    assert not registry.register(Link("c", None))
