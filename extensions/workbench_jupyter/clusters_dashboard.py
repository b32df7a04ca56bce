"""A live dashboard of datastore clusters: status, per-instance progress bars, task logs and actions.

It listens to a ``ClusterStore`` (``cluster_changed``, ``instance_changed``, ``cluster_removed``,
``task_changed``, ``task_output``), so its bars move as the background tasks report, and renders
at most ``max_rate`` times a second. Each cluster gets a panel::

    cache  redis - 7 · local · building
      cache-1  primary  127.0.0.1:40123  [██████░░░░]  prepare
      cache-2  replica  127.0.0.1:40125  [████░░░░░░]  create_server
      [Add node] [Back up] [Destroy]          (Destroy asks "Destroy cache?" [Yes, destroy] [Cancel])
      <the cluster's latest task log lines>

The buttons call the actions object (a ``TaskRunner``): ``add_nodes``, ``backup_cluster`` and
``destroy_cluster``; what they refuse (a cluster that is not active...) shows as a notice.
"""

from __future__ import annotations

import html
import threading
from collections import defaultdict, deque
from typing import Any, Callable

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.events import Event
from workbench_jupyter.dashboard import DEFAULT_MAX_RATE, Dashboard

#: bar colour of each instance status
BAR_STYLES = {"active": "success", "error": "danger", "destroying": "warning", "deleted": "warning"}


class ClusterPanel:
    """The widgets of one cluster: header, one progress bar per instance, buttons, confirmation, log."""

    def __init__(self, name: str, on_action: Callable[[str, str], None]) -> None:
        self.name = name
        self.header = widgets.HTML()
        self.rows = widgets.VBox()
        self.bars: dict[str, widgets.IntProgress] = {}
        #: instance -> every value its bar was given, from the bar's creation on
        self.bar_values: dict[str, list[int]] = {}
        self.labels: dict[str, widgets.HTML] = {}
        self.add_node = widgets.Button(description="Add node", icon="plus", tooltip=f"add a replica to {name}")
        self.backup = widgets.Button(description="Back up", icon="download", tooltip=f"back up {name}")
        self.destroy = widgets.Button(description="Destroy", icon="trash", button_style="danger",
                                      tooltip=f"destroy {name} (asks first)")
        self.confirm = widgets.Button(description="Yes, destroy", button_style="danger")
        self.cancel = widgets.Button(description="Cancel")
        self.question = widgets.HTML(f"Destroy <b>{html.escape(name)}</b> and every server of it?")
        self.confirmation = widgets.HBox([self.question, self.confirm, self.cancel],
                                         layout=widgets.Layout(display="none"))
        self.log = widgets.HTML()
        self.add_node.on_click(lambda _: on_action("add_node", name))
        self.backup.on_click(lambda _: on_action("backup", name))
        self.destroy.on_click(lambda _: self.ask(True))
        self.cancel.on_click(lambda _: self.ask(False))
        self.confirm.on_click(lambda _: (self.ask(False), on_action("destroy", name)))
        self.widget = widgets.VBox([self.header, self.rows,
                                    widgets.HBox([self.add_node, self.backup, self.destroy]),
                                    self.confirmation, self.log],
                                   layout=widgets.Layout(border="1px solid #ddd", padding="4px", margin="4px 0"))

    @property
    def asking(self) -> bool:
        return self.confirmation.layout.display != "none"

    def ask(self, show: bool) -> None:
        self.confirmation.layout.display = "flex" if show else "none"

    def update(self, view: Any, instances: dict[str, Any], log_lines: list[str]) -> None:
        status = html.escape(view.status)
        message = f" — {html.escape(view.message)}" if view.message else ""
        self.header.value = (f"<b>{html.escape(view.name)}</b> {html.escape(view.datastore)} · "
                             f"{html.escape(view.provider)} · <span class='cluster-status'>{status}</span>{message}")
        rows = []
        for name, instance in sorted(instances.items(), key=lambda item: _index(item[0])):
            bar = self.bars.get(name)
            if bar is None:
                bar = self.bars[name] = widgets.IntProgress(min=0, max=100, description=name,
                                                            style={"description_width": "initial"})
                self.labels[name] = widgets.HTML()
            bar.value = max(0, min(100, int(instance.progress)))
            shown = self.bar_values.setdefault(name, [])
            if not shown or shown[-1] != bar.value:
                shown.append(bar.value)
            bar.bar_style = BAR_STYLES.get(instance.status, "info")
            where = f"{instance.addr}:{instance.port}" if instance.addr else "—"
            step = instance.task or instance.status
            detail = f" — {html.escape(instance.message)}" if instance.message else ""
            self.labels[name].value = (f"{html.escape(instance.role)} {html.escape(where)} "
                                       f"<i>{html.escape(step)}</i>{detail}")
            rows.append(widgets.HBox([bar, self.labels[name]]))
        for gone in set(self.bars) - set(instances):
            self.bars.pop(gone).close()
            self.labels.pop(gone).close()
            self.bar_values.pop(gone, None)
        self.rows.children = rows
        busy = view.status not in ("active",)
        self.add_node.disabled = self.backup.disabled = busy
        self.destroy.disabled = view.status == "destroying"
        self.log.value = ("<pre class='cluster-log' style='max-height:12em;overflow:auto;margin:0'>"
                          + html.escape("\n".join(log_lines)) + "</pre>") if log_lines else ""

    def close(self) -> None:
        for widget in [*self.bars.values(), *self.labels.values(), self.widget]:
            widget.close()


def _index(instance_name: str) -> tuple[int, str]:
    tail = instance_name.rsplit("-", 1)[-1]
    return (int(tail), instance_name) if tail.isdigit() else (0, instance_name)


class ClustersDashboard(Dashboard):
    """Live view of every cluster of a store (or of ``only`` one), with action buttons.

    ::

        dash = ClustersDashboard(store, actions=runner)
        dash                        # displays the widget
        dash.flush()                # every event so far is rendered
        dash.panels["cache"].bars["cache-1"].value
        dash.close()

    Plain state, for tests and code: ``clusters`` (name -> ClusterView), ``instances``
    (cluster -> instance name -> InstanceView), ``progress_seen`` (instance -> every progress
    value reported), ``logs`` (cluster -> latest log lines), ``notice`` (the last action's result).
    """

    def __init__(self, store: Any, actions: Any = None, *, only: str | None = None, log_lines: int = 12,
                 title: str = "clusters", max_rate: float = DEFAULT_MAX_RATE) -> None:
        self.store = store
        self.actions = actions
        self.only = only
        self.title = title
        self.clusters: dict[str, Any] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.progress_seen: dict[str, list[int]] = defaultdict(list)
        self.logs: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=log_lines))
        self.task_clusters: dict[int, str] = {}
        self.panels: dict[str, ClusterPanel] = {}
        self.notice = ""
        self._changed = threading.Condition(threading.Lock())
        super().__init__(store, max_rate=max_rate)
        self.refresh()  # a store without clusters sends no event: render "no clusters" anyway

    # -- widgets --------------------------------------------------------------------------------------
    def build(self) -> widgets.Widget:
        self.heading = widgets.HTML(f"<b>{html.escape(self.title)}</b>: waiting for events")
        self.notice_line = widgets.HTML()
        self.body = widgets.VBox()
        return widgets.VBox([self.heading, self.notice_line, self.body])

    # -- events (dispatcher thread) -------------------------------------------------------------------
    def _wanted(self, cluster: str) -> bool:
        return self.only is None or cluster == self.only

    def apply(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(*event.args)
        with self._changed:
            self._changed.notify_all()

    def _on_cluster_changed(self, view: Any) -> None:
        if not self._wanted(view.name):
            return
        self.clusters[view.name] = view
        known = self.instances.get(view.name, {})
        self.instances[view.name] = {i.name: i for i in view.instances}
        for instance in view.instances:
            if known.get(instance.name) is None or known[instance.name].progress != instance.progress:
                self.progress_seen[instance.name].append(instance.progress)

    def _on_instance_changed(self, view: Any) -> None:
        if not self._wanted(view.cluster):
            return
        previous = self.instances.setdefault(view.cluster, {}).get(view.name)
        self.instances[view.cluster][view.name] = view
        if previous is None or previous.progress != view.progress:
            self.progress_seen[view.name].append(view.progress)

    def _on_cluster_removed(self, name: str) -> None:
        self.clusters.pop(name, None)
        self.instances.pop(name, None)

    def _on_task_changed(self, task: Any) -> None:
        if task.cluster:
            self.task_clusters[task.id] = task.cluster
        if self._wanted(task.cluster) and task.status in ("done", "failed", "cancelled"):
            outcome = f": {task.message}" if task.message and task.status != "done" else ""
            self.logs[task.cluster].append(f"task {task.name} {task.status}{outcome}")

    def _on_task_output(self, task_id: int, instance_name: str, line: str) -> None:
        cluster = self.task_clusters.get(task_id) or self._cluster_of(instance_name)
        if cluster and self._wanted(cluster):
            self.logs[cluster].append(line)

    def _cluster_of(self, instance_name: str) -> str:
        for cluster, instances in self.instances.items():
            if instance_name in instances:
                return cluster
        return ""

    # -- actions (widget callbacks) -------------------------------------------------------------------
    def act(self, action: str, cluster: str) -> None:
        """Run a button's action on ``cluster``: ``add_node``, ``backup`` or ``destroy``."""
        calls = {"add_node": lambda: self.actions.add_nodes(cluster, 1),
                 "backup": lambda: self.actions.backup_cluster(cluster),
                 "destroy": lambda: self.actions.destroy_cluster(cluster)}
        if self.actions is None:
            self.notice = "this dashboard is read-only (no actions)"
        else:
            try:
                calls[action]()
                self.notice = f"{action.replace('_', ' ')} {cluster}: started"
            except WorkbenchError as exc:
                self.notice = f"{action.replace('_', ' ')} {cluster}: {exc.message}"
        self.refresh()
        with self._changed:
            self._changed.notify_all()

    # -- rendering (render thread) --------------------------------------------------------------------
    def render(self) -> None:
        names = [name for name in self.clusters if self._wanted(name)]
        for name in names:
            panel = self.panels.get(name)
            if panel is None:
                panel = self.panels[name] = ClusterPanel(name, self.act)
            panel.update(self.clusters[name], self.instances.get(name, {}), list(self.logs.get(name, ())))
        for gone in set(self.panels) - set(names):
            self.panels.pop(gone).close()
        counts = defaultdict(int)
        for view in self.clusters.values():
            counts[view.status] += 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no clusters"
        self.heading.value = f"<b>{html.escape(self.title)}</b>: {summary}"
        self.notice_line.value = f"<i>{html.escape(self.notice)}</i>" if self.notice else ""
        self.body.children = [self.panels[name].widget for name in names]
        with self._changed:
            self._changed.notify_all()

    # -- waiting --------------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[ClustersDashboard], bool], timeout: float = 30.0) -> bool:
        """Wait until ``predicate(dashboard)`` holds after an event or a render (False on timeout)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.closed or predicate(self), timeout) and not self.closed

    def close(self) -> None:
        super().close()
        for panel in self.panels.values():
            panel.close()
        self.panels = {}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = f"ClustersDashboard({self.only or self.title})"
        return bundle


__all__ = ["ClustersDashboard", "ClusterPanel"]
