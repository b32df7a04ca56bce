"""One error envelope on every wire: what a real server raised is the declared class its client catches.

The inventory's application port and the clusters HTTP API, each over its real server: a real
error arrives as the class its subsystem declares, with the server's fields; a kind the client
does not know arrives as the subsystem's fallback, its kind kept.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
import urllib.error
import urllib.request

import pytest

import workbench.clusters
import workbench.inventory
from workbench.clusters.api import ClustersApi
from workbench.clusters.client import ClustersClient
from workbench.clusters.errors import CLUSTERS_ERRORS, ConnectionFailed, TaskError
from workbench.clusters.models import ClusterStore
from workbench.errors import ClustersError, InventoryError, json_safe
from workbench.inventory.client import InventoryClient
from workbench.inventory.errors import INVENTORY_ERRORS
from workbench.inventory.server import InventoryServer
from workbench.inventory.transport import FrameServer
from workbench.ports import free_port
from workbench.testing.clusters import clusters_settings  # noqa: F401
from workbench.testing.inventory import inventory_client, inventory_server  # noqa: F401
from workbench.zdb.errors import QuiescedError
from workbench.zdb.protocol import error_reply as zdb_error_reply

TOKEN = "wire-errors-token"
WRITER = textwrap.dedent("""
    from workbench.inventory.executable import inventory
    from workbench.inventory.dataformat import Site
    inventory.update(Site("T2_CH_CERN"))
""")


# -- inventory: the application port --------------------------------------------------------------------
def test_an_unauthorized_write_is_the_declared_class_with_the_servers_fields(inventory_client):
    with pytest.raises(workbench.inventory.ApplicationRefused) as refused:
        inventory_client.exec_script(WRITER, name="cern.py", write=True, title="cern", user="dora")
    assert type(refused.value) is workbench.inventory.ApplicationRefused
    assert (refused.value.reason, refused.value.title, refused.value.user) == ("not-authorized", "cern", "dora")
    with pytest.raises(workbench.inventory.ProtocolError) as malformed:
        inventory_client.request({"op": "teleport"})
    assert malformed.value.fields == {"reason": "op", "op": "teleport"}


def test_a_write_sent_to_a_secondary_names_the_primary(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    options = dict(web_port=None, heartbeat=0.2, takeover_after=30.0, poll_interval=0.05)
    with InventoryServer(url, **options) as primary, InventoryServer(url, master_url=url, **options) as secondary:
        message = {"op": "exec", "script": WRITER, "name": "cern.py", "args": [], "write": True, "title": "cern"}
        with InventoryClient(secondary.address) as client, pytest.raises(workbench.inventory.StoreError) as sent:
            client.request(message)  # request() resends nothing: the error itself arrives
        assert type(sent.value) is workbench.inventory.NotPrimaryError
        assert sent.value.fields == {"server": secondary.server_id, "primary": primary.server_id,
                                     "primary_address": primary.address}


class ReplicaLost(InventoryError):
    """A server-side error no client declares (as a newer server's would be)."""


class ScriptTooOld(workbench.inventory.ApplicationRefused):
    """A server-side refinement of a declared class."""


@pytest.fixture
def frame_server():
    """The inventory's real socket server, answering ``raise`` requests with the error they name."""
    errors = {"lost": ReplicaLost("replica lost", site="T1_US_FNAL", files=3),
              "old": ScriptTooOld("the script is too old", title="cern", reason="age")}

    def handler(message, caller):
        raise errors[message["raise"]]

    directory = tempfile.mkdtemp(prefix="wire-")
    server = FrameServer(f"{directory}/app.sock", handler).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_an_unknown_inventory_kind_falls_back_with_its_kind_and_fields(frame_server):
    with InventoryClient(frame_server.address) as client:
        with pytest.raises(InventoryError) as lost:
            client.request({"raise": "lost"})
        assert type(lost.value) is workbench.inventory.InventoryRemoteError
        assert lost.value.message == "replica lost"
        assert lost.value.fields == {"site": "T1_US_FNAL", "files": 3, "kind": "ReplicaLost"}
        # a subclass the client does not know travels as its nearest declared class
        with pytest.raises(workbench.inventory.ApplicationRefused) as old:
            client.request({"raise": "old"})
        assert type(old.value) is workbench.inventory.ApplicationRefused
        assert old.value.fields == {"title": "cern", "reason": "age"}


def test_every_inventory_class_a_client_catches_is_declared_and_exported():
    declared = set(INVENTORY_ERRORS.classes.values())
    assert {workbench.inventory.AccessDenied, workbench.inventory.ApplicationRefused,
            workbench.inventory.DataFormatError, workbench.inventory.UnknownReferenceError,
            workbench.inventory.NotPrimaryError, workbench.inventory.StoreError, workbench.inventory.ProtocolError,
            workbench.inventory.TransportError, workbench.inventory.WriterBusyError} == declared
    # the modules that raise them hold the very same classes
    from workbench.inventory.access import AccessDenied
    from workbench.inventory.store import WriterBusyError

    assert AccessDenied is workbench.inventory.AccessDenied and WriterBusyError is workbench.inventory.WriterBusyError


# -- clusters: the HTTP API -----------------------------------------------------------------------------
@pytest.fixture
def clusters_api(clusters_settings, tmp_path):
    with ClusterStore(f"sqlite:///{tmp_path / 'clusters.db'}", clusters_settings) as store:
        store.add_datastore("redis", "7")
        with ClustersApi(store, token=TOKEN) as server:  # no cluster is built: nothing runs but the API
            yield server


def test_an_unknown_cluster_is_the_declared_not_found_error(clusters_api):
    with ClustersClient(clusters_api.url, TOKEN) as client:
        with pytest.raises(workbench.clusters.NotFoundError) as missing:
            client.cluster("nope")
        assert type(missing.value) is workbench.clusters.NotFoundError
        assert (missing.value.message, missing.value.fields) == ("no cluster nope", {"cluster": "nope"})
        with pytest.raises(workbench.clusters.NotFoundError):
            client.task(12345)


def test_validation_errors_arrive_in_the_shape_the_library_raises_them(clusters_api):
    with ClustersClient(clusters_api.url, TOKEN) as client:
        with pytest.raises(workbench.clusters.ValidationError) as bad:
            client.create_cluster("cache", "redis-7", size="3", colour="blue")
        assert bad.value.message == "validation failed" and bad.value.field == "size"
        assert bad.value.fields["fields"] == {"size": "must be a whole number",
                                              "colour": bad.value.fields["fields"]["colour"]}
        assert bad.value.fields["fields"]["colour"].startswith("unknown field")
        with pytest.raises(workbench.clusters.ValidationError) as big:
            client.create_cluster("cache", "redis-7", size=clusters_api.store.settings.max_cluster_size + 1)
        assert big.value.field == "size" and big.value.fields["fields"]["size"].startswith("a cluster has at most")
        assert clusters_api.store.clusters() == []
        # one bad field raised on its own: its message is the field's problem
        clusters_api.store.create_cluster("cache", "redis-7")
        with pytest.raises(workbench.clusters.ValidationError) as taken:
            client.create_cluster("cache", "redis-7")
        assert taken.value.fields == {"field": "name", "fields": {"name": "a cluster named cache exists"}}
        with pytest.raises(TaskError, match="not active"):
            client.add_nodes("cache")


def test_the_validation_envelope_is_the_apis_400_body_and_round_trips():
    error = workbench.clusters.ValidationError("validation failed", field="size", fields={"size": "too big"})
    envelope = CLUSTERS_ERRORS.envelope(error)
    assert envelope == {"kind": "ValidationError", "message": "validation failed", "fields": {"size": "too big"}}
    back = CLUSTERS_ERRORS.error(envelope)
    assert type(back) is workbench.clusters.ValidationError and back.fields == error.fields


def test_a_wrong_token_and_an_unknown_kind(clusters_api):
    with ClustersClient(clusters_api.url, "not-the-token") as client, \
            pytest.raises(workbench.clusters.TokenRequired, match="token"):
        client.clusters()
    # 405 is no library error: the fallback, the subsystem's root, with the kind and the status
    with ClustersClient(clusters_api.url, TOKEN) as client, pytest.raises(ClustersError) as refused:
        client.request("PUT", "/clusters", {})
    assert type(refused.value) is ClustersError
    assert refused.value.fields == {"status": 405, "kind": "HTTPError"}
    # a kind from a newer server, with fields of its own
    future = CLUSTERS_ERRORS.error({"kind": "QuotaExceeded", "message": "no room", "fields": {"quota": 3}})
    assert type(future) is ClustersError and future.fields == {"quota": 3, "kind": "QuotaExceeded"}


def test_error_bodies_keep_the_line_older_clients_read(clusters_api):
    request = urllib.request.Request(clusters_api.url + "/api/teapots", headers={"Authorization": f"Token {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    body = json.loads(answer.value.read())
    assert body == {"error": "no such resource: /api/teapots", "kind": "NotFoundError",
                    "message": "no such resource: /api/teapots", "fields": {}}


def test_an_unreachable_api_is_a_connection_failure():
    port = free_port()
    with pytest.raises(ConnectionFailed) as failed:
        ClustersClient(f"http://127.0.0.1:{port}", TOKEN, timeout=5).datastores()
    assert failed.value.fields["port"] == port


# -- zdb: its replies use json_safe with zdb's own encoder -------------------------------------------------
def test_zdb_error_fields_keep_what_its_encoder_carries_and_repr_the_rest():
    fields = {"path": ("tea", 1), "cut": slice(1, 2), "ratio": float("nan"), "handle": object}
    safe = zdb_error_reply(1, QuiescedError("x", **fields))["error"]["fields"]
    assert safe["path"] == ("tea", 1) and safe["cut"] == slice(1, 2)  # zdb encodes tuples and slices
    assert safe["ratio"] == "nan" and safe["handle"] == repr(object)
    assert json_safe({"cut": slice(1, 2)}) == {"cut": repr(slice(1, 2))}  # plain JSON cannot
