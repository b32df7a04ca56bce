"""What a domain login costs an attacker: bounded password hashing and per-address backoff (no I/O).

Each check of a domain password is an scrypt hash of 16 MiB. ``PasswordHasher`` runs them on a
small fixed pool of threads, so forty logins at once cost the memory of two, not forty; a login
that cannot get a turn soon is refused as busy. ``LoginThrottle`` counts failed logins per client
address: past a few, that address must wait (doubling, capped) before its next attempt, and an
attempt during the wait is refused without hashing::

    throttle = LoginThrottle()
    wait = throttle.wait_needed("127.0.0.1")   # 0.0: go ahead
    throttle.failed("127.0.0.1")               # ...after a wrong password
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from workbench.domain.errors import LoginBusy

#: concurrent password hashes (each scrypt costs 16 MiB)
HASHING_THREADS = 2
#: how long a login may wait for a hashing turn before it is refused as busy
HASHING_WAIT_SECONDS = 3.0
#: failed logins in a row after which an address has to wait before its next attempt
FREE_FAILURES = 5
FIRST_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 10.0
#: addresses remembered (the oldest are forgotten first)
MAX_ADDRESSES = 4096


class PasswordHasher:
    """Runs password checks on ``threads`` threads; a check that waits past ``wait`` raises LoginBusy."""

    def __init__(self, threads: int = HASHING_THREADS, wait: float = HASHING_WAIT_SECONDS) -> None:
        self.wait = wait
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="password-hash")

    def check(self, verify: Callable[[], bool]) -> bool:
        future: Future[bool] = self._pool.submit(verify)
        try:
            return future.result(timeout=self.wait)
        except FutureTimeout:
            future.cancel()  # still queued: it never runs; running: its answer is dropped
            raise LoginBusy("the broker is checking too many logins at once; try again shortly") from None


class LoginThrottle:
    """Failed logins per address, and how long each address must wait before its next attempt."""

    def __init__(self, free_failures: int = FREE_FAILURES, first_wait: float = FIRST_WAIT_SECONDS,
                 max_wait: float = MAX_WAIT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.free_failures = free_failures
        self.first_wait = first_wait
        self.max_wait = max_wait
        self.clock = clock
        self._lock = threading.Lock()
        # address -> (failures in a row, when the next attempt may come)
        self._failures: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()

    def wait_needed(self, address: str) -> float:
        """Seconds ``address`` must still wait before a login is checked (0.0: now)."""
        with self._lock:
            entry = self._failures.get(address)
        return 0.0 if entry is None else max(0.0, entry[1] - self.clock())

    def failed(self, address: str) -> None:
        with self._lock:
            count = self._failures.pop(address, (0, 0.0))[0] + 1
            over = count - self.free_failures
            wait = 0.0 if over < 0 else min(self.max_wait, self.first_wait * 2 ** over)
            self._failures[address] = (count, self.clock() + wait)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
