"""pytest fixtures for real services (ZooKeeper, sshd, MariaDB, PostgreSQL, Redis) on loopback.

Session fixtures (``zookeeper_server``, ``ssh_server``, ``mariadb_server``, ``postgres_server``,
``redis_server``) start their server the first time a test asks for it and stop it when the
session ends; they yield the :class:`~workbench.testing.process.ServiceProcess`, so the plugin
attaches its log to the report of any failing test that used it.

Per-test fixtures isolate tests that share a server: ``zookeeper_chroot`` / ``zookeeper_client``
(a fresh chroot), ``ssh_client`` (a connection that pins the host key), ``mariadb_url`` /
``postgres_url`` (a fresh database, dropped afterwards) and ``redis_url`` (a flushed db).

A service that cannot start fails the test with a ServiceError carrying the log tail: these
fixtures never skip. ``started_services()`` lists what was started, with ``start_seconds``.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import pytest

from workbench.errors import ServiceError
from workbench.testing.process import ServiceProcess
from workbench.testing.services import (
    MariaDBServer,
    PostgresServer,
    RedisServer,
    SshServer,
    ZooKeeperServer,
    traversable_tempdir,
)

# Client libraries are imported inside the fixtures: this module is loaded on every pytest run.
if TYPE_CHECKING:
    import paramiko
    from kazoo.client import KazooClient

Service = TypeVar("Service", bound=ServiceProcess)

#: every service started in this session, in start order (kept after they stop, so a summary
#: written at the end of the session can still report their start times)
_started: list[ServiceProcess] = []


def started_services() -> list[ServiceProcess]:
    """The services these fixtures started in this session, in start order (some may be stopped)."""
    return list(_started)


def start_time_report() -> list[str]:
    """One line per started service: ``"{name} started in {seconds:.2f}s"``."""
    return [f"{service.name} started in {service.start_seconds:.2f}s"
            for service in _started if service.start_seconds is not None]


@contextmanager
def _running(service: Service) -> Iterator[Service]:
    """Start ``service``, record it, and stop it on exit, whatever happened in between."""
    service.start()
    _started.append(service)
    try:
        yield service
    finally:
        service.stop()


@contextmanager
def _running_in_traversable_dir(tmp_path_factory: pytest.TempPathFactory, name: str,
                                make: Callable[[Path], Service]) -> Iterator[Service]:
    """Run a service whose system user (mysql, postgres) must reach its work directory.

    pytest's temp dirs sit below a directory private to root, so the work directory is a
    fresh world-traversable one in the system temp dir instead; it is removed at the end, after
    its logs are copied below pytest's temp dir for a post-mortem.
    """
    workdir = traversable_tempdir(f"workbench-{name}-")
    service: Service | None = None
    try:
        service = make(workdir)
        with _running(service):
            yield service
    finally:
        if service is not None:
            kept_logs = tmp_path_factory.mktemp(f"{name}-logs")
            for log_path in service.log_paths:
                if Path(log_path).is_file():
                    shutil.copy(log_path, kept_logs)
        shutil.rmtree(workdir, ignore_errors=True)


# -- session-wide servers -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def zookeeper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper for the whole session (``.hosts`` is "127.0.0.1:PORT")."""
    with _running(ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))) as server:
        yield server


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd for the whole session, with a generated host key and client key."""
    with _running(SshServer(tmp_path_factory.mktemp("sshd"))) as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """A MariaDB server for the whole session (runs as user mysql when we are root)."""
    with _running_in_traversable_dir(tmp_path_factory, "mariadb", MariaDBServer) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session (runs as user postgres when we are root)."""
    with _running_in_traversable_dir(tmp_path_factory, "postgres", PostgresServer) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis server without persistence for the whole session."""
    with _running(RedisServer(tmp_path_factory.mktemp("redis"))) as server:
        yield server


# -- per-test isolation ---------------------------------------------------------------------------
@pytest.fixture
def zookeeper_chroot(zookeeper_server: ZooKeeperServer) -> Iterator[str]:
    """kazoo hosts string with a chroot of this test's own, e.g. "127.0.0.1:PORT/t-<uuid>".

    The chroot node is created before the test and deleted with everything below it after.
    """
    with zookeeper_server.chroot() as hosts:
        yield hosts


@pytest.fixture
def zookeeper_client(zookeeper_server: ZooKeeperServer, zookeeper_chroot: str) -> Iterator[KazooClient]:
    """A started kazoo client confined to ``zookeeper_chroot``; stopped and closed after the test."""
    with zookeeper_server.client(zookeeper_chroot) as client:
        yield client


@pytest.fixture
def ssh_client(ssh_server: SshServer) -> Iterator[paramiko.SSHClient]:
    """A paramiko client logged in to ``ssh_server`` that trusts exactly the server's host key."""
    import paramiko

    client = paramiko.SSHClient()
    ssh_server.pin_host_key(client)
    # an unknown or changed host key must fail the connection, never be accepted silently
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(**ssh_server.connect_kwargs())
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise ServiceError(f"cannot log in to sshd at {ssh_server.address}: {exc!r}",
                           service=ssh_server.name, log=ssh_server.log_tail()) from exc
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def mariadb_url(mariadb_server: MariaDBServer) -> Iterator[str]:
    """SQLAlchemy URL (``mysql+pymysql://``) of a database made for this test, dropped after it."""
    with mariadb_server.temporary_database() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a database made for this test, dropped after it."""
    with postgres_server.temporary_database() as url:
        yield url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of Redis db 0, emptied (FLUSHDB) before the test."""
    import redis

    url = redis_server.url(0)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    yield url
