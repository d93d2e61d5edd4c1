"""hatchway's client at the wire: auth styles, failures, redirects, keepalive, Resume, -T (cases 21-22, 34, 41-44, 47).

A scripted server (rawpeer.RawServer) plays the LinkSocks server.
"""

import asyncio
import hashlib
import socket
import struct
import uuid

import pytest
from aiohttp import WSMsgType, web
from rawpeer import RawServer, read_message, send_message

from hatchway.linksocks import Client, Server, protocol
from hatchway.linksocks.client import AuthError, env_proxy
from hatchway.linksocks.mux import UNPROVABLE
from hatchway.linksocks.protocol import Auth, AuthResponse, Connect, ConnectResponse, Data, Disconnect
from helpers import wait_until


async def socks_open(port, host="127.0.0.1", target_port=80):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    writer.write(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", target_port))
    reply = await reader.readexactly(10)
    return reader, writer, reply[1]


def fast_client(port, path="/socket", **kw):
    options = dict(url=f"ws://127.0.0.1:{port}{path}", socks_host="127.0.0.1", socks_port=0,
                   reconnect_initial=0.05, reconnect_factor=1.0)
    options.update(kw)
    return Client(**options)


async def test_url_query_auth_sends_the_hash_and_no_auth_message():
    seen = []

    async def handler(ws, request):
        seen.append(dict(request.query))
        await send_message(ws, AuthResponse(True))
        await ws.receive()

    fake = await RawServer(handler).start()
    client = fast_client(fake.port, token="secret")
    await client.start()
    await client.wait_ready(10)
    query = seen[0]
    assert query["token"] == hashlib.sha256(b"secret").hexdigest()
    assert query["reverse"] == "false"
    assert uuid.UUID(query["instance"]).bytes == client.instance
    await client.close()
    await fake.close()


async def test_binary_auth_and_anonymous_token():
    seen = []

    async def handler(ws, request):
        seen.append(await read_message(ws))
        await send_message(ws, AuthResponse(True))
        await ws.receive()

    fake = await RawServer(handler).start()
    client = fast_client(fake.port, path="/socket/custom", reverse=True)
    await client.start()
    await client.wait_ready(10)
    assert seen[0] == Auth("anonymous", True, client.instance)
    await client.close()
    await fake.close()


async def test_auth_failure_is_fatal_unless_retry_auth():
    attempts = []

    async def handler(ws, request):
        attempts.append(1)
        await send_message(ws, AuthResponse(False, "invalid token"))

    fake = await RawServer(handler).start()
    client = fast_client(fake.port, token="bad")
    await client.start()
    with pytest.raises(AuthError, match="invalid token"):
        await client.wait_ready(10)
    with pytest.raises(AuthError):
        await client.wait_closed()
    assert len(attempts) == 1
    await client.close()
    retrying = fast_client(fake.port, token="bad", retry_auth=True)
    await retrying.start()
    await wait_until(lambda: len(attempts) >= 4, what="four attempts")
    assert not retrying.stopped
    await retrying.close()
    await fake.close()


async def test_follows_redirects_to_the_socket():
    async def handler(ws, request):
        await send_message(ws, AuthResponse(True))
        await ws.receive()

    hops = []

    async def redirect(request):
        hops.append(request.path)
        n = int(request.match_info["n"])
        location = "/socket" if n == 0 else f"/r/{n - 1}"
        raise web.HTTPFound(location) if n % 2 else web.HTTPPermanentRedirect(location)

    fake = await RawServer(handler).start([web.get("/r/{n}", redirect)])
    client = fast_client(fake.port, path="/r/4")
    await client.start()
    await client.wait_ready(10)
    assert hops == ["/r/4", "/r/3", "/r/2", "/r/1", "/r/0"]
    await client.close()
    await fake.close()


async def test_client_pings_and_drops_a_silent_server():
    pings = []
    connections = []

    async def handler(ws, request):
        connections.append(1)
        await send_message(ws, AuthResponse(True))
        if len(connections) == 1:
            async for msg in ws:  # answer nothing: count pings for a while, then go silent
                if msg.type is WSMsgType.PING:
                    pings.append(1)
                    if len(pings) >= 3:
                        await asyncio.sleep(3)
                        return
        else:
            await ws.receive()

    fake = await RawServer(handler, autoping=False).start()
    client = fast_client(fake.port, ping_interval=0.2, read_timeout=1.0)
    await client.start()
    await client.wait_ready(10)
    await wait_until(lambda: len(connections) >= 2, what="the client to drop the silent server and reconnect")
    assert len(pings) >= 3
    await client.close()
    await fake.close()


def _channel_server(log):
    """A fake server that acts as an echo dialer and records (connection number, message)."""
    count = 0

    async def handler(ws, request):
        nonlocal count
        count += 1
        number = count
        await send_message(ws, AuthResponse(True))
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.BINARY:
                return
            message = protocol.decode(msg.data)[1]
            log.append((number, message))
            if isinstance(message, Connect) and not message.resume:
                await send_message(ws, ConnectResponse(True, message.channel_id))
            elif isinstance(message, Data):
                await send_message(ws, Data(protocol.TCP, message.channel_id, bytes(message.data)))
                if bytes(message.data) == b"drop":
                    await ws.close()
                    return

    return handler


async def test_drop_with_a_peer_without_ledger_resets_and_tells_the_peer():
    """#6 item 3: the fake server keeps no byte ledger, so what was in flight at the cut cannot be proven
    delivered: the channel is reset (never resumed after a possible hole) and the next link says so."""
    log = []
    fake = await RawServer(_channel_server(log)).start()
    client = fast_client(fake.port)
    await client.start()
    await client.wait_ready(10)
    reader, writer, reply = await socks_open(client.socks_address[1])
    assert reply == 0
    writer.write(b"one")
    assert await reader.readexactly(3) == b"one"
    writer.write(b"drop")
    assert await reader.readexactly(4) == b"drop"
    with pytest.raises(ConnectionResetError):  # an error, never a clean EOF nor a silent carry-on
        await asyncio.wait_for(reader.read(), 10)
    first = next(m for n, m in log if n == 1 and isinstance(m, Connect))
    await wait_until(lambda: any(n == 2 and isinstance(m, Disconnect) for n, m in log), what="the Disconnect")
    told = [m for n, m in log if n == 2 and m.channel_id == first.channel_id]
    assert told == [Disconnect(first.channel_id, UNPROVABLE)]  # no Connect(Resume = 1)
    writer.close()
    await client.close()
    await fake.close()


async def test_without_grace_a_drop_ends_the_channel():
    log = []
    fake = await RawServer(_channel_server(log)).start()
    client = fast_client(fake.port, transport_grace=0)
    await client.start()
    await client.wait_ready(10)
    reader, writer, _ = await socks_open(client.socks_address[1])
    writer.write(b"drop")
    assert await reader.readexactly(4) == b"drop"
    with pytest.raises(ConnectionResetError):  # an error, never a clean EOF that looks like a complete stream
        await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await client.close()
    await fake.close()


async def test_socks_port_opens_after_auth_and_requests_wait_for_a_link():
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def handler(ws, request):
        entered.set()
        await gate.wait()
        await send_message(ws, AuthResponse(True))
        await ws.receive()

    fake = await RawServer(handler).start()
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    socks_port = port.getsockname()[1]
    port.close()
    client = fast_client(fake.port, socks_port=socks_port)
    await client.start()
    await wait_until(entered, what="the client to wait for its AuthResponse")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", socks_port)
    gate.set()
    await client.wait_ready(10)
    await asyncio.open_connection("127.0.0.1", socks_port)
    await client.close()
    await fake.close()
    nowait = fast_client(fake.port, socks_wait_server=False, link_wait=0.3, reconnect=False)
    await nowait.start()  # the server is gone: the port is open anyway, requests get 0x03
    _, _, reply = await socks_open(nowait.socks_address[1])
    assert reply == 0x03
    await nowait.close()


async def test_threads_keep_each_channel_on_one_websocket(target):
    """-T 3 against hatchway's server: many channels, each channel's messages on a single link."""
    server = Server(ws_host="127.0.0.1", ws_port=0)
    await server.start()
    server.add_forward_token("tok")
    client = Client("tok", url=f"ws://127.0.0.1:{server.ws_address[1]}", socks_host="127.0.0.1", socks_port=0,
                    threads=3)
    await client.start()
    await client.wait_ready(10)
    await wait_until(lambda: len(client.links) == 3, what="three WebSockets")
    streams = [await socks_open(client.socks_address[1], target_port=target.port) for _ in range(6)]
    for reader, writer, reply in streams:
        assert reply == 0
        writer.write(b"E" + b"x" * 50000)
    for reader, writer, _ in streams:
        assert await reader.readexactly(50000) == b"x" * 50000
    carried = [len(link.channels) for link in client.links]
    assert sum(carried) == 6 and all(carried)
    for link in client.links:
        for channel in link.channels:
            assert channel.link is link
    for _, writer, _ in streams:
        writer.close()
    await client.close()
    await server.close()


def test_reconnect_backoff_policy():
    backoff = Client("t").reconnect_backoff()
    delays = [backoff.next() for _ in range(4)]
    assert delays == [1.0, 1.5, 2.25, 3.375]
    for _ in range(40):
        last = backoff.next()
    assert last == 600.0
    backoff.reset()
    assert backoff.next() == 1.0


@pytest.mark.parametrize("given,expected", [
    ("host:8765", "wss://host:8765/socket"),
    ("http://h", "ws://h/socket"),
    ("https://h/", "wss://h/socket"),
    ("ws://h:1/socket/", "ws://h:1/socket/"),
    ("ws://h:1/custom", "ws://h:1/custom"),
])
def test_url_normalisation(given, expected):
    assert Client("t", url=given).url == expected


@pytest.mark.parametrize("no_env_proxy", [False, True], ids=["env-proxy", "no-env-proxy"])
async def test_http_proxy_environment_for_the_websocket(monkeypatch, no_env_proxy):
    import ls_harness as h

    upstream = h.UpstreamProxy()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{upstream.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    server = Server(ws_host="127.0.0.1", ws_port=0)
    await server.start()
    server.add_forward_token("tok")
    client = Client("tok", url=f"ws://127.0.0.1:{server.ws_address[1]}", socks_port=0, socks_host="127.0.0.1",
                    no_env_proxy=no_env_proxy)
    await client.start()
    await client.wait_ready(10)
    via_proxy = [port for _, port in upstream.served]
    assert via_proxy == ([] if no_env_proxy else [server.ws_address[1]])
    await client.close()
    await server.close()
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert env_proxy("ws://127.0.0.1:1/socket") is None
    await asyncio.get_running_loop().run_in_executor(None, upstream.close)


async def test_udp_association_ends_with_its_control_connection():
    log = []
    fake = await RawServer(_channel_server(log)).start()
    client = fast_client(fake.port)
    await client.start()
    await client.wait_ready(10)
    reader, writer = await asyncio.open_connection(*client.socks_address)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    writer.write(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
    reply = await reader.readexactly(10)
    assert reply[1] == 0 and reply[4:8] == socket.inet_aton("127.0.0.1")
    writer.close()
    await wait_until(lambda: any(isinstance(m, protocol.Disconnect) for _, m in log), what="the Disconnect")
    connect = next(m for _, m in log if isinstance(m, Connect))
    disconnect = next(m for _, m in log if isinstance(m, protocol.Disconnect))
    assert connect.protocol == protocol.UDP and disconnect.channel_id == connect.channel_id
    await client.close()
    await fake.close()


async def test_provider_re_adds_its_connector_tokens_after_a_reconnect():
    import ls_harness as h

    server = Server(ws_host="127.0.0.1", ws_port=0)
    await server.start()
    server.add_reverse_token("auto", allow_manage_connector=True)
    proxy = await asyncio.get_running_loop().run_in_executor(None, h.CuttableProxy, server.ws_address[1])
    provider = fast_client(proxy.port, token="auto", reverse=True, connector_token="mine")
    await provider.start()
    await provider.wait_ready(10)
    await wait_until(lambda: server.tokens.get("mine") is not None, what="the connector token")
    first_pool = server.tokens.get("mine").reverse_token
    await asyncio.get_running_loop().run_in_executor(None, proxy.cut)
    # URL-query auth: a new pool per connection, the token follows it
    await wait_until(lambda: (entry := server.tokens.get("mine")) is not None and entry.reverse_token != first_pool,
                     what="the token to be re-added for the new pool")
    await provider.close()
    await asyncio.get_running_loop().run_in_executor(None, proxy.close)
    await server.close()


async def test_a_redirect_to_another_host_is_not_followed():
    """#6 item 13: the raw token (binary auth) must not be sent to the host a redirect names."""
    seen = []

    async def handler(ws, request):
        seen.append(await read_message(ws))
        await send_message(ws, AuthResponse(True))
        await ws.receive()

    async def redirect(request):
        raise web.HTTPFound(f"ws://localhost:{request.url.port}/socket/")  # same server, another host name

    fake = await RawServer(handler).start([web.get("/away", redirect)])
    client = fast_client(fake.port, path="/away", reconnect=False)
    await client.start()
    with pytest.raises(ConnectionError):
        await client.wait_ready(10)
    assert seen == []  # nothing reached the other host
    await client.close()
    await fake.close()


async def test_an_unreachable_server_is_reported_in_gos_words():
    """#11: no 'ssl:default' for a plain ws:// URL; the reason survives to wait_ready (-R gives up)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # bound, not listening: refused
        client = fast_client(port, reconnect=False)
        await client.start()
        with pytest.raises(ConnectionError) as failed:
            await client.wait_ready(10)
        await client.close()
    text = str(failed.value)
    assert text == f"dial tcp 127.0.0.1:{port}: connect: connection refused", text
    assert "ssl" not in text


async def test_startup_lines_show_addresses_not_python_tuples(caplog):
    """#11: 'listening on 127.0.0.1:PORT', not "[('127.0.0.1', PORT)]"."""
    caplog.set_level("INFO", logger="hatchway.linksocks")
    async with Server(ws_host="127.0.0.1", ws_port=0) as server:
        server.add_forward_token("tok")
        client = Client("tok", url=f"ws://127.0.0.1:{server.ws_address[1]}", socks_host="127.0.0.1", socks_port=0)
        async with client:
            await client.wait_ready(10)
    lines = [r.getMessage() for r in caplog.records if "listening on" in r.getMessage()]
    assert len(lines) == 2, lines
    for line in lines:
        assert "(" not in line and "'" not in line, line
        assert "127.0.0.1:" in line
