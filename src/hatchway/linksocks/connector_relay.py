"""Agent mode on the server: relay a connector's channels to providers (section 13.1).

The server does not dial a connector's Connect. It picks a provider of the
reverse token the connector token maps to (round-robin, waiting up to
``--connector-wait-provider``), forwards the Connect unchanged (same channel
id) and from then on relays ConnectResponse, Data and Disconnect between the
two WebSockets by channel id. Messages from the connector that arrive before
a provider is bound are kept in order.

Flow control: while one side's WebSocket cannot take more, the other side's
read loop is held (nothing is dropped, nothing grows without bound).

When a provider link drops, the binding waits (transport grace) for the same
provider to come back and re-sends it the Connect with Resume = 1; when a
connector link drops, it waits for the connector's own Resume.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hatchway.common.tasks import TaskSet

from . import protocol
from .channel_table import CHANNEL_EXPIRED, ChannelTable
from .connector_binding import ConnectorBinding
from .protocol import Connect, ConnectResponse, Disconnect
from .routing import ConnectStep, connect_step, replay_early
from .target_dialer import ACCESS_DENIED, allowed_by

log = logging.getLogger(__name__)

CONNECTOR_WAIT = 5.0
NO_PROVIDER = "no available reverse clients"


class ConnectorRelay:
    """Handles the Connect messages of connectors."""

    def __init__(self, table: ChannelTable, orphans: Any, *, wait: float = CONNECTOR_WAIT) -> None:
        self.table = table
        self.orphans = orphans
        self.wait = wait
        self._tasks = TaskSet("connector bindings", logger=log)

    def on_connect(
        self,
        link: Any,
        message: Connect,
        pick_provider: Callable[[float], Any],
        rules: Any = None,
    ) -> None:
        """``pick_provider(timeout)`` returns a provider link, or None when there is none."""
        existing = self.table.get(message.channel_id)
        if message.resume:  # only a live binding can be resumed
            live = isinstance(existing, ConnectorBinding) and not existing.closed
        else:
            live = existing is not None
        step = connect_step(message, live)
        if step is ConnectStep.RESUME and isinstance(existing, ConnectorBinding):
            existing.connector_resumed(link, message)
            return
        if step is ConnectStep.EXPIRED:
            link.try_send(Disconnect(message.channel_id, CHANNEL_EXPIRED))
            return
        if step is ConnectStep.DUPLICATE:
            return
        binding = ConnectorBinding(self.table, message, link)
        binding.rules = rules
        replay_early(binding, link, self.orphans.take(message.channel_id))
        self._tasks.spawn(self._bind(binding, pick_provider, rules), name=f"bind {binding.name}")

    async def _bind(self, binding: ConnectorBinding, pick_provider: Callable[[float], Any], rules: Any) -> None:
        connect = binding.connect
        if rules and connect.protocol == protocol.TCP and not await allowed_by(rules, connect.address, connect.port):
            self._refuse(binding, f"{ACCESS_DENIED}: {connect.address}:{connect.port} is not allowed")
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not binding.closed:
            provider = await pick_provider(max(0.0, deadline - loop.time()))
            if provider is None:
                self._refuse(binding, NO_PROVIDER)
                return
            if binding.bind_provider(provider):
                return
            if loop.time() >= deadline:
                self._refuse(binding, NO_PROVIDER)
                return

    def _refuse(self, binding: ConnectorBinding, error: str) -> None:
        if binding.closed:
            return
        if binding.connector is not None:
            binding.connector.try_send(ConnectResponse(False, binding.id, error))
        binding._forget()

    async def close(self) -> None:
        await self._tasks.aclose()
