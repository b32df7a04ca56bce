"""Kernel wakeups for the supervisor: a file being written (inotify), a process ending (pidfd).

Both let a watcher thread block until the thing happens instead of waking up on an interval to
look. Where the kernel or platform lacks them (not Linux, an old kernel, inotify instances used
up), they degrade to waiting out the timeout, so callers keep their checks and lose only speed::

    with FileWrites(log_path) as writes:
        while not port_open(host, port):
            writes.wait(0.01)       # returns at once when the process writes its log

    with ProcessEnd(pid) as end:
        end.wait()                  # returns when the process has ended (it need not be our child)
"""

from __future__ import annotations

import ctypes
import os
import queue
import select
import threading
import time
from pathlib import Path

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_libc: ctypes.CDLL | None = None
_to_close: queue.SimpleQueue[int] = queue.SimpleQueue()
_closer: threading.Thread | None = None
_closer_lock = threading.Lock()


def _inotify_functions() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_init1, libc.inotify_add_watch  # noqa: B018 - raises AttributeError without inotify
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def _close_later(fd: int) -> None:
    """Close ``fd`` on the closer thread.

    Closing an inotify instance waits out a kernel grace period (about 8 ms here): a watcher
    must not spend that before its next wait (for the process's end). One long-lived thread
    takes the closes, so handing one over costs a queue put, not a thread start.
    """
    global _closer
    with _closer_lock:
        if _closer is None or not _closer.is_alive():
            _closer = threading.Thread(target=_close_queued, name="inotify-closer", daemon=True)
            _closer.start()
    _to_close.put(fd)


def _close_queued() -> None:
    while True:
        fd = _to_close.get()
        try:
            os.close(fd)
        except OSError:
            pass


def _readable(fd: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))


class FileWrites:
    """Wakes a waiting thread when ``path`` (an existing file) is written to."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        libc = _inotify_functions() if hasattr(select, "poll") else None
        if libc is None:
            return
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:  # e.g. the user's inotify instances are used up: poll instead
            return
        if libc.inotify_add_watch(fd, os.fsencode(str(path)), _IN_MODIFY) < 0:  # e.g. no such file
            _close_later(fd)
            return
        self._fd = fd

    @property
    def immediate(self) -> bool:
        """Whether writes wake ``wait`` at once (False: it only waits out its timeout)."""
        return self._fd is not None

    def wait(self, timeout: float) -> bool:
        """Block until the file is written (True) or ``timeout`` seconds pass (False)."""
        if self._fd is None:
            time.sleep(timeout)
            return False
        if not _readable(self._fd, timeout):
            return False
        try:
            os.read(self._fd, 4096)  # the queued notifications: which writes does not matter
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        """Stop watching; returns at once (the kernel's part finishes on a thread of its own)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _close_later(fd)

    def __enter__(self) -> "FileWrites":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ProcessEnd:
    """Wakes a waiting thread when process ``pid`` ends, through a pidfd (any process, not only a child).

    Opened on a pid the caller has just checked, it follows that very process: a later reuse of
    the pid by another program does not fool it.
    """

    def __init__(self, pid: int) -> None:
        self._fd: int | None = None
        opener = getattr(os, "pidfd_open", None)
        if opener is None or not hasattr(select, "poll"):
            return
        try:
            self._fd = opener(pid)
        except OSError:  # already gone (ESRCH), or no pidfd support: the caller's checks decide
            self._fd = None

    @property
    def immediate(self) -> bool:
        """Whether the end wakes ``wait`` at once (False: it only waits out its timeout)."""
        return self._fd is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the process has ended (True) or ``timeout`` passes (False; never without pidfd)."""
        if self._fd is None:
            time.sleep(timeout if timeout is not None else 0.2)
            return False
        return _readable(self._fd, timeout)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ProcessEnd":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["FileWrites", "ProcessEnd"]
