"""JSON bodies of the host proxy's HTTP API (spec section 2), as msgspec Structs.

Fields with a default are omitted when empty (Go's ``omitempty``); the others
are always present.
"""

from __future__ import annotations

import msgspec

from .session import CallbackData

SERVICE_NAME = "clawker-host-proxy"
DEFAULT_PORT = 18374


class Health(msgspec.Struct):
    status: str = "ok"
    service: str = SERVICE_NAME


class OpenUrlRequest(msgspec.Struct):
    url: str = ""


class OpenUrlResponse(msgspec.Struct, omit_defaults=True):
    success: bool
    url: str = ""
    error: str = ""


class GitCredentialRequest(msgspec.Struct):
    action: str = ""
    protocol: str = ""
    host: str = ""
    path: str = ""
    username: str = ""
    password: str = ""


class GitCredentialResponse(msgspec.Struct, omit_defaults=True):
    success: bool
    protocol: str = ""
    host: str = ""
    username: str = ""
    password: str = ""
    error: str = ""


class RegisterRequest(msgspec.Struct):
    port: int = 0
    path: str = ""
    timeout_seconds: int = 0


class RegisterResponse(msgspec.Struct, omit_defaults=True):
    success: bool
    session_id: str = ""
    proxy_callback_base: str = ""  # declared upstream, never filled
    expires_at: str = ""
    error: str = ""


class CallbackDataResponse(msgspec.Struct, omit_defaults=True):
    received: bool
    callback: CallbackData | None = None
    error: str = ""


class SuccessResponse(msgspec.Struct):
    success: bool = True
