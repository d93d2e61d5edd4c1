"""A small Docker Engine API exec endpoint on a unix socket, bridging through hatchway's client library.

Just enough for the real ``docker exec`` CLI: ``/_ping``, container inspect,
exec create, exec start (hijacked: ``101 UPGRADED``, then the raw or
multiplexed stream), exec resize and exec inspect. The exec record gets its
exit code before the stream is closed, as the Sockerless backend does, so the
CLI's inspect after EOF sees it.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from hatchway.agent.client import AgentClient, Session, bridge_exec
from hatchway.agent.dockerstream import MULTIPLEXED_STREAM, RAW_STREAM
from hatchway.common.tasks import TaskSet

API = "1.41"


class ExecRecord:
    def __init__(self, config: dict[str, Any]) -> None:
        self.id = uuid.uuid4().hex
        self.config = config
        self.running = False
        self.exit_code: int | None = None
        self.session: Session | None = None
        self.pending_size: tuple[int, int] | None = None


class EngineApi:
    def __init__(self, client: AgentClient, path: str, container: str = "c1") -> None:
        self.client = client
        self.path = path
        self.container = container
        self.execs: dict[str, ExecRecord] = {}
        self.requests: list[str] = []
        self.resizes: list[tuple[int, int]] = []
        self._tasks = TaskSet("engine api")
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> EngineApi:
        self._server = await asyncio.start_unix_server(self._connection, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._tasks.aclose()
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                self.requests.append(f"{method} {target}")
                if not await self._dispatch(method, target, body, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _reply(self, writer: asyncio.StreamWriter, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        reason = {200: "OK", 201: "Created", 204: "No Content", 404: "Not Found"}.get(status, "OK")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nApi-Version: {API}\r\nOstype: linux\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)

    async def _dispatch(self, method: str, target: str, body: bytes, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> bool:
        path, _, query = target.partition("?")
        path = re.sub(r"^/v[0-9.]+", "", path)
        params = dict(item.partition("=")[::2] for item in query.split("&") if item)
        if path == "/_ping":
            writer.write(f"HTTP/1.1 200 OK\r\nApi-Version: {API}\r\nOstype: linux\r\nContent-Length: 2\r\n\r\nOK"
                         .encode() if method == "GET" else
                         f"HTTP/1.1 200 OK\r\nApi-Version: {API}\r\nOstype: linux\r\nContent-Length: 0\r\n\r\n".encode())
        elif path == f"/containers/{self.container}/json":
            self._reply(writer, 200, {"Id": self.container, "State": {"Running": True}, "Config": {"Tty": False}})
        elif path == f"/containers/{self.container}/exec" and method == "POST":
            record = ExecRecord(json.loads(body or b"{}"))
            self.execs[record.id] = record
            self._reply(writer, 201, {"Id": record.id})
        elif (m := re.fullmatch(r"/exec/(\w+)/start", path)) and m.group(1) in self.execs:
            await self._start(self.execs[m.group(1)], json.loads(body or b"{}"), reader, writer)
            return False
        elif (m := re.fullmatch(r"/exec/(\w+)/resize", path)) and m.group(1) in self.execs:
            size = (int(params.get("w", 0)), int(params.get("h", 0)))
            self.resizes.append(size)
            record = self.execs[m.group(1)]
            if record.session is not None:
                await record.session.resize(*size)
            else:
                record.pending_size = size
            self._reply(writer, 200)
        elif (m := re.fullmatch(r"/exec/(\w+)/json", path)) and m.group(1) in self.execs:
            record = self.execs[m.group(1)]
            self._reply(writer, 200, {"ID": record.id, "Running": record.running, "ExitCode": record.exit_code,
                                      "ProcessConfig": {"tty": record.config.get("Tty", False)},
                                      "ContainerID": self.container, "Pid": 0})
        else:
            self._reply(writer, 404, {"message": f"page not found: {method} {path}"})
        await writer.drain()
        return True

    async def _start(self, record: ExecRecord, start: dict[str, Any], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        config = record.config
        tty = bool(config.get("Tty"))
        writer.write(f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {RAW_STREAM if tty else MULTIPLEXED_STREAM}\r\n"
                     "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode())
        await writer.drain()
        size = config.get("ConsoleSize") or start.get("ConsoleSize") or [0, 0]
        record.running = True

        async def on_session(session: Session) -> None:
            record.session = session
            if record.pending_size is not None:
                await session.resize(*record.pending_size)

        code = await bridge_exec(self.client, reader if config.get("AttachStdin") else None, writer,
                                 config["Cmd"], env=config.get("Env") or [], workdir=config.get("WorkingDir") or "",
                                 tty=tty, user=config.get("User") or "", height=size[0], width=size[1],
                                 on_session=on_session)
        record.exit_code = code  # before the stream closes: the CLI inspects right after EOF
        record.running = False
        await writer.drain()
