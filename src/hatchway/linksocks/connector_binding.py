"""One connector channel relayed to one provider (agent mode on the server, section 13.1); no I/O.

The :class:`ConnectorBinding` sits in the server's channel table under the
connector's channel id and relays ConnectResponse, Data (with the ledger's
sequences, acknowledgements and half-closes) and Disconnect between the two
links. Messages for a side that is not bound yet are kept in order; past
``HOLD_BYTES`` the sending side's read loop is held. While one side's
WebSocket cannot take more, the other side's read loop is held. The asyncio
part (picking a provider, waiting for one) is ``connector_relay.py``.
"""

from __future__ import annotations

import time
from typing import Any

from . import protocol
from .channel_table import ChannelTable
from .protocol import Connect, ConnectResponse, Data, Disconnect
from .tokens import Role

HOLD_BYTES = 4 * 1024 * 1024  # kept for a side that is not bound (yet); beyond it the sender is held


class _Hold:
    """Flow listener on one side's writer: while it is full, hold the other side's read loop."""

    __slots__ = ("binding", "toward_provider", "gate")

    def __init__(self, binding: ConnectorBinding, toward_provider: bool) -> None:
        self.binding = binding
        self.toward_provider = toward_provider
        self.gate: Any = None

    @property
    def name(self) -> str:
        return self.binding.name

    def reset(self, reason: str) -> None:
        self.binding.close(reason)

    def pause_writing(self) -> None:
        source = self.binding.connector if self.toward_provider else self.binding.provider
        if source is not None and self.gate is None:
            self.gate = source.gate
            self.gate.pause(self)

    def resume_writing(self) -> None:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            gate.resume(self)


class ConnectorBinding:
    """One connector channel relayed to one provider."""

    resumable = True

    def __init__(self, table: ChannelTable, connect: Connect, connector: Any) -> None:
        self.id = connect.channel_id
        self.table = table
        self.connect = connect
        self.connector: Any = connector
        self.provider: Any = None
        self.suspended = False
        self.suspended_at = 0.0
        self.resumed = False
        self.closed = False
        # both ends keep the byte ledger (the connector offered it, the provider confirmed it): only then lossless
        self.ledger = connect.protocol == protocol.TCP and connect.received is not None
        self._cut = False
        self._queued: list[tuple[Any, int]] = []  # messages for a side that is not bound
        self._queued_bytes = 0
        self._queued_for_provider = True
        self._held_gate: Any = None
        self._to_connector_end = 0  # ledger channels: stream offset of the provider's bytes relayed so far
        self.rules: Any = None  # the connector's dial rules; applied to UDP datagrams here (TCP: at bind time)
        self.refused = 0
        self._to_provider = _Hold(self, True)
        self._to_connector = _Hold(self, False)
        table.add(self.id, self)
        connector.channels.add(self)
        connector.writer.add_listener(self._to_connector)

    @property
    def name(self) -> str:
        return protocol.uuid_text(self.id)

    def connect_message(self, resume: bool = False) -> Connect:
        """The connector's Connect; on a Resume toward a new provider link, with the count relayed to the connector."""
        c = self.connect
        received = None
        if c.received is not None:
            received = self._to_connector_end if resume else c.received
        return Connect(c.protocol, c.channel_id, c.address, c.port, resume, received)

    def is_closing(self) -> bool:
        return self.closed

    # ------------------------------------------------------------ binding
    def bind_provider(self, link: Any, resume: bool = False) -> bool:
        if self.closed:
            return False
        if not link.try_send(self.connect_message(resume)):
            return False
        self.provider = link
        link.channels.add(self)
        link.writer.add_listener(self._to_provider)
        if self._queued_for_provider:
            self._flush(link)
        self.suspended = self.connector is None
        return True

    def rebind(self, link: Any, probe: float = 0.0) -> None:
        """Resume: ``link`` replaces the side it belongs to."""
        if self.closed:
            return
        if link.role is Role.REVERSE:
            # the keeper already sent Connect(Resume = 1) on ``link``
            self.resumed = True
            self.provider = link
            link.channels.add(self)
            link.writer.add_listener(self._to_provider)
            if self._queued_for_provider:
                self._flush(link)
        else:
            old = self.connector
            if old is not None and old is not link:
                old.channels.discard(self)
                old.writer.remove_listener(self._to_connector)
            self.connector = link
            link.channels.add(self)
            link.writer.add_listener(self._to_connector)
            if not self._queued_for_provider:
                self._flush(link)
        self.suspended = self.connector is None or self.provider is None

    def connector_resumed(self, link: Any, message: Connect) -> None:
        """The connector sent Connect(Resume = 1) on ``link``; with a ledger count, the provider re-sends from it."""
        if message.received is not None and not self._queued_for_provider:
            # the provider re-sends everything after the connector's count: what is queued for it would come first
            self._queued = [(m, size) for m, size in self._queued if type(m) is not Data]
            self._queued_bytes = 0
            self._release_hold()
        self.rebind(link)
        if message.received is not None and self.provider is not None and self.provider.alive:
            self._send(self.provider, message)

    def _flush(self, link: Any) -> None:
        queued, self._queued = self._queued, []
        self._queued_bytes = 0
        self._release_hold()
        for message, _ in queued:
            self._send(link, message)

    # ------------------------------------------------------------ relaying
    def _send(self, link: Any, message: Any) -> None:
        try:
            if type(message) is Data and message.protocol == protocol.TCP:
                if message.compression == protocol.HALF_CLOSE and not message.data:
                    link.send_half_close(self.id, message.sequence)
                else:
                    link.send_data(self.id, protocol.data_payload(message), message.sequence)
            else:
                link.send(message)
        except protocol.ProtocolError as exc:
            self.close(str(exc))
        except ConnectionError:
            pass  # that link is going down; its loss is handled by the grace keeper

    def _relay(self, from_provider: bool, message: Any, source: Any) -> None:
        target = self.connector if from_provider else self.provider
        if target is not None:
            self._send(target, message)
            return
        self._queued_for_provider = not from_provider
        size = len(message.data) if type(message) is Data else 0
        self._queued.append((message, size))
        self._queued_bytes += size
        if self._queued_bytes > HOLD_BYTES and self._held_gate is None and source is not None:
            self._held_gate = source.gate
            self._held_gate.pause(self)

    def _release_hold(self) -> None:
        if self._held_gate is not None:
            gate, self._held_gate = self._held_gate, None
            gate.resume(self)

    def _from_provider(self, link: Any) -> bool:
        return link.role is Role.REVERSE

    def on_data(self, link: Any, message: Data) -> None:
        from_provider = self._from_provider(link)
        if not from_provider and message.protocol == protocol.UDP and self.rules and not _udp_allowed(self.rules, message):
            self.refused += 1
            return
        if from_provider and message.sequence and message.data and message.sequence > self._to_connector_end:
            self._to_connector_end = message.sequence
        self._relay(from_provider, message, link)

    def on_connect_response(self, link: Any, message: ConnectResponse) -> None:
        if not self._from_provider(link):
            return
        if self.resumed and (message.received is None or not message.success):
            # the provider dialed again instead of resuming: never mix two streams
            self.close("Resume not supported by the provider")
            return
        if message.success and message.received is None:
            self.ledger = False  # an upstream provider
        self._relay(True, message, link)
        if not message.success:
            self._forget()

    def on_disconnect(self, link: Any, message: Disconnect) -> None:
        self._relay(self._from_provider(link), message, link)
        self._forget()

    def reset(self, reason: str) -> None:
        self.close(reason)

    def close(self, reason: str | None = None) -> None:
        """End the binding, telling both sides."""
        if self.closed:
            return
        for link in (self.connector, self.provider):
            if link is not None:
                link.try_send(Disconnect(self.id, reason or "EOF"))
        self._forget()

    # ------------------------------------------------------------ link loss
    def suspend(self) -> None:
        if self.closed:
            return
        if self.connect.protocol == protocol.TCP and not self.ledger:
            self._cut = True  # an upstream end cannot say what it lost: reset, never resume with a hole
            self.close("data lost: WebSocket cut and a peer keeps no byte ledger")
            return
        connector, provider = self.connector, self.provider
        if connector is not None and not connector.alive:
            connector.channels.discard(self)
            connector.writer.remove_listener(self._to_connector)
            self.connector = None
        if provider is not None and not provider.alive:
            provider.channels.discard(self)
            provider.writer.remove_listener(self._to_provider)
            self.provider = None
        self._to_connector.resume_writing()
        self._to_provider.resume_writing()
        if self.connector is None and self.provider is None:
            self._forget()
            return
        if not self.suspended:
            self.suspended = True
            self.suspended_at = time.monotonic()

    def cut_id(self) -> bytes | None:
        return self.id if self._cut else None

    def link_lost(self) -> None:
        self.close("WebSocket closed")

    def expire(self) -> None:
        if self.suspended and not self.closed:
            self.close("WebSocket lost and not resumed")

    def _forget(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.suspended = False
        self._queued.clear()
        self._release_hold()
        self._to_connector.resume_writing()
        self._to_provider.resume_writing()
        for link, hold in ((self.connector, self._to_connector), (self.provider, self._to_provider)):
            if link is not None:
                link.channels.discard(self)
                link.writer.remove_listener(hold)
        self.table.remove(self.id, self)


def _udp_allowed(rules: Any, message: Data) -> bool:
    """A connector's datagram toward ``target``: names the rules would have to resolve are refused (fail closed)."""
    host, port = message.target_address, message.target_port
    if rules.needs_addresses(host, port):
        return False
    return bool(rules.allows(host, port))
