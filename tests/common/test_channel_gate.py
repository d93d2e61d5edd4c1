"""InboundGate: the slow-consumer policies of the multiplexed channels."""

import asyncio

from hatchway.common.channel import InboundGate, SlowConsumerPolicy


class FakeChannel:
    name = "test"

    def __init__(self, gate):
        self.gate = gate
        self.reset_reason = None
        self.reset_event = asyncio.Event()

    def reset(self, reason):
        self.reset_reason = reason
        self.gate.resume(self)
        self.reset_event.set()


async def test_block_holds_the_gate_until_every_paused_channel_resumes():
    gate = InboundGate(SlowConsumerPolicy.BLOCK)
    a, b = FakeChannel(gate), FakeChannel(gate)
    gate.pause(a)
    gate.pause(b)
    assert gate.blocked
    gate.resume(a)
    assert gate.blocked
    gate.resume(b)
    assert not gate.blocked
    await asyncio.wait_for(gate.wait_open(), 1)
    assert a.reset_reason is None and b.reset_reason is None


async def test_reset_policy_resets_at_once_and_never_blocks():
    gate = InboundGate(SlowConsumerPolicy.RESET)
    channel = FakeChannel(gate)
    gate.pause(channel)
    assert channel.reset_reason == "slow consumer" and not gate.blocked


async def test_block_resets_a_channel_that_stays_stalled_past_the_timeout():
    gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0.05)
    stalled, slow = FakeChannel(gate), FakeChannel(gate)
    gate.pause(stalled)
    gate.pause(slow)
    gate.resume(slow)  # a slow reader that keeps draining is never reset
    await asyncio.wait_for(stalled.reset_event.wait(), 5)
    assert stalled.reset_reason == "stalled consumer" and slow.reset_reason is None
    assert not gate.blocked


async def test_resuming_in_time_cancels_the_stall_timer():
    gate = InboundGate(SlowConsumerPolicy.BLOCK, stall_timeout=0.05)
    channel, witness = FakeChannel(gate), FakeChannel(gate)
    gate.pause(channel)
    gate.resume(channel)
    gate.pause(witness)  # its timer firing proves the first one's would have fired by then
    await asyncio.wait_for(witness.reset_event.wait(), 5)
    assert channel.reset_reason is None
