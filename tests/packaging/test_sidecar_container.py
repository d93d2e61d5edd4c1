"""The hatchway-sidecar release image (FROM scratch, dist/hatchway-sidecar.tar: the static executable built
against glibc, arkitekt-mesh packed inside, started from memfds by its launcher) inside the offline test tailnet of tests/sidecar (issue #9, Shipping).

Network: the test tailnet (fake control server + DERP on 127.0.0.1, caddy's tsnet node ``svc``) needs its own
loopback, and docker cannot put a container into a namespace made by ``ip netns add``. So the namespace is made by
the private dockerd: a holder container from the same image (``--network none``, the sidecar on its ``direct``
backend, which needs no tailnet) owns it, ``ip netns attach`` names it, and FakeTailnet builds the tailnet inside
(control, DERP and caddy are host processes entered with ``ip netns exec``). The sidecars under test join it with
``--network container:<holder>``: their 127.0.0.1 is the control server's, and nothing in the test reaches beyond
loopback of a namespace the test created. Every container runs ``--read-only`` with a ``--tmpfs /tmp`` (docker's
default: noexec) as the image's user 65532, its state dir on that tmpfs.

The parent's view is the docker client's: ``docker run -i`` (not -d) carries the container's stdout line by line,
and the client forwards SIGTERM to the container (``--sig-proxy``, docker's default), as a process manager would.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pkgtest_helpers import VERSION, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sidecar"))

from scproc import SidecarProc  # noqa: E402
from tailnet import AUTH_KEY, CONTROL_URL, SVC_BODY, FakeTailnet  # noqa: E402

from helpers import wait_until  # noqa: E402

pytestmark = [pytest.mark.container, pytest.mark.interop]

IMAGE = f"hatchway/sidecar:{VERSION}"
READ_ONLY = ["--read-only", "--tmpfs", "/tmp"]  # a read-only root; the state dir on a tmpfs (noexec, docker's default)
HOLDER_PORT = 18300
PROXY_PORT, STATUS_PORT = 18301, 18302
SELF_KEYS = {"name", "hostname", "tailscale_ips", "online", "direct", "relayed_via", "current_address", "rx_bytes",
             "tx_bytes", "last_seen", "last_handshake"}


@pytest.fixture(scope="module")
def sidecar_image(dockerd: Any, image_archive: Any) -> Any:
    out = dockerd.run("load", "-i", str(image_archive("sidecar")), timeout=300).stdout.decode()
    assert f"Loaded image: {IMAGE}" in out, out
    return dockerd


class ContainerTailnet:
    """The holder container, the test tailnet inside its network namespace, and the CA file the mesh trusts."""

    def __init__(self, docker: Any, holder: str, net: FakeTailnet, ca_dir: Path) -> None:
        self.docker, self.holder, self.net, self.ca_dir = docker, holder, net, ca_dir

    def sidecar(self, name: str, *args: str) -> SidecarProc:
        """``docker run -i`` of the image in the tailnet's namespace (read-only, tmpfs /tmp); stdout is the parent's."""
        docker_args = ["run", "-i", "--rm", "--name", name, "--network", f"container:{self.holder}", *READ_ONLY,
                       "-v", f"{self.ca_dir}:/ca:ro", "-e", "ARKITEKT_MESH_CA_FILE=/ca/ca.pem", IMAGE]
        sidecar_args = ["-coordserver", CONTROL_URL, "-authkey", AUTH_KEY, "-statedir", "/tmp/state",
                        "-hostname", name.rsplit("-", 1)[0], *args]
        return SidecarProc(sidecar_args, command=self.docker.cmd(*docker_args), env=self.docker.env)


@pytest.fixture(scope="module")
def container_tailnet(sidecar_image: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerTailnet]:
    docker = sidecar_image
    holder = f"hwsc-holder-{os.getpid()}"
    docker.run("run", "-d", "--name", holder, "--network", "none", *READ_ONLY, IMAGE,
               "-backend", "direct", "-statedir", "/tmp/state", "-port", str(HOLDER_PORT))
    net: FakeTailnet | None = None
    try:
        wait_for(lambda: b"@@SIDECAR:READY@@" in docker.run("logs", holder).stdout, "the holder container READY")
        pid = int(docker.run("inspect", "-f", "{{.State.Pid}}", holder).stdout.decode().strip())
        net = FakeTailnet(adopt_pid=pid, name=f"hwscc{os.getpid()}")
        net.start()
        ca_dir = tmp_path_factory.mktemp("sidecar-ca")  # the CA alone, readable by the image's user 65532
        shutil.copy(net.ca_file, ca_dir / "ca.pem")
        os.chmod(ca_dir, 0o755)
        os.chmod(ca_dir / "ca.pem", 0o644)
        yield ContainerTailnet(docker, holder, net, ca_dir)
    finally:
        if net is not None:
            net.stop()
        docker.run("rm", "-f", holder, check=False)


async def curl(net: FakeTailnet, *args: str) -> tuple[int, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(*net.command(["curl", "-sS", "-m", "20", *args]),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def words(sc: SidecarProc) -> list[str]:
    return [s.word for s in sc.signals]


async def test_http_mode_in_container_on_the_tailnet(container_tailnet: ContainerTailnet) -> None:
    """HTTP proxy (absolute-URI and CONNECT) to svc by short name, full name and IP; the status API; the signal
    lines in order; SIGTERM through the docker client ends it with SHUTDOWN, exit 0 and the node offline."""
    ct = container_tailnet
    net = ct.net
    name = f"hwct-{os.getpid()}"
    proxy = f"http://127.0.0.1:{PROXY_PORT}"
    async with ct.sidecar(name, "-port", str(PROXY_PORT), "-statusport", str(STATUS_PORT)) as sc:
        assert await sc.ready() == proxy
        assert words(sc) == ["STARTING", "CONNECTING", "CONNECTED", "LISTENING", "READY"], sc.lines
        assert sc.signal_of("LISTENING").detail == f"mode=http addr=127.0.0.1:{PROXY_PORT}"  # type: ignore[union-attr]
        # written by the process inside the container: the image runs as its user, not root
        pid = int(ct.docker.run("inspect", "-f", "{{.State.Pid}}", name).stdout.decode().strip())
        uids = [ln.split()[1:] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ln.startswith("Uid:")]
        assert uids == [["65532"] * 4], uids
        svc_ip = net.ipv4_of("svc")
        for url in ("http://svc/", "http://svc.tail.example/", f"http://{svc_ip}/"):
            assert await curl(net, "-x", proxy, url) == (0, SVC_BODY), url
            assert await curl(net, "-p", "-x", proxy, url) == (0, SVC_BODY), f"CONNECT {url}"
        assert await curl(net, "-x", proxy, "http://svc:8081/") == (0, "port 8081")
        code, body = await curl(net, "-i", "-x", proxy, "http://nosuch/")
        assert code == 0 and body.startswith("HTTP/1.1 502 "), body
        assert await curl(net, f"http://127.0.0.1:{STATUS_PORT}/health") == (0, "OK")
        code, body = await curl(net, f"http://127.0.0.1:{STATUS_PORT}/status")
        assert code == 0 and body.endswith("}\n"), body
        doc = json.loads(body)
        assert set(doc) == {"self", "peers", "backend_state"}
        assert set(doc["self"]) == SELF_KEYS
        assert doc["peers"] == [] and doc["backend_state"] == "Running"
        connected = sc.signal_of("CONNECTED")
        assert connected is not None and connected.detail == f"ips=[{' '.join(doc['self']['tailscale_ips'])}]"
        node = net.node(name.rsplit("-", 1)[0]) or {}
        assert node.get("online") is True, net.nodes()
        changed = ct.docker.run("diff", name).stdout.decode().split("\n")
        # nothing written but the mount points docker adds for the CA mount and the tmpfs
        assert sorted(c for c in changed if c) == ["A /ca", "A /tmp"], f"wrote outside its mounts: {changed}"
        assert await sc.terminate() == 0, (sc.lines, sc.stderr[-2000:])
    assert sc.lines[-1] == "@@SIDECAR:SHUTDOWN@@", sc.lines
    await wait_until(lambda: (net.node(name.rsplit("-", 1)[0]) or {}).get("online") is False,
                     what="control sees the container's node go offline")


async def test_socks5_mode_in_container_on_the_tailnet(container_tailnet: ContainerTailnet) -> None:
    """SOCKS5 with names resolved through the tailnet (socks5h: short and full names) and with the IP."""
    ct = container_tailnet
    net = ct.net
    name = f"hwcs-{os.getpid()}"
    async with ct.sidecar(name, "-port", str(PROXY_PORT), "-mode", "socks5") as sc:
        assert await sc.ready() == f"socks5://127.0.0.1:{PROXY_PORT}"
        assert words(sc) == ["STARTING", "CONNECTING", "CONNECTED", "LISTENING", "READY"], sc.lines
        svc_ip = net.ipv4_of("svc")
        for host in ("svc", "svc.tail.example"):
            assert await curl(net, "--socks5-hostname", f"127.0.0.1:{PROXY_PORT}", f"http://{host}/") == \
                (0, SVC_BODY), host
        assert await curl(net, "--socks5", f"127.0.0.1:{PROXY_PORT}", f"http://{svc_ip}:8081/") == (0, "port 8081")
        assert await sc.terminate() == 0, (sc.lines, sc.stderr[-2000:])
    assert sc.lines[-1] == "@@SIDECAR:SHUTDOWN@@", sc.lines
