"""One dashboard over the whole embedded stack: domain, zdb, commits, inventory and clusters, side by side.

``%workbench dashboard`` builds it. It connects each subsystem's magic to the stack named by
``WORKBENCH_STACK`` (through the magics' own commands, so every connection shows in
``%workbench`` and closes with the extension) and lays their live dashboards out in tabs. Each
part keeps its own listener and its own render throttle; the combined view adds no polling.
Credentials go from the stack's 0600 file straight into the connect calls and are never shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import ipywidgets as widgets

log = logging.getLogger(__name__)


@dataclass
class StackPart:
    """One subsystem's tab: its title, its dashboard (None when it could not connect) and why."""

    title: str
    dashboard: Any = None
    problem: str = ""


@dataclass
class StackDashboard:
    """Tabs of the subsystems' live dashboards; ``close()`` closes them all."""

    parts: list[StackPart] = field(default_factory=list)

    def __post_init__(self) -> None:
        children = []
        for part in self.parts:
            if part.dashboard is not None:
                children.append(part.dashboard.widget)
            else:
                children.append(widgets.HTML(f"<p>{part.title}: not connected ({_escape(part.problem)})</p>"))
        self.widget = widgets.Tab(children=children)
        for index, part in enumerate(self.parts):
            self.widget.set_title(index, part.title)

    def part(self, title: str) -> Any:
        """The dashboard of the tab titled ``title``."""
        for part in self.parts:
            if part.title == title:
                return part.dashboard
        raise KeyError(title)

    def flush(self, timeout: float = 10.0) -> bool:
        return all(part.dashboard.flush(timeout) for part in self.parts if part.dashboard is not None)

    def close(self) -> None:
        for part in self.parts:
            if part.dashboard is not None:
                part.dashboard.close()
        self.widget.close()

    @property
    def closed(self) -> bool:
        return all(part.dashboard is None or part.dashboard.closed for part in self.parts)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def build_stack_dashboard(stack: dict[str, Any], run_magic: Callable[[str, str], Any]) -> StackDashboard:
    """Connect every subsystem magic to ``stack`` (an :func:`environment_stack` result) and combine.

    ``run_magic(name, line)`` runs a line magic (``shell.run_line_magic``). A subsystem that fails
    to connect gets a tab that says why, and the others still show.
    """
    endpoints, secrets = stack.get("endpoints", {}), stack.get("secrets", {})
    steps: list[tuple[str, list[tuple[str, str]]]] = []
    if "domain" in endpoints:
        domain = secrets.get("domain", {})
        steps.append(("domain", [("domain", f"connect {endpoints['domain']['broker']} "
                                            f"{domain.get('user', 'domain')}:{domain.get('password', '')} "
                                            "--name stack"),
                                 ("domain", "-c stack dashboard")]))
    if "zdb" in endpoints:
        uri = endpoints["zdb"]["uri"].replace("PASSWORD", secrets.get("zdb", {}).get("password", ""))
        steps.append(("zdb", [("zdb", f"connect {uri}"), ("zdb", "dashboard")]))
    if "commits" in endpoints:
        line = f"connect {endpoints['commits']['url']}"
        if endpoints["commits"].get("zookeeper"):
            hosts, _, path = endpoints["commits"]["zookeeper"].partition("/")
            line += f" --zookeeper {hosts} --zk-path /{path}"
        steps.append(("commits", [("commits", line), ("commits", "")]))
    if "inventory" in endpoints and endpoints["inventory"].get("web"):
        line = f"connect {endpoints['inventory']['web']}"
        if endpoints["inventory"].get("socket"):
            line += f" --server {endpoints['inventory']['socket']}"  # where applications run
        steps.append(("inventory", [("inventory", line), ("inventory", "")]))
    if "clusters" in endpoints and endpoints["clusters"].get("state_dir"):
        state_dir = endpoints["clusters"]["state_dir"]
        calls = [("config", f"ClustersMagic.state_dir = {state_dir!r}")]
        if endpoints["clusters"].get("instances_dir"):
            calls.append(("config", f"ClustersMagic.instances_dir = {endpoints['clusters']['instances_dir']!r}"))
        steps.append(("clusters", [*calls, ("clusters", "dashboard")]))
    parts = []
    for title, calls in steps:
        part = StackPart(title)
        try:
            result = None
            for magic, line in calls:
                result = run_magic(magic, line)
            part.dashboard = result
        except Exception as exc:  # one subsystem's trouble must not hide the others
            log.warning("stack dashboard: %s: %s", title, exc)
            part.problem = _without(str(exc), secrets)
        parts.append(part)
    return StackDashboard(parts)


def _without(text: str, secrets: dict[str, dict[str, str]]) -> str:
    """``text`` with every secret of the stack masked."""
    for values in secrets.values():
        for value in values.values():
            if value:
                text = text.replace(value, "***")
    return text
