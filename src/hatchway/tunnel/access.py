"""Who may use the runner's two routes, sans-I/O: the token check and the forward refusals.

* A token, when the runner has one, is taken from ``Authorization: Bearer``
  or ``?token=`` and compared in constant time.
* ``/ws/tunnel/{id}`` without the token is refused (HTTP 401) unless the
  compatibility switch admits it, with a warning (:func:`tunnel_admission`).
* ``/ws/forward/{id}/{port}?proto=`` is refused (text ``Error: ...``, then a
  close code) for a missing or wrong token (1008), a port outside 1-65535 or
  not a number (1008), a proto other than tcp/udp (1008), and a container with
  no live tunnel (1011, upstream's text).
"""

from __future__ import annotations

import enum
import hmac

from .mux import not_connected_text
from .protocol import Proto

CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011

PROTO_NAMES = {"tcp": Proto.TCP, "udp": Proto.UDP}

TEXT_CONNECTED = "CONNECTED"
TEXT_UNAUTHORIZED = "Error: unauthorized"
TEXT_TAKEN = "Error: container id already registered by another tunnel"


def presented_token(token: str | None, authorization: str, query_token: str | None) -> str | None:
    """The runner's token when the request carries it (header or query), else None."""
    if token is None:
        return None
    expected = token.encode()
    if authorization[:7].lower() == "bearer " and hmac.compare_digest(authorization[7:].strip().encode(), expected):
        return token
    if query_token is not None and hmac.compare_digest(query_token.encode(), expected):
        return token
    return None


def forward_refusal(
    container_id: str, port_text: str, proto_text: str, *, authorized: bool, tunnel_live: bool
) -> tuple[str, int] | None:
    """The text and close code that refuse a forward channel, or None to accept it."""
    if not authorized:
        return TEXT_UNAUTHORIZED, CLOSE_POLICY
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return f"Error: invalid port {port_text!r}", CLOSE_POLICY
    if proto_text.lower() not in PROTO_NAMES:
        return f"Error: invalid proto {proto_text.lower()!r} (expected tcp or udp)", CLOSE_POLICY
    if not tunnel_live:
        return "Error: " + not_connected_text(container_id), CLOSE_INTERNAL
    return None


class Admission(enum.Enum):
    ADMIT = "admit"
    ADMIT_WITHOUT_TOKEN = "admit without token"  # the compatibility switch: log a warning
    REFUSE = "refuse"  # HTTP 401, no WebSocket


def tunnel_admission(token: str | None, credential: str | None, *, allow_tokenless: bool) -> Admission:
    """Whether a tunnel registration may proceed: the runner's ``token``, what the request presented."""
    if token is None or credential is not None:
        return Admission.ADMIT
    return Admission.ADMIT_WITHOUT_TOKEN if allow_tokenless else Admission.REFUSE
