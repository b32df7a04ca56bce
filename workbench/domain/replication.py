"""Replication between brokers: the links to the other brokers, the sync, and the changes streamed both ways.

Brokers link to each other over TLS (``--peer`` dials one; they tell each other about the rest,
and the one with the lower id dials). A link first carries a ``<Sync>`` of what each side owns,
then every change of it (``PeerUpdate``, ``PeerGone``, ``ProcessUpdate``), descriptions
(``DescriptionUpdate``) and events to relay to clients (``Relay``). The acting broker, which runs
the reconciler, is the one with the lowest id among linked brokers.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from workbench.domain.model import DescriptionRecord, PeerRecord, ProcessRecord
from workbench.domain.protocol import Message, ProtocolError
from workbench.domain.transport import Connection, KnownBrokers, connect
from workbench.errors import DomainError

if TYPE_CHECKING:
    from workbench.domain.broker import BrokerConnection, DomainState

log = logging.getLogger(__name__)


class Replication:
    """This broker's links to the other brokers (``brokers``: id -> link) and what goes over them."""

    def __init__(self, state: "DomainState") -> None:
        self.state = state
        self.brokers: dict[str, BrokerConnection] = {}
        self._dialers: dict[str, BrokerDialer] = {}

    def start(self, peer_brokers: list[str]) -> None:
        for address in peer_brokers:
            self.dial(address)

    def stop(self) -> None:
        for dialer in list(self._dialers.values()):
            dialer.stop()
        for link in list(self.brokers.values()):
            link.conn.close()

    def replicate(self, *messages: Message) -> None:
        """Stream ``messages`` (changes of what this broker owns) to every linked broker."""
        for link in list(self.brokers.values()):
            link.send_all(messages)

    def is_acting(self) -> bool:
        """Whether this broker acts for the domain (runs the reconciler): the lowest id among linked brokers."""
        with self.state.lock:
            return self.state.me.id == min([self.state.me.id, *self.brokers])

    def dial(self, address: str) -> None:
        """Keep a link to the broker at ``address`` (reconnecting while this broker runs)."""
        with self.state.lock:
            if address == self.state.me.id or address in self._dialers or self.state.stopping.is_set():
                return
            dialer = self._dialers[address] = BrokerDialer(self.state, address)
        dialer.start()

    def brokers_message(self) -> Message:
        """The brokers we know, for agents (to fail over) and brokers (to link to each other)."""
        with self.state.lock:
            ids = sorted({self.state.me.id, *self.brokers})
        return Message.make("Brokers", *(Message.make("Broker", Address=i) for i in ids))

    def sync_message(self) -> Message:
        state = self.state
        with state.lock:
            own = [p for p in state.peers.values() if state.owner.get(p.id) == state.me.id]
            own_ids = {p.id for p in own}
            return Message.make("Sync", *(p.to_message() for p in own),
                                *(r.to_message() for r in state.processes.values() if r.peer in own_ids),
                                *(d.to_message(secrets=True) for d in state.descriptions.everything()),
                                Broker=state.me.id)

    def register_broker(self, broker_id: str, link: "BrokerConnection") -> bool:
        """Take a new link to ``broker_id``; of two links between the same brokers, the lower id's dial wins."""
        state = self.state
        with state.lock:
            if broker_id == state.me.id:
                return False
            existing = self.brokers.get(broker_id)
            if existing is not None:
                # The same dialer again means the old link is dead but not noticed yet; two
                # dialers means both dialed at once: the lower id's link wins on both ends.
                if existing.dialer != link.dialer and link.dialer != min(state.me.id, broker_id):
                    return False
                existing.conn.close()
            self.brokers[broker_id] = link
            link.send(self.sync_message())  # first: every change sent after it is newer
            announcement = self.brokers_message()
            for other in self.brokers.values():
                other.send(announcement)
            for agent_link in state.links.values():
                agent_link.send(announcement)
        state.reconciler.wake()
        return True

    def unregister_broker(self, broker_id: str, link: "BrokerConnection") -> None:
        state = self.state
        with state.lock:
            if self.brokers.get(broker_id) is not link:
                return
            del self.brokers[broker_id]
            events: list[Message] = []
            for peer_id in [p for p, owner in state.owner.items() if owner == broker_id]:
                events += state.drop_peer(peer_id, f"its broker {broker_id} left the domain")
            state.subscriptions.broadcast(*events)
        log.warning("broker %s: link to broker %s lost", state.me.id, broker_id)
        state.reconciler.wake()

    def apply_sync(self, broker_id: str, sync: Message) -> None:
        """What broker ``broker_id`` owns now: its peers and processes replace what we had from it."""
        state = self.state
        peers = [PeerRecord.from_message(m) for m in sync.find("Peer")]
        records = [ProcessRecord.from_message(m) for m in sync.find("Process")]
        with state.lock:
            events: list[Message] = []
            current = {p.id for p in peers}
            for peer_id in [p for p, owner in state.owner.items() if owner == broker_id and p not in current]:
                events += state.drop_peer(peer_id, f"no longer attached to broker {broker_id}")
            for peer in peers:
                if state.owner.get(peer.id) == state.me.id and peer.id in state.links:
                    continue  # attached to us: our own knowledge is fresher
                events += state.apply_peer(peer, broker_id)
            running = {r.id for r in records}
            for record in [r for r in state.processes.values()
                           if state.owner.get(r.peer) == broker_id and r.id not in running]:
                events += state.end_process(record, f"no longer running according to broker {broker_id}")
            for record in records:
                if state.owner.get(record.peer) == broker_id:
                    events += state.apply_process(record)
            state.subscriptions.broadcast(*events)
        for message in sync.find("Description"):
            state.merge_description(DescriptionRecord.from_message(message))
        state.reconciler.wake()

    def apply_remote(self, broker_id: str, message: Message) -> None:
        """One change streamed by broker ``broker_id``."""
        state = self.state
        if message.tag == "ProcessUpdate":
            for process in message.find("Process"):
                state.update_process(ProcessRecord.from_message(process), origin=broker_id)
        elif message.tag == "PeerUpdate":
            peer = PeerRecord.from_message(message.find("Peer")[0])
            with state.lock:
                state.subscriptions.broadcast(*state.apply_peer(peer, broker_id))
        elif message.tag == "PeerGone":
            peer_id = message.require("Id")
            with state.lock:
                if state.owner.get(peer_id) == broker_id:
                    state.subscriptions.broadcast(*state.drop_peer(peer_id, f"its agent left broker {broker_id}"))
            state.reconciler.wake()
        elif message.tag == "DescriptionUpdate":
            state.merge_description(DescriptionRecord.from_message(message.find("Description")[0]))
        elif message.tag == "Relay":
            with state.lock:
                state.subscriptions.broadcast(*message.children)
        elif message.tag == "Brokers":
            for broker in message.find("Broker"):
                address = broker.require("Address")
                if address != state.me.id and address not in self.brokers and state.me.id < address:
                    self.dial(address)  # the lower id dials, so two brokers do not dial each other
        else:
            raise ProtocolError("unexpected message from a broker", tag=message.tag)


class BrokerDialer:
    """Keeps this broker linked to the broker at ``address``: dials, serves the link, redials after it breaks."""

    def __init__(self, state: "DomainState", address: str) -> None:
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
