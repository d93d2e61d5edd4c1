"""Error texts in the shapes upstream peers print and parse."""

from __future__ import annotations

import errno
import os


def rust_io_error(exc: BaseException) -> str:
    """Format an OS error as Rust's std::io::Error does: ``Connection refused (os error 111)``."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) and code is None:
        return "connection timed out"
    if code is None:
        return str(exc) or type(exc).__name__
    text = os.strerror(code)
    return f"{text} (os error {code})"


def go_dial_error(exc: BaseException, network: str, address: str) -> str:
    """Format a dial failure as Go's net package does: ``dial tcp 127.0.0.1:1: connect: connection refused``."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) and code is None:
        return f"dial {network} {address}: i/o timeout"
    if code is None:
        return f"dial {network} {address}: {exc}"
    text = os.strerror(code)
    if code in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT):
        return f"dial {network} {address}: connect: {text[0].lower() + text[1:]}"
    return f"dial {network} {address}: {text[0].lower() + text[1:]}"
