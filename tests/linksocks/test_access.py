"""Access rules (linksocks.md 17.5, acceptance case 52): address and port forms, JSON keys, CLI flag."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.linksocks.access import (
    AccessError,
    AccessRule,
    AccessRules,
    parse_rule_flag,
    rule_from_builtins,
    rules_from_builtins,
)


def rules(*specs: tuple[list[str], list]) -> AccessRules:
    return AccessRules(AccessRule(tuple(addrs), tuple(tuple(p) if isinstance(p, list) else p for p in ports))
                       for addrs, ports in specs)  # fmt: skip


# --------------------------------------------------------------------------- matching


def test_no_rules_allow_everything():
    assert AccessRules().allows("203.0.113.9", 1)
    assert AccessRules().allows("example.com", 65535)
    assert not AccessRules() and AccessRules().empty


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("192.168.0.0", True),
        ("192.168.255.255", True),
        ("192.169.0.0", False),
        ("192.167.255.255", False),
    ],
)
def test_cidr(host, allowed):
    assert rules((["192.168.0.0/16"], [])).allows(host, 80) is allowed


def test_cidr_with_host_bits_set_is_the_network():
    assert rules((["10.1.2.3/8"], [])).allows("10.200.0.1", 1)


@pytest.mark.parametrize(("host", "allowed"), [("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.0", False)])
def test_single_address(host, allowed):
    assert rules((["10.0.0.1"], [])).allows(host, 80) is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("10.0.0.1", True), ("10.0.0.100", True), ("10.0.0.255", True), ("10.0.0.0", False), ("10.0.1.1", False)],
)
def test_last_octet_range(host, allowed):
    assert rules((["10.0.0.1-255"], [])).allows(host, 80) is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("10.0.0.5", True), ("10.0.1.7", True), ("10.0.2.255", True), ("10.0.3.0", False), ("10.0.0.4", False)],
)
def test_full_address_range(host, allowed):
    assert rules((["10.0.0.5-10.0.2.255"], [])).allows(host, 80) is allowed


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("fe80::1", True), ("fe80::ff", True), ("fe80::100", False), ("[fe80::10]", True), ("::1", False)],
)
def test_ipv6_range(host, allowed):
    assert rules((["fe80::1-fe80::ff"], [])).allows(host, 80) is allowed


@pytest.mark.parametrize(("host", "allowed"), [("2001:db8::1", True), ("2001:db9::", False)])
def test_ipv6_cidr(host, allowed):
    assert rules((["2001:db8::/32"], [])).allows(host, 80) is allowed


def test_ipv4_mapped_ipv6_is_the_same_address():
    assert rules((["10.0.0.0/8"], [])).allows("::ffff:10.1.2.3", 80)
    assert rules((["::ffff:10.0.0.0/104"], [])).allows("10.1.2.3", 80)


@pytest.mark.parametrize(("port", "allowed"), [(22, True), (23, False), (8000, True), (8050, True), (8100, True),
                                               (8101, False), (7999, False)])  # fmt: skip
def test_single_ports_and_port_ranges(port, allowed):
    assert rules(([], [22, [8000, 8100]])).allows("1.2.3.4", port) is allowed


def test_address_and_port_must_match_within_the_same_rule():
    ac = rules((["192.168.1.0/24"], [22]), (["10.0.0.0/8"], [[8000, 9000]]))
    assert ac.allows("192.168.1.5", 22)
    assert ac.allows("10.1.2.3", 8500)
    assert not ac.allows("192.168.1.5", 80)
    assert not ac.allows("10.1.2.3", 22)


def test_empty_address_list_means_any_address():
    ac = rules(([], [443]))
    assert ac.allows("198.51.100.1", 443) and ac.allows("example.org", 443)
    assert not ac.allows("198.51.100.1", 80)


def test_empty_port_list_means_any_port():
    ac = rules((["127.0.0.1"], []))
    assert ac.allows("127.0.0.1", 1) and ac.allows("127.0.0.1", 65535)


# --------------------------------------------------------------------------- host names


def test_names_need_their_addresses_unless_an_address_free_rule_covers_the_port():
    ac = rules((["10.0.0.0/8"], [80]), ([], [443]))
    assert ac.needs_addresses("intranet.example", 80)
    assert not ac.needs_addresses("intranet.example", 443)
    assert not ac.needs_addresses("10.0.0.1", 80)
    assert not AccessRules().needs_addresses("intranet.example", 80)


def test_names_are_checked_by_their_resolved_addresses():
    ac = rules((["10.0.0.0/8"], [80]))
    assert not ac.allows("intranet.example", 80)  # not resolved: refused, as Go refuses unresolvable names
    assert ac.allows("intranet.example", 80, ["192.0.2.1", "10.9.9.9"])
    assert not ac.allows("intranet.example", 80, ["192.0.2.1"])
    assert not ac.allows("intranet.example", 81, ["10.9.9.9"])
    assert not ac.allows("intranet.example", 80, ["garbage"])


def test_address_literal_ignores_supplied_addresses():
    ac = rules((["10.0.0.0/8"], []))
    assert not ac.allows("192.0.2.1", 80, ["10.0.0.1"])


# --------------------------------------------------------------------------- parsing / validation


@pytest.mark.parametrize(
    "spec",
    ["", " ", "not-an-addr", "10.0.0.1-256", "10.0.0.1-x", "fe80::1-20", "10.0.0.0/33", "10.0.0.300", "010.0.0.1",
     "-10.0.0.1", "10.0.0.1-", "fe80::1%eth0", "10.0.0.1-\u00b2"],
)  # fmt: skip
def test_invalid_address_specs_are_rejected(spec):
    with pytest.raises(AccessError):
        AccessRules([AccessRule((spec,))])


@pytest.mark.parametrize("port", [0, 65536, -1, (0, 10), (10, 65536), (100, 99), True])
def test_invalid_port_specs_are_rejected(port):
    with pytest.raises(AccessError):
        AccessRule((), (port,))


def test_rule_json_keys_are_case_insensitive():
    for key_a, key_p in [("Addrs", "Ports"), ("addrs", "ports"), ("ADDRS", "PORTS"), ("aDdRs", "pOrTs")]:
        assert rule_from_builtins({key_a: ["10.0.0.1"], key_p: [22, [80, 90]]}) == AccessRule(
            ("10.0.0.1",), (22, (80, 90))
        )


def test_rule_json_nulls_and_unknown_keys():
    assert rule_from_builtins({"Addrs": None, "Ports": None, "Comment": "x"}) == AccessRule()
    assert rules_from_builtins(None) == []


@pytest.mark.parametrize(
    "value",
    [
        [{"Ports": ["22"]}],
        [{"Ports": [[1, 2, 3]]}],
        [{"Ports": [0]}],
        [{"Ports": [1.5]}],
        [{"Addrs": "10.0.0.1"}],
        [{"Addrs": ["bogus"]}],
        ["10.0.0.1"],
        {"Addrs": []},
    ],
)
def test_invalid_rule_json_is_rejected(value):
    with pytest.raises(AccessError):
        rules_from_builtins(value)


def test_from_json_and_to_json_round_trip_in_go_field_names():
    body = b'[{"addrs":["192.168.0.0/16","10.0.0.1","10.0.0.1-255","10.0.0.1-10.0.2.3"],"ports":[22,[8000,8100]]},{}]'
    ac = AccessRules.from_json(body)
    assert ac.to_builtins() == [
        {"Addrs": ["192.168.0.0/16", "10.0.0.1", "10.0.0.1-255", "10.0.0.1-10.0.2.3"], "Ports": [22, [8000, 8100]]},
        {"Addrs": [], "Ports": []},
    ]
    assert AccessRules.from_json(ac.to_json()) == ac


def test_single_port_range_is_written_as_a_number():
    assert AccessRules([AccessRule((), ((22, 22),))]).to_builtins() == [{"Addrs": [], "Ports": [22]}]


def test_from_json_rejects_bad_json():
    with pytest.raises(AccessError):
        AccessRules.from_json(b"[{")
    assert AccessRules.from_json(b"null").empty


# --------------------------------------------------------------------------- --access-rule


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("192.168.1.0/24:22", AccessRule(("192.168.1.0/24",), (22,))),
        ("192.168.1.1-192.168.2.255:22-100", AccessRule(("192.168.1.1-192.168.2.255",), ((22, 100),))),
        ("10.0.0.1-255:443", AccessRule(("10.0.0.1-255",), (443,))),
        ("10.0.0.5:443", AccessRule(("10.0.0.5",), (443,))),
        ("::1:22", AccessRule(("::1",), (22,))),
        ("2001:db8::/32:80-90", AccessRule(("2001:db8::/32",), ((80, 90),))),
        ("[2001:db8::1]:8080", AccessRule(("2001:db8::1",), (8080,))),
        ("[fe80::1-fe80::ff]", AccessRule(("fe80::1-fe80::ff",), ())),
        ("10.0.0.0/8", AccessRule(("10.0.0.0/8",), ())),
        ("10.0.0.0/8:*", AccessRule(("10.0.0.0/8",), ())),
        ("*:22", AccessRule((), (22,))),
        (":22", AccessRule((), (22,))),
        (" 10.0.0.1:22 ", AccessRule(("10.0.0.1",), (22,))),
    ],
)
def test_parse_rule_flag(flag, expected):
    assert parse_rule_flag(flag) == expected


@pytest.mark.parametrize(
    "flag",
    ["", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:x", "10.0.0.1:100-10", "bogus:22", "[::1", "[::1]22",
     "2001:db8::1", "10.0.0.1:22-"],
)  # fmt: skip
def test_parse_rule_flag_rejects_bad_input(flag):
    with pytest.raises(AccessError):
        parse_rule_flag(flag)


def test_flag_rules_match():
    ac = AccessRules([parse_rule_flag("192.168.1.0/24:22"), parse_rule_flag("[::1]:8000-8100")])
    assert ac.allows("192.168.1.9", 22) and not ac.allows("192.168.1.9", 23)
    assert ac.allows("::1", 8050) and not ac.allows("::2", 8050)


# --------------------------------------------------------------------------- property: agrees with ipaddress


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_cidr_matching_agrees_with_ipaddress(base, prefix, probe):
    import ipaddress

    net = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    assert rules(([f"{base}/{prefix}"], [])).allows(str(probe), 1) is (probe in net)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6), st.ip_addresses(v=6), st.ip_addresses(v=6))
def test_ipv6_range_matching_agrees_with_integer_order(low, high, probe):
    assert rules(([f"{low}-{high}"], [])).allows(str(probe), 1) is (int(low) <= int(probe) <= int(high))
