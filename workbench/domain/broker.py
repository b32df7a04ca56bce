"""A broker's state of the domain, replicated between brokers, and the connections it serves.

Each broker *owns* the peers attached to it (itself and the agents that joined through it) and
their processes; it learns everything else from the other brokers. Brokers link to each other
over TLS (``--peer`` dials one; they tell each other about the rest, and the one with the lower
id dials), first exchange a ``<Sync>`` of what they own, then stream every change of it
(``PeerUpdate``, ``PeerGone``, ``ProcessUpdate``), their descriptions and the reconciler's
actions. So a client connected to any broker sees the whole domain and hears every event. When a
link is silent for ``HEARTBEAT_TIMEOUT`` seconds (or closes), the other broker's peers and
processes leave; agents of a dead broker fail over to another broker they know and rejoin.

Commands for a peer owned by another broker are forwarded over the broker link.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable

from workbench.domain.descriptions import DescriptionStore
from workbench.domain.model import (
    FAILED,
    FINAL_STATES,
    QUIESCED,
    RUNNING,
    SM,
    STOPPED,
    TE,
    DescriptionRecord,
    PeerRecord,
    ProcessRecord,
)
from workbench.domain.protocol import Message, ProtocolError, encode_frame
from workbench.domain.reconciler import Reconciler
from workbench.domain.errors import NoSuchProcessError, ProcessStartError
from workbench.domain.templates import DescriptionError, find_template
from workbench.domain.transport import Connection, KnownBrokers, TransportError, connect
from workbench.errors import DomainError

if TYPE_CHECKING:
    from workbench.domain.agent import Agent

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TIMEOUT = 4.0
COMMAND_TIMEOUT = 30.0
#: how long stop_description waits for the database's processes to leave
STOP_WAIT_SECONDS = 30.0
#: how long a TE's start waits for its database's storage manager to finish starting
PRIMARY_WAIT_SECONDS = 30.0
#: a client or broker that takes no data for this long is dropped, so it cannot stall the broker
SEND_TIMEOUT = 5.0


def error_response(exc: DomainError) -> Message:
    return Message.make("Response", Status="error", Message=exc.message, Code=type(exc).__name__)


class DomainState:
    """A broker's view of the domain, its links to agents and brokers, and the fan-out to clients."""

    def __init__(self, me: PeerRecord, agent: "Agent") -> None:
        self.agent = agent
        self.me = me
        self.peers: dict[str, PeerRecord] = {me.id: me}
        self.owner: dict[str, str] = {me.id: me.id}  # peer id -> id of the broker it is attached to
        self.processes: dict[str, ProcessRecord] = {}
        self.links: dict[str, AgentConnection] = {}
        self.brokers: dict[str, BrokerConnection] = {}
        self.subscribers: list[Connection] = []
        self.descriptions = DescriptionStore(agent.state_dir / "descriptions.json", me.id)
        self.lock = threading.RLock()
        self._turn = -1  # round robin over a database's TEs in locate()
        self._dialers: dict[str, BrokerDialer] = {}
        self.stopping = threading.Event()
        self.reconciler = Reconciler(self)

    def start(self, peer_brokers: list[str]) -> None:
        self.reconciler.start()
        for address in peer_brokers:
            self.dial(address)

    def stop(self) -> None:
        self.stopping.set()
        self.reconciler.stop()
        for dialer in list(self._dialers.values()):
            dialer.stop()
        for link in list(self.brokers.values()):
            link.conn.close()

    # -- fan-out --------------------------------------------------------------------------------
    def _broadcast(self, *events: Message) -> None:
        if not events or not self.subscribers:
            return
        frames = b"".join(encode_frame(event) for event in events)  # encoded once for every subscriber
        for conn in list(self.subscribers):
            try:
                conn.send_frames(frames, timeout=SEND_TIMEOUT)
            except (TransportError, OSError):
                if conn in self.subscribers:
                    self.subscribers.remove(conn)

    def _replicate(self, *messages: Message) -> None:
        for link in list(self.brokers.values()):
            link.send_all(messages)

    def is_acting(self) -> bool:
        """Whether this broker acts for the domain (runs the reconciler): the lowest id among linked brokers."""
        with self.lock:
            return self.me.id == min([self.me.id, *self.brokers])

    # -- processes ------------------------------------------------------------------------------
    def update_process(self, record: ProcessRecord, origin: str | None = None) -> None:
        """A process changed: on a peer of ours (``origin`` None) or as broker ``origin`` tells us."""
        with self.lock:
            if origin is not None and self.owner.get(record.peer) != origin:
                return  # stale: that peer is attached to another broker now
            events = self._apply_process(record)
            if origin is None:
                self._replicate(Message.make("ProcessUpdate", record.to_message()))
            self._broadcast(*events)
        self.reconciler.wake()

    def _apply_process(self, record: ProcessRecord) -> list[Message]:
        known = self.processes.get(record.id)
        events: list[Message] = []
        if known is None:
            if record.status in FINAL_STATES:
                return []  # died before anyone heard of it: its start request reported the failure
            if not any(p.database == record.database for p in self.processes.values()):
                events.append(Message.make("Event", Type="database_joined", Database=record.database))
            self.processes[record.id] = record
            events.append(Message.make("Event", record.to_message(), Type="process_joined"))
        elif known.status != record.status:
            self.processes[record.id] = record
            events.append(Message.make("Event", record.to_message(), Type="process_status_changed"))
        else:
            self.processes[record.id] = record
        if record.status in FINAL_STATES:
            events += self._remove_process(record)
        return events

    def _remove_process(self, record: ProcessRecord) -> list[Message]:
        del self.processes[record.id]
        events = []
        if record.status == FAILED:
            events.append(Message.make("Event", record.to_message(), Type="process_failed",
                                       Reason=record.reason or "failed"))
        events.append(Message.make("Event", record.to_message(), Type="process_left"))
        if not any(p.database == record.database for p in self.processes.values()):
            events.append(Message.make("Event", Type="database_left", Database=record.database))
        return events

    def _end_process(self, record: ProcessRecord, reason: str) -> list[Message]:
        ended = record.copy()
        ended.status, ended.reason = FAILED, reason
        return self._apply_process(ended)

    # -- peers ----------------------------------------------------------------------------------
    def _apply_peer(self, peer: PeerRecord, owner: str) -> list[Message]:
        self.owner[peer.id] = owner
        new = peer.id not in self.peers
        self.peers[peer.id] = peer
        return [Message.make("Event", peer.to_message(), Type="peer_joined")] if new else []

    def _drop_peer(self, peer_id: str, reason: str) -> list[Message]:
        """A peer and its processes leave (its agent or its broker is gone)."""
        events: list[Message] = []
        for record in [p for p in self.processes.values() if p.peer == peer_id]:
            events += self._end_process(record, reason)
        self.owner.pop(peer_id, None)
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            events.append(Message.make("Event", peer.to_message(), Type="peer_left"))
        return events

    def join_agent(self, peer: PeerRecord, link: "AgentConnection", running: list[ProcessRecord]) -> None:
        """An agent (re)joined through us, running ``running``: whatever else we knew of it has ended."""
        with self.lock:
            self.links[peer.id] = link
            events = self._apply_peer(peer, self.me.id)
            self._replicate(Message.make("PeerUpdate", peer.to_message()))
            still = {record.id for record in running}
            for record in [p for p in self.processes.values() if p.peer == peer.id and p.id not in still]:
                ended = record.copy()
                ended.status, ended.reason = FAILED, "gone when its agent rejoined"
                events += self._apply_process(ended)
                self._replicate(Message.make("ProcessUpdate", ended.to_message()))
            self._broadcast(*events)
            for record in running:
                self.update_process(record)
            link.send(self.brokers_message())

    def leave_agent(self, peer_id: str, link: "AgentConnection") -> None:
        with self.lock:
            if self.links.get(peer_id) is not link:
                return  # a newer connection of the same agent took over
            del self.links[peer_id]
            if self.owner.get(peer_id) != self.me.id:
                return  # the agent moved to another broker meanwhile
            events = self._drop_peer(peer_id, "its agent left the domain")
            self._replicate(Message.make("PeerGone", Id=peer_id))
            self._broadcast(*events)
        self.reconciler.wake()

    def state_message(self) -> Message:
        with self.lock:
            return Message.make("State", *(p.to_message() for p in self.peers.values()),
                                *(p.to_message() for p in self.processes.values()),
                                *(d.to_message() for d in self.descriptions.live()))

    # -- brokers --------------------------------------------------------------------------------
    def dial(self, address: str) -> None:
        """Keep a link to the broker at ``address`` (reconnecting while this broker runs)."""
        with self.lock:
            if address == self.me.id or address in self._dialers or self.stopping.is_set():
                return
            dialer = self._dialers[address] = BrokerDialer(self, address)
        dialer.start()

    def brokers_message(self) -> Message:
        """The brokers we know, for agents (to fail over) and brokers (to link to each other)."""
        with self.lock:
            ids = sorted({self.me.id, *self.brokers})
        return Message.make("Brokers", *(Message.make("Broker", Address=i) for i in ids))

    def sync_message(self) -> Message:
        with self.lock:
            own = [p for p in self.peers.values() if self.owner.get(p.id) == self.me.id]
            own_ids = {p.id for p in own}
            return Message.make("Sync", *(p.to_message() for p in own),
                                *(r.to_message() for r in self.processes.values() if r.peer in own_ids),
                                *(d.to_message(secrets=True) for d in self.descriptions.everything()),
                                Broker=self.me.id)

    def register_broker(self, broker_id: str, link: "BrokerConnection") -> bool:
        """Take a new link to ``broker_id``; of two links between the same brokers, the lower id's dial wins."""
        with self.lock:
            if broker_id == self.me.id:
                return False
            existing = self.brokers.get(broker_id)
            if existing is not None:
                # The same dialer again means the old link is dead but not noticed yet; two
                # dialers means both dialed at once: the lower id's link wins on both ends.
                if existing.dialer != link.dialer and link.dialer != min(self.me.id, broker_id):
                    return False
                existing.conn.close()
            self.brokers[broker_id] = link
            link.send(self.sync_message())  # first: every change sent after it is newer
            announcement = self.brokers_message()
            for other in self.brokers.values():
                other.send(announcement)
            for agent_link in self.links.values():
                agent_link.send(announcement)
        self.reconciler.wake()
        return True

    def unregister_broker(self, broker_id: str, link: "BrokerConnection") -> None:
        with self.lock:
            if self.brokers.get(broker_id) is not link:
                return
            del self.brokers[broker_id]
            events: list[Message] = []
            for peer_id in [p for p, owner in self.owner.items() if owner == broker_id]:
                events += self._drop_peer(peer_id, f"its broker {broker_id} left the domain")
            self._broadcast(*events)
        log.warning("broker %s: link to broker %s lost", self.me.id, broker_id)
        self.reconciler.wake()

    def apply_sync(self, broker_id: str, sync: Message) -> None:
        """What broker ``broker_id`` owns now: its peers and processes replace what we had from it."""
        peers = [PeerRecord.from_message(m) for m in sync.find("Peer")]
        records = [ProcessRecord.from_message(m) for m in sync.find("Process")]
        with self.lock:
            events: list[Message] = []
            current = {p.id for p in peers}
            for peer_id in [p for p, owner in self.owner.items() if owner == broker_id and p not in current]:
                events += self._drop_peer(peer_id, f"no longer attached to broker {broker_id}")
            for peer in peers:
                if self.owner.get(peer.id) == self.me.id and peer.id in self.links:
                    continue  # attached to us: our own knowledge is fresher
                events += self._apply_peer(peer, broker_id)
            running = {r.id for r in records}
            for record in [r for r in self.processes.values()
                           if self.owner.get(r.peer) == broker_id and r.id not in running]:
                events += self._end_process(record, f"no longer running according to broker {broker_id}")
            for record in records:
                if self.owner.get(record.peer) == broker_id:
                    events += self._apply_process(record)
            self._broadcast(*events)
        for message in sync.find("Description"):
            self.merge_description(DescriptionRecord.from_message(message))
        self.reconciler.wake()

    def apply_remote(self, broker_id: str, message: Message) -> None:
        """One change streamed by broker ``broker_id``."""
        if message.tag == "ProcessUpdate":
            for process in message.find("Process"):
                self.update_process(ProcessRecord.from_message(process), origin=broker_id)
        elif message.tag == "PeerUpdate":
            peer = PeerRecord.from_message(message.find("Peer")[0])
            with self.lock:
                self._broadcast(*self._apply_peer(peer, broker_id))
        elif message.tag == "PeerGone":
            peer_id = message.require("Id")
            with self.lock:
                if self.owner.get(peer_id) == broker_id:
                    self._broadcast(*self._drop_peer(peer_id, f"its agent left broker {broker_id}"))
            self.reconciler.wake()
        elif message.tag == "DescriptionUpdate":
            self.merge_description(DescriptionRecord.from_message(message.find("Description")[0]))
        elif message.tag == "Relay":
            with self.lock:
                self._broadcast(*message.children)
        elif message.tag == "Brokers":
            for broker in message.find("Broker"):
                address = broker.require("Address")
                if address != self.me.id and address not in self.brokers and self.me.id < address:
                    self.dial(address)  # the lower id dials, so two brokers do not dial each other
        else:
            raise ProtocolError("unexpected message from a broker", tag=message.tag)

    # -- descriptions ---------------------------------------------------------------------------
    def description_written(self, record: DescriptionRecord) -> None:
        """A description changed here: tell clients and the other brokers, wake the reconciler."""
        with self.lock:
            self._broadcast(Message.make("Event", record.to_message(), Type="description_changed"))
            self._replicate(Message.make("DescriptionUpdate", record.to_message(secrets=True)))
        self.reconciler.wake()

    def merge_description(self, record: DescriptionRecord) -> None:
        if self.descriptions.merge(record):
            with self.lock:
                self._broadcast(Message.make("Event", record.to_message(), Type="description_changed"))
            self.reconciler.wake()

    def reconciler_action(self, name: str, action: str, detail: str) -> None:
        """Tell every client of every broker what the reconciler did for description ``name``."""
        event = Message.make("Event", Type="reconciler_action", Description=name, Action=action, Detail=detail)
        log.info("reconciler: %s %s: %s", name, action, detail)
        with self.lock:
            self._broadcast(event)
            self._replicate(Message.make("Relay", event))

    # -- clients --------------------------------------------------------------------------------
    def serve_client(self, conn: Connection) -> None:
        try:
            while True:
                message = conn.receive()
                if message is None:
                    return
                if message.tag == "Subscribe":
                    with self.lock:  # the snapshot and the subscription are one step: no event lost
                        conn.send(self.state_message(), timeout=SEND_TIMEOUT)
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
            handler = self._requests.get(request.get("Type", ""))
            if handler is None:
                raise DomainError("unknown request", type=request.get("Type"))
            response = handler(self, request)
        except DomainError as exc:
            response = error_response(exc)
        response.attrs["Id"] = request_id
        conn.send(response)

    def _start_process(self, request: Message) -> Message:
        peer_id = request.require("Peer")
        if request.get("ProcessType") == TE or request.get("Standby") == "true":
            request.attrs["Primary"] = self._primary_of(request.require("Database"))
        return self.send_to_peer(peer_id, request)

    def _stop_process(self, request: Message) -> Message:
        process_id = request.require("Process")
        with self.lock:
            record = self.processes.get(process_id)
        if record is None:
            raise NoSuchProcessError("no such process", process=process_id)
        return self.send_to_peer(record.peer, request)

    def _quiesce_database(self, request: Message) -> Message:
        database = request.require("Database")
        quiesced = request.get("Type") == "QuiesceDatabase"
        with self.lock:
            managers = [r for r in self.processes.values()
                        if r.database == database and r.type == SM and not r.standby]
        if not managers:
            raise DomainError("no running storage manager for this database", database=database)
        for record in managers:
            command = Message.make("Command", Type="Quiesce", Process=record.id, Quiesced=quiesced)
            response = self.send_to_peer(record.peer, command)
            if response.get("Status") != "ok":
                raise DomainError(response.get("Message", "quiesce failed"), database=database, process=record.id)
        return Message.make("Response", Status="ok", Database=database, Quiesced=quiesced)

    def _create_description(self, request: Message) -> Message:
        record = DescriptionRecord.from_message(request.find("Description")[0])
        record = self.descriptions.create(record)
        self.description_written(record)
        return Message.make("Response", record.to_message(), Status="ok")

    def _update_description(self, request: Message) -> Message:
        name = request.require("Name")
        record = self.descriptions.get(name)
        template = find_template(request.get("Template") or record.template)
        variables = record.variables
        if request.get("Variables") == "replace":
            variables = {v.require("Name"): v.require("Value") for v in request.find("Variable")}
        template.resolve(variables)
        record = self.descriptions.change(name, template=template.name, variables=variables)
        self.description_written(record)
        return Message.make("Response", record.to_message(), Status="ok")

    def _delete_description(self, request: Message) -> Message:
        name = request.require("Name")
        if self.descriptions.get(name).started:
            raise DescriptionError(f"description {name!r} is started: stop it before deleting it", description=name)
        record = self.descriptions.change(name, deleted=True, status=STOPPED)
        self.description_written(record)
        return Message.make("Response", Status="ok")

    def _start_description(self, request: Message) -> Message:
        name = request.require("Name")
        record = self.descriptions.get(name)
        template = find_template(record.template)
        variables = template.resolve(record.variables)
        with self.lock:
            available = len(self.peers)
        needed = template.peers_needed(variables)
        host = variables.get("HOST")
        if host and host not in self.peers:
            raise DescriptionError(f"HOST {host!r} is no peer of the domain", description=name, host=host)
        if available < needed:
            raise DescriptionError(f"template {template.name!r} needs {needed} peers; the domain has {available}",
                                   description=name, needed=needed, available=available)
        record = self.descriptions.change(name, started=True, status="STARTING")
        self.description_written(record)
        return Message.make("Response", record.to_message(), Status="ok")

    def _stop_description(self, request: Message) -> Message:
        """Mark the description stopped (the reconciler lets go), then stop its processes: TEs, then SMs."""
        name = request.require("Name")
        record = self.descriptions.change(name, started=False, status=STOPPED)
        self.description_written(record)
        # A second sweep catches a process a reconciler pass started just before it heard of the stop.
        for _ in range(2):
            for process_type in (TE, SM):
                with self.lock:
                    targets = [r for r in self.processes.values() if r.database == name and r.type == process_type]
                for target in targets:
                    try:
                        self.send_to_peer(target.peer, Message.make("Command", Type="StopProcess", Process=target.id))
                    except DomainError as exc:  # its peer left meanwhile: the process is gone with it
                        log.warning("stop_description %s: %s", name, exc)
                self.wait_gone({t.id for t in targets}, STOP_WAIT_SECONDS)
        return Message.make("Response", record.to_message(), Status="ok")

    def wait_gone(self, process_ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not process_ids & set(self.processes):
                    return True
            time.sleep(0.05)
        return False

    _requests: dict[str, Callable[["DomainState", Message], Message]] = {
        "StartProcess": _start_process, "StopProcess": _stop_process,
        "QuiesceDatabase": _quiesce_database, "UnquiesceDatabase": _quiesce_database,
        "CreateDescription": _create_description, "UpdateDescription": _update_description,
        "DeleteDescription": _delete_description, "StartDescription": _start_description,
        "StopDescription": _stop_description,
    }

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

    def _primary_of(self, database: str, timeout: float = PRIMARY_WAIT_SECONDS) -> str:
        """The endpoint of the database's storage manager, waiting for one that is still starting.

        The seed starts a TE right after its SM without waiting: the TE's start waits here.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                managers = [r for r in self.processes.values()
                            if r.database == database and r.type == SM and not r.standby]
            for record in managers:
                if record.status in (RUNNING, QUIESCED):
                    return record.endpoint
            if not managers or time.monotonic() > deadline:
                raise ProcessStartError("no running storage manager for this database", database=database)
            time.sleep(0.02)

    def send_to_peer(self, peer_id: str, command: Message, forwarded: bool = False) -> Message:
        """Run a command on a peer: ourselves, an agent attached to us, or through the broker it is attached to."""
        if peer_id == self.me.id:
            return self.agent.run_command(command)
        with self.lock:
            owner = self.owner.get(peer_id)
            agent_link = self.links.get(peer_id) if owner == self.me.id else None
            broker_link = self.brokers.get(owner) if owner is not None and owner != self.me.id else None
        if agent_link is not None:
            return agent_link.command(command)
        if broker_link is not None and not forwarded:
            return broker_link.command(Message(command.tag, {**command.attrs, "Target": peer_id}, command.children))
        raise DomainError("no such peer", peer=peer_id)

    # -- agents ---------------------------------------------------------------------------------
    def serve_agent(self, conn: Connection) -> None:
        join = conn.receive(timeout=10.0)
        if join is None or join.tag != "Join" or not join.find("Peer"):
            raise ProtocolError("an agent must <Join> with its <Peer>")
        peer = PeerRecord.from_message(join.find("Peer")[0])
        link = AgentConnection(conn, peer.id)
        running = [ProcessRecord.from_message(p) for p in join.find("Process")]  # what a rejoining agent runs
        self.join_agent(peer, link, [r for r in running if r.status not in FINAL_STATES])
        try:
            link.serve(self)
        finally:
            self.leave_agent(peer.id, link)

    def serve_broker(self, conn: Connection, dialed: bool,
                     on_hello: Callable[[str], None] | None = None) -> None:
        """A link with another broker (either end): hello, sync, then changes both ways until it breaks."""
        conn.send(Message.make("BrokerHello", Broker=self.me.id))
        hello = conn.receive(timeout=10.0)
        if hello is None or hello.tag != "BrokerHello":
            raise ProtocolError("a broker link starts with <BrokerHello>")
        broker_id = hello.require("Broker")
        if on_hello is not None:
            on_hello(broker_id)
        link = BrokerConnection(conn, broker_id, dialer=self.me.id if dialed else broker_id)
        if not self.register_broker(broker_id, link):  # which sends our sync first
            conn.close()
            return
        log.info("broker %s linked with broker %s", self.me.id, broker_id)
        try:
            sync = conn.receive(timeout=10.0)
            if sync is None or sync.tag != "Sync":
                raise ProtocolError("a broker link sends <Sync> after its hello")
            self.apply_sync(broker_id, sync)
            link.serve(self)
        finally:
            self.unregister_broker(broker_id, link)


class CommandChannel:
    """One end of a management link: commands out with futures for their responses, safe sends."""

    def __init__(self, conn: Connection, peer_id: str) -> None:
        self.conn = conn
        self.peer_id = peer_id
        self._ids = itertools.count(1)
        self._waiting: dict[str, Future[Message]] = {}

    def send(self, message: Message) -> None:
        self.send_all((message,))

    def send_all(self, messages: tuple[Message, ...]) -> None:
        try:
            self.conn.send_all(messages, timeout=SEND_TIMEOUT)
        except (TransportError, OSError) as exc:
            log.debug("send to %s failed: %s", self.peer_id, exc)  # its reader notices and cleans up

    def command(self, command: Message) -> Message:
        command_id = str(next(self._ids))
        future: Future[Message] = Future()
        self._waiting[command_id] = future
        try:
            self.conn.send(Message("Command", {**command.attrs, "Id": command_id}, command.children))
            return future.result(COMMAND_TIMEOUT)
        except TimeoutError:
            raise DomainError("the peer did not answer", peer=self.peer_id) from None
        except (TransportError, OSError):
            raise DomainError("the peer left the domain", peer=self.peer_id) from None
        finally:
            self._waiting.pop(command_id, None)

    def resolve(self, response: Message) -> None:
        future = self._waiting.get(response.get("Id", ""))
        if future is not None and not future.done():
            future.set_result(response)

    def fail_waiting(self) -> None:
        for future in list(self._waiting.values()):
            if not future.done():
                future.set_exception(DomainError("the peer left the domain", peer=self.peer_id))

    def start_heartbeats(self) -> None:
        """Send a heartbeat every ``HEARTBEAT_SECONDS`` until the connection closes (so the other end can tell
        a silent peer from a frozen one)."""
        threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.peer_id}", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self.conn.closed:
            self.send(Message.make("Heartbeat", Time=f"{time.time():.3f}"))
            time.sleep(HEARTBEAT_SECONDS)

    def receive(self) -> Message | None:
        """The next message; None when the link ended (closed, broken, or silent past the heartbeat timeout)."""
        try:
            return self.conn.receive(timeout=HEARTBEAT_TIMEOUT)
        except TransportError as exc:
            log.warning("link to %s lost: %s", self.peer_id, exc)
            return None


class AgentConnection(CommandChannel):
    """The broker's end of an agent's connection: commands out, reports and heartbeats in."""

    def serve(self, state: DomainState) -> None:
        self.start_heartbeats()  # the agent fails over to another broker when we go silent
        try:
            while (message := self.receive()) is not None:
                if message.tag == "ProcessUpdate":
                    for process in message.find("Process"):
                        state.update_process(ProcessRecord.from_message(process))
                elif message.tag == "Response":
                    self.resolve(message)
        finally:
            self.conn.close()  # also ends the heartbeats
            self.fail_waiting()


class BrokerConnection(CommandChannel):
    """A link between two brokers: replicated changes and forwarded commands both ways, heartbeats."""

    def __init__(self, conn: Connection, peer_id: str, dialer: str) -> None:
        super().__init__(conn, peer_id)
        self.dialer = dialer  # the id of the broker that opened the link

    def serve(self, state: DomainState) -> None:
        self.start_heartbeats()
        try:
            while (message := self.receive()) is not None:
                if message.tag == "Heartbeat":
                    continue
                if message.tag == "Response":
                    self.resolve(message)
                elif message.tag == "Command":
                    threading.Thread(target=self._forwarded, args=(state, message), daemon=True).start()
                else:
                    state.apply_remote(self.peer_id, message)
        finally:
            self.conn.close()
            self.fail_waiting()

    def _forwarded(self, state: DomainState, command: Message) -> None:
        """A command another broker forwards for a peer attached to us."""
        try:
            response = state.send_to_peer(command.require("Target"), command, forwarded=True)
        except DomainError as exc:
            response = error_response(exc)
        response.attrs["Id"] = command.require("Id")
        self.send(response)


class BrokerDialer:
    """Keeps this broker linked to the broker at ``address``: dials, serves the link, redials after it breaks."""

    def __init__(self, state: DomainState, address: str) -> None:
        self.state = state
        self.address = address
        self.known_brokers = KnownBrokers(state.agent.state_dir / "known_brokers")
        self._thread = threading.Thread(target=self._run, name=f"broker-dialer-{address}", daemon=True)
        self._conn: Connection | None = None
        self.linked_id = address  # the broker's id, learned from its hello (its address may differ)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._thread.join(5)

    def _run(self) -> None:
        backoff = 0.2
        while not self.state.stopping.is_set():
            if self.linked_id in self.state.brokers:
                self.state.stopping.wait(1.0)  # linked already (the other broker dialed us)
                continue
            try:
                self._link()
                backoff = 0.2
            except (DomainError, OSError) as exc:
                log.info("broker %s: link to %s: %s", self.state.me.id, self.address, exc)
            self._conn = None
            self.state.stopping.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _link(self) -> None:
        conn = connect(self.address, known_brokers=self.known_brokers, timeout=5.0)
        self._conn = conn
        try:
            agent = self.state.agent
            reply = conn.request(Message.make("Connect", Role="broker", User=agent.credentials.user,
                                              Password=agent.password), timeout=10.0)
            if reply.tag != "Connected":
                raise DomainError(reply.get("Message", "refused"), broker=self.address)
            self.state.serve_broker(conn, dialed=True, on_hello=self._learned)
        finally:
            conn.close()

    def _learned(self, broker_id: str) -> None:
        self.linked_id = broker_id
