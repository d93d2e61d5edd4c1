"""The daemon's HTTP API over real sockets: spec section 2, acceptance cases 21-31, 66-70, 87-88, 91-94."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from hp_harness import TOKEN_A, TOKEN_B, Proxy, make_server

from hatchway.hostproxy.server import HostProxyServer
from helpers import wait_until

ENDPOINTS = [("POST", "/open/url"), ("POST", "/git/credential"), ("POST", "/callback/register"),
             ("GET", "/callback/" + "0" * 32 + "/data"), ("DELETE", "/callback/" + "0" * 32),
             ("GET", "/cb/" + "0" * 32 + "/x")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refuses(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        return s.connect_ex((host, port)) != 0


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_health_head_405_404(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.base + "/health") as r:
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.text() == '{"status":"ok","service":"clawker-host-proxy"}\n'
    async with proxy.http.head(proxy.base + "/health") as r:
        assert r.status == 200
    async with proxy.http.get(proxy.base + "/open/url", headers=proxy.headers()) as r:
        assert r.status == 405 and "POST" in r.headers["Allow"]
    async with proxy.http.get(proxy.base + "/nowhere", headers=proxy.headers()) as r:
        assert r.status == 404 and r.content_type == "text/plain"


@pytest.mark.parametrize("body,error", [
    (b"not json", "invalid JSON request body"),
    (b"{}", "url field is required"),
    (b'{"url":""}', "url field is required"),
    (b'{"url":"file:///etc/passwd"}', "only http and https URLs are allowed"),
    (b'{"url":"javascript:alert(1)"}', "only http and https URLs are allowed"),
    (b'{"url":"data:text/html,x"}', "only http and https URLs are allowed"),
    (b'{"url":"/relative"}', "only http and https URLs are allowed"),
    (b'{"url":"http://[::1"}', "invalid URL format"),
    (b"null", "url field is required"),
    (b'{"URL":""} trailing', "url field is required"),
    (b'{"url":5}', "invalid JSON request body"),
    (b'{"url":' + b'"' + b"x" * (1 << 20) + b'"}', "invalid JSON request body"),
])
async def test_open_url_errors(proxy: Proxy, body: bytes, error: str) -> None:
    status, reply = await proxy.post("/open/url", raw=body)
    assert (status, reply["success"], reply["error"]) == (400, False, error)
    assert proxy.opener.calls == []


async def test_go_decoding_rules(proxy: Proxy) -> None:
    """First JSON value only, keys case-insensitive, unknown fields ignored."""
    status, reply = await proxy.post("/open/url", raw=b'{"URL":"https://e.com/","extra":1} {"url":"x"}')
    assert (status, reply) == (200, {"success": True, "url": "https://e.com/"})


async def test_open_url_success_and_opener_failure(proxy: Proxy) -> None:
    status, reply = await proxy.post("/open/url", {"url": "HTTPS://example.com/a?b=c"})
    assert (status, reply) == (200, {"success": True, "url": "HTTPS://example.com/a?b=c"})
    assert proxy.opener.calls == ["HTTPS://example.com/a?b=c"]
    proxy.opener.fail = "exit status 3"
    status, reply = await proxy.post("/open/url", {"url": "https://example.com/"})
    assert (status, reply) == (500, {"success": False, "url": "https://example.com/", "error": "exit status 3"})


async def test_open_url_one_mebibyte_plus_one(proxy: Proxy) -> None:
    raw = b'{"url":"https://e.com/"}' + b" " * ((1 << 20) + 1 - 24)
    assert len(raw) == (1 << 20) + 1
    status, reply = await proxy.post("/open/url", raw=raw)
    assert (status, reply["error"]) == (400, "invalid JSON request body")


async def test_register_data_delete_via_legacy_route(proxy: Proxy) -> None:
    port = free_port()
    status, reply = await proxy.post("/callback/register", {"port": port, "path": "/cb", "timeout_seconds": 60})
    assert status == 200 and reply["success"] is True and re.fullmatch(r"[0-9a-f]{32}", reply["session_id"])
    assert "proxy_callback_base" not in reply and datetime.fromisoformat(reply["expires_at"]).tzinfo is not None
    sid = reply["session_id"]
    assert await proxy.get(f"/callback/{sid}/data") == (200, {"received": False})
    async with proxy.http.get(f"{proxy.base}/cb/{sid}/cb?code=abc&state=s", headers=proxy.headers()) as r:
        assert r.status == 200 and r.content_type == "text/html" and "Authentication Complete" in await r.text()
    async with proxy.http.get(f"{proxy.base}/cb/{sid}/cb?code=dup", headers=proxy.headers()) as r:
        assert r.status == 200
    status, reply = await proxy.get(f"/callback/{sid}/data")
    assert status == 200 and reply["received"] is True
    assert reply["callback"]["query"] == "code=abc&state=s" and reply["callback"]["path"] == f"/cb/{sid}/cb"
    async with proxy.http.get(f"{proxy.base}/cb/{sid}/cb?code=other", headers=proxy.headers(TOKEN_B)) as r:
        assert r.status == 404  # another container cannot inject into this session
    async with proxy.http.get(f"{proxy.base}/cb/{'f' * 32}/x", headers=proxy.headers()) as r:
        assert r.status == 404 and await r.text() == "Session not found or expired"
    assert await proxy.delete(f"/callback/{sid}") == (200, {"success": True})
    assert await proxy.get(f"/callback/{sid}/data") == (404, {"received": False, "error": "session not found or expired"})
    assert await proxy.delete(f"/callback/{'e' * 32}") == (200, {"success": True})


@pytest.mark.parametrize("body,error", [
    (b"nope", "invalid JSON request body"),
    (b'{"port":"abc"}', "invalid JSON request body"),
    (b'{"port":0}', "port must be between 1 and 65535"),
    (b'{"port":-1}', "port must be between 1 and 65535"),
    (b'{"port":70000}', "port must be between 1 and 65535"),
])
async def test_register_errors(proxy: Proxy, body: bytes, error: str) -> None:
    status, reply = await proxy.post("/callback/register", raw=body)
    assert (status, reply) == (400, {"success": False, "error": error})


async def test_dynamic_listener_over_real_sockets(proxy: Proxy) -> None:
    port = free_port()
    status, reply = await proxy.post("/callback/register", {"port": port})
    sid = reply["session_id"]
    assert not refuses(port)
    six = has_ipv6()
    if six:
        assert not refuses(port, "::1")
    async with proxy.http.get(f"http://127.0.0.1:{port}/callback?code=c1&state=s1",
                              headers={"Cookie": "x", "X-Extra": "1"}) as r:
        assert r.status == 200 and "Authentication Complete" in await r.text()
    data = (await proxy.get(f"/callback/{sid}/data"))[1]["callback"]
    assert data["query"] == "code=c1&state=s1" and data["path"] == "/callback" and data["method"] == "GET"
    assert "Cookie" not in data["headers"] and data["headers"]["X-Extra"] == "1" and "Host" not in data["headers"]
    if six:  # the same over [::1]: a duplicate, success page, first capture kept
        async with proxy.http.get(f"http://[::1]:{port}/callback?code=c2") as r:
            assert r.status == 200
        assert (await proxy.get(f"/callback/{sid}/data"))[1]["callback"]["query"] == "code=c1&state=s1"
    await proxy.delete(f"/callback/{sid}")
    assert refuses(port) and (not six or refuses(port, "::1"))


async def test_register_port_held_by_this_daemon_or_another_process(proxy: Proxy) -> None:
    port = free_port()
    assert (await proxy.post("/callback/register", {"port": port}))[0] == 200
    status, reply = await proxy.post("/callback/register", {"port": port}, token=TOKEN_B)
    assert status == 500 and reply["error"].startswith(f"failed to start listener on port {port}: ")
    assert "already exists" in reply["error"]
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    other = held.getsockname()[1]
    try:
        before = proxy.server.store.count()
        status, reply = await proxy.post("/callback/register", {"port": other}, token=TOKEN_B)
        assert status == 500 and reply["error"].startswith(f"failed to start listener on port {other}: ")
        assert proxy.server.store.count() == before  # the new session was deleted again
    finally:
        held.close()


async def test_expiry_closes_the_listener(tmp_path: Any) -> None:
    server, _ = make_server(tmp_path, cleanup_interval=0.05)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            port = free_port()
            async with http.post(f"http://127.0.0.1:{server.port}/callback/register",
                                 json={"port": port, "timeout_seconds": 1},
                                 headers={"Authorization": f"Bearer {TOKEN_A}"}) as r:
                assert r.status == 200
            assert not refuses(port)
            await wait_until(lambda: refuses(port), timeout=5, what="listener closed after TTL + sweep")
            assert server.store.count() == 0
    finally:
        await server.aclose()


async def test_post_body_in_segments_captured_whole(tmp_path: Any) -> None:
    server, _ = make_server(tmp_path, callback_any_method=True)
    await server.start()
    try:
        port = free_port()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{server.port}/callback/register", json={"port": port},
                                 headers={"Authorization": f"Bearer {TOKEN_A}"}) as r:
                sid = (await r.json())["session_id"]
            body = bytes(range(97, 123)) * 2000  # 52,000 bytes
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST /callback HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode())
            for i in range(0, len(body), 7000):
                writer.write(body[i:i + 7000])
                await writer.drain()
                await asyncio.sleep(0)
            head = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert head.startswith(b"HTTP/1.1 200")
            async with http.get(f"http://127.0.0.1:{server.port}/callback/{sid}/data",
                                headers={"Authorization": f"Bearer {TOKEN_A}"}) as r:
                reply = await r.json()
            assert reply["received"] is True and reply["callback"]["body"] == body.decode()
    finally:
        await server.aclose()


async def test_stop_twice_with_live_sessions_and_never_started(tmp_path: Any) -> None:
    server, _ = make_server(tmp_path)
    await server.start()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{server.port}/callback/register", json={"port": free_port()},
                             headers={"Authorization": f"Bearer {TOKEN_A}"}) as r:
            assert r.status == 200
    await server.aclose()
    await server.aclose()
    never, _ = make_server(tmp_path)
    assert not never.running
    await never.aclose()


def test_port_accessor_and_validation(tmp_path: Any) -> None:
    from hatchway.hostproxy.server import ServerConfig

    assert HostProxyServer(ServerConfig(port=18374)).port == 18374
    with pytest.raises(ValueError):
        HostProxyServer(ServerConfig(port=70000))


# ---------------------------------------------------------------- security requirements


@pytest.mark.parametrize("method,path", ENDPOINTS)
@pytest.mark.parametrize("token", [None, "wrong-" * 8])
async def test_token_required_everywhere_but_health(proxy: Proxy, method: str, path: str, token: str | None) -> None:
    async with proxy.http.request(method, proxy.base + path, data=b"{}", headers=proxy.headers(token)) as r:
        assert r.status == 401
    async with proxy.http.get(proxy.base + "/health") as r:
        assert await r.json() == {"status": "ok", "service": "clawker-host-proxy"}


async def test_token_revoked_after_container_dies(proxy: Proxy) -> None:
    assert (await proxy.post("/open/url", {"url": "https://example.com/"}))[0] == 200
    proxy.server.tokens.revoke_container("container-a")
    assert (await proxy.post("/open/url", {"url": "https://example.com/"}))[0] == 401


@pytest.mark.parametrize("path,body", [("/open/url", {"url": "https://example.com/"}),
                                       ("/callback/register", {"port": 0}),
                                       ("/git/credential", {"action": "get", "protocol": "https", "host": "github.com"})])
@pytest.mark.parametrize("headers,status", [
    ({"Origin": "https://evil.example"}, 403),
    ({"Content-Type": "text/plain"}, 415),
    ({"Host": "evil.example:18374"}, 403),
    ({"Host": "rebound.example"}, 403),
])
async def test_anti_browser_checks_before_any_side_effect(proxy: Proxy, path: str, body: dict[str, Any],
                                                          headers: dict[str, str], status: int) -> None:
    port = free_port()
    if path == "/callback/register":
        body = {"port": port}
    got, reply = await proxy.post(path, body, headers=headers)
    assert got == status and reply["success"] is False
    assert proxy.opener.calls == [] and refuses(port) and proxy.server.store.count() == 0


@pytest.mark.parametrize("url", [
    "https://user:pw@example.com/", "https://user@example.com/", "http://127.0.0.1/", "http://127.1:8080/",
    "http://[::1]:9/", "http://10.0.0.1/", "http://192.168.1.1/admin", "http://169.254.169.254/latest",
    "http://localhost:5000/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
    "https://example.com/" + "a" * 8192,
])
async def test_open_url_policy_rejects(proxy: Proxy, url: str) -> None:
    status, reply = await proxy.post("/open/url", {"url": url})
    assert status == 400 and reply["success"] is False and proxy.opener.calls == []


async def test_open_url_allows_own_registered_callback_only(proxy: Proxy) -> None:
    port = free_port()
    await proxy.post("/callback/register", {"port": port})
    assert (await proxy.post("/open/url", {"url": f"http://localhost:{port}/callback"}))[0] == 200
    assert (await proxy.post("/open/url", {"url": f"http://localhost:{port}/callback"}, token=TOKEN_B))[0] == 400


async def test_open_url_rate_limit_and_audit(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "hatchway.hostproxy.audit")
    for i in range(10):
        assert (await proxy.post("/open/url", {"url": f"https://example.com/{i}"}))[0] == 200
    status, reply = await proxy.post("/open/url", {"url": "https://example.com/11"})
    assert status == 429 and len(proxy.opener.calls) == 10
    assert (await proxy.post("/open/url", {"url": "https://example.com/b"}, token=TOKEN_B))[0] == 200
    opens = [r.getMessage() for r in caplog.records if r.getMessage().startswith("open container=")]
    assert len(opens) == 11 and "container=container-a" in opens[0] and "container=container-b" in opens[-1]


async def test_callback_policy(proxy: Proxy) -> None:
    status, reply = await proxy.post("/callback/register", {"port": 80})
    assert status == 400 and "1024" in reply["error"]
    ports = [free_port() for _ in range(3)]
    ok = [await proxy.post("/callback/register", {"port": p, "timeout_seconds": 1800}) for p in ports[:2]]
    assert [s for s, _ in ok] == [200, 200]
    expires = datetime.fromisoformat(ok[0][1]["expires_at"]).timestamp()
    assert expires - proxy.server.store.now() <= 601
    status, _ = await proxy.post("/callback/register", {"port": ports[2]})
    assert status == 429 and refuses(ports[2])
    sid = ok[0][1]["session_id"]
    assert (await proxy.get(f"/callback/{sid}/data", token=TOKEN_B))[0] == 404
    assert (await proxy.delete(f"/callback/{sid}", token=TOKEN_B))[0] == 200
    assert proxy.server.store.get(sid) is not None  # another container cannot delete it
    for method, path in (("POST", "/callback"), ("GET", "/other"), ("PUT", "/callback")):
        async with proxy.http.request(method, f"http://127.0.0.1:{ports[0]}{path}?code=x") as r:
            assert r.status == 404
    assert (await proxy.get(f"/callback/{sid}/data"))[1] == {"received": False}
    async with proxy.http.get(f"http://127.0.0.1:{ports[0]}/callback?code=x",
                              headers={"Host": f"evil.example:{ports[0]}"}) as r:
        assert r.status == 404  # DNS rebinding onto the listener
    assert (await proxy.get(f"/callback/{sid}/data"))[1] == {"received": False}


async def test_compat_switch_admits_tokenless_and_warns(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hatchway.hostproxy.server")
    server, opener = make_server(tmp_path, allow_tokenless=True)
    await server.start()
    try:
        assert any("compatibility mode" in r.getMessage() for r in caplog.records)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{server.port}/open/url", json={"url": "https://e.com/"}) as r:
                assert r.status == 200
            async with http.post(f"http://127.0.0.1:{server.port}/open/url", json={"url": "https://e.com/"},
                                 headers={"Authorization": "Bearer unknown"}) as r:
                assert r.status == 401
            form = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
            async with http.post(f"http://127.0.0.1:{server.port}/open/url", data=b'{"url":"https://e.com/2"}',
                                 headers=form) as r:
                assert r.status == 200
            async with http.post(f"http://127.0.0.1:{server.port}/open/url", data=b'{"url":"https://e.com/3"}',
                                 headers={**form, "Origin": "https://evil.example"}) as r:
                assert r.status == 403  # browsers are still kept out
            async with http.post(f"http://127.0.0.1:{server.port}/open/url", data=b'{"url":"https://e.com/4"}',
                                 headers={**form, "Host": "rebound.example:80"}) as r:
                assert r.status == 403
            assert opener.calls == ["https://e.com/", "https://e.com/2"]
    finally:
        await server.aclose()
