"""Egress rules on ``/open/url`` (spec 2.3 [later], acceptance case 24, defect 19), sans-I/O.

Opt-in: with a rules file configured (``serve --egress-rules PATH``), a URL the host
browser would open must be allowed by the firewall's egress rules, the same file
upstream's firewall writes (``egress-rules.yaml``)::

    rules:
      - dst: api.example.com        # exact name, ".example.com" (subdomains, then the apex),
        proto: https                #   an IP or a CIDR; proto tls = https (default https)
        port: "443"                 # "443", 443 or "9000-9100"; default by proto
        action: allow               # allow (default) or deny
        path_default: deny          # optional path rules: longest prefix wins,
        path_rules:                 #   "~regex" matches the whole path
          - path: /v1/
            action: allow

Verdicts: :class:`Blocked` (403 ``blocked by egress policy``) when no rule allows
the URL, :class:`RulesUnavailable` (500 ``egress rules unavailable``) when the
file is missing, unreadable, not parseable or has a bad regex. Parsing is
lenient where upstream's strict parser broke login (PR #332): a port may be a
number, a quoted number or a range; unknown keys are ignored; a rule with a
port spec that does not parse matches nothing (never everything). The file is
read again when it changes (the firewall rewrites it atomically).

The file is block YAML as Go's yaml.v3 writes it (or JSON); the small reader
here takes maps, lists of maps and scalars (plain, single- or double-quoted),
comments and ``[]``/``{}``. That is all the rules format uses, so no YAML
library is needed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import posixpath
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

__all__ = ["Blocked", "EgressRules", "PathRule", "Rule", "RulesUnavailable", "canonical_path", "parse_rules"]


class RulesUnavailable(Exception):
    """The rules cannot be used (missing, unreadable, unparseable, bad regex): 500."""


class Blocked(Exception):
    """The rules do not allow the URL: 403 (the text says why, for the audit log)."""


class PathRule(msgspec.Struct, frozen=True):
    path: str
    action: str = "allow"


class Rule(msgspec.Struct, frozen=True):
    dst: str
    proto: str = "https"
    port: str = ""
    action: str = "allow"
    path_rules: tuple[PathRule, ...] = ()
    path_default: str = ""


# ------------------------------------------------------------------ reading the file


def _scalar(text: str, where: int) -> str:
    text = text.strip()
    if text.startswith('"'):
        end = _closing_quote(text)
        if end < 0:
            raise RulesUnavailable(f"line {where}: unterminated string")
        try:
            return str(json.loads(text[:end + 1]))
        except ValueError:
            raise RulesUnavailable(f"line {where}: bad string {text[:end + 1]}") from None
    if text.startswith("'"):
        body, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1:i + 2] == "'":
                    body.append("'")
                    i += 2
                    continue
                return "".join(body)
            body.append(text[i])
            i += 1
        raise RulesUnavailable(f"line {where}: unterminated string")
    return re.split(r"\s#", text, maxsplit=1)[0].strip()


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


_KEY = re.compile(r"""^(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^'"\[{\s#-][^#]*?|-[^\s#][^#]*?)\s*:(?:\s|$)""")


def _split_key(content: str, where: int) -> tuple[str, str]:
    match = _KEY.match(content)
    if match is None:
        raise RulesUnavailable(f"line {where}: expected 'key: value'")
    key = match["key"]
    return (_scalar(key, where) if key[:1] in ("'", '"') else key.strip()), content[match.end():]


class _Lines:
    def __init__(self, text: str) -> None:
        self.items: list[tuple[int, str, int]] = []  # (indent, content, line number)
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
                continue
            if "\t" in raw[:len(raw) - len(raw.lstrip())]:
                raise RulesUnavailable(f"line {number}: tab in indentation")
            self.items.append((len(raw) - len(raw.lstrip(" ")), raw.strip(), number))
        self.pos = 0

    def peek(self) -> tuple[int, str, int] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None


def _value(rest: str, lines: _Lines, indent: int, where: int) -> Any:
    stripped = rest.strip()
    if stripped[:1] in ("'", '"'):
        return _scalar(stripped, where)
    plain = "" if stripped.startswith("#") else re.split(r"\s#", stripped, maxsplit=1)[0].strip()
    if plain == "":  # a nested block follows (or nothing: null)
        nxt = lines.peek()
        if nxt is not None and (nxt[0] > indent or (nxt[0] == indent and _is_item(nxt[1]))):
            return _block(lines, nxt[0])
        return None
    if plain in ("~", "null"):
        return None
    if plain == "[]":
        return []
    if plain == "{}":
        return {}
    if plain.startswith(("[", "{")):
        try:
            return json.loads(plain)
        except ValueError:
            raise RulesUnavailable(f"line {where}: flow collections other than [], {{}} and JSON are not read") \
                from None
    return plain


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _block(lines: _Lines, indent: int) -> Any:
    first = lines.peek()
    assert first is not None
    if not _is_item(first[1]):
        return _mapping(lines, indent)
    items: list[Any] = []
    while (line := lines.peek()) is not None and line[0] == indent and _is_item(line[1]):
        lines.pos += 1
        content = line[1][1:].lstrip()
        inner = indent + (len(line[1]) - len(content))
        if not content:
            nxt = lines.peek()
            items.append(_block(lines, nxt[0]) if nxt is not None and nxt[0] > indent else None)
        elif _KEY.match(content):
            items.append(_mapping(lines, inner, first_line=(inner, content, line[2])))
        else:
            items.append(_value(content, lines, inner, line[2]))
    return items


def _mapping(lines: _Lines, indent: int, first_line: tuple[int, str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pending = first_line
    while True:
        if pending is not None:
            line, pending = pending, None
        else:
            nxt = lines.peek()
            if nxt is None or nxt[0] != indent or _is_item(nxt[1]):
                break
            line = nxt
            lines.pos += 1
        key, rest = _split_key(line[1], line[2])
        out[key] = _value(rest, lines, indent, line[2])
    nxt = lines.peek()
    if nxt is not None and nxt[0] > indent:
        raise RulesUnavailable(f"line {nxt[2]}: unexpected indentation")
    return out


def _document(text: str) -> Any:
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise RulesUnavailable(f"not JSON: {exc}") from None
    lines = _Lines(text)
    first = lines.peek()
    if first is None:
        return {}
    value = _block(lines, first[0])
    rest = lines.peek()
    if rest is not None:
        raise RulesUnavailable(f"line {rest[2]}: unexpected indentation")
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def parse_rules(text: str | bytes) -> list[Rule]:
    """The rules of an egress rules file; :class:`RulesUnavailable` when it cannot be read as one."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise RulesUnavailable("not UTF-8") from None
    document = _document(text)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise RulesUnavailable("the file is not a mapping with 'rules'")
    entries = document.get("rules") or []
    if not isinstance(entries, list):
        raise RulesUnavailable("'rules' is not a list")
    rules = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise RulesUnavailable("a rule is not a mapping")
        path_rules = entry.get("path_rules") or []
        if not isinstance(path_rules, list) or not all(isinstance(p, dict) for p in path_rules):
            raise RulesUnavailable("'path_rules' is not a list of mappings")
        rule = _normalise(Rule(
            dst=_text(entry.get("dst")), proto=_text(entry.get("proto")), port=_text(entry.get("port")),
            action=_text(entry.get("action")), path_default=_text(entry.get("path_default")),
            path_rules=tuple(PathRule(_text(p.get("path")), _text(p.get("action")) or "allow") for p in path_rules)))
        for path_rule in rule.path_rules:
            if path_rule.path.startswith("~"):
                try:
                    re.compile(path_rule.path[1:])
                except re.error as exc:
                    raise RulesUnavailable(f"bad path regex {path_rule.path!r}: {exc}") from None
        rules.append(rule)
    return rules


def _normalise(rule: Rule) -> Rule:
    """upstream's defaults: proto tls -> https, empty proto https, empty action allow, port by proto."""
    proto = rule.proto.lower()
    proto = "https" if proto in ("", "tls") else proto
    port = rule.port or {"https": "443", "http": "80", "ssh": "22"}.get(proto, "")
    return msgspec.structs.replace(rule, proto=proto, port=port, action=(rule.action or "allow").lower(),
                                   path_default=rule.path_default.lower())


# ------------------------------------------------------------------ matching


def _port_range(spec: str) -> tuple[int, int] | None:
    """``"443"`` or ``"9000-9100"`` (whitespace allowed), each in 1-65535 and low <= high; else None."""
    low_text, sep, high_text = spec.strip().partition("-")
    try:
        low = int(low_text.strip())
        high = int(high_text.strip()) if sep else low
    except ValueError:
        return None
    if not (1 <= low <= high <= 65535):
        return None
    return low, high


def canonical_path(path: str) -> str:
    """The path the origin server will resolve: percent-decoded, ``\\`` folded to ``/``, dot-segments and
    duplicate slashes removed, a trailing slash kept (upstream's canonicalisation against ``../`` tricks)."""
    if not path:
        return "/"
    path = unquote(path).replace("\\", "/")
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def _dst_match(dst: str, host: str) -> int:
    """2: exact (name, IP, CIDR), 1: wildcard (``.example.com``), 0: none."""
    if "/" in dst:
        try:
            return 2 if ipaddress.ip_address(host) in ipaddress.ip_network(dst, strict=False) else 0
        except ValueError:
            return 0
    try:
        wanted = ipaddress.ip_address(dst)
    except ValueError:
        pass
    else:
        try:
            return 2 if ipaddress.ip_address(host) == wanted else 0
        except ValueError:
            return 0
    dst = dst.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if not dst.startswith("."):
        return 2 if dst == host else 0
    return 1 if host.endswith(dst) or host == dst[1:] else 0


def _path_allowed(rule: Rule, path: str) -> bool:
    best, action = -1, ""
    regex_actions = []
    for path_rule in rule.path_rules:
        if path_rule.path.startswith("~"):
            if re.fullmatch(path_rule.path[1:], path):
                regex_actions.append(path_rule.action.lower())
        elif path_rule.path and path.startswith(path_rule.path) and len(path_rule.path) > best:
            best, action = len(path_rule.path), path_rule.action.lower()
    actions = regex_actions + ([action] if action else [])
    if actions:
        return "deny" not in actions  # a deny among the matching rules wins (fail closed)
    default = rule.path_default or ("deny" if any(p.action.lower() == "allow" for p in rule.path_rules) else "allow")
    return default == "allow"


def check_url(rules: list[Rule], url: str) -> None:
    """None when ``rules`` allow ``url``; :class:`Blocked` (with the reason) otherwise.

    Exact destinations outrank wildcards; within the winning tier a matching deny wins over an allow.
    """
    try:
        parts = urlsplit(url)
        explicit = parts.port
    except ValueError:
        raise Blocked("invalid URL") from None
    proto = parts.scheme.lower()
    if proto not in ("http", "https"):
        raise Blocked(f"unsupported URL scheme {parts.scheme!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise Blocked("URL with userinfo is not allowed")
    host = (parts.hostname or "").strip("[]")
    if not host:
        raise Blocked("URL has no host")
    port = explicit if explicit is not None else (443 if proto == "https" else 80)
    path = canonical_path(parts.path)
    tiers: dict[int, list[Rule]] = {1: [], 2: []}
    for rule in rules:
        span = _port_range(rule.port)
        if rule.proto != proto or span is None or not span[0] <= port <= span[1]:
            continue
        kind = _dst_match(rule.dst, host)
        if kind:
            tiers[kind].append(rule)
    for kind in (2, 1):
        matched = tiers[kind]
        if any(r.action != "allow" for r in matched):
            raise Blocked(f"domain {host!r} is denied by egress rules")
        if matched:
            if not _path_allowed(matched[0], path):
                raise Blocked(f"path {path!r} on {host!r} is denied by egress path rules")
            return
    raise Blocked(f"domain {host!r} is not in the egress allow list")


class EgressRules:
    """The rules file at ``path``, read again when its mtime or size changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._rules: list[Rule] | None = None
        self._error = ""

    def rules(self) -> list[Rule]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._stamp = None
            raise RulesUnavailable(f"cannot read {self.path}: {exc.strerror or exc}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                with open(self.path, "rb") as f:
                    self._rules, self._error = parse_rules(f.read()), ""
            except OSError as exc:
                self._rules, self._error = None, f"cannot read {self.path}: {exc.strerror or exc}"
            except RulesUnavailable as exc:
                self._rules, self._error = None, f"{self.path}: {exc}"
        if self._rules is None:
            raise RulesUnavailable(self._error)
        return self._rules

    def check(self, url: str) -> None:
        """None when allowed; :class:`Blocked` or :class:`RulesUnavailable` otherwise."""
        check_url(self.rules(), url)
