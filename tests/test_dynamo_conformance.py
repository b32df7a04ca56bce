"""Dynamo's interfaces against a real InventoryServer: its data API read by a Dynamo-style client, its applications.

The client is a script of its own (``requests`` and ``json`` only, as Dynamo's users and its
test/test_web.py read the API), run in a subprocess. The applications are Dynamo's own
test/dynamo_setup.py and test/dynamo_teardown.py (tests/dynamo/, ported to Python 3 syntax only)
and scripts written as Dynamo's applications are, each run by ``workbench inventory exec --write``
as a non-root user (as root, Dynamo's scripts take their branch that calls Dynamo's own tools).
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from workbench.inventory import (Block, BlockReplica, Change, Dataset, DatasetReplica, File, Group, Partition,
                                 Site, SitePartition)
from workbench.inventory.server import InventoryServer

DYNAMO_SCRIPTS = Path(__file__).parent / "dynamo"
REPO = Path(__file__).resolve().parent.parent
USER = "nobody"

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="runs applications as another user: needs root")

#: the Dynamo-style client: GET a path, print the decoded envelope (or the raw body when it is not JSON)
CLIENT = textwrap.dedent('''
    import json, sys
    import requests

    base = sys.argv[1]
    answers = []
    for request in sys.argv[2:]:
        reply = requests.get(base + request, timeout=30)
        try:
            body = reply.json()
        except ValueError:
            body = reply.text
        answers.append({"status": reply.status_code, "content_type": reply.headers.get("Content-Type"), "body": body})
    print(json.dumps(answers))
''')


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the application user can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="dynamo-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path, public_dir: Path) -> Iterator[InventoryServer]:
    """An InventoryServer with a web port, its application socket open to ``USER``."""
    with InventoryServer(f"sqlite:///{tmp_path}/inventory.db", socket_path=str(public_dir / "app.sock"),
                         users=[USER], web_port=0, heartbeat=0.2, takeover_after=2.0, poll_interval=0.05,
                         app_timeout=60.0, workdir=str(tmp_path / "apps")) as started:
        yield started


def _identity(user: str) -> dict[str, Any]:
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@functools.lru_cache(maxsize=None)
def interpreter_for(user: str) -> str:
    """A Python 3.11+ that ``user`` may run: this one, or the system's (the client needs the stdlib alone)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        try:
            ran = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 11)"],
                                 capture_output=True, timeout=60, cwd="/", **_identity(user))
        except OSError:
            continue
        if ran.returncode == 0:
            return candidate
    pytest.skip(f"no Python that {user} may run")


def workbench_inventory(server: InventoryServer, *argv: str, as_user: str | None = None
                        ) -> subprocess.CompletedProcess[str]:
    """``workbench inventory ARGV --server SOCKET``, as ``as_user`` when given."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{REPO}:{REPO / 'extensions'}"}
    python, identity = sys.executable, {}
    if as_user is not None:
        python, identity = interpreter_for(as_user), _identity(as_user)
    return subprocess.run([python, "-m", "workbench", "inventory", *argv, "--server", str(server.address)],
                          capture_output=True, text=True, timeout=120, env=env, cwd="/", **identity)


def run_application(server: InventoryServer, script: Path, title: str) -> subprocess.CompletedProcess[str]:
    """Authorize ``script`` for (title, USER) as Dynamo's dynamo-exec-auth does, then run it with --write as USER."""
    authorized = workbench_inventory(server, "exec-auth", str(script), "--title", title, "--user", USER)
    assert authorized.returncode == 0, authorized.stderr
    return workbench_inventory(server, "exec", str(script), "--write", "--title", title, as_user=USER)


def client(server: InventoryServer, *requests: str) -> list[dict[str, Any]]:
    """The Dynamo-style client's answers to ``requests`` (paths with their queries)."""
    ran = subprocess.run([sys.executable, "-c", CLIENT, str(server.web_url), *requests], capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def data(server: InventoryServer, request: str) -> Any:
    answer = client(server, request)[0]
    assert answer["status"] == 200 and answer["body"]["result"] == "OK", answer
    return answer["body"]["data"]


def seed(server: InventoryServer) -> None:
    """Two sites, a group, a partition with a 2 TB quota at one site, two datasets with block replicas."""
    mit = Site("T2_US_MIT", host="se.mit.example.org", storage_type="disk")
    fnal = Site("T1_US_FNAL_MSS", host="se.fnal.example.org", storage_type="mss", status="waitroom")
    ops = Group("DataOps")
    physics = Partition("Physics", condition="group == DataOps")
    higgs = Dataset("/Higgs/Run2024-v1/AOD", status="valid", data_type="data")
    raw = Dataset("/Zee/Run2023-v1/RAW", status="production", data_type="raw")
    b1 = Block("b1", higgs, size=3_000_000_000_000, num_files=3)
    b2 = Block("b2", higgs, size=1_000_000_000_000, num_files=2, is_open=True)
    r1 = Block("r1", raw, size=500, num_files=1)
    files = [File(f"/store/data/Higgs/b1/f{i}.root", b1, size=1_000_000_000_000, adler32=f"0000000{i}") for i in range(3)]
    objects = [mit, fnal, ops, physics, SitePartition(mit, physics, quota=10_000_000_000_000), higgs, raw, b1, b2, r1,
               *files,
               DatasetReplica(higgs, mit, group=ops), DatasetReplica(higgs, fnal), DatasetReplica(raw, fnal),
               BlockReplica(b1, mit, group=ops, size=b1.size, last_update=100),
               BlockReplica(b2, mit, group=ops, size=500_000_000_000, last_update=200),
               BlockReplica(b1, fnal, is_custodial=True, size=b1.size, last_update=300),
               BlockReplica(r1, fnal, is_custodial=True, size=500, last_update=400)]
    server.apply_changes([Change("update", obj.to_dict()) for obj in objects], title="seed")


# -- Dynamo's test/test_web.py, with its setup and teardown applications ------------------------------

def test_dynamo_setup_and_teardown_run_as_applications_and_the_api_sees_them(server: InventoryServer) -> None:
    seed(server)
    # setUp of Dynamo's test_web.py: the response lists no SITE, then dynamo_setup adds it
    assert "SITE" not in [site["name"] for site in data(server, "/data/inventory/sites")]
    setup = run_application(server, DYNAMO_SCRIPTS / "dynamo_setup.py", "setup")
    assert setup.returncode == 0, setup.stderr
    assert "1 change(s) applied" in setup.stderr
    assert "SITE" in server.inventory.sites
    assert "SITE" in [site["name"] for site in data(server, "/data/inventory/sites")]
    assert "data" in client(server, "/data/inventory/blockreplicas")[0]["body"]
    # the application's second run finds the site there and still ends well
    assert run_application(server, DYNAMO_SCRIPTS / "dynamo_setup.py", "setup").returncode == 0

    teardown = run_application(server, DYNAMO_SCRIPTS / "dynamo_teardown.py", "teardown")
    assert teardown.returncode == 0, teardown.stderr
    inventory = server.inventory
    assert (inventory.partitions, inventory.sites, inventory.datasets) == ({}, {}, {})
    assert list(inventory.groups) == [None]
    # tearDown of Dynamo's test_web.py: the response is empty again
    assert not data(server, "/data/inventory/sites")
    assert server.store.version()["checksum"] == inventory.checksum()


# -- applications written against Dynamo's data format ----------------------------------------------------

def test_an_application_reads_the_data_format_as_dynamo_names_it(server: InventoryServer, public_dir: Path) -> None:
    seed(server)
    script = public_dir / "report.py"
    script.write_text(textwrap.dedent('''
        from dynamo import dataformat
        from dynamo.dataformat import Dataset, Site
        from dynamo.core.executable import inventory, authorized

        print("authorized", authorized)
        for dataset in sorted(inventory.datasets.values(), key=lambda d: d.name):
            print(dataset.name, Dataset.status_name(dataset.status), Dataset.data_type_name(dataset.data_type),
                  dataset.status == Dataset.STAT_VALID)
        for partition in inventory.partitions.values():
            for site in sorted(inventory.sites.values(), key=lambda s: s.name):
                if partition in site.partitions:
                    sp = site.partitions[partition]
                    print(site.name, Site.storage_type_name(site.storage_type), partition.name, sp.quota,
                          sp.partition is partition)
        for key, sp in inventory.sites["T2_US_MIT"].partitions.items():
            print(type(key).__name__, key.name, isinstance(sp, dataformat.SitePartition))
        block = inventory.datasets["/Higgs/Run2024-v1/AOD"].blocks["b2"]
        print(block.full_name(), block.real_name(), Site.status_name(inventory.sites["T1_US_FNAL_MSS"].status))
    '''))
    ran = run_application(server, script, "report")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "authorized True",
        "/Higgs/Run2024-v1/AOD valid data True",
        "/Zee/Run2023-v1/RAW production raw False",
        "T2_US_MIT disk Physics 10000000000000 True",
        "Partition Physics True",
        "/Higgs/Run2024-v1/AOD#b2 b2 waitroom",
    ]


def test_an_application_that_links_what_update_returned_runs_again(server: InventoryServer, public_dir: Path) -> None:
    script = public_dir / "tour.py"
    script.write_text(textwrap.dedent('''
        from workbench.inventory.dataformat import Dataset, DatasetReplica, Site
        from workbench.inventory.executable import inventory

        site = inventory.update(Site("T2_CH_CERN", host="eos.example.org"))
        dataset = inventory.update(Dataset("/Tour/Run2024-v1/AOD", status="valid"))
        inventory.update(DatasetReplica(dataset, site))
        print(sorted(dataset.replicas))
    '''))
    for _ in range(2):  # the second run changes nothing, and update() still hands back the objects
        ran = run_application(server, script, "tour")
        assert (ran.returncode, ran.stdout) == (0, "['T2_CH_CERN']\n"), ran.stderr
    assert set(server.inventory.datasets["/Tour/Run2024-v1/AOD"].replicas) == {"T2_CH_CERN"}


# -- the data API as a Dynamo client reads it ------------------------------------------------------------

def test_datasets_answer_dynamos_fields_and_filters(server: InventoryServer) -> None:
    seed(server)
    higgs = {"name": "/Higgs/Run2024-v1/AOD", "size": 4_000_000_000_000, "num_files": 5, "status": "valid",
             "type": "data"}
    raw = {"name": "/Zee/Run2023-v1/RAW", "size": 500, "num_files": 1, "status": "production", "type": "raw"}
    answers = client(server, "/data/inventory/datasets", "/data/inventory/datasets?dataset=/Higgs/*",
                     "/data/inventory/datasets?dataset=/Zee/Run2023-v1/RAW",
                     "/data/inventory/datasets?dataset=/Higgs/Run2024-v1/AOD,/Zee/*",
                     "/data/inventory/datasets?dataset=/Higgs/*&dataset=/Zee/Run2023-v1/RAW",
                     "/data/inventory/datasets?dataset=/Higgs/Run2024-v1/AO?")
    assert [answer["body"]["data"] for answer in answers] == [[], [higgs], [raw], [higgs, raw], [higgs, raw], []]
    assert all(answer["body"]["result"] == "OK" and answer["body"]["message"] == "" for answer in answers)


def test_sites_groups_and_nodes_answer_dynamos_fields(server: InventoryServer) -> None:
    seed(server)
    sites, picked, groups, one_group, nodes = (answer["body"]["data"] for answer in client(
        server, "/data/inventory/sites", "/data/inventory/sites?site=T2_*,T1_US_FNAL_MSS&partition=Nothing",
        "/data/inventory/groups", "/data/inventory/groups?group=Data*", "/data/inventory/nodes?node=T1_*"))
    mit = next(site for site in sites if site["name"] == "T2_US_MIT")
    assert mit == {"name": "T2_US_MIT", "host": "se.mit.example.org", "storage_type": "disk", "status": "ready",
                   "partitions": [{"name": "Physics", "type": "basic", "quota": 10.0, "usage": 3.5,
                                   "projected_usage": 4.0}],
                   "total_quota": 10.0, "total_usage": 3.5, "total_projected_usage": 4.0}
    fnal = next(site for site in sites if site["name"] == "T1_US_FNAL_MSS")
    assert (fnal["storage_type"], fnal["status"], fnal["partitions"][0]["quota"]) == ("mss", "waitroom", 0.0)
    assert [site["name"] for site in sites] == ["T1_US_FNAL_MSS", "T2_US_MIT"]
    assert [(site["name"], site["partitions"]) for site in picked] == [("T1_US_FNAL_MSS", []), ("T2_US_MIT", [])]
    assert groups == [{"name": "(no group)"}, {"name": "DataOps"}] and one_group == [{"name": "DataOps"}]
    assert nodes == {"node": [{"kind": "mss", "se": "se.fnal.example.org", "technology": "", "name": "T1_US_FNAL_MSS",
                               "id": 0}]}


def test_blockreplicas_answer_phedex_shapes_with_dynamos_filters(server: InventoryServer) -> None:
    seed(server)
    everything, by_block, at_mit_incomplete, recent, subscribed = (answer["body"]["data"] for answer in client(
        server, "/data/inventory/blockreplicas?dataset=/Higgs/*",
        "/data/inventory/blockreplicas?block=/Higgs/Run2024-v1/AOD%23b1&node=T1_*",
        "/data/inventory/blockreplicas?dataset=/Higgs/Run2024-v1/AOD&node=T2_US_MIT&complete=n",
        "/data/inventory/blockreplicas?dataset=/Higgs/*,/Zee/*&update_since=250",
        "/data/inventory/blockreplicas?dataset=/*&group=DataOps"))
    b1 = everything["block"][0]
    assert {key: b1[key] for key in ("name", "files", "bytes", "is_open")} == \
        {"name": "/Higgs/Run2024-v1/AOD#b1", "files": 3, "bytes": 3_000_000_000_000, "is_open": "n"}
    assert [(r["node"], r["custodial"], r["subscribed"], r["group"], r["complete"], r["se"]) for r in b1["replica"]] == [
        ("T1_US_FNAL_MSS", "y", "n", None, "y", "se.fnal.example.org"),
        ("T2_US_MIT", "n", "y", "DataOps", "y", "se.mit.example.org")]
    assert set(b1["replica"][0]) == {"bytes", "node", "files", "node_id", "se", "complete", "time_create",
                                     "time_update", "group", "custodial", "subscribed"}
    assert [(b["name"], [r["node"] for r in b["replica"]]) for b in by_block["block"]] == \
        [("/Higgs/Run2024-v1/AOD#b1", ["T1_US_FNAL_MSS"])]
    assert [(b["name"], b["is_open"], [(r["bytes"], r["complete"]) for r in b["replica"]])
            for b in at_mit_incomplete["block"]] == [("/Higgs/Run2024-v1/AOD#b2", "y", [(500_000_000_000, "n")])]
    assert [(b["name"], [r["time_update"] for r in b["replica"]]) for b in recent["block"]] == \
        [("/Higgs/Run2024-v1/AOD#b1", [300]), ("/Zee/Run2023-v1/RAW#r1", [400])]
    assert [b["name"] for b in subscribed["block"]] == ["/Higgs/Run2024-v1/AOD#b1", "/Higgs/Run2024-v1/AOD#b2"]
    assert client(server, "/data/inventory/blockreplicas")[0]["body"]["data"] == []


def test_data_answers_dbs_shapes_with_the_files_of_each_complete_replica(server: InventoryServer) -> None:
    seed(server)
    files, incomplete, absent = (answer["body"]["data"] for answer in client(
        server, "/data/inventory/data?block=/Higgs/Run2024-v1/AOD%23b1",
        "/data/inventory/data?block=/Higgs/Run2024-v1/AOD%23b2", "/data/inventory/data?block=/No/Such/SET%23b1"))
    dataset = files["dbs"][0]["dataset"][0]
    block = dataset["block"][0]
    assert (dataset["name"], dataset["is_transient"], block["name"], block["files"], block["is_open"]) == \
        ("/Higgs/Run2024-v1/AOD", "n", "/Higgs/Run2024-v1/AOD#b1", 3, "n")
    assert [(f["node"], f["lfn"], f["checksum"], f["size"], f["time_create"]) for f in block["file"]] == [
        (node, f"/store/data/Higgs/b1/f{i}.root", f"adler32:0000000{i}", 1_000_000_000_000, time)
        for node, time in (("T1_US_FNAL_MSS", 300), ("T2_US_MIT", 100)) for i in range(3)]
    assert incomplete["dbs"][0]["dataset"][0]["block"][0]["file"] == [] and absent == {"dbs": []}


def test_errors_answer_dynamos_envelope_and_successes_take_a_jsonp_callback(server: InventoryServer) -> None:
    seed(server)
    bad, unknown, jsonp, hostile, array = client(
        server, "/data/inventory/blockreplicas?block=no-hash-here", "/data/inventory/nothing",
        "/data/inventory/datasets?dataset=/Zee/*&callback=dynamo.show", "/data/inventory/groups?callback=alert(1)//",
        "/data/inventory/sites?site[]=T2_US_MIT&site[]=T1_US_FNAL_MSS")
    assert bad["status"] == 400 and bad["body"] == {"result": "Bad Request",
                                                    "message": "parameter 'block' is DATASET#BLOCK"}
    assert unknown["status"] == 404 and unknown["body"]["result"] == "Not Found" and "data" not in unknown["body"]
    assert jsonp["status"] == 200 and jsonp["content_type"].startswith("text/javascript")
    assert jsonp["body"].startswith("dynamo.show(") and jsonp["body"].endswith(")")
    assert json.loads(jsonp["body"][len("dynamo.show("):-1])["data"][0]["name"] == "/Zee/Run2023-v1/RAW"
    assert hostile["status"] == 400 and hostile["body"]["result"] == "Bad Request" and "alert" not in json.dumps(
        hostile["body"]["message"])
    assert [site["name"] for site in array["body"]["data"]] == ["T1_US_FNAL_MSS", "T2_US_MIT"]
    # this project's answers and envelope, on request
    rich, failed = client(server, "/data/inventory/datasets?format=workbench",
                          "/data/inventory/datasets?format=workbench&limit=0")
    assert rich["body"]["data"]["total"] == 2
    assert failed["status"] == 400 and failed["body"]["result"] == "Failed" and failed["body"]["data"] is None
