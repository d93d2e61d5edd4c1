"""Container-side helpers: the callback forwarder (cases 51-54, 84-86), host-open (90), the git credential helper."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hatchway.hostproxy.credhelper import read_request, run_credential_helper
from hatchway.hostproxy.forwarder import ForwardError, build_url, forward, run_forwarder
from hatchway.hostproxy.hostopen import oauth_callback, run_host_open
from hatchway.hostproxy.proxyclient import ProxyClient, ProxyReply


class Recorder(BaseHTTPRequestHandler):
    status = 200
    seen: list[dict[str, Any]]

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                          "body": body, "server": self.server.server_address[0]})
        self.send_response(self.status)
        if self.status == 302:
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _any

    def log_message(self, *args: Any) -> None:
        pass


class V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[int, list[dict[str, Any]], type[Recorder]]]:
    """A listener on 127.0.0.1 only (param "v4"), on ::1 only ("v6")."""
    seen: list[dict[str, Any]] = []
    handler = type("H", (Recorder,), {"seen": seen})
    kind = getattr(request, "param", "v4")
    port = free_port()
    server = V6Server(("::1", port), handler) if kind == "v6" else ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port, seen, handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_build_url() -> None:
    assert build_url("localhost", 5, "/cb", "a=b") == "http://localhost:5/cb?a=b"
    assert build_url("127.0.0.1", 5, "/cb") == "http://127.0.0.1:5/cb"
    assert build_url("::1", 5, "/cb") == "http://[::1]:5/cb"


CAPTURE = {"method": "GET", "path": "/callback", "query": "code=a%2Fb&state=s",
           "headers": {"User-Agent": "ua", "Host": "evil", "Content-Length": "99", "Transfer-Encoding": "chunked",
                       "Connection": "close", "Keep-Alive": "1", "Upgrade": "h2c", "X-Custom": "1"}}


@pytest.mark.parametrize("listener", ["v4", "v6"], indirect=True)
def test_forward_reaches_v4_or_v6_only_listener_without_hop_by_hop(listener: Any) -> None:
    port, seen, _ = listener
    host, status = forward(CAPTURE, port)
    assert status == 200 and len(seen) == 1
    got = seen[0]
    assert got["path"] == "/callback?code=a%2Fb&state=s"
    assert got["headers"]["User-Agent"] == "ua" and got["headers"]["X-Custom"] == "1"
    assert got["headers"]["Host"] == f"{'[::1]' if host == '::1' else host}:{port}"
    for name in ("Content-Length", "Transfer-Encoding", "Keep-Alive", "Upgrade"):
        assert name not in got["headers"]


def test_all_hosts_fail_names_each() -> None:
    with pytest.raises(ForwardError) as info:
        forward(CAPTURE, free_port())
    text = str(info.value)
    assert "localhost:" in text and "127.0.0.1:" in text and "::1:" in text


@pytest.mark.parametrize("status", [400, 302])
def test_http_answer_is_final_no_replay_no_redirect(listener: Any, status: int) -> None:
    port, seen, handler = listener
    handler.status = status
    proxy = FakeProxy([ProxyReply(200, json.dumps({"received": True, "callback": CAPTURE}).encode())])
    code = run_forwarder("s" * 32, port, proxy, poll=0, err=io.StringIO(), sleep=lambda _: None)  # type: ignore[arg-type]
    assert len(seen) == 1  # not replayed on 127.0.0.1 / [::1]; the redirect is not followed
    assert code == (1 if status == 400 else 0)
    assert proxy.calls[-1] == ("DELETE", "/callback/" + "s" * 32)


class FakeProxy:
    def __init__(self, replies: list[ProxyReply | OSError]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: Any = None) -> ProxyReply:
        self.calls.append((method, path))
        if method == "DELETE":
            return ProxyReply(200, b'{"success":true}')
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, OSError):
            raise reply
        return reply


def test_forwarder_polls_until_received_and_handles_404_and_timeout(listener: Any) -> None:
    port, seen, _ = listener
    waiting = ProxyReply(200, b'{"received":false}')
    done = ProxyReply(200, json.dumps({"received": True, "callback": CAPTURE}).encode())
    proxy = FakeProxy([OSError("refused"), OSError("refused"), OSError("refused"), waiting, done])
    err = io.StringIO()
    assert run_forwarder("id", port, proxy, poll=0, err=err, sleep=lambda _: None) == 0  # type: ignore[arg-type]
    assert "cannot reach the host proxy" in err.getvalue() and len(seen) == 1
    gone = FakeProxy([ProxyReply(404, b'{"received":false,"error":"session not found or expired"}')])
    assert run_forwarder("id", port, gone, poll=0, err=io.StringIO(), sleep=lambda _: None) == 1  # type: ignore[arg-type]
    ticks = iter(range(1000))
    slow = FakeProxy([waiting])
    err = io.StringIO()
    assert run_forwarder("id", port, slow, timeout=5, poll=1, err=err, sleep=lambda _: None,  # type: ignore[arg-type]
                         clock=lambda: float(next(ticks))) == 1
    assert "Timeout waiting for OAuth callback" in err.getvalue()


@pytest.mark.parametrize("url,expected", [
    ("https://a.example/auth?redirect_uri=http%3A%2F%2F%5B%3A%3A1%5D%3A4321%2Fcallback", (4321, "/callback")),
    ("https://a.example/auth?redirect_uri=http%3A%2F%2Flocalhost%3A8085%2Fcb%3Fx%3D1&state=1", (8085, "/cb")),
    ("https://a.example/auth?x=1&callback=http://127.0.0.1:9000/", (9000, "/")),
    ("https://a.example/auth?redirect_uri=https%3A%2F%2Fexample.com%2Fcb", None),
    ("https://a.example/auth?redirect_uri=http%3A%2F%2Flocalhost%2Fcb", None),
    ("https://a.example/plain", None),
])
def test_host_open_recognises_oauth(url: str, expected: tuple[int, str] | None) -> None:
    assert oauth_callback(url) == expected


class RecordingProxy:
    base = "http://127.0.0.1:1"
    token = "t"

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []

    def request(self, method: str, path: str, body: Any = None) -> ProxyReply:
        raw = json.dumps(body).encode()
        json.loads(raw)  # valid JSON whatever the URL holds
        self.bodies.append((path, raw))
        return ProxyReply(200, b'{"success":true}')


def test_host_open_builds_valid_json_for_hostile_urls() -> None:
    proxy = RecordingProxy()
    url = 'https://example.com/a"b\\c\x01\x1f\u2028?q="\n'
    assert run_host_open(url, proxy) == 0  # type: ignore[arg-type]
    assert json.loads(proxy.bodies[0][1]) == {"url": url}


def test_proxy_client_sends_token_and_json(listener: Any) -> None:
    port, seen, _ = listener
    ProxyClient(f"http://127.0.0.1:{port}/", "tok").request("POST", "/open/url", {"url": "x"})
    assert seen[0]["headers"]["Authorization"] == "Bearer tok"
    assert seen[0]["headers"]["Content-Type"] == "application/json"


def test_credential_helper_get_store() -> None:
    assert read_request(io.StringIO("protocol=https\nhost=h\nbogus=1\n\nafter=1\n")) == {"protocol": "https",
                                                                                         "host": "h"}

    class P:
        def __init__(self, status: int, body: dict[str, Any]) -> None:
            self.reply = ProxyReply(status, json.dumps(body).encode())
            self.sent: Any = None

        def request(self, method: str, path: str, body: Any = None) -> ProxyReply:
            self.sent = body
            return self.reply

    ok = P(200, {"success": True, "protocol": "https", "host": "h", "username": "u", "password": "p"})
    out = io.StringIO()
    assert run_credential_helper("get", ok, io.StringIO("protocol=https\nhost=h\n\n"), out) == 0  # type: ignore[arg-type]
    assert out.getvalue() == "protocol=https\nhost=h\nusername=u\npassword=p\n"
    assert ok.sent == {"action": "get", "protocol": "https", "host": "h"}
    refused = P(403, {"success": False, "error": "host not allowed: h"})
    err = io.StringIO()
    assert run_credential_helper("get", refused, io.StringIO("\n"), io.StringIO(), err) == 1  # type: ignore[arg-type]
    assert "host not allowed" in err.getvalue()
    assert run_credential_helper("store", P(200, {"success": False}), io.StringIO("\n")) == 0  # type: ignore[arg-type]


def test_host_open_does_not_open_when_registration_fails() -> None:
    class Refusing(RecordingProxy):
        def request(self, method: str, path: str, body: Any = None) -> ProxyReply:
            self.bodies.append((path, json.dumps(body).encode()))
            if path == "/callback/register":
                return ProxyReply(500, b'{"success":false,"error":"failed to start listener on port 8085: in use"}')
            return ProxyReply(200, b'{"success":true}')

    proxy = Refusing()
    err = io.StringIO()
    url = "https://a.example/auth?redirect_uri=http%3A%2F%2Flocalhost%3A8085%2Fcallback"
    assert run_host_open(url, proxy, err=err) == 1  # type: ignore[arg-type]
    assert [p for p, _ in proxy.bodies] == ["/callback/register"] and "port 8085" in err.getvalue()


def test_cli_roles_require_their_inputs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hatchway.hostproxy.cli import main

    for name in ("CALLBACK_SESSION", "CALLBACK_PORT", "CLAWKER_HOST_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["callback-forwarder"]) == 1
    assert main(["open", "https://example.com/"]) == 1
    assert "CLAWKER_HOST_PROXY is not set" in capsys.readouterr().err
