"""The adversarial harness: fuzz budgets, process bounds (RSS, descriptors, children) and a small tmpfs.

The suite under ``tests/adversarial/`` attacks every server the way a stranger on the same host
would. Its budgets come from ``WORKBENCH_FUZZ``: ``quick`` (the default, what CI runs) or
``nightly`` (at least 10^4 messages per protocol), or a plain number of messages.

Every check here reads the live process from ``/proc``, so a bound is measured, never assumed::

    before = ProcessBounds.of(server_pid)
    ...  # the attack
    ProcessBounds.of(server_pid).assert_within(before, rss_mib=64, fds=16)
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

QUICK_MESSAGES = 400
NIGHTLY_MESSAGES = 10_000
#: a well-formed request after an attack must answer within this many seconds
ANSWER_DEADLINE = 2.0


def fuzz_messages() -> int:
    """How many fuzzed messages each protocol gets in this run (``WORKBENCH_FUZZ``)."""
    setting = os.environ.get("WORKBENCH_FUZZ", "quick").strip().lower()
    if setting == "nightly":
        return NIGHTLY_MESSAGES
    if setting.isdigit():
        return int(setting)
    return QUICK_MESSAGES


def fuzz_random(seed: int | None = None) -> random.Random:
    """A seeded generator: a failing case prints its seed and replays with ``WORKBENCH_FUZZ_SEED``."""
    if seed is None:
        seed = int(os.environ.get("WORKBENCH_FUZZ_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
    generator = random.Random(seed)
    generator.seed_value = seed  # type: ignore[attr-defined]
    return generator


def mutate(message: bytes, rng: random.Random) -> bytes:
    """One random mutation of a valid message: flip, insert, delete, truncate, repeat or splice bytes."""
    data = bytearray(message)
    choice = rng.randrange(7)
    if choice == 0 and data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:
        data[rng.randrange(len(data) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    elif choice == 2 and data:
        start = rng.randrange(len(data))
        del data[start:start + rng.randrange(1, 16)]
    elif choice == 3:
        del data[rng.randrange(len(data) + 1):]
    elif choice == 4 and data:
        start = rng.randrange(len(data))
        data[start:start] = data[start:start + rng.randrange(1, 32)] * rng.randrange(2, 50)
    elif choice == 5:
        data[rng.randrange(len(data) + 1):0] = rng.choice(
            [b"{", b"[", b"\x00", b"\xff\xfe", b'"', b"NaN", b"-1e999", b"<", b"&", b"\\u0000"]) * rng.randrange(1, 64)
    else:
        data = bytearray(rng.randbytes(rng.randrange(0, 64)))
    return bytes(data)


@dataclass(frozen=True)
class ProcessBounds:
    """What a process holds at one moment: resident memory, open descriptors, living children."""

    pid: int
    rss_bytes: int
    fds: int
    children: int
    zombies: int

    @classmethod
    def of(cls, pid: int) -> "ProcessBounds":
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        children = zombies = 0
        for child in _children(pid):
            children += 1
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    zombies += 1
        return cls(pid, rss, fds, children, zombies)

    def assert_within(self, before: "ProcessBounds", rss_mib: float, fds: int, children: int = 0) -> None:
        """Fail unless growth since ``before`` stays under the given bounds and no child is a zombie."""
        grown = (self.rss_bytes - before.rss_bytes) / 2**20
        assert grown <= rss_mib, f"pid {self.pid}: RSS grew {grown:.1f} MiB (bound {rss_mib} MiB)"
        assert self.fds - before.fds <= fds, f"pid {self.pid}: {self.fds - before.fds} more descriptors (bound {fds})"
        assert self.children - before.children <= children, \
            f"pid {self.pid}: {self.children - before.children} more children (bound {children})"
        assert self.zombies == 0, f"pid {self.pid}: {self.zombies} zombie children"


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return found


def answers_within(request: Callable[[], object], deadline: float = ANSWER_DEADLINE) -> object:
    """Run a well-formed request and fail if it takes longer than ``deadline`` seconds to answer."""
    started = time.monotonic()
    result = request()
    took = time.monotonic() - started
    assert took <= deadline, f"a well-formed request took {took:.2f} s after the attack (bound {deadline} s)"
    return result


def send_until_refused(address: tuple[str, int], head: bytes, piece: bytes, counted: int | None = None,
                       limit: int = 40 << 20) -> tuple[int, bytes]:
    """Send ``head``, then ``piece`` again and again until the server stops reading or ``limit``
    body bytes went out (``counted`` of them per piece, the framing aside); return the body bytes
    sent and the first bytes of the answer (empty if the connection was reset)."""
    counted = len(piece) if counted is None else counted
    sent = 0
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(head)
        try:
            while sent < limit:
                sock.sendall(piece)
                sent += counted
        except OSError:
            pass
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    return sent, answer


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (root only) and unmount it after: a disk that fills up."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(path: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file under ``path`` until the filesystem is full (or ``leave_bytes`` are left)."""
    filler = path / f".filler-{os.getpid()}-{time.monotonic_ns()}"
    with open(filler, "wb") as out:
        chunk = b"\0" * 65536
        while True:
            free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
            if free <= leave_bytes:
                break
            try:
                out.write(chunk[: max(1, min(len(chunk), free - leave_bytes))])
                out.flush()
            except OSError:
                break
    return filler
