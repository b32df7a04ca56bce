"""Datastore managers: templates looked up version-first, packages detected or clearly missing,
seed-style subclasses, names checked before they reach SQL, start/stop/restart/status."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from workbench.clusters.connection import LocalConnection
from workbench.clusters.errors import ManagerError, ValidationError
from workbench.clusters.managers.base import BaseManager, sql_literal
from workbench.clusters.managers.mysql import MySQLManager
from workbench.clusters.managers.postgresql import PostgresManager
from workbench.clusters.managers.redis import RedisManager
from workbench.clusters.models import Datastore, Instance
from workbench.clusters.settings import Settings
from workbench.testing.clusters import LocalRuntime, clusters_runner, clusters_settings  # noqa: F401


def instance(tmp_path, role="primary", index=0) -> Instance:
    return Instance(name="inst-1", index=index, role=role, addr="127.0.0.1", port=7000, directory=str(tmp_path))


def test_templates_are_looked_up_version_first(tmp_path):
    pg15 = PostgresManager(Datastore(manager="postgresql", version="15"), LocalRuntime())
    pg16 = PostgresManager(Datastore(manager="postgresql", version="16"), LocalRuntime())
    assert pg15.template_names() == ["postgres/15/config", "postgres/config"]
    text15 = pg15.render_config_file(instance(tmp_path), replication_user="r")
    text16 = pg16.render_config_file(instance(tmp_path), replication_user="r")
    assert "15: wal_keep_size replaces" in text15 and "15: wal_keep_size" not in text16
    assert f"data_directory = '{tmp_path}/data'" in text16 and "port = 7000" in text16
    redis_text = RedisManager(Datastore(manager="redis", version="7"), LocalRuntime()).render_config_file(
        instance(tmp_path, "replica", 1), primary=instance(tmp_path))
    assert "replicaof 127.0.0.1 7000" in redis_text
    mysql_text = MySQLManager(Datastore(manager="mysql", version="10.11"), LocalRuntime()).render_config_file(
        instance(tmp_path, "replica", 2))
    assert "server-id = 3" in mysql_text and "read-only = ON" in mysql_text


class MyBackyardDBManager(BaseManager):
    """The seed's example: a subclass that overrides the name and backup."""

    def backup(self, instance, destination):
        with self.connection(instance) as conn:
            conn.run_shell(f"echo backyard > {destination}/backup.txt")
        return destination / "backup.txt"

    @property
    def name(self):
        return "ClassNameOverriddenDB"


def test_seed_style_subclass(tmp_path):
    manager = MyBackyardDBManager(Datastore(manager="backyard", version="1"), LocalRuntime())
    assert manager.name == "ClassNameOverriddenDB"
    assert RedisManager(Datastore(manager="redis", version="7")).name == "redis"
    assert MySQLManager(Datastore(manager="mysql", version="8")).name == "mysql"
    assert manager.backup(instance(tmp_path), tmp_path).read_text() == "backyard\n"
    with pytest.raises(ManagerError) as info:
        manager.render_config_file(instance(tmp_path))
    assert info.value.fields["templates"] == ["ClassNameOverriddenDB/1/config", "ClassNameOverriddenDB/config"]


def test_prepare_detects_installed_packages():
    conn = LocalConnection()
    for cls, manager_name, version in ((RedisManager, "redis", "7"), (MySQLManager, "mysql", "10.11"),
                                       (PostgresManager, "postgresql", "15")):
        manager = cls(Datastore(manager=manager_name, version=version, packages=""), LocalRuntime())
        found = manager.ensure_packages(conn)
        assert set(found) == set(cls.required_binaries), manager_name
    assert PostgresManager(Datastore(manager="postgresql", version="15"), LocalRuntime()).ensure_packages(
        conn)["initdb"].startswith("/usr/lib/postgresql/15/bin/")


class MissingServerManager(RedisManager):
    required_binaries = ("workbench-no-such-server",)
    package_managers: dict[str, list[str]] = {}


def test_prepare_reports_clearly_when_it_cannot_install(tmp_path):
    datastore = Datastore(manager="redis", version="7", packages="workbench-no-such-package")
    manager = MissingServerManager(datastore, LocalRuntime())
    with pytest.raises(ManagerError) as info:
        manager.prepare(instance(tmp_path))
    assert info.value.fields["missing"] == ["workbench-no-such-server"]
    assert info.value.fields["packages"] == ["workbench-no-such-package"]
    assert "no known package manager" in info.value.message
    turned_off = MissingServerManager(datastore, LocalRuntime(Settings(master_key="m", install_packages=False)))
    with pytest.raises(ManagerError) as info:
        turned_off.prepare(instance(tmp_path))
    assert "install_packages" in info.value.message
    assert not (tmp_path / "config").exists()  # it stopped before touching the instance


def test_names_are_checked_before_they_reach_sql(tmp_path):
    for cls in (MySQLManager, PostgresManager):
        manager = cls(Datastore(manager="x", version="1"), LocalRuntime())
        for bad in ["a;b", "x` OR 1", "1abc", "", "a" * 64, "robert'); DROP TABLE students;--"]:
            with pytest.raises(ValidationError):
                manager.create_database(instance(tmp_path), bad)
            with pytest.raises(ValidationError):
                manager.create_user(instance(tmp_path), bad, "pw")
    with pytest.raises(ValidationError):
        RedisManager(Datastore(manager="redis", version="7"), LocalRuntime()).create_user(
            instance(tmp_path), "app", "has space")
    assert sql_literal("it's a \\ test") == "'it''s a \\\\ test'"


def test_start_stop_restart_status_on_a_local_instance(clusters_runner):
    runner = clusters_runner
    runner.create_cluster("solo", "redis-7", size=1).wait(120)
    cluster = runner.store.get_cluster("solo")
    manager = runner.manager_for(cluster.datastore)
    primary = cluster.primary
    assert manager.status(primary) == "running"
    manager.stop(primary)
    assert manager.status(primary) == "stopped"
    manager.start(primary)
    assert manager.status(primary) == "running"
    pid_before = open(manager.pid_file(primary)).read()
    manager.restart(primary)
    assert manager.status(primary) == "running" and open(manager.pid_file(primary)).read() != pid_before
    runner.destroy_cluster("solo").wait(120)


def test_a_server_that_exited_but_was_not_reaped_counts_as_stopped(tmp_path):
    # A daemon that exits is reparented to the host's init; until init reaps it, it is a zombie,
    # which `kill -0` still finds. Containers often reap late or never.
    manager = RedisManager(Datastore(manager="redis", version="7"), LocalRuntime())
    inst = instance(tmp_path)
    exited = subprocess.Popen(["true"])  # not waited for: a zombie until we reap it below
    try:
        stat = f"/proc/{exited.pid}/stat"
        deadline = time.monotonic() + 30
        while open(stat).read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        pid_file = manager.pid_file(inst)
        os.makedirs(os.path.dirname(pid_file), exist_ok=True)
        with open(pid_file, "w") as f:
            f.write(f"{exited.pid}\n")
        assert manager.status(inst) == "stopped"
        manager.stop(inst)  # returns without waiting for the reaper, and leaves nothing running
        assert manager.status(inst) == "stopped"
    finally:
        exited.wait()
