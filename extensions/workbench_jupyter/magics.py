"""The ``%workbench`` magic and the ``Workbench`` configurable behind ``%config Workbench.*``."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Float, Int
from traitlets.config import Configurable

import workbench
from workbench.stack import environment_stack
from workbench_jupyter.connections import Connection, connections
from workbench_jupyter.dashboard import Dashboard, EventFeedDashboard


def stack_rows(stack: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(service, endpoint, state) rows of a running stack's status, credentials left out."""
    if not stack:
        return []
    answering = stack.get("answering", {})
    rows = []
    for system, values in stack.get("endpoints", {}).items():
        for key, value in values.items():
            if key == "processes":
                rows += [(f"{system} {p['type']}", p["address"], f"pid {p['pid']}") for p in value]
            elif isinstance(value, (str, int)) and key not in {"user", "port"}:
                state = answering.get(f"{system}.{key}")
                rows.append((f"{system} {key}", str(value),
                             "" if state is None else ("answering" if state else "NOT ANSWERING")))
    return rows


@dataclass
class WorkbenchStatus:
    """What ``%workbench`` shows: the version and every connection, as text and as an HTML table."""

    version: str
    connections: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, kind, target, status
    #: the embedded stack the notebook was opened with (``workbench lab``): (service, endpoint, state)
    stack: list[tuple[str, str, str]] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"workbench {self.version}"]
        if self.stack:
            lines.append("stack:")
            # No column padding: endpoints and paths vary in length from machine to machine.
            lines += [f"  {service}: {endpoint}" + (f" ({state})" if state else "")
                      for service, endpoint, state in self.stack]
        if not self.connections:
            lines.append("no connections")
        for name, kind, target, status in self.connections:
            lines.append(f"  {name:<16} {kind:<10} {target:<28} {status}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.connections:
            body = "<p>no connections</p>"
        else:
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                           for row in self.connections)
            body = ("<table><tr><th>name</th><th>kind</th><th>target</th><th>status</th></tr>"
                    f"{rows}</table>")
        if self.stack:
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                           for row in self.stack)
            body = ("<p>stack</p><table><tr><th>service</th><th>endpoint</th><th>state</th></tr>"
                    f"{rows}</table>") + body
        return f"<div class='workbench-status'><b>workbench {html.escape(self.version)}</b>{body}</div>"


@magics_class
class Workbench(Magics, Configurable):
    """Magics of the workbench extension; options are set with ``%config Workbench.<name> = value``."""

    dashboard_max_rate = Float(10.0, config=True,
                               help="Most widget updates per second a dashboard sends to the browser.")
    feed_length = Int(15, config=True, help="How many recent events an event feed dashboard shows.")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.dashboards: list[Dashboard] = []

    def status(self) -> WorkbenchStatus:
        return WorkbenchStatus(
            version=workbench.__version__,
            connections=[(c.name, c.kind, c.target, c.status()) for c in connections],
            stack=stack_rows(environment_stack()))

    def open_dashboard(self, dashboard: Dashboard) -> Dashboard:
        """Track a dashboard so unloading the extension closes it."""
        self.dashboards = [d for d in self.dashboards if not d.closed] + [dashboard]
        return dashboard

    def close_dashboards(self) -> None:
        for dashboard in self.dashboards:
            dashboard.close()
        self.dashboards = []

    @magic_arguments()
    @argument("action", nargs="?", default="status", choices=["status", "events", "dashboard"],
              help="status (default): version, stack and connections; events: a live feed of a "
                   "connection's events; dashboard: one live dashboard of the whole stack")
    @argument("name", nargs="?", help="connection name (for events)")
    @line_magic("workbench")
    def workbench_magic(self, line: str) -> Any:
        """Show workbench's version and connections, or a live event feed of one connection.

        ::

            %workbench
            %workbench events domain
            %workbench dashboard          # domain, zdb, commits, inventory, clusters in tabs
        """
        try:
            args = parse_argstring(self.workbench_magic, line)
        except SystemExit as exc:  # `-h` makes argparse exit; a notebook wants a short message
            raise UsageError(f"%workbench: bad arguments: {line!r}") from exc
        if args.action == "status":
            return self.status()
        if args.action == "dashboard":
            return self.open_dashboard(self._stack_dashboard())
        return self.open_dashboard(self._event_feed(args.name))

    def _stack_dashboard(self) -> Any:
        from workbench_jupyter.stack_dashboard import build_stack_dashboard

        stack = environment_stack()
        if stack is None:
            raise UsageError("no running workbench stack: start one with `workbench up` (it is found in "
                             "$WORKBENCH_STATE_DIR or ~/.workbench), or run `stack = workbench.stack.use_stack()`")
        return build_stack_dashboard(stack, self.shell.run_line_magic)

    def _event_feed(self, name: str | None) -> Dashboard:
        if not name:
            raise UsageError("%workbench events NAME: give the name of a connection (see %workbench)")
        connection: Connection | None = connections.get(name)
        if connection is None:
            known = ", ".join(c.name for c in connections) or "none"
            raise UsageError(f"no connection named {name!r} (connections: {known})")
        if not hasattr(connection.client, "add_listener"):
            raise UsageError(f"connection {name!r} has no live events")
        return EventFeedDashboard(connection.client, limit=self.feed_length, title=name,
                                  max_rate=self.dashboard_max_rate)
