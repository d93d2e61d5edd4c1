"""HTTP management API (linksocks.md 17; acceptance cases 49-52), through aiohttp's test client on loopback."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from aiohttp import web

from hatchway.linksocks.access import AccessRule, AccessRules
from hatchway.linksocks.api import API_PREFIX, AccessConfig, ManagementApi, api_app
from hatchway.linksocks.protocol import ADD
from hatchway.linksocks.tokens import ReverseToken, Role, TokenRegistry

KEY = "s3cret"
OTHER_KEY = "second-key"
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class Recorder:
    def __init__(self) -> None:
        self.added: list = []
        self.removed: list = []

    def token_added(self, entry) -> None:
        self.added.append(entry)

    def token_removed(self, entry) -> None:
        self.removed.append(entry)


@pytest.fixture
def registry() -> TokenRegistry:
    return TokenRegistry()


@pytest.fixture
def access() -> AccessConfig:
    return AccessConfig()


async def banner(request: web.Request) -> web.Response:
    return web.Response(text="LinkSocks v1.10.3 is running")


@pytest.fixture
async def client(aiohttp_client, registry, access):
    counts = {"rev": 2, "fwd": 1}
    app = web.Application()
    app.router.add_get("/", banner)
    app.add_subapp(
        API_PREFIX,
        api_app(registry, [KEY, OTHER_KEY], version="v1.10.3", clients_count=lambda t: counts.get(t, 0), access=access),
    )
    return await aiohttp_client(app)


async def call(client, method: str, path: str, body=None, key: str | None = KEY, raw: bytes | None = None):
    headers = {} if key is None else {"X-API-Key": key}
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    response = await client.request(method, path, data=data, headers=headers)
    text = await response.text()
    return response.status, (json.loads(text) if text.strip() and text.lstrip()[0] in "{[" else text)


# --------------------------------------------------------------------------- case 49: keys, methods, status codes


@pytest.mark.parametrize("path", ["/api/token", "/api/token/x", "/api/status", "/api/config/access"])
@pytest.mark.parametrize("key", [None, "", "wrong", KEY + "x", "s3cre"])
async def test_missing_or_wrong_key_is_401(client, path, key):
    status, body = await call(client, "GET", path, key=key)
    assert status == 401
    assert body == {"success": False, "error": "invalid API key"}


async def test_wrong_key_is_401_even_for_a_wrong_method(client):
    assert (await call(client, "PATCH", "/api/status", key="nope"))[0] == 401


async def test_every_configured_key_works(client):
    for key in (KEY, OTHER_KEY):
        assert (await call(client, "GET", "/api/status", key=key))[0] == 200


async def test_401_body_is_go_json_with_newline(client):
    response = await client.get("/api/status")
    assert response.status == 401
    assert response.content_type == "application/json"
    assert await response.read() == b'{"success":false,"error":"invalid API key"}\n'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/token"),
        ("PUT", "/api/token"),
        ("PATCH", "/api/token/abc"),
        ("POST", "/api/status"),
        ("DELETE", "/api/status"),
        ("POST", "/api/config/access"),
        ("DELETE", "/api/config/access"),
    ],
)
async def test_wrong_method_is_405(client, method, path):
    assert (await call(client, method, path))[0] == 405


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"type": "forward", "port": "80"}', b'{"type": 1}', b"[1, 2]",
     b'{"type": "reverse", "port": 1.5}'],
)  # fmt: skip
async def test_bad_json_is_400(client, raw):
    status, body = await call(client, "POST", "/api/token", raw=raw)
    assert status == 400
    assert body["success"] is False and body["error"].startswith("invalid request body")


@pytest.mark.parametrize("token_type", ["", "socks", "Forward", None])
async def test_unknown_type_is_400(client, token_type):
    status, body = await call(client, "POST", "/api/token", {"type": token_type})
    assert (status, body) == (400, {"success": False, "error": "invalid token type"})


async def test_other_failures_are_200_with_success_false(client, registry):
    registry.add_forward("taken")
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "taken"})
    assert (status, body) == (200, {"success": False, "error": "token already exists"})
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "anonymous"})
    assert status == 200 and body["success"] is False and "reserved" in body["error"]


async def test_tokens_over_255_bytes_are_refused(client, registry):
    """#6 item 16: a binary-auth client could not send such a token (1-byte length)."""
    for kind, extra in (("forward", {}), ("reverse", {}), ("connector", {"reverse_token": "r"})):
        if kind == "connector":
            registry.add_reverse("r")
        status, body = await call(client, "POST", "/api/token", {"type": kind, "token": "x" * 256, **extra})
        assert (status, body) == (200, {"success": False, "error": "token too long (at most 255 bytes)"}), kind
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "\u00e9" * 127})
    assert body["success"] is True  # 254 bytes


# --------------------------------------------------------------------------- case 50: tokens and status


async def test_post_forward_token(client, registry):
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "my-forward"})
    assert (status, body) == (200, {"success": True, "token": "my-forward"})
    assert registry.resolve("my-forward", False).role is Role.FORWARD


async def test_post_forward_token_generated(client, registry):
    status, body = await call(client, "POST", "/api/token", {"type": "forward"})
    assert status == 200 and body["success"] is True and set(body) == {"success", "token"}
    assert HEX16.match(body["token"]) and registry.exists(body["token"])


async def test_post_reverse_token_reports_its_port(client, registry):
    status, body = await call(client, "POST", "/api/token", {"type": "reverse", "token": "rev", "port": 9999,
                                                             "username": "u", "password": "p"})  # fmt: skip
    assert (status, body) == (200, {"success": True, "token": "rev", "port": 9999})
    assert registry.get("rev") == ReverseToken("rev", 9999, "u", "p")


async def test_post_reverse_token_from_the_pool(client):
    status, body = await call(client, "POST", "/api/token", {"type": "reverse"})
    assert status == 200 and 1024 <= body["port"] <= 10240 and HEX16.match(body["token"])


async def test_post_autonomy_reverse_token_has_port_minus_one(client):
    status, body = await call(client, "POST", "/api/token", {"type": "reverse", "token": "auto",
                                                             "allow_manage_connector": True})  # fmt: skip
    assert (status, body) == (200, {"success": True, "token": "auto", "port": -1})


async def test_post_reverse_port_in_use_fails_with_200(client):
    await call(client, "POST", "/api/token", {"type": "reverse", "port": 9999})
    status, body = await call(client, "POST", "/api/token", {"type": "reverse", "port": 9999})
    assert (status, body) == (200, {"success": False, "error": "cannot allocate port: 9999"})


async def test_post_connector_requires_reverse_token(client, registry):
    status, body = await call(client, "POST", "/api/token", {"type": "connector", "token": "c"})
    assert (status, body) == (200, {"success": False, "error": "reverse_token is required for connector token"})
    status, body = await call(client, "POST", "/api/token", {"type": "connector", "reverse_token": "missing"})
    assert (status, body) == (200, {"success": False, "error": "reverse token does not exist"})
    registry.add_reverse("rev", port=2000)
    status, body = await call(client, "POST", "/api/token", {"type": "connector", "token": "c", "reverse_token": "rev"})
    assert (status, body) == (200, {"success": True, "token": "c"})
    assert registry.resolve("c", False).reverse_token == "rev"


async def test_request_keys_are_case_insensitive_and_nulls_ignored(client, registry):
    status, body = await call(client, "POST", "/api/token", {"TYPE": "reverse", "Token": "R", "Port": 7000,
                                                             "username": None, "Extra": 1})  # fmt: skip
    assert (status, body) == (200, {"success": True, "token": "R", "port": 7000})


async def test_delete_token_by_path(client, registry):
    registry.add_forward("gone")
    status, body = await call(client, "DELETE", "/api/token/gone")
    assert (status, body) == (200, {"success": True, "token": "gone"})
    assert not registry.exists("gone")


async def test_delete_token_with_special_characters_in_path(client, registry):
    registry.add_forward("a b/c")
    status, body = await call(client, "DELETE", "/api/token/a%20b/c")
    assert (status, body) == (200, {"success": True, "token": "a b/c"})
    assert not registry.exists("a b/c")


@pytest.mark.parametrize("path", ["/api/token", "/api/token/"])
async def test_delete_token_by_body(client, registry, path):
    registry.add_forward("gone")
    status, body = await call(client, "DELETE", path, {"token": "gone"})
    assert (status, body) == (200, {"success": True, "token": "gone"})
    assert not registry.exists("gone")


@pytest.mark.parametrize("raw", [b"", b"{}", b'{"token": ""}', b"garbage", b'{"token": null}'])
async def test_delete_without_token_is_token_not_specified(client, raw):
    status, body = await call(client, "DELETE", "/api/token", raw=raw)
    assert (status, body) == (200, {"success": False, "error": "token not specified"})


async def test_delete_of_unknown_token_succeeds_like_go(client):
    assert await call(client, "DELETE", "/api/token/never-existed") == (200, {"success": True, "token": "never-existed"})


async def test_delete_reverse_token_cascades_and_notifies(client, registry):
    recorder = Recorder()
    registry.add_listener(recorder)
    await call(client, "POST", "/api/token", {"type": "reverse", "token": "rev", "port": 4000})
    await call(client, "POST", "/api/token", {"type": "connector", "token": "c", "reverse_token": "rev"})
    assert [e.token for e in recorder.added] == ["rev", "c"]
    await call(client, "DELETE", "/api/token/rev")
    assert [e.token for e in recorder.removed] == ["c", "rev"]
    assert registry.ports_in_use() == set()


async def test_status_shape(client, registry):
    registry.add_reverse("rev", port=2000)
    registry.add_connector("c1", "rev")
    registry.add_connector("c2", "rev")
    registry.add_reverse("lonely", port=2001)
    registry.add_reverse("auto", allow_manage_connector=True)
    instance = str(uuid.uuid4())
    pool = registry.provider_pool("auto", instance)
    registry.manage_connector(pool, ADD, "ac")
    registry.add_forward("fwd")
    status, body = await call(client, "GET", "/api/status")
    assert status == 200
    assert body == {
        "version": "v1.10.3",
        "tokens": [
            {"token": "rev", "type": "reverse", "clients_count": 2, "port": 2000, "connector_tokens": ["c1", "c2"]},
            {"token": "lonely", "type": "reverse", "clients_count": 0, "port": 2001},
            {"token": "auto", "type": "reverse", "clients_count": 0, "port": -1},
            {"token": instance, "type": "reverse", "clients_count": 0, "port": -1, "connector_tokens": ["ac"]},
            {"token": "fwd", "type": "forward", "clients_count": 1},
        ],
        "direct": {"enabled": False},
    }


async def test_status_when_empty(client):
    assert await call(client, "GET", "/api/status") == (
        200,
        {"version": "v1.10.3", "tokens": [], "direct": {"enabled": False}},
    )


async def test_other_paths_are_not_the_api(client):
    response = await client.get("/api/nothing-here", headers={"X-API-Key": KEY})
    assert response.status == 404
    response = await client.get("/")
    assert response.status == 200 and "is running" in await response.text()


# --------------------------------------------------------------------------- rules (case 52)


async def test_post_token_with_rules(client, registry):
    rules = [{"addrs": ["192.168.0.0/16", "10.0.0.1-255"], "ports": [22, [8000, 8100]]}]
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "f", "rules": rules})
    assert (status, body) == (200, {"success": True, "token": "f"})
    ac = registry.rules_for("f")
    assert ac.allows("192.168.3.4", 22) and ac.allows("10.0.0.9", 8050)
    assert not ac.allows("10.0.1.9", 22) and not ac.allows("192.168.3.4", 23)


async def test_post_token_with_empty_rules_has_no_restriction(client, registry):
    await call(client, "POST", "/api/token", {"type": "forward", "token": "f", "rules": []})
    assert registry.rules_for("f") is None


async def test_post_token_with_bad_port_rule_is_400(client, registry):
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "f",
                                                             "rules": [{"ports": [0]}]})  # fmt: skip
    assert status == 400 and body["success"] is False
    assert not registry.exists("f")


async def test_post_token_with_bad_address_rule_is_200_failure(client, registry):
    status, body = await call(client, "POST", "/api/token", {"type": "forward", "token": "f",
                                                             "rules": [{"addrs": ["nope"]}]})  # fmt: skip
    assert status == 200 and body["success"] is False and "nope" in body["error"]
    assert not registry.exists("f")


async def test_access_config_starts_empty(client):
    assert await call(client, "GET", "/api/config/access") == (200, {"entry": [], "dial": []})


async def test_access_config_round_trip(client, access):
    put = {
        "entry": [{"Addrs": ["192.168.1.0/24"], "Ports": [22]}],
        "dial": [{"addrs": ["10.0.0.0/8", "10.0.0.1-10.0.0.9", "fe80::1-fe80::ff"], "PORTS": [[8000, 9000]]}, {}],
    }
    status, body = await call(client, "PUT", "/api/config/access", put)
    assert (status, body) == (200, {"success": True})
    status, body = await call(client, "GET", "/api/config/access")
    assert status == 200
    assert body == {
        "entry": [{"Addrs": ["192.168.1.0/24"], "Ports": [22]}],
        "dial": [{"Addrs": ["10.0.0.0/8", "10.0.0.1-10.0.0.9", "fe80::1-fe80::ff"], "Ports": [[8000, 9000]]},
                 {"Addrs": [], "Ports": []}],
    }  # fmt: skip
    assert access.entry.allows("192.168.1.7", 22) and not access.entry.allows("192.168.1.7", 80)
    assert access.dial.allows("fe80::10", 8500) and access.dial.allows("8.8.8.8", 1)  # the {} rule allows any


async def test_access_config_put_one_side_keeps_the_other(client, access):
    await call(client, "PUT", "/api/config/access", {"entry": [{"addrs": ["10.0.0.0/8"]}], "dial": [{"ports": [443]}]})
    await call(client, "PUT", "/api/config/access", {"dial": [{"addrs": ["10.1.0.0/16"]}]})
    status, body = await call(client, "GET", "/api/config/access")
    assert body == {"entry": [{"Addrs": ["10.0.0.0/8"], "Ports": []}], "dial": [{"Addrs": ["10.1.0.0/16"], "Ports": []}]}
    await call(client, "PUT", "/api/config/access", {"entry": []})
    assert access.entry.empty and access.entry.allows("1.2.3.4", 5)


@pytest.mark.parametrize(
    "put",
    [
        {"entry": [{"addrs": ["not-an-addr"]}]},
        {"dial": [{"ports": [70000]}]},
        {"dial": [{"ports": [[9, 1]]}]},
        {"entry": "10.0.0.0/8"},
        {"entry": [{"addrs": "10.0.0.1"}]},
    ],
)
async def test_access_config_put_invalid_is_400_and_changes_nothing(client, access, put):
    before = (access.entry, access.dial)
    status, body = await call(client, "PUT", "/api/config/access", put)
    assert status == 400 and body["success"] is False
    assert (access.entry, access.dial) == before


async def test_access_config_put_bad_json_is_400(client):
    assert (await call(client, "PUT", "/api/config/access", raw=b"{"))[0] == 400


# --------------------------------------------------------------------------- construction


def test_an_api_without_keys_is_refused(registry):
    with pytest.raises(ValueError):
        ManagementApi(registry, ["", ""], version="v1")


def test_key_comparison_handles_non_ascii(registry):
    api = ManagementApi(registry, ["kl\u00e9"], version="v1")
    assert api.auth.valid("kl\u00e9")
    assert not api.auth.valid("kle")
    assert not api.auth.valid(None)


def test_access_config_defaults_allow_everything():
    config = AccessConfig()
    assert config.entry.allows("1.2.3.4", 1) and config.dial.allows("1.2.3.4", 1)
    rules = AccessRules([AccessRule(("10.0.0.0/8",))])
    assert AccessConfig(entry=rules).entry is rules


def test_link_counter_counts_providers_by_pool_and_others_by_token():
    from types import SimpleNamespace

    from hatchway.linksocks.api import link_counter

    links = [
        SimpleNamespace(token="auto", pool_key="instance-1"),
        SimpleNamespace(token="auto", pool_key="instance-1"),
        SimpleNamespace(token="rev", pool_key="rev"),
        SimpleNamespace(token="fwd", pool_key=None),
        SimpleNamespace(token=None, pool_key=None),  # not authenticated (yet)
    ]
    count = link_counter(lambda: links)
    assert [count(t) for t in ("instance-1", "auto", "rev", "fwd", "none")] == [2, 0, 1, 1, 0]
