"""The ``%domain`` magic: connect to a management domain, start and stop database processes, watch it live.

::

    %domain connect localhost:48004 domain          # the password is prompted, never shown
    %domain start sm teas --archive /tmp/teas --init
    %domain start te teas --dba dba:{dba_password}
    %domain processes                               # a pandas DataFrame
    procs << processes                              # ... kept in `procs` instead
    %domain stop 48802                              # by pid, or HOST:PORT (tab completes)
    %domain shutdown teas
    %domain                                         # the live dashboard
    %domain disconnect

Options are set with ``%config DomainMagic.<name> = value`` (``%config DomainMagic`` lists them).
"""

from __future__ import annotations

import re
import shlex
import socket
from pathlib import Path
from typing import Any

from IPython.core.error import TryNext, UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Float, Int, Unicode

from workbench.domain import Database, Domain, Process
from workbench.domain import DEFAULT_PORT, KnownBrokers
from workbench.errors import AuthenticationError, DomainError, WorkbenchError
from workbench_jupyter.sessions import DashboardSession
from workbench_jupyter.subsystem_magic import (CommandTable, SubsystemMagic, capture_words, disconnect_arguments,
                                               redact, split_capture)

USAGE = ("%domain connect [HOST[:PORT]] [USER[:PASSWORD]] | %domain [dashboard] | "
         "%domain start sm|te DB [--peer P] [--archive DIR] [--init] [--dba USER[:PASSWORD]] | "
         "%domain stop PROCESS [--kill] | %domain shutdown DB | "
         "%domain processes|peers|databases|descriptions|templates | "
         "%domain description create|update|start|stop|delete NAME ... | "
         "%domain NAME << COMMAND | %domain disconnect")

PROCESS_COLUMNS = ["process", "database", "type", "hostname", "port", "pid", "status", "peer"]
PEER_COLUMNS = ["peer", "hostname", "port", "role", "tags"]
DATABASE_COLUMNS = ["database", "storage_managers", "transaction_engines", "status"]
TEMPLATE_COLUMNS = ["template", "summary", "requirements", "variables"]

_LEADING_CONNECTION = re.compile(r"\s*(?:-c|--connection)(?:\s+|=)(\S+)")


# -- one session --------------------------------------------------------------------------------
class DomainSession(DashboardSession):
    """One ``%domain connect``: a ``Domain`` client and the dashboards that watch it.

    It is the ``client`` of its ``Connection`` in the registry (``add_listener`` and friends go
    to the ``Domain``), so ``%workbench events NAME`` works on it too. It keeps no domain
    password; dba credentials given to ``%domain start`` are kept per database (in memory only)
    so the dashboard's "Start TE" button can start more TEs the same way.
    """

    def __init__(self, name: str, domain: Domain, user: str) -> None:
        super().__init__()
        self.name = name
        self.domain = domain
        self.user = user
        self.target = f"{user}@{domain.broker_addr}"
        self.te_options: dict[str, list[tuple[str, str]]] = {}

    def __repr__(self) -> str:
        return f"DomainSession({self.name!r}, {self.target!r}, {self.connection_status()})"

    def add_listener(self, listener: Any) -> None:
        self.domain.add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        self.domain.remove_listener(listener)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        return self.domain.flush_events(timeout)

    def secrets(self) -> tuple[str, ...]:
        return tuple(value for options in self.te_options.values() for name, value in options
                     if name == "--dba-password" and value)

    def start_te(self, database: str, peer: Any, wait_seconds: float | None = None) -> Process:
        """Start a TE of ``database`` on ``peer`` with the options its last ``%domain start`` used."""
        return peer.start_transaction_engine(database, options=self.te_options.get(database),
                                             wait_seconds=wait_seconds)

    def connection_status(self) -> str:
        return "closed" if self._closed or self.domain.closed else "connected"

    def _close(self) -> None:
        self.domain.disconnect()


# -- listings -----------------------------------------------------------------------------------
def _frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas

    return pandas.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)


def processes_frame(domain: Domain, database: str | None = None) -> Any:
    """Every process of the domain (or of one database) as a DataFrame."""
    from workbench_jupyter.domain_dashboard import process_row

    rows = [process_row(p) for p in domain.processes if database is None or p.database_name == database]
    return _frame(sorted(rows, key=lambda r: (r["database"], r["type"], r["hostname"], r["port"])), PROCESS_COLUMNS)


def peers_frame(domain: Domain) -> Any:
    """Every peer of the domain as a DataFrame."""
    from workbench_jupyter.domain_dashboard import peer_row

    return _frame(sorted((peer_row(p) for p in domain.peers), key=lambda r: r["peer"]), PEER_COLUMNS)


def databases_frame(domain: Domain) -> Any:
    """Every database of the domain, with its SM and TE counts and status, as a DataFrame."""
    rows = [{"database": db.name, "storage_managers": len(db.storage_managers),
             "transaction_engines": len(db.transaction_engines), "status": db.status}
            for db in domain.databases]
    return _frame(sorted(rows, key=lambda r: r["database"]), DATABASE_COLUMNS)


def descriptions_frame(domain: Domain) -> Any:
    """Every description of the domain (template, status, started, variables) as a DataFrame."""
    from workbench_jupyter.domain_dashboard import DESCRIPTION_COLUMNS, description_row

    return _frame(sorted((description_row(d) for d in domain.descriptions), key=lambda r: r["description"]),
                  DESCRIPTION_COLUMNS)


def templates_frame(domain: Domain) -> Any:
    """The templates descriptions can follow, as a DataFrame."""
    rows = [{"template": t.name, "summary": t.summary, "requirements": t.requirements,
             "variables": ", ".join(f"{k}={v}" for k, v in sorted(t.variables.items()))} for t in domain.templates]
    return _frame(rows, TEMPLATE_COLUMNS)


def find_process(domain: Domain, text: str) -> Process:
    """The process named by a pid, its port, ``HOST:PORT`` or its id ``PEER/PID``."""
    processes = domain.processes
    if text.isdigit():
        # a pid first; else the port the process listens on (`%domain stop 48802`, as processes shows it)
        found = [p for p in processes if p.pid == int(text)] or [p for p in processes if p.port == int(text)]
    elif "/" in text:
        found = [p for p in processes if p.id == text]
    else:
        host, _, port = text.rpartition(":")
        found = [p for p in processes if port.isdigit() and p.port == int(port) and p.hostname == host]
    if not found:
        raise UsageError(f"domain: no process {text!r} (give a pid, a port or HOST:PORT; see %domain processes)")
    if len(found) > 1:
        raise UsageError(f"domain: {text!r} names {len(found)} processes; give HOST:PORT")
    return found[0]


# -- argument parsers of the commands -----------------------------------------------------------
@magic_arguments(name="domain connect")
@argument("broker", nargs="?", help="HOST[:PORT] of a broker (default: DomainMagic.default_broker)")
@argument("credentials", nargs="?", help="USER[:PASSWORD]; the password is prompted when left out")
@argument("--name", default="domain", help="connection name in %%workbench (default: domain)")
def _connect_arguments(line: str) -> None:
    """Connect to a domain through a broker."""


@magic_arguments(name="domain start")
@argument("type", choices=["sm", "te"], help="sm: a storage manager; te: a transaction engine")
@argument("database", help="the database's name")
@argument("--peer", help="the peer to run it on (HOST:PORT or hostname; default: the entry broker)")
@argument("--archive", help="the SM's archive directory")
@argument("--init", action="store_true", help="create a new archive (it must not exist or be empty)")
@argument("--dba", help="TEs: USER[:PASSWORD] of the database's dba, checked by the TE (password "
          "prompted when left out)")
@argument("--wait", type=float, help="seconds to wait until it runs (default: DomainMagic.wait_seconds)")
@argument("--no-wait", action="store_true", help="return as soon as the process is spawned")
def _start_arguments(line: str) -> None:
    """Start a database process."""


@magic_arguments(name="domain stop")
@argument("process", help="pid, HOST:PORT or PEER/PID of the process")
@argument("--kill", action="store_true", help="kill -9 instead of a clean shutdown")
def _stop_arguments(line: str) -> None:
    """Stop a database process."""


@magic_arguments(name="domain shutdown")
@argument("database", help="the database to shut down (its TEs first, then its SMs)")
@argument("--kill", action="store_true", help="kill its processes instead of shutting them down")
def _shutdown_arguments(line: str) -> None:
    """Shut down a database."""


@magic_arguments(name="domain processes")
@argument("database", nargs="?", help="only this database's processes")
def _processes_arguments(line: str) -> None:
    """List processes."""


@magic_arguments(name="domain description")
@argument("action", choices=["create", "update", "start", "stop", "delete"], help="what to do")
@argument("name", help="the description's name (also its database's name)")
@argument("template", nargs="?", help="create: the template to follow (see %%domain templates)")
@argument("--template", dest="new_template", help="update: follow another template")
@argument("--var", action="append", default=None, metavar="NAME=VALUE",
          help="a template variable (repeatable); update replaces them all")
@argument("--dba", help="create: USER[:PASSWORD] of the database's dba (password prompted when left out)")
@argument("--archive-dir", help="create: where its storage manager keeps the archive")
@argument("--wait", type=float, help="start: seconds to wait until it runs (default: DomainMagic.wait_seconds)")
def _description_arguments(line: str) -> None:
    """Declare a database and let the brokers keep it running."""


def _split_credentials(text: str | None, default_user: str) -> tuple[str, str | None]:
    if not text:
        return default_user, None
    user, has_password, password = text.partition(":")
    if not user:
        raise UsageError("domain: a password needs a user (USER:PASSWORD)")
    return user, (password if has_password else None)


# -- the magics ---------------------------------------------------------------------------------
@magics_class
class DomainMagic(SubsystemMagic):
    """Domain magics; options are set with ``%config DomainMagic.<name> = value``."""

    family = "domain"
    usage = USAGE
    connect_hint = "%domain connect first"

    default_broker = Unicode(f"localhost:{DEFAULT_PORT}", config=True,
                             help="Broker HOST[:PORT] that `%domain connect` uses when none is given.")
    default_user = Unicode("domain", config=True, help="Domain user when `%domain connect` names none.")
    wait_seconds = Float(30.0, allow_none=True, config=True,
                         help="Seconds `%domain start` waits for the process to run and `%domain stop` "
                              "for it to leave (0: no limit; None: do not wait). `shutdown` always waits "
                              "for each group (TEs, then SMs): this long, 30 s when None.")
    timeout = Float(10.0, config=True, help="Seconds to wait for the broker to connect and answer.")
    known_brokers = Unicode("", config=True,
                            help="File of pinned broker certificates (default: ~/.workbench/known_brokers "
                                 "or $WORKBENCH_KNOWN_BROKERS).")
    variable = Unicode("domain", config=True, help="Name of the user variable bound to the Domain client.")
    dashboard_max_rate = Float(10.0, config=True, help="Most widget updates per second of a domain dashboard.")
    event_log_length = Int(20, config=True, help="How many recent events a domain dashboard lists.")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.add_completer(_complete)

    def commands(self) -> CommandTable:
        return {"connect": (_connect_arguments, self._cmd_connect),
                "disconnect": (disconnect_arguments(self.family), lambda parsed, connection:
                               self.disconnect(parsed.name or connection)),
                "dashboard": (None, self._cmd_dashboard), "start": (_start_arguments, self._cmd_start),
                "stop": (_stop_arguments, self._cmd_stop), "shutdown": (_shutdown_arguments, self._cmd_shutdown),
                "processes": (_processes_arguments, self._cmd_processes), "peers": (None, self._cmd_peers),
                "databases": (None, self._cmd_databases), "descriptions": (None, self._cmd_descriptions),
                "templates": (None, self._cmd_templates),
                "description": (_description_arguments, self._cmd_description)}

    @line_magic("domain")
    def domain(self, line: str) -> Any:
        """Manage a domain: connect, start and stop processes, list them, watch them live.

        ::

            %domain connect [HOST[:PORT]] [USER[:PASSWORD]] [--name NAME]
                connect through a broker (default localhost:48004, user domain); the password
                is prompted when left out and is never shown or kept
            %domain [dashboard]              live tables of peers, databases, processes, events
            %domain start sm|te DB [--peer P] [--archive DIR] [--init] [--dba USER[:PASSWORD]]
                                              [--wait S | --no-wait]
            %domain stop PROCESS [--kill]     by pid, port or HOST:PORT (tab completes)
            %domain shutdown DB [--kill]      its TEs first, then its SMs
            %domain processes [DB] | peers | databases | descriptions | templates
                                              pandas DataFrames
            %domain description create NAME TEMPLATE [--var K=V]... [--dba USER[:PASSWORD]]
                                              [--archive-dir DIR]
            %domain description update NAME [--template T] [--var K=V]...
            %domain description start NAME [--wait S] | stop NAME | delete NAME
                a declared database the brokers keep running (see %domain templates)
            %domain NAME << COMMAND           keep the result in NAME instead of showing it
            %domain disconnect [NAME]
            %domain -c NAME COMMAND           use another connection than the current one

        Errors are short messages; passwords never appear in them.
        """
        return self.guarded(line, lambda: self._run(line))

    def secrets(self) -> tuple[str, ...]:
        return tuple(secret for session in self.sessions.values() for secret in session.secrets())

    def line_secrets(self, line: str) -> tuple[str, ...]:
        return super().line_secrets(line) + _line_secrets(line)

    # -- dispatch -------------------------------------------------------------------------------
    def _run(self, line: str) -> Any:
        connection = None
        if match := _LEADING_CONNECTION.match(line):
            connection, line = match.group(1), line[match.end():]
        capture, line = split_capture(line)
        command, _, args = line.strip().partition(" ")
        command = command or "dashboard"
        if command not in self.commands():
            raise self.unknown(command)
        if capture is not None and command in ("connect", "disconnect"):
            raise UsageError(f"domain: {command} has no result to keep")
        return self.keep(capture, self.dispatch(command, args.strip(), connection))

    # -- connections ----------------------------------------------------------------------------
    def _cmd_connect(self, parsed: Any, _: str | None) -> None:
        broker = parsed.broker or self.default_broker
        host, _, port = broker.rpartition(":") if ":" in broker else (broker, "", str(DEFAULT_PORT))
        if not host or not port.isdigit():
            raise UsageError("domain: the broker is HOST[:PORT] with a numeric port")
        address = f"{host}:{port}"
        user, password = _split_credentials(parsed.credentials, self.default_user)
        self.sessions.check_name(parsed.name)
        # before any prompt: nobody should type a password for a broker that is not there
        try:
            socket.create_connection((host, int(port)), timeout=min(self.timeout, 2.0)).close()
        except OSError as exc:
            raise UsageError(f"domain: cannot connect to {address}: nothing answers there "
                             f"({exc.strerror or exc}; is the broker running? `workbench status` says)") from None
        if password is None:
            password = self.ask_password(f"password of {user} on {address}: ")
        try:
            client = Domain(address, user, password, timeout=self.timeout,
                            known_brokers=KnownBrokers(Path(self.known_brokers)) if self.known_brokers else None)
        except AuthenticationError:
            raise UsageError(f"domain: wrong domain user or password for {user}@{address}") from None
        except WorkbenchError as exc:
            reason = redact(exc.message, (password,))
            # The transport's own message already names the address: say it once.
            if not reason.startswith("cannot connect"):
                reason = f"cannot connect to {address}: {reason}"
            raise UsageError(f"domain: {reason}") from None
        finally:
            del password
        self.sessions.add(parsed.name, DomainSession(parsed.name, client, user))
        print(f"connected to {address} as {user} ({parsed.name!r}): {len(client.peers)} peers, "
              f"{len(client.databases)} databases, {len(client.processes)} processes; "
              f"`{self.variable}` is the Domain")

    def bound(self, session: DomainSession) -> Domain:
        return session.domain

    def session(self, name: str | None = None) -> DomainSession:
        """The named (or current) session; UsageError when there is none or it was closed."""
        session: DomainSession = self.sessions.require(name)
        if session.connection_status() == "closed":
            raise UsageError(f"domain: the connection {session.name!r} to {session.domain.broker_addr} is closed; "
                             "connect again")
        return session

    # -- processes ------------------------------------------------------------------------------
    def _cmd_start(self, parsed: Any, connection: str | None) -> Process:
        session = self.session(connection)
        domain = session.domain
        peer = domain.entry_peer
        if parsed.peer:
            peer = domain.find_peer(parsed.peer)
            if peer is None:
                known = ", ".join(p.id for p in domain.peers)
                raise UsageError(f"domain start: no peer {parsed.peer!r} (peers: {known})")
        options: list[tuple[str, str]] = []
        if parsed.dba and parsed.type == "sm":
            raise UsageError("domain start: --dba is for transaction engines (they check the database users)")
        if parsed.dba:
            user, password = _split_credentials(parsed.dba, "dba")
            if password is None:
                password = self.ask_password(f"password of database user {user} of {parsed.database}: ")
            options = [("--dba-user", user), ("--dba-password", password)]
            session.te_options[parsed.database] = options
        if parsed.type == "sm" and not parsed.archive:
            raise UsageError("domain start: a storage manager needs --archive DIR (and --init for a new one)")
        if parsed.type == "te" and (parsed.archive or parsed.init):
            raise UsageError("domain start: --archive and --init are for storage managers")
        wait = None if parsed.no_wait else (parsed.wait if parsed.wait is not None else self.wait_seconds)
        try:
            if parsed.type == "sm":
                return peer.start_storage_manager(parsed.database, parsed.archive, parsed.init,
                                                  options=options or None, wait_seconds=wait)
            return peer.start_transaction_engine(parsed.database, options=options or None, wait_seconds=wait)
        except DomainError as exc:
            raise UsageError(f"domain start: {_reason(exc)}") from None

    def _cmd_stop(self, parsed: Any, connection: str | None) -> None:
        session = self.session(connection)
        process = find_process(session.domain, parsed.process)
        try:
            process.shutdown(graceful=not parsed.kill)
        except DomainError as exc:
            raise UsageError(f"domain stop: {_reason(exc)}") from None
        verb = "killed" if parsed.kill else "stopped"
        if self.wait_seconds is None:
            print(f"asked {process} to {'die' if parsed.kill else 'stop'}")
        elif process.wait_for_left(self.wait_seconds or None):
            print(f"{verb} {process}")
        else:
            print(f"asked {process} to stop; it has not left within {self.wait_seconds:g}s")

    def _cmd_shutdown(self, parsed: Any, connection: str | None) -> None:
        from workbench_jupyter.domain_dashboard import shutdown_wait

        session = self.session(connection)
        database: Database | None = session.domain.get_database(parsed.database)
        if database is None:
            known = ", ".join(db.name for db in session.domain.databases) or "none"
            raise UsageError(f"domain shutdown: no database {parsed.database!r} (databases: {known})")
        count = len(database.processes)
        try:
            database.shutdown(graceful=not parsed.kill, wait_seconds=shutdown_wait(self.wait_seconds))
        except DomainError as exc:
            raise UsageError(f"domain shutdown: {_reason(exc)}") from None
        left = len(database.processes)
        print(f"shut down {parsed.database}: {count - left} of {count} processes stopped"
              + (f", {left} still leaving" if left else ""))

    # -- listings and the dashboard -------------------------------------------------------------
    def _cmd_processes(self, parsed: Any, connection: str | None) -> Any:
        database = parsed.database
        return processes_frame(self.session(connection).domain, database)

    def _cmd_peers(self, args: str, connection: str | None) -> Any:
        self._no_arguments("peers", args)
        return peers_frame(self.session(connection).domain)

    def _cmd_databases(self, args: str, connection: str | None) -> Any:
        self._no_arguments("databases", args)
        return databases_frame(self.session(connection).domain)

    def _cmd_descriptions(self, args: str, connection: str | None) -> Any:
        self._no_arguments("descriptions", args)
        return descriptions_frame(self.session(connection).domain)

    def _cmd_templates(self, args: str, connection: str | None) -> Any:
        self._no_arguments("templates", args)
        return templates_frame(self.session(connection).domain)

    def _cmd_description(self, parsed: Any, connection: str | None) -> Any:
        # IPython's argument splitter keeps quotes: "Multi Host" arrives with them.
        parsed.template, parsed.new_template = (_unquote(parsed.template), _unquote(parsed.new_template))
        domain = self.session(connection).domain
        variables = None
        if parsed.var is not None:
            pairs = [item.partition("=") for item in parsed.var]
            if any(not sep or not key for key, sep, _ in pairs):
                raise UsageError("domain description: variables are NAME=VALUE")
            variables = {key: value for key, _, value in pairs}
        if parsed.action != "create" and (parsed.template or parsed.dba or parsed.archive_dir):
            raise UsageError("domain description: a template name, --dba and --archive-dir are for create")
        if parsed.action != "update" and parsed.new_template:
            raise UsageError("domain description: --template is for update")
        try:
            if parsed.action == "create":
                if not parsed.template:
                    raise UsageError("domain description: create NAME TEMPLATE (see %domain templates)")
                user, password = _split_credentials(parsed.dba, "dba")
                if parsed.dba and password is None:
                    password = self.ask_password(f"password of database user {user} of {parsed.name}: ")
                return domain.create_description(parsed.name, parsed.template, variables, dba_user=user,
                                                 dba_password=password or "dba", archive_dir=parsed.archive_dir)
            if parsed.action == "update":
                return domain.update_description(parsed.name, parsed.new_template, variables)
            if parsed.action == "start":
                wait = parsed.wait if parsed.wait is not None else self.wait_seconds
                return domain.start_description(parsed.name, wait_seconds=wait)
            if parsed.action == "stop":
                return domain.stop_description(parsed.name)
            domain.delete_description(parsed.name)
            print(f"deleted description {parsed.name}")
            return None
        except DomainError as exc:
            raise UsageError(f"domain description {parsed.action}: {_reason(exc)}") from None

    def _cmd_dashboard(self, args: str, connection: str | None) -> Any:
        from workbench_jupyter.domain_dashboard import DomainDashboard

        self._no_arguments("dashboard", args)
        session = self.session(connection)
        wait = self.wait_seconds
        dash = DomainDashboard(session.domain, title=session.domain.broker_addr, log_length=self.event_log_length,
                               max_rate=self.dashboard_max_rate, wait_seconds=wait,
                               start_te=lambda database, peer: session.start_te(database, peer, wait))
        return session.add_dashboard(dash)

    @staticmethod
    def _no_arguments(command: str, args: str) -> None:
        if args:
            raise UsageError(f"domain: {command} takes no arguments (got {args!r})")


def _unquote(text: str | None) -> str | None:
    if text and len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _reason(exc: DomainError) -> str:
    reason = exc.fields.get("reason")
    return f"{exc.message}: {reason}" if reason and reason not in exc.message else exc.message


def _line_secrets(line: str) -> tuple[str, ...]:
    """What may be a password in a line: the part after ``USER:`` of a word (a port is digits)."""
    found = []
    for word in line.split():
        _, sep, rest = word.partition(":")
        if sep and rest and not rest.isdigit() and not word.startswith("-"):
            found.append(rest)
    return tuple(found)


# -- tab completion -----------------------------------------------------------------------------
def _complete(shell: Any, event: Any) -> list[str]:
    """Completions after ``%domain``: commands, processes after ``stop``, databases, peers."""
    magics = shell.magics_manager.registry.get("DomainMagic")
    if magics is None:
        raise TryNext()
    try:
        words = shlex.split(event.text_until_cursor)
    except ValueError:
        raise TryNext() from None
    if event.text_until_cursor.endswith((" ", "\t")):
        words.append("")
    words = capture_words(words[1:])  # after "%domain" and any "NAME <<"
    if len(words) <= 1:
        return list(magics.commands())
    session = magics.sessions.current_session
    if session is None or session.closed:
        raise TryNext()
    domain = session.domain
    command, current, previous = words[0], words[-1], words[-2]
    if previous == "--peer":
        candidates = [peer.id for peer in domain.peers]
    elif command == "stop":
        processes = domain.processes
        candidates = [f"{p.hostname}:{p.port}" for p in processes] + [str(p.pid) for p in processes]
    elif command in ("shutdown", "processes") or (command == "start" and len(words) == 3):
        candidates = [db.name for db in domain.databases]
    elif command == "start" and len(words) == 2:
        candidates = ["sm", "te"]
    elif command == "description" and len(words) == 2:
        candidates = ["create", "update", "start", "stop", "delete"]
    elif command == "description" and len(words) == 3 and words[1] != "create":
        candidates = [d.name for d in domain.descriptions]
    else:
        raise TryNext()
    # IPython's token stops at ':'; completions must begin where its token begins.
    cut = len(current) - len(event.symbol)
    return [c[cut:] for c in sorted(candidates) if c.startswith(current)]
