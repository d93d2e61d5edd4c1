"""SOCKS5 mode through common's front end: names go to the backend unresolved (cases 33-36, D10)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from origins import InProcess, Origin, echo

from hatchway.common.dialing import Connected, ProxyError
from hatchway.sidecar import DirectBackend, DirectScript
from hatchway.sidecar.proxy import reply_for_text


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def socks_connect(port: int, atyp: int, address: bytes, dport: int,
                        cmd: int = 1) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await asyncio.wait_for(reader.readexactly(2), 10) == b"\x05\x00"
    if atyp == 3:
        address = bytes([len(address)]) + address
    writer.write(bytes([5, cmd, 0, atyp]) + address + struct.pack("!H", dport))
    head = await asyncio.wait_for(reader.readexactly(4), 10)
    assert head[0] == 5
    rest = {1: 4, 4: 16}.get(head[3], 0)
    if head[3] == 3:
        rest = (await reader.readexactly(1))[0]
    await reader.readexactly(rest + 2)
    return head[1], reader, writer


@pytest.mark.parametrize(("atyp", "host"), [(1, "127.0.0.1"), (3, "svc"), (3, "svc.tail.example"), (4, "::1")])
async def test_connect_each_address_type(atyp: int, host: str, sidecars: InProcess) -> None:
    async with Origin(echo, "::1" if atyp == 4 else "127.0.0.1") as origin:
        names = {"svc": "127.0.0.1", "svc.tail.example": "127.0.0.1"}
        sidecar, out = await sidecars.start("socks5", DirectScript(names=names))
        if atyp == 1:
            address = socket.inet_aton(host)
        elif atyp == 4:
            address = socket.inet_pton(socket.AF_INET6, host)
        else:
            address = host.encode()
        rep, reader, writer = await socks_connect(port_of(sidecar.proxy_url), atyp, address, origin.port)
        assert rep == 0
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
        writer.close()
    shown = f"[{host}]:{origin.port}" if atyp == 4 else f"{host}:{origin.port}"
    assert f"[SOCKS5] Dialing {shown} via Tailscale" in out.getvalue().splitlines()


async def test_version_4_rejected(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start("socks5")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar.proxy_url))
    writer.write(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_http_request_refused_in_socks5_mode(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start("socks5")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar.proxy_url))
    writer.write(b"GET http://svc/ HTTP/1.1\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


@pytest.mark.parametrize("cmd", [2, 3])
async def test_bind_and_udp_associate_not_supported(cmd: int, sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start("socks5")
    rep, _, writer = await socks_connect(port_of(sidecar.proxy_url), 1, socket.inet_aton("127.0.0.1"), 80, cmd)
    writer.close()
    assert rep == 0x07


class Failing(DirectBackend):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        raise ProxyError(1, self.text)


async def test_reply_codes(sidecars: InProcess) -> None:
    async with Origin(echo) as closed:
        port = closed.port
    sidecar, _ = await sidecars.start("socks5")
    rep, _, writer = await socks_connect(port_of(sidecar.proxy_url), 1, socket.inet_aton("127.0.0.1"), port)
    writer.close()
    assert rep == 0x05  # refused
    rep, _, writer = await socks_connect(port_of(sidecar.proxy_url), 3, b"nosuch", 80)
    writer.close()
    assert rep == 0x04  # unknown name
    unreachable, _ = await sidecars.start("socks5", backend=Failing("connect: network is unreachable"))
    rep, _, writer = await socks_connect(port_of(unreachable.proxy_url), 3, b"svc", 80)
    writer.close()
    assert rep == 0x03


def test_reply_rule() -> None:
    assert reply_for_text("dial tcp 1.2.3.4:80: connect: connection refused") == 0x05
    assert reply_for_text("connect: network is unreachable") == 0x03
    assert reply_for_text("no peer named x on the mesh") == 0x04


async def test_socks_greeting_refused_in_http_mode(sidecars: InProcess) -> None:
    sidecar, _ = await sidecars.start("http")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar.proxy_url))
    writer.write(b"\x05\x01\x00")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
