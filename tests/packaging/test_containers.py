"""The release images on a real, private dockerd (packaging.md 4.2; acceptance cases 24, 25)
and the tunnel client binary carrying a real transfer from a FROM scratch container."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from pkgtest_helpers import (
    PROGRAM_NAMES,
    PROGRAMS,
    REPO,
    VERSION,
    exited_check,
    listening,
    require_tool,
    run,
    wait_for,
)

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
    for env in PROGRAMS[prog].get("env", []):
        assert env in cfg["Env"]
    assert sorted(cfg.get("ExposedPorts") or {}) == sorted(PROGRAMS[prog]["expose"])
    assert (cfg.get("Cmd") or []) == PROGRAMS[prog]["cmd"]
    assert len(info["RootFS"]["Layers"]) == 1


def tar_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.extractfile(name).read()


def version_line_ok(out: bytes, prog: str) -> bool:
    text = out.decode().strip()
    return text.startswith(f"hatchway-{prog} ") and VERSION in text


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
    assert "tmp" not in members, "the static executable writes nothing: the image has no /tmp"
    assert members["etc/hosts"].isfile()  # docker export shows its own (empty) placeholder; the layer has localhost
    assert members[f"app/{prog}"].isfile() and stat.S_IMODE(members[f"app/{prog}"].mode) == 0o755
    assert (stat.S_IMODE(members["home/nonroot"].mode), members["home/nonroot"].uid, members["home/nonroot"].gid) == (
        0o700, 65532, 65532)
    assert members["etc/ssl/certs/ca-certificates.crt"].size > 1000
    assert "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" in passwd.splitlines()


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_version_as_nonroot_without_network(prog, loaded_images):
    out = loaded_images.run("run", "--rm", "--network", "none", "--user", "65532:65532", image_ref(prog),
                            "--version", timeout=120)
    assert version_line_ok(out.stdout, prog), out.stdout


@pytest.mark.parametrize("prog", PROGRAM_NAMES)
def test_read_only_root_without_tmpfs(prog, loaded_images):
    """`docker run --read-only` with no --tmpfs: the static executable writes nothing (the sidecar's glibc build
    included: its launcher runs it from memfds)."""
    ok = loaded_images.run("run", "--rm", "--network", "none", "--read-only", image_ref(prog), "--version",
                           timeout=120)
    assert version_line_ok(ok.stdout, prog), ok.stdout


SERVE = {
    "tunnel": ["runner", "--host", "127.0.0.1", "--port", "{port}"],
    "linksocks": ["server", "-H", "127.0.0.1", "-P", "{port}", "-t", "tok"],
}


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


@pytest.mark.parametrize("prog", sorted(SERVE))
def test_pid1_in_read_only_container_serves_reaps_orphans_and_exits_0_on_stop(prog, loaded_images):
    """The program as PID 1 of a `--read-only` container (no --init, no tmpfs): one process,
    orphans of the container re-parented to it are reaped, `docker stop` (SIGTERM) exits 0."""
    docker = loaded_images
    port = free_port()
    args = [a.replace("{port}", str(port)) for a in SERVE[prog]]
    name = f"hatchway-pid1-{prog}-{os.getpid()}"
    docker.run("run", "-d", "--name", name, "--network", "host", "--read-only", image_ref(prog), *args)
    try:
        wait_for(lambda: listening(port), f"hatchway-{prog} listening in the container")
        pid = int(docker.run("inspect", "-f", "{{.State.Pid}}", name).stdout.decode().strip())
        status = Path(f"/proc/{pid}/status").read_text()
        nspid = [ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")]
        assert nspid and nspid[0][-1] == "1", f"not PID 1 of its namespace: {nspid}"
        assert children(pid) == [], "one process"
        sh = require_tool("sh")
        # an orphan inside the container's PID namespace: sh (entered from outside) starts
        # `sleep` and exits, so the container's init (our program) adopts the sleep
        run([require_tool("nsenter"), f"--target={pid}", "--pid", "--", sh, "-c", "sleep 600 >/dev/null 2>&1 &"])
        (orphan,) = wait_for(lambda: children(pid) or None, "the orphan adopted by PID 1")
        os.kill(orphan, 9)
        wait_for(lambda: not Path(f"/proc/{orphan}").exists(), "the orphan reaped (no zombie)", timeout=20)
        docker.run("stop", "-t", "20", name, timeout=60)
        code = docker.run("inspect", "-f", "{{.State.ExitCode}}", name).stdout.decode().strip()
        assert code == "0", docker.run("logs", name, check=False).stderr[-3000:]
    finally:
        docker.run("rm", "-f", name, check=False)


def test_dockerfile_scratch_with_the_classic_builder(dockerd, static_binary, tmp_path):
    """DOCKER_BUILDKIT=0 docker build -f Dockerfile.scratch (case 24, no pull): one layer with the
    static executable at /app/entry 0755, no /tmp; runs as 65532 with --read-only."""
    prog = PROGRAM_NAMES[0]
    ctx = tmp_path / "ctx"
    (ctx / "dist").mkdir(parents=True)
    shutil.copy(REPO / "Dockerfile.scratch", ctx / "Dockerfile.scratch")
    shutil.copytree(REPO / "packaging" / "rootfs", ctx / "packaging" / "rootfs")
    shutil.copy2(static_binary(prog), ctx / "dist" / f"hatchway-{prog}")
    shutil.copy(static_binary(prog).parent / "ca-certificates.crt", ctx / "dist" / "ca-certificates.crt")
    tag = f"hatchway-test/{prog}-classic:dev"
    env = {**dockerd.env, "DOCKER_BUILDKIT": "0"}
    run(dockerd.cmd("build", "--network", "none", "-f", str(ctx / "Dockerfile.scratch"), "--build-arg",
                    f"PROG={prog}", "-t", tag, str(ctx)), env=env, timeout=300)
    out = dockerd.run("run", "--rm", "--network", "none", "--read-only", tag, "--version").stdout
    assert version_line_ok(out, prog), out
    (info,) = json.loads(dockerd.run("image", "inspect", tag).stdout)
    assert info["Config"]["User"] == "65532:65532" and info["Config"]["Entrypoint"] == ["/app/entry"]
    cid = dockerd.run("create", tag).stdout.decode().strip()
    try:
        export = subprocess.run(dockerd.cmd("export", cid), env=dockerd.env, capture_output=True, timeout=120)
    finally:
        dockerd.run("rm", "-f", cid)
    with tarfile.open(fileobj=io.BytesIO(export.stdout)) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
    assert "tmp" not in members and stat.S_IMODE(members["app/entry"].mode) == 0o755
    assert members["etc/ssl/certs/ca-certificates.crt"].size > 1000 and "etc/passwd" in members


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
        self.threads: list[threading.Thread] = []
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

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
        """Stop accepting (shutdown wakes the blocked accept(); close alone does not) and join."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for thread in [self.thread, *self.threads]:
            thread.join(timeout=30)


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
        for proc, _ in procs:
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
