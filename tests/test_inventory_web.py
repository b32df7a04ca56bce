"""The inventory web server over real HTTP and HTTPS: modules, built-in pages, escaping, errors, certificates."""

from __future__ import annotations

import json
import ssl
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from workbench.inventory import Dataset, Inventory
from workbench.inventory.web import (ModuleLoadError, TLSConfig, UserMap, WebServer)
from workbench.testing.inventory_web import (HOSTILE_DATASET, HOSTILE_SITE, CertificateAuthority,  # noqa: F401
                                             certificates, sample_inventory, web_server)

TIMEOUT = 20


def fetch(url: str, body: Any = None, context: ssl.SSLContext | None = None, method: str | None = None
          ) -> tuple[int, str, str]:
    """(status, content type, text) of a request; error statuses are returned, not raised."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def data(url: str, body: Any = None, context: ssl.SSLContext | None = None, method: str | None = None
         ) -> tuple[int, dict[str, Any]]:
    status, content_type, text = fetch(url, body, context, method)
    assert content_type.startswith("application/json"), (status, text)
    return status, json.loads(text)


def q(value: str) -> str:
    return quote(value, safe="")


# -- the seed's web module example ------------------------------------------------------------------

SEED_MODULE = '''
from workbench.inventory.web.modules._base import HTMLMixin, WebModule
from workbench.inventory.web.server import WebServer

class WebClassDefinedInMyMod(HTMLMixin, WebModule):
    def __init__(self, config):
        super().__init__(config)
        self.greeting = config.get("greeting", "Hello")

    def run(self, caller, request, inventory):
        who = request.get("who", "nobody")
        return self.html_page("My page", "<p class='greeting'>{{ greeting }}, {{ who }}: {{ n }} datasets</p>",
                              caller, greeting=self.greeting, who=who, n=len(inventory.datasets))

class DataClassDefinedInMyMod(WebModule):
    def run(self, caller, request, inventory):
        return {"caller": caller.name, "request": dict(request), "datasets": sorted(inventory.datasets),
                "config": dict(self.config), "user_object": isinstance(caller, WebServer.User)}

export_web = {'myweb': WebClassDefinedInMyMod}
export_data = {'mydata': DataClassDefinedInMyMod}
'''

SEED_PACKAGE_INIT = '''
from .abc import Sites
export_data = {'sitenames': Sites}
'''

SEED_PACKAGE_ABC = '''
from workbench.inventory.web.modules._base import WebModule

class Sites(WebModule):
    def run(self, caller, request, inventory):
        return sorted(inventory.sites)
'''


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    """The seed's layout: ``mymod.py`` and the package ``mypkg/`` with ``__init__.py`` and ``abc.py``."""
    directory = tmp_path / "modules"
    (directory / "mypkg").mkdir(parents=True)
    (directory / "mymod.py").write_text(SEED_MODULE)
    (directory / "mypkg" / "__init__.py").write_text(SEED_PACKAGE_INIT)
    (directory / "mypkg" / "abc.py").write_text(SEED_PACKAGE_ABC)
    return directory


def test_seed_web_module_example(sample_inventory: Inventory, module_dir: Path) -> None:
    with WebServer(sample_inventory, module_dirs=[module_dir],
                   modules_config={"mymod": {"greeting": "Welcome"}}) as server:
        status, content_type, page = fetch(f"{server.url}/web/mymod/myweb?who={q('<Ann & Bob>')}")
        assert status == 200 and content_type.startswith("text/html")
        expected = f"Welcome, &lt;Ann &amp; Bob&gt;: {len(sample_inventory.datasets)} datasets"
        assert f"<p class='greeting'>{expected}</p>" in page
        assert "<Ann & Bob>" not in page
        assert "<title>My page - workbench inventory</title>" in page  # the shared layout

        status, reply = data(f"{server.url}/data/mymod/mydata?who=x&tag=a&tag=b")
        assert status == 200
        assert reply["result"] == "OK" and reply["message"] == ""
        assert reply["data"] == {"caller": "anonymous", "request": {"who": "x", "tag": ["a", "b"]},
                                 "datasets": sorted(sample_inventory.datasets),
                                 "config": {"greeting": "Welcome"}, "user_object": True}

        # A package maps through its __init__'s exports; abc.py itself is no URL.
        status, reply = data(f"{server.url}/data/mypkg/sitenames")
        assert (status, reply["data"]) == (200, sorted(sample_inventory.sites))
        assert data(f"{server.url}/data/mypkg/abc")[0] == 404
        assert fetch(f"{server.url}/web/mymod/mydata")[0] == 404  # data classes are not pages
        # Both sit beside the built-in module.
        assert data(f"{server.url}/data/inventory/stats")[0] == 200


def test_module_errors_stop_the_server_from_starting(sample_inventory: Inventory, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.py").write_text("export_data = {'x': dict}\n")
    with pytest.raises(ModuleLoadError, match="not a WebModule subclass") as caught:
        WebServer(sample_inventory, module_dirs=[broken])
    assert caught.value.module == "bad"

    (broken / "bad.py").write_text("import no_such_module_here\n")
    with pytest.raises(ModuleLoadError, match="failed to import") as caught:
        WebServer(sample_inventory, module_dirs=[broken])
    assert caught.value.path == str(broken / "bad.py")

    (broken / "bad.py").unlink()
    (broken / "inventory.py").write_text(
        "from workbench.inventory.web.modules._base import WebModule\nexport_data = {'x': WebModule}\n")
    with pytest.raises(ModuleLoadError, match="two web modules are named 'inventory'"):
        WebServer(sample_inventory, module_dirs=[broken])

    with pytest.raises(ModuleLoadError, match="does not exist"):
        WebServer(sample_inventory, module_dirs=[tmp_path / "missing"])


# -- built-in pages ---------------------------------------------------------------------------------

def test_data_pages_report_the_inventory(web_server: WebServer, sample_inventory: Inventory) -> None:
    url = web_server.url
    status, reply = data(f"{url}/data/inventory/datasets?format=workbench")
    assert status == 200 and reply["result"] == "OK"
    assert [d["name"] for d in reply["data"]["datasets"]] == sorted(sample_inventory.datasets)
    assert reply["data"]["total"] == len(sample_inventory.datasets)
    first = sample_inventory.datasets["/Sample0/Run2024-v1/AOD"]
    row = next(d for d in reply["data"]["datasets"] if d["name"] == first.name)
    assert row["size"] == sum(b.size for b in first.blocks.values())
    assert row["num_files"] == sum(len(b.files) for b in first.blocks.values())
    assert row["sites"] == sorted(first.replicas)

    status, reply = data(f"{url}/data/inventory/datasets?format=workbench&dataset={q('/Sample[12]/*')}&limit=1&offset=1")
    assert (reply["data"]["total"], [d["name"] for d in reply["data"]["datasets"]]) == \
        (2, ["/Sample2/Run2024-v1/AOD"])
    status, reply = data(f"{url}/data/inventory/datasets?format=workbench&site=T2_CH_CERN")
    assert {d["name"] for d in reply["data"]["datasets"]} == \
        {name for name, d in sample_inventory.datasets.items() if "T2_CH_CERN" in d.replicas}

    status, reply = data(f"{url}/data/inventory/dataset?name={q(first.name)}")
    assert [b["name"] for b in reply["data"]["blocks"]] == sorted(first.blocks)
    assert [r["site"] for r in reply["data"]["replicas"]] == sorted(first.replicas)
    assert all(r["complete"] for r in reply["data"]["replicas"])

    status, reply = data(f"{url}/data/inventory/sites?format=workbench")
    by_name = {s["name"]: s for s in reply["data"]["sites"]}
    assert set(by_name) == set(sample_inventory.sites)
    for name, site in sample_inventory.sites.items():
        assert by_name[name]["usage"] == site.usage()
        assert by_name[name]["num_block_replicas"] == len(site.block_replicas)
    fnal = sample_inventory.sites["T1_US_FNAL_Disk"]
    assert by_name["T1_US_FNAL_Disk"]["partitions"] == [
        {"partition": "Physics", "quota": fnal.partitions["Physics"].quota,
         "occupancy": fnal.partitions["Physics"].occupancy()}]

    status, reply = data(f"{url}/data/inventory/groups?format=workbench")
    owned = {g["name"]: g["num_block_replicas"] for g in reply["data"]["groups"]}
    for name in ("AnalysisOps", "DataOps"):
        assert owned[name] == sum(1 for s in sample_inventory.sites.values() for r in s.block_replicas
                                  if r.group.name == name)

    status, reply = data(f"{url}/data/inventory/replicas?level=block&site=T2_*&group=DataOps")
    expected = sorted((r.block.dataset.name, r.block.name) for r in sample_inventory.sites["T2_CH_CERN"].block_replicas
                      if r.group.name == "DataOps")
    assert [(r["dataset"], r["block"]) for r in reply["data"]["replicas"]] == expected and expected

    status, stats = data(f"{url}/data/inventory/stats")
    stats = stats["data"]
    summary = sample_inventory.summary()
    assert (stats["datasets"], stats["blocks"], stats["files"], stats["sites"]) == \
        (summary["datasets"], summary["blocks"], summary["files"], summary["sites"])
    assert stats["stored"] == summary["replica_bytes"]
    assert stats["replication_factor"] == pytest.approx(summary["replica_bytes"] / stats["size"])
    replication: dict[str, int] = {}
    for dataset in sample_inventory.datasets.values():
        replication[str(len(dataset.replicas))] = replication.get(str(len(dataset.replicas)), 0) + 1
    assert stats["datasets_by_replicas"] == replication
    assert {u["site"]: u["usage"] for u in stats["site_usage"]} == \
        {name: site.usage() for name, site in sample_inventory.sites.items()}


def test_web_pages_show_the_inventory(web_server: WebServer, sample_inventory: Inventory) -> None:
    url = web_server.url
    for page in ("datasets", "sites", "groups", "replicas", "stats"):
        status, content_type, text = fetch(f"{url}/web/inventory/{page}")
        assert status == 200 and content_type.startswith("text/html"), page
        for label in ("Datasets", "Sites", "Groups", "Replicas", "Statistics"):  # the shared navigation
            assert f">{label}</a>" in text
    status, _, text = fetch(f"{url}/web/inventory/datasets")
    for name in sample_inventory.datasets:
        if name != HOSTILE_DATASET:
            assert f">{name}</a>" in text
    status, _, text = fetch(f"{url}/web/inventory/site?name=T2_CH_CERN")
    assert "<h1>Site T2_CH_CERN</h1>" in text
    for name in sample_inventory.sites["T2_CH_CERN"].dataset_replicas:
        assert f'href="/web/inventory/dataset?name={q(name)}"' in text
    status, _, index = fetch(f"{url}/")
    assert status == 200 and 'href="/data/inventory/inject"' in index
    assert fetch(f"{url}/", body={"x": 1})[0] == 405
    assert fetch(f"{url}/events", body={"x": 1})[0] == 405


def test_hostile_names_are_escaped_everywhere(web_server: WebServer) -> None:
    url = web_server.url
    raw_dataset, raw_site = '<script>alert("dataset")</script>', "<img src=x onerror=alert(1)>"
    pages = ["/web/inventory/datasets", "/web/inventory/sites", "/web/inventory/replicas", "/web/inventory/stats",
             f"/web/inventory/dataset?name={q(HOSTILE_DATASET)}", f"/web/inventory/site?name={q(HOSTILE_SITE)}",
             f"/web/inventory/dataset?name={q('<b>missing</b>')}"]
    for page in pages:
        status, content_type, text = fetch(url + page)
        assert raw_dataset not in text and raw_site not in text and "<b>missing" not in text, page
        assert "default-src 'none'" in urllib.request.urlopen(url + "/web/inventory/stats").headers[
            "Content-Security-Policy"]
    _, _, text = fetch(f"{url}/web/inventory/dataset?name={q(HOSTILE_DATASET)}")
    assert "&lt;script&gt;alert(&#34;dataset&#34;)&lt;/script&gt;/Run&amp;Co/AOD" in text
    _, _, text = fetch(f"{url}/web/inventory/sites")
    assert "T3_&lt;img src=x onerror=alert(1)&gt;" in text
    assert f'href="/web/inventory/site?name={q(HOSTILE_SITE)}"' in text
    status, _, text = fetch(f"{url}/web/inventory/dataset?name={q('<b>missing</b>')}")
    assert status == 404 and "no dataset named &#39;&lt;b&gt;missing&lt;/b&gt;&#39;" in text
    # JSON keeps the name exactly, and never carries a raw "</" that could close a script block.
    status, content_type, text = fetch(f"{url}/data/inventory/dataset?name={q(HOSTILE_DATASET)}")
    assert "</script>" not in text and json.loads(text)["data"]["name"] == HOSTILE_DATASET


# -- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, parameter", [
    ("datasets?limit=abc", "limit"), ("datasets?limit=0", "limit"), ("datasets?offset=-1", "offset"),
    ("datasets?status=sleepy", "status"), ("replicas?level=file", "level"), ("dataset", "name"),
    ("dataset?name=a&name=b", "name"), ("datasets?dataset=%ff", "dataset"),
])
def test_bad_parameters_get_400(web_server: WebServer, query: str, parameter: str) -> None:
    status, reply = data(f"{web_server.url}/data/inventory/{query}{'&' if '?' in query else '?'}format=workbench")
    assert status == 400 and reply["result"] == "Failed" and reply["data"] is None
    assert repr(parameter) in reply["message"]
    status, content_type, text = fetch(f"{web_server.url}/web/inventory/{query.replace('dataset?', 'dataset?')}")
    if query.startswith(("datasets", "dataset", "replicas")):
        assert status == 400 and content_type.startswith("text/html") and "<h1>400 Bad Request</h1>" in text


def test_unknown_pages_get_404(web_server: WebServer) -> None:
    for path in ("/data/inventory/nothing", "/data/nomodule/x", "/web/inventory/nothing", "/elsewhere"):
        assert fetch(web_server.url + path)[0] == 404, path
    status, reply = data(f"{web_server.url}/data/inventory/site?name=nowhere")
    assert (status, reply["message"]) == (404, "no site named 'nowhere'")


def test_an_unloaded_inventory_gets_503(sample_inventory: Inventory) -> None:
    current: list[Inventory | None] = [None]
    with WebServer(lambda: current[0]) as server:
        status, reply = data(f"{server.url}/data/inventory/stats?format=workbench")
        assert status == 503 and reply["result"] == "Failed" and "not loaded" in reply["message"]
        assert fetch(f"{server.url}/web/inventory/datasets")[0] == 503
        current[0] = sample_inventory  # the image arrives (a reload finished): answers resume
        status, reply = data(f"{server.url}/data/inventory/stats")
        assert status == 200 and reply["data"]["datasets"] == len(sample_inventory.datasets)


def test_module_failures_get_500_without_details(sample_inventory: Inventory, tmp_path: Path) -> None:
    (tmp_path / "faulty.py").write_text(textwrap.dedent('''
        from workbench.inventory.web.modules._base import WebModule
        class Crash(WebModule):
            def run(self, caller, request, inventory):
                raise RuntimeError("secret internal detail")
        class NotAPage(WebModule):
            def run(self, caller, request, inventory):
                return {"a": 1}
        class NotJson(WebModule):
            def run(self, caller, request, inventory):
                return {"a": object()}
        export_web = {"crash": Crash, "notapage": NotAPage}
        export_data = {"crash": Crash, "notjson": NotJson}
    '''))
    with WebServer(sample_inventory, module_dirs=[tmp_path]) as server:
        for path in ("/web/faulty/crash", "/data/faulty/crash", "/web/faulty/notapage", "/data/faulty/notjson"):
            status, _, text = fetch(server.url + path)
            assert status == 500 and "secret internal detail" not in text and "Traceback" not in text, path
        status, reply = data(f"{server.url}/data/faulty/crash?format=workbench")
        assert reply == {"result": "Failed", "message": "internal error (see the server log)", "data": None}
        assert data(f"{server.url}/data/inventory/stats")[0] == 200  # the server carries on


# -- writes and certificates --------------------------------------------------------------------------

@pytest.fixture
def tls_server(sample_inventory: Inventory, certificates: CertificateAuthority, module_dir: Path):
    cert, key = certificates.server()
    users = UserMap({certificates.subject("alice"): ("alice", ["write"]),
                     certificates.subject("bob"): {"user": "bob", "roles": ["read"]}})
    server = WebServer(sample_inventory, module_dirs=[module_dir],
                       tls=TLSConfig(cert, key, certificates.cafile, users)).start()
    yield server
    server.stop()


def test_certificates_map_to_users(tls_server: WebServer, certificates: CertificateAuthority) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    url = f"{tls_server.url}/data/mymod/mydata"
    assert data(url, context=certificates.client_context("alice"))[1]["data"]["caller"] == "alice"
    assert data(url, context=certificates.client_context("bob"))[1]["data"]["caller"] == "bob"
    # A valid certificate nobody mapped is known by its common name, with no roles.
    assert data(url, context=certificates.client_context("carol"))[1]["data"]["caller"] == "carol"
    assert data(url, context=certificates.client_context())[1]["data"]["caller"] == "anonymous"
    status, _, page = fetch(f"{tls_server.url}/web/inventory/stats", context=certificates.client_context("alice"))
    assert status == 200 and '<span class="user">alice</span>' in page


def test_a_certificate_from_another_ca_is_refused(tls_server: WebServer, certificates: CertificateAuthority,
                                                  tmp_path: Path) -> None:
    stranger = CertificateAuthority(tmp_path / "other-ca", name="someone else's CA")
    context = stranger.client_context("mallory", trust=certificates.cafile)
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        fetch(f"{tls_server.url}/data/inventory/stats", context=context)
    assert data(f"{tls_server.url}/data/inventory/stats", context=certificates.client_context())[0] == 200


def test_writes_need_a_certificate_with_the_write_role(tls_server: WebServer, web_server: WebServer,
                                                       certificates: CertificateAuthority,
                                                       sample_inventory: Inventory) -> None:
    body = {"objects": [{"kind": "Dataset", "name": "/New/Run2025-v1/AOD", "status": "production"}]}
    before = sample_inventory.checksum()
    assert data(f"{web_server.url}/data/inventory/inject", body)[0] == 401  # anonymous HTTP: read-only
    assert data(f"{tls_server.url}/data/inventory/inject", body, certificates.client_context())[0] == 401
    status, reply = data(f"{tls_server.url}/data/inventory/inject", body, certificates.client_context("bob"))
    assert status == 403 and "'write'" in reply["message"]
    assert data(f"{tls_server.url}/data/inventory/inject", context=certificates.client_context("alice"))[0] == 405
    assert sample_inventory.checksum() == before and "/New/Run2025-v1/AOD" not in sample_inventory.datasets

    alice = certificates.client_context("alice")
    status, reply = data(f"{tls_server.url}/data/inventory/inject", body, alice)
    assert status == 200 and reply["data"]["injected"] == 1
    assert sample_inventory.datasets["/New/Run2025-v1/AOD"].status.value == "production"
    status, reply = data(f"{web_server.url}/data/inventory/dataset?name={q('/New/Run2025-v1/AOD')}")
    assert status == 200 and reply["data"]["status"] == "production"

    # Deleting by identifier cascades: the dataset's blocks and replicas go with it.
    victim = sample_inventory.datasets["/Sample0/Run2024-v1/AOD"]
    sites = list(victim.replicas)
    status, reply = data(f"{tls_server.url}/data/inventory/delete",
                         {"objects": [{"kind": "Dataset", "name": victim.name}]}, alice)
    assert status == 200 and reply["data"]["deleted"] == 1
    assert victim.name not in sample_inventory.datasets
    assert all(victim.name not in sample_inventory.sites[site].dataset_replicas for site in sites)


def test_malformed_writes_change_nothing(tls_server: WebServer, certificates: CertificateAuthority,
                                         sample_inventory: Inventory) -> None:
    alice = certificates.client_context("alice")
    before = sample_inventory.checksum()
    url = f"{tls_server.url}/data/inventory/inject?format=workbench"
    for body in ({"objects": [{"kind": "Dataset", "name": "/Ok/A/B"}, {"kind": "Spaceship", "name": "x"}]},
                 {"objects": [{"kind": "Dataset", "name": "/Ok/A/B"}, {"kind": "Dataset", "name": 7}]},
                 {"objects": []}, {"objects": "not json"}, {"nothing": 1}, [1, 2]):
        status, reply = data(url, body, alice)
        assert status == 400 and reply["result"] == "Failed", body
    status, reply = data(url, b"{not json", alice)
    assert status == 400 and "not valid JSON" in reply["message"]
    assert sample_inventory.checksum() == before


def test_one_writer_at_a_time(sample_inventory: Inventory, certificates: CertificateAuthority,
                              tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "slow.py").write_text(textwrap.dedent(f'''
        import time
        from pathlib import Path
        from workbench.inventory import Dataset
        from workbench.inventory.web.modules._base import WebModule
        class Slow(WebModule):
            write_enabled = True
            def run(self, caller, request, inventory):
                Path({str(gate)!r} + ".entered").touch()
                deadline = time.monotonic() + 30
                while not Path({str(gate)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                inventory.update(Dataset(request["name"]))
                return {{"name": request["name"]}}
        export_data = {{"write": Slow}}
    '''))
    cert, key = certificates.server()
    users = UserMap({certificates.subject("alice"): ("alice", ["write"])})
    with WebServer(sample_inventory, module_dirs=[tmp_path / "mods"], write_wait=0.5,
                   tls=TLSConfig(cert, key, certificates.cafile, users)) as server:
        alice = certificates.client_context("alice")
        first: list[Any] = []
        thread = threading.Thread(target=lambda: first.append(
            data(f"{server.url}/data/slow/write", {"name": "/First/A/B"}, alice)))
        thread.start()
        entered = Path(str(gate) + ".entered")
        for _ in range(1000):
            if entered.exists():
                break
            threading.Event().wait(0.02)
        assert entered.exists()
        status, reply = data(f"{server.url}/data/slow/write", {"name": "/Second/A/B"}, alice)
        assert status == 409 and "another web request" in reply["message"]
        assert data(f"{server.url}/data/inventory/datasets", context=alice)[0] == 200  # reads go on
        gate.touch()
        thread.join(TIMEOUT)
        assert first and first[0][0] == 200
        assert "/First/A/B" in sample_inventory.datasets and "/Second/A/B" not in sample_inventory.datasets


def test_user_map_from_file(tmp_path: Path, certificates: CertificateAuthority) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(f"'{certificates.subject('alice')}':\n  user: alice\n  roles: [write]\n")
    users = UserMap.from_file(path)
    cert, _ = certificates.client("alice")
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    user = users.for_certificate(der)
    assert (user.name, user.roles, user.authenticated) == ("alice", frozenset({"write"}), True)
    assert not users.for_certificate(None).authenticated
    path.write_text("- just a list\n")
    with pytest.raises(Exception, match="must map DNs"):
        UserMap.from_file(path)


def test_server_lifecycle(sample_inventory: Inventory) -> None:
    server = WebServer(sample_inventory, port=0)
    server.start()
    port = server.port
    assert port > 0 and server.url == f"http://127.0.0.1:{port}"
    assert data(f"{server.url}/data/inventory/stats")[0] == 200
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/data/inventory/stats", timeout=5)
    # The port is free again.
    with WebServer(sample_inventory, port=port) as again:
        assert data(f"{again.url}/data/inventory/stats")[0] == 200


def test_post_form_parameters(web_server: WebServer) -> None:
    body = urlencode({"dataset": "/Sample1/*", "format": "workbench"}).encode()
    request = urllib.request.Request(f"{web_server.url}/data/inventory/datasets", data=body)
    with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
        assert [d["name"] for d in json.load(reply)["data"]["datasets"]] == ["/Sample1/Run2024-v1/AOD"]


def test_new_datasets_show_up(web_server: WebServer, sample_inventory: Inventory) -> None:
    sample_inventory.update(Dataset("/Late/Arrival/AOD"))
    status, reply = data(f"{web_server.url}/data/inventory/datasets?format=workbench&dataset=/Late/*")
    assert [d["name"] for d in reply["data"]["datasets"]] == ["/Late/Arrival/AOD"]


# -- events and the client -----------------------------------------------------------------------------

def test_client_reads_and_follows_changes(web_server: WebServer, sample_inventory: Inventory) -> None:
    from workbench.events import EventRecorder
    from workbench.inventory.web.client import WebClient, WebClientError

    with WebClient(web_server.url, timeout=TIMEOUT) as client:
        assert client.data("inventory/stats")["datasets"] == len(sample_inventory.datasets)
        assert [d["name"] for d in client.data("inventory/datasets", dataset="/Sample3/*")["datasets"]] == \
            ["/Sample3/Run2024-v1/AOD"]
        with pytest.raises(WebClientError, match="no site named 'x'") as caught:
            client.data("inventory/site", name="x")
        assert caught.value.status == 404
        recorder = EventRecorder()
        client.add_listener(recorder)  # returns once the stream is live
        sample_inventory.update(Dataset("/Followed/A/AOD", status="valid"))
        sample_inventory.delete(Dataset("/Sample1/Run2024-v1/AOD"))
        updated = recorder.wait_for("object_updated", timeout=TIMEOUT)
        assert updated.args[0]["name"] == "/Followed/A/AOD" and updated.args[0]["status"] == "valid"
        deleted = recorder.wait_for("object_deleted", timeout=TIMEOUT)
        assert deleted.args[0] == {"kind": "Dataset", "name": "/Sample1/Run2024-v1/AOD"}
        assert recorder.kinds().index("object_updated") < recorder.kinds().index("object_deleted")
        # The server going away is an event too, not a silent stall.
        web_server.stop()
        assert recorder.wait_for("disconnected", timeout=TIMEOUT).args
    assert recorder.wait_for("closed", timeout=TIMEOUT)
    with pytest.raises(WebClientError, match="not an http"):
        WebClient("ftp://127.0.0.1:1")


def test_command_line_options(tmp_path: Path, certificates: CertificateAuthority, sample_inventory: Inventory,
                              module_dir: Path) -> None:
    import argparse

    from workbench.errors import ConfigurationError
    from workbench.inventory.web.options import add_web_arguments, web_server_from_arguments

    parser = argparse.ArgumentParser()
    add_web_arguments(parser)
    cert, key = certificates.server()
    users = tmp_path / "users.yaml"
    users.write_text(f"'{certificates.subject('alice')}': {{user: alice, roles: [write]}}\n")
    config = tmp_path / "modules.yaml"
    config.write_text("mymod: {greeting: Hi}\n")
    args = parser.parse_args(["--web-cert", str(cert), "--web-key", str(key), "--web-ca", str(certificates.cafile),
                              "--web-users", str(users), "--web-modules", str(module_dir),
                              "--web-modules-config", str(config)])
    with web_server_from_arguments(args, sample_inventory, port=0) as server:
        alice = certificates.client_context("alice")
        status, reply = data(f"{server.url}/data/mymod/mydata", context=alice)
        assert (status, reply["data"]["caller"], reply["data"]["config"]) == (200, "alice", {"greeting": "Hi"})
    for bad in (["--web-key", str(key)], ["--web-cert", str(cert)]):
        with pytest.raises(ConfigurationError):
            web_server_from_arguments(parser.parse_args(bad), sample_inventory, port=0)
    config.write_text("- a list\n")
    with pytest.raises(ConfigurationError, match="maps module names"):
        web_server_from_arguments(parser.parse_args(["--web-modules-config", str(config)]), sample_inventory, 0)


# -- on an inventory server: writes through its apply path ---------------------------------------------------

def test_writes_go_through_the_servers_apply_path(tmp_path: Path, certificates: CertificateAuthority) -> None:
    from workbench.inventory.server import InventoryServer
    from workbench.inventory.store import Store

    store_url = f"sqlite:///{tmp_path / 'inventory.db'}"
    cert, key = certificates.server()
    tls = TLSConfig(cert, key, certificates.cafile, UserMap({certificates.subject("alice"): ("alice", ["write"])}))
    alice = certificates.client_context("alice")

    def web_factory(inventory: Any, port: int, apply: Any) -> WebServer:
        return WebServer(inventory, port=port, tls=tls, apply=apply)

    with InventoryServer(store_url, web_port=0, web_factory=web_factory) as server:
        url = f"{server.web_url}/data/inventory"
        site = {"kind": "Site", "name": "T2_US_MIT", "host": "mit.example.org"}
        dataset = {"kind": "Dataset", "name": "/Web/Run2025-v1/AOD", "status": "valid"}
        block = {"kind": "Block", "name": "b0001", "dataset": "/Web/Run2025-v1/AOD"}
        status, reply = data(f"{url}/inject", {"objects": [site, dataset, block]}, alice)
        assert status == 200 and reply["data"]["injected"] == 3 and reply["data"]["applied"]["changes"] == 3
        assert "b0001" in server.inventory.datasets["/Web/Run2025-v1/AOD"].blocks

        # One object refers to what is not there: the whole request is refused and nothing stays.
        before = server.inventory.checksum()
        orphan = {"kind": "Block", "name": "b0002", "dataset": "/Missing/A/B"}
        status, reply = data(f"{url}/inject",
                             {"objects": [{"kind": "Dataset", "name": "/Web/Second/AOD"}, orphan]}, alice)
        assert status == 400 and "/Missing/A/B" in reply["message"]
        assert server.inventory.checksum() == before and "/Web/Second/AOD" not in server.inventory.datasets

        status, reply = data(f"{url}/delete", {"objects": [dataset]}, alice)
        assert status == 200 and "/Web/Run2025-v1/AOD" not in server.inventory.datasets
        stored = Inventory("check")
        store = Store(store_url)
        try:
            store.load(stored)
        finally:
            store.close()
        assert stored.checksum() == server.inventory.checksum() and "T2_US_MIT" in stored.sites

        # A secondary's web port sends writers to the primary.
        with InventoryServer(store_url, web_port=0, master_url=store_url,
                             web_factory=web_factory) as secondary:
            assert secondary.role == "secondary"
            status, reply = data(f"{secondary.web_url}/data/inventory/inject", {"objects": [dataset]}, alice)
            assert status == 409 and "primary" in reply["message"]
            assert data(f"{secondary.web_url}/data/inventory/stats", context=alice)[0] == 200
