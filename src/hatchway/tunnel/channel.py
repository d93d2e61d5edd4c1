"""One tunnel stream as a relay end: the tunnel's :class:`~hatchway.common.channel.Channel` subclass.

Shared by every side that relays a TCP socket through tunnel messages (the
tunnel client's :class:`~hatchway.tunnel.tcp_stream.TcpStream` and the
forward CLI). Outbound bytes become ``DATA(proto, id)`` messages; the local
end's close asks the multiplexer for its CLOSE, which it gives at most once
and never after the far side ended the stream (D3). The driver feeds inbound
DATA with ``feed`` and ends the channel with ``remote_closed`` (CLOSE/ERROR)
or ``link_lost``.

The wire's half-close is hatchway's zero-length DATA (see
:mod:`hatchway.tunnel.mux`): a local EOF is sent on as one and the stream stays
open for the other direction (issue #6 item 15); the far side's arrives as
``remote_eof``. An older peer (upstream's client or forward CLI) ignores it,
so ``eof_linger`` ends a stream whose far side stays silent that long after
our EOF (:data:`REPLY_LINGER`, long: a service slow to reply is not cut off).
Only the forward side sends it (``half_close=True``): on the client a
service's EOF still closes the stream at once, as upstream's client does; a
FIN cannot tell a half-close from a close, and a far side that ignores the
zero-length DATA (upstream's forward CLI) would otherwise hold every
service-closed connection open.

A TunnelChannel is built not started: it ignores pause requests and holds
inbound data until :meth:`start`, called right after ``relay.join()`` (a relay
Pump pauses its transport in ``connection_made`` until the relay is joined,
and a pause means "local consumer too slow" to the InboundGate).
"""

from __future__ import annotations

from hatchway.common.channel import Channel
from hatchway.common.gate import InboundGate
from hatchway.common.sink import Buffer, MessageSink

from .mux import Stream, StreamTable
from .protocol import MAX_DATA_PAYLOAD

REPLY_LINGER = 30.0  # forward: far-side silence after the user's EOF before the stream is reset (a peer ignoring it)


class TunnelChannel(Channel):
    def __init__(
        self,
        writer: MessageSink,
        gate: InboundGate,
        stream: Stream,
        table: StreamTable,
        *,
        hold_limit: int | None = None,
        half_close: bool = False,
        eof_linger: float | None = REPLY_LINGER,
    ) -> None:
        # half_close: a local EOF is sent on (zero-length DATA) and the stream stays open for the reply,
        # ended by the far side or after eof_linger of its silence; without it a local EOF closes
        super().__init__(
            writer, gate, started=False, hold_limit=hold_limit, half_close=half_close, keep_open_on_eof=half_close,
            eof_linger=eof_linger,
        )
        self.stream = stream
        self.table = table
        self.client_id = stream.client_id
        self.name = str(stream.client_id)
        self._data_header = stream.data_header
        stream.endpoint = self

    # -- wire encoding: at most 64 KiB per DATA (a local read may be larger; sliced without copying)
    def _send_data(self, writer: MessageSink, data: Buffer) -> None:
        size = len(data)
        if size <= MAX_DATA_PAYLOAD:
            if size:
                writer.send(self._data_header, data)
            return
        view = memoryview(data)
        header = self._data_header
        for start in range(0, size, MAX_DATA_PAYLOAD):
            writer.send(header, view[start : start + MAX_DATA_PAYLOAD])

    def _send_close(self, writer: MessageSink, reason: str | None) -> None:
        message = self.table.finished(self.stream)
        if message is not None:
            writer.send(message)

    def _send_eof(self, writer: MessageSink) -> None:
        message = self.table.eof(self.stream)
        if message is not None:
            writer.send(message)

    def _forget(self) -> None:
        self.table.release(self.stream)
