"""The real-service fixtures: each server works through the client library the project uses.

ZooKeeper through kazoo, sshd through paramiko, MariaDB and PostgreSQL through SQLAlchemy
(pymysql / psycopg), Redis through redis-py; plus the isolation each per-test fixture promises,
the logs the plugin attaches to failures, and the recorded start times.

Tests named ``..._starts_empty`` run twice on purpose: whichever runs second would see the
leftovers of the first if the fixture did not isolate them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import paramiko
import pytest
import redis
import sqlalchemy
from kazoo.client import KazooClient

from workbench.errors import ServiceError
from workbench.testing.fixtures import start_time_report, started_services
from workbench.testing.process import running_as_root
from workbench.testing.services import (
    MariaDBServer,
    PostgresServer,
    RedisServer,
    SqlServer,
    SshServer,
    ZooKeeperServer,
)

pytest_plugins = ["pytester"]

TWICE = pytest.mark.parametrize("run", ["first", "second"])


# -- ZooKeeper (kazoo) ------------------------------------------------------------------------------
def test_zookeeper_znode_round_trip_inside_chroot(zookeeper_server: ZooKeeperServer, zookeeper_chroot: str,
                                                  zookeeper_client: KazooClient) -> None:
    zookeeper_client.create("/app/greeting", b"hello", makepath=True)
    data, stat = zookeeper_client.get("/app/greeting")
    assert data == b"hello" and stat.version == 0
    # "envi" four-letter word: needs the whitelist the server is configured with
    assert zookeeper_client.server_version()[:2] >= (3, 5)

    # seen from the root, the node lives under the chroot
    chroot_path = zookeeper_chroot[len(zookeeper_server.hosts):]
    assert chroot_path.startswith("/t-")
    with zookeeper_server.client() as admin:
        assert admin.get(f"{chroot_path}/app/greeting")[0] == b"hello"


def test_zookeeper_chroots_are_isolated(zookeeper_server: ZooKeeperServer,
                                        zookeeper_client: KazooClient) -> None:
    with zookeeper_server.chroot() as other_hosts, zookeeper_server.client(other_hosts) as other:
        zookeeper_client.create("/config", b"mine")
        other.create("/config", b"theirs")
        zookeeper_client.create("/only-mine")

        assert zookeeper_client.get("/config")[0] == b"mine"
        assert other.get("/config")[0] == b"theirs"
        assert other.exists("/only-mine") is None
        assert sorted(zookeeper_client.get_children("/")) == ["config", "only-mine"]
        assert other.get_children("/") == ["config"]


@TWICE
def test_zookeeper_chroot_starts_empty(zookeeper_client: KazooClient, run: str) -> None:
    assert zookeeper_client.get_children("/") == []
    zookeeper_client.create("/leftover", run.encode())


def test_zookeeper_chroot_is_deleted_afterwards(zookeeper_server: ZooKeeperServer) -> None:
    with zookeeper_server.chroot() as hosts:
        chroot_path = hosts[len(zookeeper_server.hosts):]
        with zookeeper_server.client() as admin:
            admin.create(f"{chroot_path}/a/b", makepath=True)
    with zookeeper_server.client() as admin:
        assert admin.exists(chroot_path) is None


# -- sshd (paramiko) --------------------------------------------------------------------------------
def test_ssh_exec_echo(ssh_client: paramiko.SSHClient) -> None:
    _, stdout, stderr = ssh_client.exec_command("echo hello-from-sshd", timeout=10)
    assert stdout.read().decode() == "hello-from-sshd\n"
    assert stdout.channel.recv_exit_status() == 0
    assert stderr.read() == b""


def test_sftp_put_get_round_trip(ssh_client: paramiko.SSHClient, tmp_path: Path) -> None:
    payload = os.urandom(256 * 1024)
    local, remote, back = tmp_path / "upload.bin", tmp_path / "remote.bin", tmp_path / "download.bin"
    local.write_bytes(payload)
    with ssh_client.open_sftp() as sftp:
        sftp.put(str(local), str(remote))
        assert sftp.stat(str(remote)).st_size == len(payload)
        sftp.get(str(remote), str(back))
        sftp.remove(str(remote))
    assert back.read_bytes() == payload
    assert not remote.exists()


def test_ssh_unknown_host_key_is_refused(ssh_server: SshServer) -> None:
    client = paramiko.SSHClient()  # no host keys loaded at all
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            client.connect(**ssh_server.connect_kwargs())
    finally:
        client.close()


def test_ssh_wrong_pinned_host_key_is_refused(ssh_server: SshServer) -> None:
    # pin some other ed25519 key (the client's own) under the server's name
    impostor = paramiko.Ed25519Key(filename=str(ssh_server.client_key_path))
    client = paramiko.SSHClient()
    client.get_host_keys().add(ssh_server.host_key_name, impostor.get_name(), impostor)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            client.connect(**ssh_server.connect_kwargs())
    finally:
        client.close()


def test_ssh_host_key_is_the_generated_ed25519(ssh_client: paramiko.SSHClient, ssh_server: SshServer) -> None:
    presented = ssh_client.get_transport().get_remote_server_key()
    assert presented.get_name() == "ssh-ed25519"
    assert presented == ssh_server.host_public_key


# -- MariaDB and PostgreSQL (SQLAlchemy) --------------------------------------------------------------
def sqlalchemy_round_trip(url: str) -> list[tuple[int, str]]:
    """Create a table, insert two rows and select them back through SQLAlchemy Core."""
    engine = sqlalchemy.create_engine(url)
    metadata = sqlalchemy.MetaData()
    hosts = sqlalchemy.Table("hosts", metadata,
                             sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
                             sqlalchemy.Column("name", sqlalchemy.String(64), nullable=False))
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            connection.execute(hosts.insert(), [{"id": 1, "name": "db1"}, {"id": 2, "name": "zk1"}])
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sqlalchemy.select(hosts).order_by(hosts.c.id))]
    finally:
        engine.dispose()


def assert_database_starts_empty(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
        with engine.begin() as connection:  # would fail next time if the database were reused
            connection.exec_driver_sql("CREATE TABLE leftover (id INTEGER)")
    finally:
        engine.dispose()


def assert_temporary_databases_separate_and_dropped(server: SqlServer) -> None:
    with server.temporary_database() as first_url, server.temporary_database() as second_url:
        assert first_url != second_url
        sqlalchemy_round_trip(first_url)
        second = sqlalchemy.create_engine(second_url)
        try:
            assert sqlalchemy.inspect(second).get_table_names() == []
            # a connection still open when the database is dropped must not block the drop
            lingering = second.connect()
            lingering.exec_driver_sql("SELECT 1")
        except BaseException:
            second.dispose()
            raise
    names = [url.rsplit("/", 1)[1] for url in (first_url, second_url)]
    assert not any(server.database_exists(name) for name in names)
    # the server killed that session: discard it without the pool's ROLLBACK on a dead socket
    lingering.invalidate()
    lingering.close()
    second.dispose()


def test_mariadb_sqlalchemy_round_trip(mariadb_url: str) -> None:
    assert mariadb_url.startswith("mysql+pymysql://workbench:")
    assert "@127.0.0.1:" in mariadb_url
    assert sqlalchemy_round_trip(mariadb_url) == [(1, "db1"), (2, "zk1")]


@TWICE
def test_mariadb_database_starts_empty(mariadb_url: str, run: str) -> None:
    assert_database_starts_empty(mariadb_url)


def test_mariadb_temporary_databases_are_separate_and_dropped(mariadb_server: MariaDBServer) -> None:
    assert_temporary_databases_separate_and_dropped(mariadb_server)


def test_mariadb_runs_as_mysql_with_utf8mb4(mariadb_url: str, mariadb_server: MariaDBServer) -> None:
    engine = sqlalchemy.create_engine(mariadb_url)
    try:
        with engine.connect() as connection:
            charset = connection.exec_driver_sql("SELECT @@character_set_database").scalar()
    finally:
        engine.dispose()
    assert charset == "utf8mb4"
    if running_as_root():
        assert Path(f"/proc/{mariadb_server.server_pid()}").stat().st_uid == _uid("mysql")


def test_postgres_sqlalchemy_round_trip(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://workbench:")
    assert "@127.0.0.1:" in postgres_url
    assert sqlalchemy_round_trip(postgres_url) == [(1, "db1"), (2, "zk1")]


@TWICE
def test_postgres_database_starts_empty(postgres_url: str, run: str) -> None:
    assert_database_starts_empty(postgres_url)


def test_postgres_temporary_databases_are_separate_and_dropped(postgres_server: PostgresServer) -> None:
    assert_temporary_databases_separate_and_dropped(postgres_server)


def test_postgres_tcp_login_needs_the_password(postgres_server: PostgresServer) -> None:
    wrong = postgres_server.url("postgres").replace(postgres_server.password, "not-the-password")
    engine = sqlalchemy.create_engine(wrong)
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()
    if running_as_root():
        assert Path(f"/proc/{postgres_server.server_pid()}").stat().st_uid == _uid("postgres")


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


# -- Redis (redis-py) -------------------------------------------------------------------------------
def test_redis_set_get(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.set("inventory:db1", "up")
        assert client.get("inventory:db1") == b"up"
    finally:
        client.close()


@TWICE
def test_redis_db_starts_empty(redis_url: str, run: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("leftover", run)
    finally:
        client.close()


# -- logs, start times, errors ----------------------------------------------------------------------
@pytest.mark.parametrize("fixture_name, expected", [
    ("zookeeper_server", "binding to port"),
    ("ssh_server", "Server listening on 127.0.0.1 port"),
    ("mariadb_server", "ready for connections"),
    ("postgres_server", "database system is ready to accept connections"),
    ("redis_server", "Ready to accept connections"),
])
def test_log_tail_has_header_and_server_output(request: pytest.FixtureRequest, fixture_name: str,
                                               expected: str) -> None:
    service = request.getfixturevalue(fixture_name)
    # A session service has logged for every test before this one: its start-up line is found in
    # a long enough tail, and the default tail stays bounded whatever the log's length.
    whole = service.log_tail(lines=10**6)
    assert f"--- {service.log_path} ---" in whole
    assert expected in whole
    for part in service.log_tail().split("--- ")[1:]:
        assert len(part.splitlines()) <= 61  # the header's line and at most 60 of the log


def test_failing_test_report_carries_service_log(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # the inner run needs only our plugin; loading every installed plugin costs seconds
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_inner="""
        def test_fails_using_redis(redis_server):
            assert False, "deliberate failure"
    """)
    result = pytester.runpytest_subprocess("-p", "workbench.testing.plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "redis log" in output
    assert "Ready to accept connections" in output


def test_start_times_are_recorded(zookeeper_server: ZooKeeperServer, ssh_server: SshServer,
                                  mariadb_server: MariaDBServer, postgres_server: PostgresServer,
                                  redis_server: RedisServer) -> None:
    services = [zookeeper_server, ssh_server, mariadb_server, postgres_server, redis_server]
    started = started_services()
    for service in services:
        assert service in started
        assert service.running
        assert service.start_seconds is not None and 0 < service.start_seconds < service.start_timeout
    report = start_time_report()
    for service in services:
        assert f"{service.name} started in {service.start_seconds:.2f}s" in report
    print("\n".join(report))


@pytest.mark.parametrize("make, package", [
    (lambda d: ZooKeeperServer(d, java="/nonexistent/java"), "default-jre-headless"),
    (lambda d: ZooKeeperServer(d, jars=["/nonexistent/zookeeper.jar"]), "zookeeper"),
    (lambda d: SshServer(d, sshd="/nonexistent/sshd"), "openssh-server"),
    (lambda d: MariaDBServer(d, mariadbd="/nonexistent/mariadbd"), "mariadb-server"),
    (lambda d: PostgresServer(d, bindir="/nonexistent/bin"), "postgresql"),
    (lambda d: RedisServer(d, redis_server="/nonexistent/redis-server"), "redis-server"),
], ids=["java", "zookeeper-jar", "sshd", "mariadbd", "postgres", "redis-server"])
def test_missing_binary_names_the_apt_package(tmp_path: Path, make, package: str) -> None:
    with pytest.raises(ServiceError, match=f"apt-get install -y {package}") as caught:
        make(tmp_path)
    assert caught.value.package == package


def test_private_workdir_is_reported_clearly(tmp_path: Path) -> None:
    """A pytest tmp_path is private to root: postgres could not reach a data dir below it."""
    server = PostgresServer(tmp_path / "postgres")
    server.give_to_run_as_user(server.workdir)
    if running_as_root():
        with pytest.raises(ServiceError, match="traversable_tempdir"):
            server.check_reachable_by_run_as_user()
    else:  # not root: the server would run as ourselves, who can reach our own tmp_path
        server.check_reachable_by_run_as_user()


def test_database_names_are_validated(mariadb_server: MariaDBServer) -> None:
    with pytest.raises(ServiceError, match="unsafe database name"):
        mariadb_server.create_database(f"x`; DROP DATABASE mysql; -- {uuid.uuid4().hex}")
