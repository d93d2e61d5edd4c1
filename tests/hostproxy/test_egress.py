"""Egress rules on /open/url ([later], case 24, defect 19): lenient rules file, 403 blocked vs 500 unavailable."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from hp_harness import Proxy, make_server
from hypothesis import given
from hypothesis import strategies as st

from hatchway.hostproxy.egress import Blocked, RulesUnavailable, canonical_path, check_url, parse_rules

# As the firewall writes it (Go yaml.v3: 4-space indent, quoted and plain scalars), with hatchway's test hosts.
RULES = """\
# egress rules (written by the firewall)
rules:
    - action: allow
      dst: login.example.test
      port: 443
      proto: tls
    - dst: .cdn.example.test
      port: "443"
    - dst: "192.0.2.0/24"
    - dst: 198.51.100.7
    - action: deny
      dst: tracker.cdn.example.test
    - dst: ranges.example.test
      proto: https
      port: 9000-9100
    - dst: ranges.example.test
      proto: https
      port: "9050"
      action: deny
    - dst: plain.example.test
      proto: http
    - dst: api.example.test
      proto: http
      port: 80
      path_default: deny
      future_key: ignored
      path_rules:
        - path: "/v1/"
          action: allow
        - path: /v1/admin/
          action: deny
        - path: '~/users/(alice|bob)/?'
          action: allow
"""


@pytest.fixture(scope="module")
def rules() -> Any:
    return parse_rules(RULES)


@pytest.mark.parametrize("url", [
    "https://login.example.test/authorize?client_id=x",
    "HTTPS://LOGIN.example.test./",  # scheme and host case, trailing dot
    "https://img.cdn.example.test/a.png",  # wildcard
    "https://cdn.example.test/",  # wildcard's apex fallback
    "https://192.0.2.55/",  # CIDR
    "https://198.51.100.7:443/",  # IP, explicit default port
    "https://ranges.example.test:9000/",
    "http://plain.example.test/any/path",
    "http://api.example.test/v1/items",
    "http://api.example.test/users/alice",
    "http://api.example.test/users/bob/",
])
def test_allowed(rules: Any, url: str) -> None:
    check_url(rules, url)


@pytest.mark.parametrize("url,why", [
    ("https://elsewhere.test/", "not in the egress allow list"),
    ("http://login.example.test/", "not in the egress allow list"),  # wrong proto for the domain
    ("https://login.example.test:8443/", "not in the egress allow list"),  # wrong port
    ("https://tracker.cdn.example.test/", "denied by egress rules"),  # exact deny beats the wildcard allow
    ("https://ranges.example.test:9050/", "denied by egress rules"),  # deny wins over the range allow
    ("https://ranges.example.test/", "not in the egress allow list"),
    ("https://192.0.3.1/", "not in the egress allow list"),
    ("https://user:pw@login.example.test/", "userinfo"),
    ("http://api.example.test/v1/admin/keys", "path rules"),  # the longer prefix denies
    ("http://api.example.test/v1/../v1/admin/keys", "path rules"),  # dot-segments resolved first
    ("http://api.example.test/v1/..%2fadmin", "path rules"),  # encoded traversal
    ("http://api.example.test/v1/..\\..\\etc", "path rules"),  # backslashes fold to slashes
    ("http://api.example.test/users/alice-evil", "path rules"),  # the regex matches the whole path
    ("http://api.example.test/other", "path rules"),  # path_default: deny
])
def test_blocked(rules: Any, url: str, why: str) -> None:
    with pytest.raises(Blocked, match=why):
        check_url(rules, url)


def test_lenient_parsing_and_defaults() -> None:
    """Defect 19 (upstream PR #332): quoted and range ports, unknown keys and both indent styles all parse."""
    rules = parse_rules("rules:\n- dst: a.test\n  port: '8443'\n  extra: {}\n- dst: b.test\n  port: 1-2\n"
                        "- dst: c.test  # comment\n  proto: TLS\n  action: ''\n")
    assert [(r.dst, r.proto, r.port, r.action) for r in rules] == [
        ("a.test", "https", "8443", "allow"), ("b.test", "https", "1-2", "allow"), ("c.test", "https", "443", "allow")]
    assert parse_rules('{"rules": [{"dst": "j.test", "port": 443, "proto": "http"}]}')[0].port == "443"
    assert parse_rules("") == parse_rules("rules: []") == parse_rules("rules:\n") == []


def test_a_port_spec_that_does_not_parse_matches_nothing() -> None:
    rules = parse_rules("rules:\n  - dst: x.test\n    port: nonsense\n  - dst: x.test\n    port: 9100-9000\n")
    with pytest.raises(Blocked, match="not in the egress allow list"):
        check_url(rules, "https://x.test/")


@pytest.mark.parametrize("text", [
    "rules:\n  - dst: a\n     port: 1\n",  # bad indentation
    "rules: {dst: a}\n",  # a YAML flow mapping (never written by the firewall)
    "rules: not-a-list\n",
    "rules:\n  - just a string\n",
    "rules:\n  - dst: a\n    path_rules:\n      - path: '~(('\n",  # bad regex
    '{"rules": [',
    "- a\n- b\n",
    b"\xff\xfe",
])
def test_unusable_files(text: str | bytes) -> None:
    with pytest.raises(RulesUnavailable):
        parse_rules(text)


@given(st.lists(st.sampled_from(["a", "..", ".", "", "%2e%2e", "b\\..", "%2F", "c"]), max_size=8), st.booleans())
def test_canonical_path_has_no_traversal_left(segments: list[str], trailing: bool) -> None:
    path = canonical_path("/" + "/".join(segments) + ("/" if trailing else ""))
    assert path.startswith("/") and "\\" not in path and "//" not in path
    assert not any(part in (".", "..") for part in path.split("/"))


# ------------------------------------------------------------------ through the server (case 24)


@pytest_asyncio.fixture
async def egress_proxy(tmp_path: Any) -> AsyncIterator[Proxy]:
    path = tmp_path / "egress-rules.yaml"
    path.write_text(RULES)
    server, opener = make_server(tmp_path, egress_rules=str(path))
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield Proxy(server, session, opener)
    await server.aclose()


async def test_allowed_url_opens(egress_proxy: Proxy) -> None:
    url = "https://login.example.test/authorize?x=1"
    assert await egress_proxy.post("/open/url", {"url": url}) == (200, {"success": True, "url": url})
    assert egress_proxy.opener.calls == [url]


@pytest.mark.parametrize("url", ["https://elsewhere.test/", "http://login.example.test/"])
async def test_blocked_url_is_403_and_never_opened(egress_proxy: Proxy, url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    status, reply = await egress_proxy.post("/open/url", {"url": url})
    assert (status, reply) == (403, {"success": False, "url": url, "error": "blocked by egress policy"})
    assert egress_proxy.opener.calls == []
    assert "not in the egress allow list" in caplog.text  # the reason goes to the audit log only


async def test_unusable_rules_are_500_until_fixed(egress_proxy: Proxy, tmp_path: Any) -> None:
    url = "https://login.example.test/"
    path = tmp_path / "egress-rules.yaml"
    unavailable = (500, {"success": False, "url": url, "error": "egress rules unavailable"})
    path.write_text("rules:\n  - dst: [\n")  # corrupt
    assert await egress_proxy.post("/open/url", {"url": url}) == unavailable
    path.write_text("rules:\n  - dst: login.example.test\n    path_rules:\n      - path: '~[a-'\n")  # bad regex
    assert await egress_proxy.post("/open/url", {"url": url}) == unavailable
    os.unlink(path)  # missing
    assert await egress_proxy.post("/open/url", {"url": url}) == unavailable
    assert egress_proxy.opener.calls == []
    path.write_text(RULES)  # fixed: read again, no restart
    assert await egress_proxy.post("/open/url", {"url": url}) == (200, {"success": True, "url": url})
    assert egress_proxy.opener.calls == [url]


async def test_scheme_and_body_errors_come_first(egress_proxy: Proxy) -> None:
    status, reply = await egress_proxy.post("/open/url", {"url": "file:///etc/passwd"})
    assert (status, reply["error"]) == (400, "only http and https URLs are allowed")


async def test_no_rules_path_skips_the_check(proxy: Proxy) -> None:
    url = "https://not-in-any-list.example/"
    assert await proxy.post("/open/url", {"url": url}) == (200, {"success": True, "url": url})
