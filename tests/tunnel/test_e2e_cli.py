"""The real command lines: ``hatchway-tunnel runner``, the client and ``hatchway-tunnel forward`` (cases 50, 51)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from fake_client import MsgType, Proto, RawPeer, TcpService, UdpClient, echo_handler, free_port, open_tunnel

from hatchway.tunnel.runner import Runner

SRC = str(Path(__file__).resolve().parents[2] / "src")
CID = "kohakuriver-vps-9"


class Program:
    """One ``python -m hatchway.tunnel ...`` process; stderr is collected in the background."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._drain = asyncio.ensure_future(self._collect())

    @classmethod
    async def start(cls, *args: str) -> Program:
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hatchway.tunnel", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(proc)

    async def _collect(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            if text.startswith("READY ") and not self._ready.done():
                self._ready.set_result(text)
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("exited before READY:\n" + "\n".join(self.lines)))

    async def ready(self, timeout: float = 20) -> str:
        return await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def exit_code(self, timeout: float = 20) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._drain
        return code

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.exit_code()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def address(ready_line: str) -> tuple[str, int]:
    host, _, port = ready_line.split()[-1].rpartition(":")
    return host, int(port)


async def wait_for_tunnel(base: str, container_id: str, timeout: float = 20) -> None:
    """Retry the forward handshake until the runner reports the tunnel registered."""
    async with asyncio.timeout(timeout):
        while True:
            peer = await RawPeer.open(f"{base}/ws/forward/{container_id}/80")
            try:
                if await peer.text() == "CONNECTED":
                    return
            finally:
                await peer.close()
            await asyncio.sleep(0.05)


async def test_runner_client_and_forward_processes_relay_end_to_end():
    programs: list[Program] = []
    try:
        async with TcpService(echo_handler) as echo:
            runner = await Program.start("runner", "--host", "127.0.0.1", "--port", "0", "--log-level", "warn")
            programs.append(runner)
            line = await runner.ready()
            assert line.startswith("READY runner 127.0.0.1:")
            base = f"ws://127.0.0.1:{address(line)[1]}"
            client = await Program.start("--runner-url", base + "/", "--container-id", CID, "--log-level", "warn")
            programs.append(client)
            await client.ready()
            await wait_for_tunnel(base, CID)
            forward = await Program.start("forward", CID, str(echo.port), "-l", "0", "--url", base)
            programs.append(forward)
            host, port = address(await forward.ready())
            assert host == "127.0.0.1"
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"through three processes")
            assert await asyncio.wait_for(reader.readexactly(23), 10) == b"through three processes"
            writer.close()
            for program in reversed(programs):
                assert await program.stop() == 0, program.lines
    finally:
        for program in programs:
            program.kill()


async def test_forward_prints_the_error_text_and_exits_non_zero():
    async with Runner("127.0.0.1", 0, heartbeat=None) as runner:
        forward = await Program.start("forward", "nosuch", "80", "-l", "0", "--host", "127.0.0.1",
                                      "--port", str(runner.port))
        try:
            assert await forward.exit_code() == 1
        finally:
            forward.kill()
        assert "Error: Container tunnel not connected (container=nosuch)" in forward.lines


async def test_forward_flags_local_port_host_and_udp():
    async with Runner("127.0.0.1", 0, heartbeat=None) as runner:
        tunnel = await open_tunnel(runner.url, CID)
        programs: list[Program] = []
        try:
            await asyncio.wait_for(runner.wait_registered(CID), 10)
            remote_port = free_port()
            tcp = await Program.start("forward", CID, str(remote_port), "--url", runner.url)  # defaults
            programs.append(tcp)
            assert await tcp.ready() == f"READY forward 127.0.0.1:{remote_port}"
            udp = await Program.start("forward", CID, "5353", "-H", "127.0.0.1", "-l", "0", "-p", "udp",
                                      "--url", runner.url)
            programs.append(udp)
            host, port = address(await udp.ready())
            client = await UdpClient.connect(port)
            try:
                client.send(b"query")
                connect = await tunnel.recv()
                assert (connect.type, connect.proto, connect.port) == (MsgType.CONNECT, Proto.UDP, 5353)
                dgram = await tunnel.recv()
                assert (dgram.type, dgram.proto, dgram.payload) == (MsgType.DATA, Proto.UDP, b"query")
            finally:
                client.close()
            for program in programs:
                assert await program.stop() == 0, program.lines
        finally:
            for program in programs:
                program.kill()
            await tunnel.close()


@pytest.mark.parametrize("argv", [["forward", "1"], ["forward", "1", "x"], ["forward", "1", "80", "-p", "sctp"]])
def test_forward_usage_errors_exit_2(argv):
    import subprocess

    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run([sys.executable, "-m", "hatchway.tunnel", *argv], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 2 and "usage:" in done.stderr
