"""A live table of a commits server's keys: version, author, comment and mtime of each key's head.

The table is fed by a source with the shape of a keeper's ``CommitMirror``: listeners get
``commit_updated(commit)`` and ``commit_removed(key, previous)``, and a new listener first gets
``commit_updated`` for every key. Two sources have that shape:

* a ``CommitMirror`` on ZooKeeper: the table changes as commits land anywhere in the cluster;
* a ``HeadsView`` of a ``CommitClient`` (a server reached by URL only): the HTTP API has no push
  channel, so the table changes on this notebook's own commits and when the Refresh button (or
  ``refresh()``) reads every head again. Nothing polls on a timer.

The newest changes are marked, so a commit landing elsewhere is easy to spot.
"""

from __future__ import annotations

import html
import threading
from collections import deque
from typing import Any, Callable

import ipywidgets as widgets

from workbench.commits import Commit, format_mtime
from workbench.events import CLOSED, Event
from workbench_jupyter.dashboard import DEFAULT_MAX_RATE, Dashboard


def _short(text: str, width: int = 60) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


class CommitsDashboard(Dashboard):
    """Live table of keys (version, author, comment, mtime) from a mirror or a heads view.

    ::

        mirror = CommitKeeper(zk, "/rainer/diary").mirror()
        dash = CommitsDashboard(mirror, title="diary")
        dash                     # displays the table
        dash.flush()             # every change received so far is shown
        dash.rows["foo"]         # the Commit shown for foo
        dash.close()

    ``refresh`` (a callable) adds a Refresh button that calls it; give it for sources that do not
    push (a ``HeadsView``: ``refresh=view.refresh``). ``highlight`` is how many of the latest
    changed keys are marked.
    """

    def __init__(self, source: Any, title: str = "commits", origin: str = "",
                 refresh: Callable[[], Any] | None = None, highlight: int = 3,
                 max_rate: float = DEFAULT_MAX_RATE) -> None:
        self.title = title
        self.origin = origin
        self.rows: dict[str, Commit] = {}
        self.changes = 0
        self.latest: deque[str] = deque(maxlen=max(1, highlight))
        self.closed_by_source = False
        self.refresh_error: str | None = None
        self._refresh = refresh
        super().__init__(source, max_rate=max_rate)
        self.refresh()  # an empty source sends no event: render the (empty) table anyway

    # -- widgets --------------------------------------------------------------------------------
    def build(self) -> widgets.Widget:
        self._changed = threading.Condition(self._lock)
        self.header = widgets.HTML(value=f"<b>{html.escape(self.title)}</b>: reading keys")
        self.table = widgets.HTML(value="")
        children: list[widgets.Widget] = [self.header, self.table]
        self.refresh_button: widgets.Button | None = None
        if self._refresh is not None:
            self.refresh_button = widgets.Button(description="Refresh", icon="refresh",
                                                 tooltip="read every key's latest version again")
            self.refresh_button.on_click(lambda _button: self.refresh_now())
            children.append(self.refresh_button)
        return widgets.VBox(children)

    def refresh_now(self) -> None:
        """Read the heads again through the source's refresh (what the button does)."""
        if self._refresh is None:
            return
        try:
            self._refresh()
            self.refresh_error = None
        except Exception as exc:  # noqa: BLE001 - a failed refresh is shown, the table stays
            self.refresh_error = f"{type(exc).__name__}: {exc}"
        self.refresh()

    # -- events (dispatcher thread) -------------------------------------------------------------
    def apply(self, event: Event) -> None:
        if event.kind == "commit_updated":
            commit = event.args[0]
            self.rows[commit.key] = commit
            self._mark(commit.key)
        elif event.kind == "commit_removed":
            key = event.args[0]
            self.rows.pop(key, None)
            self._mark(key)
        elif event.kind == CLOSED:
            self.closed_by_source = True
        self._changed.notify_all()

    def _mark(self, key: str) -> None:
        self.changes += 1
        if key in self.latest:
            self.latest.remove(key)
        self.latest.appendleft(key)

    # -- rendering ------------------------------------------------------------------------------
    def render(self) -> None:
        state = " · source closed" if self.closed_by_source else ""
        note = (f" · refresh failed: {html.escape(self.refresh_error)}" if self.refresh_error else "")
        origin = f" · {html.escape(self.origin)}" if self.origin else ""
        with self.header.hold_sync():
            keys = f"{len(self.rows)} key{'' if len(self.rows) == 1 else 's'}"
            self.header.value = (f"<b>{html.escape(self.title)}</b>: {keys}"
                                 f"{origin}{state}{note}")
        with self.table.hold_sync():
            self.table.value = self.table_html()
        self._changed.notify_all()

    def table_html(self) -> str:
        """The table as HTML: one row per key, sorted, the latest changes marked."""
        rows = []
        for key in sorted(self.rows):
            commit = self.rows[key]
            mark = " class='commits-changed' style='font-weight:bold'" if key in self.latest else ""
            rows.append(f"<tr{mark}><td>{html.escape(key)}</td><td>{commit.version}</td>"
                        f"<td>{html.escape(commit.author)}</td><td>{html.escape(_short(commit.comment))}</td>"
                        f"<td>{html.escape(format_mtime(commit.mtime))}</td></tr>")
        body = "".join(rows) or "<tr><td colspan=5>no keys</td></tr>"
        return ("<table class='commits-keys'><tr><th>key</th><th>version</th><th>author</th>"
                f"<th>comment</th><th>mtime</th></tr>{body}</table>")

    # -- waiting --------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[["CommitsDashboard"], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(dashboard)`` holds after an event or a render (False on timeout).

        E.g. ``dash.wait_for(lambda d: d.rows["foo"].version == 3)`` for a commit made elsewhere.
        """
        with self._lock:
            return self._changed.wait_for(lambda: predicate(self) or self.closed, timeout) and not self.closed

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = f"CommitsDashboard({self.title})"
        return bundle
