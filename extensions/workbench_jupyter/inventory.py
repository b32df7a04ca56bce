"""The ``%inventory`` / ``%%inventory`` magics: connect to an inventory, look at it, run applications on it.

::

    %inventory connect --store sqlite:////tmp/inventory.db   # the image in this kernel, served on the web
    %inventory connect http://127.0.0.1:8081                 # a running server's web port
    %inventory                                               # a live summary (updates as changes land)
    %inventory datasets /Higgs/*                             # a DataFrame
    %inventory sites                                         # a DataFrame
    %inventory data stats                                    # what /data/inventory/stats answers
    %inventory big << datasets /A*                           # keep the result in `big`

    %%inventory exec --write --title "retire old data"
    from workbench.inventory.executable import inventory, read_only
    ...

Options are set with ``%config InventoryMagic.<name> = value`` (``%config InventoryMagic`` lists them).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Float, Int, Unicode

from workbench.errors import WorkbenchError
from workbench.inventory import dataset_summary, inventory_stats, site_summary
from workbench_jupyter.sessions import DashboardSession
from workbench_jupyter.subsystem_magic import CommandTable, SubsystemMagic, disconnect_arguments, redact, split_capture

CELL_COMMANDS = ("exec", "exec-auth")
USAGE = ("%inventory connect URL|--store URL [--name NAME] | %inventory [dashboard] | %inventory datasets [PATTERN] "
         "| %inventory sites | %inventory stats | %inventory data PAGE [KEY=VALUE...] | %inventory status "
         "| %inventory disconnect [NAME] | %%inventory exec [--write] [--title T] | %%inventory exec-auth --title T "
         "| NAME << COMMAND")

_LEADING_OPTION = re.compile(r"\s*(?:-c|--connection)(?:\s+|=)(\S+)")
_DATASET_COLUMNS = ["name", "status", "data_type", "num_blocks", "num_files", "size", "sites", "is_open",
                    "software_version", "last_update"]
_SITE_COLUMNS = ["name", "host", "storage_type", "status", "backend", "usage", "quota", "num_dataset_replicas",
                 "num_block_replicas"]


# -- connections ----------------------------------------------------------------------------------

class InventorySession(DashboardSession):
    """What every ``%inventory connect`` gives: reads as plain values, change events, applications."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__()
        self.name = name
        self.target = target

    # reads
    def datasets(self, pattern: str | None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def sites(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def data(self, page: str, **parameters: Any) -> Any:
        raise NotImplementedError

    # events (forwarded to the image or the web client)
    def add_listener(self, listener: Any) -> None:
        raise NotImplementedError

    def remove_listener(self, listener: Any) -> None:
        raise NotImplementedError

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        return True

    client: Any  # an InventoryClient of the server's application port

    def run_application(self, source: str, write: bool, title: str, args: list[str],
                        timeout: float | None = None) -> "ApplicationRun":
        """Run ``source`` as an application through the server's application port."""
        result = self.client.exec_script(source, name=f"<{title}>", args=args, write=write, title=title,
                                         timeout=timeout)
        return ApplicationRun.from_result(title, write, result)

    def authorize(self, source: str, title: str, user: str | None = None) -> dict[str, Any]:
        """Authorize ``source`` (its SHA-256) to run with ``--write`` as (title, user)."""
        return self.client.authorize(source, title, user)

    def dashboard(self, max_rate: float, recent: int) -> Any:
        from workbench_jupyter.inventory_dashboard import InventoryDashboard

        dash = InventoryDashboard(self, title=f"{self.name}: {self.target}", recent=recent, max_rate=max_rate)
        return self.add_dashboard(dash)

    def connection_status(self) -> str:
        return "closed" if self._closed else "connected"



class StoreSession(InventorySession):
    """An inventory server embedded in this kernel over a store: the image lives here.

    The server (``InventoryServer``) loads the image, serves the application port and the web port on
    free loopback ports, and runs applications in forked children; reads come straight from the image
    (under its lock) and events are the image's own listeners.
    """

    def __init__(self, name: str, store_url: str, timeout: float, lazy_files: bool = False,
                 application_timeout: float = 600.0) -> None:
        from workbench.inventory import InventoryClient
        from workbench.inventory import InventoryServer
        from workbench.inventory import WebClient

        super().__init__(name, redact(store_url))
        self.server = InventoryServer(store_url, web_port=0, lazy_files=lazy_files,
                                      app_timeout=application_timeout).start()
        self.inventory = self.server.inventory
        self.web_url = self.server.web_url or ""
        self.client = InventoryClient(self.server.address, timeout=timeout)
        self.web = WebClient(self.web_url, timeout=timeout)

    def datasets(self, pattern: str | None) -> list[dict[str, Any]]:
        with self.inventory.lock:
            return [dataset_summary(d) for name, d in sorted(self.inventory.datasets.items())
                    if pattern is None or fnmatch.fnmatchcase(name, pattern)]

    def sites(self) -> list[dict[str, Any]]:
        with self.inventory.lock:
            return [site_summary(site) for _, site in sorted(self.inventory.sites.items())]

    def stats(self) -> dict[str, Any]:
        with self.inventory.lock:
            return inventory_stats(self.inventory)

    def data(self, page: str, **parameters: Any) -> Any:
        return self.web.data(page, **parameters)

    def add_listener(self, listener: Any) -> None:
        self.inventory.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        self.inventory.remove_listener(listener)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        return self.inventory.flush_events(timeout)

    def _close(self) -> None:
        self.web.close()
        self.client.close()
        self.server.stop()


class WebSession(InventorySession):
    """A running inventory server reached through its web port: ``/data`` reads, ``/events`` changes."""

    def __init__(self, name: str, url: str, timeout: float, ssl_context: Any = None,
                 server: str | None = None) -> None:
        from workbench.inventory import DEFAULT_SOCKET
        from workbench.inventory import WebClient

        super().__init__(name, url)
        self.web = WebClient(url, ssl_context=ssl_context, timeout=timeout)
        # Applications go to the application socket (this host's): the default one unless told, whose
        # server must run as root or as this user (see InventoryClient).
        self.server_address = server or DEFAULT_SOCKET
        self._server_named = server is not None
        self._timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:  # type: ignore[override]
        """The application port's client, connected on first use (reads never need it)."""
        from workbench.inventory import InventoryClient

        if self._client is None:
            self._client = InventoryClient(self.server_address if self._server_named else None, timeout=self._timeout)
        return self._client

    def datasets(self, pattern: str | None) -> list[dict[str, Any]]:
        return self.web.data("inventory/datasets", dataset=pattern, limit=100_000)["datasets"]

    def sites(self) -> list[dict[str, Any]]:
        return self.web.data("inventory/sites")["sites"]

    def stats(self) -> dict[str, Any]:
        return self.web.data("inventory/stats")

    def data(self, page: str, **parameters: Any) -> Any:
        return self.web.data(page, **parameters)

    def add_listener(self, listener: Any) -> None:
        self.web.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        self.web.remove_listener(listener)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        return self.web.flush_events(timeout)

    def connection_status(self) -> str:
        return "closed" if self.closed else self.web.connection_status()

    def _close(self) -> None:
        self.web.close()
        if self._client is not None:
            self._client.close()


# -- results --------------------------------------------------------------------------------------

@dataclass
class ApplicationRun:
    """What ``%%inventory exec`` shows: the exit code, output, and what was applied."""

    title: str
    write: bool
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    applied: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "done"

    @classmethod
    def from_result(cls, title: str, write: bool, result: dict[str, Any]) -> "ApplicationRun":
        applied = result.get("applied") or {}
        return cls(title, write, int(result.get("exit_code") if result.get("exit_code") is not None else -1),
                   result.get("stdout", ""), result.get("stderr", ""), int(applied.get("changes", 0)),
                   dict(result), str(result.get("status", "")))

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.status == "done"

    def __repr__(self) -> str:
        mode = "read-write" if self.write else "read-only"
        outcome = f"{self.applied} changes applied" if self.write and self.ok else (
            "nothing applied" if self.write else "read-only: nothing applied")
        return f"application {self.title!r} ({mode}): {self.status}, exit {self.exit_code}, {outcome}"


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas

    frame = pandas.DataFrame(rows, columns=columns)
    if "sites" in frame:
        frame["sites"] = frame["sites"].map(lambda sites: ", ".join(sites))
    return frame


# -- argument parsers -----------------------------------------------------------------------------

@magic_arguments(name="inventory connect")
@argument("url", nargs="?", help="http(s)://HOST:PORT of a server's web port")
@argument("--store", help="a SQLAlchemy URL: load the image into this kernel (e.g. sqlite:////tmp/inv.db)")
@argument("--name", default="inventory", help="connection name in %%workbench (default: inventory)")
@argument("--lazy-files", action="store_true", help="with --store: read a block's files on first use")
@argument("--cert", help="client certificate (PEM) for https")
@argument("--key", help="its private key (PEM)")
@argument("--ca", help="CA bundle that signed the server's certificate")
@argument("--server", help="the server's application socket path (default /tmp/workbench-inventory.sock)")
def _connect_arguments(line: str) -> None:
    """Connect to an inventory."""


@magic_arguments(name="inventory exec")
@argument("--write", action="store_true", help="apply the cell's changes when it finishes without error")
@argument("--title", default="notebook cell", help="the application's title")
@argument("args", nargs="*", help="arguments the application sees in sys.argv[1:]")
def _exec_arguments(line: str) -> None:
    """Run the cell as an inventory application."""


@magic_arguments(name="inventory exec-auth")
@argument("--title", required=True, help="the title the application will run under")
@argument("--user", help="the user it authorizes (default: you; admins of the server only)")
def _authorize_arguments(line: str) -> None:
    """Authorize the cell (by its SHA-256) to run as a writing application."""


def stack_application_socket(url: str) -> str | None:
    """The application socket of the running stack's inventory when ``url`` is its web port, else None.

    ``%inventory connect http://localhost:8081`` (as the README shows it) then sends applications
    to the socket that stack serves, not to the default path another server may hold.
    """
    from urllib.parse import urlsplit

    from workbench.stack import environment_stack

    stack = environment_stack()
    served = ((stack or {}).get("endpoints") or {}).get("inventory") or {}
    if not served.get("web") or not served.get("socket"):
        return None
    loopback = {"localhost", "127.0.0.1", "::1"}
    mine, theirs = urlsplit(url), urlsplit(served["web"])
    same_host = mine.hostname == theirs.hostname or {mine.hostname, theirs.hostname} <= loopback
    return served["socket"] if same_host and mine.port == theirs.port else None


# -- the magics -------------------------------------------------------------------------------------

@magics_class
class InventoryMagic(SubsystemMagic):
    """Inventory magics; options are set with ``%config InventoryMagic.<name> = value``."""

    family = "inventory"
    usage = USAGE
    connect_hint = "%inventory connect URL|--store URL first"

    timeout = Float(30.0, config=True, help="Seconds to wait for a server's answer.")
    dashboard_max_rate = Float(5.0, config=True, help="Most updates per second of an inventory dashboard.")
    recent_changes = Int(10, config=True, help="How many recent changes an inventory dashboard lists.")
    application_timeout = Float(600.0, config=True, help="Seconds an application may run before it is killed.")
    variable = Unicode("inventory", config=True,
                       help="Name of the user variable bound to the in-kernel image of a --store connection.")

    @line_cell_magic("inventory")
    def inventory(self, line: str, cell: str | None = None) -> Any:
        """Connect to an inventory, show it, run applications on it.

        ::

            %inventory connect --store sqlite:////tmp/inventory.db [--name NAME] [--lazy-files]
            %inventory connect http://HOST:8081 [--cert C --key K --ca CA] [--name NAME]
            %inventory                     a live summary: datasets, sites, usage per site, recent changes
            %inventory datasets [PATTERN]  datasets (shell-style pattern) as a DataFrame
            %inventory sites               sites with usage and quotas as a DataFrame
            %inventory stats               totals, replication and usage per site (a dict)
            %inventory data PAGE [K=V...]  the data of /data/inventory/PAGE (e.g. data dataset name=/A/B/C)
            %inventory status              the connections
            %inventory disconnect [NAME]
            %inventory NAME << COMMAND     keep the result in NAME
            -c NAME / --connection NAME    before the command: use that connection

            %%inventory exec [--write] [--title T] [ARGS...]
            <Python: from workbench.inventory.executable import inventory, read_only>

            %%inventory exec-auth --title T [--user U]
            <the same Python: authorizes it (SHA-256 of the cell) to run with --write as T>

        Errors are short messages; addresses are shown without passwords.
        """
        return self.guarded(line, lambda: self._run(line, cell))

    # -- dispatch -----------------------------------------------------------------------------------
    def _run(self, line: str, cell: str | None) -> Any:
        connection = None
        if match := _LEADING_OPTION.match(line):
            connection, line = match.group(1), line[match.end():]
        capture, line = split_capture(line)
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"inventory: {exc}") from None
        command, args = (words[0], words[1:]) if words else ("dashboard", [])
        if command not in self.commands():
            raise self.unknown(command)
        if cell is not None and command not in CELL_COMMANDS:
            raise UsageError("inventory: the cell forms are %%inventory exec [--write] [--title T] and "
                             "%%inventory exec-auth --title T")
        if command in CELL_COMMANDS and cell is None:
            raise UsageError(f"inventory: {command} runs a cell: use %%inventory {command} ...")
        rest = line.split(command, 1)[1] if words else ""
        try:
            result = self.dispatch(command, rest, args, cell, connection)
        except WorkbenchError as exc:
            raise UsageError(f"inventory {command}: {exc.message}") from None
        return self.keep(capture, result)

    # -- commands: each gets its parsed arguments (or the text after the command), the words, the cell and -c NAME
    def commands(self) -> CommandTable:
        return {"connect": (_connect_arguments, self.connect),
                "disconnect": (disconnect_arguments(self.family), lambda parsed, args, cell, connection:
                               self.disconnect(parsed.name or connection)),
                "dashboard": (None, self._cmd_dashboard), "datasets": (None, self._cmd_datasets),
                "sites": (None, self._cmd_sites), "stats": (None, self._cmd_stats), "data": (None, self._cmd_data),
                "status": (None, self._cmd_status), "exec": (_exec_arguments, self._cmd_exec),
                "exec-auth": (_authorize_arguments, self._cmd_exec_auth)}

    def _cmd_status(self, rest: str, args: list[str], cell: str | None, connection: str | None) -> Any:
        return self.sessions.rows()

    def _cmd_dashboard(self, rest: str, args: list[str], cell: str | None, connection: str | None) -> Any:
        self._no_arguments("dashboard", args)
        return self.sessions.require(connection).dashboard(self.dashboard_max_rate, self.recent_changes)

    def _cmd_datasets(self, rest: str, args: list[str], cell: str | None, connection: str | None) -> Any:
        session = self.sessions.require(connection)
        if len(args) > 1:
            raise UsageError("inventory datasets: one PATTERN at most (quote it if it has spaces)")
        return _frame(session.datasets(args[0] if args else None), _DATASET_COLUMNS)

    def _cmd_sites(self, rest: str, args: list[str], cell: str | None, connection: str | None) -> Any:
        session = self.sessions.require(connection)
        self._no_arguments("sites", args)
        return _frame(session.sites(), _SITE_COLUMNS)

    def _cmd_stats(self, rest: str, args: list[str], cell: str | None, connection: str | None) -> Any:
        session = self.sessions.require(connection)
        self._no_arguments("stats", args)
        return session.stats()

    def _cmd_data(self, rest: str, args: list[str], cell: str | None, connection: str | None) -> Any:
        session = self.sessions.require(connection)
        if not args:
            raise UsageError("inventory data: which page? "
                             "(datasets, dataset, sites, site, groups, replicas, stats)")
        parameters = {}
        for word in args[1:]:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise UsageError(f"inventory data: parameters are KEY=VALUE (got {word!r})")
            parameters[key] = value
        page = args[0] if "/" in args[0] else f"inventory/{args[0]}"
        return session.data(page, **parameters)

    def _cmd_exec_auth(self, parsed: Any, args: list[str], cell: str | None, connection: str | None) -> None:
        session = self.sessions.require(connection)
        if not (cell or "").strip():
            raise UsageError("inventory exec-auth: the cell is empty")
        granted = session.authorize(cell or "", parsed.title, parsed.user)
        print(f"authorized {parsed.title!r}: sha256 {str(granted.get('checksum', ''))[:16]}...")

    def _cmd_exec(self, parsed: Any, args: list[str], cell: str | None, connection: str | None) -> Any:
        return self._exec(self.sessions.require(connection), cell or "", parsed.write, parsed.title, parsed.args)

    @staticmethod
    def _no_arguments(command: str, args: list[str]) -> None:
        if args:
            raise UsageError(f"inventory {command} takes no arguments (got {' '.join(args)!r})")

    # -- connections --------------------------------------------------------------------------------
    def connect(self, parsed: Any, args: list[str], cell: str | None, connection: str | None) -> None:
        if bool(parsed.url) == bool(parsed.store):
            raise UsageError("inventory connect: give a server URL or --store URL (one of them)")
        self.sessions.check_name(parsed.name)
        if parsed.store:
            try:
                session: InventorySession = StoreSession(parsed.name, parsed.store, self.timeout,
                                                         parsed.lazy_files, self.application_timeout)
            except WorkbenchError:
                raise
            except Exception as exc:  # noqa: BLE001 - a driver's error: one line, not a traceback
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UsageError(f"inventory connect: cannot open the store: {type(exc).__name__}: "
                                 f"{redact(first_line)}") from None
        else:
            server = parsed.server or stack_application_socket(parsed.url)
            session = WebSession(parsed.name, parsed.url, self.timeout, self._ssl_context(parsed), server)
            try:
                session.stats()
            except WorkbenchError:
                session.close()
                raise
        self.sessions.add(parsed.name, session)
        stats = session.stats()
        where = ""
        if isinstance(session, StoreSession):
            where = f"; `{self.variable}` is the image, web pages at {session.web_url}"
        print(f"connected to {session.target} as {parsed.name!r}: {stats['datasets']} datasets, "
              f"{stats['sites']} sites{where}")

    @staticmethod
    def _ssl_context(parsed: Any) -> Any:
        if not (parsed.cert or parsed.ca):
            return None
        import ssl

        try:
            context = ssl.create_default_context(cafile=parsed.ca)
            if parsed.cert:
                context.load_cert_chain(parsed.cert, parsed.key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"inventory connect: cannot load the TLS files: {exc}") from None
        return context

    def bound(self, session: InventorySession) -> Any:
        # only an image in this kernel can be a variable; a web connection's data lives on the server
        return session.inventory if isinstance(session, StoreSession) else None

    # -- applications ---------------------------------------------------------------------------------
    def _exec(self, session: InventorySession, source: str, write: bool, title: str, args: list[str]) -> Any:
        if not source.strip():
            raise UsageError("inventory exec: the cell is empty")
        run = session.run_application(source, write, title, args, self.application_timeout)
        if run.stdout:
            print(run.stdout, end="" if run.stdout.endswith("\n") else "\n")
        if run.stderr:
            print(run.stderr, end="" if run.stderr.endswith("\n") else "\n", file=sys.stderr)
        if not run.ok:
            raise UsageError(f"inventory exec: the application {run.status} (exit {run.exit_code}); "
                             "nothing was applied")
        return run
