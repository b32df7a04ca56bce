"""The Trove v1.0 API driven by the real python-troveclient, over HTTP, building real clusters."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psycopg
import pymysql
import pytest
import redis
from keystoneauth1 import exceptions as ks_errors
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import v3
from troveclient import exceptions as trove_errors
from troveclient.v1 import client as trove_client

from workbench.clusters.api import ClustersApi
from workbench.clusters.models import ClusterStore
from workbench.testing.clusters import clusters_settings, running_clusters, static_pool  # noqa: F401
from workbench.testing.openstack import OpenStackStandIn
from workbench.testing.process import processes_mentioning
from workbench.testing.readme import run_by
from workbench.testing.stack import RunningStack

TOKEN = "trove-token-for-tests"
PROJECT = "demo"
TIMEOUT = 240.0


@pytest.fixture(autouse=True)
def _client_cache(tmp_path, monkeypatch):
    # troveclient keeps a completion cache of ids: in the test's directory, not the home directory
    monkeypatch.setenv("TROVECLIENT_UUID_CACHE_DIR", str(tmp_path / "troveclient"))


@pytest.fixture
def runner(clusters_settings):
    with running_clusters(clusters_settings.replace(max_cluster_size=3)) as made:
        yield made


@pytest.fixture
def api(runner):
    server = ClustersApi(runner.store, runner, token=TOKEN).start()
    yield server
    server.stop()


def trove_of(api: ClustersApi, token: str = TOKEN) -> trove_client.Client:
    """troveclient as its users build it, with a token and an endpoint instead of a Keystone catalog."""
    auth = token_endpoint.Token(f"{api.url}/v1.0/{PROJECT}", token)
    return trove_client.Client(session=ks_session.Session(auth=auth))


@pytest.fixture
def trove(api):
    return trove_of(api)


def until(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.2)


def settled(trove: trove_client.Client, ref: str) -> Any:
    """The cluster once no task runs on it; its instances must then be active."""
    cluster = until(lambda: trove.clusters.get(ref), lambda c: c.task["name"] == "NONE")
    assert [i["status"] for i in cluster.instances] == ["ACTIVE"] * len(cluster.instances), cluster._info
    return cluster


def redis_of(instance: dict[str, Any]) -> redis.Redis:
    return redis.Redis(host=instance["ip"][0], port=instance["port"], socket_timeout=5, decode_responses=True)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- what the stack offers --------------------------------------------------------------------------
def test_datastores_versions_flavors_and_limits(trove, runner):
    datastores = {d.name: d for d in trove.datastores.list()}
    assert set(datastores) == {"redis", "mysql", "postgresql"}
    redis_ds = trove.datastores.get("redis")
    [version] = trove.datastore_versions.list("redis")
    assert (version.name, version.datastore, version.active) == ("7", "redis", True)
    assert redis_ds.default_version == version.id and redis_ds.versions[0]["name"] == "7"
    assert trove.datastore_versions.get("redis", "7").id == version.id
    assert trove.datastore_versions.get_by_uuid(version.id).name == "7"

    # the local provider's one flavor; its id is not a number, so Trove's client reads str_id
    [flavor] = trove.flavors.list()
    local = runner.provider_for("local").flavors()[0]
    assert (flavor.id, flavor.name, flavor.vcpus) == ("local", "local", local["vcpus"])
    assert trove.flavors.get("local").name == "local"
    assert [f.name for f in trove.flavors.list_datastore_version_associated_flavors("redis", version.id)] == ["local"]

    [absolute] = trove.limits.list()
    assert absolute.verb == "ABSOLUTE" and absolute.max_cluster_size == 3

    with pytest.raises(trove_errors.NotFound, match="Datastore 'cassandra' cannot be found"):
        trove.datastore_versions.list("cassandra")
    with pytest.raises(trove_errors.NotFound, match="Datastore version '6' cannot be found"):
        trove.datastore_versions.get("redis", "6")
    with pytest.raises(trove_errors.NotFound):
        trove.flavors.get("m1.huge")


# -- a Redis cluster's life through troveclient ------------------------------------------------------
def test_create_show_grow_shrink_and_delete_a_redis_cluster(trove, runner):
    created = trove.clusters.create("cache", "redis", "7", instances=[{"flavorRef": "local"}] * 2)
    assert created.name == "cache" and created.task["name"] == "BUILDING"
    assert created.datastore == {"type": "redis", "version": "7"}
    assert [i["type"] for i in created.instances] == ["primary", "replica"]

    cluster = settled(trove, created.id)
    assert cluster.task == {"id": 1, "name": "NONE", "description": "No tasks for the cluster."}
    primary, replica = cluster.instances
    assert primary["flavor"]["id"] == "local" and len(cluster.ip) == 2
    with redis_of(primary) as writer, redis_of(replica) as reader:
        writer.set("tea", "sencha")
        until(lambda: reader.get("tea"), lambda v: v == "sencha", 30)
    # found by name too, as `openstack database cluster show cache` looks it up
    assert trove.clusters.get("cache").id == cluster.id
    assert [c.name for c in trove.clusters.list()] == ["cache"]
    assert trove.clusters.list()[0].task["name"] == "NONE"

    # the nodes as Trove instances: clustered, so listed only when asked for
    assert trove.instances.list() == []
    nodes = {i.name: i for i in trove.instances.list(include_clustered=True)}
    assert set(nodes) == {"cache-1", "cache-2"}
    shown = trove.instances.get(replica["id"])
    assert shown.status == "ACTIVE" and shown.cluster_id == cluster.id
    assert shown.replica_of["id"] == primary["id"] and shown.datastore["type"] == "redis"

    # grow: the task says so at once; the new replica has the data
    grown = trove.clusters.grow(cluster.id, instances=[{"flavorRef": "local"}])
    assert grown.task["name"] == "GROWING_CLUSTER"
    with pytest.raises(trove_errors.UnprocessableEntity, match="current cluster task is 'GROWING_CLUSTER'"):
        trove.clusters.delete(cluster.id)
    cluster = settled(trove, cluster.id)
    assert [i["name"] for i in cluster.instances] == ["cache-1", "cache-2", "cache-3"]
    third = cluster.instances[2]
    with redis_of(third) as reader:
        until(lambda: reader.get("tea"), lambda v: v == "sencha", 30)

    # above max_cluster_size: refused, nothing added
    with pytest.raises(trove_errors.BadRequest, match="at most 3 nodes"):
        trove.clusters.grow(cluster.id, instances=[{"flavorRef": "local"}])
    # the primary stays
    with pytest.raises(trove_errors.BadRequest, match="is the primary"):
        trove.clusters.shrink(cluster.id, instances=[{"id": primary["id"]}])

    # shrink: the third node's server goes, the rest keep replicating
    shrunk = trove.clusters.shrink(cluster.id, instances=[{"id": third["id"]}])
    assert shrunk.task["name"] in ("SHRINKING_CLUSTER", "NONE")
    cluster = settled(trove, cluster.id)
    assert [i["name"] for i in cluster.instances] == ["cache-1", "cache-2"]
    assert not port_open(third["ip"][0], third["port"])
    with pytest.raises(trove_errors.NotFound):
        trove.instances.get(third["id"])
    with redis_of(primary) as writer, redis_of(replica) as reader:
        writer.set("tea", "gyokuro")
        until(lambda: reader.get("tea"), lambda v: v == "gyokuro", 30)

    trove.clusters.delete(cluster.id)
    until(lambda: [c.name for c in trove.clusters.list()], lambda names: names == [])
    with pytest.raises(trove_errors.NotFound, match=f"Cluster '{cluster.id}' cannot be found"):
        trove.clusters.get(cluster.id)
    assert not port_open(primary["ip"][0], primary["port"])


def test_a_single_instance_created_restarted_and_deleted(trove, runner):
    created = trove.instances.create("solo", "local", volume={"size": 1}, datastore="redis")
    assert (created.name, created.status, created.datastore["version"]) == ("solo", "BUILD", "7")
    # a one-node cluster underneath, named as the instance
    assert [i.name for i in runner.store.get_cluster("solo").instances] == ["solo-1"]
    instance = until(lambda: trove.instances.get(created.id), lambda i: i.status == "ACTIVE")
    [listed] = trove.instances.list()
    assert listed.name == "solo" and not hasattr(listed, "replica_of")
    detail = trove.instances.list(detailed=True)[0]
    assert detail.created and detail.datastore["version_number"] == "7"

    with redis_of(instance._info) as client:
        before = client.info("server")["process_id"]
    trove.instances.restart(instance.id)
    until(lambda: trove.instances.get(instance.id), lambda i: i.status == "ACTIVE")
    until(lambda: runner.store.tasks("solo")[-1].status, lambda status: status == "done")
    with redis_of(instance._info) as client:
        assert client.info("server")["process_id"] != before
    with pytest.raises(trove_errors.HttpNotImplemented, match="Resizing is not supported"):
        trove.instances.resize_instance(instance.id, "local")
    with pytest.raises(trove_errors.HttpNotImplemented, match="redis has no databases or users"):
        trove.databases.list(instance.id)

    trove.instances.delete(instance.id)
    until(lambda: trove.instances.list(include_clustered=True), lambda found: found == [])
    assert not port_open(instance.ip[0], instance.port)


# -- backups and restores -----------------------------------------------------------------------------
def test_back_up_an_instance_restore_it_and_delete_the_backup(trove, runner):
    solo = trove.instances.create("solo", "local", datastore="redis", datastore_version="7")
    solo = until(lambda: trove.instances.get(solo.id), lambda i: i.status == "ACTIVE")
    with redis_of(solo._info) as client:
        client.set("tea", "hojicha")

    backup = trove.backups.create("nightly", solo.id)
    assert backup.name == "nightly" and backup.status in ("NEW", "BUILDING", "COMPLETED")
    assert backup.instance_id == solo.id and backup.datastore["type"] == "redis"
    backup = until(lambda: trove.backups.get(backup.id), lambda b: b.status == "COMPLETED")
    assert backup.size > 0 and backup.locationRef
    assert [b.name for b in trove.backups.list()] == ["nightly"]
    assert [b.name for b in trove.instances.backups(solo.id)] == ["nightly"]
    assert [b.name for b in trove.backups.list(datastore="mysql")] == []
    with pytest.raises(trove_errors.BadRequest, match="a backup named nightly exists"):
        trove.backups.create("nightly", solo.id)

    # restored into a new instance: the data is there
    copy = trove.instances.create("copy", "local", datastore="redis", restorePoint={"backupRef": backup.id})
    copy = until(lambda: trove.instances.get(copy.id), lambda i: i.status == "ACTIVE")
    with redis_of(copy._info) as client:
        assert client.get("tea") == "hojicha"

    # two one-node clusters now: listed a page at a time, as troveclient pages with limit and marker
    first = trove.instances.list(limit=1)
    # (the marker is the last id of the page: the next one starts after it)
    assert [i.name for i in first] == ["solo"] and first.next == solo.id
    rest = trove.instances.list(limit=1, marker=first.next)
    assert [i.name for i in rest] == ["copy"] and rest.next is None
    first = trove.clusters.list(limit=1)
    assert [c.name for c in first] == ["solo"] and first.next
    rest = trove.clusters.list(limit=1, marker=first.next)
    assert [c.name for c in rest] == ["copy"] and rest.next is None

    trove.backups.delete(backup.id)
    with pytest.raises(trove_errors.NotFound, match=f"Backup '{backup.id}' cannot be found"):
        trove.backups.get(backup.id)
    assert not Path(backup.locationRef).exists()
    for instance in (solo, copy):
        trove.instances.delete(instance.id)
    until(lambda: runner.store.clusters(), lambda found: found == [])


# -- the `openstack database` commands -------------------------------------------------------------
def openstack(api: ClustersApi, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """python-openstackclient (with troveclient's plugin) pointed at the API with the token alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    command = [str(Path(sys.executable).with_name("openstack")), "--os-auth-type", "admin_token",
               "--os-endpoint", f"{api.url}/v1.0/{PROJECT}", "--os-token", TOKEN, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**env, "HOME": str(home)})


def test_the_openstack_database_commands(api, trove, tmp_path):
    listed = openstack(api, tmp_path, "datastore", "version", "list", "redis", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert [v["Name"] for v in json.loads(listed.stdout)] == ["7"]
    created = openstack(api, tmp_path, "database", "cluster", "create", "cache", "redis", "7",
                        "--instance", "flavor=local,volume=1", "--instance", "flavor=local,volume=1", "-f", "json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["task_name"] == "BUILDING"
    settled(trove, "cache")
    shown = openstack(api, tmp_path, "database", "cluster", "show", "cache", "-f", "json")
    assert shown.returncode == 0, shown.stderr
    shown_fields = json.loads(shown.stdout)
    assert (shown_fields["task_name"], shown_fields["instance_count"], shown_fields["datastore"]) == ("NONE", 2, "redis")
    deleted = openstack(api, tmp_path, "database", "cluster", "delete", "cache")
    assert deleted.returncode == 0, deleted.stderr
    until(lambda: trove.clusters.list(), lambda found: found == [])
    missing = openstack(api, tmp_path, "database", "cluster", "show", "cache")
    assert missing.returncode == 1 and "No cluster with a name or ID of 'cache' exists" in missing.stderr


def test_log_in_at_the_identity_endpoint_with_the_token_as_password(api, trove, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    login = ["--os-auth-url", f"{api.url}/identity/v3", "--os-username", "admin", "--os-project-name", PROJECT,
             "--os-user-domain-name", "Default", "--os-project-domain-name", "Default"]
    command = [str(Path(sys.executable).with_name("openstack")), *login]
    listed = subprocess.run([*command, "--os-password", TOKEN, "datastore", "list", "-f", "json"],
                            capture_output=True, text=True, timeout=120, env={**env, "HOME": str(tmp_path)})
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["Name"] for d in json.loads(listed.stdout)) == ["mysql", "postgresql", "redis"]
    refused = subprocess.run([*command, "--os-password", "wrong-password", "database", "cluster", "list"],
                             capture_output=True, text=True, timeout=120, env={**env, "HOME": str(tmp_path)})
    assert refused.returncode == 1 and "requires authentication" in refused.stderr

    # keystoneauth's own password plugin, as every OpenStack client library takes it
    auth = v3.Password(auth_url=f"{api.url}/identity/v3", username="admin", password=TOKEN, project_name=PROJECT,
                       user_domain_name="Default", project_domain_name="Default")
    session = ks_session.Session(auth=auth)
    assert session.get_endpoint(service_type="database", interface="public") == f"{api.url}/v1.0/{PROJECT}"
    client = trove_client.Client(session=session)
    assert [d.name for d in client.datastores.list()] == [d.name for d in trove.datastores.list()]
    # the token method too, for a client that holds the token already
    by_token = v3.Token(auth_url=f"{api.url}/identity/v3", token=TOKEN, project_name="other",
                        project_domain_name="Default")
    assert ks_session.Session(auth=by_token).get_endpoint(service_type="database") == f"{api.url}/v1.0/other"
    with pytest.raises(ks_errors.Unauthorized):
        ks_session.Session(auth=v3.Token(auth_url=f"{api.url}/identity/v3", token="not-the-token",
                                         project_name=PROJECT, project_domain_name="Default")).get_token()
    # validation: the token checks itself
    check = urllib.request.Request(f"{api.url}/identity/v3/auth/tokens",
                                   headers={"X-Auth-Token": TOKEN, "X-Subject-Token": TOKEN})
    with urllib.request.urlopen(check, timeout=30) as reply:
        assert reply.headers["X-Subject-Token"] == TOKEN and json.load(reply)["token"]["catalog"]
    check = urllib.request.Request(f"{api.url}/identity/v3/auth/tokens",
                                   headers={"X-Auth-Token": TOKEN, "X-Subject-Token": "not-the-token"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(check, timeout=30)
    assert caught.value.code == 404 and json.loads(caught.value.read())["error"]["title"] == "Not Found"


# -- `workbench up` ----------------------------------------------------------------------------------
def readme_session() -> tuple[str, list[str]]:
    """(the LOGIN= line, the openstack commands) of the README's "Trove's clients" session."""
    [block] = run_by(__file__)
    assert block.lang == "bash"
    lines = block.lines()
    assert lines[0].startswith("LOGIN=") and all(line.startswith("openstack ") for line in lines[1:])
    return lines[0], lines[1:]


def test_the_stack_of_workbench_up_serves_trove_clients(tmp_path, known_brokers):
    """Trove clients against `workbench up`: keystoneauth and troveclient, then the README's session
    of `openstack` commands, each run as written (waiting between them where a task runs)."""
    state_dir = tmp_path / "stack"
    stack = RunningStack(state_dir)
    try:
        url, token = stack.endpoints["clusters"]["url"], stack.secrets["clusters"]["token"]
        auth = v3.Password(auth_url=f"{url}/identity/v3", username="admin", password=token, project_name=PROJECT,
                           user_domain_name="Default", project_domain_name="Default")
        trove = trove_client.Client(session=ks_session.Session(auth=auth))
        [flavor] = trove.flavors.list()
        assert flavor.id == "local" and trove.clusters.list() == []
        with pytest.raises(trove_errors.NotFound):
            trove.clusters.get("nope")

        def maxmemory() -> str | None:
            [solo] = trove.instances.list()
            if solo.status != "ACTIVE":
                return None
            try:
                with redis_of(solo._info) as client:
                    return client.config_get("maxmemory")["maxmemory"]
            except redis.ConnectionError:  # restarting
                return None

        # what each command leaves running is waited for before the next one
        waits: dict[str, Callable[[], Any]] = {
            "database instance create": lambda: until(lambda: [i.status for i in trove.instances.list()],
                                                      lambda found: found == ["ACTIVE"]),
            "configuration attach": lambda: until(maxmemory, lambda value: value == "52428800", 60),
            "backup create": lambda: until(lambda: [b.status for b in trove.backups.list()],
                                           lambda found: found == ["COMPLETED"], 60),
            "configuration detach": lambda: until(maxmemory, lambda value: value == "0", 60),
            "instance delete": lambda: until(lambda: trove.instances.list(), lambda found: found == [], 60),
        }
        login, commands = readme_session()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OS_")}, "HOME": str(tmp_path),
               "URL": url, "TOKEN": token, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        outputs = []
        for command in commands:
            done = subprocess.run(["bash", "-c", f"{login}\n{command}"], capture_output=True, text=True,
                                  timeout=120, env=env)
            assert done.returncode == 0, (command, done.stderr)
            outputs.append(done.stdout)
            for what, wait in waits.items():
                if what in command:
                    wait()
        assert "maxmemory" in outputs[2] and "52428800" in outputs[5]  # the parameters; the group's values
        assert "nightly" in outputs[7] and outputs[-1].strip() == ""   # the backup listed; no instance left
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.output)
    for pid in processes_mentioning(str(state_dir)):
        os.kill(pid, signal.SIGKILL)


# -- errors as troveclient exceptions --------------------------------------------------------------
def test_refused_requests_raise_troveclient_exceptions_and_change_nothing(trove, api, runner):
    with pytest.raises(trove_errors.NotFound, match="Cluster 'nope' cannot be found"):
        trove.clusters.get("nope")
    with pytest.raises(trove_errors.NotFound, match="Datastore 'cassandra' cannot be found"):
        trove.clusters.create("ring", "cassandra", "4", instances=[{"flavorRef": "local"}])
    with pytest.raises(trove_errors.NotFound, match="Flavor 'm1.small' cannot be found"):
        trove.clusters.create("cache", "redis", "7", instances=[{"flavorRef": "m1.small"}])
    with pytest.raises(trove_errors.BadRequest, match="name must be 1-48 characters"):
        trove.clusters.create("Not A Name", "redis", "7", instances=[{"flavorRef": "local"}])
    with pytest.raises(trove_errors.BadRequest, match="cluster.instances must be a non-empty list"):
        trove.clusters.create("cache", "redis", "7")
    with pytest.raises(trove_errors.BadRequest, match=r"instances\[1\].flavorRef is required"):
        trove.clusters.create("cache", "redis", "7", instances=[{"flavorRef": "local"}, {}])
    with pytest.raises(trove_errors.BadRequest, match="at most 3 nodes"):
        trove.clusters.create("cache", "redis", "7", instances=[{"flavorRef": "local"}] * 4)
    with pytest.raises(trove_errors.HttpNotImplemented, match="replica_of is not supported"):
        trove.instances.create("copy", "local", datastore="redis", replica_of="1")
    with pytest.raises(trove_errors.NotFound, match="Backup '41' cannot be found"):
        trove.instances.create("copy", "local", datastore="redis", restorePoint={"backupRef": "41"})
    with pytest.raises(trove_errors.NotFound, match="Instance '41' cannot be found"):
        trove.backups.create("nightly", "41")
    with pytest.raises(trove_errors.NotFound, match="Datastore version '6' cannot be found"):
        trove.instances.create("copy", "local", datastore="redis", datastore_version="6")
    assert runner.store.clusters() == []

    # an unknown action, a method the route has not, a route that does not exist
    with pytest.raises(trove_errors.NotFound):
        trove.clusters.reset_status("nope")
    with pytest.raises(trove_errors.MethodNotAllowed):
        trove.client.put("/clusters", body={})
    with pytest.raises(trove_errors.NotFound, match="could not be found"):
        trove.client.get("/no-such-thing")
    # a wrong token
    with pytest.raises(trove_errors.Unauthorized):
        trove_of(api, token="not-the-token").clusters.list()

    # the body of every fault is Trove's, with its code; the old API keeps its own
    request = urllib.request.Request(f"{api.url}/v1.0/{PROJECT}/clusters/nope", headers={"X-Auth-Token": TOKEN})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert json.loads(caught.value.read()) == {"itemNotFound": {"code": 404, "message": "Cluster 'nope' cannot be found."}}
    request = urllib.request.Request(f"{api.url}/api/clusters/nope", headers={"X-Auth-Token": TOKEN})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert json.loads(caught.value.read()) == {"error": "no cluster nope", "kind": "NotFoundError",
                                               "message": "no cluster nope", "fields": {"cluster": "nope"}}


def test_reset_status_releases_a_cluster_left_building(trove, runner):
    # recorded but never built: as after the process building it ended
    runner.store.create_cluster("stuck", "redis-7", size=2)
    stuck = trove.clusters.get("stuck")
    assert stuck.task["name"] == "BUILDING"
    with pytest.raises(trove_errors.UnprocessableEntity, match="current cluster task is 'BUILDING'"):
        trove.clusters.grow(stuck.id, instances=[{"flavorRef": "local"}])
    with pytest.raises(trove_errors.UnprocessableEntity):
        trove.clusters.delete(stuck.id)

    reset = trove.clusters.reset_status(stuck.id)
    assert reset is None  # troveclient's reset_status returns nothing; the cluster shows the change
    stuck = trove.clusters.get("stuck")
    assert stuck.task["name"] == "NONE" and "status reset" in stuck.task["description"]
    assert [i["status"] for i in stuck.instances] == ["ERROR", "ERROR"]
    trove.clusters.delete(stuck.id)
    until(lambda: runner.store.clusters(), lambda found: found == [])


def replica_has_orders(replica: dict[str, Any]) -> bool:
    try:
        with pymysql.connect(host=replica["ip"][0], port=replica["port"], user="shopper", password="pw-shopper",
                             database="orders", connect_timeout=5) as db, db.cursor() as cursor:
            return cursor.execute("SHOW DATABASES LIKE 'orders'") == 1
    except pymysql.err.OperationalError:  # the account is not there yet
        return False


def max_connections(instance: dict[str, Any]) -> int | None:
    """``SHOW VARIABLES LIKE 'max_connections'`` on a MariaDB node, as its user shopper (None while it
    restarts)."""
    try:
        with pymysql.connect(host=instance["ip"][0], port=instance["port"], user="shopper", password="pw-shopper",
                             connect_timeout=5) as db, db.cursor() as cursor:
            cursor.execute("SHOW VARIABLES LIKE 'max_connections'")
            return int(cursor.fetchone()[1])
    except pymysql.err.OperationalError:
        return None


def test_postgresql_databases_and_users_over_ssh(clusters_settings, static_pool):
    """A PostgreSQL cluster through troveclient: databases and users on its primary, a backup of it
    restored into a new instance, grown by a replica that has the data, shrunk again."""
    settings = clusters_settings.replace(provider="static", static_hosts=static_pool)
    with running_clusters(settings) as runner, ClustersApi(runner.store, runner, token=TOKEN) as api:
        trove = trove_of(api)
        created = trove.clusters.create("ledger", "postgresql", "15", instances=[{"flavorRef": "host1"}] * 2)
        cluster = settled(trove, created.id)
        ledger = trove.instances.get(cluster.instances[0]["id"])
        assert ledger.type == "primary" and ledger.replicas[0]["id"] == cluster.instances[1]["id"]
        trove.databases.create(ledger.id, [{"name": "books"}])
        trove.users.create(ledger.id, [{"name": "clerk", "password": "pw-clerk", "databases": [{"name": "books"}]}])
        assert [d.name for d in trove.databases.list(ledger.id)] == ["books"]
        assert [(u.name, u.databases) for u in trove.users.list(ledger.id)] == [("clerk", [{"name": "books"}])]
        with psycopg.connect(host=ledger.ip[0], port=ledger.port, user="clerk", password="pw-clerk", dbname="books",
                             connect_timeout=10) as db:
            assert db.execute("SELECT current_user").fetchone() == ("clerk",)
            db.execute("CREATE TABLE entries (what text)")
            db.execute("INSERT INTO entries VALUES ('tea')")

        # a configuration group: work_mem set by a reload (no restart needed), seen by a new session
        group = trove.configurations.create("roomy", json.dumps({"work_mem": 8192}), datastore="postgresql")
        trove.instances.update(ledger.id, configuration=group.id)

        def work_mem() -> str:
            with psycopg.connect(host=ledger.ip[0], port=ledger.port, user="clerk", password="pw-clerk",
                                 dbname="books", connect_timeout=10) as db:
                return db.execute("SHOW work_mem").fetchone()[0]

        until(work_mem, lambda value: value == "8MB", 60)

        # backed up and restored into a new instance: the database and its table are there
        backup = trove.backups.create("ledger-nightly", ledger.id)
        backup = until(lambda: trove.backups.get(backup.id), lambda b: b.status == "COMPLETED")
        assert backup.datastore["type"] == "postgresql" and backup.cluster_name == "ledger"
        copy = trove.instances.create("copy", "host2", datastore="postgresql", datastore_version="15",
                                      restorePoint={"backupRef": backup.id})
        copy = until(lambda: trove.instances.get(copy.id), lambda i: i.status == "ACTIVE")
        assert [d.name for d in trove.databases.list(copy.id)] == ["books"]
        assert [u.name for u in trove.users.list(copy.id)] == ["clerk"]

        # grown: the new replica has the data; shrunk: it goes
        trove.clusters.grow(cluster.id, instances=[{"flavorRef": "host3"}])
        cluster = settled(trove, cluster.id)
        third = cluster.instances[2]
        with psycopg.connect(host=third["ip"][0], port=third["port"], user="clerk", password="pw-clerk",
                             dbname="books", connect_timeout=10) as db:
            assert db.execute("SELECT what FROM entries").fetchall() == [("tea",)]
        trove.clusters.shrink(cluster.id, instances=[{"id": third["id"]}])
        cluster = settled(trove, cluster.id)
        assert len(cluster.instances) == 2 and not port_open(third["ip"][0], third["port"])

        # the database first: clerk owns a table in it, which PostgreSQL does not drop with the role
        trove.databases.delete(ledger.id, "books")
        trove.users.delete(ledger.id, "clerk")
        assert trove.users.list(ledger.id) == [] and trove.databases.list(ledger.id) == []
        trove.clusters.delete(cluster.id)
        trove.instances.delete(copy.id)
        trove.backups.delete(backup.id)
        until(lambda: runner.store.clusters(), lambda found: found == [])
        # the instances it was attached to are gone, and so are their attachments
        trove.configurations.delete(group.id)


# -- flavors of a cloud ------------------------------------------------------------------------------
def test_flavors_are_the_clouds_and_a_cluster_is_built_with_the_configured_one(clusters_settings, tmp_path):
    with OpenStackStandIn(password="cloud-pw") as cloud:
        settings = clusters_settings.replace(
            provider="openstack", os_auth_url=cloud.auth_url, os_username=cloud.username, os_password=cloud.password,
            os_project_id=cloud.project_id, os_flavor="m1.small")
        with ClusterStore(f"sqlite:///{tmp_path / 'cloud.db'}", settings) as store, \
                ClustersApi(store, token=TOKEN) as api:
            version = store.add_datastore("mysql", "8", image="ubuntu-22.04")
            trove = trove_of(api)
            flavors = trove.flavors.list()
            # numeric ids, as Trove gives them
            assert [(f.id, f.name) for f in flavors] == [(1, "m1.tiny"), (2, "m1.small"), (3, "m1.medium")]
            assert trove.flavors.get(2).ram == 2048
            fitting = trove.flavors.list_datastore_version_associated_flavors("mysql", str(version.id))
            assert [f.name for f in fitting] == ["m1.small", "m1.medium"]
            with pytest.raises(trove_errors.BadRequest, match="not the one provider openstack builds servers with"):
                trove.clusters.create("shop", "mysql", "8", instances=[{"flavorRef": "1"}])
            with pytest.raises(trove_errors.NotFound, match="Flavor 'm1.huge' cannot be found"):
                trove.clusters.create("shop", "mysql", "8", instances=[{"flavorRef": "m1.huge"}])
            assert store.clusters() == [] and cloud.servers == {}


# -- MariaDB over SSH (the static pool of the session's sshd) --------------------------------------
def test_a_mariadb_cluster_over_ssh(clusters_settings, static_pool):
    settings = clusters_settings.replace(provider="static", static_hosts=static_pool)
    with running_clusters(settings) as runner, ClustersApi(runner.store, runner, token=TOKEN) as api:
        trove = trove_of(api)
        # the pool's hosts are its flavors; the pool places servers as it always does
        assert [f.id for f in trove.flavors.list()] == ["host1", "host2", "host3"]
        created = trove.clusters.create("shop", "mysql", "10.11", instances=[{"flavorRef": "host1"}] * 2)
        cluster = settled(trove, created.id)
        primary, replica = cluster.instances
        assert trove.instances.get(primary["id"]).replicas[0]["id"] == replica["id"]
        # a node of a cluster goes with its cluster only
        with pytest.raises(trove_errors.HttpNotImplemented, match="part of a cluster"):
            trove.instances.delete(replica["id"])
        # databases and users through Trove's calls: made on the primary, they reach the replica
        trove.databases.create(replica["id"], [{"name": "orders"}, {"name": "audit"}])
        trove.users.create(primary["id"], [{"name": "shopper", "password": "pw-shopper",
                                            "databases": [{"name": "orders"}]}])
        assert [d.name for d in trove.databases.list(primary["id"])] == ["audit", "orders"]
        assert [(u.name, u.host, u.databases) for u in trove.users.list(primary["id"])] == [
            ("shopper", "%", [{"name": "orders"}])]
        until(lambda: replica_has_orders(replica), bool, 30)

        # a configuration group changes the running server: max_connections without a restart
        group = trove.configurations.create("roomy", json.dumps({"max_connections": 123}), datastore="mysql")
        trove.instances.update(primary["id"], configuration=group.id)
        until(lambda: max_connections(primary), lambda value: value == 123, 60)
        assert trove.instances.get(primary["id"]).status == "ACTIVE"

        # grown by a replica that has the data, then shrunk
        trove.clusters.grow(cluster.id, instances=[{"flavorRef": "host1"}])
        cluster = settled(trove, cluster.id)
        third = cluster.instances[2]
        until(lambda: replica_has_orders(third), bool, 30)
        trove.clusters.shrink(cluster.id, instances=[{"id": third["id"]}])
        cluster = settled(trove, cluster.id)
        assert len(cluster.instances) == 2 and not port_open(third["ip"][0], third["port"])
        # detached: the template's value again, by a restart (a value dropped is read from the file)
        trove.instances.update(primary["id"], remove_configuration=True)
        until(lambda: max_connections(primary), lambda value: value == 60, 120)
        settled(trove, cluster.id)
        with pytest.raises(trove_errors.BadRequest, match="database must be letters"):
            trove.databases.create(primary["id"], [{"name": "x`; DROP DATABASE mysql; --"}])
        trove.users.delete(primary["id"], "shopper")
        trove.databases.delete(primary["id"], "audit")
        assert trove.users.list(primary["id"]) == [] and [d.name for d in trove.databases.list(primary["id"])] == ["orders"]
        with pytest.raises(trove_errors.NotFound, match="User 'shopper' cannot be found"):
            trove.users.delete(primary["id"], "shopper")
        trove.clusters.delete(cluster.id)
        until(lambda: runner.store.clusters(), lambda found: found == [])
        trove.configurations.delete(group.id)


# -- configuration groups ----------------------------------------------------------------------------
def test_configuration_groups_change_a_running_redis(trove, runner):
    [version] = trove.datastore_versions.list("redis")
    parameters = {p.name: p for p in trove.configuration_parameters.parameters("redis", "7")}
    assert parameters["maxmemory"].type == "integer" and parameters["maxmemory"].min == 0
    assert parameters["databases"].restart_required and not parameters["maxmemory"].restart_required
    assert trove.configuration_parameters.get_parameter_by_version(version.id, "maxclients").max == 100000
    with pytest.raises(trove_errors.BadRequest, match="parameter save is not supported"):
        trove.configurations.create("bad", json.dumps({"save": "60 1"}), datastore="redis")
    with pytest.raises(trove_errors.BadRequest, match="maxclients must be between 1 and 100000"):
        trove.configurations.create("bad", json.dumps({"maxclients": 0}), datastore="redis")
    assert trove.configurations.list() == []

    group = trove.configurations.create("small", json.dumps({"maxmemory": 50 * 1024 ** 2}), description="tiny",
                                        datastore="redis", datastore_version="7")
    assert (group.name, group.values, group.datastore_name) == ("small", {"maxmemory": 52428800}, "redis")
    assert [c.name for c in trove.configurations.list()] == ["small"]

    solo = trove.instances.create("solo", "local", datastore="redis")
    solo = until(lambda: trove.instances.get(solo.id), lambda i: i.status == "ACTIVE")
    with redis_of(solo._info) as client:
        pid = client.info("server")["process_id"]
        assert client.config_get("maxmemory") == {"maxmemory": "0"}

        # attached: the config file has it and the running server took it, without a restart
        trove.instances.modify(solo.id, group.id)
        until(lambda: client.config_get("maxmemory")["maxmemory"], lambda v: v == "52428800")
        until(lambda: runner.store.tasks("solo")[-1].status, lambda status: status == "done")
        assert client.info("server")["process_id"] == pid
        assert trove.instances.get(solo.id).configuration["id"] == group.id
        assert trove.instances.configuration(solo.id).configuration == {"maxmemory": 52428800}
        assert trove.configurations.get(group.id).instance_count == 1
        assert [i.name for i in trove.configurations.instances(group.id)] == ["solo-1"]
        config_file = Path(runner.store.get_instance(int(solo.id)).directory) / "config"
        assert "maxmemory 52428800" in config_file.read_text()
        with pytest.raises(trove_errors.BadRequest, match="attached to instances"):
            trove.configurations.delete(group.id)

        # edited (PATCH merges): applied to the attached instance, live
        trove.configurations.edit(group.id, json.dumps({"maxmemory-policy": "allkeys-lru"}))
        until(lambda: client.config_get("maxmemory-policy")["maxmemory-policy"], lambda v: v == "allkeys-lru")
        assert trove.configurations.get(group.id).values == {"maxmemory": 52428800, "maxmemory-policy": "allkeys-lru"}
        # replaced (PUT): a parameter dropped goes back to the config file's value, by a restart
        trove.configurations.update(group.id, json.dumps({"maxmemory": 60 * 1024 ** 2}))
        until(lambda: trove.instances.get(solo.id).status == "ACTIVE"
              and runner.store.tasks("solo")[-1].status == "done", bool)
    with redis_of(solo._info) as client:
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("maxmemory")["maxmemory"] == "62914560"
        assert client.info("server")["process_id"] != pid

        # detached: the server's config is the template's again
        trove.instances.update(solo.id, remove_configuration=True)
        until(lambda: runner.store.tasks("solo")[-1].status, lambda status: status == "done")
    with redis_of(solo._info) as client:
        assert client.config_get("maxmemory")["maxmemory"] == "0"
    assert "configuration" not in trove.instances.get(solo.id)._info
    # an instance created with a group is built with its values
    other = trove.instances.create("other", "local", datastore="redis", configuration=group.id)
    other = until(lambda: trove.instances.get(other.id), lambda i: i.status == "ACTIVE")
    with redis_of(other._info) as client:
        assert client.config_get("maxmemory")["maxmemory"] == "62914560"
    with pytest.raises(trove_errors.BadRequest, match="attached to instances"):
        trove.configurations.delete(group.id)
    trove.instances.delete(other.id)
    until(lambda: trove.instances.list(), lambda found: [i.name for i in found] == ["solo"])
    trove.configurations.delete(group.id)
    with pytest.raises(trove_errors.NotFound, match=f"Configuration group '{group.id}' cannot be found"):
        trove.configurations.get(group.id)
    trove.instances.delete(solo.id)
    until(lambda: runner.store.clusters(), lambda found: found == [])
