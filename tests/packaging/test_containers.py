"""The release images on a real, private dockerd (packaging.md 4.2; acceptance cases 24, 25)
and the tunnel client binary carrying a real transfer from a FROM scratch container."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from pkgtest_helpers import PROGRAM_NAMES, PROGRAMS, REPO, VERSION, exited_check, listening, run, wait_for

pytestmark = pytest.mark.container


def image_ref(prog: str) -> str:
    return f"hatchway/{prog}:{VERSION}"


@pytest.fixture(scope="session")
def loaded_images(dockerd, image_archive):
    """`docker load -i dist/hatchway-<prog>.tar` for every program (case 25)."""
    for prog in PROGRAM_NAMES:
        out = dockerd.run("load", "-i", str(image_archive(prog)), timeout=300).stdout.decode()
        assert f"Loaded image: {image_ref(prog)}" in out, out
    return dockerd


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_loaded_image_config(prog, loaded_images):
    (info,) = json.loads(loaded_images.run("image", "inspect", image_ref(prog)).stdout)
    cfg = info["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == [f"/app/{prog}"]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in cfg["Env"]
    assert sorted(cfg["ExposedPorts"]) == sorted(PROGRAMS[prog]["expose"])
    assert (cfg.get("Cmd") or []) == PROGRAMS[prog]["cmd"]
    assert len(info["RootFS"]["Layers"]) == 1


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_loaded_image_file_modes(prog, loaded_images):
    docker = loaded_images
    cid = docker.run("create", image_ref(prog)).stdout.decode().strip()
    try:
        export = subprocess.run(docker.cmd("export", cid), env=docker.env, capture_output=True, timeout=120)
        assert export.returncode == 0, export.stderr
    finally:
        docker.run("rm", "-f", cid)
    with tarfile.open(fileobj=io.BytesIO(export.stdout)) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        passwd = tar.extractfile(members["etc/passwd"]).read().decode()
    assert members["tmp"].isdir() and stat.S_IMODE(members["tmp"].mode) == 0o1777
    assert members[f"app/{prog}"].isfile() and stat.S_IMODE(members[f"app/{prog}"].mode) == 0o755
    assert (stat.S_IMODE(members["home/nonroot"].mode), members["home/nonroot"].uid, members["home/nonroot"].gid) == (
        0o700, 65532, 65532)
    assert members["etc/ssl/certs/ca-certificates.crt"].size > 1000
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" in passwd.splitlines()


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_version_as_nonroot_without_network(prog, loaded_images):
    out = loaded_images.run("run", "--rm", "--network", "none", "--user", "65532:65532", image_ref(prog),
                            "--version", timeout=120)
    assert out.stdout.decode().strip() == f"hatchway-{prog} {VERSION}"


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_read_only_root_needs_an_exec_tmpfs(prog, loaded_images):
    """docker --read-only works with `--tmpfs /tmp:exec`. Docker mounts a bare `--tmpfs /tmp`
    noexec, and the onefile formats exec what they unpack there (observed on dockerd 20.10)."""
    docker = loaded_images
    base = ("run", "--rm", "--network", "none", "--read-only")
    ok = docker.run(*base, "--tmpfs", "/tmp:exec", image_ref(prog), "--version", timeout=120)
    assert ok.stdout.decode().strip() == f"hatchway-{prog} {VERSION}"
    noexec = docker.run(*base, "--tmpfs", "/tmp", image_ref(prog), "--version", timeout=120, check=False)
    assert noexec.returncode != 0
    assert b"Failed to execv() /tmp/staticx-" in noexec.stderr and b"Permission denied" in noexec.stderr
    bad = docker.run(*base, image_ref(prog), "--version", timeout=120, check=False)
    assert bad.returncode != 0
    assert b"Failed to create temporary directory in /tmp" in bad.stderr, bad.stderr


def test_classic_builder_from_scratch(dockerd, static_binary, tmp_path):
    """DOCKER_BUILDKIT=0 docker build of the single-stage FROM scratch image (case 24), no pull."""
    prog = PROGRAM_NAMES[0]
    ctx = tmp_path / "ctx"
    rootfs = ctx / "rootfs"
    for d in ("app", "etc/ssl/certs", "home/nonroot", "tmp"):
        (rootfs / d).mkdir(parents=True)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chown(rootfs / "home" / "nonroot", 65532, 65532)
    (rootfs / "app" / "entry").write_bytes(static_binary(prog).read_bytes())
    os.chmod(rootfs / "app" / "entry", 0o755)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                           "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    (rootfs / "etc" / "ssl" / "certs" / "ca-certificates.crt").write_bytes(
        Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY rootfs/ /\nENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt\n"
        "USER 65532:65532\nWORKDIR /home/nonroot\nENTRYPOINT [\"/app/entry\"]\n")
    tag = f"hatchway-test/{prog}-classic:dev"
    env = {**dockerd.env, "DOCKER_BUILDKIT": "0"}
    run(dockerd.cmd("build", "--network", "none", "-t", tag, str(ctx)), env=env, timeout=300)
    out = dockerd.run("run", "--rm", "--network", "none", tag, "--version").stdout.decode().strip()
    assert out == f"hatchway-{prog} {VERSION}"
    cid = dockerd.run("create", tag).stdout.decode().strip()
    try:
        export = subprocess.run(dockerd.cmd("export", cid), env=dockerd.env, capture_output=True, timeout=120)
    finally:
        dockerd.run("rm", "-f", cid)
    with tarfile.open(fileobj=io.BytesIO(export.stdout)) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
    assert stat.S_IMODE(members["tmp"].mode) == 0o1777 and stat.S_IMODE(members["app/entry"].mode) == 0o755


# ------------------------------------------------------------------ the tunnel client in a scratch container

SIZE = 64 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def forward_handshake(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            msg = await asyncio.wait_for(ws.receive(), 10)
            return msg.data if msg.type == aiohttp.WSMsgType.TEXT else f"<{msg.type.name}>"


class Service:
    """A TCP service on the host: per connection, receive SIZE bytes (hashed) while sending SIZE bytes."""

    def __init__(self, download: bytes):
        self.download = download
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[int, str]] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        try:
            with conn:
                sender = threading.Thread(target=self._send, args=(conn,), daemon=True)
                sender.start()
                h, n, buf = hashlib.sha256(), 0, bytearray(256 * 1024)
                while n < SIZE:
                    k = conn.recv_into(buf)
                    if k == 0:
                        break
                    h.update(memoryview(buf)[:k])
                    n += k
                sender.join(timeout=300)
                self.received.append((n, h.hexdigest()))
                conn.recv(1)  # hold the connection until the user side closes
        except OSError as exc:
            self.errors.append(exc)

    def _send(self, conn: socket.socket):
        try:
            conn.sendall(self.download)
        except OSError as exc:
            self.errors.append(exc)

    def close(self):
        self.sock.close()


def alive(procs: list[tuple[subprocess.Popen, str]]) -> list:
    return [exited_check(proc, name) for proc, name in procs]


def start(cmd, log: Path, **kw) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)


def test_tunnel_client_in_scratch_container_carries_64_mib_each_way(loaded_images, tmp_path):
    docker = loaded_images
    assert (REPO / "src" / "hatchway" / "tunnel" / "cli.py").exists(), "hatchway.tunnel.cli is missing"
    upload, download = os.urandom(SIZE), os.urandom(SIZE)
    service = Service(download)
    runner_port, local_port = free_port(), free_port()
    cid = f"hatchway-test-{os.getpid()}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for var in ("RUNNER_URL", "CONTAINER_ID", "HATCHWAY_TUNNEL_TOKEN", "HATCHWAY_FORWARD_URL"):
        env.pop(var, None)
    procs: list[tuple[subprocess.Popen, str]] = []
    container = None
    try:
        runner = start([sys.executable, "-m", "hatchway.tunnel", "runner", "--host", "127.0.0.1",
                        "--port", str(runner_port)], tmp_path / "runner.log", env=env, cwd=tmp_path)
        procs.append((runner, "runner"))
        wait_for(lambda: listening(runner_port), "the runner's port", alive=alive(procs))

        container = docker.run(
            "run", "-d", "--network", "host", "--name", cid, image_ref("tunnel"),
            "--runner-url", f"ws://127.0.0.1:{runner_port}", "--container-id", cid,
        ).stdout.decode().strip()
        # the client runs inside the container as uid 65532
        pid = int(docker.run("inspect", "-f", "{{.State.Pid}}", container).stdout.decode().strip())
        status = Path(f"/proc/{pid}/status").read_text()
        assert [line.split()[1] for line in status.splitlines() if line.startswith("Uid:")] == ["65532"]

        handshake_url = f"ws://127.0.0.1:{runner_port}/ws/forward/{cid}/{service.port}?proto=tcp"

        def registered() -> bool:
            state = docker.run("inspect", "-f", "{{.State.Running}}", container).stdout.decode().strip()
            if state != "true":
                logs = docker.run("logs", container, check=False)
                pytest.fail(f"tunnel client container stopped: {logs.stdout!r} {logs.stderr!r}")
            return asyncio.run(forward_handshake(handshake_url)) == "CONNECTED"

        wait_for(registered, "the container's tunnel registration", alive=alive(procs))

        # `--slow-consumer block`: forward's default policy (reset) resets a local connection whose
        # reader falls --buffer-limit (8 MiB) behind, which a reader in this busy 2-core test does
        # now and then; the transfer must not depend on scheduling.
        forward = start([sys.executable, "-m", "hatchway.tunnel", "forward", "--url", f"ws://127.0.0.1:{runner_port}",
                         "-l", str(local_port), "--slow-consumer", "block", cid, str(service.port)],
                        tmp_path / "forward.log", env=env, cwd=tmp_path)
        procs.append((forward, "forward"))
        wait_for(lambda: listening(local_port), "the forward command's local port", alive=alive(procs))

        t0 = time.monotonic()
        user = socket.create_connection(("127.0.0.1", local_port), timeout=120)
        got, sent_err = hashlib.sha256(), []

        def send():
            try:
                user.sendall(upload)
            except OSError as exc:
                sent_err.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        n, buf = 0, bytearray(256 * 1024)
        while n < SIZE:
            k = user.recv_into(buf)
            assert k, f"connection closed after {n} of {SIZE} downloaded bytes"
            got.update(memoryview(buf)[:k])
            n += k
        sender.join(timeout=120)
        assert not sender.is_alive() and sent_err == []
        wait_for(lambda: bool(service.received) or bool(service.errors), "the service to receive the upload",
                 timeout=120, alive=alive(procs))
        elapsed = time.monotonic() - t0
        user.close()

        assert service.errors == []
        assert service.received == [(SIZE, hashlib.sha256(upload).hexdigest())]
        assert (n, got.hexdigest()) == (SIZE, hashlib.sha256(download).hexdigest())
        print(f"\n128 MiB through the containerised tunnel client in {elapsed:.2f} s "
              f"({2 * SIZE / 2**20 / elapsed:.0f} MiB/s)")
    finally:
        if container is not None:
            logs = docker.run("logs", "--tail", "40", cid, check=False)
            print(f"--- tunnel client container log\n{logs.stdout.decode(errors='replace')}"
                  f"{logs.stderr.decode(errors='replace')}")
            docker.run("rm", "-f", cid, check=False)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, name in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        service.close()
        for log in tmp_path.glob("*.log"):
            text = log.read_text(errors="replace")
            if text:
                print(f"--- {log.name} (last 2000 chars)\n{text[-2000:]}")
