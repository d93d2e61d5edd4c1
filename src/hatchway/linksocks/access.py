"""Destination access rules (linksocks.md 17.5), pure data: no I/O, no DNS.

A rule pairs address specs with port specs; a destination is allowed when one
rule matches both its address and its port. An empty list means "any"; no
rules at all allow everything.

Rule JSON uses Go's field names ``{"Addrs": [...], "Ports": [...]}`` and the
keys are accepted case-insensitively, as Go's encoding/json does.

Address specs: CIDR (``10.0.0.0/8``), single address (``10.0.0.1``, ``::1``),
last-octet range (``10.0.0.1-255``, IPv4 only) and ``a-b`` range
(``10.0.0.1-10.0.2.255``, ``fe80::1-fe80::ff``). Port specs: ``22`` or
``[8000, 8100]``. Like Go, every address is compared in its 16-byte form, so an
IPv4 address and its IPv4-mapped IPv6 form (``::ffff:10.0.0.1``) are the same.

Host names: Go resolves a name and allows it if any resolved address matches;
an unresolvable name is refused. This module does no DNS: :meth:`AccessRules.allows`
takes the resolved addresses as an argument, and :meth:`AccessRules.needs_addresses`
tells the caller whether resolving is needed at all (it is not when the host is
an address literal, or when a rule without addresses already matches the port).
A name checked without addresses is refused. The caller should dial one of
the addresses it checked, so a second DNS answer cannot bypass the rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import msgspec

MIN_PORT = 1
MAX_PORT = 65535
_V4_MAPPED = 0xFFFF << 32


class AccessError(ValueError):
    """An invalid access rule (address spec, port spec or rule JSON)."""


PortSpec = int | tuple[int, int]


class AccessRule(msgspec.Struct, frozen=True, rename={"addrs": "Addrs", "ports": "Ports"}):
    """One allow entry, as given (addresses are validated when compiled into :class:`AccessRules`)."""

    addrs: tuple[str, ...] = ()
    ports: tuple[PortSpec, ...] = ()

    def __post_init__(self) -> None:
        for spec in self.ports:
            port_range(spec)


def port_range(spec: PortSpec) -> tuple[int, int]:
    """``22`` -> (22, 22); ``(8000, 8100)`` -> (8000, 8100); anything out of 1..65535 or reversed -> error."""
    if isinstance(spec, bool):
        raise AccessError(f"invalid port spec: {spec!r}")
    if isinstance(spec, int):
        if not MIN_PORT <= spec <= MAX_PORT:
            raise AccessError(f"invalid port {spec}")
        return spec, spec
    try:
        low, high = spec
    except (TypeError, ValueError):
        raise AccessError(f"invalid port spec: {spec!r}") from None
    if isinstance(low, bool) or isinstance(high, bool) or not isinstance(low, int) or not isinstance(high, int):
        raise AccessError(f"invalid port spec: {spec!r}")
    if low < MIN_PORT or high > MAX_PORT or high < low:
        raise AccessError(f"invalid port range [{low}, {high}]")
    return low, high


# --------------------------------------------------------------------------- addresses


def _ip16(text: str) -> int | None:
    """An address literal as an integer in Go's 16-byte form (IPv4 mapped into ::ffff:0:0/96), or None."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 4:
        return _V4_MAPPED | int(ip)
    return int(ip)


def address_range(spec: str) -> tuple[int, int]:
    """Parse one address spec into an inclusive (low, high) range of 16-byte address integers."""
    spec = spec.strip()
    if not spec:
        raise AccessError("empty address spec")
    if "%" in spec:
        raise AccessError(f"invalid address {spec!r}: zones are not supported")
    if "/" in spec:
        return _cidr_range(spec)
    if "-" in spec:
        return _dash_range(spec)
    ip = _ip16(spec)
    if ip is None:
        raise AccessError(f"invalid address {spec!r}")
    return ip, ip


def _cidr_range(spec: str) -> tuple[int, int]:
    try:
        net = ipaddress.ip_network(spec, strict=False)
    except ValueError as exc:
        raise AccessError(f"invalid CIDR {spec!r}: {exc}") from None
    low, high = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        return _V4_MAPPED | low, _V4_MAPPED | high
    return low, high


def _dash_range(spec: str) -> tuple[int, int]:
    low_text, high_text = (part.strip() for part in spec.split("-", 1))
    low = _ip16(low_text)
    if low is None:
        raise AccessError(f"invalid address range {spec!r}")
    high = _ip16(high_text)
    if high is not None:
        return low, high
    if (low >> 32) == 0xFFFF and high_text.isascii() and high_text.isdigit() and int(high_text) <= 255:
        return low, (low & ~0xFF) | int(high_text)
    raise AccessError(f"invalid address range {spec!r}")


# --------------------------------------------------------------------------- rule sets


class _CompiledRule:
    __slots__ = ("addresses", "ports")

    def __init__(self, rule: AccessRule) -> None:
        self.addresses = [address_range(spec) for spec in rule.addrs]
        self.ports = [port_range(spec) for spec in rule.ports]

    def matches_port(self, port: int) -> bool:
        return not self.ports or any(low <= port <= high for low, high in self.ports)

    def matches_address(self, ip: int) -> bool:
        return not self.addresses or any(low <= ip <= high for low, high in self.addresses)


class AccessRules:
    """A compiled, immutable rule set. ``AccessRules()`` (no rules) allows everything."""

    __slots__ = ("rules", "_compiled")

    def __init__(self, rules: Iterable[AccessRule] = ()) -> None:
        self.rules: tuple[AccessRule, ...] = tuple(rules)
        self._compiled = [_CompiledRule(rule) for rule in self.rules]

    @classmethod
    def from_json(cls, body: bytes | str) -> AccessRules:
        """Parse a JSON list of rules (``null`` = no rules)."""
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise AccessError(f"invalid rules JSON: {exc}") from None
        return cls(rules_from_builtins(value))

    @property
    def empty(self) -> bool:
        return not self.rules

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AccessRules) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        return f"AccessRules({list(self.rules)!r})"

    def allows(self, host: str, port: int, addresses: Iterable[str] = ()) -> bool:
        """Is ``host:port`` allowed? ``addresses`` are what ``host`` resolved to when it is a name."""
        if not self._compiled:
            return True
        rules = [rule for rule in self._compiled if rule.matches_port(port)]
        if not rules:
            return False
        if any(not rule.addresses for rule in rules):
            return True
        literal = _ip16(_unbracket(host))
        candidates = [literal] if literal is not None else [ip for ip in map(_ip16, addresses) if ip is not None]
        return any(rule.matches_address(ip) for rule in rules for ip in candidates)

    def needs_addresses(self, host: str, port: int) -> bool:
        """Does checking ``host:port`` need ``host`` resolved first? (Only for names that no address-free rule covers.)"""
        if not self._compiled or _ip16(_unbracket(host)) is not None:
            return False
        return not any(rule.matches_port(port) and not rule.addresses for rule in self._compiled)

    def to_builtins(self) -> list[dict[str, list[Any]]]:
        """Go's JSON shape: ``[{"Addrs": [...], "Ports": [22, [8000, 8100]]}]`` (single-port ranges as numbers)."""
        return [rule_to_builtins(rule) for rule in self.rules]

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.to_builtins())


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def rule_to_builtins(rule: AccessRule) -> dict[str, list[Any]]:
    ports: list[Any] = []
    for spec in rule.ports:
        low, high = port_range(spec)
        ports.append(low if low == high else [low, high])
    return {"Addrs": list(rule.addrs), "Ports": ports}


# --------------------------------------------------------------------------- JSON input


def _go_rule_keys(value: Any) -> Any:
    """Map ``addrs``/``ports`` in any letter case to Go's field names; drop nulls and unknown keys."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        folded = key.lower() if isinstance(key, str) else key
        if folded in ("addrs", "ports") and item is not None:
            out["Addrs" if folded == "addrs" else "Ports"] = item
    return out


def rule_from_builtins(value: Any) -> AccessRule:
    """One decoded JSON rule object -> :class:`AccessRule` (keys case-insensitive, ports validated)."""
    try:
        return msgspec.convert(_go_rule_keys(value), AccessRule)
    except msgspec.ValidationError as exc:
        raise AccessError(f"invalid access rule: {exc}") from None


def rules_from_builtins(value: Any) -> list[AccessRule]:
    """A decoded JSON list of rules (or null) -> rules, addresses validated too."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise AccessError("access rules must be a JSON array")
    rules = [rule_from_builtins(item) for item in value]
    for rule in rules:
        _CompiledRule(rule)
    return rules


# --------------------------------------------------------------------------- CLI flag


def parse_rule_flag(text: str) -> AccessRule:
    """Parse ``--access-rule ADDR:PORT`` into one rule.

    ADDR is any address spec (CIDR, address, ``a-b`` or last-octet range), or
    ``*``/empty for any address; IPv6 may be bracketed (``[::1]:22``). PORT is a
    port, a ``low-high`` range, or ``*`` for any port. Without brackets the
    text is split at its last colon, so an IPv6 spec needs a port
    (``::1:22``) or brackets (``[2001:db8::/32]``). A spec without any colon is
    an address with any port.
    """
    address, port = _split_flag(text.strip())
    addrs = () if address in ("", "*") else (address,)
    for spec in addrs:
        address_range(spec)
    return AccessRule(addrs, () if port in ("", "*") else (_flag_port(port),))


def _split_flag(text: str) -> tuple[str, str]:
    if not text:
        raise AccessError("empty access rule")
    if text.startswith("["):
        address, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise AccessError(f"invalid access rule {text!r}: expected [ADDR]:PORT")
        return address, rest[1:]
    if ":" not in text:
        return text, ""
    address, _, port = text.rpartition(":")
    return address, port


def _flag_port(text: str) -> PortSpec:
    low, dash, high = text.partition("-")
    try:
        spec: PortSpec = (int(low), int(high)) if dash else int(low)
    except ValueError:
        raise AccessError(f"invalid port spec {text!r}") from None
    low_port, high_port = port_range(spec)
    return low_port if low_port == high_port and not dash else (low_port, high_port)
