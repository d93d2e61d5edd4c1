"""HTTP proxy codec: head framing, targets, hop-by-hop stripping, auth, responses, fuzzing."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.common import httpproxy
from hatchway.common.httpproxy import HttpProxyError


def head_of(raw: bytes) -> httpproxy.RequestHead:
    return httpproxy.parse_request_head(raw)


def target_of(raw: bytes) -> httpproxy.ProxyRequest:
    return httpproxy.proxy_target(head_of(raw))


# ------------------------------------------------------------------ head framing


def test_head_reader_byte_by_byte_keeps_the_body():
    raw = b"POST http://h/ HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
    reader = httpproxy.HeadReader()
    heads = [reader.feed(raw[i : i + 1]) for i in range(len(raw))]
    complete = [h for h in heads if h is not None]
    assert complete[0] == raw[:-4]
    assert heads.index(complete[0]) == len(raw) - 5  # exactly when the blank line completed
    assert reader.leftover == b"body"


def test_head_reader_accepts_bare_lf():
    reader = httpproxy.HeadReader()
    assert reader.feed(b"GET http://h/ HTTP/1.0\nA: b\n\nrest") == b"GET http://h/ HTTP/1.0\nA: b\n\n"
    assert reader.leftover == b"rest"


def test_head_reader_limit_gives_431():
    reader = httpproxy.HeadReader(limit=1024)
    reader.feed(b"GET http://h/ HTTP/1.1\r\n")
    with pytest.raises(HttpProxyError) as info:
        for _ in range(100):
            reader.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
    assert info.value.status == 431
    with pytest.raises(HttpProxyError):
        httpproxy.HeadReader(limit=16).feed(b"GET http://h/ HTTP/1.1\r\n\r\n")


def test_default_head_limit_is_64_kib():
    assert httpproxy.HEAD_LIMIT == 64 * 1024


# ------------------------------------------------------------------ request heads


def test_parse_request_head():
    head = head_of(b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\nX-A:  spaced \t\r\n\r\n")
    assert (head.method, head.target, head.version) == ("GET", "http://example.com/x", "HTTP/1.1")
    assert head.headers == [("Host", "example.com"), ("X-A", "spaced")]
    assert head.get("x-a") == "spaced" and head.get("missing") is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n\r\n",
        b"GET http://h/\r\n\r\n",
        b"GET  http://h/ HTTP/1.1\r\n\r\n",
        b"G(T http://h/ HTTP/1.1\r\n\r\n",
        b"GET http://h/ HTTP/2.0\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nA: b\rc\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nA: b\x00\r\n\r\n",
    ],
)
def test_malformed_heads_get_400(raw):
    with pytest.raises(HttpProxyError) as info:
        head_of(raw)
    assert info.value.status == 400


# ------------------------------------------------------------------ targets


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("example.com:8443", "example.com", 8443),
        ("example.com", "example.com", 443),
        ("[::1]:22", "::1", 22),
        ("10.0.0.1:80", "10.0.0.1", 80),
    ],
)
def test_connect_targets(target, host, port):
    request = target_of(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    assert (request.tunnel, request.host, request.port) == (True, host, port)


@pytest.mark.parametrize(
    ("url", "host", "port", "path"),
    [
        ("http://example.com", "example.com", 80, "/"),
        ("http://example.com:8080/a/b?c=d", "example.com", 8080, "/a/b?c=d"),
        ("HTTP://user:pw@example.com/x#frag", "example.com", 80, "/x"),
        ("http://[::1]:81?q", "::1", 81, "/?q"),
    ],
)
def test_absolute_http_targets(url, host, port, path):
    request = target_of(f"GET {url} HTTP/1.1\r\n\r\n".encode())
    assert (request.tunnel, request.host, request.port, request.path) == (False, host, port, path)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET https://example.com/ HTTP/1.1\r\n\r\n",
        b"GET /origin-form HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT example.com:0 HTTP/1.1\r\n\r\n",
        b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
        b"CONNECT :80 HTTP/1.1\r\n\r\n",
        b"CONNECT ::1:80 HTTP/1.1\r\n\r\n",
        b"CONNECT [::1 HTTP/1.1\r\n\r\n",
        b"CONNECT example.com: HTTP/1.1\r\n\r\n",
        b"GET http://example.com:x/ HTTP/1.1\r\n\r\n",
    ],
)
def test_targets_a_proxy_does_not_serve_get_400(raw):
    with pytest.raises(HttpProxyError) as info:
        target_of(raw)
    assert info.value.status == 400


def test_https_absolute_message():
    with pytest.raises(HttpProxyError, match="CONNECT"):
        target_of(b"GET https://example.com/ HTTP/1.1\r\n\r\n")


# ------------------------------------------------------------------ forwarding


def test_origin_request_strips_hop_by_hop_and_keeps_body_framing():
    request = target_of(
        b"POST http://example.com:8080/submit?x=1 HTTP/1.1\r\n"
        b"Host: wrong.example\r\n"
        b"Connection: keep-alive, X-Secret, Content-Length\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Authorization: Basic dTpw\r\n"
        b"Proxy-Foo: bar\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: websocket\r\n"
        b"X-Secret: hush\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n"
        b"User-Agent: test\r\n\r\n"
    )
    assert httpproxy.origin_request(request) == (
        b"POST /submit?x=1 HTTP/1.1\r\n"
        b"Host: example.com:8080\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n"
        b"User-Agent: test\r\n"
        b"Connection: close\r\n\r\n"
    )


def test_origin_request_host_header_forms():
    assert b"\r\nHost: example.com\r\n" in httpproxy.origin_request(target_of(b"GET http://example.com/ HTTP/1.0\r\n\r\n"))
    assert b"\r\nHost: [::1]:81\r\n" in httpproxy.origin_request(target_of(b"GET http://[::1]:81/ HTTP/1.1\r\n\r\n"))


# ------------------------------------------------------------------ authentication


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (basic("user:pa:ss"), True),
        ("basic " + basic("user:pa:ss")[6:], True),
        (basic("user:wrong"), False),
        (basic("user"), False),
        (basic("other:pa:ss"), False),
        ("Bearer abc", False),
        ("Basic !!!notbase64", False),
        (None, False),
    ],
)
def test_proxy_authorization(value, ok):
    headers = [] if value is None else [("Proxy-Authorization", value)]
    head = httpproxy.RequestHead("GET", "http://h/", "HTTP/1.1", headers)
    assert httpproxy.authorized(head, "user", "pa:ss") is ok


# ------------------------------------------------------------------ responses


def test_responses():
    assert httpproxy.CONNECT_ESTABLISHED == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    raw = httpproxy.auth_required_response('Link"Socks')
    assert raw.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'\r\nProxy-Authenticate: Basic realm="Link\\"Socks"\r\n' in raw
    raw = httpproxy.error_response(502, "dial tcp 127.0.0.1:1: connect: connection refused")
    head, used = httpproxy.parse_response_head(raw)
    assert (head.status, head.reason) == (502, "Bad Gateway")
    assert raw[used:] == b"dial tcp 127.0.0.1:1: connect: connection refused"
    assert ("Content-Length", str(len(raw) - used)) in head.headers
    for status in (400, 403, 431):
        assert httpproxy.error_response(status, "x").startswith(f"HTTP/1.1 {status} ".encode())


# ------------------------------------------------------------------ client side


def test_build_connect():
    assert httpproxy.build_connect("::1", 443, "u", "p") == (
        b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
    )
    assert b"Proxy-Authorization" not in httpproxy.build_connect("h", 1)


def test_connect_negotiation_byte_by_byte():
    negotiation = httpproxy.ConnectNegotiation("h", 1)
    answer = b"HTTP/1.1 200 Connection Established\r\n\r\nSSH-2.0"
    for i in range(len(answer) - 7):
        assert not negotiation.done
        negotiation.receive_data(answer[i : i + 1])
    negotiation.receive_data(answer[-7:])
    assert negotiation.done and negotiation.leftover == b"SSH-2.0" and negotiation.error is None


def test_connect_negotiation_failure():
    negotiation = httpproxy.ConnectNegotiation("h", 1)
    negotiation.receive_data(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    assert not negotiation.done
    assert negotiation.error.status == 407
    assert negotiation.error.message == "HTTP CONNECT failed: HTTP/1.1 407 Proxy Authentication Required"
    garbage = httpproxy.ConnectNegotiation("h", 1)
    garbage.receive_data(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert garbage.error is not None and not garbage.done


# ------------------------------------------------------------------ properties

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20)
value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(token, value), max_size=12),
    host=st.sampled_from(["example.com", "10.1.2.3", "::1"]),
    port=st.integers(1, 65535),
    path=st.sampled_from(["/", "/a?b=c", "/%20x"]),
)
def test_forwarded_head_never_carries_hop_by_hop_headers(headers, host, port, path):
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"GET http://{authority}{path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    request = target_of(raw)
    assert (request.host, request.port, request.path) == (host, port, path)
    out = httpproxy.parse_request_head(httpproxy.origin_request(request))
    assert out.target == path
    names = [k.lower() for k, _ in out.headers]
    named = {t.strip().lower() for k, v in headers if k.lower() in ("connection", "proxy-connection") for t in v.split(",")}
    assert names.count("connection") == 1 and out.get("Connection") == "close"
    assert names.count("host") == 1
    for name in names:
        if name in ("connection", "host"):
            continue
        assert name not in httpproxy.HOP_BY_HOP and not name.startswith("proxy-")
        assert name not in named or name in httpproxy.BODY_FRAMING
    kept = [(k, v.strip(" \t")) for k, v in headers if k.lower() in ("content-length", "transfer-encoding")]
    assert [(k, v) for k, v in out.headers if k.lower() in ("content-length", "transfer-encoding")] == kept


prefixes = st.sampled_from([b"", b"GET http://", b"CONNECT ", b"GET http://[", b"POST http://h:", b"HTTP/1.1 200 "])
fuzz_input = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda p, body, end: p + body + end, prefixes, st.binary(max_size=120), st.sampled_from([b"", b"\r\n\r\n"])),
    st.builds(lambda p, body: p + body.encode("latin-1") + b" HTTP/1.1\r\n\r\n", prefixes, st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40)),
)


@settings(max_examples=800, deadline=None)
@given(data=fuzz_input, chunk=st.integers(1, 64))
def test_random_bytes_raise_only_http_proxy_error(data, chunk):
    reader = httpproxy.HeadReader(limit=256)
    try:
        for start in range(0, len(data), chunk):
            raw = reader.feed(data[start : start + chunk])
            if raw is not None:
                httpproxy.origin_request(target_of(raw)) if not target_of(raw).tunnel else None
                break
    except HttpProxyError as exc:
        assert exc.status in (400, 431)
    try:
        httpproxy.parse_response_head(data)
    except HttpProxyError as exc:
        assert exc.status == 502


# ------------------------------------------------------------------ server negotiation (sans-I/O)


def test_server_negotiation_connect_byte_by_byte_keeps_leftover():
    raw = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01"
    negotiation = httpproxy.ServerNegotiation()
    for i in range(len(raw)):
        negotiation.receive_data(raw[i : i + 1])
    assert negotiation.phase is httpproxy.Phase.DONE
    assert negotiation.data_to_send() == b""
    request = negotiation.request
    assert request is not None and (request.host, request.port, request.tunnel) == ("example.com", 443, True)
    assert negotiation.leftover == b"\x16\x03\x01"
    negotiation.receive_data(b"more")  # after DONE, bytes go to leftover, in order
    assert negotiation.leftover == b"\x16\x03\x01more"


def test_server_negotiation_forward_request():
    negotiation = httpproxy.ServerNegotiation()
    negotiation.receive_data(b"GET http://h:8080/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    request = negotiation.request
    assert negotiation.phase is httpproxy.Phase.DONE
    assert request is not None and (request.host, request.port, request.tunnel, request.path) == ("h", 8080, False, "/p?q=1")


def test_server_negotiation_requires_credentials_with_realm():
    negotiation = httpproxy.ServerNegotiation("u", "p", realm='my "realm"')
    negotiation.receive_data(b"CONNECT h:1 HTTP/1.1\r\n\r\n")
    assert negotiation.phase is httpproxy.Phase.FAILED and negotiation.request is None
    assert negotiation.error is not None and negotiation.error.status == 407
    answer = negotiation.data_to_send()
    assert answer.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'Proxy-Authenticate: Basic realm="my \\"realm\\""\r\n' in answer
    assert negotiation.data_to_send() == b""  # sent once
    negotiation.receive_data(b"ignored")
    assert negotiation.leftover == b""

    good = httpproxy.ServerNegotiation("u", "p")
    token = base64.b64encode(b"u:p").decode()
    good.receive_data(f"CONNECT h:1 HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode())
    assert good.phase is httpproxy.Phase.DONE


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /origin-form HTTP/1.1\r\n\r\n", 400),
        (b"GET https://h/ HTTP/1.1\r\n\r\n", 400),
        (b"BAD REQUEST LINE WITH SPACES\r\n\r\n", 400),
        (b"GET http://h/ HTTP/1.1\r\n" + b"X: " + b"a" * httpproxy.HEAD_LIMIT + b"\r\n\r\n", 431),
    ],
    ids=["origin-form", "https", "request-line", "too-large"],
)
def test_server_negotiation_refusals(raw, status):
    negotiation = httpproxy.ServerNegotiation()
    negotiation.receive_data(raw)
    assert negotiation.phase is httpproxy.Phase.FAILED
    assert negotiation.error is not None and negotiation.error.status == status
    assert negotiation.data_to_send().startswith(f"HTTP/1.1 {status} ".encode())


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_server_negotiation_fuzz_never_raises(data):
    negotiation = httpproxy.ServerNegotiation("u", "p")
    negotiation.receive_data(data)
    if negotiation.phase is httpproxy.Phase.FAILED:
        assert negotiation.data_to_send().startswith(b"HTTP/1.1 4")
