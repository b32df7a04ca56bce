"""The %clusters magic and its live dashboard, building real Redis clusters with the local provider."""

from __future__ import annotations

import shutil
import sys
import time
import warnings

import pandas
import pytest
from IPython.core.error import UsageError

from workbench.testing.services import traversable_tempdir
from workbench_jupyter import connections
from workbench_jupyter.clusters import ClusterSummary, ClustersMagic, PerformResult
from workbench_jupyter.clusters_dashboard import ClustersDashboard

OPTIONS = {"timeout": 600.0, "dashboard_max_rate": 4.0, "log_lines": 12}


def magic_of(shell) -> ClustersMagic:
    return shell.magics_manager.registry["ClustersMagic"]


@pytest.fixture
def clusters(loaded, tmp_path):
    """The loaded shell with %clusters keeping its state in temp dirs; leftovers destroyed after."""
    instances = traversable_tempdir("workbench-clusters-magic-")
    loaded.user_ns.update(state_dir=str(tmp_path / "state"), instances_dir=str(instances))
    loaded.run_cell("%config ClustersMagic.state_dir = state_dir")
    loaded.run_cell("%config ClustersMagic.instances_dir = instances_dir")
    yield loaded
    magic = magic_of(loaded)
    if magic.sessions.current_session is not None:
        for view in magic.store.cluster_views():
            try:
                magic.runner.destroy_cluster(view.name).wait(timeout=120)
            except Exception:  # noqa: BLE001 - best effort; keep destroying the others
                pass
    for name, value in OPTIONS.items():
        setattr(magic, name, value)
    magic.state_dir = magic.instances_dir = ""
    loaded.config.pop("ClustersMagic", None)  # %config is kept by the shell: the next test starts clean
    for name in ("state_dir", "instances_dir", "info", "backup", "dash", "result"):
        loaded.user_ns.pop(name, None)
    shutil.rmtree(instances, ignore_errors=True)


def completions(shell, line: str) -> list[str]:
    """What tab completion offers at the end of ``line``."""
    with warnings.catch_warnings():  # shell.complete() is the simple form; its deprecation is pending
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return shell.complete(line.rsplit(" ", 1)[-1], line, len(line))[1]


def value(shell, cell: str):
    return shell.run_cell(cell).result


class TimedOutput:
    """stdout that records when each piece of text was written."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.writes)

    def time_of(self, fragment: str) -> float:
        return next(when for when, text in self.writes if fragment in text)


# -- a cluster's life from a notebook ----------------------------------------------------------------
def test_create_show_perform_backup_restore_destroy(clusters, capsys, monkeypatch):
    summary = value(clusters, "%clusters create cache --datastore redis-7 --size 2 --wait")
    assert isinstance(summary, ClusterSummary) and summary.status == "active"
    assert [i.role for i in summary.instances] == ["primary", "replica"]
    assert "cache (redis - 7, local): active" in repr(summary) and "<table>" in summary._repr_html_()

    clusters.run_cell("%clusters info << show cache")
    info = clusters.user_ns["info"]
    assert info.primary.name == "cache-1" and [r.name for r in info.replicas] == ["cache-2"]
    assert list(info.frame()["port"]) == [info.primary.port, info.replicas[0].port]
    clusters.user_ns["primary_port"] = info.primary.port
    clusters.user_ns["replica_port"] = info.replicas[0].port

    # a write on the primary, read on the replica, output streamed into the cell
    capsys.readouterr()
    assert value(clusters, "%clusters perform cache-1 'redis-cli -p {primary_port} set tea sencha'") is None
    assert capsys.readouterr().out == "[cache-1] OK\n"
    clusters.run_cell("%clusters result << perform cache-1 'redis-cli -p {primary_port} get tea'")
    result = clusters.user_ns["result"]
    assert isinstance(result, PerformResult) and result.outputs == {"cache-1": ["sencha\n"]}
    assert capsys.readouterr().out == "[cache-1] sencha\n"
    deadline = time.monotonic() + 30
    while True:
        clusters.run_cell("%clusters result << perform cache-2 'redis-cli -p {replica_port} get tea'")
        if clusters.user_ns["result"].outputs["cache-2"] == ["sencha\n"]:
            break
        assert time.monotonic() < deadline
    capsys.readouterr()
    # a cell is not expanded like a line: the port goes in as text
    clusters.run_cell(f"%%clusters perform cache\necho role $(redis-cli -p {info.primary.port} role | head -1)\n")
    assert capsys.readouterr().out == "[cache-1] role master\n[cache-2] role master\n"
    # each instance's own port, address, role and datastore are in its environment
    clusters.run_cell("%clusters perform cache 'redis-cli -p $WB_PORT info replication | tr -d \"\\r\" | grep ^role:' "
                      "'echo $WB_ROLE $WB_DATASTORE $WB_ADDRESS:$WB_PORT'")
    assert capsys.readouterr().out == (f"[cache-1] role:master\n[cache-1] primary redis-7 127.0.0.1:{info.primary.port}\n"
                                       f"[cache-2] role:slave\n[cache-2] replica redis-7 127.0.0.1:{info.replicas[0].port}\n")

    # lines arrive while the command still runs
    timed = TimedOutput()
    monkeypatch.setattr(sys, "stdout", timed)
    clusters.run_cell("%clusters perform cache-1 'echo first; sleep 1.5; echo second'")
    monkeypatch.undo()
    assert "[cache-1] first\n" in timed.text and "[cache-1] second\n" in timed.text
    assert timed.time_of("second") - timed.time_of("first") >= 1.0

    listing = value(clusters, "%clusters list")
    assert isinstance(listing, pandas.DataFrame)
    assert listing[["name", "datastore", "size", "status"]].values.tolist() == [["cache", "redis - 7", 2, "active"]]

    capsys.readouterr()
    clusters.run_cell("%clusters backup << backup cache")
    record = clusters.user_ns["backup"]
    assert record.status == "done" and record.size > 0
    assert capsys.readouterr().out.startswith(f"backup {record.name} of cache: {record.size} bytes")
    assert value(clusters, "%clusters backups cache")["name"].tolist() == [record.name]

    clusters.user_ns["backup_name"] = record.name
    copy = value(clusters, "%clusters restore {backup_name} copy --wait")
    assert copy.status == "active" and copy.view.datastore == "redis - 7"
    clusters.user_ns["copy_port"] = copy.primary.port
    capsys.readouterr()
    clusters.run_cell("%clusters perform copy 'redis-cli -p {copy_port} get tea'")
    assert capsys.readouterr().out == "[copy-1] sencha\n"

    capsys.readouterr()
    clusters.run_cell("%clusters destroy copy --wait")
    clusters.run_cell("%clusters destroy cache --wait")
    assert capsys.readouterr().out == "destroyed copy\ndestroyed cache\n"
    assert value(clusters, "%clusters list").empty


# -- the dashboard --------------------------------------------------------------------------------------
def test_dashboard_bars_move_and_its_buttons_act(clusters):
    # a local Redis cluster of 2 builds in well under a second: the dashboard must render more
    # often than its default 4 times a second for a bar to be seen between two steps
    magic_of(clusters).dashboard_max_rate = 50.0
    dash = value(clusters, "%clusters")
    assert isinstance(dash, ClustersDashboard) and dash.only is None
    assert dash.flush() and "no clusters" in dash.heading.value

    focused = value(clusters, "%clusters create web --datastore redis-7 --size 2")
    assert isinstance(focused, ClustersDashboard) and focused.only == "web"
    # the bars exist as soon as the cluster does; the panel keeps every value a bar is given
    assert dash.wait_for(lambda d: "web" in d.panels and "web-1" in d.panels["web"].bars, timeout=30)
    assert dash.wait_for(lambda d: d.clusters.get("web") is not None and d.clusters["web"].status == "active",
                         timeout=180)
    assert dash.flush()
    panel = dash.panels["web"]
    assert panel.bars["web-1"].value == 100 and panel.bars["web-1"].bar_style == "success"
    shown = panel.bar_values["web-1"]
    assert len(set(shown)) >= 2 and shown[-1] == 100 and shown == sorted(shown)
    assert len(set(dash.progress_seen["web-1"])) >= 4  # every step the tasks reported, e.g. 5, 30, 40, 80, ..., 100
    assert "web-1" in panel.labels and "primary 127.0.0.1:" in panel.labels["web-1"].value
    assert any("prepare" in line for line in dash.logs["web"])
    assert focused.flush() and set(focused.panels) == {"web"}

    panel.add_node.click()
    assert dash.wait_for(lambda d: len(d.instances.get("web", {})) == 3 and d.clusters["web"].status == "active"
                         and all(i.status == "active" for i in d.instances["web"].values()), timeout=180)
    assert dash.flush() and set(dash.panels["web"].bars) == {"web-1", "web-2", "web-3"}

    panel.backup.click()
    assert dash.wait_for(lambda d: any(line == "task backup done" for line in d.logs["web"]), timeout=60)

    panel.destroy.click()
    assert panel.asking and "Destroy <b>web</b>" in panel.question.value
    panel.cancel.click()
    assert not panel.asking and dash.clusters["web"].status == "active"
    panel.destroy.click()
    panel.confirm.click()
    assert dash.notice == "destroy web: started"
    assert dash.wait_for(lambda d: "web" not in d.clusters, timeout=120)
    assert dash.flush() and dash.panels == {} and "no clusters" in dash.heading.value


def test_a_refused_button_action_is_a_notice(clusters):
    magic = magic_of(clusters)
    magic.store.create_cluster("idle", magic._datastore("redis-7", None))  # recorded, never built: "new"
    dash = value(clusters, "%clusters dashboard idle")
    assert dash.flush() and dash.panels["idle"].add_node.disabled
    dash.act("add_node", "idle")
    assert dash.notice == "add node idle: cluster idle is new, not active"
    assert dash.flush() and "not active" in dash.notice_line.value
    assert len(magic.store.get_cluster("idle").instances) == 1


# -- errors, options, completion, unloading -----------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ("%clusters frobnicate", "clusters: unknown command 'frobnicate'"),
    ("%clusters create x", "clusters create: the following arguments are required: --datastore"),
    ("%clusters create x --datastore cassandra-4", "clusters create: unknown datastore 'cassandra'"),
    ("%clusters create x --datastore redis", "clusters create: give a version: --datastore redis-VERSION"),
    ("%clusters create x --datastore redis-7 --size 9", "clusters create: a cluster has at most 5 nodes"),
    ("%clusters create Bad --datastore redis-7", "clusters create: name must be 1-48 characters"),
    ("%clusters show nope", "clusters show: no cluster nope"),
    ("%clusters show", "clusters show: give a cluster name"),
    ("%clusters perform nope 'true'", "clusters perform: no instance nope"),
    ("%clusters perform", "clusters perform: the following arguments are required: target"),
    ("%clusters list extra", "clusters list: takes no arguments"),
    ("%clusters destroy nope", "clusters destroy: no cluster nope"),
    ("%clusters restore nope copy", "clusters restore: no backup nope"),
    ("%%clusters list\nx", "clusters: only perform takes a cell"),
])
def test_errors_are_short_usage_errors(clusters, line, message):
    with pytest.raises(UsageError) as failure:
        clusters.run_cell(line)
    text = str(failure.value)
    assert text.startswith(message), text
    assert "\n" not in text and len(text) < 400
    assert magic_of(clusters).store.clusters() == []


def test_a_failing_command_is_a_usage_error_with_its_exit_status(clusters, capsys):
    clusters.run_cell("%clusters create solo --datastore redis-7 --wait")
    capsys.readouterr()
    with pytest.raises(UsageError, match=r"perform on solo failed: .*exit status 3"):
        clusters.run_cell("%clusters perform solo 'echo before; exit 3'")
    assert capsys.readouterr().out == "[solo-1] before\n"


def test_config_options_and_completion(clusters):
    magic = magic_of(clusters)
    clusters.run_cell("%clusters create alpha --datastore redis-7 --wait")
    clusters.run_cell("%config ClustersMagic.timeout = 0.5")
    clusters.run_cell("%config ClustersMagic.log_lines = 3")
    clusters.run_cell("%config ClustersMagic.dashboard_max_rate = 2.0")
    assert (magic.timeout, magic.log_lines, magic.dashboard_max_rate) == (0.5, 3, 2.0)
    with pytest.raises(UsageError, match=r"perform on alpha not done after 0.5s \(it goes on in the background"):
        clusters.run_cell("%clusters perform alpha 'sleep 2'")
    dash = value(clusters, "%clusters")
    assert dash.max_rate == 2.0 and dash.logs["any"].maxlen == 3
    magic.store.create_cluster("slow", "redis-7")  # recorded only

    assert completions(clusters, "%clusters ") == list(
        ("dashboard", "create", "list", "show", "perform", "backup", "backups", "restore", "add-node", "destroy"))
    assert completions(clusters, "%clusters show a") == ["alpha"]
    assert completions(clusters, "%clusters perform alpha-") == ["alpha-1"]
    assert completions(clusters, "%clusters info << show s") == ["slow"]
    assert completions(clusters, "%clusters create x --datastore r") == ["redis-7"]

    # a new state dir is a new store: the next command opens it
    old_store = magic.store
    clusters.run_cell("%config ClustersMagic.timeout = 600.0")
    for name in ("alpha", "slow"):
        magic.runner.destroy_cluster(name).wait(timeout=120)
    assert magic.store.clusters() == []
    clusters.user_ns["other_state"] = clusters.user_ns["state_dir"] + "-other"
    clusters.run_cell("%config ClustersMagic.state_dir = other_state")
    assert dash.closed and magic.store is not old_store and magic.store.clusters() == []


def test_unload_closes_dashboards_the_store_and_the_completer(shell, tmp_path):
    shell.run_cell("%load_ext workbench")
    try:
        shell.user_ns["state_dir"] = str(tmp_path / "state")
        shell.run_cell("%config ClustersMagic.state_dir = state_dir")
        dash = value(shell, "%clusters")
        magic = magic_of(shell)
        assert connections.get("clusters").client is magic.store
        assert completions(shell, "%clusters ")
    finally:
        shell.run_cell("%unload_ext workbench")
        connections.clear()
    assert dash.closed and magic.sessions.current_session is None and connections.get("clusters") is None
    assert "create" not in completions(shell, "%clusters ")
