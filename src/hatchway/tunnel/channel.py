"""One tunnel connection (a client_id) as a relay end: the tunnel's Channel subclass.

Shared by every side that relays a TCP socket through tunnel messages (the
forward CLI; usable by the tunnel client too). Outbound bytes become
``DATA(proto, id)`` messages and the local end's close becomes
``CLOSE(proto, id)``; the dispatcher feeds inbound DATA with ``feed`` and
ends the channel with ``remote_closed`` (CLOSE/ERROR) or ``link_lost``.

Wiring order matters under the ``reset`` slow-consumer policy: a relay Pump
pauses its transport in ``connection_made`` until the relay is joined, and a
pause of a channel means "local consumer too slow" to the InboundGate. A
TunnelChannel therefore ignores pause requests until :meth:`start` is called,
right after ``relay.join()``.
"""

from __future__ import annotations

from typing import Callable

from hatchway.common.channel import Channel, InboundGate
from hatchway.common.wsconn import MessageWriter

from . import protocol
from .protocol import Proto


class TunnelChannel(Channel):
    def __init__(
        self,
        writer: MessageWriter,
        gate: InboundGate,
        client_id: int,
        proto: Proto = Proto.TCP,
        forget: Callable[["TunnelChannel"], None] | None = None,
    ) -> None:
        super().__init__(writer, gate)
        self.client_id = client_id
        self.proto = proto
        self.name = str(client_id)
        self._on_forget = forget
        self._started = False
        self._data_header = protocol.data_header(proto, client_id)

    def start(self) -> None:
        """The relay is joined: from now on a pause is a real slow-consumer signal."""
        self._started = True

    def pause_reading(self) -> None:
        if self._started:
            super().pause_reading()

    # -- wire encoding
    def _send_data(self, writer: MessageWriter, data: bytes | bytearray | memoryview) -> None:
        if data:
            writer.send(self._data_header, data)

    def _send_close(self, writer: MessageWriter, reason: str | None) -> None:
        writer.send(protocol.close(self.proto, self.client_id))

    def _forget(self) -> None:
        if self._on_forget is not None:
            self._on_forget(self)
