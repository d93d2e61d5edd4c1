"""No silent loss across a WebSocket cut (issue "No silent loss", item 3; spec case 44).

Real processes: a hatchway server and a hatchway client, whose WebSocket runs
through a CuttableProxy (TCP, reset on cut). A transfer is cut in the middle,
the client reconnects and resumes its channel. The application must then get
every byte in order exactly once (SHA-256 over the whole stream), or a loud
error; never a hole followed by a clean EOF, never a hang without a deadline.
Between two hatchway peers the bytes lost in flight are re-sent, so the
transfer must complete.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading

import ls_harness as h
import pytest

from helpers import wait_until_blocking

SIZE = 48 * h.MiB
CUT_AT = (6 * h.MiB, 20 * h.MiB)


@pytest.fixture
def cut_pair(procs, tmp_path):
    ws_port, socks_port = h.free_port(), h.free_port()
    server = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok", name="server")
    h.wait_port(ws_port)
    proxy = h.CuttableProxy(ws_port)
    client = procs.hatchway("client", "-t", "tok", "-u", f"ws://127.0.0.1:{proxy.port}", "-s", "127.0.0.1",
                            "-p", str(socks_port), "-d", name="client")
    h.wait_port(socks_port)
    try:
        yield proxy, socks_port, server, client
    finally:
        proxy.close()


def _wait_reconnected(proxy: h.CuttableProxy, before: int) -> None:
    wait_until_blocking(lambda: proxy.accepted > before, timeout=30, what="the client to reconnect")


def test_download_cut_twice_arrives_whole(cut_pair, target):
    proxy, socks, _, client = cut_pair
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=60)
    with sock:
        sock.sendall(b"D" + struct.pack("!Q", SIZE))
        digest, count, cuts = hashlib.sha256(), 0, list(CUT_AT)
        while count < SIZE:
            data = sock.recv(262144)
            if not data:
                break
            digest.update(data)
            count += len(data)
            if cuts and count >= cuts[0]:
                cuts.pop(0)
                before = proxy.accepted
                proxy.cut()
                _wait_reconnected(proxy, before)
    assert count == SIZE, f"clean EOF after {count} of {SIZE} bytes\n{client.output()[-2000:]}"
    assert digest.hexdigest() == h.expected_download(SIZE), "a hole or reordering in the stream"


def test_upload_cut_twice_arrives_whole(cut_pair, target):
    proxy, socks, _, client = cut_pair
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=60)
    with sock:
        sock.sendall(b"U" + struct.pack("!Q", SIZE))
        digest, sent, cuts = hashlib.sha256(), 0, list(CUT_AT)
        block = os.urandom(h.MiB)
        while sent < SIZE:
            piece = block[: min(len(block), SIZE - sent)]
            piece = struct.pack("!Q", sent) + piece[8:]
            digest.update(piece)
            sock.sendall(piece)
            sent += len(piece)
            if cuts and sent >= cuts[0]:
                cuts.pop(0)
                before = proxy.accepted
                proxy.cut()
                _wait_reconnected(proxy, before)
        assert h._recv_exact(sock, 32) == digest.digest(), "the target got a stream with a hole"


def test_echo_cut_mid_transfer_arrives_whole(cut_pair, target):
    proxy, socks, _, _ = cut_pair
    size = 24 * h.MiB
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=60)
    sent_digest, got_digest = hashlib.sha256(), hashlib.sha256()
    result: dict[str, object] = {}

    def reader() -> None:
        count = 0
        try:
            while count < size:
                data = sock.recv(262144)
                if not data:
                    break
                got_digest.update(data)
                count += len(data)
        except OSError as exc:
            result["error"] = exc
        result["count"] = count

    with sock:
        sock.sendall(b"E")
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        block = os.urandom(256 * 1024)
        sent = 0
        cut_done = False
        while sent < size:
            piece = struct.pack("!Q", sent) + block[8:]
            sent_digest.update(piece)
            sock.sendall(piece)
            sent += len(piece)
            if not cut_done and sent >= size // 3:
                cut_done = True
                before = proxy.accepted
                proxy.cut()
                _wait_reconnected(proxy, before)
        thread.join(90)
    assert not thread.is_alive(), "the echo hung"
    assert "error" not in result, result
    assert result["count"] == size
    assert got_digest.hexdigest() == sent_digest.hexdigest()


def test_without_grace_a_cut_resets_the_application(procs, target):
    """--transport-grace 0: the channel fails loudly (an error, not a clean EOF mid-stream)."""
    ws_port, socks_port = h.free_port(), h.free_port()
    procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok", name="server")
    h.wait_port(ws_port)
    proxy = h.CuttableProxy(ws_port)
    try:
        procs.hatchway("client", "-t", "tok", "-u", f"ws://127.0.0.1:{proxy.port}", "-s", "127.0.0.1",
                       "-p", str(socks_port), "--transport-grace", "0s", name="client")
        h.wait_port(socks_port)
        sock, _ = h.socks_connect(socks_port, "127.0.0.1", target.port, timeout=60)
        with sock:
            sock.sendall(b"D" + struct.pack("!Q", SIZE))
            count = 0
            with pytest.raises(ConnectionError):
                while True:
                    data = sock.recv(262144)
                    if not data:
                        raise AssertionError(f"clean EOF after {count} of {SIZE} bytes")
                    count += len(data)
                    if count >= 4 * h.MiB and proxy.accepted == 1:
                        proxy.cut()
    finally:
        proxy.close()


def test_server_killed_mid_download_resets_the_application(procs, target):
    """#6 item 4: the server dies (SIGKILL); once the grace period is over the SOCKS client gets a reset, not a FIN."""
    ws_port, socks_port = h.free_port(), h.free_port()
    server = procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok", name="server")
    h.wait_port(ws_port)
    procs.hatchway("client", "-t", "tok", "-u", f"ws://127.0.0.1:{ws_port}", "-s", "127.0.0.1",
                   "-p", str(socks_port), "--transport-grace", "1s", name="client")
    h.wait_port(socks_port)
    sock, _ = h.socks_connect(socks_port, "127.0.0.1", target.port, timeout=60)
    with sock:
        sock.sendall(b"D" + struct.pack("!Q", SIZE))
        count = 0
        with pytest.raises(ConnectionError):
            while True:
                data = sock.recv(262144)
                if not data:
                    raise AssertionError(f"clean EOF after {count} of {SIZE} bytes")
                count += len(data)
                if count >= 4 * h.MiB and server.alive():
                    server.kill()


# ------------------------------------------------------------------ an upstream peer (no byte ledger)
# Go 1.10.1 keeps no ledger: whatever was in flight at the cut cannot be re-sent or even counted, so a
# Resume could only carry on after a hole. hatchway resets such a channel at the cut instead: the
# application sees the whole SHA-256-correct stream or an error, never a clean EOF after a hole, never a hang.

GO_SIZE = 32 * h.MiB
GO_CUT_AT = 4 * h.MiB


def _download_whole_or_reset(sock, proxy, size: int) -> str:
    """Read a download, cutting the WebSocket once; 'whole' or 'reset'. A short clean EOF or a hang fails."""
    sock.settimeout(60)  # a hang ends the test as socket.timeout (an OSError, not a ConnectionError)
    sock.sendall(b"D" + struct.pack("!Q", size))
    digest, count, cut = hashlib.sha256(), 0, False
    try:
        while count < size:
            data = sock.recv(262144)
            if not data:
                raise AssertionError(f"clean EOF after {count} of {size} bytes: a hole passed silently")
            digest.update(data)
            count += len(data)
            if not cut and count >= GO_CUT_AT:
                cut = True
                proxy.cut()
    except ConnectionError:
        return "reset"
    assert digest.hexdigest() == h.expected_download(size), "a hole or reordering in the stream"
    return "whole"


def _upload_whole_or_reset(sock, proxy, size: int) -> str:
    sock.settimeout(60)
    sock.sendall(b"U" + struct.pack("!Q", size))
    digest, sent, cut = hashlib.sha256(), 0, False
    block = os.urandom(h.MiB)
    try:
        while sent < size:
            piece = struct.pack("!Q", sent) + block[8:]
            digest.update(piece)
            sock.sendall(piece)
            sent += len(piece)
            if not cut and sent >= GO_CUT_AT:
                cut = True
                proxy.cut()
        answer = b""
        while len(answer) < 32:
            data = sock.recv(32 - len(answer))
            if not data:
                raise AssertionError("clean EOF instead of the target's digest")
            answer += data
    except ConnectionError:
        return "reset"
    assert answer == digest.digest(), "the target got a stream with a hole"
    return "whole"


@pytest.fixture
def go_server_pair(procs, peer110):
    ws_port, socks_port = h.free_port(), h.free_port()
    procs.start(peer110.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok"), "go-server")
    h.wait_port(ws_port, 30)
    proxy = h.CuttableProxy(ws_port)
    procs.hatchway("client", "-t", "tok", "-u", f"ws://127.0.0.1:{proxy.port}", "-s", "127.0.0.1",
                   "-p", str(socks_port), name="client")
    h.wait_port(socks_port)
    try:
        yield proxy, socks_port
    finally:
        proxy.close()


@pytest.fixture
def go_client_pair(procs, peer110):
    ws_port, socks_port = h.free_port(), h.free_port()
    procs.hatchway("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", "tok", name="server")
    h.wait_port(ws_port)
    proxy = h.CuttableProxy(ws_port)
    procs.start(peer110.linksocks("client", "-t", "tok", "-u", f"ws://127.0.0.1:{proxy.port}", "-s", "127.0.0.1",
                                  "-p", str(socks_port), "--direct-mode", "relay-only"), "go-client")
    h.wait_port(socks_port, 30)
    try:
        yield proxy, socks_port
    finally:
        proxy.close()


@pytest.mark.interop
@pytest.mark.parametrize("transfer", [_download_whole_or_reset, _upload_whole_or_reset], ids=["download", "upload"])
def test_go_server_cut_mid_transfer_never_a_silent_hole(go_server_pair, target, transfer):
    proxy, socks = go_server_pair
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=60)
    with sock:
        assert transfer(sock, proxy, GO_SIZE) == "reset"  # a hole cannot be ruled out: loudly, never resumed
    _wait_reconnected(proxy, 1)
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=60)  # the link itself carries on
    with sock:
        assert transfer(sock, proxy, 2 * h.MiB) == "whole"


@pytest.mark.interop
def test_go_client_cut_mid_download_never_a_hole(go_client_pair, target):
    """The Go client (requester) carries on as upstream does; hatchway's dialer ends the channel instead.

    How the Go client ends its SOCKS socket is upstream's choice (a FIN); what hatchway controls is
    that no byte after a possible hole is delivered and that the end comes without a hang.
    """
    proxy, socks = go_client_pair
    sock, _ = h.socks_connect(socks, "127.0.0.1", target.port, timeout=60)
    with sock:
        sock.settimeout(60)  # a hang fails the test (socket.timeout)
        sock.sendall(b"D" + struct.pack("!Q", GO_SIZE))
        received, cut = bytearray(), False
        try:
            while len(received) < GO_SIZE:
                data = sock.recv(262144)
                if not data:
                    break
                received += data
                if not cut and len(received) >= GO_CUT_AT:
                    cut = True
                    proxy.cut()
        except ConnectionError:
            pass
    count = len(received)
    assert hashlib.sha256(received).hexdigest() == h.expected_download(count), f"a hole within {count} bytes"
