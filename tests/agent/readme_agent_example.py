"""Run a command through a hatchway agent, then bridge another into Docker's stream framing."""

import asyncio

from hatchway.agent import Agent, AgentClient, AgentConfig
from hatchway.agent.client import bridge_exec
from hatchway.agent.dockerstream import FrameReader


class Collect:
    """Stands in for a hijacked Docker connection (anything with write() and async drain())."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        pass


async def main() -> None:
    config = AgentConfig(addr="127.0.0.1:0", token="secret", keep_alive=True, argv=["sleep", "60"],
                         copy_output=False)
    async with Agent(config) as agent:
        host, port = agent.address
        async with AgentClient.connect(f"{host}:{port}", token="secret") as client:
            result = await client.collect(["sh", "-c", "cat; echo to-stderr >&2; exit 3"], stdin=b"hello\n")
            print(result.stdout, result.stderr, result.code)  # b'hello\n' b'to-stderr\n' 3

            docker_side = Collect()
            code = await bridge_exec(client, None, docker_side, ["echo", "framed"])
            print(code, FrameReader().feed(bytes(docker_side.data)))  # 0 [(1, b'framed\n')]

            session = await client.exec(["sh", "-c", "read x; stty size"], tty=True, width=80, height=24)
            await session.resize(100, 30)
            await session.write(b"\n")
            output = b"".join([chunk.data async for chunk in session.events()])
            print(output, session.code)  # b'\r\n30 100\r\n' 0


asyncio.run(main())
