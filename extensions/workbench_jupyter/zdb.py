"""The ``%zdb`` / ``%%zdb`` magics: connect to a zdb database, query it with Python syntax, watch it live.

::

    %zdb connect tcp://127.0.0.1:5559            # `db` is now the database's root
    %zdb db['l'] = list(range(10))
    %zdb [v * v for v in db['l'] if v % 2]        # a value that is a path is read
    %zdb squares << [v * v for v in db['l']]      # keep the result in `squares`
    %zdb undo
    %zdb dashboard                                # a live widget

Options are set with ``%config Zdb.<name> = value`` (``%config Zdb`` lists them).
"""

from __future__ import annotations

import ast
import html
import re
import textwrap
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from IPython.core.error import UsageError
from IPython.core.magic import line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Int, Unicode

from workbench.errors import ZdbError
from workbench.zdb import Client, Proxy, ZdbRemoteError, ZdbTimeout, resolve_domain_uri
from workbench_jupyter.sessions import DashboardSession
from workbench_jupyter.subsystem_magic import CommandTable, SubsystemMagic, disconnect_arguments, redact, split_capture

COMMANDS = ("connect", "disconnect", "undo", "redo", "save", "lock", "unlock", "status", "dashboard")
USAGE = ("%zdb connect URI [READ_URI] [--name NAME] [--read-your-writes] | %zdb EXPRESSION | "
         "%zdb NAME << EXPRESSION | %zdb undo|redo|save|lock|unlock|status|dashboard|disconnect")

# `--df`, `-c NAME`, `--connection NAME` at the start of the line; the rest stays verbatim
# (Python code must not go through a shell-style splitter, which would eat its spaces).
_LEADING_OPTION = re.compile(r"\s*(--df\b|(?:-c|--connection)(?:\s+|=)\S+)")
_COMMAND = re.compile(rf"\s*({'|'.join(COMMANDS)})(?:\s+(?!=)(.*))?\s*\Z", re.S)


# -- addresses ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZdbAddress:
    """A parsed ``%zdb connect`` address: the ZeroMQ endpoint, credentials, and what to show."""

    endpoint: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    shown: str = ""  # the address as typed, without the password
    #: for ``zdb://...@broker:port/DB``: a database run by a domain, located through its broker
    database: str | None = None
    uri: str = field(default="", repr=False)  # as typed, password included: the broker locates with it


def stack_member_options(address: ZdbAddress) -> dict[str, Any] | None:
    """Client options that reach the storage manager of the running stack's database ``address`` names.

    The stack's SM speaks only to its database's members (CURVE keys derived from the domain
    password, which the stack's credentials hold); None for any other database.
    """
    from workbench.stack import environment_stack

    stack = environment_stack()
    if stack is None or not address.database:
        return None
    served = parse_address(((stack.get("endpoints") or {}).get("zdb") or {}).get("uri", "zdb://x:1"))
    domain_password = ((stack.get("secrets") or {}).get("domain") or {}).get("password")
    if not domain_password or (served.endpoint, served.database) != (address.endpoint, address.database):
        return None
    from workbench.domain import DatabaseKeys

    keys = DatabaseKeys(domain_password)
    return {"server_key": keys.storage_manager(address.database).public, "keys": keys.member(address.database)}


def parse_address(uri: str) -> ZdbAddress:
    """``zdb://user:pw@host:port/db`` -> endpoint ``tcp://host:port``, user, password, shown text.

    ``tcp://``, ``ipc://`` and ``inproc://`` endpoints are taken as they are (credentials allowed
    before the host); ``zdb://HOST:PORT`` means ``tcp://HOST:PORT``; ``zdb://HOST:PORT/DB`` names
    database DB of the domain whose broker is HOST:PORT (the broker hands out one of its TEs).
    """
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("zdb", "tcp", "ipc", "inproc") or not rest:
        raise UsageError(f"zdb: not a zdb address: {redact(uri)!r} "
                         "(expected tcp://HOST:PORT or zdb://[USER[:PASSWORD]@]HOST:PORT)")
    user = password = None
    if "@" in rest and scheme in ("zdb", "tcp"):
        userinfo, _, rest = rest.rpartition("@")  # a password may hold '@' or '/'
        raw_user, has_password, raw_password = userinfo.partition(":")
        user, password = unquote(raw_user), (unquote(raw_password) if has_password else None)
        if not user:
            raise UsageError("zdb: a password needs a user (zdb://USER:PASSWORD@HOST:PORT)")
    host, _, path = rest.partition("/") if scheme in ("zdb", "tcp") else (rest, "", "")
    if not host:
        raise UsageError(f"zdb: no host in {redact(uri)!r}")
    endpoint = f"tcp://{host}" if scheme == "zdb" else f"{scheme}://{host}"
    shown = f"{scheme}://{user + '@' if user else ''}{rest}"
    database = path.strip("/") if scheme == "zdb" and path.strip("/") else None
    return ZdbAddress(endpoint, user, password, shown, database, uri)


# -- one connection -----------------------------------------------------------------------------
class _ClosingClient(Client):
    """A ``Client`` that closes itself when its constructor fails.

    ``Client.__init__`` logs in last; when the login is refused the half-made client would be
    left to the garbage collector, whose ``Context.__del__`` -> ``term()`` can block the kernel
    later, in whatever code happens to trigger the collection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            if hasattr(self, "context"):
                self.close()
            raise


class ZdbConnection(DashboardSession):
    """One ``%zdb connect``: a ``Client``, its root ``Proxy``, and live events on demand.

    It is the ``client`` of its ``Connection`` in the registry: ``add_listener`` /
    ``remove_listener`` / ``flush_events`` go to a ``ZdbMonitor`` made on first use (so a
    connection nobody watches costs no subscription), and ``connection_status()`` pings.
    """

    def __init__(self, name: str, address: ZdbAddress, read_address: ZdbAddress | None,
                 timeout: float, read_your_writes: bool = False) -> None:
        super().__init__()
        self.name = name
        self.address = address
        self.read_address = read_address
        self.target = address.shown + (f" (reads: {read_address.shown})" if read_address else "")
        self._credentials: dict[str, Any] = (
            {"user": address.user, "password": address.password or ""} if address.user else {})
        if address.database:
            # A domain database: the broker picks a TE now and again whenever that TE goes away.
            endpoint, options = resolve_domain_uri(address.uri, timeout=timeout, **self._credentials)
            self.client = _ClosingClient(endpoint, None, **options)
        else:
            self.client = _ClosingClient(address.endpoint, read_address.endpoint if read_address else None,
                                         timeout=timeout, read_your_writes=read_your_writes, **self._credentials)
        self.db = Proxy(self.client)
        self._monitor: Any = None

    # -- live events ----------------------------------------------------------------------------
    def monitor(self) -> Any:
        """The ``ZdbMonitor`` of this database (made on first call)."""
        from workbench.zdb import ZdbMonitor

        with self._lock:
            if self._closed:
                raise ZdbError("connection is closed")
            if self._monitor is None:
                # The client's endpoint, not the address typed: for a domain database that is the TE
                # the broker handed out.
                self._monitor = ZdbMonitor(self.client.write_uri, timeout=self.client.timeout,
                                           primary_options=stack_member_options(self.address),
                                           **self._credentials)
            return self._monitor

    def add_listener(self, listener: Any) -> None:
        self.monitor().add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        if self._monitor is not None:
            self._monitor.remove_listener(listener)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        return self._monitor.flush_events(timeout) if self._monitor is not None else True

    def reader(self) -> Client:
        """A client of its own for a dashboard's reads: short timeout, no retries."""
        return _ClosingClient(self.client.write_uri, timeout=min(1.0, self.client.timeout), retries=0,
                              **self._credentials)

    def dashboard(self, max_rate: float, recent: int) -> Any:
        from workbench_jupyter.zdb_dashboard import ZdbDashboard

        self.monitor()  # fails here, before any widget or thread exists, if the server cannot be followed
        reader = self.reader()
        try:
            dash = ZdbDashboard(self, reader=reader, title=self.address.shown, recent=recent,
                                max_rate=max_rate, own_reader=True)
        except BaseException:
            reader.close()
            raise
        return self.add_dashboard(dash)

    # -- status and lifecycle -------------------------------------------------------------------
    def connection_status(self) -> str:
        if self._closed:
            return "closed"
        try:
            self.client.ping(timeout=min(1.0, self.client.timeout))
        except ZdbError:
            return "no answer"
        return "connected"

    def _close(self) -> None:
        """The monitor and the client (after the dashboards)."""
        if self._monitor is not None:
            self._monitor.close()
        self.client.close()


# -- results ------------------------------------------------------------------------------------
@dataclass
class ZdbStatus:
    """What ``%zdb status`` shows: the server's own status, as text and as an HTML table."""

    name: str
    target: str
    fields: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def __repr__(self) -> str:
        lines = [f"zdb {self.name}: {self.target}"]
        lines += [f"  {key:<18} {value}" for key, value in self.fields.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.fields.items())
        return (f"<div class='zdb-status'><b>zdb {html.escape(self.name)}</b>: "
                f"{html.escape(self.target)}<table>{rows}</table></div>")


def _error_name(exc: BaseException) -> str:
    if type(exc) is ZdbRemoteError and isinstance(exc.fields.get("kind"), str):
        return exc.fields["kind"]  # a kind this client does not declare: the server's name for it
    if isinstance(exc, ZdbRemoteError):
        # ZdbKeyError is also a KeyError: name it the way Python would.
        for base in type(exc).__mro__[1:]:
            if base.__module__ == "builtins" and issubclass(base, Exception) and base is not Exception:
                return base.__name__
    return type(exc).__name__


def _as_frame(value: Any) -> Any:
    if not (isinstance(value, list) and value and all(isinstance(row, dict) for row in value)):
        return value
    try:
        import pandas
    except ImportError:
        raise UsageError("zdb: showing DataFrames needs pandas (pip install pandas)") from None
    return pandas.DataFrame(value)


# -- argument parsers of the commands -----------------------------------------------------------
@magic_arguments(name="zdb connect")
@argument("uri", help="tcp://HOST:PORT or zdb://[USER[:PASSWORD]@]HOST:PORT of the storage manager")
@argument("read_uri", nargs="?", help="a replica (transaction engine) to send reads to")
@argument("--name", default="zdb", help="connection name in %%workbench (default: zdb)")
@argument("--read-your-writes", action="store_true",
          help="reads on the replica wait until it has applied this connection's writes")
def _connect_arguments(line: str) -> None:
    """Connect to a zdb database."""


@magic_arguments(name="zdb lock")
@argument("--lease", type=float, default=10.0, help="seconds the lock lives unless renewed (renewed "
          "in the background until unlock)")
@argument("--wait", type=float, default=30.0, help="seconds to wait for another holder to unlock")
def _lock_arguments(line: str) -> None:
    """Take the database lock."""


# -- the magics ---------------------------------------------------------------------------------
@magics_class
class Zdb(SubsystemMagic):
    """zdb magics; options are set with ``%config Zdb.<name> = value``."""

    family = "zdb"
    usage = USAGE
    connect_hint = "%zdb connect URI first"

    dataframe = Bool(False, config=True, help="Show lists of dicts as pandas DataFrames (as --df does).")
    timeout = Float(10.0, config=True, help="Seconds to wait for the server on each request.")
    variable = Unicode("db", config=True, help="Name of the user variable bound to the database root.")
    dashboard_max_rate = Float(10.0, config=True, help="Most widget updates per second of a zdb dashboard.")
    recent_writes = Int(8, config=True, help="How many recent writes a zdb dashboard lists.")

    @magic_arguments()
    @argument("--df", action="store_true", help="show a list of dicts as a pandas DataFrame")
    @argument("-c", "--connection", help="connection to use (default: the last one connected)")
    @argument("query", nargs="*", help="a command (connect, disconnect, undo, redo, save, lock, "
              "unlock, status, dashboard) or Python against `db`, optionally as `NAME << query`")
    @line_cell_magic("zdb")
    def zdb(self, line: str, cell: str | None = None) -> Any:
        """Query a zdb database with Python syntax, or run a zdb command.

        ::

            %zdb connect zdb://alice:{password}@127.0.0.1:5559
            %zdb db['l'][4]                 # the value at that path
            %zdb --df db['people']          # a list of dicts as a DataFrame
            %zdb result << db['l']          # store the value in `result`
            %zdb undo

            %%zdb total <<
            total = 0
            for v in db['l']:
                total += v
            total                           # the last line's value is the result

        Commands::

            connect URI [READ_URI] [--name NAME] [--read-your-writes]
                URI is tcp://HOST:PORT or zdb://[USER[:PASSWORD]@]HOST:PORT (the storage
                manager); READ_URI a replica to read from. Keep a password in a variable and
                write {password}: IPython expands it, and the history keeps the braces.
            disconnect [NAME]             close a connection (default: the current one)
            undo | redo | save            undo history and checkpoint
            lock [--lease S] [--wait S]   take the database lock (renewed until unlock)
            unlock                        release it
            status                        the server's status
            dashboard                     a live widget: keys, journal, clients, writes, replicas

        Errors (a missing key, a bad expression, no answer) are short messages; addresses are
        shown without their password.
        """
        return self.guarded(line, lambda: self._run(line, cell))

    # -- dispatch -------------------------------------------------------------------------------
    def _run(self, line: str, cell: str | None) -> Any:
        options_text, rest = _split_options(line)
        try:
            options = parse_argstring(self.zdb, options_text)
        except UsageError as exc:
            raise UsageError(f"zdb: {exc}") from None
        capture, rest = split_capture(rest)
        if cell is not None:
            if rest.strip():
                raise UsageError("zdb: the %%zdb line takes options and `NAME <<` only; "
                                 "put the query in the cell")
            result = self._query(self.sessions.require(options.connection), cell, options.df)
        elif command := _COMMAND.match(rest):
            result = self._command(command.group(1), command.group(2) or "", options)
        elif rest.strip():
            result = self._query(self.sessions.require(options.connection), rest, options.df)
        else:
            raise UsageError(f"usage: {USAGE}")
        return self.keep(capture, result)

    def _command(self, name: str, args: str, options: Any) -> Any:
        try:
            return self._run_command(name, args, options)
        except UsageError as exc:
            message = str(exc)
            raise UsageError(message if message.startswith(("zdb", "usage")) else f"zdb {name}: {message}") \
                from None

    def commands(self) -> CommandTable:
        return {"connect": (None, lambda args, options: self.connect(args)),
                "disconnect": (disconnect_arguments(self.family), lambda parsed, options:
                               self.disconnect(parsed.name or options.connection)),
                "undo": (None, self._cmd_undo_redo("undo")), "redo": (None, self._cmd_undo_redo("redo")),
                "save": (None, self._cmd_save), "lock": (_lock_arguments, self._cmd_lock),
                "unlock": (None, self._cmd_unlock), "status": (None, self._cmd_status),
                "dashboard": (None, self._cmd_dashboard)}

    def _run_command(self, name: str, args: str, options: Any) -> Any:
        if name not in ("connect", "disconnect", "lock") and args.strip():
            raise UsageError(f"zdb: {name} takes no arguments (got {args.strip()!r})")
        return self.dispatch(name, args, options)

    def _cmd_lock(self, parsed: Any, options: Any) -> None:
        session = self.sessions.require(options.connection)
        self._call(session, lambda: session.client.lock(lease=parsed.lease, wait=parsed.wait))
        print(f"locked {session.address.shown} (renewed until %zdb unlock)")

    def _cmd_undo_redo(self, name: str) -> Any:
        def run(args: str, options: Any) -> None:
            session = self.sessions.require(options.connection)
            self._call(session, getattr(session.client, name))
            print(f"{name} done (seq {session.client.last_write_seq})")
        return run

    def _cmd_save(self, args: str, options: Any) -> None:
        session = self.sessions.require(options.connection)
        saved = self._call(session, session.client.save)
        what = "started" if saved.get("started") else "not started: one is still running"
        print(f"saved: journal synced at seq {saved.get('seq')}, checkpoint {what}")

    def _cmd_unlock(self, args: str, options: Any) -> None:
        session = self.sessions.require(options.connection)
        self._call(session, session.client.unlock)
        print(f"unlocked {session.address.shown}")

    def _cmd_status(self, args: str, options: Any) -> ZdbStatus:
        session = self.sessions.require(options.connection)
        return ZdbStatus(session.name, session.target, self._call(session, session.client.status))

    def _cmd_dashboard(self, args: str, options: Any) -> Any:
        session = self.sessions.require(options.connection)
        return self._call(session, lambda: session.dashboard(self.dashboard_max_rate, self.recent_writes))

    # -- connections ----------------------------------------------------------------------------
    def connect(self, args: str) -> None:
        parsed = parse_argstring(_connect_arguments, args)
        address = parse_address(parsed.uri)
        read_address = parse_address(parsed.read_uri) if parsed.read_uri else None
        if read_address and read_address.user and (read_address.user, read_address.password) != \
                (address.user, address.password):
            raise UsageError("zdb: the read address must use the same user as the write address "
                             "(or none)")
        if parsed.read_your_writes and not read_address:
            raise UsageError("zdb: --read-your-writes needs a READ_URI (a replica)")
        self.sessions.check_name(parsed.name)
        if address.user and address.password is None:
            # `zdb://dba@host/db`: ask (masked), as %domain connect does, rather than log in with none
            address = replace(address, password=self.ask_password(f"password of {address.user} on {address.shown}: "))
            if read_address and read_address.user:
                read_address = replace(read_address, password=address.password)
        try:
            session = ZdbConnection(parsed.name, address, read_address, self.timeout,
                                    read_your_writes=parsed.read_your_writes)
        except ZdbError as exc:
            raise UsageError(f"zdb: cannot connect to {address.shown}: {exc}") from None
        try:
            status = session.client.status()
        except ZdbError as exc:
            session.close()
            if isinstance(exc, ZdbTimeout):
                raise UsageError(f"zdb: no answer from {address.shown} within {self.timeout:g}s") from None
            raise UsageError(f"zdb: cannot connect to {address.shown}: {exc}") from None
        self.sessions.add(parsed.name, session)
        print(f"connected to {session.target} as {parsed.name!r}: {status.get('keys')} keys, "
              f"seq {status.get('seq')}; `{self.variable}` is its root")

    def bound(self, session: ZdbConnection) -> Proxy:
        return session.db

    def secrets(self) -> tuple[str, ...]:
        return tuple(s.address.password or "" for s in self.sessions.values())

    # -- running --------------------------------------------------------------------------------
    def _call(self, session: ZdbConnection, action: Any) -> Any:
        """Run a client call; server errors become short UsageErrors."""
        try:
            return action()
        except UsageError:
            raise
        except ZdbTimeout:
            raise UsageError(f"zdb: no answer from {session.address.shown} within "
                             f"{session.client.timeout:g}s (a write may or may not have been applied)") \
                from None
        except Exception as exc:  # noqa: BLE001 - a notebook wants one line, not a traceback
            raise UsageError(f"zdb: {_error_name(exc)}: {exc}") from None

    def _query(self, session: ZdbConnection, source: str, df: bool) -> Any:
        """Run Python against ``db`` in the user namespace; the last expression is the result."""
        try:
            tree = ast.parse(textwrap.dedent(source).strip(), "<zdb>", "exec")
        except SyntaxError as exc:
            raise UsageError(f"zdb: SyntaxError: {exc.msg} (line {exc.lineno})") from None
        if not tree.body:
            raise UsageError("zdb: nothing to run")
        last = tree.body[-1] if isinstance(tree.body[-1], ast.Expr) else None
        body = ast.Module(body=tree.body[:-1] if last else tree.body, type_ignores=[])
        namespace = self.shell.user_ns
        missing = object()
        previous = namespace.get(self.variable, missing)
        namespace[self.variable] = session.db

        def run() -> Any:
            exec(compile(body, "<zdb>", "exec"), namespace)
            if last is None:
                return None
            value = eval(compile(ast.Expression(last.value), "<zdb>", "eval"), namespace)
            return value._run() if isinstance(value, Proxy) else value

        try:
            value = self._call(session, run)
        finally:
            # `-c other` binds `db` for this query only; a query that rebinds it keeps its choice.
            if namespace.get(self.variable) is session.db and previous is not missing:
                namespace[self.variable] = previous
        return _as_frame(value) if (df or self.dataframe) else value


def _split_options(line: str) -> tuple[str, str]:
    """Leading ``--df`` / ``-c NAME`` options, and the rest of the line untouched."""
    options, position = [], 0
    while match := _LEADING_OPTION.match(line, position):
        options.append(match.group(1).replace("=", " ", 1))  # --connection=NAME -> --connection NAME
        position = match.end()
    return " ".join(options), line[position:]
