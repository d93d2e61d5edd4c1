"""The Python API: Server and Client embedded in the caller's event loop (both loop flavours)."""

import asyncio
import hashlib
import os
import struct

from hatchway.linksocks import Client, Server


async def test_forward_tunnel_in_one_loop(target):
    async with Server(ws_host="127.0.0.1", ws_port=0) as server:
        token = server.add_forward_token()
        assert len(token) == 16
        url = f"ws://127.0.0.1:{server.ws_address[1]}"
        async with Client(token, url=url, socks_host="127.0.0.1", socks_port=0) as client:
            await client.wait_ready(10)
            reader, writer = await asyncio.open_connection(*client.socks_address)
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", target.port))
            assert (await reader.readexactly(10))[1] == 0
            payload = os.urandom(3 << 20)
            writer.write(b"E" + payload)
            echoed = await reader.readexactly(len(payload))
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            writer.close()
            await writer.wait_closed()
    assert server.links == set() and len(server.table) == 0


async def test_reverse_tunnel_in_one_loop(target):
    async with Server(ws_host="127.0.0.1", ws_port=0) as server:
        token, port = server.add_reverse_token()
        url = f"ws://127.0.0.1:{server.ws_address[1]}"
        async with Client(token, url=url, reverse=True) as provider:
            await provider.wait_ready(10)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", target.port))
            assert (await reader.readexactly(10))[1] == 0
            writer.write(b"Ereverse")
            assert await reader.readexactly(7) == b"reverse"
            writer.close()
        assert server.remove_token(token)
