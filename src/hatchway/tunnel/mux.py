"""The tunnel's multiplexing rules, sans-I/O: one object per WebSocket link per role.

Nothing here reads a socket, starts a task or imports asyncio. Each object
takes whole binary WebSocket messages in (``receive``), returns what they mean
as events, and returns the messages to send for what its driver reports
(a dial finished, a local socket closed, ...). The asyncio drivers
(``session.py`` for the tunnel client, ``forward.py`` for the forward CLI,
``runner.py`` for the runner endpoint) only move bytes and act on events.

Roles and their rules (KohakuRiver's 8-byte header, see ``protocol.py``):

* :class:`ClientMux`, the tunnel client (in the container). Per id the stream
  goes ``DIALING`` (CONNECT received, the local dial runs, DATA is held by the
  driver) -> ``OPEN`` (CONNECTED sent) -> ``CLOSED`` (removed from the table).
  A duplicate CONNECT is ignored; DATA and CLOSE for an unknown id are dropped
  with one warning per run of messages for the same id; a runner CLOSE ends
  the stream at once, while dialing too (the driver still delivers held DATA,
  then closes: D3), and nothing is sent for that id afterwards; a failed dial
  answers ERROR and forgets the id so it can be reused (D2); PING is answered
  with PONG(TCP, same id, port 0).
* :class:`ForwardMux`, the forward CLI (user side of one forward channel):
  ids allocated from 1 upward, never one still in use; CONNECTED moves a
  stream from ``DIALING`` to ``OPEN``; CLOSE/ERROR end it; anything for an
  unknown id is dropped silently.
* :class:`Router`, the runner: routes between tunnel links and forward links.
  Each (forward link, CLI id) gets a runner-wide tunnel id, allocated
  monotonically and rewritten both ways (D1, D2); a CONNECT whose port is not
  the forward link's port gets ERROR and reaches no container (D10); DATA and
  CLOSE from the container for forgotten ids are ignored (D3); a tunnel or
  forward link that ends releases its routes with ERROR or CLOSE toward the
  other side; under the ``reset`` policy DATA for a congested forward link
  resets just that route.

Half-close (hatchway's extension, both roles): a zero-length DATA on a TCP
stream is the sender's EOF (:class:`HalfClosed`; the receiver half-closes its
local socket, the stream stays open until CLOSE); :meth:`StreamTable.eof`
gives the message for a local EOF. The runner relays it as any DATA.

Malformed messages raise :class:`~hatchway.tunnel.protocol.ProtocolError`;
the driver logs it and keeps the link (the tunnel stays up, as upstream).
"""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from hatchway.common.logsafe import escape

from . import protocol
from .protocol import HEADER_SIZE, MAX_CLIENT_ID, MsgType, Proto, ProtocolError, pack_header, parse_header

__all__ = [
    "DialOutcome", "Phase", "Stream", "StreamEnd", "StreamTable", "ClientMux", "ForwardMux", "ForwardError", "Router", "TunnelSide", "ForwardSide", "Route",
    "Opened", "Received", "HalfClosed", "Closed", "Reply", "Ignored", "Connected", "ToUser", "ToTunnel", "Output", "Event",
    "ERROR_TUNNEL_LOST", "ERROR_SEND_FAILED", "ERROR_SLOW_CONSUMER", "not_connected_text", "ProtocolError",
]

_CONNECT = int(MsgType.CONNECT)
_CONNECTED = int(MsgType.CONNECTED)
_DATA = int(MsgType.DATA)
_CLOSE = int(MsgType.CLOSE)
_ERROR = int(MsgType.ERROR)
_PING = int(MsgType.PING)
_PONG = int(MsgType.PONG)
_NAMES = {int(t): t.name for t in MsgType}

ERROR_TUNNEL_LOST = "Container tunnel disconnected"
ERROR_SEND_FAILED = "Tunnel send failed"
ERROR_SLOW_CONSUMER = "Slow consumer: forward channel buffer full, connection reset"


def not_connected_text(container_id: str) -> str:
    return f"Container tunnel not connected (container={container_id})"


class Phase(enum.Enum):
    DIALING = "dialing"  # client: the local dial runs; forward: CONNECT sent, no CONNECTED yet
    OPEN = "open"
    CLOSED = "closed"  # no longer in the table; nothing more is sent for it


class StreamEnd(Protocol):
    """What a driver attaches to a stream: its local end (a TCP channel, a UDP flow)."""

    def feed(self, data: bytes | memoryview) -> None: ...
    def remote_closed(self, error: str | None = None) -> None: ...
    def remote_eof(self) -> None: ...
    def link_lost(self) -> None: ...


class DialOutcome(enum.Enum):
    """What the client does with a local socket whose dial has just succeeded."""

    OPEN = "open"  # send CONNECTED and relay
    DELIVER_AND_CLOSE = "deliver and close"  # the runner's CLOSE came while dialing: write the held DATA, then EOF (D3)
    ABORT = "abort"  # the stream was reset or its tunnel is gone: drop the socket


class Stream:
    """One id's entry; ``endpoint`` is the driver's object for it (a channel, a UDP flow)."""

    __slots__ = ("client_id", "proto", "port", "phase", "endpoint", "data_header", "ended_by_peer", "peer_eof")

    def __init__(self, client_id: int, proto: Proto, port: int, phase: Phase) -> None:
        self.client_id = client_id
        self.proto = proto
        self.port = port
        self.phase = phase
        self.endpoint: StreamEnd | None = None
        self.data_header = protocol.data_header(proto, client_id)
        self.ended_by_peer = False  # ended by the far side's CLOSE (not a reset, not the link's loss)
        self.peer_eof = False  # the far side half-closed (zero-length DATA): its later DATA is dropped

    @property
    def live(self) -> bool:
        return self.phase is not Phase.CLOSED

    def __repr__(self) -> str:
        return f"<Stream {self.client_id} {self.proto.name} {self.phase.name}>"


# -- events (what a received message means)
class Opened(msgspec.Struct):
    """Client: a new stream to dial (TCP) or open (UDP) at 127.0.0.1:stream.port."""

    stream: Stream


class Received(msgspec.Struct):
    """DATA for a live stream; ``payload`` is a view into the message (never empty)."""

    stream: Stream
    payload: memoryview


class HalfClosed(msgspec.Struct):
    """The far side's EOF on a TCP stream (a zero-length DATA): no more bytes from it, the stream stays open."""

    stream: Stream


class Closed(msgspec.Struct):
    """The far side ended a live stream (CLOSE; ERROR with its text on the forward side)."""

    stream: Stream
    error: str | None = None


class Connected(msgspec.Struct):
    """Forward: the far side accepted a stream."""

    stream: Stream


class Reply(msgspec.Struct):
    """Send ``message`` back on the same link (the answer to PING)."""

    message: bytes


class Ignored(msgspec.Struct):
    """A message that changes nothing; ``reason`` is worth one warning."""

    reason: str


Event = Opened | Received | HalfClosed | Closed | Connected | Reply | Ignored


def _empty_data(stream: Stream) -> HalfClosed | None:
    """A zero-length DATA: on a TCP stream, hatchway's half-close (the sender's local end sent EOF; the
    stream stays open for the other direction until CLOSE). Backward compatible: upstream's client
    writes zero bytes (nothing) and upstream's runner relays DATA as is. On UDP it changes nothing."""
    if stream.proto is not Proto.TCP or stream.peer_eof:
        return None  # UDP, or a repeated EOF
    stream.peer_eof = True
    return HalfClosed(stream)


# ---------------------------------------------------------------- the stream table both ends keep
class StreamTable:
    """Live streams by id, and the end of a stream told once (shared by ClientMux and ForwardMux)."""

    def __init__(self) -> None:
        self.streams: dict[int, Stream] = {}

    def finished(self, stream: Stream) -> bytes | None:
        """The local end closed (or a UDP flow expired): CLOSE, once, and the id is forgotten (D2);
        None when the stream had already ended (nothing is sent after the far side's CLOSE: D3)."""
        if not self._forget(stream):
            return None
        return protocol.close(stream.proto, stream.client_id)

    def eof(self, stream: Stream) -> bytes | None:
        """The local end of a TCP stream sent EOF: a zero-length DATA (hatchway's half-close, see
        :func:`_empty_data`); None once the stream has ended."""
        if stream.phase is Phase.CLOSED or stream.proto is not Proto.TCP:
            return None
        return stream.data_header

    def release(self, stream: Stream) -> None:
        """Forget a stream without a message (the far side ended it, a reset sent its own CLOSE, ...)."""
        self._forget(stream)

    def lost(self) -> list[Stream]:
        """The WebSocket ended: every stream is closed; returns them."""
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.phase = Phase.CLOSED
        return streams

    def _forget(self, stream: Stream) -> bool:
        if stream.phase is Phase.CLOSED:
            return False
        stream.phase = Phase.CLOSED
        if self.streams.get(stream.client_id) is stream:
            del self.streams[stream.client_id]
        return True


# ---------------------------------------------------------------- client
class ClientMux(StreamTable):
    """The tunnel client's side of one tunnel connection."""

    def __init__(self) -> None:
        super().__init__()
        self._last_unknown = -1

    def receive(self, message: bytes | bytearray | memoryview) -> Event | None:
        """What one binary message from the runner means; None for nothing at all."""
        mtype, proto, client_id, port = parse_header(message)
        if mtype == _DATA:
            stream = self.streams.get(client_id)
            if stream is None:
                return self._unknown(client_id, "DATA")
            if len(message) == HEADER_SIZE:
                return _empty_data(stream)
            if stream.peer_eof:
                return Ignored(f"dropping DATA for id {client_id} after its EOF")
            return Received(stream, memoryview(message)[HEADER_SIZE:])
        if mtype == _CONNECT:
            if client_id in self.streams:
                return Ignored(f"ignoring a duplicate CONNECT for id {client_id}")
            if self._last_unknown == client_id:
                self._last_unknown = -1
            opened = Stream(client_id, Proto(proto), port, Phase.DIALING)
            self.streams[client_id] = opened
            return Opened(opened)
        if mtype == _CLOSE:
            closed = self.streams.pop(client_id, None)
            if closed is None:
                return self._unknown(client_id, "CLOSE")
            closed.phase = Phase.CLOSED
            closed.ended_by_peer = True
            return Closed(closed)
        if mtype == _PING:
            return Reply(protocol.pong(client_id))
        name = _NAMES.get(mtype)
        if name is None:
            raise ProtocolError(f"unknown message type 0x{mtype:02x}")
        return Ignored(f"ignoring {name} for id {client_id} from the runner")

    def _unknown(self, client_id: int, what: str) -> Ignored | None:
        if client_id == self._last_unknown:
            return None  # one warning per run of messages for a gone id
        self._last_unknown = client_id
        return Ignored(f"dropping {what} for unknown id {client_id}")

    # -- what the driver reports; each returns the message to send, or None
    def connected(self, stream: Stream) -> bytes | None:
        """The local end is open: DIALING -> OPEN, answer CONNECTED."""
        if stream.phase is not Phase.DIALING:
            return None
        stream.phase = Phase.OPEN
        return protocol.connected(stream.proto, stream.client_id)

    def dialed(self, stream: Stream) -> tuple[DialOutcome, bytes | None]:
        """A TCP dial succeeded: what to do with the socket, and CONNECTED when the stream opens.

        A CLOSE that arrived while dialing is not a reset: the DATA sent before it is still
        delivered, then the service sees EOF, and nothing is sent for the id (D3).
        """
        if stream.phase is Phase.DIALING:
            stream.phase = Phase.OPEN
            return DialOutcome.OPEN, protocol.connected(stream.proto, stream.client_id)
        if stream.ended_by_peer:
            return DialOutcome.DELIVER_AND_CLOSE, None
        return DialOutcome.ABORT, None

    def failed(self, stream: Stream, text: str) -> bytes | None:
        """The dial or socket setup failed: answer ERROR (proto TCP, as upstream) and forget the id (D2)."""
        if not self._forget(stream):
            return None
        return protocol.error(stream.client_id, text)



# ---------------------------------------------------------------- forward CLI
class ForwardError(Exception):
    """The forward channel could not be set up; ``str()`` is the text to show the user."""


class ForwardMux(StreamTable):
    """The forward CLI's side of one forward channel."""

    @staticmethod
    def handshake(first: bytes | str) -> None:
        """The channel's first message must be the text ``CONNECTED``; ``Error: ...`` is the refusal
        to show (escaped: it comes from the wire); anything else is a protocol error."""
        if isinstance(first, str):
            if first == "CONNECTED":
                return
            if first.startswith("Error"):
                raise ForwardError(escape(first))
            raise ForwardError(f"Error: unexpected reply {first!r}")
        raise ForwardError("Error: expected CONNECTED, got a binary message")

    def __init__(self, remote_port: int) -> None:
        super().__init__()
        self.remote_port = remote_port
        self.opened = 0  # ids allocated so far
        self._next_id = 1

    def open(self, proto: Proto) -> tuple[Stream, bytes]:
        """A new local connection or UDP source: the stream and its CONNECT."""
        client_id = self._next_id
        while client_id in self.streams:  # only after a wrap past 2**32 - 1
            client_id = client_id + 1 if client_id < MAX_CLIENT_ID else 1
        self._next_id = client_id + 1 if client_id < MAX_CLIENT_ID else 1
        self.opened += 1
        stream: Stream = Stream(client_id, proto, self.remote_port, Phase.DIALING)
        self.streams[client_id] = stream
        return stream, protocol.connect(proto, client_id, self.remote_port)

    def receive(self, message: bytes | bytearray | memoryview) -> Event | None:
        mtype, _proto, client_id, _port = parse_header(message)
        stream = self.streams.get(client_id)
        if stream is None:
            return None  # late messages for a finished id
        if mtype == _DATA:
            if len(message) == HEADER_SIZE:
                return _empty_data(stream)
            if stream.peer_eof:
                return None  # data after the far side's EOF: dropped
            return Received(stream, memoryview(message)[HEADER_SIZE:])
        if mtype == _CLOSE or mtype == _ERROR:
            del self.streams[client_id]
            stream.phase = Phase.CLOSED
            if mtype == _CLOSE:
                return Closed(stream)
            text = bytes(memoryview(message)[HEADER_SIZE:]).decode("utf-8", "replace")
            return Closed(stream, text or "error")
        if mtype == _CONNECTED:
            if stream.phase is Phase.DIALING:
                stream.phase = Phase.OPEN
                return Connected(stream)
            return None
        if mtype in _NAMES:
            return None  # CONNECT, PING, PONG toward a user mean nothing
        raise ProtocolError(f"unknown message type 0x{mtype:02x}")



# ---------------------------------------------------------------- runner
class LinkSink(Protocol):
    """Where a link's messages go (a common ``MessageSink``): ``send`` raises ConnectionError once it is closed."""

    def send(self, *parts: bytes | bytearray | memoryview) -> None: ...

    @property
    def paused(self) -> bool:
        """Over its high-water mark: the reading side should wait for :meth:`drained`."""
        ...

    async def drained(self) -> None: ...


class TunnelSide:
    """The routing state of one tunnel link (one WebSocket on ``/ws/tunnel/{id}``).

    ``sink`` is set by the driver's subclass (the runner's TunnelLink).
    """

    __slots__ = ("container_id", "routes", "alive")
    sink: LinkSink

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.routes: dict[int, Route] = {}  # tunnel id -> route
        self.alive = True


class ForwardSide:
    """The routing state of one forward link (one WebSocket on ``/ws/forward/{id}/{port}``).

    ``congested`` is kept by the driver: True while the link's write buffer is over its limit;
    ``sink`` is set by the driver's subclass (the runner's ForwardLink).
    """

    __slots__ = ("container_id", "port", "proto", "routes", "congested", "closed")
    sink: LinkSink

    def __init__(self, container_id: str, port: int, proto: Proto) -> None:
        self.container_id = container_id
        self.port = port
        self.proto = proto
        self.routes: dict[int, Route] = {}  # CLI id -> route
        self.congested = False
        self.closed = False


class Route:
    """One logical connection, as seen from both ends of the runner."""

    __slots__ = ("tunnel", "tunnel_id", "forward", "cli_id", "proto")

    def __init__(self, tunnel: TunnelSide, tunnel_id: int, forward: ForwardSide, cli_id: int, proto: int) -> None:
        self.tunnel = tunnel
        self.tunnel_id = tunnel_id
        self.forward = forward
        self.cli_id = cli_id
        self.proto = proto

    def __repr__(self) -> str:
        return f"<Route cli {self.cli_id} <-> tunnel {self.tunnel_id}>"


class ToUser(msgspec.Struct):
    """Send ``head`` + ``payload`` as one message on ``forward``'s link."""

    forward: ForwardSide
    head: bytes
    payload: memoryview | bytes = b""


class ToTunnel(msgspec.Struct):
    """Send ``head`` + ``payload`` on ``tunnel``'s link; if that fails, report ``route`` to
    :meth:`Router.send_failed` (CONNECT, DATA) or drop it (CLOSE, PING)."""

    tunnel: TunnelSide
    head: bytes
    payload: memoryview | bytes = b""
    route: Route | None = None


Output = ToUser | ToTunnel


class Router:
    """The runner's routing rules between tunnel links and forward links.

    Backpressure. Each forward WebSocket has its own sink, so writes to
    one user never queue behind another's. ``buffer_limit`` bounds the bytes
    buffered toward one forward WebSocket; when it is reached the slow-consumer
    policy applies:

    * ``block`` (default; no data is ever dropped): the tunnel's read loop waits
      until that forward channel drains below a quarter of the limit. Other
      forward channels on the same container wait too, exactly as TCP
      backpressure would make them; a forward channel that stays frozen is
      eventually ended by its WebSocket heartbeat, which releases the tunnel.
    * ``reset``: DATA for a route whose forward channel is over the limit resets
      just that route: CLOSE to the container, ERROR ``Slow consumer ...`` to the
      user. The tunnel never waits for a user.

    The other direction (users -> container) always blocks: a forward channel's
    read loop waits while the tunnel's writer is over its high-water mark.
    """

    def __init__(self, *, reset_slow: bool = False) -> None:
        self.reset_slow = reset_slow
        self._next_id = 1

    def allocate_id(self) -> int:
        """The next tunnel id: monotonic, never reused within 2**32 - 1 connections (D1, D2)."""
        tunnel_id = self._next_id
        self._next_id = tunnel_id + 1 if tunnel_id < MAX_CLIENT_ID else 1
        return tunnel_id

    # -- from the container
    def from_tunnel(self, tunnel: TunnelSide, message: bytes | bytearray | memoryview) -> list[Output]:
        mtype, proto, tunnel_id, port = parse_header(message)
        if mtype == _DATA or mtype == _CONNECTED:
            route = tunnel.routes.get(tunnel_id)
            if route is None:
                return []  # late DATA for a forgotten id (D3)
            if mtype == _DATA and self.reset_slow and route.forward.congested:
                return self.reset(route)
            return self._to_user(route.forward, mtype, proto, route.cli_id, port, message)
        if mtype == _CLOSE or mtype == _ERROR:
            route = tunnel.routes.pop(tunnel_id, None)
            if route is None:
                return []
            self._unroute_user_side(route)
            return self._to_user(route.forward, mtype, proto, route.cli_id, port, message)
        if mtype in _NAMES:
            return []  # PONG (and what a client should not send): ignored
        raise ProtocolError(f"unknown message type 0x{mtype:02x}")

    # -- from a user; ``tunnel`` is the container's current tunnel link (resolved now: D5)
    def from_user(
        self, forward: ForwardSide, tunnel: TunnelSide | None, message: bytes | bytearray | memoryview
    ) -> list[Output]:
        if len(message) < HEADER_SIZE:
            raise ProtocolError(f"message too short: {len(message)} bytes")
        mtype, proto, cli_id, port = protocol.unpack_header(message)
        if mtype == _DATA:
            route = forward.routes.get(cli_id)
            if route is None:
                return []  # upstream forwards DATA only for active ids
            return [self._to_tunnel(route, _DATA, proto, port, message)]
        if mtype == _CONNECT:
            return self._connect(forward, tunnel, proto, cli_id, port)
        if mtype == _CLOSE:
            route = forward.routes.pop(cli_id, None)
            if route is None:
                return []
            self._unroute_tunnel_side(route)
            return [self._to_tunnel(route, _CLOSE, proto, port, message)]
        if mtype == _PING:
            if tunnel is None:
                return []
            return [ToTunnel(tunnel, bytes(memoryview(message)[:HEADER_SIZE]), memoryview(message)[HEADER_SIZE:])]
        return []

    def _connect(self, forward: ForwardSide, tunnel: TunnelSide | None, proto: int, cli_id: int, port: int) -> list[Output]:
        if proto > 1:
            return self._error(forward, cli_id, f"Invalid protocol 0x{proto:02x}", 0)
        if port != forward.port:
            return self._error(
                forward, cli_id, f"Port mismatch: CONNECT port {port} is not the forwarded port {forward.port}", proto
            )
        if cli_id in forward.routes:
            return []  # a duplicate CONNECT
        if tunnel is None or not tunnel.alive:
            return self._error(forward, cli_id, not_connected_text(forward.container_id), proto)
        route = Route(tunnel, self.allocate_id(), forward, cli_id, proto)
        tunnel.routes[route.tunnel_id] = route  # the receiver exists before CONNECT leaves
        forward.routes[cli_id] = route
        return [ToTunnel(tunnel, pack_header(_CONNECT, proto, route.tunnel_id, port), b"", route)]

    # -- what the driver reports
    def deliver(self, outputs: list[Output]) -> LinkSink | None:
        """Send each output on its link's sink; returns the sink the reading side must wait for, if any.

        The slow-consumer decision: under the block policy a forward link over its limit stops the
        tunnel's reader (the sink is returned); under reset it never does (``from_tunnel`` resets the
        route instead). A full tunnel always stops the user's reader. A message the tunnel cannot take
        fails its route (ERROR to the user); a message a closing forward link cannot take is dropped
        (that link's end cleans up).
        """
        wait_for: LinkSink | None = None
        for out in outputs:
            if type(out) is ToUser:
                sink = out.forward.sink
                try:
                    sink.send(out.head, out.payload) if out.payload else sink.send(out.head)
                except ConnectionError:
                    continue
                if sink.paused and not self.reset_slow:
                    wait_for = sink
            else:
                assert type(out) is ToTunnel
                sink = out.tunnel.sink
                try:
                    sink.send(out.head, out.payload) if out.payload else sink.send(out.head)
                except ConnectionError:
                    if out.route is not None:
                        self.deliver(self.send_failed(out.route))
                    continue
                if sink.paused:
                    wait_for = sink
        return wait_for

    def send_failed(self, route: Route) -> list[Output]:
        """A CONNECT or DATA could not be written to the tunnel: ERROR to the user."""
        return self._fail(route, ERROR_SEND_FAILED)

    def reset(self, route: Route) -> list[Output]:
        """Reset policy: drop one route whose user cannot keep up (ERROR up, CLOSE down)."""
        out = self._fail(route, ERROR_SLOW_CONSUMER)
        if route.tunnel.alive:
            out.append(ToTunnel(route.tunnel, protocol.close(Proto(route.proto), route.tunnel_id)))
        return out

    def tunnel_ended(self, tunnel: TunnelSide) -> list[Output]:
        """A tunnel link is gone: ERROR to users for every id routed through it (D5)."""
        tunnel.alive = False
        routes = list(tunnel.routes.values())
        tunnel.routes.clear()
        out: list[Output] = []
        for route in routes:
            self._unroute_user_side(route)
            out.extend(self._error(route.forward, route.cli_id, ERROR_TUNNEL_LOST, route.proto))
        return out

    def forward_ended(self, forward: ForwardSide) -> list[Output]:
        """A forward link is gone: CLOSE to the container for every id it still had open."""
        forward.closed = True
        routes = list(forward.routes.values())
        forward.routes.clear()
        out: list[Output] = []
        for route in routes:
            self._unroute_tunnel_side(route)
            if route.tunnel.alive:
                out.append(ToTunnel(route.tunnel, protocol.close(Proto(route.proto), route.tunnel_id)))
        return out

    # -- helpers
    def _to_user(
        self, forward: ForwardSide, mtype: int, proto: int, cli_id: int, port: int, message: bytes | bytearray | memoryview
    ) -> list[Output]:
        if forward.closed:
            return []
        return [ToUser(forward, pack_header(mtype, proto, cli_id, port), memoryview(message)[HEADER_SIZE:])]

    def _to_tunnel(self, route: Route, mtype: int, proto: int, port: int, message: bytes | bytearray | memoryview) -> ToTunnel:
        head = pack_header(mtype, proto, route.tunnel_id, port)
        return ToTunnel(route.tunnel, head, memoryview(message)[HEADER_SIZE:], route if mtype != _CLOSE else None)

    def _error(self, forward: ForwardSide, cli_id: int, text: str, proto: int) -> list[Output]:
        if forward.closed:
            return []
        return [ToUser(forward, pack_header(_ERROR, proto, cli_id, 0), text.encode("utf-8", "replace"))]

    def _fail(self, route: Route, text: str) -> list[Output]:
        self._unroute_tunnel_side(route)
        self._unroute_user_side(route)
        return self._error(route.forward, route.cli_id, text, route.proto)

    @staticmethod
    def _unroute_user_side(route: Route) -> None:
        if route.forward.routes.get(route.cli_id) is route:
            del route.forward.routes[route.cli_id]

    @staticmethod
    def _unroute_tunnel_side(route: Route) -> None:
        if route.tunnel.routes.get(route.tunnel_id) is route:
            del route.tunnel.routes[route.tunnel_id]
