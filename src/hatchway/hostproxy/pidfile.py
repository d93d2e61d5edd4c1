"""The daemon's PID file and singleton lock (upstream defects 2-5 fixed).

* :class:`DaemonLock` takes a POSIX record lock on ``hostproxy.lock`` before
  anything else; a second daemon cannot get it and leaves the first one's files
  alone. The PID file is written atomically (temp file + rename, mode 0600) and
  removed only by the process holding the lock.
* :func:`read_pid` trims whitespace; garbage or empty content is 0.
* :func:`stop_daemon` signals the PID only when the lock is held by that very
  PID (``F_GETLK`` names the holder), so a recycled PID is never signalled.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import sys

__all__ = ["DaemonLock", "get_daemon_pid", "is_alive", "is_daemon_running", "lock_holder", "read_pid", "stop_daemon"]

# struct flock on Linux (short type, short whence, off_t start, off_t len, pid_t pid); BSD/macOS order differs
_FLOCK = "hhqqi" if sys.platform.startswith("linux") else "qqihh"


def read_pid(path: str) -> int:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return 0
    try:
        pid = int(text)
    except ValueError:
        return 0
    return pid if pid > 0 else 0


def is_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def get_daemon_pid(pid_file: str) -> int:
    pid = read_pid(pid_file)
    return pid if is_alive(pid) else 0


def is_daemon_running(pid_file: str) -> bool:
    return get_daemon_pid(pid_file) != 0


def lock_holder(lock_file: str) -> int:
    """PID of the process holding the write lock on ``lock_file``, else 0."""
    try:
        fd = os.open(lock_file, os.O_RDWR)
    except OSError:
        return 0
    try:
        if _FLOCK == "hhqqi":
            query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
            kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
        else:
            query = struct.pack(_FLOCK, 0, 0, 0, fcntl.F_WRLCK, os.SEEK_SET)
            answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
            _, _, pid, kind, _ = struct.unpack(_FLOCK, answer)
        return int(pid) if kind != fcntl.F_UNLCK else 0
    except OSError:
        return 0
    finally:
        os.close(fd)


def stop_daemon(pid_file: str, lock_file: str | None = None) -> bool:
    """SIGTERM the daemon; True when a signal was sent. Missing file: nothing; stale file: removed."""
    pid = read_pid(pid_file)
    if pid == 0 or not is_alive(pid):
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        return False
    lock_file = lock_file or os.path.join(os.path.dirname(pid_file), "hostproxy.lock")
    if lock_holder(lock_file) != pid:
        return False  # the PID is not the daemon (reused): no signal
    os.kill(pid, signal.SIGTERM)
    return True


class DaemonLock:
    """The singleton lock plus the PID file it guards."""

    def __init__(self, lock_file: str, pid_file: str) -> None:
        self.lock_file = lock_file
        self.pid_file = pid_file
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def write_pid(self) -> None:
        assert self._fd is not None, "write_pid without the lock"
        tmp = f"{self.pid_file}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, self.pid_file)

    def release(self) -> None:
        if self._fd is None:
            return
        if read_pid(self.pid_file) == os.getpid():
            try:
                os.unlink(self.pid_file)
            except FileNotFoundError:
                pass
        os.close(self._fd)  # closing releases the record lock
        self._fd = None
