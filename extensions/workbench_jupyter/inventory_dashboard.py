"""A live summary of an inventory: counts, usage per site as bars, and the latest changes.

The dashboard listens to an inventory connection (``%inventory connect``): every applied change
arrives as ``object_updated(data)`` / ``object_deleted(data)`` from the image's own listeners
(in the kernel) or from a web server's ``/events`` stream. Events only fold into a list of recent
changes and mark the view dirty; at most ``max_rate`` times a second the render thread reads the
totals once (``connection.stats()``) and redraws. Nothing polls: with no changes there are no reads.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Any, Callable

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.events import Event
from workbench.inventory import human_size
from workbench_jupyter.dashboard import DEFAULT_MAX_RATE, Dashboard

#: the identifier fields of a change's object, in the order they name it
_KEY_FIELDS = ("dataset", "block", "name", "lfn", "site", "partition")
BAR_WIDTH = 240


def describe_change(kind: str, data: Any) -> tuple[str, str, str]:
    """(verb, object kind, identifier) of one change event, for the recent-changes table."""
    verb = {"object_updated": "update", "object_deleted": "delete"}.get(kind, kind)
    if not isinstance(data, dict):
        return verb, "", str(data)
    parts = [str(data[field]) for field in _KEY_FIELDS if data.get(field) is not None]
    return verb, str(data.get("kind", "")), " @ ".join(parts)


class InventoryDashboard(Dashboard):
    """Live view of one inventory connection (anything with ``add_listener`` and ``stats()``).

    ::

        dash = InventoryDashboard(connection)   # subscribes; renders on each burst of changes
        dash                                    # displays the widget
        dash.flush(); dash.stats["datasets"]    # what is shown right now
        dash.close()
    """

    def __init__(self, connection: Any, title: str = "inventory", recent: int = 10,
                 max_rate: float = DEFAULT_MAX_RATE, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.connection = connection
        self.title = title
        self.recent: deque[tuple[int, str, str, str]] = deque(maxlen=recent)
        self.changes_seen = 0
        self.stats: dict[str, Any] = {}
        self.stats_error: str | None = None
        self.state = "live"
        self._read_stats = stats or connection.stats
        self._progress = threading.Condition(threading.RLock())
        super().__init__(max_rate=max_rate)
        self.refresh()  # the first render shows the totals before any change arrives
        self.subscribe(connection)

    # -- widgets ----------------------------------------------------------------------------------
    def build(self) -> widgets.Widget:
        self.header = widgets.HTML(value=f"<b>{html.escape(self.title)}</b>: loading")
        self.usage = widgets.HTML(value="")
        self.changes = widgets.HTML(value="")
        return widgets.VBox([self.header, widgets.HBox([self.usage, self.changes])])

    # -- events (the connection's dispatcher thread) ------------------------------------------------
    def apply(self, event: Event) -> None:
        if event.kind in ("object_updated", "object_deleted"):
            self.changes_seen += 1
            verb, kind, name = describe_change(event.kind, event.args[0] if event.args else None)
            self.recent.appendleft((self.changes_seen, verb, kind, name))
        elif event.kind == "disconnected":
            self.state = f"disconnected ({event.args[0] if event.args else ''})"
        elif event.kind == "reconnected":
            self.state = "live"
        elif event.kind == "closed":
            self.state = "closed"

    # -- rendering (the render thread) ------------------------------------------------------------
    def render(self) -> None:
        try:
            self.stats = self._read_stats()
            self.stats_error = None
        except WorkbenchError as exc:  # keep the last totals; say why they may be stale
            self.stats_error = exc.message
        stats = self.stats
        counts = " · ".join(f"{stats.get(name, '?')} {name}" for name in ("datasets", "blocks", "files", "sites"))
        size = human_size(stats["size"]) if "size" in stats else "?"
        note = f" · <i>{html.escape(self.stats_error)}</i>" if self.stats_error else ""
        with self.header.hold_sync():
            self.header.value = (f"<b>{html.escape(self.title)}</b> ({html.escape(self.state)}): {counts} · "
                                 f"{size} unique · {self.changes_seen} change{'' if self.changes_seen == 1 else 's'} "
                                 f"seen{note}")
        with self.usage.hold_sync():
            self.usage.value = self._usage_html()
        with self.changes.hold_sync():
            self.changes.value = self._changes_html()
        with self._progress:
            self._progress.notify_all()

    def _usage_html(self) -> str:
        usage = self.stats.get("site_usage", [])
        widest = max((site["usage"] for site in usage), default=0) or 1
        rows = "".join(
            f"<tr><td>{html.escape(site['site'])}</td>"
            f"<td><div class='inventory-bar' style='background:#4a7fb0;height:0.9em;"
            f"width:{round(BAR_WIDTH * site['usage'] / widest)}px'></div></td>"
            f"<td style='text-align:right'>{html.escape(human_size(site['usage']))}</td></tr>"
            for site in usage)
        return ("<table class='inventory-usage'><tr><th>site</th><th>usage</th><th></th></tr>"
                f"{rows or '<tr><td colspan=3>no sites</td></tr>'}</table>")

    def _changes_html(self) -> str:
        rows = "".join(f"<tr><td>{number}</td><td>{html.escape(verb)}</td><td>{html.escape(kind)}</td>"
                       f"<td>{html.escape(name)}</td></tr>" for number, verb, kind, name in self.recent)
        return ("<table class='inventory-changes' style='margin-left:2em'>"
                "<tr><th>#</th><th>change</th><th>kind</th><th>object</th></tr>"
                f"{rows or '<tr><td colspan=4>no changes seen yet</td></tr>'}</table>")

    # -- waiting ------------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[["InventoryDashboard"], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(dashboard)`` holds after a render (False on timeout or close)."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return False
                self._progress.wait(remaining)
        return True

    def close(self) -> None:
        super().close()
        with self._progress:
            self._progress.notify_all()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = f"InventoryDashboard({self.title})"
        return bundle
