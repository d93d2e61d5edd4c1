"""Starting a child the way Docker's exec does, with the failures Docker reports.

:func:`spawn` starts one child (an exec, the main process, a health probe)
without waiting for it: its exit status is collected by the one
:class:`~hatchway.common.reaper.Reaper`, never by asyncio's child watcher.

* argv is ``cmd`` as given (no shell); a bare name is looked up in the
  ``PATH`` of the *merged* environment (the agent's, then the exec's ``env``).
* ``SOCKERLESS_AGENT_TOKEN`` never reaches a child.
* TTY: a fresh pseudo-terminal; the child is a session leader with the slave
  as its controlling terminal on fds 0-2 (``setsid`` + ``TIOCSCTTY``, no
  ``setpgid``: upstream's EPERM). ``TERM=xterm`` unless the env sets ``TERM``;
  the initial size from ``width``/``height``.
* Failures are raised as :class:`SpawnError` with Docker's code: 127 for a
  command that does not exist, 126 for one that cannot run (permission, a
  directory, a bad working directory, an unknown user).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import grp
import os
import pwd
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from hatchway.common.reaper import Reaper

__all__ = ["TOKEN_ENV", "Child", "ChildSpec", "SpawnError", "child_environment", "exit_future", "resize_terminal", "set_window_size",
           "signal_child", "spawn"]

TOKEN_ENV = "SOCKERLESS_AGENT_TOKEN"


class SpawnError(Exception):
    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class ChildSpec(msgspec.Struct, kw_only=True):
    argv: list[str]
    env: dict[str, str]
    workdir: str = ""
    tty: bool = False
    stdin: bool = True  # False: /dev/null
    width: int = 0
    height: int = 0
    user: str = ""
    new_group: bool = True  # own process group (execs); the main process stays in the agent's
    merge_stderr: bool = False  # one pipe for stdout and stderr (health probes)


class Child:
    """A started child: its pid and the parent's ends of its stdio (None where there is none)."""

    def __init__(self, popen: subprocess.Popen[bytes], stdin_fd: int | None, stdout_fd: int | None,
                 stderr_fd: int | None, master_fd: int | None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.master_fd = master_fd

    def reaped(self, returncode: int) -> None:
        """Record the status the reaper collected (so Popen never waits for it itself)."""
        self.popen.returncode = returncode

    def close_fds(self) -> None:
        for fd in (self.stdin_fd, self.stdout_fd, self.stderr_fd, self.master_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.stdin_fd = self.stdout_fd = self.stderr_fd = self.master_fd = None


def child_environment(base: Mapping[str, str], extra: Sequence[str] = (), *, tty: bool = False) -> dict[str, str]:
    """``base`` then ``extra`` (``KEY=VALUE``, later wins), without the agent's token; ``TERM=xterm`` for a TTY."""
    env = {key: value for key, value in base.items() if key != TOKEN_ENV}
    for item in extra:
        key, sep, value = item.partition("=")
        if sep and key:
            env[key] = value
    env.pop(TOKEN_ENV, None)
    if tty and "TERM" not in env:
        env["TERM"] = "xterm"
    return env


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height & 0xFFFF, width & 0xFFFF, 0, 0))


def resize_terminal(fd: int | None, width: int, height: int) -> None:
    """Resize the PTY ``fd`` of a running session; a PTY already gone (EBADF, EIO, ENOTTY) is ignored."""
    if fd is None:
        return
    try:
        set_window_size(fd, width, height)
    except OSError as exc:
        if exc.errno not in (errno.EBADF, errno.EIO, errno.ENOTTY):
            raise


def exit_future(reaper: Reaper, pid: int) -> asyncio.Future[int]:
    """A future for child ``pid``'s return code, fed by ``reaper`` (no task: nothing to own or cancel)."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def deliver(code: int) -> None:
        if not future.done():
            future.set_result(code)

    reaper.watch(pid, deliver)
    return future


def signal_child(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``; a process already gone is not an error."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _take_terminal() -> None:  # runs in the child, between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _User(msgspec.Struct):
    uid: int
    gid: int
    groups: list[int]
    home: str | None


def _lookup_user(spec: str) -> _User:
    name, _, group = spec.partition(":")
    try:
        if name.isdigit():
            uid = int(name)
            try:
                entry = pwd.getpwuid(uid)
            except KeyError:
                gid, groups, home = 0, [], None
            else:
                gid, home = entry.pw_gid, entry.pw_dir
                groups = os.getgrouplist(entry.pw_name, gid)
        else:
            entry = pwd.getpwnam(name)
            uid, gid, home = entry.pw_uid, entry.pw_gid, entry.pw_dir
            groups = os.getgrouplist(name, gid)
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise SpawnError(f"unable to find user {spec}: no matching entries in passwd file", 126) from None
    return _User(uid, gid, groups, home)


def _failure(exc: OSError, spec: ChildSpec, executable: str) -> SpawnError:
    if spec.workdir and exc.filename == spec.workdir and isinstance(exc, (FileNotFoundError, NotADirectoryError,
                                                                          PermissionError)):
        return SpawnError(f"chdir {spec.workdir}: {os.strerror(exc.errno or 0).lower()}", 126)
    if isinstance(exc, FileNotFoundError):
        if "/" not in executable:
            return SpawnError(f'exec: "{executable}": executable file not found in $PATH', 127)
        return SpawnError(f"fork/exec {executable}: no such file or directory", 127)
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return SpawnError(f"fork/exec {executable}: {reason}", 126)


# Output pipe capacity once a child streams (see exec.py): whole 256 KB reads (8 messages, one socket write)
# instead of 64 KiB ones. An unprivileged user's pipes count against fs/pipe-user-pages-soft (64 MiB): past
# it the kernel gives that user's NEW pipes one page, so a non-root agent stays at 256 KiB per stream (128
# streaming execs before the quota), root (not limited) takes 1 MiB.
def spawn(spec: ChildSpec) -> Child:
    """Start the child; raise :class:`SpawnError` (126/127) when it cannot start."""
    if not spec.argv:
        raise SpawnError("exec requires cmd", 126)
    env = dict(spec.env)
    kwargs: dict[str, object] = {}
    if spec.user:
        user = _lookup_user(spec.user)
        kwargs.update(user=user.uid, group=user.gid, extra_groups=user.groups)
        if user.home and "HOME" not in env:
            env["HOME"] = user.home
    executable = spec.argv[0]
    parent_fds: list[int] = []
    child_fds: list[int] = []
    master_fd = stdin_fd = stdout_fd = stderr_fd = None
    try:
        if spec.tty:
            master_fd, slave_fd = os.openpty()
            parent_fds.append(master_fd)
            child_fds.append(slave_fd)
            if spec.width or spec.height:
                set_window_size(slave_fd, spec.width, spec.height)
            stdin: int = slave_fd
            stdout: int = slave_fd
            stderr: int = slave_fd
            kwargs.update(start_new_session=True, preexec_fn=_take_terminal)
        else:
            if spec.stdin:
                read_end, stdin_fd = os.pipe()
                parent_fds.append(stdin_fd)
                child_fds.append(read_end)
                stdin = read_end
            else:
                stdin = subprocess.DEVNULL
            stdout_fd, stdout = os.pipe()
            parent_fds.append(stdout_fd)
            child_fds.append(stdout)
            if spec.merge_stderr:
                stderr = stdout
            else:
                stderr_fd, stderr = os.pipe()
                parent_fds.append(stderr_fd)
                child_fds.append(stderr)
            if spec.new_group:
                kwargs["process_group"] = 0
        try:
            popen = subprocess.Popen(  # noqa: S603 - argv from the authenticated peer, no shell
                spec.argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=spec.workdir or None,
                close_fds=True, **kwargs,  # type: ignore[call-overload]
            )
        except OSError as exc:
            raise _failure(exc, spec, executable) from None
        except subprocess.SubprocessError as exc:  # the preexec hook failed (no terminal)
            raise SpawnError(f"fork/exec {executable}: {exc}", 126) from None
    except BaseException:
        for fd in parent_fds:
            os.close(fd)
        raise
    finally:
        for fd in child_fds:
            os.close(fd)
    return Child(popen, stdin_fd, stdout_fd, stderr_fd, master_fd)
