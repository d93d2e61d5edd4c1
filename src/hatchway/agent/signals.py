"""Signal names as the agent accepts them, and Docker's exit codes for signal deaths.

Upstream normalises a name by upper-casing it and stripping one leading
``SIG`` (``sigterm``, ``Term``, ``SigTerm`` all mean SIGTERM), then accepts
seven names. hatchway keeps the normalisation and accepts every signal of
the platform (``STOP``, ``CONT``, ``WINCH``, ``ALRM``, ``TRAP``, ``PIPE``...),
``RTMIN+n``/``RTMAX-n`` and plain numbers.
"""

from __future__ import annotations

import signal

__all__ = ["docker_exit_code", "parse_signal"]

_BY_NAME: dict[str, int] = {
    member.name[3:]: int(member)
    for member in signal.Signals
    if member.name.startswith("SIG") and not member.name.startswith("SIG_")
}
_BY_NAME.setdefault("IOT", int(signal.SIGABRT))
if hasattr(signal, "SIGPOLL"):
    _BY_NAME.setdefault("POLL", int(signal.SIGPOLL))
_RTMIN = int(getattr(signal, "SIGRTMIN", 34))
_RTMAX = int(getattr(signal, "SIGRTMAX", 64))
_NSIG = int(getattr(signal, "NSIG", 65))


def parse_signal(name: str) -> int | None:
    """The signal number for ``name``, or None when it names no signal."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        return number if 0 < number < _NSIG else None
    if text.startswith("SIG"):
        text = text[3:]
    if not text:
        return None
    found = _BY_NAME.get(text)
    if found is not None:
        return found
    for base, sign in (("RTMIN", 1), ("RTMAX", -1)):
        if text == base:
            return _RTMIN if sign > 0 else _RTMAX
        if text.startswith(base) and len(text) > len(base) + 1 and text[len(base)] in "+-":
            offset_text = text[len(base) + 1 :]
            if not offset_text.isdigit():
                return None
            offset = int(offset_text) * (1 if text[len(base)] == "+" else -1)
            number = (_RTMIN if sign > 0 else _RTMAX) + offset
            return number if _RTMIN <= number <= _RTMAX else None
    return None


def docker_exit_code(returncode: int) -> int:
    """subprocess's return code (-N for signal N) as Docker reports it (128+N)."""
    return 128 - returncode if returncode < 0 else returncode
