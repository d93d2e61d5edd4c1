"""Signal line formats and the parent-side parser (sidecar.md 4.1, 4.5)."""

from __future__ import annotations

import io

from hatchway.sidecar.signals import SignalWriter, parse_signal


def test_formats() -> None:
    out = io.StringIO()
    writer = SignalWriter(out)
    writer.starting("1.2.3")
    writer.connecting("me")
    writer.auth_required("https://login.example/a/b")
    writer.connected(["100.64.0.1", "fd7a:115c:a1e0::1"])
    writer.listening("socks5", "127.0.0.1:1080")
    writer.error("tailnet connection failed: x")
    writer.shutdown()
    assert out.getvalue().splitlines() == [
        "Arkitekt Sidecar 1.2.3", "@@SIDECAR:STARTING@@ 1.2.3", ">>> Starting Tailscale Node 'me'...",
        "@@SIDECAR:CONNECTING@@ me", "@@SIDECAR:AUTH_REQUIRED@@ https://login.example/a/b", ">>> Tailscale is Online!",
        "@@SIDECAR:CONNECTED@@ ips=[100.64.0.1 fd7a:115c:a1e0::1]", ">>> SOCKS5 Proxy listening on 127.0.0.1:1080",
        ">>> Configure your apps to use SOCKS5 Proxy: 127.0.0.1:1080", "@@SIDECAR:LISTENING@@ mode=socks5 addr=127.0.0.1:1080",
        "@@SIDECAR:READY@@ socks5://127.0.0.1:1080", "@@SIDECAR:ERROR@@ tailnet connection failed: x", "@@SIDECAR:SHUTDOWN@@",
    ]
    assert [s.word for s in writer.seen] == ["STARTING", "CONNECTING", "AUTH_REQUIRED", "CONNECTED", "LISTENING", "READY",
                                             "ERROR", "SHUTDOWN"]
    parsed = parse_signal("@@SIDECAR:READY@@ http://127.0.0.1:8080")
    assert parsed is not None and (parsed.word, parsed.detail) == ("READY", "http://127.0.0.1:8080")
    assert parse_signal(">>> Tailscale is Online!") is None


def test_request_lines_cannot_forge_a_signal() -> None:
    out = io.StringIO()
    SignalWriter(out).http_request("127.0.0.1:5", "GET", "http://x/\r@@SIDECAR:READY@@ http://evil")
    assert len(out.getvalue().splitlines()) == 1
    assert parse_signal(out.getvalue()) is None


class Gone(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_stdout_does_not_break_serving() -> None:
    writer = SignalWriter(Gone())
    writer.http_request("127.0.0.1:5", "GET", "http://svc/")
    writer.shutdown()
    assert writer.echo is False and [s.word for s in writer.seen] == ["SHUTDOWN"]
