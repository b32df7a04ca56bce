"""Clusters built by the task runner with real servers: local and static-SSH providers, replication,
backups and restores, added nodes, failures cleaned up, cancellation, perform."""

from __future__ import annotations

import threading
from pathlib import Path

import pymysql
import psycopg
import pytest
import redis

from workbench.clusters.errors import (CommandError, ConnectionFailed, ManagerError, TaskCancelled,
                                       UnknownHostKeyError, ValidationError)
from workbench.clusters.managers.redis import RedisManager
from workbench.events import EventRecorder
from workbench.ports import port_open
from workbench.testing.clusters import (clusters_runner, clusters_settings, leftovers,  # noqa: F401
                                        running_clusters, static_pool, static_runner)

TIMEOUT = 240


def roots(runner) -> list[str]:
    return [runner.settings.instances_dir, *(h.base_dir for h in runner.settings.static_hosts)]


def assert_nothing_left(runner, name: str | None = None) -> None:
    found = leftovers(runner.store, roots(runner))
    assert found == [], found


# -- Redis, local provider ----------------------------------------------------------------------------
def test_redis_cluster_of_3_local_replicates_backs_up_restores_and_goes(clusters_runner):
    runner = clusters_runner
    recorder = EventRecorder()
    runner.store.add_listener(recorder)
    runner.create_cluster("cache", "redis-7", size=3).wait(TIMEOUT)
    cluster = runner.store.get_cluster("cache")
    assert cluster.status == "active" and cluster.message == ""
    assert [(i.role, i.status, i.progress) for i in cluster.instances] == [
        ("primary", "active", 100), ("replica", "active", 100), ("replica", "active", 100)]
    assert len({i.port for i in cluster.instances}) == 3
    # progress was emitted while the cluster was built, not only at the end
    seen = {e.args[0].progress for e in recorder.events if e.kind == "instance_changed"}
    assert {5, 40, 100} <= seen

    primary = redis.Redis(cluster.primary.addr, cluster.primary.port)
    primary.set("fruit", "mango")
    for replica in cluster.replicas:
        client = redis.Redis(replica.addr, replica.port)
        _wait(lambda: client.get("fruit") == b"mango")
        with pytest.raises(redis.ReadOnlyError):
            client.set("fruit", "kiwi")
    manager = runner.manager_for(cluster.datastore)
    assert manager.status(cluster.instances[1]) == "running"

    record = runner.backup_cluster("cache").wait(TIMEOUT)
    assert record.status == "done" and Path(record.path).is_file() and record.size > 0
    assert Path(record.path).parent == Path(runner.settings.backup_path) / "cache"

    runner.restore_backup(record.name, "restored", size=2).wait(TIMEOUT)
    restored = runner.store.get_cluster("restored")
    assert redis.Redis(restored.primary.addr, restored.primary.port).get("fruit") == b"mango"
    replica = restored.replicas[0]
    _wait(lambda: redis.Redis(replica.addr, replica.port).get("fruit") == b"mango")

    manager.create_user(cluster.primary, "app", "s3cret-pw")
    app = redis.Redis(cluster.primary.addr, cluster.primary.port, username="app", password="s3cret-pw")
    assert app.get("fruit") == b"mango"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(cluster.primary.addr, cluster.primary.port, username="app", password="wrong").ping()

    instances = runner.store.get_cluster("cache").instances + restored.instances
    runner.destroy_cluster("cache").wait(TIMEOUT)
    runner.destroy_cluster("restored").wait(TIMEOUT)
    assert runner.store.clusters() == []
    for instance in instances:
        assert not Path(instance.directory).exists()
        assert not port_open(instance.addr, instance.port)
    assert_nothing_left(runner)


def test_add_node_joins_with_the_data_and_max_size_is_enforced(clusters_runner):
    runner = clusters_runner
    runner.create_cluster("grow", "redis-7", size=1).wait(TIMEOUT)
    primary = runner.store.get_cluster("grow").primary
    redis.Redis(primary.addr, primary.port).set("before", "1")
    runner.add_nodes("grow", 2).wait(TIMEOUT)
    cluster = runner.store.get_cluster("grow")
    assert [i.name for i in cluster.instances] == ["grow-1", "grow-2", "grow-3"]
    for replica in cluster.replicas:
        _wait(lambda: redis.Redis(replica.addr, replica.port).get("before") == b"1")
    with pytest.raises(ValidationError) as info:
        runner.add_nodes("grow", runner.settings.max_cluster_size)
    assert info.value.fields["field"] == "count"
    assert len(runner.store.get_cluster("grow").instances) == 3  # nothing was recorded


# -- MySQL and PostgreSQL over SSH (static hosts) -----------------------------------------------------
def test_mysql_cluster_of_3_over_ssh_with_database_user_backup_and_restore(static_runner):
    runner = static_runner
    runner.create_cluster("shop", "mysql-10.11", size=3).wait(TIMEOUT)
    cluster = runner.store.get_cluster("shop")
    assert cluster.status == "active"
    # spread over the pool, reached over SSH with the pool's pinned host key
    assert len({i.directory.rsplit("/", 2)[0] for i in cluster.instances}) == 3
    assert all(i.ssh_port == runner.settings.static_hosts[0].ssh_port and i.host_key for i in cluster.instances)
    manager = runner.manager_for(cluster.datastore)
    manager.create_database(cluster.primary, "orders")
    manager.create_user(cluster.primary, "shopper", "pa'ss\\word", database="orders")
    with _mysql(cluster.primary, "shopper", "pa'ss\\word", "orders") as db, db.cursor() as cursor:
        cursor.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))")
        cursor.execute("INSERT INTO items VALUES (1, 'teapot'), (2, 'kettle')")
    for replica in cluster.replicas:
        with _mysql(replica, "shopper", "pa'ss\\word", "orders") as db, db.cursor() as cursor:
            _wait(lambda: _count(cursor, "SELECT COUNT(*) FROM items") == 2)
            with pytest.raises(pymysql.err.OperationalError):  # replicas are read-only
                cursor.execute("INSERT INTO items VALUES (3, 'cup')")
    with pytest.raises(ValidationError):
        manager.create_database(cluster.primary, "x`; DROP DATABASE mysql; --")
    # a node added later is seeded with the data and accounts already there, then follows the
    # primary (from a fresh dump: not one kept from the create)
    manager.SEED_REUSE_SECONDS = 0
    runner.add_nodes("shop", 1).wait(TIMEOUT)
    added = runner.store.get_cluster("shop").instances[3]
    with _mysql(cluster.primary, "shopper", "pa'ss\\word", "orders") as db, db.cursor() as cursor:
        cursor.execute("INSERT INTO items VALUES (3, 'cup')")
    with _mysql(added, "shopper", "pa'ss\\word", "orders") as db, db.cursor() as cursor:
        _wait(lambda: _count(cursor, "SELECT COUNT(*) FROM items") == 3)
    with _mysql(cluster.primary, "shopper", "pa'ss\\word", "orders") as db, db.cursor() as cursor:
        cursor.execute("DELETE FROM items WHERE id = 3")

    record = runner.backup_cluster("shop").wait(TIMEOUT)
    assert b"teapot" in Path(record.path).read_bytes()
    # restored into a cluster of the local provider: the replica gets the data through replication
    runner.restore_backup(record.name, "shop-copy", size=2, provider="local").wait(TIMEOUT)
    copy = runner.store.get_cluster("shop-copy")
    for instance in copy.instances:
        with _mysql(instance, "root-check", None, None, admin=(runner, copy)) as rows:
            assert rows == [("kettle",), ("teapot",)]
    runner.destroy_cluster("shop").wait(TIMEOUT)
    runner.destroy_cluster("shop-copy").wait(TIMEOUT)
    assert_nothing_left(runner)


def test_postgresql_cluster_of_3_over_ssh_with_database_user_backup_and_restore(static_runner):
    runner = static_runner
    runner.create_cluster("ledger", "postgresql-15", size=3).wait(TIMEOUT)
    cluster = runner.store.get_cluster("ledger")
    manager = runner.manager_for(cluster.datastore)
    manager.create_database(cluster.primary, "books")
    manager.create_user(cluster.primary, "clerk", "it's a secret", database="books")
    with _pg(cluster.primary, "clerk", "it's a secret", "books") as db:
        db.execute("CREATE TABLE entries (id int PRIMARY KEY, amount int)")
        db.execute("INSERT INTO entries VALUES (1, 100), (2, -40)")
    for replica in cluster.replicas:
        # the role reaches the replicas by asynchronous replication, as the rows do: wait for both
        _wait(lambda: _pg_logs_in(replica, "clerk", "it's a secret", "books"))
        with _pg(replica, "clerk", "it's a secret", "books") as db:
            _wait(lambda: db.execute("SELECT count(*) FROM entries").fetchone()[0] == 2)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                db.execute("INSERT INTO entries VALUES (3, 1)")
    with pytest.raises(psycopg.OperationalError):
        _pg(cluster.primary, "clerk", "wrong", "books").close()

    record = runner.backup_cluster("ledger").wait(TIMEOUT)
    runner.restore_backup(record.name, "ledger-copy", size=1).wait(TIMEOUT)
    copy = runner.store.get_cluster("ledger-copy")
    manager.create_user(copy.primary, "clerk", "new password", database="books")
    with _pg(copy.primary, "clerk", "new password", "books") as db:
        assert db.execute("SELECT sum(amount) FROM entries").fetchone()[0] == 60
    runner.destroy_cluster("ledger").wait(TIMEOUT)
    runner.destroy_cluster("ledger-copy").wait(TIMEOUT)
    assert_nothing_left(runner)


# -- failures, cancellation, perform ------------------------------------------------------------------
class SecondNodeFailsManager(RedisManager):
    """Starts its server like Redis, then fails on the second node: something is running to clean up."""

    def prepare(self, instance, primary=None, log=None):
        super().prepare(instance, primary, log)
        if instance.index == 1:
            raise ManagerError("disk on fire on the second node", instance=instance.name)

    @property
    def name(self) -> str:
        return "redis"  # its templates are Redis's


@pytest.mark.parametrize("provider", ["static", "local"])
def test_failure_in_the_middle_of_a_create_cleans_up_everything(provider, clusters_settings, static_pool):
    managers = dict(clusters_settings.datastore_managers,
                    flaky=f"{__name__}:SecondNodeFailsManager")
    settings = clusters_settings.replace(datastore_managers=managers, static_hosts=static_pool)
    with running_clusters(settings) as runner:
        runner.store.add_datastore("flaky", "7")
        started: list[tuple[str, int]] = []
        runner.store.add_listener(lambda e: e.kind == "instance_changed" and e.args[0].port
                                  and started.append((e.args[0].addr, e.args[0].port)))
        handle = runner.create_cluster("doomed", "flaky-7", size=3, provider=provider)
        with pytest.raises(ManagerError, match="disk on fire"):
            handle.wait(TIMEOUT)
        cluster = runner.store.get_cluster("doomed")
        assert cluster.status == "error"
        assert "doomed-2" in cluster.message and "disk on fire on the second node" in cluster.message
        second = cluster.instances[1]
        assert second.status == "error" and "prepare: disk on fire" in second.message
        assert all(i.status == "error" and i.server == "" for i in cluster.instances)
        assert runner.store.get_task(handle.task_id).status == "failed"
        assert "disk on fire" in handle.log
        assert started, "servers were started before the failure"
        assert [p for p in set(started) if port_open(*p)] == []
        assert_nothing_left(runner)
        # the failed cluster can be destroyed (nothing is left to stop) and its name reused
        runner.destroy_cluster("doomed").wait(TIMEOUT)
        assert runner.store.clusters() == []


class GatedManager(RedisManager):
    """Waits at prepare until the test opens the gate, so a cancel lands between two steps."""

    gate = threading.Event()
    waiting = threading.Event()

    def prepare(self, instance, primary=None, log=None):
        super().prepare(instance, primary, log)
        type(self).waiting.set()
        assert type(self).gate.wait(60)

    @property
    def name(self) -> str:
        return "redis"


def test_cancelled_create_stops_and_cleans_up(clusters_settings):
    managers = dict(clusters_settings.datastore_managers, gated=f"{__name__}:GatedManager")
    with running_clusters(clusters_settings.replace(datastore_managers=managers)) as runner:
        runner.store.add_datastore("gated", "7")
        handle = runner.create_cluster("halted", "gated-7", size=2)
        assert GatedManager.waiting.wait(60)
        handle.cancel()
        GatedManager.gate.set()
        with pytest.raises(TaskCancelled):
            handle.wait(TIMEOUT)
        cluster = runner.store.get_cluster("halted")
        assert (cluster.status, cluster.message) == ("error", "cancelled")
        assert runner.store.get_task(handle.task_id).status == "cancelled"
        assert_nothing_left(runner)


def test_perform_streams_output_and_every_command_goes_through_the_prefix(clusters_settings, static_pool):
    # the prefix wraps every command of the build too: the cluster only works if it is honoured
    settings = clusters_settings.replace(provider="static", static_hosts=static_pool,
                                         command_prefix="env WB_PREFIXED=%(name)s ")
    with running_clusters(settings) as runner:
        runner.create_cluster("ops", "redis-7", size=2).wait(TIMEOUT)
        seen: list[tuple[str, str]] = []
        handle = runner.perform("ops", "hello", "echo prefixed for $WB_PREFIXED", "echo 'two words'",
                                on_output=lambda instance, line: seen.append((instance, line)))
        results = handle.wait(60)
        assert results["ops-1"][0] == "prefixed for ops-1\n" and results["ops-2"][0] == "prefixed for ops-2\n"
        assert ("ops-1", "two words") in seen and ("ops-2", "two words") in seen
        assert "run: echo 'two words'" in handle.log and "out: two words" in handle.log
        with pytest.raises(CommandError) as info:
            runner.perform("ops-1", "fails", "echo partial; exit 4").wait(60)
        assert info.value.fields["exit_status"] == 4
        runner.destroy_cluster("ops").wait(TIMEOUT)
        assert_nothing_left(runner)


def test_retries_repeat_connection_failures_only(clusters_runner):
    attempts: list[str] = []

    def blip_then_ok(ctx):
        def action():
            attempts.append("try")
            if len(attempts) < 2:
                raise ConnectionFailed("network blip", host="db1", port=22)
            return "ok"
        return ctx.retry(action, "connect")

    handle = clusters_runner.submit("blip", blip_then_ok)
    assert handle.wait(60) == "ok" and len(attempts) == 2
    assert "connect: network blip" in handle.log and "retrying" in handle.log

    def refused(ctx):
        def action():
            attempts.append("refused")
            raise UnknownHostKeyError("unknown host key", host="db1", port=22)
        return ctx.retry(action, "connect")

    with pytest.raises(UnknownHostKeyError):
        clusters_runner.submit("refused", refused).wait(60)
    assert attempts.count("refused") == 1  # a refused host key is never tried again


# -- helpers -----------------------------------------------------------------------------------------
def _wait(condition, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _count(cursor, query: str) -> int:
    cursor.execute(query)
    return cursor.fetchone()[0]


def _mysql(instance, user, password, database, admin=None):
    if admin is not None:  # read the restored table as root, through the manager on the host
        runner, cluster = admin
        manager = runner.manager_for(cluster.datastore)

        class Rows:
            def __enter__(self):
                with runner.connect(instance) as conn:
                    _wait(lambda: "teapot" in manager.sql(conn, instance, "SELECT name FROM orders.items"
                                                          " ORDER BY name"))
                    out = manager.sql(conn, instance, "SELECT name FROM orders.items ORDER BY name")
                return [tuple(line.split("\t")) for line in out.splitlines()]

            def __exit__(self, *exc):
                return False
        return Rows()
    return pymysql.connect(host=instance.addr, port=instance.port, user=user, password=password,
                           database=database, autocommit=True, connect_timeout=10)


def _pg(instance, user, password, database):
    return psycopg.connect(host=instance.addr, port=instance.port, user=user, password=password,
                           dbname=database, autocommit=True, connect_timeout=10)


def _pg_logs_in(instance, user, password, database) -> bool:
    try:
        _pg(instance, user, password, database).close()
    except psycopg.OperationalError:
        return False
    return True


def test_volumes_hold_the_data_and_go_with_the_cluster(clusters_settings):
    with running_clusters(clusters_settings.replace(use_volumes=True)) as runner:
        runner.create_cluster("vol", "postgresql-15", size=1).wait(TIMEOUT)
        primary = runner.store.get_cluster("vol").primary
        data = Path(primary.directory) / "data"
        assert primary.volume and data.is_symlink() and data.resolve() == Path(primary.volume).resolve()
        assert (Path(primary.volume) / "PG_VERSION").is_file()  # initdb wrote onto the volume
        runner.destroy_cluster("vol").wait(TIMEOUT)
        assert not Path(primary.volume).exists()
        assert_nothing_left(runner)


def test_verification_fails_for_a_replica_that_stopped_following(static_runner):
    # each replica polls on its own host for a token written on the primary after it started
    runner = static_runner
    runner.create_cluster("check", "redis-7", size=3).wait(TIMEOUT)
    cluster = runner.store.get_cluster("check")
    manager = runner.manager_for(cluster.datastore)
    token = manager.verify_replication(cluster.primary, cluster.replicas, timeout=30)
    for replica in cluster.replicas:
        assert redis.Redis(replica.addr, replica.port).get("workbench:replication-check").decode() == token
    stray = cluster.replicas[1]
    redis.Redis(stray.addr, stray.port).execute_command("REPLICAOF", "NO", "ONE")
    with pytest.raises(ManagerError) as info:
        manager.verify_replication(cluster.primary, cluster.replicas, timeout=1)
    assert info.value.fields["instance"] == stray.name and "did not receive" in info.value.message
    assert "role:master" in info.value.message  # the replica's own account of its state
    runner.destroy_cluster("check").wait(TIMEOUT)
    assert_nothing_left(runner)


def test_a_replica_follows_in_its_install_step_when_the_primary_answers(clusters_runner):
    runner = clusters_runner
    runner.create_cluster("early", "redis-7", size=1).wait(TIMEOUT)
    handle = runner.add_nodes("early", 1)
    handle.wait(TIMEOUT)
    cluster = runner.store.get_cluster("early")
    replica = cluster.replicas[0]
    assert f"[{replica.name}] redis-server answers on {replica.addr}:{replica.port}; replicating from early-1" \
        in handle.log
    assert f"[{replica.name}] replicate\n" not in handle.log + "\n"  # no step of its own
    info = redis.Redis(replica.addr, replica.port).info("replication")
    assert info["role"] == "slave" and info["master_port"] == cluster.primary.port
    assert "replicaof" in Path(replica.directory, "config").read_text()  # CONFIG REWRITE: kept on restart

    # a primary that does not answer: the install step gives up waiting soon and the follow step
    # comes after; here the verification then fails and the new node is removed
    manager = runner.manager_for(cluster.datastore)
    manager.stop(cluster.primary)
    handle = runner.add_nodes("early", 1)
    with pytest.raises(CommandError, match="Connection refused"):  # the write on the stopped primary
        handle.wait(TIMEOUT)
    assert "early-1 not up yet" in handle.log and "] replicate\n" in handle.log
    assert [i.name for i in runner.store.get_cluster("early").instances] == ["early-1", "early-2"]
    manager.start(cluster.primary)
    runner.destroy_cluster("early").wait(TIMEOUT)
    assert_nothing_left(runner)
