"""common.dialing contracts: Connected handoff, pluggable Resolver, RoutingDialer, UDP resolve tasks."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hatchway.common import dialer, socks5
from hatchway.common.dialer import (
    DirectDialer,
    DirectUdpAssociation,
    Route,
    RoutingDialer,
    dial,
    host_suffix,
    open_tcp,
)
from hatchway.common.dialing import Connected, Dialer, ProxyError, SystemResolver, UdpAssociation
from hatchway.common.proxyfront import ProxyFront
from helpers import wait_until

TIMEOUT = 5.0


class Collector(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.lost = asyncio.Event()
        self.error: Exception | None = None
        self.changed = asyncio.Event()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        self.lost.set()


async def banner_server(banner: bytes, *, close: bool) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        if not close:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_connected_keeps_the_targets_first_bytes_until_attach() -> None:
    server, port = await banner_server(b"HELLO", close=False)
    async with server:
        connected = await dial("127.0.0.1", port)
        collector = Collector()
        connected.attach(collector)
        await wait_until(lambda: bytes(collector.data) == b"HELLO", what="greeting")
        assert collector.transport is connected.transport
        connected.transport.write(b"echo me")
        await wait_until(lambda: bytes(collector.data) == b"HELLOecho me", what="echo")
        connected.close()
        await wait_until(collector.lost)


async def test_connected_replays_an_end_of_stream_that_came_before_attach() -> None:
    server, port = await banner_server(b"BYE", close=True)
    async with server:
        connected = await dial("127.0.0.1", port)
        transport = connected.transport
        transport.resume_reading()  # let the EOF in while no real protocol is attached
        await wait_until(lambda: transport.get_protocol().eof, what="EOF at the handoff")  # type: ignore[attr-defined]
        collector = Collector()
        connected.attach(collector)
        assert bytes(collector.data) == b"BYE"
        assert collector.eof
        await wait_until(collector.lost)


async def test_connected_with_own_adopt_gets_the_leftover() -> None:
    seen: list[tuple[asyncio.Protocol, bytes]] = []

    class FakeTransport:
        def is_closing(self) -> bool:
            return False

    connected = Connected(FakeTransport(), b"early", adopt=lambda protocol, left: seen.append((protocol, left)))  # type: ignore[arg-type]
    collector = Collector()
    connected.attach(collector)
    assert seen == [(collector, b"early")] and connected.leftover == b""


class MapResolver:
    """A resolver with its own names (as a tailnet backend has)."""

    def __init__(self, names: dict[str, str], *, block: bool = False) -> None:
        self.names = names
        self.block = block
        self.calls: list[tuple[str, socket.SocketKind]] = []
        self.entered = asyncio.Event()

    async def resolve(
        self, host: str, port: int, *, kind: socket.SocketKind = socket.SOCK_STREAM, family: int = 0
    ) -> list[tuple[int, str]]:
        self.calls.append((host, kind))
        self.entered.set()
        if self.block:
            await asyncio.Event().wait()
        if host not in self.names:
            raise ProxyError(socks5.Rep.HOST_UNREACHABLE, f"dial tcp: lookup {host}: no such host")
        return [(socket.AF_INET, self.names[host])]


async def test_open_tcp_uses_the_given_resolver() -> None:
    server, port = await banner_server(b"X", close=True)
    resolver = MapResolver({"db.tailnet": "127.0.0.1"})
    async with server:
        transport, collector = await open_tcp("db.tailnet", port, Collector, resolver=resolver)
        await wait_until(collector.lost)
        assert bytes(collector.data) == b"X"
        transport.close()
        with pytest.raises(ProxyError) as info:
            await open_tcp("other.tailnet", port, Collector, resolver=resolver)
        assert info.value.message == "dial tcp: lookup other.tailnet: no such host"
    assert resolver.calls == [("db.tailnet", socket.SOCK_STREAM), ("other.tailnet", socket.SOCK_STREAM)]


async def test_system_resolver_returns_literals_and_names() -> None:
    resolver = SystemResolver()
    assert await resolver.resolve("::1", 80) == [(socket.AF_INET6, "::1")]
    assert await resolver.resolve("127.0.0.1", 80) == [(socket.AF_INET, "127.0.0.1")]
    addresses = await resolver.resolve("localhost", 80)
    assert addresses and all(address in ("127.0.0.1", "::1") for _, address in addresses)


class RecordingDialer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.opened: list[tuple[str, int]] = []

    async def open(self, host: str, port: int, client: tuple[str, int]) -> Connected:
        self.opened.append((host, port))
        raise ProxyError(socks5.Rep.CONNECTION_REFUSED, f"{self.name} refused")

    async def associate(self, client: tuple[str, int]) -> UdpAssociation:
        raise ProxyError(socks5.Rep.COMMAND_NOT_SUPPORTED, f"{self.name}: no UDP")


async def test_routing_dialer_first_matching_route_wins() -> None:
    tailnet, lan, default = RecordingDialer("tailnet"), RecordingDialer("lan"), RecordingDialer("default")
    router = RoutingDialer(
        [Route(host_suffix(".ts.net"), tailnet), Route(lambda host, port: port == 5432, lan)], default
    )
    assert isinstance(router, Dialer)
    for host, port, name in [
        ("db.ts.net", 5432, "tailnet"),
        ("TS.NET.", 80, "tailnet"),
        ("nots.net", 5432, "lan"),
        ("example.com", 80, "default"),
    ]:
        with pytest.raises(ProxyError, match=f"{name} refused"):
            await router.open(host, port, ("127.0.0.1", 1))
    assert tailnet.opened == [("db.ts.net", 5432), ("TS.NET.", 80)]
    assert lan.opened == [("nots.net", 5432)] and default.opened == [("example.com", 80)]
    with pytest.raises(ProxyError, match="default: no UDP"):
        await router.associate(("127.0.0.1", 1))
    with pytest.raises(ProxyError, match="lan: no UDP"):
        await RoutingDialer([], default, udp=lan).associate(("127.0.0.1", 1))


async def test_front_end_with_a_routing_dialer_and_resolver() -> None:
    server, port = await banner_server(b"routed", close=True)
    direct = DirectDialer(resolver=MapResolver({"svc.internal": "127.0.0.1"}))
    refused = RecordingDialer("blocked")
    router = RoutingDialer([Route(host_suffix("internal"), direct)], refused)
    async with server, ProxyFront(router, "127.0.0.1", 0, realm="test") as front:
        for host, expected_reply, body in [("svc.internal", 0, b"routed"), ("example.com", 0x05, b"")]:
            reader, writer = await asyncio.open_connection(*front.bound[0])
            writer.write(b"\x05\x01\x00" + socks5.build_request(socks5.CMD_CONNECT, host, port))
            answer = await asyncio.wait_for(reader.read(), TIMEOUT)
            assert answer[:2] == b"\x05\x00" and answer[3] == expected_reply
            assert answer[12:] == body
            writer.close()
    assert refused.opened == [("example.com", port)]


async def test_udp_association_resolve_tasks_are_owned_and_cancelled() -> None:
    resolver = MapResolver({}, block=True)
    association = await DirectUdpAssociation.open(resolver)
    association.set_receiver(lambda host, port, data: None)
    for i in range(3):
        association.send(f"slow{i}.example", 9, b"x")
    await wait_until(resolver.entered)
    assert association.pending == 3
    association.close()
    await wait_until(lambda: association.pending == 0, what="resolve tasks cancelled")


async def test_udp_association_sends_through_the_resolver() -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.put_nowait((data, addr))

    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    port = sink.get_extra_info("sockname")[1]
    association = await DirectUdpAssociation.open(MapResolver({"udp.tailnet": "127.0.0.1"}))
    try:
        association.send("udp.tailnet", port, b"via resolver")
        data, _ = await wait_until(received.get())
        assert data == b"via resolver"
    finally:
        association.close()
        sink.close()


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_dial_through_upstream_keeps_the_bytes_that_rode_with_the_reply(scheme: str) -> None:
    """The target greets at once, so its first bytes may arrive with the proxy's reply: Connected keeps them."""
    server, port = await banner_server(b"GREETING", close=False)
    async with server, ProxyFront(DirectDialer(), "127.0.0.1", 0, realm="test") as upstream:
        connected = await dial("127.0.0.1", port, upstream=f"{scheme}://127.0.0.1:{upstream.bound[0][1]}")
        collector = Collector()
        connected.attach(collector)
        await wait_until(lambda: bytes(collector.data) == b"GREETING", what="greeting through the upstream")
        connected.transport.write(b"!")
        await wait_until(lambda: bytes(collector.data) == b"GREETING!", what="echo")
        connected.close()
        await wait_until(collector.lost)


async def test_udp_association_send_after_close_is_dropped_quietly() -> None:
    association = await DirectUdpAssociation.open(MapResolver({"late.example": "127.0.0.1"}))
    association.close()
    association.send("late.example", 9, b"too late")  # no task, no error, even before the socket is released
    association.send("127.0.0.1", 9, b"too late")
    assert association.pending == 0


# ------------------------------------------------------------------ Happy Eyeballs (dialer.race), without sockets


class FakeTransport:
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Attempts:
    """A connect function whose attempts the test answers one by one."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[FakeTransport]] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def connect(self, family: int, address: str):  # type: ignore[no-untyped-def]
        future = asyncio.get_running_loop().create_future()
        self.futures[address] = future
        self.started.append(address)
        try:
            return await future, None
        except asyncio.CancelledError:
            self.cancelled.append(address)
            raise

    async def wait_started(self, count: int) -> None:
        await wait_until(lambda: len(self.started) >= count, what=f"{count} attempts started")


def test_interleave_alternates_families_starting_with_the_first():
    v4, v6 = socket.AF_INET, socket.AF_INET6
    addresses = [(v6, "::1"), (v6, "::2"), (v4, "1.1.1.1"), (v6, "::3")]
    assert dialer.interleave(addresses) == [(v6, "::1"), (v4, "1.1.1.1"), (v6, "::2"), (v6, "::3")]
    assert dialer.interleave([]) == []


async def test_race_starts_the_next_attempt_after_the_delay_and_the_first_answer_wins():
    attempts = Attempts()
    candidates = [(socket.AF_INET6, "::1"), (socket.AF_INET, "10.0.0.1"), (socket.AF_INET, "10.0.0.2")]
    racing = asyncio.ensure_future(dialer.race(candidates, attempts.connect, delay=0.01))
    await attempts.wait_started(2)  # the first did not answer within the delay: the second started
    attempts.futures["10.0.0.1"].set_result(FakeTransport("10.0.0.1"))
    (transport, _), failures = await racing
    assert transport.address == "10.0.0.1" and failures == []
    assert "::1" in attempts.cancelled  # the slower attempt was cancelled


async def test_race_moves_on_at_once_after_a_failure_and_reports_the_first_addresses_error():
    attempts = Attempts()
    candidates = [(socket.AF_INET, "10.0.0.1"), (socket.AF_INET, "10.0.0.2")]
    racing = asyncio.ensure_future(dialer.race(candidates, attempts.connect, delay=3600))
    await attempts.wait_started(1)
    attempts.futures["10.0.0.1"].set_exception(ConnectionRefusedError(111, "refused"))
    await attempts.wait_started(2)  # no waiting for the (hour-long) delay
    attempts.futures["10.0.0.2"].set_exception(OSError(113, "unreachable"))
    winner, failures = await racing
    assert winner is None
    assert [(i, e.errno) for i, e in failures] == [(0, 111), (1, 113)]


async def test_race_closes_a_connection_that_lost():
    attempts = Attempts()
    candidates = [(socket.AF_INET, "10.0.0.1"), (socket.AF_INET, "10.0.0.2")]
    racing = asyncio.ensure_future(dialer.race(candidates, attempts.connect, delay=0.01))
    await attempts.wait_started(2)
    first, second = FakeTransport("10.0.0.1"), FakeTransport("10.0.0.2")
    attempts.futures["10.0.0.1"].set_result(first)
    attempts.futures["10.0.0.2"].set_result(second)  # both answer in the same loop turn
    (transport, _), _ = await racing
    loser = second if transport is first else first
    assert not transport.closed and loser.closed
