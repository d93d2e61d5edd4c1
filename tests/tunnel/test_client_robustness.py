"""Tunnel client: frames on the wire and tolerance of bad input (acceptance cases 9, 22-26)."""

from fake_runner import FrameTap, tunnel_client

from hatchway.tunnel import protocol
from hatchway.tunnel.protocol import Message, MsgType, Proto

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


async def test_case9_every_client_frame_is_masked_and_never_text(runner, echo_service):
    tap = await FrameTap(runner.port).start()
    try:
        async with tunnel_client(runner, url=tap.url, heartbeat=0.2) as (client, peer):
            await peer.open_tcp(1, echo_service.port)
            await peer.data(1, b"a" * 70000)  # a long payload: 64-bit length frames
            got = bytearray()
            await peer.collect_data(1, 70000, got.extend)
            await peer.ping(5)
            await peer.expect(MsgType.PONG, 5)
            await peer.connect(2, 1)  # refused: ERROR
            await peer.expect(MsgType.ERROR, 2)
            await peer.close_id(1)
            await peer.send_text("hello")
            await peer.ping(6)
            await peer.expect(MsgType.PONG, 6)
        await peer.wait_ended()
    finally:
        await tap.stop()
    opcodes = {opcode for opcode, _, _ in tap.frames}
    assert all(masked for _, masked, _ in tap.frames), tap.frames
    assert OP_TEXT not in opcodes
    assert OP_BINARY in opcodes and OP_CLOSE in opcodes
    assert opcodes <= {OP_BINARY, OP_CLOSE, OP_PING, OP_PONG}
    assert peer.texts == []


async def test_case22_ping_gets_pong_tcp_same_id_port0_empty(runner):
    async with tunnel_client(runner) as (_, peer):
        await peer.ping(77, proto=Proto.UDP, port=1234, payload=b"abc")
        assert await peer.recv(77) == Message(MsgType.PONG, Proto.TCP, 77, 0, b"")
        await peer.ping(0)
        assert await peer.recv(0) == Message(MsgType.PONG, Proto.TCP, 0, 0, b"")


async def test_case23_junk_is_dropped_and_the_tunnel_stays_up(runner, echo_service):
    async with tunnel_client(runner) as (client, peer):
        await peer.send(b"\x01\x00")  # shorter than a header
        await peer.send(bytes.fromhex("0900000000010000"))  # unknown type
        await peer.send(protocol.pack_header(MsgType.CONNECT, 7, 1, echo_service.port))  # unknown proto
        await peer.send_text("hello")
        await peer.ping(9)
        assert await peer.recv(9) == Message(MsgType.PONG, Proto.TCP, 9, 0, b"")
        assert 1 not in client.session.streams  # the proto-7 CONNECT was not acted on
        assert peer.log == [Message(MsgType.PONG, Proto.TCP, 9, 0, b"")]
        assert client.connections_made == 1 and len(runner.tunnels) == 1


async def test_case24_25_data_and_close_for_unknown_ids_are_dropped(runner):
    async with tunnel_client(runner) as (client, peer):
        await peer.data(987654, b"nobody home")
        await peer.close_id(987655)
        await peer.ping(1)
        await peer.expect(MsgType.PONG, 1)
        assert peer.log == [Message(MsgType.PONG, Proto.TCP, 1, 0, b"")]
        assert client.session.streams == {}
        assert client.connections_made == 1


async def test_case26_connected_error_pong_from_the_runner_are_ignored(runner, echo_service):
    async with tunnel_client(runner) as (client, peer):
        await peer.open_tcp(3, echo_service.port)
        await peer.send(protocol.connected(Proto.TCP, 3))
        await peer.send(protocol.error(3, "nope"))
        await peer.send(protocol.pong(3))
        await peer.send(protocol.connected(Proto.TCP, 4))
        await peer.data(3, b"still open")
        assert (await peer.expect(MsgType.DATA, 3)).payload == b"still open"
        assert [m.type for m in peer.log] == [MsgType.CONNECTED, MsgType.DATA]
        assert set(client.session.streams) == {3}
