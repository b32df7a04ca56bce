"""A live dashboard of a management domain: peers, databases, processes, descriptions and an event log.

Everything shown comes from the ``Domain`` client's listener events; nothing polls. When the
dashboard subscribes, the client replays what already runs (``peer_joined``, ``database_joined``,
``process_joined``), so the tables start complete and then follow every change. Events are folded
into plain Python state on the client's dispatcher thread (``peers``, ``processes``,
``databases``, ``descriptions``, ``log``) and pushed into the widgets at most ``max_rate`` times a
second by the render thread of ``Dashboard``.

Buttons act on the domain: stop or kill the chosen process, shut down the chosen database, start
a transaction engine of it on the chosen peer, start or stop the chosen description. An action runs in a thread of its own (a shutdown
waits for its processes to leave, which must not freeze the kernel) and its outcome goes to the
event log; the tables change when the domain's events say so, never on the button's word.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Any, Callable

import ipywidgets as widgets

from workbench.events import CLOSED, Event
from workbench_jupyter.dashboard import DEFAULT_MAX_RATE, Dashboard

DESCRIPTION_COLUMNS = ["description", "template", "status", "started", "variables"]
#: the events that change the process table
_PROCESS_EVENTS = frozenset({"process_joined", "process_status_changed"})


def process_row(process: Any, status: str | None = None) -> dict[str, Any]:
    """A process as a table row (what ``%domain processes`` and the dashboard show)."""
    return {"process": str(process), "database": process.database_name, "type": process.type,
            "hostname": process.hostname, "port": process.port, "pid": process.pid,
            "status": status or process.status, "peer": process.peer_id, "id": process.id}


def peer_row(peer: Any) -> dict[str, Any]:
    """A peer as a table row."""
    return {"peer": peer.id, "hostname": peer.hostname, "port": peer.port,
            "role": "broker" if peer.is_broker else "agent",
            "tags": ", ".join(f"{k}={v}" for k, v in sorted(peer.tags.items()))}


def description_row(description: Any) -> dict[str, Any]:
    """A database description as a table row: name, template, status, whether started, variables."""
    variables = getattr(description, "variables", None) or {}
    return {"description": description.name, "template": description.template_name,
            "status": description.status, "started": bool(description.started),
            "variables": ", ".join(f"{k}={v}" for k, v in sorted(variables.items()))}


def database_summary(name: str, processes: list[dict[str, Any]]) -> dict[str, Any]:
    """One database's row: how many SMs and TEs it runs and an overall status."""
    sms = [p for p in processes if p["type"] == "SM"]
    tes = [p for p in processes if p["type"] == "TE"]
    states = {p["status"] for p in processes}
    if not processes:
        status = "NONE"
    elif states == {"RUNNING"} and sms and tes:
        status = "RUNNING"
    elif "STARTING" in states:
        status = "STARTING"
    else:
        status = ",".join(sorted(states))
    return {"database": name, "storage_managers": len(sms), "transaction_engines": len(tes),
            "status": status}


def shutdown_wait(wait_seconds: float | None) -> float:
    """How long a shutdown waits for each group (TEs, then SMs) to leave.

    A shutdown always waits, or its SMs would stop under TEs still serving: None (the setting
    for "do not wait" elsewhere) means the default 30 s, 0 means without limit (a day).
    """
    if wait_seconds is None:
        return 30.0
    return wait_seconds if wait_seconds > 0 else 86400.0


def describe_event(event: Event) -> str:
    """One event as a line of the log: ``process_joined localhost:50450 [pid=48802] (TE)``."""
    args = event.args
    if event.kind == "process_status_changed" and len(args) == 2:
        return f"{args[0]} is {args[1]}"
    if event.kind == "process_failed" and len(args) == 2:
        return f"on {args[0]}: {args[1]}"
    if event.kind == "reconciler_action" and len(args) == 3:
        return f"{getattr(args[0], 'name', args[0])}: {args[1]} {args[2]}".rstrip()
    if event.kind == "description_changed" and args:
        return str(args[0])
    return ", ".join(str(getattr(a, "name", a)) if event.kind.startswith("database") else str(a) for a in args)


_CELL = "style='padding:2px 12px 2px 0;text-align:left;vertical-align:top'"


def _table(css: str, rows: list[dict[str, Any]], columns: list[str], empty: str) -> str:
    title = css.split("-", 1)[1]  # domain-processes -> processes
    head = "".join(f"<th {_CELL}>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td {_CELL}>{html.escape(str(row.get(c, '')))}</td>" for c in columns)
                   + "</tr>" for row in rows)
    if not rows:
        body = f"<tr><td {_CELL} colspan={len(columns)}>{html.escape(empty)}</td></tr>"
    return (f"<table class='{css}' style='border-collapse:collapse;margin:4px 0 8px 0'>"
            f"<caption style='text-align:left;font-weight:bold'>{html.escape(title)}</caption>"
            f"<tr style='border-bottom:1px solid #ccc'>{head}</tr>{body}</table>")


class DomainDashboard(Dashboard):
    """Live view of a domain, fed by a ``Domain`` client (or anything forwarding its listeners).

    ::

        d = Domain("localhost:48004", "domain", "bird")
        dash = DomainDashboard(d, title="localhost:48004")
        dash                                       # displays the widget
        dash.wait_for(lambda s: len(s.processes) == 2)
        dash.processes                             # {'localhost:48005/4711': {'status': 'RUNNING', ...}}
        dash.close()

    Plain state, for tests and code: ``peers`` and ``processes`` (id -> row), ``databases``
    (name -> summary row), ``descriptions`` (name -> row), ``log`` (newest first, at most
    ``log_length`` lines), ``closed_by_source``. ``start_te(database, peer)`` is what the
    "Start TE" button calls (default: ``peer.start_transaction_engine(database)``), so a caller
    can pass the options its databases need.
    """

    def __init__(self, domain: Any, title: str = "domain", log_length: int = 20,
                 max_rate: float = DEFAULT_MAX_RATE,
                 start_te: Callable[[str, Any], Any] | None = None,
                 wait_seconds: float | None = 30.0) -> None:
        self.domain = domain
        self.title = title
        self.wait_seconds = wait_seconds
        self.start_te = start_te or (lambda database, peer: peer.start_transaction_engine(database))
        self.peers: dict[str, dict[str, Any]] = {}
        self.processes: dict[str, dict[str, Any]] = {}
        self.descriptions: dict[str, dict[str, Any]] = {}
        self.log: deque[str] = deque(maxlen=log_length)
        self.closed_by_source = False
        self.actions: list[threading.Thread] = []
        self._process_objects: dict[str, Any] = {}
        self._peer_objects: dict[str, Any] = {}
        self._database_names: set[str] = set()
        super().__init__(domain, max_rate=max_rate)

    @property
    def databases(self) -> dict[str, dict[str, Any]]:
        """Database name -> summary row (SM and TE counts, status), from the processes seen."""
        with self._lock:
            names = sorted(self._database_names | {p["database"] for p in self.processes.values()})
            return {name: database_summary(name, [p for p in self.processes.values() if p["database"] == name])
                    for name in names}

    # -- widgets --------------------------------------------------------------------------------
    def build(self) -> widgets.Widget:
        self._progress = threading.Condition(self._lock)
        self.header = widgets.HTML(value=f"<b>{html.escape(self.title)}</b>: waiting for the domain")
        self.peers_table = widgets.HTML(value="")
        self.databases_table = widgets.HTML(value="")
        self.processes_table = widgets.HTML(value="")
        self.descriptions_table = widgets.HTML(value="")
        self.log_view = widgets.HTML(value="")
        self.process_picker = widgets.Dropdown(description="process", options=[])
        self.stop_button = widgets.Button(description="Stop", tooltip="shut the process down cleanly")
        self.kill_button = widgets.Button(description="Kill", button_style="danger", tooltip="kill -9")
        self.database_picker = widgets.Dropdown(description="database", options=[])
        self.peer_picker = widgets.Dropdown(description="on peer", options=[])
        self.shutdown_button = widgets.Button(description="Shut down", button_style="warning",
                                              tooltip="stop its TEs, then its SMs")
        self.start_te_button = widgets.Button(description="Start TE", button_style="success",
                                              tooltip="start a transaction engine on the chosen peer")
        self.description_picker = widgets.Dropdown(description="description", options=[])
        self.start_description_button = widgets.Button(description="Start description", button_style="success",
                                                       tooltip="the brokers start it and keep it running")
        self.stop_description_button = widgets.Button(description="Stop description", tooltip="let its processes go")
        self.start_description_button.on_click(lambda _: self.start_description())
        self.stop_description_button.on_click(lambda _: self.stop_description())
        self.stop_button.on_click(lambda _: self.stop_process(kill=False))
        self.kill_button.on_click(lambda _: self.stop_process(kill=True))
        self.shutdown_button.on_click(lambda _: self.shutdown_database())
        self.start_te_button.on_click(lambda _: self.start_transaction_engine())
        controls = widgets.VBox([
            widgets.HBox([self.process_picker, self.stop_button, self.kill_button]),
            widgets.HBox([self.database_picker, self.peer_picker, self.start_te_button, self.shutdown_button]),
            widgets.HBox([self.description_picker, self.start_description_button, self.stop_description_button]),
        ])
        return widgets.VBox([self.header, self.peers_table, self.databases_table, self.processes_table,
                             self.descriptions_table, controls, self.log_view])

    # -- events (dispatcher thread) -------------------------------------------------------------
    def apply(self, event: Event) -> None:
        kind, args = event.kind, event.args
        if kind == "peer_joined":
            self.peers[args[0].id] = peer_row(args[0])
            self._peer_objects[args[0].id] = args[0]
        elif kind == "peer_left":
            self.peers.pop(args[0].id, None)
            self._peer_objects.pop(args[0].id, None)
        elif kind in _PROCESS_EVENTS:
            process = args[0]
            self.processes[process.id] = process_row(process, args[1] if len(args) > 1 else None)
            self._process_objects[process.id] = process
        elif kind == "process_left":
            self.processes.pop(args[0].id, None)
            self._process_objects.pop(args[0].id, None)
        elif kind == "database_joined":
            self._database_names.add(args[0].name)
        elif kind == "database_left":
            self._database_names.discard(args[0].name)
        elif kind == "description_changed":
            description = args[0]
            # A deleted description is gone from the client by the time its event arrives.
            if any(d is description for d in self.domain.descriptions):
                self.descriptions[description.name] = description_row(description)
            else:
                self.descriptions.pop(description.name, None)
        elif kind == CLOSED:
            self.closed_by_source = True
        self.log.appendleft(f"{time.strftime('%H:%M:%S', time.localtime(event.time))} {kind} "
                            f"{describe_event(event)}".rstrip())
        self._progress.notify_all()

    # -- actions (widget thread, then a thread of their own) ------------------------------------
    def stop_process(self, kill: bool = False, process_id: str | None = None) -> threading.Thread | None:
        """Shut down (or kill) the process chosen in the picker; returns the action's thread."""
        process = self._process_objects.get(process_id or self.process_picker.value or "")
        if process is None:
            self._note("stop: choose a running process first")
            return None
        verb = "kill" if kill else "stop"
        return self._act(f"{verb} {process}", process.kill if kill else process.shutdown)

    def shutdown_database(self, name: str | None = None) -> threading.Thread | None:
        """Shut down the database chosen in the picker (TEs first, then SMs)."""
        name = name or self.database_picker.value
        database = self.domain.get_database(name) if name else None
        if database is None:
            self._note("shut down: choose a database first")
            return None
        return self._act(f"shut down {name}", lambda: database.shutdown(
            wait_seconds=shutdown_wait(self.wait_seconds)))

    def start_transaction_engine(self, database: str | None = None,
                                 peer_id: str | None = None) -> threading.Thread | None:
        """Start a TE of the chosen database on the chosen peer."""
        database = database or self.database_picker.value
        peer = self._peer_objects.get(peer_id or self.peer_picker.value or "")
        if not database or peer is None:
            self._note("start TE: choose a database and a peer first")
            return None
        return self._act(f"start TE of {database} on {peer.id}", lambda: self.start_te(database, peer))

    def start_description(self, name: str | None = None) -> threading.Thread | None:
        """Start the description chosen in the picker (the reconciler starts its processes)."""
        name = name or self.description_picker.value
        if not name:
            self._note("start description: choose a description first")
            return None
        return self._act(f"start description {name}", lambda: self.domain.start_description(name))

    def stop_description(self, name: str | None = None) -> threading.Thread | None:
        """Stop the description chosen in the picker (its processes stop, TEs first)."""
        name = name or self.description_picker.value
        if not name:
            self._note("stop description: choose a description first")
            return None
        return self._act(f"stop description {name}", lambda: self.domain.stop_description(name))

    def _act(self, what: str, action: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - shown in the log, the kernel goes on
                self._note(f"{what} failed: {getattr(exc, 'message', exc)}")
            else:
                self._note(f"{what}: done")

        self._note(f"{what} requested")
        thread = threading.Thread(target=run, daemon=True, name=f"domain-action-{what}")
        self.actions = [t for t in self.actions if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _note(self, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            self.log.appendleft(f"{time.strftime('%H:%M:%S')} action {text}")
            self._progress.notify_all()
        self.refresh()

    # -- rendering ------------------------------------------------------------------------------
    def render(self) -> None:
        databases = self.databases
        state = "closed" if self.closed_by_source else "connected"
        header = (f"<b>{html.escape(self.title)}</b>: {len(self.peers)} peers · {len(databases)} databases · "
                  f"{len(self.processes)} processes · {state}")
        processes = sorted(self.processes.values(), key=lambda p: (p["database"], p["type"], p["process"]))
        tables = [
            (self.header, header),
            (self.peers_table, _table("domain-peers", sorted(self.peers.values(), key=lambda p: p["peer"]),
                                      ["peer", "role", "tags"], "no peers")),
            (self.databases_table, _table("domain-databases", list(databases.values()),
                                          ["database", "storage_managers", "transaction_engines", "status"],
                                          "no databases")),
            (self.processes_table, _table("domain-processes", processes,
                                          ["process", "database", "type", "status", "peer"], "no processes")),
            (self.descriptions_table, self._descriptions_html()),
            (self.log_view, "<div class='domain-log'><b>events</b><br>"
                            + "<br>".join(html.escape(line) for line in self.log) + "</div>"),
        ]
        for widget, value in tables:
            if widget.value != value:
                with widget.hold_sync():
                    widget.value = value
        self._set_options(self.process_picker, [(p["process"], pid) for pid, p in
                                                sorted(self.processes.items(), key=lambda i: i[1]["process"])])
        self._set_options(self.database_picker, [(name, name) for name in databases])
        self._set_options(self.peer_picker, [(peer_id, peer_id) for peer_id in sorted(self.peers)])
        self._set_options(self.description_picker, [(name, name) for name in sorted(self.descriptions)])
        self._progress.notify_all()

    def _descriptions_html(self) -> str:
        if not self.descriptions:
            return ""
        return _table("domain-descriptions", [self.descriptions[k] for k in sorted(self.descriptions)],
                      DESCRIPTION_COLUMNS, "")

    @staticmethod
    def _set_options(picker: widgets.Dropdown, options: list[tuple[str, str]]) -> None:
        if list(picker.options) == options:
            return
        keep = picker.value
        with picker.hold_sync():
            picker.options = options
            values = [value for _, value in options]
            picker.value = keep if keep in values else (values[0] if values else None)

    # -- waiting --------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[["DomainDashboard"], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(dashboard)`` holds after an event or a render (False on timeout).

        ``dash.wait_for(lambda d: not d.processes)`` after a shutdown, for example.
        """
        with self._lock:
            return self._progress.wait_for(lambda: predicate(self) or self.closed, timeout) and not self.closed

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = f"DomainDashboard({self.title})"
        return bundle
