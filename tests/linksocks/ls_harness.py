"""Test harness for LinkSocks: targets, SOCKS5 client, peer processes, engine threads.

Everything is loopback, bounded by timeouts, and only stops what it started
(processes by PID). Blocking sockets and threads, so tests using it are
independent of the asyncio loop flavour.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from helpers import wait_until_blocking

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SRC = os.path.join(REPO, "src")
LAUNCHER = os.path.join(HERE, "peer_launcher.py")
BLOCK = os.urandom(1 << 20)  # the repeated random block targets send ('D')
MiB = 1 << 20


# ------------------------------------------------------------------ waiting


def expect_reset(sock: socket.socket, send: bytes = b"", timeout: float = 20.0) -> None:
    """The proxy ends ``sock`` with an error (RST), not a clean EOF that would look like a complete stream."""
    sock.settimeout(timeout)
    try:
        if send:
            sock.sendall(send)
        while True:
            data = sock.recv(65536)
            if not data:
                raise AssertionError("clean EOF where a reset was expected")
    except ConnectionResetError:
        return


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    wait_until_blocking(lambda: port_open(port, host), timeout=timeout, what=f"port {host}:{port}")


# ------------------------------------------------------------------ targets


def expected_download(length: int) -> str:
    digest = hashlib.sha256()
    full, rest = divmod(length, len(BLOCK))
    for _ in range(full):
        digest.update(BLOCK)
    digest.update(BLOCK[:rest])
    return digest.hexdigest()


class _TargetHandler(socketserver.BaseRequestHandler):
    """First byte: E echo; D + u64 send that many bytes of BLOCK; U + u64 read, reply SHA-256;
    C + u32 send zeros then close; G an HTTP/1.0 response."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections += 1  # type: ignore[attr-defined]
        try:
            first = sock.recv(1)
            self.server.first_bytes.append(first)  # type: ignore[attr-defined]
            if first == b"E":
                while True:
                    data = sock.recv(262144)
                    if not data:
                        break
                    sock.sendall(data)
            elif first == b"D":
                (length,) = struct.unpack("!Q", _recv_exact(sock, 8))
                view = memoryview(BLOCK)
                while length > 0:
                    n = min(length, len(BLOCK))
                    sock.sendall(view[:n])
                    length -= n
                sock.recv(1)
            elif first == b"U":
                (length,) = struct.unpack("!Q", _recv_exact(sock, 8))
                digest = hashlib.sha256()
                while length > 0:
                    data = sock.recv(min(length, 262144))
                    if not data:
                        break
                    digest.update(data)
                    length -= len(data)
                sock.sendall(digest.digest())
                sock.recv(1)
            elif first == b"C":
                (length,) = struct.unpack("!I", _recv_exact(sock, 4))
                sock.sendall(b"\0" * length)
            elif first == b"G":
                while b"\r\n\r\n" not in first:
                    data = sock.recv(4096)
                    if not data:
                        break
                    first += data
                body = b"hello from the target\n"
                sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise ConnectionError("EOF")
        out += data
    return out


class _ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


class Target:
    """A local TCP target server (see _TargetHandler) plus a UDP echo on the same port number if free."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _ThreadingTCP.address_family = family
        self.tcp = _ThreadingTCP((host, 0), _TargetHandler)
        _ThreadingTCP.address_family = socket.AF_INET
        self.tcp.connections = 0  # type: ignore[attr-defined]
        self.tcp.first_bytes = []  # type: ignore[attr-defined]
        self.port = self.tcp.server_address[1]
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.udp_port = self.udp.getsockname()[1]
        self.udp.settimeout(0.2)
        self._stop = False
        self._threads = [
            threading.Thread(target=self.tcp.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
            threading.Thread(target=self._udp_echo, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def connections(self) -> int:
        return self.tcp.connections  # type: ignore[attr-defined]

    @property
    def first_bytes(self) -> list[bytes]:
        """The first byte each connection sent (b"" when it closed without sending)."""
        return self.tcp.first_bytes  # type: ignore[attr-defined]

    def _udp_echo(self) -> None:
        while not self._stop:
            try:
                data, addr = self.udp.recvfrom(65535)
            except OSError:
                continue
            self.udp.sendto(b"echo:" + data, addr)

    def close(self) -> None:
        self._stop = True
        self.tcp.shutdown()
        self.tcp.server_close()
        self.udp.close()


# ------------------------------------------------------------------ SOCKS5 client


class SocksError(Exception):
    def __init__(self, reply: int) -> None:
        super().__init__(f"SOCKS5 reply 0x{reply:02x}")
        self.reply = reply


def _address(host: str) -> bytes:
    try:
        return b"\x01" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        return b"\x04" + socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raw = host.encode()
        return b"\x03" + bytes([len(raw)]) + raw


def socks_connect(
    proxy_port: int,
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30.0,
    command: int = 1,
) -> tuple[socket.socket, bytes]:
    """A SOCKS5 CONNECT (or other command); returns the socket and the BND part of the reply."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if username is not None:
            sock.sendall(b"\x05\x01\x02")
        else:
            sock.sendall(b"\x05\x01\x00")
        method = _recv_exact(sock, 2)
        if method[1] == 0x02:
            user, pw = (username or "").encode(), (password or "").encode()
            sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(pw)]) + pw)
            status = _recv_exact(sock, 2)
            if status[1] != 0:
                raise SocksError(0xFF)
        elif method[1] != 0x00:
            raise SocksError(0xFF)
        sock.sendall(b"\x05" + bytes([command]) + b"\x00" + _address(host) + struct.pack("!H", port))
        head = _recv_exact(sock, 4)
        if head[1] != 0:
            raise SocksError(head[1])
        if head[3] == 1:
            bnd = _recv_exact(sock, 6)
        elif head[3] == 4:
            bnd = _recv_exact(sock, 18)
        else:
            bnd = _recv_exact(sock, 1)
            bnd += _recv_exact(sock, bnd[0] + 2)
        return sock, head[3:4] + bnd
    except BaseException:
        sock.close()
        raise


def socks_http_get(proxy_port: int, target_port: int, host: str = "127.0.0.1", **kw: Any) -> bytes:
    """A GET through the proxy; reads the response by its Content-Length (not until EOF)."""
    sock, _ = socks_connect(proxy_port, host, target_port, **kw)
    with sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return read_http_response(sock)


def read_http_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        return data + _read_all(sock)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(262144)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def echo_roundtrip(proxy_port: int, target_port: int, payload: bytes = b"ping", **kw: Any) -> bytes:
    sock, _ = socks_connect(proxy_port, "127.0.0.1", target_port, **kw)
    with sock:
        sock.sendall(b"E" + payload)
        return _recv_exact(sock, len(payload))


def echo_sha(proxy_port: int, target_port: int, size: int, chunk: int = 65536, timeout: float = 120.0, **kw: Any) -> None:
    """Send ``size`` random bytes through an echo tunnel while a thread hashes what comes back."""
    sock, _ = socks_connect(proxy_port, "127.0.0.1", target_port, timeout=timeout, **kw)
    sent = hashlib.sha256()
    received = hashlib.sha256()
    result: dict[str, Any] = {}

    def reader() -> None:
        count = 0
        try:
            while count < size:
                data = sock.recv(262144)
                if not data:
                    break
                received.update(data)
                count += len(data)
        except OSError as exc:
            result["error"] = exc
        result["count"] = count

    with sock:
        sock.sendall(b"E")
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        block = os.urandom(chunk)
        remaining = size
        counter = 0
        while remaining > 0:
            piece = block[: min(chunk, remaining)]
            piece = struct.pack("!Q", counter) + piece[8:] if len(piece) >= 8 else piece
            counter += 1
            sent.update(piece)
            sock.sendall(piece)
            remaining -= len(piece)
        thread.join(timeout)
    assert not thread.is_alive(), "echo reader did not finish in time"
    assert "error" not in result, result.get("error")
    assert result["count"] == size, f"received {result['count']} of {size} bytes"
    assert received.hexdigest() == sent.hexdigest(), "SHA-256 mismatch"


def download_sha(proxy_port: int, target_port: int, size: int, timeout: float = 120.0, **kw: Any) -> None:
    sock, _ = socks_connect(proxy_port, "127.0.0.1", target_port, timeout=timeout, **kw)
    with sock:
        sock.sendall(b"D" + struct.pack("!Q", size))
        digest = hashlib.sha256()
        count = 0
        while count < size:
            data = sock.recv(262144)
            if not data:
                break
            digest.update(data)
            count += len(data)
        assert count == size, f"received {count} of {size} bytes"
        assert digest.hexdigest() == expected_download(size), "SHA-256 mismatch"


def upload_sha(proxy_port: int, target_port: int, size: int, timeout: float = 120.0, **kw: Any) -> None:
    sock, _ = socks_connect(proxy_port, "127.0.0.1", target_port, timeout=timeout, **kw)
    with sock:
        sock.sendall(b"U" + struct.pack("!Q", size))
        digest = hashlib.sha256()
        block = os.urandom(MiB)
        remaining = size
        while remaining > 0:
            piece = block[: min(len(block), remaining)]
            digest.update(piece)
            sock.sendall(piece)
            remaining -= len(piece)
        assert _recv_exact(sock, 32) == digest.digest(), "SHA-256 mismatch"


def udp_associate(proxy_port: int, **kw: Any) -> tuple[socket.socket, tuple[str, int]]:
    """A SOCKS5 UDP ASSOCIATE; returns the control socket and the relay address."""
    sock, bnd = socks_connect(proxy_port, "0.0.0.0", 0, command=3, **kw)
    assert bnd[0] == 1, "expected an IPv4 BND"
    host = socket.inet_ntop(socket.AF_INET, bnd[1:5])
    (port,) = struct.unpack("!H", bnd[5:7])
    return sock, (host, port)


def udp_exchange(relay: tuple[str, int], target_port: int, payload: bytes, timeout: float = 10.0) -> tuple[str, int, bytes]:
    """Send one datagram through the relay to 127.0.0.1:target_port, return (source, port, data) of the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(1.0)
        packet = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", target_port) + payload
        deadline = time.monotonic() + timeout
        while True:  # UDP may be dropped before the association is wired: retry
            udp.sendto(packet, relay)
            try:
                data, _ = udp.recvfrom(65535)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError("no UDP reply") from None
    assert data[:3] == b"\x00\x00\x00"
    if data[3] == 1:
        host, rest = socket.inet_ntop(socket.AF_INET, data[4:8]), data[8:]
    elif data[3] == 4:
        host, rest = socket.inet_ntop(socket.AF_INET6, data[4:20]), data[20:]
    else:
        host, rest = data[5 : 5 + data[4]].decode(), data[5 + data[4] :]
    (port,) = struct.unpack("!H", rest[:2])
    return host, port, rest[2:]


# ------------------------------------------------------------------ processes


class Proc:
    """A process started by a test; logs to a file; stopped by PID only."""

    def __init__(self, argv: list[str], log_path: str, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = dict(os.environ)
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            full_env.pop(name, None)
        full_env.update(env or {})
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                      stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid

    def output(self) -> str:
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")

    def wait_output(self, text: str, timeout: float = 20.0) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None and text not in self.output():
                raise RuntimeError(f"process exited ({self.popen.returncode}) before {text!r}:\n{self.output()[-3000:]}")
            return text in self.output()

        wait_until_blocking(seen, timeout=timeout, what=repr(text))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(10)


def hatchway_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hatchway.linksocks", *args]


HATCHWAY_ENV = {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Peer:
    """A venv with an upstream peer installed."""

    def __init__(self, venv: str) -> None:
        self.venv = venv
        self.python = os.path.join(venv, "bin", "python")

    def linksocks(self, *args: str) -> list[str]:
        return [self.python, LAUNCHER, *args]

    def pywssocks(self, *args: str) -> list[str]:
        return [os.path.join(self.venv, "bin", "pywssocks"), *args]


def ensure_peer_venv(path: str, packages: list[str]) -> str:
    """Create ``path`` with ``packages`` (wheels only) unless it already has them."""
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    modules = ", ".join(spec.split("==")[0].replace("-", "_") for spec in packages)
    check = subprocess.run([python, "-c", f"import {modules}"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([python, "-m", "pip", "install", "-q", "--only-binary=:all:", *packages], check=True,
                       timeout=900)
    return path


# ------------------------------------------------------------------ engine in a thread


class EngineThread:
    """Runs hatchway Server/Client objects in their own event loop thread (uvloop when available)."""

    def __init__(self) -> None:
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._objects: list[Any] = []

    def call(self, coro_factory: Callable[[], Any], timeout: float = 60.0) -> Any:
        async def run() -> Any:
            return await coro_factory()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def sync(self, fn: Callable[..., Any], *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
        """Call a plain function inside the loop thread and return its result."""

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def start(self, factory: Callable[[], Any], timeout: float = 30.0) -> Any:
        """``factory()`` builds a Server or Client inside the loop; it is started and closed with the thread."""

        async def make() -> Any:
            obj = factory()
            await obj.start()
            return obj

        obj = self.call(make, timeout)
        self._objects.append(obj)
        return obj

    @property
    def objects(self) -> list[Any]:
        """The Servers and Clients started in this thread, oldest first."""
        return list(self._objects)

    def stop_object(self, obj: Any, timeout: float = 30.0) -> None:
        if obj in self._objects:
            self._objects.remove(obj)
        self.call(obj.close, timeout)

    def close(self) -> None:
        for obj in reversed(self._objects):
            try:
                self.call(obj.close, 30.0)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self._objects.clear()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def engine() -> Iterator[EngineThread]:
    thread = EngineThread()
    try:
        yield thread
    finally:
        thread.close()


# ------------------------------------------------------------------ an upstream proxy (for -x)


class _UpstreamHandler(socketserver.BaseRequestHandler):
    """SOCKS5 (optional user/pass) or HTTP CONNECT, then a blind relay; counts what it served."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        server: Any = self.server
        try:
            first = _recv_exact(sock, 1)
            forward = b""
            if first == b"\x05":
                host, port = self._socks(sock, server)
            elif first == b"C":
                host, port = self._http(sock, first)
            else:  # an absolute-form request (e.g. a ws:// upgrade through an HTTP proxy)
                data = first
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                host, port, forward = self._absolute_form(data)
            upstream = socket.create_connection((host, port), timeout=10)
        except (OSError, ValueError):
            return
        server.served.append((host, port))
        upstream.settimeout(None)
        sock.settimeout(None)
        if first == b"\x05":
            sock.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        elif forward:
            upstream.sendall(forward)
        else:
            sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pump = threading.Thread(target=_pipe, args=(upstream, sock), daemon=True)
        pump.start()
        _pipe(sock, upstream)
        pump.join(30)

    @staticmethod
    def _socks(sock: socket.socket, server: Any) -> tuple[str, int]:
        count = _recv_exact(sock, 1)[0]
        methods = _recv_exact(sock, count)
        if server.credentials:
            if 2 not in methods:
                sock.sendall(b"\x05\xff")
                raise ValueError("no user/pass offered")
            sock.sendall(b"\x05\x02")
            _recv_exact(sock, 1)
            user = _recv_exact(sock, _recv_exact(sock, 1)[0]).decode()
            password = _recv_exact(sock, _recv_exact(sock, 1)[0]).decode()
            ok = (user, password) == server.credentials
            sock.sendall(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                raise ValueError("bad credentials")
        else:
            sock.sendall(b"\x05\x00")
        head = _recv_exact(sock, 4)
        if head[3] == 1:
            host = socket.inet_ntoa(_recv_exact(sock, 4))
        elif head[3] == 4:
            host = socket.inet_ntop(socket.AF_INET6, _recv_exact(sock, 16))
        else:
            host = _recv_exact(sock, _recv_exact(sock, 1)[0]).decode()
        (port,) = struct.unpack("!H", _recv_exact(sock, 2))
        return host, port

    @staticmethod
    def _http(sock: socket.socket, first: bytes) -> tuple[str, int]:
        data = first
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ValueError("EOF in request")
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode()
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            raise ValueError("only CONNECT")
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port)

    @staticmethod
    def _absolute_form(data: bytes) -> tuple[str, int, bytes]:
        """``GET http://host:port/path ...`` -> (host, port, the request in origin form)."""
        line, _, rest = data.partition(b"\r\n")
        method, target, version = line.decode().split(" ", 2)
        parts = urlsplit(target)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return parts.hostname or "", parts.port or 80, f"{method} {path} {version}\r\n".encode() + rest


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(262144)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class UpstreamProxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.server = _ThreadingTCP(("127.0.0.1", 0), _UpstreamHandler)
        self.server.served = []  # type: ignore[attr-defined]
        self.server.credentials = credentials  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def served(self) -> list[tuple[str, int]]:
        return self.server.served  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ a TCP forwarder whose connections can be cut


class CuttableProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:upstream_port; ``cut()`` resets every connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pipe threads blocked in recv
                except OSError:
                    pass
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self.cut()
        self.listener.close()
        self._thread.join(5)
