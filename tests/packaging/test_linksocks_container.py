"""The hatchway-linksocks release image (FROM scratch, dist/hatchway-linksocks.tar) on the private
dockerd, run with --network host as uid 65532, against the LinkSocks Go peer (PyPI linksocks 1.10.1)
on the host: once as the server (Go client on the host), once as the client (Go server on the host).
Each carries 64 MiB of random bytes to a loopback echo and back through SOCKS5, SHA-256 checked."""

from __future__ import annotations

import hashlib
import os
import re
import secrets

import ls_container_helpers as lc
import pytest
from ls_container_helpers import ls_harness
from pkgtest_helpers import VERSION, listening

pytestmark = [pytest.mark.container, pytest.mark.interop]

SIZE = 64 * 1024 * 1024
IMAGE = f"hatchway/linksocks:{VERSION}"
TRANSFER_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def linksocks_image(dockerd, image_archive):
    """`docker load -i dist/hatchway-linksocks.tar` on the session's private dockerd."""
    out = dockerd.run("load", "-i", str(image_archive("linksocks")), timeout=300).stdout.decode()
    assert f"Loaded image: {IMAGE}" in out, out
    return dockerd


@pytest.fixture(scope="module")
def peer():
    return lc.peer110()


@pytest.fixture(scope="module")
def payload() -> tuple[bytes, str]:
    data = os.urandom(SIZE)
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def echo():
    service = lc.EchoService()
    yield service
    service.close()


def proc_alive(proc: ls_harness.Proc, name: str):
    def check() -> None:
        if not proc.alive():
            pytest.fail(f"{name} exited {proc.popen.returncode}:\n{proc.output()[-3000:]}")

    return check


def container_args(*program_args: str) -> list[str]:
    return ["--network", "host", "--user", "65532:65532", IMAGE, *program_args]


def check_transfer(socks_port: int, echo: lc.EchoService, payload: tuple[bytes, str], what: str) -> None:
    data, sha = payload
    elapsed, n, got = lc.echo_transfer(socks_port, echo.port, data, timeout=TRANSFER_TIMEOUT)
    assert (n, got) == (SIZE, sha), "the echoed bytes differ from the sent ones"
    # the echo saw exactly one connection (ours) and echoed every byte of it. A Go peer on the
    # target side closes the target socket 5 s after the channel's Disconnect (its cleanup delay,
    # spec section 21), hatchway at once.
    lc.wait_for(lambda: echo.echoed, "the echo connection to close", 20)
    assert echo.echoed == [SIZE] and echo.errors == []
    print(f"\n{what}: 64 MiB each way in {elapsed:.2f} s ({2 * SIZE / 2**20 / elapsed:.0f} MiB/s)")


def stop_all(container: lc.Container | None, procs: list[tuple[ls_harness.Proc, str]]) -> None:
    logs = []
    if container is not None:
        code = container.stop()
        logs.append((f"container {container.name} (exit {code})", container.output()))
    for proc, name in procs:
        code = proc.stop()
        logs.append((f"{name} (exit {code})", proc.output()))
    for title, text in logs:
        print(f"--- {title}, last 2000 chars\n{text[-2000:]}")


def test_server_in_scratch_container_go_client_64_mib(linksocks_image, peer, echo, payload, tmp_path):
    """hatchway-linksocks server in the container; the Go client on the host offers SOCKS5."""
    token = secrets.token_hex(8)
    name = f"hatchway-ls-server-{os.getpid()}"
    container, procs = None, []
    try:
        container = lc.Container(linksocks_image, name,
                                 container_args("server", "-H", "127.0.0.1", "-P", "0", "-t", token),
                                 tmp_path / "container.log")
        ready = container.wait_ready(r"READY linksocks server ws://127\.0\.0\.1:(\d+)")
        ws_port = int(ready.group(1))
        assert container.uids() == ["65532"] * 4
        assert listening(ws_port)

        socks_port = ls_harness.free_port()
        go = ls_harness.Proc(peer.linksocks("client", "-t", token, "-u", f"ws://127.0.0.1:{ws_port}",
                                            "-s", "127.0.0.1", "-p", str(socks_port),
                                            "--direct-mode", "relay-only"), str(tmp_path / "go-client.log"))
        procs.append((go, "go client"))
        # the Go client opens its SOCKS5 port once the server has accepted its token
        lc.wait_for(lambda: listening(socks_port), "the Go client's SOCKS5 port", 30,
                    alive=[proc_alive(go, "go client"), container.check_running])

        check_transfer(socks_port, echo, payload, "hatchway server (container) <- Go client")
        container.check_running()
        assert container.stop() == 0, "the server did not exit 0 on docker stop (SIGTERM)"
    finally:
        stop_all(container, procs)


def test_client_in_scratch_container_go_server_64_mib(linksocks_image, peer, echo, payload, tmp_path):
    """The Go server on the host; hatchway-linksocks client in the container offers SOCKS5."""
    token = secrets.token_hex(8)
    name = f"hatchway-ls-client-{os.getpid()}"
    container, procs = None, []
    try:
        ws_port = ls_harness.free_port()
        go = ls_harness.Proc(peer.linksocks("server", "-H", "127.0.0.1", "-P", str(ws_port), "-t", token),
                             str(tmp_path / "go-server.log"))
        procs.append((go, "go server"))
        lc.wait_for(lambda: listening(ws_port), "the Go server's WebSocket port", 30,
                    alive=[proc_alive(go, "go server")])

        url = f"ws://127.0.0.1:{ws_port}"
        container = lc.Container(linksocks_image, name,
                                 container_args("client", "-t", token, "-u", url, "-s", "127.0.0.1", "-p", "0"),
                                 tmp_path / "container.log")
        # READY comes after the server accepted the token and the SOCKS5 port listens
        ready = container.wait_ready(r"READY linksocks client socks5://127\.0\.0\.1:(\d+) " + re.escape(url))
        socks_port = int(ready.group(1))
        assert container.uids() == ["65532"] * 4
        assert listening(socks_port)

        check_transfer(socks_port, echo, payload, "Go server <- hatchway client (container)")
        container.check_running()
        assert go.alive()
        assert container.stop() == 0, "the client did not exit 0 on docker stop (SIGTERM)"
    finally:
        stop_all(container, procs)
