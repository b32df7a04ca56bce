"""Test support for workbench.commits: servers on loopback, a restartable ZooKeeper, racing savers.

Fixtures (import them into a test module: ``from workbench.testing.commits import commit_server  # noqa: F401``):

* ``commit_server``: a started :class:`~workbench.commits.server.CommitServer` on an in-memory
  SQLite storage with prefix ``/diary`` (``commit_server.url`` ends in ``/diary``).
* ``own_zookeeper``: a ZooKeeper of this test alone, which the test may ``restart``.

:class:`CommitServeProcess` runs ``workbench commits serve`` as a process a test can kill -9.

Functions: :func:`expire_session` ends a kazoo client's session the way ZooKeeper does when a
client stays away too long; :func:`race_saves` is the body of a thread or process that keeps
saving the next version of one key (importable, so ``spawn`` processes can run it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pytest

from workbench.testing.process import ServiceProcess
from workbench.testing.services import ZooKeeperServer

if TYPE_CHECKING:
    from kazoo.client import KazooClient

    from workbench.commits.server import CommitServer

__all__ = ["commit_server", "own_zookeeper", "CommitServeProcess", "RestartableZooKeeper", "expire_session", "race_saves",
           "quick_reconnecting_client", "wait_until"]


def wait_until(condition: Any, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``condition()`` until it returns something true; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s (last: {value!r})")
        time.sleep(interval)


@pytest.fixture
def commit_server() -> Iterator[CommitServer]:
    """A started CommitServer (prefix ``/diary``) over an in-memory SQLite storage."""
    from workbench.commits.server import CommitServer
    from workbench.commits.storage import SqlCommitStorage

    storage = SqlCommitStorage("sqlite://").start()
    server = CommitServer(storage, prefix="/diary").start()
    try:
        yield server
    finally:
        server.stop()
        storage.close()


class CommitServeProcess(ServiceProcess):
    """``python -m workbench.commits serve --storage URL --port PORT --prefix PREFIX`` as a real
    process, for tests that kill it (``kill9``) and start it again on the same storage."""

    name = "commits-serve"
    start_timeout = 60.0

    def __init__(self, workdir: Path, storage_url: str, prefix: str = "/diary", extra: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self.storage_url = storage_url
        self.prefix = prefix
        self.extra = list(extra)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.prefix}"

    def command(self) -> Sequence[str]:
        return [sys.executable, "-m", "workbench.commits", "serve", "--storage", self.storage_url,
                "--port", str(self.port), "--prefix", self.prefix, *self.extra]

    def kill9(self) -> None:
        """SIGKILL the server: no shutdown code runs, exactly like a crash."""
        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class RestartableZooKeeper(ZooKeeperServer):
    """A ZooKeeper that keeps its port and data across ``restart()``."""

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server, stay down ``down_seconds``, start it again on the same port and data."""
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()


@pytest.fixture
def own_zookeeper(tmp_path: Path) -> Iterator[RestartableZooKeeper]:
    """A ZooKeeper for this test alone (tests that restart it must not disturb others)."""
    server = RestartableZooKeeper(tmp_path / "zookeeper")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def quick_reconnecting_client(hosts: str, timeout: float = 15.0) -> Iterator[KazooClient]:
    """A started kazoo client that retries a lost connection every 0.2-0.5 s (kazoo's default
    backoff grows to a minute, far longer than a test wants to wait after a restart)."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=timeout,
                         connection_retry={"max_tries": -1, "delay": 0.2, "backoff": 1, "max_delay": 0.5})
    client.start(timeout=timeout)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def expire_session(client: KazooClient, timeout: float = 15.0) -> None:
    """Make ZooKeeper expire ``client``'s session now, and wait until the client noticed.

    A second connection joins the same session (same id and password) and closes it: the server
    then ends the session and drops its ephemeral nodes and watches, exactly as on a timeout,
    and ``client`` sees its connection cut and its session LOST before it reconnects.
    """
    from kazoo.client import KazooClient
    from kazoo.protocol.states import KazooState

    lost = threading.Event()

    def on_state(state: str) -> None:
        if state == KazooState.LOST:
            lost.set()

    client.add_listener(on_state)
    session_id, password = client.client_id
    hosts = ",".join(f"{host}:{port}" for host, port in client.hosts)
    intruder = KazooClient(hosts=hosts, client_id=(session_id, password), timeout=timeout)
    try:
        intruder.start(timeout=timeout)
    finally:
        intruder.stop()
        intruder.close()
    try:
        if not lost.wait(timeout):
            raise TimeoutError("the client did not see its session expire")
    finally:
        client.remove_listener(on_state)


def race_saves(url: str, key: str, name: str, attempts: int, barrier: Any = None,
               results: Any = None) -> list[int]:
    """Save the next version of ``key`` ``attempts`` times, racing others; return the versions won.

    Each attempt reads the head and saves head + 1 with author ``name``; a conflict is a lost race.
    Any other error propagates (the test then fails). With ``results`` (a multiprocessing queue)
    ``(name, versions won)`` is also put there, for racers run as processes.
    """
    from workbench.commits.model import Commit, CommitConflict
    from workbench.commits.storage import SqlCommitStorage

    storage = SqlCommitStorage(url).start()
    won: list[int] = []
    try:
        if barrier is not None:
            barrier.wait(60)
        for attempt in range(attempts):
            head = storage.get(key)
            version = head.version + 1 if head else 1
            try:
                storage.save(Commit.from_value(key, version, {"by": name, "attempt": attempt}, author=name))
            except CommitConflict as conflict:
                assert conflict.provided_version == version
                continue
            won.append(version)
    finally:
        storage.close()
    if results is not None:
        results.put((name, won))
    return won
