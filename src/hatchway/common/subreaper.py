"""Child subreaper: orphaned descendants come to this process instead of to PID 1.

``prctl(PR_SET_CHILD_SUBREAPER)`` (Linux 3.4+).  In the static executable the call
is the built-in module ``_hatchway_sys`` (build/static/main.c), which has no
ctypes (no libffi); in a venv or the PEX it goes through ctypes.  A process that
becomes a subreaper must reap what it gets: see :mod:`hatchway.common.reaper`.
"""

from __future__ import annotations

import os
import sys

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


def _prctl_via_ctypes(option: int, arg: int) -> int:
    """prctl(option, arg) through ctypes: its return value; OSError on failure, ImportError
    or AttributeError when ctypes or libc's prctl is missing."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = int(libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)))
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def set_child_subreaper(on: bool = True) -> bool:
    """Make this process a child subreaper (``on=False`` undoes it).

    True when done; False where it cannot be done (not Linux, or neither
    ``_hatchway_sys`` nor ctypes is available).  OSError when prctl refuses.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import _hatchway_sys  # type: ignore[import-not-found]  # built into the static executable
    except ImportError:
        pass
    else:
        _hatchway_sys.set_child_subreaper(on)
        return True
    try:
        _prctl_via_ctypes(PR_SET_CHILD_SUBREAPER, 1 if on else 0)
    except (ImportError, AttributeError):
        return False
    return True


def is_child_subreaper() -> bool:
    """Whether this process is a child subreaper now (False where it cannot be asked)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import _hatchway_sys
    except ImportError:
        pass
    else:
        return bool(_hatchway_sys.is_child_subreaper())
    try:
        import ctypes

        value = ctypes.c_int(0)
        libc = ctypes.CDLL(None, use_errno=True)
        if int(libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    except (ImportError, AttributeError):
        return False
    return bool(value.value)
