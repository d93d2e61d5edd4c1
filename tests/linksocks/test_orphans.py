"""The orphan buffer: messages for channels whose Connect has not arrived, bounded and expiring."""


from hatchway.linksocks.orphans import OrphanBuffer
from helpers import wait_until


async def test_keeps_order_and_forgets_on_take():
    buffer = OrphanBuffer()
    buffer.add(b"a" * 16, "m1", 10)
    buffer.add(b"a" * 16, "m2", 5)
    assert buffer.bytes == 15 and len(buffer) == 1
    assert buffer.take(b"a" * 16) == ["m1", "m2"]
    assert buffer.take(b"a" * 16) == [] and buffer.bytes == 0
    buffer.close()


async def test_limits_messages_bytes_and_channels():
    buffer = OrphanBuffer(max_messages=2, max_bytes=100, max_channels=2)
    assert buffer.add(b"1" * 16, "x", 1) and buffer.add(b"1" * 16, "y", 1)
    assert not buffer.add(b"1" * 16, "z", 1)  # 1000 messages per channel upstream; 2 here
    assert buffer.add(b"2" * 16, "big", 98)
    assert not buffer.add(b"2" * 16, "more", 1)  # byte budget
    assert not buffer.add(b"3" * 16, "third", 0)  # channel budget
    buffer.close()


async def test_entries_expire():
    buffer = OrphanBuffer(ttl=0.15)
    buffer.add(b"e" * 16, "old", 3)
    await wait_until(lambda: len(buffer) == 0, what="the entry to expire")
    assert buffer.bytes == 0
    buffer.close()


async def test_messages_without_payload_count_against_a_total_message_budget():
    """#6 item 9: zero-length Data / Disconnect cost no payload bytes, but the count is bounded over all channels."""
    buffer = OrphanBuffer(max_messages=1000, max_total_messages=5)
    for index in range(5):
        assert buffer.add(bytes([index]) * 16, "disconnect", 0)
    assert not buffer.add(b"\xff" * 16, "disconnect", 0)
    assert not buffer.add(b"\x00" * 16, "disconnect", 0)
    assert buffer.messages == 5 and buffer.bytes == 0
    buffer.take(b"\x00" * 16)
    assert buffer.messages == 4
    assert buffer.add(b"\xff" * 16, "disconnect", 0)
    buffer.close()
