"""The ``Domain`` client and its entities, with the API of the seed's entity module.

::

    from workbench.domain import Domain
    d = Domain('localhost', 'domain', 'bird')
    for peer in d.peers:
        print(str(peer))                       # localhost:48004 [role=broker]
    d.entry_peer.start_storage_manager('teas', '/tmp/teas-data', True)

Listener methods (all optional): ``peer_joined(peer)``, ``peer_left(peer)``, ``process_joined(p)``,
``process_left(p)``, ``process_failed(peer, reason)``, ``process_status_changed(p, status)``,
``database_joined(db)``, ``database_left(db)``, ``description_changed(description)``,
``reconciler_action(description, action, detail)``, ``closed()``. On connect a listener first hears
about everything already running (and every description). The same process is the same
``Process`` object everywhere; likewise peers, databases and descriptions.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from typing import Any, Iterable

from workbench.domain.keys import DatabaseKeys
from workbench.domain.model import (
    FINAL_STATES,
    QUIESCED,
    RUNNING,
    SM,
    TE,
    DescriptionRecord,
    PeerRecord,
    ProcessRecord,
)
from workbench.domain.errors import DescriptionError, NoSuchProcessError, ProtocolError
from workbench.domain.protocol import DEFAULT_PORT, Message
from workbench.domain.requests import (
    CreateDescription,
    DeleteDescription,
    QuiesceDatabase,
    Request,
    StartDescription,
    StartProcess,
    StopDescription,
    StopProcess,
    UnquiesceDatabase,
    UpdateDescription,
    reply_error,
)
from workbench.domain.templates import TEMPLATES, Template, find_template
from workbench.domain.transport import Connection, KnownBrokers, TransportError, connect
from workbench.errors import DomainError
from workbench.events import EventDispatcher, EventSource


def locate_database(broker_addr: str, database: str, known_brokers: KnownBrokers | None = None,
                    timeout: float = 10.0) -> str:
    """The zdb endpoint of a running TE of ``database``, as the broker hands it out (turn by turn)."""
    address = broker_addr if ":" in broker_addr else f"{broker_addr}:{DEFAULT_PORT}"
    conn = connect(address, known_brokers=known_brokers, timeout=timeout)
    try:
        reply = conn.request(Message.make("Locate", Database=database), timeout=timeout)
    finally:
        conn.close()
    if reply.tag != "Located":
        raise reply_error(reply, database=database, broker=address) or DomainError(
            "unexpected answer to a locate", database=database, broker=address, tag=reply.tag)
    return reply.require("Endpoint")


class Peer:
    """A host of the domain (an agent, or a broker)."""

    def __init__(self, domain: "Domain", record: PeerRecord) -> None:
        self.domain = domain
        self._record = record

    id = property(lambda self: self._record.id)
    hostname = property(lambda self: self._record.hostname)
    port = property(lambda self: self._record.port)
    tags = property(lambda self: dict(self._record.tags))
    is_broker = property(lambda self: self._record.role == "broker")
    connect_str = property(lambda self: self._record.id)
    address = property(lambda self: self._record.hostname)

    def start_storage_manager(self, db_name: str, archive: str, initialize: bool,
                              options: Iterable[tuple[str, str]] | None = None,
                              wait_seconds: float | None = None) -> "Process":
        """Start an SM of ``db_name`` on this peer with its archive in ``archive``."""
        return self.domain._start(self, db_name, SM, options, wait_seconds, archive=archive,
                                  initialize=bool(initialize))

    def start_transaction_engine(self, db_name: str, options: Iterable[tuple[str, str]] | None = None,
                                 wait_seconds: float | None = None) -> "Process":
        """Start a TE of ``db_name`` on this peer (its SM must be running, or starting: then the start waits)."""
        return self.domain._start(self, db_name, TE, options, wait_seconds)

    def get_local_processes(self, db_name: str | None = None) -> list["Process"]:
        """The processes this peer runs (of database ``db_name`` only, if given)."""
        return [p for p in self.domain._all_processes()
                if p.peer_id == self.id and (db_name is None or p.database_name == db_name)]

    def __str__(self) -> str:
        return f"{self.connect_str} [role={'broker' if self.is_broker else 'agent'}]"

    __repr__ = __str__


class Database:
    """A database: exists while it has processes."""

    def __init__(self, domain: "Domain", name: str) -> None:
        self.domain = domain
        self.name = name

    @property
    def processes(self) -> list["Process"]:
        return [p for p in self.domain._all_processes() if p.database is self]

    @property
    def storage_managers(self) -> list["Process"]:
        return [p for p in self.processes if not p.is_transactional]

    @property
    def transaction_engines(self) -> list["Process"]:
        return [p for p in self.processes if p.is_transactional]

    @property
    def status(self) -> str:
        """RUNNING (an SM and a TE, all running), QUIESCED (its SM refuses writes), STARTING, or NONE."""
        states = {p.status for p in self.processes}
        if not states:
            return "NONE"
        if QUIESCED in {p.status for p in self.storage_managers}:
            return QUIESCED
        if states == {RUNNING} and self.storage_managers and self.transaction_engines:
            return RUNNING
        return "STARTING" if "STARTING" in states else ",".join(sorted(states))

    def quiesce(self, wait_seconds: float = 10.0) -> None:
        """Make the database refuse writes (a clear ``QuiescedError`` to zdb clients); reads go on.

        Its storage manager's status becomes QUIESCED (a ``process_status_changed`` event).
        """
        self.domain._request(QuiesceDatabase(self.name))
        for process in self._primaries():
            process.wait_for_status(QUIESCED, wait_seconds)

    def unquiesce(self, wait_seconds: float = 10.0) -> None:
        """Take writes again; the storage manager's status goes back to RUNNING."""
        self.domain._request(UnquiesceDatabase(self.name))
        for process in self._primaries():
            process.wait_for_status(RUNNING, wait_seconds)

    def _primaries(self) -> list["Process"]:
        return [p for p in self.storage_managers if not p._record.standby]

    def shutdown(self, graceful: bool = True, wait_seconds: float = 30.0) -> None:
        """Stop the TEs first (their clients can move on), then the SMs.

        A process that ends on its own meanwhile (killed, crashed) is not an error: the broker
        forgot it, and its ``process_left`` reaches this client before the broker's answer.
        """
        for group in (self.transaction_engines, self.storage_managers):
            for process in group:
                try:
                    process.shutdown(graceful)
                except NoSuchProcessError:
                    pass  # left between the listing and the request: nothing to stop
            for process in group:
                process.wait_for_left(wait_seconds)

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


class Process:
    """A database process: a zdb storage manager (SM) or transaction engine (TE)."""

    def __init__(self, domain: "Domain", record: ProcessRecord) -> None:
        self.domain = domain
        self._record = record
        self._left = threading.Event()

    id = property(lambda self: self._record.id)
    pid = property(lambda self: self._record.pid)
    port = property(lambda self: self._record.port)
    address = property(lambda self: self._record.hostname)
    hostname = property(lambda self: self._record.hostname)
    status = property(lambda self: self._record.status)
    endpoint = property(lambda self: self._record.endpoint)
    is_transactional = property(lambda self: self._record.type == TE)
    type = property(lambda self: self._record.type)
    is_standby = property(lambda self: self._record.standby)
    archive = property(lambda self: self._record.archive)
    #: once it ended: its exit code (None if unknown, as for a process adopted after an agent restart)
    exit_code = property(lambda self: self._record.exit_code)
    #: why it failed (with the last lines of its log), or why it did not start
    reason = property(lambda self: self._record.reason)

    database_name = property(lambda self: self._record.database)
    peer_id = property(lambda self: self._record.peer)

    @property
    def peer(self) -> Peer:
        """Its peer (the last known one, once the peer has left)."""
        with self.domain._changed:
            peer = self.domain._peers.get(self._record.peer) or self.domain._departed_peers.get(self._record.peer)
        if peer is None:
            raise DomainError("the process's peer is unknown", peer=self._record.peer)
        return peer

    @property
    def database(self) -> Database:
        """Its database (the last ``Database`` object, once the database has left)."""
        with self.domain._changed:
            database = self.domain._databases.get(self._record.database)
            return database or self.domain._departed_databases.get(self._record.database) \
                or Database(self.domain, self._record.database)

    def shutdown(self, graceful: bool = True) -> None:
        self.domain._request(StopProcess(self.id, kill=not graceful))

    def kill(self) -> None:
        self.shutdown(graceful=False)

    def wait_for_status(self, status: str, wait_seconds: float | None = 10.0) -> "Process":
        """Block until the process reaches ``status`` (raises if it fails or leaves first)."""
        deadline = None if not wait_seconds else time.monotonic() + wait_seconds
        with self.domain._changed:
            while self._record.status != status:
                if self._record.status in FINAL_STATES:
                    raise DomainError(f"process ended while waiting for {status}", process=str(self),
                                      status=self._record.status, reason=self._record.reason)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DomainError(f"timed out waiting for {status}", process=str(self), status=self.status)
                self.domain._changed.wait(remaining)
        return self

    def wait_for_left(self, wait_seconds: float = 30.0) -> bool:
        return self._left.wait(wait_seconds)

    def query(self, **client_options: Any) -> dict[str, Any]:
        """The zdb status of this process (keys, seq, clients...), asked of the process itself.

        A storage manager answers members of its database only: this session presents the
        database's member key (derived from the domain password) unless ``client_options`` give keys.
        An engine or standby answers its dba login only: the derived one unless ``client_options``
        give ``user`` and ``password`` (those of a process started with dba options).
        """
        from workbench.zdb.client import Client

        database = self._record.database
        if not self.is_transactional and not self._record.standby and "server_key" not in client_options:
            client_options = {"server_key": self.domain._keys.storage_manager(database).public,
                              "keys": self.domain._keys.member(database), **client_options}
        elif "user" not in client_options and "server_key" not in client_options:
            user, password = self.domain.dba_login(database)
            client_options = {"user": user, "password": password, **client_options}
        with Client(self.endpoint, timeout=5.0, **client_options) as connection:
            return connection.status()

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port} [pid={self.pid}] ({self._record.type})"

    __repr__ = __str__


class Description:
    """A declared database: ``name`` (also the database's name), its ``template``, ``variables``, ``status``.

    ``status`` is STOPPED, STARTING, RUNNING (everything the template asks for runs) or DEGRADED
    (something is missing and cannot be placed yet). ``processes`` are its database's processes.
    """

    def __init__(self, domain: "Domain", record: DescriptionRecord) -> None:
        self.domain = domain
        self._record = record

    name = property(lambda self: self._record.name)
    template_name = property(lambda self: self._record.template)
    variables = property(lambda self: dict(self._record.variables))
    status = property(lambda self: self._record.status)
    started = property(lambda self: self._record.started)
    dba_user = property(lambda self: self._record.dba_user)
    archive_dir = property(lambda self: self._record.archive_dir)
    placements = property(lambda self: dict(self._record.placements))

    @property
    def template(self) -> Template:
        return find_template(self._record.template)

    @property
    def database(self) -> Database | None:
        return self.domain.get_database(self.name)

    @property
    def processes(self) -> list["Process"]:
        return [p for p in self.domain._all_processes() if p._record.database == self.name]

    def wait_for_status(self, status: str, wait_seconds: float | None = 30.0) -> "Description":
        """Block until the description reaches ``status`` (None or 0: without limit)."""
        deadline = None if not wait_seconds else time.monotonic() + wait_seconds
        with self.domain._changed:
            while self._record.status != status:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise DomainError(f"timed out waiting for description status {status}", description=self.name,
                                      status=self.status)
                if self.domain._closed:
                    raise DomainError("the domain session is closed", description=self.name)
                self.domain._changed.wait(remaining if remaining is not None else 1.0)
        return self

    def __str__(self) -> str:
        return f"{self.name} [template={self.template_name}] ({self.status})"

    __repr__ = __str__


class Domain(EventSource):
    """A management session with a domain through one of its brokers."""

    def __init__(self, broker_addr: str, domain_user: str, domain_pwd: str, listener: Any = None,
                 known_brokers: KnownBrokers | None = None, ca_file: str | None = None,
                 timeout: float = 10.0) -> None:
        address = broker_addr if ":" in broker_addr else f"{broker_addr}:{DEFAULT_PORT}"
        self.broker_addr = address
        self.timeout = timeout
        self._events = EventDispatcher(f"domain {address}")
        self._peers: dict[str, Peer] = {}
        self._processes: dict[str, Process] = {}
        self._databases: dict[str, Database] = {}
        self._descriptions: dict[str, Description] = {}
        # Departed entities, so listeners of *_left events can still describe what left.
        self._departed_peers: dict[str, Peer] = {}
        self._departed_databases: dict[str, Database] = {}
        self._changed = threading.Condition(threading.RLock())
        self._ids = itertools.count(1)
        self._waiting: dict[str, Future[Message]] = {}
        self._closed = False
        self._keys = DatabaseKeys(domain_pwd) if domain_pwd else None
        self._conn: Connection = connect(address, known_brokers=known_brokers, ca_file=ca_file, timeout=timeout)
        try:
            reply = self._conn.request(Message.make("Connect", Role="client", User=domain_user, Password=domain_pwd),
                                       timeout=timeout)
            if reply.tag != "Connected":
                raise reply_error(reply, user=domain_user, broker=address) or DomainError(
                    "unexpected answer to a login", broker=address, tag=reply.tag)
            self._entry_id = reply.require("Broker")
            state = self._conn.request(Message.make("Subscribe"), timeout=timeout)
            self._apply_state(state)
        except BaseException:
            self._conn.close()
            raise
        self._reader = threading.Thread(target=self._read, name=f"domain-{address}", daemon=True)
        self._reader.start()
        if listener is not None:
            self.add_listener(listener)

    # -- the seed's API -------------------------------------------------------------------------
    @property
    def peers(self) -> list[Peer]:
        with self._changed:
            return list(self._peers.values())

    @property
    def databases(self) -> list[Database]:
        with self._changed:
            return list(self._databases.values())

    @property
    def processes(self) -> list[Process]:
        """Every process of the domain."""
        return self._all_processes()

    @property
    def closed(self) -> bool:
        """True once the session ended (``disconnect()`` or the broker went away)."""
        return self._closed

    def getPeers(self) -> list[Peer]:  # noqa: N802 - the seed names it
        """The peers (alias of ``peers``)."""
        return self.peers

    def getDatabases(self) -> list[Database]:  # noqa: N802 - the seed names it
        """The running databases (alias of ``databases``)."""
        return self.databases

    @property
    def entry_peer(self) -> Peer:
        return self._peers[self._entry_id]

    def get_peer(self, peer_id: str) -> Peer | None:
        return self._peers.get(peer_id)

    def find_peer(self, address: str, port: int | None = None) -> Peer | None:
        """The peer at ``address`` (hostname, or ``host:port``)."""
        for peer in self.peers:
            if peer.id == address or (peer.hostname == address and (port is None or peer.port == port)):
                return peer
        return None

    def get_database(self, name: str) -> Database | None:
        return self._databases.get(name)

    def dba_login(self, database: str) -> tuple[str, str]:
        """The dba login the engines of ``database`` require when started without dba options.

        It is derived from the domain password, so only a session that logged in to the domain
        can give it: ``zdb.connect(f"zdb://{user}:{password}@{broker}/{database}")``.
        """
        assert self._keys is not None
        return self._keys.dba(database)

    # -- templates and descriptions ---------------------------------------------------------------
    @property
    def templates(self) -> list[Template]:
        """The database templates descriptions can follow (name, summary, requirements)."""
        return list(TEMPLATES)

    @property
    def descriptions(self) -> list[Description]:
        with self._changed:
            return list(self._descriptions.values())

    def create_description(self, name: str, template_name: str, variables: dict[str, Any] | None = None,
                           dba_user: str = "dba", dba_password: str = "dba",
                           archive_dir: str | None = None) -> Description:
        """Declare database ``name`` following template ``template_name`` (not started yet).

        ``archive_dir`` is where its storage manager keeps the archive (default: under the
        state dir of the agent that runs it). Bad template names or variables raise
        ``DescriptionError`` (a ``DomainError``) and change nothing.
        """
        find_template(template_name).resolve({k: str(v) for k, v in (variables or {}).items()})
        record = DescriptionRecord(name=name, template=template_name,
                                   variables={k: str(v) for k, v in (variables or {}).items()},
                                   dba_user=dba_user, dba_password=dba_password, archive_dir=archive_dir or "")
        return self._description_from(self._request(CreateDescription(record)))

    def update_description(self, name: str, template_name: str | None = None,
                           variables: dict[str, Any] | None = None) -> Description:
        """Change a description's template and/or replace its variables (a started one adapts)."""
        replaced = None if variables is None else {k: str(v) for k, v in variables.items()}
        return self._description_from(self._request(UpdateDescription(name, template_name, replaced)))

    def delete_description(self, name: str) -> None:
        """Forget a stopped description (its archive stays on disk)."""
        self._request(DeleteDescription(name))
        with self._changed:
            while name in self._descriptions and not self._closed:
                self._changed.wait(1.0)

    def get_description(self, name: str) -> Description:
        """The description called ``name``; DescriptionError when there is none."""
        with self._changed:
            description = self._descriptions.get(name)
        if description is None:
            raise DescriptionError(f"no description named {name!r}", description=name)
        return description

    def start_description(self, name: str, wait_seconds: float | None = None) -> Description:
        """Start a description: the brokers' reconciler starts its processes and keeps them running.

        ``wait_seconds=None`` returns at once; a number waits for status RUNNING (0: no limit).
        """
        description = self._description_from(self._request(StartDescription(name)))
        if wait_seconds is not None:
            description.wait_for_status(RUNNING, wait_seconds)
        return description

    def stop_description(self, name: str) -> Description:
        """Stop a description: the reconciler lets go and its processes stop (TEs, then SMs)."""
        return self._description_from(self._request(StopDescription(name)))

    def _description_from(self, record: DescriptionRecord) -> Description:
        with self._changed:
            return self._apply_description(record)

    def _apply_description(self, record: DescriptionRecord) -> Description:
        """One ``Description`` per name, updated in place (only by newer copies)."""
        description = self._descriptions.get(record.name)
        if description is None:
            description = Description(self, record)
            if not record.deleted:
                self._descriptions[record.name] = description
        elif (record.version, record.origin) >= (description._record.version, description._record.origin):
            description._record = record
            if record.deleted:
                self._descriptions.pop(record.name, None)
        self._changed.notify_all()
        return description

    def disconnect(self) -> None:
        """Close the session; listeners get ``closed()`` once."""
        if self._closed:
            return
        self._closed = True
        self._conn.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(5)
        self._events.close()

    def shutdown(self, graceful: bool = True) -> None:
        """Shut down every database of the domain (TEs first), then disconnect."""
        for database in self.databases:
            database.shutdown(graceful)
        self.disconnect()

    def __enter__(self) -> "Domain":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.disconnect()

    # -- events ---------------------------------------------------------------------------------
    def initial_events(self) -> list[tuple[str, tuple[Any, ...]]]:
        with self._changed:
            events: list[tuple[str, tuple[Any, ...]]] = [("peer_joined", (p,)) for p in self._peers.values()]
            for database in self._databases.values():
                events.append(("database_joined", (database,)))
                events += [("process_joined", (p,)) for p in database.processes]
            events += [("description_changed", (d,)) for d in self._descriptions.values()]
            return events

    def add_listener(self, listener: Any) -> None:
        with self._changed:  # no event can slip between the replay and the subscription
            super().add_listener(listener)

    def _apply_state(self, state: Message) -> None:
        if state.tag != "State":
            raise ProtocolError("expected <State>", got=state.tag)
        with self._changed:
            for message in state.find("Peer"):
                record = PeerRecord.from_message(message)
                self._peers[record.id] = Peer(self, record)
            for message in state.find("Process"):
                record = ProcessRecord.from_message(message)
                self._database(record.database)
                self._processes[record.id] = Process(self, record)
            for message in state.find("Description"):
                self._apply_description(DescriptionRecord.from_message(message))

    def _read(self) -> None:
        try:
            while True:
                message = self._conn.receive()
                if message is None:
                    break
                if message.tag == "Response":
                    future = self._waiting.pop(message.get("Id", ""), None)
                    if future is not None:
                        future.set_result(message)
                elif message.tag == "Event":
                    self._on_event(message)
        except (TransportError, ProtocolError, OSError):
            pass
        finally:
            for future in list(self._waiting.values()):
                if not future.done():
                    future.set_exception(DomainError("connection to the broker closed", broker=self.broker_addr))
            if not self._closed:
                self._closed = True
                self._events.close()

    def _on_event(self, event: Message) -> None:
        kind = event.get("Type")
        with self._changed:
            if kind in ("peer_joined", "peer_left"):
                record = PeerRecord.from_message(event.find("Peer")[0])
                if kind == "peer_joined":
                    # A peer that comes back is the same Peer object as before it left.
                    peer = self._peers.get(record.id) or self._departed_peers.pop(record.id, None) or Peer(self, record)
                    self._peers[record.id] = peer
                    peer._record = record
                else:
                    peer = self._peers.pop(record.id, None) or Peer(self, record)
                    self._departed_peers[record.id] = peer
                self._events.emit(kind, peer)
            elif kind == "description_changed":
                record = DescriptionRecord.from_message(event.find("Description")[0])
                self._events.emit(kind, self._apply_description(record))
            elif kind == "reconciler_action":
                name = event.require("Description")
                description = self._descriptions.get(name)
                if description is None:  # deleted meanwhile: still say which one
                    description = Description(self, DescriptionRecord(name=name, template=""))
                self._events.emit(kind, description, event.require("Action"), event.get("Detail", ""))
            elif kind in ("database_joined", "database_left"):
                name = event.require("Database")
                database = self._database(name)
                if kind == "database_left":
                    self._databases.pop(name, None)
                    self._departed_databases[name] = database
                self._events.emit(kind, database)
            else:
                record = ProcessRecord.from_message(event.find("Process")[0])
                process = self._processes.get(record.id)
                if process is None:
                    process = self._processes[record.id] = Process(self, record)
                process._record = record
                if kind == "process_joined":
                    self._events.emit(kind, process)
                elif kind == "process_status_changed":
                    self._events.emit(kind, process, record.status)
                elif kind == "process_failed":
                    peer = self._peers.get(record.peer)
                    self._events.emit(kind, peer, event.get("Reason", record.reason))
                elif kind == "process_left":
                    self._processes.pop(record.id, None)
                    process._left.set()
                    self._events.emit(kind, process)
            self._changed.notify_all()

    # -- requests -------------------------------------------------------------------------------
    def _request(self, request: Request) -> Any:
        """Send ``request`` and wait for what it yields; the broker's error comes back as its declared class."""
        if self._closed:
            raise DomainError("the domain session is closed", broker=self.broker_addr)
        request_id = str(next(self._ids))
        future: Future[Message] = Future()
        self._waiting[request_id] = future
        self._conn.send(request.to_message(request_id))
        try:
            response = future.result(self.timeout + 30)
        except TimeoutError:
            raise DomainError("the broker did not answer", request=request.TYPE, broker=self.broker_addr) from None
        finally:
            self._waiting.pop(request_id, None)
        return request.parse_reply(response)

    def _start(self, peer: Peer, db_name: str, process_type: str, options: Iterable[tuple[str, str]] | None,
               wait_seconds: float | None, archive: str | None = None, initialize: bool | None = None) -> Process:
        request = StartProcess(peer.id, db_name, process_type, archive=archive, initialize=initialize,
                               options=tuple((name, value) for name, value in (options or [])))
        record: ProcessRecord = self._request(request)
        with self._changed:
            process = self._processes.get(record.id)
            if process is None:  # the response beat the process_joined event
                process = self._processes[record.id] = Process(self, record)
                self._database(db_name)
        if wait_seconds is not None:
            process.wait_for_status(RUNNING, wait_seconds)
        return process

    def _database(self, name: str) -> Database:
        with self._changed:
            database = self._databases.get(name)
            if database is None:
                database = self._departed_databases.pop(name, None) or Database(self, name)
                self._databases[name] = database
            return database

    def _all_processes(self) -> list[Process]:
        with self._changed:
            return list(self._processes.values())
