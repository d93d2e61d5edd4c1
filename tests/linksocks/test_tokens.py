"""Token registry (linksocks.md 6, 12, 13.3; acceptance cases 18-21, 36, 39 and defect 12)."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest

from hatchway.linksocks.access import AccessRule, AccessRules
from hatchway.linksocks.protocol import ADD, REMOVE
from hatchway.linksocks.tokens import (
    AUTONOMY_PORT,
    PORT_POOL,
    Authenticated,
    ConnectorToken,
    ForwardToken,
    ReverseToken,
    Role,
    TokenError,
    TokenRegistry,
    generate_token,
)

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def token_added(self, entry) -> None:
        self.events.append(("added", entry))

    def token_removed(self, entry) -> None:
        self.events.append(("removed", entry))


@pytest.fixture
def registry() -> TokenRegistry:
    return TokenRegistry()


# --------------------------------------------------------------------------- adding


def test_generated_tokens_are_16_lower_case_hex(registry):
    assert HEX16.match(generate_token())
    assert HEX16.match(registry.add_forward().token)
    assert HEX16.match(registry.add_reverse().token)
    reverse = registry.add_reverse(port=5000).token
    assert HEX16.match(registry.add_connector("", reverse).token)


def test_tokens_share_one_namespace(registry):
    registry.add_forward("f")
    registry.add_reverse("r", port=2000)
    registry.add_connector("c", "r")
    for name in ("f", "r", "c"):
        with pytest.raises(TokenError, match="^token already exists$"):
            registry.add_forward(name)
        with pytest.raises(TokenError, match="^token already exists$"):
            registry.add_reverse(name)
    for name in ("f", "r"):
        with pytest.raises(TokenError, match="^connector token already exists$"):
            registry.add_connector(name, "r")


def test_anonymous_is_reserved(registry):
    with pytest.raises(TokenError, match="reserved"):
        registry.add_forward("anonymous")
    with pytest.raises(TokenError, match="reserved"):
        registry.add_reverse("anonymous")
    registry.add_reverse("r", port=2000)
    with pytest.raises(TokenError, match="reserved and cannot be used as a connector token"):
        registry.add_connector("anonymous", "r")
    with pytest.raises(TokenError, match="^invalid token$"):
        registry.resolve("anonymous", False)


def test_connector_needs_an_existing_reverse_token(registry):
    with pytest.raises(TokenError, match="^reverse token does not exist$"):
        registry.add_connector("c", "nope")
    registry.add_forward("f")
    with pytest.raises(TokenError, match="^reverse token does not exist$"):
        registry.add_connector("c", "f")


def test_connector_add_is_idempotent_for_the_same_reverse_token(registry):
    registry.add_reverse("r1", port=2001)
    registry.add_reverse("r2", port=2002)
    first = registry.add_connector("c", "r1")
    assert registry.add_connector("c", "r1") is first
    with pytest.raises(TokenError, match="^connector token already exists$"):
        registry.add_connector("c", "r2")


# --------------------------------------------------------------------------- ports


def test_pool_ports_are_in_1024_10240_and_distinct():
    registry = TokenRegistry()
    ports = {registry.add_reverse().port for _ in range(50)}
    assert len(ports) == 50
    assert all(1024 <= port <= 10240 for port in ports)
    assert PORT_POOL[0] == 1024 and PORT_POOL[-1] == 10240


def test_pool_skips_ports_that_are_not_free():
    checked = []

    def port_is_free(port: int) -> bool:
        checked.append(port)
        return port == 1030

    registry = TokenRegistry(port_is_free=port_is_free, port_pool=range(1024, 1040))
    assert registry.add_reverse().port == 1030
    assert 1030 in checked


def test_pool_exhausted_is_an_error():
    registry = TokenRegistry(port_pool=[2000, 2001])
    registry.add_reverse()
    registry.add_reverse()
    with pytest.raises(TokenError, match="^cannot allocate port: 0$"):
        registry.add_reverse()


def test_no_free_port_in_pool_is_an_error():
    registry = TokenRegistry(port_is_free=lambda port: False, port_pool=range(3000, 3010))
    with pytest.raises(TokenError, match="cannot allocate port"):
        registry.add_reverse()


def test_explicit_port_outside_the_pool_works_once(registry):
    assert registry.add_reverse("a", port=40000).port == 40000
    with pytest.raises(TokenError, match="^cannot allocate port: 40000$"):
        registry.add_reverse("b", port=40000)
    assert registry.get("b") is None  # nothing half-registered


@pytest.mark.parametrize("port", [-5, 65536])
def test_explicit_port_out_of_range_is_an_error(registry, port):
    with pytest.raises(TokenError, match="cannot allocate port"):
        registry.add_reverse(port=port)


def test_removing_a_reverse_token_frees_its_port():
    registry = TokenRegistry(port_pool=[2000])
    registry.add_reverse("r")
    assert registry.ports_in_use() == {2000}
    registry.remove("r")
    assert registry.ports_in_use() == set()
    assert registry.add_reverse("r2").port == 2000


def test_autonomy_token_has_no_port(registry):
    entry = registry.add_reverse("auto", port=1234, allow_manage_connector=True)
    assert entry.port == AUTONOMY_PORT and entry.autonomy
    assert registry.ports_in_use() == set()


def test_reverse_token_options_are_kept(registry):
    rules = AccessRules([AccessRule(("10.0.0.0/8",), (22,))])
    entry = registry.add_reverse("r", port=2222, username="u", password="p", rules=rules)
    assert registry.get("r") == entry == ReverseToken("r", 2222, "u", "p", False, rules)
    assert registry.rules_for("r") is rules


# --------------------------------------------------------------------------- authentication (6.1, 6.3)


@pytest.fixture
def populated(registry) -> TokenRegistry:
    registry.add_forward("fwd")
    registry.add_reverse("rev", port=2000)
    registry.add_connector("con", "rev")
    return registry


@pytest.mark.parametrize(
    ("token", "reverse", "expected"),
    [
        ("fwd", False, Authenticated(Role.FORWARD, "fwd")),
        ("rev", True, Authenticated(Role.REVERSE, "rev")),
        ("con", False, Authenticated(Role.CONNECTOR, "con", "rev")),
    ],
)
def test_binary_auth_roles(populated, token, reverse, expected):
    assert populated.resolve(token, reverse) == expected


@pytest.mark.parametrize(("token", "reverse"), [("fwd", True), ("rev", False), ("con", True), ("nope", False),
                                                ("nope", True), ("", False)])  # fmt: skip
def test_binary_auth_mismatch_is_invalid_token(populated, token, reverse):
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.resolve(token, reverse)


@pytest.mark.parametrize(
    ("token", "reverse", "role"),
    [
        ("fwd", None, Role.FORWARD),
        ("fwd", "false", Role.FORWARD),
        ("fwd", "0", Role.FORWARD),
        ("rev", None, Role.REVERSE),
        ("rev", "true", Role.REVERSE),
        ("rev", "1", Role.REVERSE),
        ("con", None, Role.CONNECTOR),
        ("con", "", Role.CONNECTOR),
        ("con", "false", Role.CONNECTOR),
    ],
)
def test_url_query_auth_roles(populated, token, reverse, role):
    assert populated.resolve_query(sha(token), reverse).role is role


@pytest.mark.parametrize(("token", "reverse"), [("fwd", "true"), ("con", "1"), ("rev", "false"), ("rev", "yes")])
def test_url_query_reverse_mismatch_is_invalid_token(populated, token, reverse):
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.resolve_query(sha(token), reverse)


@pytest.mark.parametrize("hashed", ["", "abc", "0" * 63, "0" * 65, "fwd"])
def test_url_query_token_not_64_chars_is_invalid_format(populated, hashed):
    with pytest.raises(TokenError, match="^invalid token format$"):
        populated.resolve_query(hashed)


def test_url_query_unknown_hash_is_invalid_token(populated):
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.resolve_query(sha("unknown"))
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.resolve_query(sha("fwd").upper())


def test_hash_map_follows_every_add_and_remove(registry):
    registry.add_forward("t1")
    assert registry.token_for_hash(sha("t1")) == "t1"
    registry.remove("t1")
    assert registry.token_for_hash(sha("t1")) is None
    with pytest.raises(TokenError, match="^invalid token$"):
        registry.resolve_query(sha("t1"))
    registry.add_reverse("t1", port=2000)
    assert registry.resolve_query(sha("t1")).role is Role.REVERSE


def test_unicode_token_hash(registry):
    registry.add_forward("t\u00f6k\u20ac")
    assert registry.resolve_query(sha("t\u00f6k\u20ac")).token == "t\u00f6k\u20ac"


def test_connector_whose_reverse_token_was_deleted_is_invalid(populated):
    removed = populated.remove("rev")
    assert {entry.token for entry in removed} == {"rev", "con"}
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.resolve("con", False)
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.resolve_query(sha("con"))


# --------------------------------------------------------------------------- removal and listeners


def test_remove_returns_removed_entries_and_unknown_is_empty(populated):
    assert populated.remove("nope") == []
    assert populated.remove("fwd") == [ForwardToken("fwd")]
    assert populated.remove("con") == [ConnectorToken("con", "rev")]
    assert not populated.exists("fwd") and not populated.exists("con") and populated.exists("rev")


def test_listeners_see_every_change(registry):
    recorder = Recorder()
    registry.add_listener(recorder)
    registry.add_forward("f")
    rev = registry.add_reverse("r", port=2000)
    registry.add_connector("c", "r")
    registry.remove("r")
    assert recorder.events == [
        ("added", ForwardToken("f")),
        ("added", rev),
        ("added", ConnectorToken("c", "r")),
        ("removed", ConnectorToken("c", "r")),
        ("removed", rev),
    ]
    registry.remove_listener(recorder)
    registry.remove("f")
    assert len(recorder.events) == 5


def test_a_failing_listener_does_not_break_the_registry(registry, caplog):
    class Broken:
        def token_added(self, entry):
            raise RuntimeError("boom")

        def token_removed(self, entry):
            raise RuntimeError("boom")

    recorder = Recorder()
    registry.add_listener(Broken())
    registry.add_listener(recorder)
    registry.add_forward("f")
    assert registry.exists("f") and recorder.events == [("added", ForwardToken("f"))]
    assert "token listener" in caplog.text


# --------------------------------------------------------------------------- autonomy (13.3, defect 12)


@pytest.fixture
def autonomy(registry) -> TokenRegistry:
    registry.add_reverse("auto", allow_manage_connector=True)
    return registry


def test_each_provider_instance_gets_its_own_pool(autonomy):
    instance_a, instance_b = str(uuid.uuid4()), str(uuid.uuid4())
    assert autonomy.provider_pool("auto", instance_a) == instance_a
    assert autonomy.provider_pool("auto", instance_b) == instance_b
    assert autonomy.provider_pool("auto", instance_a) == instance_a  # reconnect: same pool
    internal = autonomy.get(instance_a)
    assert internal == ReverseToken(instance_a, AUTONOMY_PORT, allow_manage_connector=True, parent="auto")


def test_url_query_providers_get_random_pools(autonomy):
    first, second = autonomy.provider_pool("auto"), autonomy.provider_pool("auto")
    assert first != second
    assert uuid.UUID(first) and uuid.UUID(second)


def test_normal_reverse_token_is_its_own_pool(populated):
    assert populated.provider_pool("rev", str(uuid.uuid4())) == "rev"
    with pytest.raises(TokenError, match="^invalid token$"):
        populated.provider_pool("fwd")


def test_internal_tokens_cannot_authenticate(autonomy):
    pool = autonomy.provider_pool("auto", str(uuid.uuid4()))
    for reverse in (True, False):
        with pytest.raises(TokenError):
            autonomy.resolve(pool, reverse)
    with pytest.raises(TokenError):
        autonomy.resolve_query(sha(pool))


def test_instance_colliding_with_a_token_gets_a_fresh_pool(autonomy):
    name = str(uuid.uuid4())
    autonomy.add_forward(name)
    pool = autonomy.provider_pool("auto", name)
    assert pool != name and autonomy.get(name) == ForwardToken(name)


def test_autonomy_add_generated_connector_then_authenticate(autonomy):
    pool = autonomy.provider_pool("auto", str(uuid.uuid4()))
    token = autonomy.manage_connector(pool, ADD, "")
    assert HEX16.match(token)
    assert autonomy.resolve(token, False) == Authenticated(Role.CONNECTOR, token, pool)
    assert autonomy.manage_connector(pool, ADD, "mine") == "mine"
    assert autonomy.manage_connector(pool, ADD, "mine") == "mine"  # re-added after a reconnect


def test_non_autonomy_provider_cannot_manage_connectors(populated):
    with pytest.raises(TokenError, match="^Unauthorized connector management attempt$"):
        populated.manage_connector("rev", ADD, "x")
    with pytest.raises(TokenError, match="^Unauthorized connector management attempt$"):
        populated.manage_connector("fwd", REMOVE, "con")
    assert populated.exists("con")


def test_provider_removes_only_its_own_connector_tokens(autonomy):
    pool_a = autonomy.provider_pool("auto", str(uuid.uuid4()))
    pool_b = autonomy.provider_pool("auto", str(uuid.uuid4()))
    autonomy.manage_connector(pool_a, ADD, "a-token")
    with pytest.raises(TokenError, match="^Failed to remove connector token$"):
        autonomy.manage_connector(pool_b, REMOVE, "a-token")
    assert autonomy.resolve("a-token", False).reverse_token == pool_a
    with pytest.raises(TokenError, match="^Failed to remove connector token$"):
        autonomy.manage_connector(pool_a, REMOVE, "never-added")
    assert autonomy.manage_connector(pool_a, REMOVE, "a-token") == "a-token"
    assert not autonomy.exists("a-token")


def test_provider_cannot_take_over_another_pools_connector_token(autonomy):
    pool_a = autonomy.provider_pool("auto", str(uuid.uuid4()))
    pool_b = autonomy.provider_pool("auto", str(uuid.uuid4()))
    autonomy.manage_connector(pool_a, ADD, "shared")
    with pytest.raises(TokenError, match="^connector token already exists$"):
        autonomy.manage_connector(pool_b, ADD, "shared")


def test_unknown_connector_operation(autonomy):
    pool = autonomy.provider_pool("auto", str(uuid.uuid4()))
    with pytest.raises(TokenError, match="Unknown connector operation"):
        autonomy.manage_connector(pool, 9, "x")


def test_release_pool_drops_its_connectors(autonomy):
    pool = autonomy.provider_pool("auto")
    autonomy.manage_connector(pool, ADD, "c1")
    assert [e.token for e in autonomy.release_pool(pool)] == ["c1", pool]
    assert autonomy.get(pool) is None and not autonomy.exists("c1")
    assert autonomy.release_pool(pool) == []
    assert autonomy.release_pool("auto") == []  # not an internal token: untouched
    assert autonomy.exists("auto")


def test_removing_the_autonomy_token_removes_pools_and_connectors(autonomy):
    pool = autonomy.provider_pool("auto", str(uuid.uuid4()))
    autonomy.manage_connector(pool, ADD, "c1")
    removed = autonomy.remove("auto")
    assert {entry.token for entry in removed} == {"auto", pool, "c1"}
    assert autonomy.get(pool) is None
    with pytest.raises(TokenError):
        autonomy.resolve("c1", False)


def test_listing_for_status(autonomy):
    autonomy.add_forward("f")
    autonomy.add_reverse("r", port=2000)
    autonomy.add_connector("c", "r")
    pool = autonomy.provider_pool("auto", str(uuid.uuid4()))
    autonomy.manage_connector(pool, ADD, "ac")
    assert [e.token for e in autonomy.reverse_tokens()] == ["auto", pool, "r"]
    assert [e.token for e in autonomy.reverse_tokens(include_internal=False)] == ["auto", "r"]
    assert [e.token for e in autonomy.forward_tokens()] == ["f"]
    assert [c.token for c in autonomy.connector_tokens("r")] == ["c"]
    assert [c.token for c in autonomy.connector_tokens(pool)] == ["ac"]
    assert {c.token for c in autonomy.connector_tokens()} == {"c", "ac"}


def test_per_token_rules(registry):
    rules = AccessRules([AccessRule(("10.0.0.0/8",))])
    registry.add_forward("f", rules=rules)
    registry.add_reverse("r", port=2000)
    registry.add_connector("c", "r", rules=rules)
    assert registry.rules_for("f") is rules and registry.rules_for("c") is rules
    assert registry.rules_for("r") is None and registry.rules_for("nope") is None
