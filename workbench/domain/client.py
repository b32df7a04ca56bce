"""The ``Domain`` client and its entities, with the API of the seed's entity module.

::

    from workbench.domain import Domain
    d = Domain('localhost', 'domain', 'bird')
    for peer in d.peers:
        print(str(peer))                       # localhost:48004 [role=broker]
    d.entry_peer.start_storage_manager('teas', '/tmp/teas-data', True)

Listener methods (all optional): ``peer_joined(peer)``, ``peer_left(peer)``, ``process_joined(p)``,
``process_left(p)``, ``process_failed(peer, reason)``, ``process_status_changed(p, status)``,
``database_joined(db)``, ``database_left(db)``, ``closed()``. On connect a listener first hears
about everything already running. The same process is the same ``Process`` object everywhere.
"""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from typing import Any, Iterable

from workbench.domain.agent import DEFAULT_PORT
from workbench.domain.model import (
    FINAL_STATES,
    RUNNING,
    SM,
    TE,
    PeerRecord,
    ProcessRecord,
)
from workbench.domain.protocol import Message, ProtocolError
from workbench.domain.transport import Connection, KnownBrokers, TransportError, connect
from workbench.errors import AuthenticationError, DomainError
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
        raise DomainError(reply.get("Message", "database not found"), database=database, broker=address)
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
        return self.domain._start(self, db_name, SM, options, wait_seconds, Archive=archive,
                                  Initialize=bool(initialize))

    def start_transaction_engine(self, db_name: str, options: Iterable[tuple[str, str]] | None = None,
                                 wait_seconds: float | None = None) -> "Process":
        """Start a TE of ``db_name`` on this peer (the database's SM must be running)."""
        return self.domain._start(self, db_name, TE, options, wait_seconds)

    def get_local_processes(self, db_name: str | None = None) -> list["Process"]:
        return [p for p in self.domain._all_processes() if p.peer is self and (db_name is None or p.database.name == db_name)]

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
        states = {p.status for p in self.processes}
        if not states:
            return "NONE"
        if states == {RUNNING} and self.storage_managers and self.transaction_engines:
            return RUNNING
        return "STARTING" if "STARTING" in states else ",".join(sorted(states))

    def shutdown(self, graceful: bool = True, wait_seconds: float = 30.0) -> None:
        """Stop the TEs first (their clients can move on), then the SMs."""
        for group in (self.transaction_engines, self.storage_managers):
            for process in group:
                process.shutdown(graceful)
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

    @property
    def peer(self) -> Peer:
        return self.domain._peers[self._record.peer]

    @property
    def database(self) -> Database:
        return self.domain._database(self._record.database)

    def shutdown(self, graceful: bool = True) -> None:
        self.domain._request("StopProcess", Process=self.id, Kill=not graceful)

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
        """The zdb status of this process (keys, seq, clients...), asked of the process itself."""
        from workbench.zdb.client import Client

        with Client(self.endpoint, timeout=5.0, **client_options) as connection:
            return connection.status()

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port} [pid={self.pid}] ({self._record.type})"

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
        self._changed = threading.Condition(threading.RLock())
        self._ids = itertools.count(1)
        self._waiting: dict[str, Future[Message]] = {}
        self._closed = False
        self._conn: Connection = connect(address, known_brokers=known_brokers, ca_file=ca_file, timeout=timeout)
        try:
            reply = self._conn.request(Message.make("Connect", Role="client", User=domain_user, Password=domain_pwd),
                                       timeout=timeout)
            if reply.tag != "Connected":
                if reply.get("Code") == "authentication":
                    raise AuthenticationError("wrong domain user or password", user=domain_user, broker=address)
                raise DomainError(reply.get("Message", "connection refused"), broker=address)
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

    getPeers = lambda self: self.peers  # noqa: E731 - the seed names these
    getDatabases = lambda self: self.databases  # noqa: E731

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
                    peer = self._peers.setdefault(record.id, Peer(self, record))
                    peer._record = record
                else:
                    peer = self._peers.pop(record.id, None) or Peer(self, record)
                self._events.emit(kind, peer)
            elif kind in ("database_joined", "database_left"):
                name = event.require("Database")
                database = self._database(name)
                if kind == "database_left":
                    self._databases.pop(name, None)
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
    def _request(self, kind: str, *children: Message, **attrs: Any) -> Message:
        if self._closed:
            raise DomainError("the domain session is closed", broker=self.broker_addr)
        request_id = str(next(self._ids))
        future: Future[Message] = Future()
        self._waiting[request_id] = future
        self._conn.send(Message.make("Request", *children, Id=request_id, Type=kind, **attrs))
        try:
            response = future.result(self.timeout + 30)
        except TimeoutError:
            raise DomainError("the broker did not answer", request=kind, broker=self.broker_addr) from None
        finally:
            self._waiting.pop(request_id, None)
        if response.get("Status") != "ok":
            raise DomainError(response.get("Message", "request failed"), request=kind,
                              code=response.get("Code"))
        return response

    def _start(self, peer: Peer, db_name: str, process_type: str, options: Iterable[tuple[str, str]] | None,
               wait_seconds: float | None, **attrs: Any) -> Process:
        option_messages = [Message.make("Option", Name=name, Value=value) for name, value in (options or [])]
        response = self._request("StartProcess", *option_messages, Peer=peer.id, Database=db_name,
                                 ProcessType=process_type, **attrs)
        record = ProcessRecord.from_message(response.find("Process")[0])
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
                database = self._databases[name] = Database(self, name)
            return database

    def _all_processes(self) -> list[Process]:
        with self._changed:
            return list(self._processes.values())
