"""The ``%clusters`` magic: build, watch and operate datastore clusters from a notebook.

::

    %clusters                                         # a live dashboard of every cluster
    %clusters create cache --datastore redis-7 --size 3          # its own live dashboard
    %clusters create cache --datastore redis-7 --size 3 --wait   # block until active
    %clusters list                                    # a DataFrame
    %clusters show cache                              # instances with address, port, role, status
    %clusters perform cache 'redis-cli -p $WB_PORT info replication'  # each instance's port
    %clusters out << perform cache 'uptime'           # ... and kept: out.outputs["cache-1"]
    %clusters info << show cache                      # keep the result in `info`
    %clusters backup cache
    %clusters restore BACKUP copy --size 1 --wait
    %clusters add-node cache --count 1
    %clusters destroy cache

    %%clusters perform cache                          # the cell is one shell script
    redis-cli -p $WB_PORT ping                        # also $WB_ADDRESS, $WB_ROLE, $WB_DATASTORE

State lives where ``%config ClustersMagic.state_dir`` says (default: the clusters settings);
``%config ClustersMagic`` lists every option. Errors are one-line ``UsageError``s.
"""

from __future__ import annotations

import concurrent.futures
import html
import queue
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Float, Int, Unicode, observe

from workbench.clusters import (
    ClustersError,
    ClusterStore,
    ClusterView,
    InstanceView,
    NotFoundError,
    Settings,
    TaskHandle,
    TaskRunner,
    split_datastore_ref,
)
from workbench.errors import WorkbenchError
from workbench_jupyter.sessions import DashboardSession
from workbench_jupyter.subsystem_magic import CommandTable, SubsystemMagic, capture_words, secrets_in, split_capture

#: commands whose first argument is a cluster name (completed with the names of the store)
CLUSTER_COMMANDS = ("dashboard", "show", "perform", "backup", "backups", "add-node", "destroy")
USAGE = ("%clusters [dashboard [NAME]] | create NAME --datastore MANAGER-VERSION [--size N] [--provider P] "
         "[--wait] | list | show NAME | perform CLUSTER 'cmd' ... | backup NAME | backups [NAME] | "
         "restore BACKUP NAME [--size N] [--wait] | add-node NAME [--count N] [--wait] | destroy NAME [--wait] "
         "| VAR << COMMAND")


# -- results ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterSummary:
    """What ``%clusters show`` returns: the cluster and its instances (addresses included)."""

    view: ClusterView

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def status(self) -> str:
        return self.view.status

    @property
    def instances(self) -> tuple[InstanceView, ...]:
        return self.view.instances

    @property
    def primary(self) -> InstanceView:
        return next(i for i in self.view.instances if i.role == "primary")

    @property
    def replicas(self) -> list[InstanceView]:
        return [i for i in self.view.instances if i.role == "replica"]

    def frame(self) -> Any:
        """The instances as a pandas DataFrame."""
        import pandas

        return pandas.DataFrame([{"name": i.name, "role": i.role, "addr": i.addr, "port": i.port,
                                  "status": i.status, "progress": i.progress, "message": i.message}
                                 for i in self.view.instances])

    def __repr__(self) -> str:
        v = self.view
        lines = [f"{v.name} ({v.datastore}, {v.provider}): {v.status}" + (f" - {v.message}" if v.message else "")]
        for i in v.instances:
            where = f"{i.addr}:{i.port}" if i.addr else "-"
            lines.append(f"  {i.name:<14} {i.role:<8} {where:<22} {i.status}"
                         + (f" - {i.message}" if i.message else ""))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        v = self.view
        rows = "".join(f"<tr><td>{html.escape(i.name)}</td><td>{html.escape(i.role)}</td>"
                       f"<td>{html.escape(f'{i.addr}:{i.port}' if i.addr else '-')}</td>"
                       f"<td>{html.escape(i.status)}</td><td>{html.escape(i.message)}</td></tr>"
                       for i in v.instances)
        return (f"<div class='clusters-show'><b>{html.escape(v.name)}</b> ({html.escape(v.datastore)}, "
                f"{html.escape(v.provider)}): {html.escape(v.status)}"
                f"<table><tr><th>instance</th><th>role</th><th>address</th><th>status</th><th>message</th></tr>"
                f"{rows}</table></div>")


@dataclass(frozen=True)
class PerformResult:
    """What ``%clusters perform`` returns: each instance's output of each command."""

    target: str
    commands: tuple[str, ...]
    outputs: dict[str, list[str]]

    def __repr__(self) -> str:
        return (f"perform on {self.target}: {len(self.commands)} command(s) on "
                f"{len(self.outputs)} instance(s), all succeeded")


# -- the state ---------------------------------------------------------------------------------------
class ClustersSession(DashboardSession):
    """The state ``%clusters`` works on: the store, its task runner, and the dashboards that watch it.

    One at a time (named "clusters"): opened by the first command, closed when a setting changes
    (the next command opens the new state) and on unload. ``%workbench`` lists the store itself.
    """

    def __init__(self, store: ClusterStore) -> None:
        super().__init__()
        self.store = store
        self.runner = TaskRunner(store)
        self.target = store.engine.url.render_as_string(hide_password=True)

    def _close(self) -> None:
        """Cancel running tasks, close the store (after the dashboards)."""
        self.runner.close(cancel=True, timeout=60)
        self.store.close()


# -- argument parsers of the commands ------------------------------------------------------------------
@magic_arguments(name="clusters create")
@argument("name", help="cluster name (lower-case letters, digits and -)")
@argument("--datastore", required=True, help="MANAGER-VERSION (redis-7, mysql-10.11, postgresql-15) or MANAGER")
@argument("--version", help="datastore version, when --datastore names only the manager")
@argument("--size", type=int, default=1, help="number of nodes: one primary and SIZE-1 replicas (default 1)")
@argument("--provider", help="where servers come from (default: the settings' provider)")
@argument("--wait", action="store_true", help="block until the cluster is active (default: show its dashboard)")
def _create_arguments(line: str) -> None:
    """Create a cluster."""


@magic_arguments(name="clusters perform")
@argument("target", help="a cluster (every instance) or one instance; then the shell commands, each quoted")
def _perform_arguments(line: str) -> None:
    """Run shell commands on instances."""


@magic_arguments(name="clusters restore")
@argument("backup", help="name of a backup (see %%clusters backups)")
@argument("name", help="name of the new cluster")
@argument("--size", type=int, default=1)
@argument("--provider")
@argument("--wait", action="store_true")
def _restore_arguments(line: str) -> None:
    """Create a cluster from a backup."""


@magic_arguments(name="clusters add-node")
@argument("name")
@argument("--count", type=int, default=1)
@argument("--wait", action="store_true")
def _add_node_arguments(line: str) -> None:
    """Add replicas to a cluster."""


@magic_arguments(name="clusters")
@argument("name", nargs="?")
@argument("--wait", action="store_true")
def _named_arguments(line: str) -> None:
    """A command that takes a cluster name."""


# -- the magics ---------------------------------------------------------------------------------------
@magics_class
class ClustersMagic(SubsystemMagic):
    """Datastore clusters in notebooks; options are set with ``%config ClustersMagic.<name> = value``."""

    family = "clusters"
    usage = USAGE

    state_dir = Unicode("", config=True, help="Where the state database, keys and backups live "
                        "(default: the clusters settings' state_dir).")
    instances_dir = Unicode("", config=True, help="Root of the local provider's instance directories "
                            "(default: the clusters settings').")
    database_url = Unicode("", config=True, help="SQLAlchemy URL of the state database (default: SQLite in "
                           "state_dir).")
    provider = Unicode("", config=True, help="Provider of new clusters (default: the settings').")
    settings_file = Unicode("", config=True, help="A clusters TOML settings file to start from.")
    timeout = Float(600.0, config=True, help="Seconds --wait, backup and perform wait for their task.")
    dashboard_max_rate = Float(4.0, config=True, help="Most widget updates per second of a clusters dashboard.")
    log_lines = Int(12, config=True, help="How many task log lines a dashboard shows per cluster.")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._lock = threading.Lock()  # one state, even when two threads ask for it at once
        self.add_completer(self._complete)

    def commands(self) -> CommandTable:
        return {"dashboard": (_named_arguments, self.cmd_dashboard), "create": (_create_arguments, self.cmd_create),
                "list": (None, self.cmd_list), "show": (_named_arguments, self.cmd_show),
                "perform": (None, self.cmd_perform), "backup": (_named_arguments, self.cmd_backup),
                "backups": (_named_arguments, self.cmd_backups), "restore": (_restore_arguments, self.cmd_restore),
                "add-node": (_add_node_arguments, self.cmd_add_node), "destroy": (_named_arguments, self.cmd_destroy)}

    def secrets(self) -> tuple[str, ...]:
        # the state database's password, from %config ClustersMagic.database_url or the settings file
        urls = [self.database_url] + [session.store.engine.url.render_as_string(hide_password=False)
                                      for session in self.sessions.values()]
        return secrets_in(" ".join(urls))

    # -- state ------------------------------------------------------------------------------------
    def settings(self) -> Settings:
        overrides = {name: getattr(self, name) or None
                     for name in ("state_dir", "instances_dir", "database_url", "provider")}
        try:
            return Settings.load(self.settings_file or None, **overrides)
        except ClustersError as exc:
            raise UsageError(f"clusters: {exc.message}") from None

    @property
    def state(self) -> ClustersSession:
        """The open state, opened now if there is none."""
        with self._lock:
            session: ClustersSession | None = self.sessions.current_session
            if session is None:
                settings = self.settings()
                try:
                    store = ClusterStore(settings=settings)
                except Exception as exc:  # noqa: BLE001 - an unreachable or unusable database: one line
                    raise UsageError(f"clusters: cannot open the state database {settings.db_url}: {exc}") from None
                session = self.sessions.add("clusters", ClustersSession(store), client=store)
            return session

    @property
    def store(self) -> ClusterStore:
        return self.state.store

    @property
    def runner(self) -> TaskRunner:
        return self.state.runner

    @observe("state_dir", "instances_dir", "database_url", "provider", "settings_file")
    def _settings_changed(self, change: dict[str, Any]) -> None:
        # the next command opens the store again with the new settings
        self.sessions.close_all()

    # -- the magic --------------------------------------------------------------------------------
    @line_cell_magic("clusters")
    def clusters(self, line: str, cell: str | None = None) -> Any:
        """Build, watch and operate datastore clusters (see ``%clusters?`` for every command).

        ::

            %clusters                                    live dashboard
            %clusters create NAME --datastore redis-7 --size 3 [--provider P] [--wait]
            %clusters list | show NAME | backups [NAME]
            %clusters perform CLUSTER 'cmd' ['cmd'...]   output streamed into the cell; each
                                                         instance's $WB_PORT, $WB_ADDRESS, $WB_ROLE
                                                         and $WB_DATASTORE are set for the commands
            %clusters backup NAME | restore BACKUP NAME [--size N] [--wait]
            %clusters add-node NAME [--count N] [--wait] | destroy NAME [--wait]
            %clusters VAR << COMMAND                     keep the result in VAR
            %%clusters perform CLUSTER                   the cell is one shell script
        """
        return self.guarded(line + "\n" + (cell or ""), lambda: self._run(line, cell))

    def _run(self, line: str, cell: str | None) -> Any:
        capture, line = split_capture(line)
        command, _, args = line.strip().partition(" ")
        command = command or "dashboard"
        if command not in self.commands():
            raise self.unknown(command)
        if cell is not None and command != "perform":
            raise UsageError("clusters: only perform takes a cell (%%clusters perform CLUSTER)")
        try:
            result = self.dispatch(command, args.strip(), cell)
        except WorkbenchError as exc:
            raise UsageError(f"clusters {command}: {exc.message}") from None
        if capture is None and command == "perform":
            return None  # perform's output is already in the cell: its result is for `VAR << perform ...` only
        return self.keep(capture, result)

    # -- commands ---------------------------------------------------------------------------------
    def cmd_dashboard(self, parsed: Any, cell: str | None) -> Any:
        name = parsed.name
        if name:
            self.store.get_cluster(name)  # NotFoundError -> a short message, before any widget exists
        return self.open_dashboard(name)

    def open_dashboard(self, only: str | None = None) -> Any:
        from workbench_jupyter.clusters_dashboard import ClustersDashboard

        state = self.state
        dashboard = ClustersDashboard(state.store, actions=state.runner, only=only, log_lines=self.log_lines,
                                      max_rate=self.dashboard_max_rate, title=only or "clusters")
        return state.add_dashboard(dashboard)

    def cmd_create(self, parsed: Any, cell: str | None) -> Any:
        datastore = self._datastore(parsed.datastore, parsed.version)
        handle = self.runner.create_cluster(parsed.name, datastore, parsed.size, parsed.provider)
        return self._follow(handle, parsed.name, parsed.wait, f"create {parsed.name}")

    def _follow(self, handle: TaskHandle, name: str, wait: bool, what: str) -> Any:
        """With ``wait``: block until the task ends and show the cluster; else its live dashboard."""
        if not wait:
            return self.open_dashboard(name)
        self._wait(handle, what)
        return self._summary(name)

    def _datastore(self, ref: str, version: str | None) -> Any:
        """The datastore ``ref`` ("redis-7", "redis" + version); a known manager's new version is registered."""

        manager, ref_version = split_datastore_ref(ref)
        version = version or ref_version
        try:
            return self.store.get_datastore(f"{manager}-{version}" if version else manager)
        except NotFoundError:
            if manager not in self.store.settings.datastore_managers:
                known = ", ".join(sorted(self.store.settings.datastore_managers))
                raise UsageError(f"clusters create: unknown datastore {manager!r} (known: {known})") from None
            if not version:
                raise UsageError(f"clusters create: give a version: --datastore {manager}-VERSION") from None
            return self.store.add_datastore(manager, version)

    def cmd_list(self, args: str, cell: str | None) -> Any:
        if args:
            raise UsageError(f"clusters list: takes no arguments (got {args!r})")
        import pandas

        columns = ["name", "datastore", "size", "provider", "status", "message"]
        rows = [{"name": v.name, "datastore": v.datastore, "size": v.size, "provider": v.provider,
                 "status": v.status, "message": v.message} for v in self.store.cluster_views()]
        return pandas.DataFrame(rows, columns=columns)

    def cmd_show(self, parsed: Any, cell: str | None) -> ClusterSummary:
        name = parsed.name
        if not name:
            raise UsageError("clusters show: give a cluster name")
        return self._summary(name)

    def _summary(self, name: str) -> ClusterSummary:
        return ClusterSummary(ClusterView.of(self.store.get_cluster(name)))

    def cmd_perform(self, args: str, cell: str | None) -> PerformResult:
        # shell-style splitting: IPython's own keeps the quotes around each command
        try:
            words = shlex.split(args)
        except ValueError as exc:
            raise UsageError(f"clusters perform: {exc} in {args!r}") from None
        parsed = self.parse(_perform_arguments, shlex.join(words[:1]), "perform")
        commands = words[1:]
        if cell is not None:
            if commands:
                raise UsageError("clusters perform: give the commands on the line or in the cell, not both")
            commands = [cell]
        if not commands or not all(c.strip() for c in commands):
            raise UsageError("clusters perform: give a command, e.g. %clusters perform cache 'uptime'")
        self._wait_until_built(parsed.target)
        lines: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        handle = self.runner.perform(parsed.target, "perform", *commands,
                                     on_output=lambda instance, line: lines.put((instance, line)))
        # Lines are printed here, on the cell's own thread, as they arrive: output printed from the
        # task's thread could land in whatever cell runs when it is written.
        outputs = self._wait(handle, f"perform on {parsed.target}",
                             each=lambda: _drain(lines, lambda item: print(f"[{item[0]}] {item[1]}", flush=True)))
        return PerformResult(parsed.target, tuple(commands), outputs)

    def cmd_backup(self, parsed: Any, cell: str | None) -> Any:
        name = parsed.name
        if not name:
            raise UsageError("clusters backup: give a cluster name")
        record = self._wait(self.runner.backup_cluster(name), f"backup {name}")
        print(f"backup {record.name} of {name}: {record.size} bytes, sha256 {record.sha256[:12]}")
        return record

    def cmd_backups(self, parsed: Any, cell: str | None) -> Any:
        import pandas

        name = parsed.name
        if name:
            self.store.get_cluster(name)
        columns = ["name", "cluster", "datastore", "status", "size", "created"]
        rows = [{"name": b.name, "cluster": b.cluster_name, "datastore": b.datastore.name, "status": b.status,
                 "size": b.size, "created": b.created} for b in self.store.backups(name)]
        return pandas.DataFrame(rows, columns=columns)

    def cmd_restore(self, parsed: Any, cell: str | None) -> Any:
        handle = self.runner.restore_backup(parsed.backup, parsed.name, parsed.size, parsed.provider)
        return self._follow(handle, parsed.name, parsed.wait, f"restore {parsed.backup} into {parsed.name}")

    def cmd_add_node(self, parsed: Any, cell: str | None) -> Any:
        handle = self.runner.add_nodes(parsed.name, parsed.count)
        return self._follow(handle, parsed.name, parsed.wait, f"add-node {parsed.name}")

    def cmd_destroy(self, parsed: Any, cell: str | None) -> Any:
        if not parsed.name:
            raise UsageError("clusters destroy: give a cluster name")
        handle = self.runner.destroy_cluster(parsed.name)
        if parsed.wait:
            self._wait(handle, f"destroy {parsed.name}")
            print(f"destroyed {parsed.name}")
        else:
            print(f"destroying {parsed.name} in the background (see %clusters)")
        return None

    # -- waiting ----------------------------------------------------------------------------------
    def _wait_until_built(self, target: str) -> None:
        """Wait (up to ``timeout``) while the cluster of ``target`` is still being built.

        Run All goes from ``%clusters create cache`` (which returns at once, with its dashboard)
        straight to ``%clusters perform cache ...``: the instances have no port yet.
        """
        def status() -> str:
            try:
                return self.store.get_cluster(target).status
            except NotFoundError:
                try:
                    return self.store.get_instance(target).cluster.status
                except NotFoundError:
                    return ""  # perform itself names what is missing
        deadline = time.monotonic() + self.timeout
        if status() in ("new", "building"):
            print(f"waiting for {target} to be built...", flush=True)
        while status() in ("new", "building"):
            if time.monotonic() > deadline:
                raise UsageError(f"clusters perform: {target} is still being built after {self.timeout:g}s "
                                 "(see %clusters)")
            time.sleep(0.2)

    def _wait(self, handle: TaskHandle, what: str, each: Callable[[], None] | None = None) -> Any:
        """The task's result; its failure (or the timeout) becomes a one-line UsageError."""
        deadline = time.monotonic() + self.timeout
        while not handle.done():
            if each is not None:
                each()
            if time.monotonic() > deadline:
                raise UsageError(f"clusters: {what} not done after {self.timeout:g}s (it goes on in the "
                                 "background; see %clusters)")
            concurrent.futures.wait([handle.future], timeout=0.05)
        if each is not None:
            each()
        try:
            return handle.wait(0)
        except WorkbenchError as exc:
            raise UsageError(f"clusters: {what} failed: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001 - a notebook wants one line, not a traceback
            raise UsageError(f"clusters: {what} failed: {type(exc).__name__}: {exc}") from None

    # -- completion -------------------------------------------------------------------------------
    def _complete(self, _shell: Any, event: Any) -> list[str]:
        words = event.line.split()
        if event.line.endswith(" "):
            words.append("")
        # words[0] is %clusters; a capture `VAR <<` before the command shifts it
        words = [words[0], *capture_words(words[1:])]
        if len(words) <= 2:
            return [c for c in self.commands() if c.startswith(words[-1] if len(words) == 2 else "")]
        command, current = words[1], words[-1]
        if len(words) == 3 and command in CLUSTER_COMMANDS + ("restore",):
            try:
                if command == "restore":
                    names = [b.name for b in self.store.backups()]
                else:
                    names = [v.name for v in self.store.cluster_views()]
                    if command == "perform":
                        names += [i.name for v in self.store.cluster_views() for i in v.instances]
            except UsageError:
                return []
            return [n for n in names if n.startswith(current)]
        if command == "create" and len(words) >= 4 and words[-2] == "--datastore":
            return [f"{d.manager}-{d.version}" for d in self.store.datastores()
                    if f"{d.manager}-{d.version}".startswith(current)]
        return []


def _drain(lines: queue.SimpleQueue[Any], emit: Callable[[Any], None]) -> None:
    while True:
        try:
            emit(lines.get_nowait())
        except queue.Empty:
            return


__all__ = ["ClustersMagic", "ClusterSummary", "PerformResult"]
