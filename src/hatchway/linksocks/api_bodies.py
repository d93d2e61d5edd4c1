"""The management API's request and response bodies and texts (linksocks.md 17); no I/O.

Bodies follow Go's encoding/json: requests are decoded with case-insensitive
keys (``common.httpapi.read_json``), responses are compact JSON with empty
fields omitted. The handlers are in ``api.py``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .access import AccessRules

API_PREFIX = "/api"
DEFAULT_VERSION = "v1.10.3"  # the upstream release hatchway answers for

INVALID_API_KEY = "invalid API key"
INVALID_BODY = "invalid request body"
INVALID_TYPE = "invalid token type"
TOKEN_NOT_SPECIFIED = "token not specified"
REVERSE_TOKEN_REQUIRED = "reverse_token is required for connector token"


class AccessConfig:
    """The server-wide access rules: ``entry`` (reverse SOCKS ports) and ``dial`` (forward dials)."""

    __slots__ = ("entry", "dial")

    def __init__(self, entry: AccessRules | None = None, dial: AccessRules | None = None) -> None:
        self.entry = entry or AccessRules()
        self.dial = dial or AccessRules()


# --------------------------------------------------------------------------- bodies


class TokenRequest(msgspec.Struct):
    type: str = ""
    token: str = ""
    port: int = 0
    username: str = ""
    password: str = ""
    reverse_token: str = ""
    allow_manage_connector: bool = False
    rules: list[Any] = []


class DeleteRequest(msgspec.Struct):
    token: str = ""


class AccessConfigRequest(msgspec.Struct):
    entry: list[Any] | None = None
    dial: list[Any] | None = None


class TokenResponse(msgspec.Struct, omit_defaults=True):
    success: bool
    token: str = ""
    port: int = 0
    error: str = ""


class SuccessResponse(msgspec.Struct):
    success: bool = True


class ForwardStatus(msgspec.Struct):
    token: str
    type: str
    clients_count: int


class ReverseStatus(msgspec.Struct, omit_defaults=True):
    token: str
    type: str
    clients_count: int
    port: int
    connector_tokens: list[str] = []


class DirectStatus(msgspec.Struct):
    enabled: bool = False


class StatusResponse(msgspec.Struct):
    version: str
    tokens: list[ReverseStatus | ForwardStatus]
    direct: DirectStatus
