"""SOCKS5 codec: exact bytes, incremental parsing, negotiations, round trips and fuzzing."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.common import socks5
from hatchway.common.socks5 import Phase, Rep, Socks5Error

# ------------------------------------------------------------------ exact bytes


def test_greeting_and_method_selection_bytes():
    assert socks5.build_greeting([0, 2]) == b"\x05\x02\x00\x02"
    assert socks5.parse_greeting(b"\x05\x02\x00\x02tail") == (socks5.Greeting(b"\x00\x02"), 4)
    assert socks5.build_method_selection(0xFF) == b"\x05\xff"
    assert socks5.parse_method_selection(b"\x05\x02") == (socks5.MethodSelection(2), 2)


def test_userpass_bytes():
    assert socks5.build_userpass("user", "pw") == b"\x01\x04user\x02pw"
    assert socks5.parse_userpass(b"\x01\x04user\x02pw") == (socks5.UserPassAuth("user", "pw"), 9)
    assert socks5.build_userpass_status(True) == b"\x01\x00"
    assert socks5.build_userpass_status(False) == b"\x01\x01"
    assert socks5.parse_userpass_status(b"\x01\x01")[0].ok is False


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [
        (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50", "127.0.0.1", 80),
        (b"\x05\x01\x00\x03\x0bexample.com\x01\xbb", "example.com", 443),
        (b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01" + b"\x1f\x90", "::1", 8080),
    ],
)
def test_request_address_types(raw, host, port):
    request, used = socks5.parse_request(raw)
    assert (request.command, request.host, request.port, used) == (socks5.CMD_CONNECT, host, port, len(raw))
    assert socks5.build_request(socks5.CMD_CONNECT, host, port) == raw


def test_unknown_address_type_carries_reply_0x08():
    with pytest.raises(Socks5Error) as info:
        socks5.parse_request(b"\x05\x01\x00\x05\x00\x00")
    assert info.value.reply == Rep.ADDRESS_TYPE_NOT_SUPPORTED


def test_wrong_version_and_empty_methods_are_errors():
    for raw in (b"\x04\x01\x00", b"\x05\x00"):
        with pytest.raises(Socks5Error):
            socks5.parse_greeting(raw)
    with pytest.raises(Socks5Error) as info:
        socks5.parse_request(b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50")
    assert info.value.reply == Rep.GENERAL_FAILURE


@pytest.mark.parametrize("code", list(range(9)))
def test_reply_codes_and_bnd_address(code):
    raw = socks5.build_reply(code, "127.0.0.1", 1080)
    assert raw == bytes((5, code, 0, 1, 127, 0, 0, 1, 0x04, 0x38))
    assert socks5.parse_reply(raw) == (socks5.Reply(code, "127.0.0.1", 1080), 10)
    assert socks5.reply_text(code)


def test_default_reply_is_linksocks_success():
    assert socks5.build_reply(0) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"


def test_udp_datagram_bytes():
    raw = b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35payload"
    assert socks5.parse_udp_datagram(raw) == socks5.UdpDatagram("127.0.0.1", 53, b"payload", 0)
    assert socks5.build_udp_datagram("127.0.0.1", 53, b"payload") == raw
    fragment = b"\x00\x00\x02" + raw[3:]
    assert socks5.parse_udp_datagram(fragment).frag == 2
    for bad in (b"\x00\x00\x00", b"\x01\x00\x00\x01\x7f\x00\x00\x01\x00\x35", b"\x00\x00\x00\x01\x7f"):
        with pytest.raises(Socks5Error):
            socks5.parse_udp_datagram(bad)


def test_incremental_parsing_needs_every_byte():
    raw = socks5.build_request(socks5.CMD_CONNECT, "example.com", 80)
    for cut in range(len(raw)):
        assert socks5.parse_request(raw[:cut]) is None
    assert socks5.parse_request(memoryview(raw))[1] == len(raw)


def test_builders_reject_what_cannot_be_encoded():
    for call in (
        lambda: socks5.build_address("a" * 256, 1),
        lambda: socks5.build_address("", 1),
        lambda: socks5.build_address("host", 70000),
        lambda: socks5.build_userpass("u" * 256, "p"),
        lambda: socks5.build_address("\ud800", 1),
        lambda: socks5.build_greeting(b""),
    ):
        with pytest.raises(Socks5Error):
            call()


# ------------------------------------------------------------------ server negotiation


def run_server(negotiation, data, chunk=None):
    out = b""
    step = chunk or len(data) or 1
    for start in range(0, len(data), step):
        negotiation.receive_data(data[start : start + step])
        out += negotiation.data_to_send()
    return out


def test_server_without_credentials_byte_by_byte():
    server = socks5.ServerNegotiation()
    data = b"\x05\x01\x00" + socks5.build_request(socks5.CMD_CONNECT, "::1", 22) + b"early"
    out = run_server(server, data, chunk=1)
    assert out == b"\x05\x00"
    assert server.phase is Phase.DONE
    assert server.request == socks5.Request(socks5.CMD_CONNECT, "::1", 22)
    assert server.leftover == b"early"


def test_server_requires_userpass_when_configured():
    server = socks5.ServerNegotiation("user", "secret")
    assert run_server(server, b"\x05\x01\x00") == b"\x05\xff"
    assert server.phase is Phase.FAILED


def test_server_accepts_right_credentials_and_rejects_wrong():
    good = socks5.ServerNegotiation("user", "secret")
    out = run_server(good, b"\x05\x02\x00\x02" + socks5.build_userpass("user", "secret"))
    assert out == b"\x05\x02\x01\x00" and good.phase is Phase.REQUEST and good.username == "user"
    bad = socks5.ServerNegotiation("user", "secret")
    out = run_server(bad, b"\x05\x01\x02" + socks5.build_userpass("user", "wrong"))
    assert out == b"\x05\x02\x01\x01" and bad.phase is Phase.FAILED


def test_server_answers_bad_auth_version_with_failure_status():
    server = socks5.ServerNegotiation("u", "p")
    assert run_server(server, b"\x05\x01\x02\x05\x01u\x01p") == b"\x05\x02\x01\x01"
    assert server.phase is Phase.FAILED


def test_server_answers_malformed_request_with_its_reply_code():
    server = socks5.ServerNegotiation()
    assert run_server(server, b"\x05\x01\x00\x05\x01\x00\x05") == b"\x05\x00" + socks5.build_reply(8)
    server = socks5.ServerNegotiation()
    assert run_server(server, b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50") == b"\x05\x00" + socks5.build_reply(1)


def test_username_only_means_no_authentication():
    server = socks5.ServerNegotiation("user", None)
    assert run_server(server, b"\x05\x01\x00") == b"\x05\x00"


# ------------------------------------------------------------------ client against server


def converse(client, server, chunk):
    """Pipe a client negotiation into a server negotiation, ``chunk`` bytes at a time."""
    to_server = client.initial()
    while to_server:
        to_client = run_server(server, to_server, chunk)
        if server.phase is Phase.DONE:
            to_client += socks5.build_reply(0, "10.0.0.1", 4242) + b"first target bytes"
        to_server = b""
        for start in range(0, len(to_client), chunk):
            client.receive_data(to_client[start : start + chunk])
            to_server += client.data_to_send()


@settings(max_examples=60, deadline=None)
@given(
    auth=st.booleans(),
    chunk=st.integers(1, 64),
    host=st.sampled_from(["example.com", "127.0.0.1", "2001:db8::7", "ü.example"]),
    port=st.integers(1, 65535),
)
def test_client_and_server_negotiations_agree(auth, chunk, host, port):
    credentials = ("user", "pa:ss") if auth else (None, None)
    client = socks5.ClientNegotiation(host, port, *credentials)
    server = socks5.ServerNegotiation(*credentials)
    converse(client, server, chunk)
    assert server.request == socks5.Request(socks5.CMD_CONNECT, host, port)
    assert client.phase is Phase.DONE
    assert client.reply == socks5.Reply(0, "10.0.0.1", 4242)
    assert client.leftover == b"first target bytes"


def test_client_reports_proxy_reply_code_and_auth_failure():
    client = socks5.ClientNegotiation("example.com", 80)
    client.initial()
    client.receive_data(b"\x05\x00" + socks5.build_reply(Rep.CONNECTION_REFUSED))
    assert client.phase is Phase.FAILED and client.error.reply == Rep.CONNECTION_REFUSED
    client = socks5.ClientNegotiation("example.com", 80, "u", "p")
    client.receive_data(b"\x05\x02")
    assert client.data_to_send() == socks5.build_userpass("u", "p")
    client.receive_data(b"\x01\x01")
    assert client.phase is Phase.FAILED and "authentication" in str(client.error)
    client = socks5.ClientNegotiation("example.com", 80)
    client.receive_data(b"\x05\xff")
    assert client.phase is Phase.FAILED


# ------------------------------------------------------------------ properties

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a)))
domain = st.binary(min_size=1, max_size=255).map(lambda b: b.decode("utf-8", "surrogateescape")).filter(
    lambda h: socks5.address_type(h) == socks5.ATYP_DOMAIN
)
hosts = st.one_of(ipv4, ipv6, domain)
ports = st.integers(0, 65535)


def same_host(a: str, b: str) -> bool:
    if socks5.address_type(a) == socks5.ATYP_IPV6:
        return ipaddress.IPv6Address(a) == ipaddress.IPv6Address(b)
    return a == b


@settings(max_examples=300, deadline=None)
@given(command=st.integers(0, 255), host=hosts, port=ports)
def test_request_round_trip(command, host, port):
    raw = socks5.build_request(command, host, port)
    request, used = socks5.parse_request(raw + b"more")
    assert used == len(raw)
    assert request.command == command and request.port == port and same_host(request.host, host)


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 255), host=hosts, port=ports)
def test_reply_round_trip(code, host, port):
    reply, used = socks5.parse_reply(socks5.build_reply(code, host, port))
    assert reply.reply == code and reply.port == port and same_host(reply.host, host)


@settings(max_examples=200, deadline=None)
@given(host=hosts, port=ports, data=st.binary(max_size=512), frag=st.integers(0, 255))
def test_udp_round_trip(host, port, data, frag):
    datagram = socks5.parse_udp_datagram(socks5.build_udp_datagram(host, port, data, frag))
    assert (datagram.port, datagram.data, datagram.frag) == (port, data, frag) and same_host(datagram.host, host)


@settings(max_examples=200, deadline=None)
@given(username=st.text(max_size=80), password=st.text(max_size=80))
def test_userpass_round_trip(username, password):
    try:
        raw = socks5.build_userpass(username, password)
    except Socks5Error:
        return  # unencodable surrogates, or longer than 255 bytes
    assert socks5.parse_userpass(raw) == (socks5.UserPassAuth(username, password), len(raw))


@settings(max_examples=200, deadline=None)
@given(methods=st.binary(min_size=1, max_size=255))
def test_greeting_round_trip(methods):
    assert socks5.parse_greeting(socks5.build_greeting(methods)) == (socks5.Greeting(methods), len(methods) + 2)


PARSERS = [
    socks5.parse_greeting,
    socks5.parse_method_selection,
    socks5.parse_userpass,
    socks5.parse_userpass_status,
    socks5.parse_request,
    socks5.parse_reply,
]


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_socks5_error(data):
    for parse in PARSERS:
        try:
            result = parse(data)
        except Socks5Error:
            continue
        assert result is None or 0 < result[1] <= len(data)
    try:
        socks5.parse_udp_datagram(data)
    except Socks5Error:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 16), auth=st.booleans())
def test_server_negotiation_survives_random_bytes(data, chunk, auth):
    server = socks5.ServerNegotiation(*(("u", "p") if auth else (None, None)))
    run_server(server, data, chunk)
    assert server.phase in set(Phase)
    if server.phase is Phase.DONE:
        assert server.request is not None
    if server.phase is Phase.FAILED:
        assert isinstance(server.error, Socks5Error)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 16))
def test_client_negotiation_survives_random_bytes(data, chunk):
    client = socks5.ClientNegotiation("example.com", 443, "u", "p")
    for start in range(0, len(data), chunk):
        client.receive_data(data[start : start + chunk])
        client.data_to_send()
    assert client.phase is not Phase.FAILED or isinstance(client.error, Socks5Error)
