"""The clusters HTTP API over real HTTP, with the local provider building real Redis clusters."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis

from workbench.clusters.api import ClustersApi
from workbench.clusters.errors import ClustersError, ValidationError
from workbench.clusters.models import ClusterStore
from workbench.clusters.settings import Settings
from workbench.testing.services import traversable_tempdir

TOKEN = "api-token-for-tests"


@pytest.fixture
def settings(tmp_path):
    instances = traversable_tempdir("workbench-clusters-api-")
    yield Settings(state_dir=str(tmp_path / "state"), instances_dir=str(instances), master_key="test-master",
                   max_cluster_size=3, task_retries=1)
    shutil.rmtree(instances, ignore_errors=True)


@pytest.fixture
def store(settings, tmp_path):
    with ClusterStore(f"sqlite:///{tmp_path / 'clusters.db'}", settings) as opened:
        opened.add_datastore("redis", "7")
        yield opened


@pytest.fixture
def api(store):
    server = ClustersApi(store, token=TOKEN).start()
    yield server
    # whatever a failing test left running is destroyed: no redis-server outlives the test
    for cluster in store.clusters():
        try:
            server.runner.destroy_cluster(cluster.name).wait(timeout=120)
        except Exception:  # noqa: BLE001 - best effort; the next one must still go
            pass
    server.stop()


@pytest.fixture
def http() -> urllib.request.OpenerDirector:
    # urllib rather than tornado's blocking HTTPClient: that one runs an event loop on this thread,
    # which fails when another library (the browser tests' Playwright) keeps one running here.
    return urllib.request.build_opener()


def call(http: urllib.request.OpenerDirector, api: ClustersApi, method: str, path: str, body: Any = None, *,
         token: str | None = TOKEN, headers: dict[str, str] | None = None, raw: bytes | None = None
         ) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of one request; error statuses are returned, not raised."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        all_headers.setdefault("Authorization", f"Token {token}")
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if method in ("POST", "PUT") and payload is None:
        payload = b""
    request = urllib.request.Request(api.url + path, data=payload, method=method, headers=all_headers)
    try:
        response = http.open(request, timeout=60)
    except urllib.error.HTTPError as exc:
        response = exc
    with response:
        assert response.headers["Content-Type"].startswith("application/json")
        return response.status, json.loads(response.read() or b"{}")


def wait_for_cluster(http, api, name: str, status: str = "active", timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = call(http, api, "GET", f"/api/clusters/{name}")
        assert code == 200, body
        cluster = body["cluster"]
        if cluster["status"] == status:
            return cluster
        assert cluster["status"] != "error", cluster
        assert time.monotonic() < deadline, f"cluster {name} still {cluster['status']}: {cluster}"
        time.sleep(0.2)


def wait_for_task(http, api, task_id: int, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = call(http, api, "GET", f"/api/tasks/{task_id}")
        assert code == 200, body
        if body["task"]["status"] in ("done", "failed", "cancelled"):
            return body["task"]
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def eventually(read, expected, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"got {value!r}, waited for {expected!r}"
        time.sleep(0.1)


def redis_of(instance: dict[str, Any]) -> redis.Redis:
    return redis.Redis(host=instance["addr"], port=instance["port"], socket_timeout=5, decode_responses=True)


def port_open(instance: dict[str, Any]) -> bool:
    try:
        with socket.create_connection((instance["addr"], instance["port"]), timeout=1):
            return True
    except OSError:
        return False


# -- a cluster's whole life over HTTP ---------------------------------------------------------------
def test_create_grow_back_up_and_destroy_a_redis_cluster(api, http, store):
    code, body = call(http, api, "POST", "/api/clusters",
                      {"name": "cache", "datastore": "redis", "version": "7", "size": 2})
    assert code == 202, body
    assert body["cluster"]["name"] == "cache" and body["cluster"]["datastore"]["name"] == "redis - 7"
    assert [i["role"] for i in body["cluster"]["instances"]] == ["primary", "replica"]
    assert body["task"]["name"] == "create_cluster" and body["task"]["cluster"] == "cache"

    cluster = wait_for_cluster(http, api, "cache")
    primary, replica = cluster["instances"]
    assert all(i["status"] == "active" and i["progress"] == 100 for i in cluster["instances"])
    with redis_of(primary) as writer, redis_of(replica) as reader:
        writer.set("tea", "sencha")
        eventually(lambda: reader.get("tea"), "sencha")
        assert reader.info("replication")["role"] == "slave"

    # one more node: the new replica has the data too
    code, body = call(http, api, "POST", "/api/clusters/cache/nodes", {"count": 1})
    assert code == 202, body
    assert [i["name"] for i in body["instances"]] == ["cache-3"]
    cluster = wait_for_cluster(http, api, "cache")
    assert cluster["size"] == 3 and len(cluster["instances"]) == 3
    with redis_of(cluster["instances"][2]) as third:
        eventually(lambda: third.get("tea"), "sencha")

    # above max_cluster_size: refused with the field's message, nothing added
    code, body = call(http, api, "POST", f"/api/clusters/{cluster['id']}/nodes", {"count": 1})
    assert code == 400 and "at most 3 nodes" in body["fields"]["count"]
    assert len(store.get_cluster("cache").instances) == 3

    # a shell line on every instance, with each one's own port, role, datastore and address
    code, body = call(http, api, "POST", "/api/clusters/cache/perform",
                      {"command": "echo $WB_ROLE $WB_DATASTORE $WB_ADDRESS; "
                                  "redis-cli -p $WB_PORT info replication | grep ^role:"})
    assert code == 202 and body["task"]["name"] == "perform:api", body
    task = wait_for_task(http, api, body["task"]["id"])
    assert task["status"] == "done", task
    outputs = [line.split(" out: ", 1)[1].strip() for line in task["log"].splitlines() if " out: " in line]
    assert outputs == ["primary redis-7 127.0.0.1", "role:master"] + ["replica redis-7 127.0.0.1", "role:slave"] * 2
    code, body = call(http, api, "POST", "/api/clusters/cache/perform", {})
    assert code == 400 and body["fields"] == {"command": "this field is required"}

    # a backup, fetched into the backup directory
    code, body = call(http, api, "POST", "/api/clusters/cache/backups")
    assert code == 202, body
    task = wait_for_task(http, api, body["task"]["id"])
    assert task["status"] == "done", task
    assert "backup cache-" in task["log"]
    code, body = call(http, api, "GET", "/api/clusters/cache/backups")
    assert code == 200 and len(body["backups"]) == 1
    backup = body["backups"][0]
    assert backup["status"] == "done" and backup["size"] > 0 and len(backup["sha256"]) == 64
    assert "path" not in backup  # where files live on the workbench host is not the client's business

    # a new cluster from the backup: its datastore comes from the backup
    code, body = call(http, api, "POST", "/api/clusters", {"name": "copy", "restore_from": backup["name"]})
    assert code == 202 and body["cluster"]["datastore"]["name"] == "redis - 7", body
    copy = wait_for_cluster(http, api, "copy")
    with redis_of(copy["instances"][0]) as restored:
        assert restored.get("tea") == "sencha"
    assert call(http, api, "DELETE", "/api/clusters/copy")[0] == 202

    code, body = call(http, api, "DELETE", "/api/clusters/cache")
    assert code == 202 and body["task"]["name"] == "destroy_cluster"
    deadline = time.monotonic() + 120
    while (code := call(http, api, "GET", "/api/clusters/cache")[0]) != 404:
        assert code == 200 and time.monotonic() < deadline
        time.sleep(0.2)
    assert not any(port_open(i) for i in cluster["instances"])
    deadline = time.monotonic() + 120
    while call(http, api, "GET", "/api/clusters")[1] != {"clusters": []}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not port_open(copy["instances"][0])


# -- authentication ---------------------------------------------------------------------------------
def test_requests_without_the_token_are_refused_and_change_nothing(api, http, store):
    for token, headers in ((None, None), ("wrong-token-value", None), (None, {"Authorization": "Basic abc"})):
        code, body = call(http, api, "POST", "/api/clusters", {"name": "cache", "datastore": "redis-7"},
                          token=token, headers=headers)
        assert code == 401 and "token" in body["error"]
    assert call(http, api, "GET", "/api/clusters", token="nope-nope")[0] == 401
    assert store.clusters() == []
    # the three accepted spellings
    for headers in ({"Authorization": f"Token {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}"},
                    {"X-Auth-Token": TOKEN}):
        assert call(http, api, "GET", "/api/datastores", token=None, headers=headers)[0] == 200


# -- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, fields", [
    ({}, {"name": "this field is required", "datastore": "this field is required"}),
    ({"name": "Bad Name!", "datastore": "redis-7"}, {"name": "name must be 1-48 characters"}),
    ({"name": "cache", "datastore": "redis-7", "size": 4}, {"size": "a cluster has at most 3 nodes"}),
    ({"name": "cache", "datastore": "redis-7", "size": 0}, {"size": "size must be a whole number >= 1"}),
    ({"name": "cache", "datastore": "redis-7", "size": "3"}, {"size": "must be a whole number"}),
    ({"name": "cache", "datastore": "redis-7", "size": True}, {"size": "must be a whole number"}),
    ({"name": "cache", "datastore": "redis-7", "colour": "blue"}, {"colour": "unknown field"}),
    ({"name": "cache", "datastore": "cassandra"}, {"datastore": "no datastore 'cassandra'"}),
    ({"name": "cache", "datastore": "redis", "version": "99"}, {"datastore": "no datastore 'redis-99'"}),
    ({"name": "cache", "datastore": "redis-7", "provider": "mainframe"}, {"provider": "unknown provider"}),
    ({"name": "cache", "restore_from": "no-such-backup"}, {"restore_from": "no backup no-such-backup"}),
    ([1, 2], {"body": "must be a JSON object"}),
])
def test_bad_cluster_requests_are_400_with_a_message_per_field(api, http, store, body, fields):
    code, reply = call(http, api, "POST", "/api/clusters", body)
    assert code == 400, reply
    assert set(reply["fields"]) == set(fields)
    for field, message in fields.items():
        assert reply["fields"][field].startswith(message), reply
    assert store.clusters() == [] and store.tasks() == []


def test_malformed_json_and_a_taken_name(api, http, store):
    code, reply = call(http, api, "POST", "/api/clusters", raw=b'{"name": "cache",')
    assert code == 400 and reply["fields"]["body"].startswith("not JSON")
    store.create_cluster("cache", "redis-7")  # recorded only: nothing is built
    code, reply = call(http, api, "POST", "/api/clusters", {"name": "cache", "datastore": "redis-7"})
    assert code == 400 and reply["fields"] == {"name": "a cluster named cache exists"}
    assert [c.name for c in store.clusters()] == ["cache"] and store.tasks() == []


def test_operations_on_a_cluster_that_is_not_active_are_conflicts(api, http, store):
    cluster = store.create_cluster("cache", "redis-7")  # status "new": never built
    code, reply = call(http, api, "POST", f"/api/clusters/{cluster.id}/nodes", {})
    assert code == 409 and "not active" in reply["error"]
    code, reply = call(http, api, "POST", "/api/clusters/cache/backups")
    assert code == 409 and "not active" in reply["error"]
    code, reply = call(http, api, "POST", "/api/clusters/cache/nodes", {"count": "two"})
    assert code == 400 and reply["fields"] == {"count": "must be a whole number"}
    assert len(store.get_cluster("cache").instances) == 1 and store.tasks() == []


# -- datastores and lookups -------------------------------------------------------------------------
def test_datastores(api, http, store):
    code, body = call(http, api, "GET", "/api/datastores")
    assert code == 200 and [d["name"] for d in body["datastores"]] == ["redis - 7"]
    code, body = call(http, api, "POST", "/api/datastores",
                      {"manager": "mysql", "version": "10.11", "packages": "mariadb-server, mariadb-client"})
    assert code == 201 and body["datastore"]["packages"] == ["mariadb-server", "mariadb-client"]
    datastore_id = body["datastore"]["id"]
    code, body = call(http, api, "GET", f"/api/datastores/{datastore_id}")
    assert code == 200 and body["datastore"]["name"] == "mysql - 10.11"
    assert call(http, api, "GET", "/api/datastores/mysql-10.11")[1]["datastore"]["id"] == datastore_id
    code, body = call(http, api, "POST", "/api/datastores", {"manager": "oracle", "version": "23"})
    assert code == 400 and body["fields"]["manager"].startswith("unknown datastore manager 'oracle'")
    code, body = call(http, api, "POST", "/api/datastores", {"manager": "redis"})
    assert code == 400 and body["fields"] == {"version": "this field is required"}
    assert len(store.datastores()) == 2


def test_unknown_things_are_404_and_wrong_methods_405(api, http):
    assert call(http, api, "GET", "/api/datastores/999")[0] == 404
    code, body = call(http, api, "GET", "/api/clusters/nope")
    assert code == 404 and body == {"error": "no cluster nope", "kind": "NotFoundError", "message": "no cluster nope",
                                    "fields": {"cluster": "nope"}}
    assert call(http, api, "DELETE", "/api/clusters/nope")[0] == 404
    assert call(http, api, "POST", "/api/clusters/nope/nodes", {})[0] == 404
    assert call(http, api, "GET", "/api/clusters/nope/backups")[0] == 404
    assert call(http, api, "GET", "/api/tasks/12345")[0] == 404
    code, body = call(http, api, "GET", "/api/teapots")
    assert code == 404 and body["error"] == "no such resource: /api/teapots"
    assert call(http, api, "GET", "/api/teapots", token=None)[0] == 401  # nothing is disclosed without a token
    assert call(http, api, "PUT", "/api/clusters", {})[0] == 405


# -- the server object ------------------------------------------------------------------------------
def test_the_server_binds_a_free_port_stops_and_refuses_a_taken_one(store):
    with ClustersApi(store, token=TOKEN) as first:
        host, port = first.address.split(":")
        assert first.url == f"http://127.0.0.1:{port}" and int(port) > 0
        with pytest.raises(ClustersError, match="cannot listen"):
            ClustersApi(store, token=TOKEN, port=int(port)).start()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1)
    with pytest.raises(ValidationError, match="at least 8"):
        ClustersApi(store, token="short")
    generated = ClustersApi(store)
    assert len(generated.token) >= 24 and generated.token != ClustersApi(store).token


# -- configuration groups and scheduled backups ------------------------------------------------------
def test_a_configuration_group_and_scheduled_backups_through_the_client(api, store):
    """``/api``'s configuration groups and backup schedules, through ``ClustersClient``.

    Trove's own scheduling (troveclient's ``backups.schedule_create``) is not served: troveclient makes
    the schedule a Mistral cron trigger with Mistral's client, never calling Trove's API, and there
    is no Mistral here. The schedule is workbench's: stored with the cluster, taken by the API's runner.
    """
    from workbench.clusters.client import ClustersClient
    from workbench.testing.commits import wait_until

    client = ClustersClient(api.url, TOKEN)

    def finished(task: dict[str, Any]) -> dict[str, Any]:
        wait_until(lambda: client.task(task["id"])["status"] in ("done", "failed"), 120, what="the task's end")
        return client.task(task["id"])

    assert finished(client.create_cluster("cache", "redis-7", size=2)["task"])["status"] == "done"
    nodes = client.cluster("cache")["instances"]
    # the template's (redis lowers its default below the open-file limit)
    default = redis.Redis("127.0.0.1", nodes[0]["port"]).config_get("maxclients")
    with pytest.raises(ValidationError, match="maxclients must be between 1 and 100000"):
        client.create_configuration("bad", "redis", {"maxclients": 0})
    group = client.create_configuration("busy", "redis", {"maxclients": 321}, version="7")
    assert group["values"] == {"maxclients": 321} and group["instances"] == []

    assert finished(client.configure("cache", group["id"]))["status"] == "done"
    for node in nodes:  # every instance of the cluster, the replica too
        assert redis.Redis("127.0.0.1", node["port"]).config_get("maxclients") == {"maxclients": "321"}
    assert client.configuration("busy")["instances"] == ["cache-1", "cache-2"]
    assert finished(client.update_configuration(group["id"], {"timeout": 300})["task"])["status"] == "done"
    assert redis.Redis("127.0.0.1", nodes[1]["port"]).config_get("timeout") == {"timeout": "300"}
    with pytest.raises(ValidationError, match="attached to instances"):
        client.delete_configuration(group["id"])
    assert finished(client.configure("cache", None))["status"] == "done"
    assert redis.Redis("127.0.0.1", nodes[0]["port"]).config_get("maxclients") == default
    assert client.delete_configuration(group["id"])["name"] == "busy" and client.configurations() == []

    # scheduled backups: one a second, the newest two kept; retention drops the oldest, and only
    # scheduled ones: a backup asked for stays
    assert finished(client.back_up("cache"))["status"] == "done"
    [asked] = [b["name"] for b in client.backups("cache")]
    with pytest.raises(ValidationError, match="keep must be a whole number"):
        client.set_schedule("cache", 1, 0)
    assert client.schedule("cache") is None
    schedule = client.set_schedule("cache", 1, 2)
    assert (schedule["interval"], schedule["keep"]) == (1, 2) and client.schedule("cache")["next_run"]
    seen: list[str] = []

    def scheduled() -> list[str]:
        names = [b["name"] for b in client.backups("cache")
                 if b["status"] == "done" and b["name"].startswith("cache-scheduled-")]
        seen.extend(n for n in names if n not in seen)
        return names

    wait_until(lambda: len(scheduled()) <= 2 and len(seen) >= 4, 120, what="four scheduled backups, two kept")
    client.delete_schedule("cache")
    assert client.schedule("cache") is None
    # a backup the schedule started just before it went still ends (and prunes)
    wait_until(lambda: all(b["status"] != "running" for b in client.backups("cache")), 60, what="no backup running")
    kept = scheduled()
    assert 1 <= len(kept) <= 2 and kept == sorted(seen)[-len(kept):]
    assert sorted(seen)[0] not in kept
    assert asked in [b["name"] for b in client.backups("cache")]

