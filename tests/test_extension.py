"""The IPython extension: loading, %workbench, %config, and dashboards fed by real event sources."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from IPython.core.error import UsageError

import workbench
import workbench_jupyter
from workbench.events import EventDispatcher, EventSource
from workbench_jupyter import Connection, EventFeedDashboard, connections
from workbench_jupyter.sessions import DashboardSession


class Feed(EventSource):
    """A minimal live client: what every workbench client looks like to a dashboard."""

    def __init__(self, name: str = "feed") -> None:
        self._events = EventDispatcher(name)
        self.items: list[int] = []

    def push(self, n: int) -> None:
        self.items.append(n)
        self._events.emit("item_added", n)

    def initial_events(self):
        return [("item_added", (n,)) for n in self.items]


def test_import_workbench_pulls_in_no_ui():
    code = ("import sys, workbench, workbench.events, workbench.errors, workbench.cli, workbench.lab;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_load_twice_and_unload(shell):
    shell.run_cell("%load_ext workbench")
    shell.run_cell("%load_ext workbench")  # harmless
    workbench.load_ipython_extension(shell)  # direct double load is harmless too
    assert "workbench" in shell.magics_manager.magics["line"]
    assert sum(type(c).__name__ == "Workbench" for c in shell.configurables) == 1
    shell.run_cell("%unload_ext workbench")
    assert "workbench" not in shell.magics_manager.magics["line"]
    assert not any(type(c).__name__ == "Workbench" for c in shell.configurables)
    with pytest.raises(UsageError):
        shell.run_cell("%workbench")
    shell.run_cell("%load_ext workbench")
    shell.run_cell("%workbench")
    shell.run_cell("%unload_ext workbench")


def test_workbench_magic_shows_version_and_connections(loaded):
    loaded.run_cell("status = %workbench")
    status = loaded.user_ns["status"]
    assert status.version == workbench.__version__
    assert "no connections" in repr(status)
    connections.add(Connection("prod", "domain", "localhost:48004", client=Feed()))
    loaded.run_cell("status = %workbench status")
    status = loaded.user_ns["status"]
    assert status.connections == [("prod", "domain", "localhost:48004", "connected")]
    assert "localhost:48004" in status._repr_html_()
    assert f"workbench {workbench.__version__}" in repr(status)


def test_workbench_magic_errors_are_short_usage_errors(loaded):
    with pytest.raises(UsageError, match="invalid choice"):
        loaded.run_cell("%workbench frobnicate")
    with pytest.raises(UsageError, match="no connection named 'nope'"):
        loaded.run_cell("%workbench events nope")
    with pytest.raises(UsageError, match="give the name"):
        loaded.run_cell("%workbench events")


def test_config_reaches_the_magics(loaded):
    loaded.run_cell("%config Workbench.dashboard_max_rate = 4.0")
    loaded.run_cell("%config Workbench.feed_length = 3")
    feed = Feed()
    connections.add(Connection("feed", "zdb", "tcp://127.0.0.1:1", client=feed))
    loaded.run_cell("dash = %workbench events feed")
    dash = loaded.user_ns["dash"]
    assert dash.max_rate == 4.0 and dash.limit == 3
    for n in range(5):
        feed.push(n)
    assert dash.flush()
    assert [e.args[0] for e in dash.latest] == [4, 3, 2]
    assert "5 events" in dash.summary.value
    loaded.run_cell("%unload_ext workbench")  # unloading closes the dashboards it opened
    assert dash.closed
    assert feed._events.listeners == []
    loaded.run_cell("%load_ext workbench")


def test_dashboard_replays_state_then_follows_and_unsubscribes():
    feed = Feed()
    for n in range(3):
        feed.push(n)
    dash = EventFeedDashboard(feed, limit=10)
    assert dash.flush()
    assert "3 events" in dash.summary.value  # state that existed before subscribing
    feed.push(3)
    assert dash.flush()
    assert "4 events" in dash.summary.value and "<td>3</td>" in dash.table.value
    dash.close()
    feed.push(4)
    feed.flush_events()
    assert dash.event_count == 4 and feed._events.listeners == []
    dash.close()  # idempotent


def test_a_session_closes_its_dashboards_then_what_it_holds_once():
    released: list[list[object]] = []

    class FeedSession(DashboardSession):
        def _close(self) -> None:
            released.append(list(self.dashboards))  # the dashboards are closed and gone by then

    feed = Feed()
    session = FeedSession()
    first = session.add_dashboard(EventFeedDashboard(feed))
    first.close()
    second = session.add_dashboard(EventFeedDashboard(feed))
    assert session.dashboards == [second]  # a closed dashboard is forgotten
    closers = [threading.Thread(target=session.close) for _ in range(4)]
    for thread in closers:
        thread.start()
    for thread in closers:
        thread.join(10)
    assert session.closed and second.closed and released == [[]]
    assert feed._events.listeners == []


def test_dashboard_coalesces_a_burst_into_few_renders():
    feed = Feed()
    dash = EventFeedDashboard(feed, max_rate=10)
    began = time.monotonic()
    emitters = [threading.Thread(target=lambda base=base: [feed.push(base + i) for i in range(2500)])
                for base in range(0, 10_000, 2500)]
    for thread in emitters:
        thread.start()
    for thread in emitters:
        thread.join()
    assert dash.flush()
    elapsed = time.monotonic() - began
    assert dash.event_count == 10_000
    # at most one render per 1/max_rate seconds, plus the first one
    assert dash.render_count <= 10 * elapsed + 2
    assert "10000 events" in dash.summary.value
    dash.close()


def test_dashboard_rejects_bad_rate():
    with pytest.raises(ValueError):
        EventFeedDashboard(max_rate=0)
