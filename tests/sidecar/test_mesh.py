"""The mesh backend's pieces that run without a tailnet: address order, the CONNECT refusal body as error text."""

from __future__ import annotations

import pytest

from hatchway.common import httpproxy
from hatchway.common.dialer import UpstreamProxy
from hatchway.sidecar.backend import BackendError
from hatchway.sidecar.mesh import ERROR_BODY_LIMIT, local_proxy, order_addresses


def test_ipv4_first() -> None:
    assert order_addresses(["fd7a:115c:a1e0::4/128", "100.64.0.4/32"]) == ["100.64.0.4", "fd7a:115c:a1e0::4"]
    # stable within each family; an IPv4-mapped IPv6 address is IPv6
    assert order_addresses(["fd7a::2", "100.64.0.9", "::ffff:10.0.0.1", "fd7a::1/128", "100.64.0.1"]) == \
        ["100.64.0.9", "100.64.0.1", "fd7a::2", "::ffff:10.0.0.1", "fd7a::1"]


def test_refusal_body_is_the_error_text() -> None:
    """arkitekt-mesh answers an unknown name with 502 and its reason as the body; that text reaches the client."""
    body = b"nosuch:80: no peer named nosuch on the mesh"
    reply = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: %d\r\n\r\n" % len(body)
    negotiation = httpproxy.ConnectNegotiation("nosuch", 80, error_body_limit=4096)
    negotiation.receive_data(reply)
    assert negotiation.error is None and not negotiation.done  # waits for the body
    negotiation.receive_data(body[:10])
    assert negotiation.error is None
    negotiation.receive_data(body[10:])
    assert negotiation.error is not None and negotiation.error.status == 502
    assert negotiation.error.message == body.decode()
    plain = httpproxy.ConnectNegotiation("nosuch", 80)  # default: unchanged, the status line
    plain.receive_data(reply + body)
    assert plain.error is not None and plain.error.message == "HTTP CONNECT failed: HTTP/1.1 502 Bad Gateway"
    no_length = httpproxy.ConnectNegotiation("nosuch", 80, error_body_limit=4096)
    no_length.receive_data(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    assert no_length.error is not None and no_length.error.message == "HTTP CONNECT failed: HTTP/1.1 403 Forbidden"


def test_local_proxy_url() -> None:
    assert local_proxy("http://127.0.0.1:41234") == UpstreamProxy("http", "127.0.0.1", 41234,
                                                                   error_body_limit=ERROR_BODY_LIMIT)
    assert local_proxy("http://[::1]:8080/").address == "[::1]:8080"
    for bad in ("socks5://127.0.0.1:1080", "127.0.0.1:8080", "http://127.0.0.1:99999", "http://:80"):
        with pytest.raises(BackendError, match="unusable local proxy URL"):
            local_proxy(bad)
