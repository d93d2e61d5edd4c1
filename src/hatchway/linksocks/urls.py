"""Client URL handling (linksocks.md 3.3): normalisation, auth style, redirects."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

SOCKET_PATH = "/socket"
MAX_REDIRECTS = 5
_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def normalize_url(url: str) -> str:
    """No scheme -> wss://; http -> ws; https -> wss; empty path or "/" -> /socket."""
    text = url.strip()
    if "://" not in text:
        text = "wss://" + text
    parts = urlsplit(text)
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    path = parts.path or "/"
    if path == "/":
        path = SOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, parts.fragment))


def uses_query_auth(url: str) -> bool:
    """URL-query authentication when the path is exactly /socket, else the binary Auth message."""
    return urlsplit(url).path == SOCKET_PATH


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def redirect_target(current: str, location: str) -> str:
    """Absolute WebSocket URL for a redirect ``Location`` (http/https mapped to ws/wss)."""
    base = urlsplit(current)
    http_scheme = {"ws": "http", "wss": "https"}.get(base.scheme, base.scheme)
    target = urljoin(urlunsplit((http_scheme, *base[1:])), location)
    parts = urlsplit(target)
    scheme = _SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def same_host(current: str, target: str) -> bool:
    """Does a redirect stay on the host the user configured (scheme and port may change)?"""
    return (urlsplit(current).hostname or "").lower() == (urlsplit(target).hostname or "").lower()


def addresses_text(addresses: list[tuple[str, int]] | list[tuple[str, int, int, int]]) -> str:
    """``[("127.0.0.1", 1080), ("::1", 1080)]`` -> ``127.0.0.1:1080, [::1]:1080`` (for log lines)."""
    parts = []
    for address in addresses:
        host, port = str(address[0]), int(address[1])
        parts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return ", ".join(parts) or "nothing"


def env_proxy(url: str) -> str | None:
    """http_proxy for ws://, https_proxy for wss:// (no_proxy / NO_PROXY honoured, urllib's rules)."""
    import urllib.request  # only a client run that dials looks at the environment's proxies

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get("https" if url.startswith("wss://") else "http")
    if not proxy:
        return None
    host = urlsplit(url).hostname or ""
    bypass: Callable[[str, dict[str, str]], bool] = urllib.request.__dict__["proxy_bypass_environment"]  # no stub
    if bypass(host, proxies):
        return None
    return proxy
