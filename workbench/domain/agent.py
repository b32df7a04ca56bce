"""Agents and brokers: the server side of the domain.

Every host runs an agent, which starts and supervises that host's database processes. A broker
is an agent that also holds the domain's state (peers and processes), accepts management clients
and other agents over TLS, checks the domain credentials, routes commands to the agent that must
run them, and streams every change to subscribed clients as events.

An agent joins through a broker (``peer=``), sends heartbeats, and reports what it runs; a broker
that hears nothing from an agent for ``HEARTBEAT_TIMEOUT`` seconds declares it (and its processes)
gone. An agent that loses its broker reconnects and rejoins with the processes still running.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from workbench.domain.model import FINAL_STATES, RUNNING, SM, TE, PeerRecord, ProcessRecord
from workbench.domain.protocol import Message, ProtocolError
from workbench.domain.supervisor import ProcessStartError, ProcessSupervisor
from workbench.domain.transport import (
    Connection,
    KnownBrokers,
    TlsIdentity,
    TlsServer,
    TransportError,
    connect,
)
from workbench.errors import AuthenticationError, ConfigurationError, DomainError

log = logging.getLogger(__name__)

DEFAULT_PORT = 48004
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TIMEOUT = 4.0
COMMAND_TIMEOUT = 30.0


class Credentials:
    """The domain user and a salted scrypt hash of its password, kept in the state dir (never the password)."""

    def __init__(self, user: str, salt: bytes, digest: bytes) -> None:
        self.user, self.salt, self.digest = user, salt, digest

    @staticmethod
    def _hash(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)

    @classmethod
    def create(cls, user: str, password: str) -> "Credentials":
        salt = secrets.token_bytes(16)
        return cls(user, salt, cls._hash(password, salt))

    def verify(self, user: str | None, password: str | None) -> bool:
        # Hash even for a wrong user, so timing does not tell which part was wrong.
        candidate = self._hash(password or "", self.salt)
        return hmac.compare_digest(candidate, self.digest) and hmac.compare_digest((user or "").encode(),
                                                                                   self.user.encode())

    def save(self, path: Path) -> None:
        data = {"user": self.user, "salt": self.salt.hex(), "scrypt": self.digest.hex()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            json.dump(data, stream)


class Agent:
    """An agent (``broker=False``) or a broker (``broker=True``) of a domain.

    ::

        with Agent(port=0, state_dir=tmp, domain_user="domain", domain_password="bird", broker=True) as broker:
            d = Domain(broker.address, "domain", "bird")
    """

    def __init__(self, port: int = DEFAULT_PORT, state_dir: str | os.PathLike[str] = "~/.workbench/agent",
                 domain_user: str = "domain", domain_password: str = "", broker: bool = False,
                 peer: str | None = None, hostname: str = "localhost", host: str = "127.0.0.1",
                 tags: dict[str, str] | None = None) -> None:
        if not domain_password:
            raise ConfigurationError("a domain password is required")
        if not broker and not peer:
            raise ConfigurationError("an agent that is not a broker needs --peer (a broker to join)")
        self.state_dir = Path(state_dir).expanduser()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.host = host
        self.hostname = hostname
        self.is_broker = broker
        self.broker_address = peer
        self.tags = dict(tags or {})
        self.credentials = Credentials.create(domain_user, domain_password)
        self.credentials.save(self.state_dir / "domain-credentials.json")
        self._password = domain_password  # an agent presents it to its broker
        self.address = ""
        self.server: TlsServer | None = None
        self.supervisor: ProcessSupervisor | None = None
        self.state: DomainState | None = None
        self._link: BrokerLink | None = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Agent":
        identity = TlsIdentity.load_or_create(self.state_dir / "tls", self.hostname)
        self.server = TlsServer(identity, self._handle_connection, host=self.host, port=self.port)
        self.server.start()
        self.port = self.server.port
        self.address = f"{self.hostname}:{self.port}"
        self.supervisor = ProcessSupervisor(self.address, self.hostname, self.state_dir, self._process_changed,
                                            bind_host=self.host)
        me = PeerRecord(self.address, self.hostname, self.port, "broker" if self.is_broker else "agent", self.tags)
        if self.is_broker:
            self.state = DomainState(me, self)
        if self.broker_address:
            self._link = BrokerLink(self, me)
            self._link.start()
        log.info("%s %s started (state in %s)", "broker" if self.is_broker else "agent", self.address, self.state_dir)
        return self

    def stop(self) -> None:
        """Stop the processes this peer runs, leave the domain, close every connection."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.supervisor is not None:
            self.supervisor.stop_all()
        if self._link is not None:
            self._link.stop()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- local processes ------------------------------------------------------------------------
    def _process_changed(self, record: ProcessRecord) -> None:
        if self.state is not None:
            self.state.update_process(record)
        if self._link is not None:
            self._link.report(record)

    def run_command(self, command: Message) -> Message:
        """Execute a command on this peer (from our broker, or from ourselves as a broker)."""
        kind = command.get("Type")
        assert self.supervisor is not None
        try:
            if kind == "StartProcess":
                record = self.supervisor.start(
                    command.require("Database"), command.require("ProcessType"), archive=command.get("Archive"),
                    initialize=command.get("Initialize") == "true", primary=command.get("Primary"),
                    options=[(o.require("Name"), o.require("Value")) for o in command.find("Option")])
                return Message.make("Response", record.to_message(), Status="ok")
            if kind == "StopProcess":
                self.supervisor.stop(command.require("Process"), kill=command.get("Kill") == "true")
                return Message.make("Response", Status="ok")
            raise DomainError("unknown command", type=kind)
        except DomainError as exc:
            return Message.make("Response", Status="error", Message=exc.message, Code=type(exc).__name__)

    # -- connections (brokers only accept clients and agents) -----------------------------------
    def _handle_connection(self, conn: Connection) -> None:
        hello = conn.receive(timeout=10.0)
        if hello is None:
            return
        if hello.tag == "Locate" and self.state is not None:
            # Database clients ask for a TE without domain credentials (as SQL clients ask a
            # broker): they only learn an endpoint, and the TE checks their database user.
            conn.send(self.state.locate(hello.require("Database")))
            return
        if hello.tag != "Connect":
            conn.send(Message.make("Error", Code="protocol", Message="expected <Connect>"))
            return
        if not self.credentials.verify(hello.get("User"), hello.get("Password")):
            conn.send(Message.make("Error", Code="authentication", Message="wrong domain user or password"))
            return
        if self.state is None:
            conn.send(Message.make("Error", Code="not-a-broker", Message="this agent is not a broker"))
            return
        role = hello.get("Role", "client")
        conn.send(Message.make("Connected", Broker=self.address))
        if role == "agent":
            self.state.serve_agent(conn)
        else:
            self.state.serve_client(conn)


class DomainState:
    """A broker's view of the domain and the fan-out of its changes to subscribed clients."""

    def __init__(self, me: PeerRecord, agent: Agent) -> None:
        self.agent = agent
        self.me = me
        self.peers: dict[str, PeerRecord] = {me.id: me}
        self.processes: dict[str, ProcessRecord] = {}
        self.links: dict[str, AgentConnection] = {}
        self.subscribers: list[Connection] = []
        self._turn = -1  # round robin over a database's TEs in locate()
        self.lock = threading.RLock()

    # -- changes --------------------------------------------------------------------------------
    def _broadcast(self, *events: Message) -> None:
        for conn in list(self.subscribers):
            try:
                for event in events:
                    conn.send(event)
            except (TransportError, OSError):
                self.subscribers.remove(conn)

    def update_process(self, record: ProcessRecord) -> None:
        with self.lock:
            known = self.processes.get(record.id)
            events: list[Message] = []
            if known is None:
                if record.status in FINAL_STATES:
                    return  # died before anyone heard of it: its start request reported the failure
                if not any(p.database == record.database for p in self.processes.values()):
                    events.append(Message.make("Event", Type="database_joined", Database=record.database))
                self.processes[record.id] = record
                events.append(Message.make("Event", record.to_message(), Type="process_joined"))
            elif known.status != record.status:
                self.processes[record.id] = record
                events.append(Message.make("Event", record.to_message(), Type="process_status_changed"))
            else:
                self.processes[record.id] = record
            if record.status in FINAL_STATES and record.id in self.processes:
                events += self._remove_process(record)
            self._broadcast(*events)

    def _remove_process(self, record: ProcessRecord) -> list[Message]:
        del self.processes[record.id]
        events = []
        if record.status == "FAILED":
            events.append(Message.make("Event", record.to_message(), Type="process_failed",
                                       Reason=record.reason or "failed"))
        events.append(Message.make("Event", record.to_message(), Type="process_left"))
        if not any(p.database == record.database for p in self.processes.values()):
            events.append(Message.make("Event", Type="database_left", Database=record.database))
        return events

    def add_peer(self, peer: PeerRecord, link: "AgentConnection") -> None:
        with self.lock:
            self.links[peer.id] = link
            new = peer.id not in self.peers
            self.peers[peer.id] = peer
            if new:
                self._broadcast(Message.make("Event", peer.to_message(), Type="peer_joined"))

    def remove_peer(self, peer_id: str, link: "AgentConnection") -> None:
        with self.lock:
            if self.links.get(peer_id) is not link:
                return  # a newer connection of the same agent took over
            del self.links[peer_id]
            peer = self.peers.pop(peer_id, None)
            events: list[Message] = []
            for record in [p for p in self.processes.values() if p.peer == peer_id]:
                record = record.copy()
                record.status, record.reason = "FAILED", "its agent left the domain"
                events += self._remove_process(record)
            if peer is not None:
                events.append(Message.make("Event", peer.to_message(), Type="peer_left"))
            self._broadcast(*events)

    def state_message(self) -> Message:
        with self.lock:
            return Message.make("State", *(p.to_message() for p in self.peers.values()),
                                *(p.to_message() for p in self.processes.values()))

    # -- clients --------------------------------------------------------------------------------
    def serve_client(self, conn: Connection) -> None:
        try:
            while True:
                message = conn.receive()
                if message is None:
                    return
                if message.tag == "Subscribe":
                    with self.lock:  # the snapshot and the subscription are one step: no event lost
                        conn.send(self.state_message())
                        self.subscribers.append(conn)
                elif message.tag == "Request":
                    self._answer(conn, message)
                else:
                    raise ProtocolError("unexpected message from a client", tag=message.tag)
        finally:
            with self.lock:
                if conn in self.subscribers:
                    self.subscribers.remove(conn)

    def _answer(self, conn: Connection, request: Message) -> None:
        request_id = request.require("Id")
        try:
            response = self._route(request)
        except DomainError as exc:
            response = Message.make("Response", Status="error", Message=exc.message, Code=type(exc).__name__)
        response.attrs["Id"] = request_id
        conn.send(response)

    def _route(self, request: Message) -> Message:
        kind = request.get("Type")
        if kind == "StartProcess":
            peer_id = request.require("Peer")
            if request.get("ProcessType") == TE:
                request.attrs["Primary"] = self._primary_of(request.require("Database"))
            return self._send_to_peer(peer_id, request)
        if kind == "StopProcess":
            process_id = request.require("Process")
            with self.lock:
                record = self.processes.get(process_id)
            if record is None:
                raise DomainError("no such process", process=process_id)
            return self._send_to_peer(record.peer, request)
        raise DomainError("unknown request", type=kind)

    def locate(self, database: str) -> Message:
        """A running TE of ``database`` for a client, taking turns among them."""
        with self.lock:
            engines = sorted((r for r in self.processes.values()
                              if r.database == database and r.type == TE and r.status == RUNNING),
                             key=lambda r: r.id)
            if not engines:
                return Message.make("Error", Code="not-found", Message=f"no running transaction engine for {database}")
            self._turn += 1
            return Message.make("Located", Database=database, Endpoint=engines[self._turn % len(engines)].endpoint)

    def _primary_of(self, database: str) -> str:
        with self.lock:
            for record in self.processes.values():
                if record.database == database and record.type == SM and record.status == RUNNING:
                    return record.endpoint
        raise ProcessStartError("no running storage manager for this database", database=database)

    def _send_to_peer(self, peer_id: str, command: Message) -> Message:
        if peer_id == self.me.id:
            return self.agent.run_command(command)
        with self.lock:
            link = self.links.get(peer_id)
        if link is None:
            raise DomainError("no such peer", peer=peer_id)
        return link.command(command)

    # -- agents ---------------------------------------------------------------------------------
    def serve_agent(self, conn: Connection) -> None:
        join = conn.receive(timeout=10.0)
        if join is None or join.tag != "Join" or not join.find("Peer"):
            raise ProtocolError("an agent must <Join> with its <Peer>")
        peer = PeerRecord.from_message(join.find("Peer")[0])
        link = AgentConnection(conn, peer.id)
        self.add_peer(peer, link)
        for process in join.find("Process"):  # what a rejoining agent still runs
            self.update_process(ProcessRecord.from_message(process))
        try:
            link.serve(self)
        finally:
            self.remove_peer(peer.id, link)


class AgentConnection:
    """The broker's end of an agent's connection: commands out, reports and heartbeats in."""

    def __init__(self, conn: Connection, peer_id: str) -> None:
        self.conn = conn
        self.peer_id = peer_id
        self._ids = itertools.count(1)
        self._waiting: dict[str, Future[Message]] = {}

    def command(self, command: Message) -> Message:
        command_id = str(next(self._ids))
        future: Future[Message] = Future()
        self._waiting[command_id] = future
        self.conn.send(Message("Command", {**command.attrs, "Id": command_id}, command.children))
        try:
            return future.result(COMMAND_TIMEOUT)
        except TimeoutError:
            raise DomainError("the agent did not answer", peer=self.peer_id) from None
        finally:
            self._waiting.pop(command_id, None)

    def serve(self, state: DomainState) -> None:
        try:
            while True:
                try:
                    message = self.conn.receive(timeout=HEARTBEAT_TIMEOUT)
                except TransportError as exc:
                    log.warning("agent %s lost: %s", self.peer_id, exc)
                    return
                if message is None:
                    return
                if message.tag == "Heartbeat":
                    continue
                if message.tag == "ProcessUpdate":
                    for process in message.find("Process"):
                        state.update_process(ProcessRecord.from_message(process))
                elif message.tag == "Response":
                    future = self._waiting.get(message.get("Id", ""))
                    if future is not None:
                        future.set_result(message)
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(DomainError("the agent left the domain", peer=self.peer_id))


class BrokerLink:
    """An agent's connection to its broker: join, heartbeats, commands, reconnects."""

    def __init__(self, agent: Agent, me: PeerRecord) -> None:
        self.agent = agent
        self.me = me
        self.conn: Connection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"broker-link-{me.id}", daemon=True)
        self.known_brokers = KnownBrokers(agent.state_dir / "known_brokers")
        self.joined = threading.Event()

    def start(self) -> None:
        self._thread.start()
        if not self.joined.wait(15.0):
            raise DomainError("could not join the domain through the broker", broker=self.agent.broker_address)

    def stop(self) -> None:
        self._stop.set()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(10)

    def report(self, record: ProcessRecord) -> None:
        conn = self.conn
        if conn is not None:
            try:
                conn.send(Message.make("ProcessUpdate", record.to_message()))
            except (TransportError, OSError):
                pass  # the rejoin after reconnecting reports the current state

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 0.2
            except AuthenticationError as exc:
                log.error("broker refused this agent: %s", exc)
                return
            except (TransportError, ProtocolError, OSError) as exc:
                if self._stop.is_set():
                    return  # stop() closed the connection under the session: not a fault
                log.warning("link to broker %s: %s; reconnecting", self.agent.broker_address, exc)
            self.conn = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _session(self) -> None:
        conn = connect(self.agent.broker_address, known_brokers=self.known_brokers)
        self.conn = conn
        try:
            reply = conn.request(Message.make("Connect", Role="agent", User=self.agent.credentials.user,
                                              Password=self.agent._password))
            if reply.tag != "Connected":
                raise AuthenticationError(reply.get("Message", "refused"), broker=self.agent.broker_address)
            running = self.agent.supervisor.running() if self.agent.supervisor else []
            conn.send(Message.make("Join", self.me.to_message(), *(r.to_message() for r in running)))
            self.joined.set()
            beat = threading.Thread(target=self._heartbeat, args=(conn,), daemon=True)
            beat.start()
            while not self._stop.is_set():
                command = conn.receive()
                if command is None:
                    return
                if command.tag == "Command":
                    threading.Thread(target=self._execute, args=(conn, command), daemon=True).start()
        finally:
            conn.close()

    def _execute(self, conn: Connection, command: Message) -> None:
        response = self.agent.run_command(command)
        response.attrs["Id"] = command.require("Id")
        try:
            conn.send(response)
        except (TransportError, OSError):
            pass

    def _heartbeat(self, conn: Connection) -> None:
        while not self._stop.is_set() and not conn.closed:
            try:
                conn.send(Message.make("Heartbeat", Time=f"{time.time():.3f}"))
            except (TransportError, OSError):
                return
            self._stop.wait(HEARTBEAT_SECONDS)
