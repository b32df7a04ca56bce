"""The %inventory magics and the inventory dashboard, on a real SQLite store and a real web server."""

from __future__ import annotations

from pathlib import Path

import pandas
import pytest
from IPython.core.error import UsageError

from workbench.inventory import Change, Dataset, Inventory
from workbench.inventory.store import Store
from workbench.inventory.web import WebServer
from workbench.testing.inventory_web import build_sample_inventory
from workbench_jupyter import connections
from workbench_jupyter.inventory_dashboard import InventoryDashboard, describe_change

TIMEOUT = 30


def write_sample_store(url: str) -> Inventory:
    """Store the sample inventory at ``url``; returns the in-memory original to compare with."""
    changes: list[Change] = []
    sample = Inventory("sample")
    sample.add_sink(lambda change, writes: changes.append(change))  # the changes that built it, in order
    build_sample_inventory(sample)
    store = Store(url)
    try:
        store.apply_and_write(Inventory("writer"), changes)
    finally:
        store.close()
    return sample


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inventory.db'}"


@pytest.fixture
def sample():
    """The sample inventory in memory."""
    inventory = build_sample_inventory()
    yield inventory
    inventory.close()


@pytest.fixture
def stored(store_url: str):
    """The sample inventory written to the store at ``store_url`` (returns the in-memory original)."""
    inventory = write_sample_store(store_url)
    yield inventory
    inventory.close()


@pytest.fixture
def loaded(loaded):
    """The shared loaded shell, minus the variables these tests create."""
    yield loaded
    for name in ("inventory", "url", "frame", "run", "stats"):
        loaded.user_ns.pop(name, None)


@pytest.fixture
def connected(loaded, store_url, stored, capsys):
    """The extension connected to the sample store (the image in the kernel)."""
    loaded.user_ns["url"] = store_url
    loaded.run_cell("%inventory connect --store {url}")
    capsys.readouterr()
    return loaded


def value(shell, cell: str):
    return shell.run_cell(cell).result


# -- connecting ----------------------------------------------------------------------------------------

def test_connect_store_loads_the_image_and_serves_it(loaded, store_url, stored, capsys):
    sample = stored
    loaded.user_ns["url"] = store_url
    loaded.run_cell("%inventory connect --store {url}")
    out = capsys.readouterr().out
    assert out.startswith(f"connected to {store_url} as 'inventory': {len(sample.datasets)} datasets, "
                          f"{len(sample.sites)} sites")
    image = loaded.user_ns["inventory"]
    assert isinstance(image, Inventory) and image.checksum() == sample.checksum()
    connection = connections.get("inventory")
    assert (connection.kind, connection.target, connection.status()) == ("inventory", store_url, "connected")
    session = connection.client
    # The web pages of the kernel's image answer on a loopback port.
    assert session.data("inventory/stats")["datasets"] == len(sample.datasets)
    assert value(loaded, "%inventory data dataset name=/Sample2/Run2024-v1/AOD")["sites"] == \
        sorted(sample.datasets["/Sample2/Run2024-v1/AOD"].replicas)


def test_connect_to_a_server_url(loaded, sample, capsys):
    with WebServer(sample) as server:
        loaded.user_ns["url"] = server.url
        loaded.run_cell("%inventory connect {url} --name remote")
        assert capsys.readouterr().out.startswith(f"connected to {server.url} as 'remote'")
        frame = value(loaded, "%inventory datasets /Sample*")
        assert list(frame["name"]) == sorted(n for n in sample.datasets if n.startswith("/Sample"))
        assert value(loaded, "%inventory stats")["files"] == sample.summary()["files"]
        loaded.run_cell("%inventory disconnect remote")
        assert connections.get("remote") is None


def test_connect_errors_are_short(loaded, tmp_path):
    with pytest.raises(UsageError, match="one of them"):
        loaded.run_cell("%inventory connect")
    with pytest.raises(UsageError, match="one of them"):
        loaded.run_cell("%inventory connect http://127.0.0.1:1 --store sqlite://")
    with pytest.raises(UsageError, match="cannot reach the inventory web server") as caught:
        loaded.run_cell("%inventory connect http://127.0.0.1:1")
    assert "Traceback" not in str(caught.value)
    with pytest.raises(UsageError, match="not an http"):
        loaded.run_cell("%inventory connect ftp://example.org")
    with pytest.raises(UsageError) as caught:
        loaded.run_cell("%inventory connect --store mysql+pymysql://alice:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(UsageError, match="not connected"):
        loaded.run_cell("%inventory sites")
    with pytest.raises(UsageError, match="usage"):
        loaded.run_cell("%inventory fly")


# -- reading ---------------------------------------------------------------------------------------------

def test_datasets_and_sites_as_dataframes(connected, stored):
    sample = stored
    frame = value(connected, "%inventory datasets /Sample[13]/*")
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame["name"]) == ["/Sample1/Run2024-v1/AOD", "/Sample3/Run2024-v1/AOD"]
    row = frame.set_index("name").loc["/Sample1/Run2024-v1/AOD"]
    dataset = sample.datasets["/Sample1/Run2024-v1/AOD"]
    assert (row["num_blocks"], row["num_files"], row["size"]) == (len(dataset.blocks), dataset.num_files, dataset.size)
    assert row["sites"] == ", ".join(sorted(dataset.replicas))
    assert len(value(connected, "%inventory datasets")) == len(sample.datasets)

    sites = value(connected, "%inventory sites")
    assert list(sites["name"]) == sorted(sample.sites)
    assert dict(zip(sites["name"], sites["usage"])) == {n: s.usage() for n, s in sample.sites.items()}


def test_capture_and_connection_option(connected, stored):
    sample = stored
    assert connected.run_cell("%inventory frame << datasets /Sample0/*").result is None
    assert list(connected.user_ns["frame"]["name"]) == ["/Sample0/Run2024-v1/AOD"]
    connected.run_cell("%inventory -c inventory stats << stats")
    assert connected.user_ns["stats"]["datasets"] == len(sample.datasets)
    with pytest.raises(UsageError, match="no inventory connection named 'other'"):
        connected.run_cell("%inventory -c other sites")


def test_usage_errors(connected):
    for line, message in (("%inventory sites extra", "takes no arguments"),
                          ("%inventory datasets a b", "one PATTERN"),
                          ("%inventory data", "which page"),
                          ("%inventory data stats oops", "KEY=VALUE"),
                          ("%inventory exec", "runs a cell"),
                          ("%inventory datasets 'unclosed", "No closing quotation")):
        with pytest.raises(UsageError, match=message):
            connected.run_cell(line)
    with pytest.raises(UsageError, match="no site named 'nowhere'"):
        connected.run_cell("%inventory data site name=nowhere")
    with pytest.raises(UsageError, match="cell form"):
        connected.run_cell("%%inventory sites\nx")


def test_config_options(connected):
    magic = next(c for c in connected.configurables if type(c).__name__ == "InventoryMagic")
    connected.run_cell("%config InventoryMagic.recent_changes = 3")
    connected.run_cell("%config InventoryMagic.dashboard_max_rate = 20.0")
    assert (magic.recent_changes, magic.dashboard_max_rate) == (3, 20.0)
    dash = value(connected, "%inventory")
    try:
        assert (dash.recent.maxlen, dash.max_rate) == (3, 20.0)
    finally:
        dash.close()


# -- the dashboard -----------------------------------------------------------------------------------------

def test_dashboard_follows_changes_without_polling(connected, stored):
    sample = stored
    dash = value(connected, "%inventory")
    assert isinstance(dash, InventoryDashboard)
    image = connected.user_ns["inventory"]
    assert dash.wait_for(lambda d: d.stats.get("datasets") == len(sample.datasets), TIMEOUT)
    renders = dash.render_count
    # Nothing changes: nothing renders (and so nothing reads).
    assert not dash.wait_for(lambda d: d.render_count > renders, 1.0)

    image.update(Dataset("/Fresh/Run2025-v1/AOD", status="production"))
    image.delete(Dataset("/Sample0/Run2024-v1/AOD"))
    assert dash.wait_for(lambda d: d.changes_seen == 2 and d.stats.get("datasets") == len(sample.datasets),
                         TIMEOUT)
    assert list(dash.recent)[:2] == [(2, "delete", "Dataset", "/Sample0/Run2024-v1/AOD"),
                                     (1, "update", "Dataset", "/Fresh/Run2025-v1/AOD")]
    html = dash.changes.value
    assert "/Fresh/Run2025-v1/AOD" in html and "delete" in html
    usage = dash.usage.value
    for name, site in image.sites.items():
        assert f"<td>{name.replace('<', '&lt;').replace('>', '&gt;')}</td>" in usage
    assert "<img" not in usage  # the hostile site's name is text
    assert f"{len(image.datasets)} datasets" in dash.header.value

    # A burst of changes coalesces into a few renders.
    before = dash.render_count
    for number in range(500):
        image.update(Dataset(f"/Burst/{number}/AOD"))
    assert dash.wait_for(lambda d: d.changes_seen == 502, TIMEOUT)
    dash.flush()
    assert dash.render_count - before < 50
    dash.close()
    assert dash.closed


def test_dashboard_over_the_web_stream(loaded, sample, capsys):
    with WebServer(sample) as server:
        loaded.user_ns["url"] = server.url
        loaded.run_cell("%inventory connect {url}")
        dash = value(loaded, "%inventory dashboard")
        sample.update(Dataset("/Remote/Change/AOD"))
        assert dash.wait_for(lambda d: d.changes_seen == 1 and d.stats["datasets"] == len(sample.datasets), TIMEOUT)
        assert dash.recent[0] == (1, "update", "Dataset", "/Remote/Change/AOD")
        loaded.run_cell("%inventory disconnect")
        assert dash.closed


def test_describe_change():
    assert describe_change("object_deleted", {"kind": "BlockReplica", "dataset": "/A/B/C", "block": "b1",
                                              "site": "T2"}) == ("delete", "BlockReplica", "/A/B/C @ b1 @ T2")
    assert describe_change("object_updated", {"kind": "File", "lfn": "/store/f", "block": "b1",
                                              "dataset": "/A/B/C", "size": 3}) == \
        ("update", "File", "/A/B/C @ b1 @ /store/f")


def test_unload_closes_connections_and_dashboards(shell, store_url, stored):
    shell.run_cell("%load_ext workbench")
    shell.user_ns["url"] = store_url
    shell.run_cell("%inventory connect --store {url}")
    dash = shell.run_cell("%inventory").result
    session = connections.get("inventory").client
    shell.run_cell("%unload_ext workbench")
    assert dash.closed and session.closed and connections.get("inventory") is None
    assert "inventory" not in shell.user_ns
    shell.user_ns.pop("url", None)


# -- applications ------------------------------------------------------------------------------------------

REPORT = """
import sys
from workbench.inventory.executable import inventory, read_only
from workbench.inventory import Dataset
print("read_only", read_only, "args", sys.argv[1:])
for name, site in sorted(inventory.sites.items()):
    print(name, site.usage())
inventory.delete(Dataset("/Sample2/Run2024-v1/AOD"))   # a read-only run changes its own copy only
print("left", len(inventory.datasets))
"""

RETIRE = """
from workbench.inventory.executable import inventory, read_only
from workbench.inventory import Dataset
for name in sorted(inventory.datasets):
    if name.startswith("/Sample3/"):
        inventory.delete(Dataset(name))
inventory.update(Dataset("/Sample9/Run2025-v1/AOD", status="production"))
print("retired /Sample3, read_only =", read_only)
"""


def test_exec_read_only_report(connected, stored, capsys):
    image = connected.user_ns["inventory"]
    before = image.checksum()
    run = value(connected, "%%inventory exec --title report -- --top 3\n" + REPORT)
    out = capsys.readouterr().out
    assert "read_only True args ['--top', '3']" in out
    for name, site in stored.sites.items():
        assert f"{name} {site.usage()}\n" in out
    assert f"left {len(stored.datasets) - 1}" in out
    assert run.ok and run.exit_code == 0 and not run.write and run.applied == 0
    assert image.checksum() == before and "/Sample2/Run2024-v1/AOD" in image.datasets


def test_exec_write_needs_authorization_and_applies_atomically(connected, stored, store_url, capsys):
    image = connected.user_ns["inventory"]
    before = image.checksum()
    with pytest.raises(UsageError, match="inventory exec: .*authoriz"):
        connected.run_cell("%%inventory exec --write --title retire\n" + RETIRE)
    assert image.checksum() == before

    connected.run_cell("%%inventory exec-auth --title retire\n" + RETIRE)
    assert "authorized 'retire': sha256 " in capsys.readouterr().out
    dash = value(connected, "%inventory")
    run = value(connected, "%%inventory exec --write --title retire\n" + RETIRE)
    assert "retired /Sample3, read_only = False" in capsys.readouterr().out
    assert run.ok and run.write and run.applied == 2
    assert "/Sample3/Run2024-v1/AOD" not in image.datasets
    assert image.datasets["/Sample9/Run2025-v1/AOD"].status.value == "production"
    # The live summary saw both changes arrive, through the image's listeners.
    assert dash.wait_for(lambda d: d.changes_seen >= 2 and d.stats.get("datasets") == len(image.datasets), TIMEOUT)
    assert {(verb, name) for _, verb, _, name in dash.recent} >= {
        ("delete", "/Sample3/Run2024-v1/AOD"), ("update", "/Sample9/Run2025-v1/AOD")}
    # Written through: a fresh load of the store holds the same image.
    fresh = Inventory("check")
    store = Store(store_url)
    try:
        store.load(fresh)
    finally:
        store.close()
    assert fresh.checksum() == image.checksum()

    # A changed script is refused until authorized again; a failing one applies nothing.
    with pytest.raises(UsageError, match="authoriz"):
        connected.run_cell("%%inventory exec --write --title retire\n" + RETIRE + "\n# changed\n")
    failing = RETIRE + "\nraise RuntimeError('half way')\n"
    connected.run_cell("%%inventory exec-auth --title failing\n" + failing)
    after = image.checksum()
    with pytest.raises(UsageError, match="nothing was applied"):
        connected.run_cell("%%inventory exec --write --title failing\n" + failing)
    assert "RuntimeError: half way" in capsys.readouterr().err
    assert image.checksum() == after


def test_exec_through_a_server_url(loaded, stored, store_url, capsys):
    from workbench.inventory.server import InventoryServer

    with InventoryServer(store_url, web_port=0) as server:
        loaded.user_ns["url"] = server.web_url
        loaded.user_ns["address"] = server.address
        loaded.run_cell("%inventory connect {url} --server {address} --name remote")
        dash = value(loaded, "%inventory -c remote dashboard")
        run = value(loaded, "%%inventory -c remote exec --title report\n" + REPORT)
        assert run.ok and "read_only True" in capsys.readouterr().out
        loaded.run_cell("%%inventory -c remote exec-auth --title retire\n" + RETIRE)
        run = value(loaded, "%%inventory -c remote exec --write --title retire\n" + RETIRE)
        assert run.applied == 2 and "/Sample3/Run2024-v1/AOD" not in server.inventory.datasets
        # Over the web port's event stream, too.
        assert dash.wait_for(lambda d: d.changes_seen >= 2, TIMEOUT)
        assert value(loaded, "%inventory -c remote datasets /Sample9/*")["status"].tolist() == ["production"]
        loaded.run_cell("%inventory disconnect remote")
        loaded.user_ns.pop("address", None)


def test_exec_usage_errors(connected):
    with pytest.raises(UsageError, match="the cell is empty"):
        connected.run_cell("%%inventory exec\n   \n")
    with pytest.raises(UsageError, match="--title"):
        connected.run_cell("%%inventory exec-auth\nprint(1)\n")
