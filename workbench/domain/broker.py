"""A broker's state of the domain and the connections it serves: clients, agents, other brokers.

Each broker *owns* the peers attached to it (itself and the agents that joined through it) and
their processes; it learns everything else from the other brokers (``replication``), so a client
connected to any broker sees the whole domain and hears every event (``subscriptions``). When a
link is silent for ``HEARTBEAT_TIMEOUT`` seconds (or closes), the other end's peers and
processes leave; agents of a dead broker fail over to another broker they know and rejoin.
``DomainState`` holds the peers, processes and descriptions and composes those parts with the
request handlers (``handlers``); this module keeps the connections.

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
from workbench.domain.handlers import RequestHandlers
from workbench.domain.model import FAILED, FINAL_STATES, DescriptionRecord, PeerRecord, ProcessRecord
from workbench.domain.protocol import Message, ProtocolError
from workbench.domain.reconciler import Reconciler
from workbench.domain.replication import Replication
from workbench.domain.requests import error_reply
from workbench.domain.subscriptions import SEND_TIMEOUT, Subscriptions
from workbench.domain.transport import Connection, TransportError
from workbench.errors import DomainError

if TYPE_CHECKING:
    from workbench.domain.agent import Agent

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TIMEOUT = 4.0
COMMAND_TIMEOUT = 30.0


class DomainState:
    """A broker's view of the domain: peers, processes and descriptions, and the parts that serve it.

    ``replication`` links it to the other brokers, ``subscriptions`` fans events out to clients,
    ``handlers`` answers client requests; ``links`` are the agents attached to this broker.
    """

    def __init__(self, me: PeerRecord, agent: "Agent") -> None:
        self.agent = agent
        self.me = me
        self.peers: dict[str, PeerRecord] = {me.id: me}
        self.owner: dict[str, str] = {me.id: me.id}  # peer id -> id of the broker it is attached to
        self.processes: dict[str, ProcessRecord] = {}
        self.links: dict[str, AgentConnection] = {}
        self.descriptions = DescriptionStore(agent.state_dir / "descriptions.json", me.id)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.subscriptions = Subscriptions(self)
        self.replication = Replication(self)
        self.handlers = RequestHandlers(self)
        self.reconciler = Reconciler(self)

    @property
    def brokers(self) -> dict[str, "BrokerConnection"]:
        """The linked brokers, by id."""
        return self.replication.brokers

    @property
    def subscribers(self) -> list[Connection]:
        """The client connections that hear events."""
        return self.subscriptions.subscribers

    def start(self, peer_brokers: list[str]) -> None:
        self.reconciler.start()
        self.replication.start(peer_brokers)

    def stop(self) -> None:
        self.stopping.set()
        self.reconciler.stop()
        self.replication.stop()

    # -- processes ------------------------------------------------------------------------------
    def update_process(self, record: ProcessRecord, origin: str | None = None) -> None:
        """A process changed: on a peer of ours (``origin`` None) or as broker ``origin`` tells us."""
        with self.lock:
            if origin is not None and self.owner.get(record.peer) != origin:
                return  # stale: that peer is attached to another broker now
            events = self.apply_process(record)
            if origin is None:
                self.replication.replicate(Message.make("ProcessUpdate", record.to_message()))
            self.subscriptions.broadcast(*events)
        self.reconciler.wake()

    def apply_process(self, record: ProcessRecord) -> list[Message]:
        """Take ``record`` into the view; the events that makes for clients (the caller holds the lock)."""
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

    def end_process(self, record: ProcessRecord, reason: str) -> list[Message]:
        """``record`` ended: it failed for ``reason`` (its agent or broker is gone, or it stopped running)."""
        ended = record.copy()
        ended.status, ended.reason = FAILED, reason
        return self.apply_process(ended)

    # -- peers ----------------------------------------------------------------------------------
    def apply_peer(self, peer: PeerRecord, owner: str) -> list[Message]:
        """``peer``, attached to broker ``owner``, into the view; a ``peer_joined`` event if it is new."""
        self.owner[peer.id] = owner
        new = peer.id not in self.peers
        self.peers[peer.id] = peer
        return [Message.make("Event", peer.to_message(), Type="peer_joined")] if new else []

    def drop_peer(self, peer_id: str, reason: str) -> list[Message]:
        """A peer and its processes leave (its agent or its broker is gone)."""
        events: list[Message] = []
        for record in [p for p in self.processes.values() if p.peer == peer_id]:
            events += self.end_process(record, reason)
        self.owner.pop(peer_id, None)
        peer = self.peers.pop(peer_id, None)
        if peer is not None:
            events.append(Message.make("Event", peer.to_message(), Type="peer_left"))
        return events

    def join_agent(self, peer: PeerRecord, link: "AgentConnection", running: list[ProcessRecord]) -> None:
        """An agent (re)joined through us, running ``running``: whatever else we knew of it has ended."""
        with self.lock:
            self.links[peer.id] = link
            events = self.apply_peer(peer, self.me.id)
            self.replication.replicate(Message.make("PeerUpdate", peer.to_message()))
            still = {record.id for record in running}
            for record in [p for p in self.processes.values() if p.peer == peer.id and p.id not in still]:
                ended = record.copy()
                ended.status, ended.reason = FAILED, "gone when its agent rejoined"
                events += self.apply_process(ended)
                self.replication.replicate(Message.make("ProcessUpdate", ended.to_message()))
            self.subscriptions.broadcast(*events)
            for record in running:
                self.update_process(record)
            link.send(self.replication.brokers_message())

    def leave_agent(self, peer_id: str, link: "AgentConnection") -> None:
        with self.lock:
            if self.links.get(peer_id) is not link:
                return  # a newer connection of the same agent took over
            del self.links[peer_id]
            if self.owner.get(peer_id) != self.me.id:
                return  # the agent moved to another broker meanwhile
            events = self.drop_peer(peer_id, "its agent left the domain")
            self.replication.replicate(Message.make("PeerGone", Id=peer_id))
            self.subscriptions.broadcast(*events)
        self.reconciler.wake()

    # -- descriptions ---------------------------------------------------------------------------
    def description_written(self, record: DescriptionRecord) -> None:
        """A description changed here: tell clients and the other brokers, wake the reconciler."""
        with self.lock:
            self.subscriptions.broadcast(Message.make("Event", record.to_message(), Type="description_changed"))
            self.replication.replicate(Message.make("DescriptionUpdate", record.to_message(secrets=True)))
        self.reconciler.wake()

    def merge_description(self, record: DescriptionRecord) -> None:
        if self.descriptions.merge(record):
            with self.lock:
                self.subscriptions.broadcast(Message.make("Event", record.to_message(), Type="description_changed"))
            self.reconciler.wake()

    def reconciler_action(self, name: str, action: str, detail: str) -> None:
        """Tell every client of every broker what the reconciler did for description ``name``."""
        event = Message.make("Event", Type="reconciler_action", Description=name, Action=action, Detail=detail)
        log.info("reconciler: %s %s: %s", name, action, detail)
        with self.lock:
            self.subscriptions.broadcast(event)
            self.replication.replicate(Message.make("Relay", event))

    # -- clients --------------------------------------------------------------------------------
    def serve_client(self, conn: Connection) -> None:
        try:
            while True:
                message = conn.receive()
                if message is None:
                    return
                if message.tag == "Subscribe":
                    self.subscriptions.subscribe(conn)
                elif message.tag == "Request":
                    request_id = message.require("Id")
                    response = self.handlers.answer(message)
                    response.attrs["Id"] = request_id
                    conn.send(response)
                else:
                    raise ProtocolError("unexpected message from a client", tag=message.tag)
        finally:
            self.subscriptions.unsubscribe(conn)

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
        if not self.replication.register_broker(broker_id, link):  # which sends our sync first
            conn.close()
            return
        log.info("broker %s linked with broker %s", self.me.id, broker_id)
        try:
            sync = conn.receive(timeout=10.0)
            if sync is None or sync.tag != "Sync":
                raise ProtocolError("a broker link sends <Sync> after its hello")
            self.replication.apply_sync(broker_id, sync)
            link.serve(self)
        finally:
            self.replication.unregister_broker(broker_id, link)


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
                    state.replication.apply_remote(self.peer_id, message)
        finally:
            self.conn.close()
            self.fail_waiting()

    def _forwarded(self, state: DomainState, command: Message) -> None:
        """A command another broker forwards for a peer attached to us."""
        try:
            response = state.handlers.send_to_peer(command.require("Target"), command, forwarded=True)
        except DomainError as exc:
            response = error_reply(exc)
        response.attrs["Id"] = command.require("Id")
        self.send(response)
