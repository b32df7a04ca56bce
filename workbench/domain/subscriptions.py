"""A broker's subscribed clients: the snapshot each gets first, then every event, fanned out to all.

A client that sends ``<Subscribe>`` gets a ``<State>`` of the whole domain (peers, processes,
live descriptions) and, from then on, every ``<Event>``. Taking the snapshot and joining the
subscribers are one step under the domain's lock, so no event falls between them. A subscriber
that takes no data for ``SEND_TIMEOUT`` seconds is dropped, so it cannot stall the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.domain.protocol import Message, encode_frame
from workbench.domain.transport import Connection, TransportError

if TYPE_CHECKING:
    from workbench.domain.broker import DomainState

#: a client or broker that takes no data for this long is dropped, so it cannot stall the broker
SEND_TIMEOUT = 5.0


class Subscriptions:
    """The connections that hear this broker's events (``subscribers``) and the fan-out to them."""

    def __init__(self, state: "DomainState") -> None:
        self.state = state
        self.subscribers: list[Connection] = []

    def subscribe(self, conn: Connection) -> None:
        """Send ``conn`` the domain's state, then every event after it."""
        with self.state.lock:  # the snapshot and the subscription are one step: no event lost
            conn.send(self.state_message(), timeout=SEND_TIMEOUT)
            self.subscribers.append(conn)

    def unsubscribe(self, conn: Connection) -> None:
        with self.state.lock:
            if conn in self.subscribers:
                self.subscribers.remove(conn)

    def broadcast(self, *events: Message) -> None:
        """Send ``events`` to every subscriber (the caller holds the lock, so events keep their order)."""
        if not events or not self.subscribers:
            return
        frames = b"".join(encode_frame(event) for event in events)  # encoded once for every subscriber
        for conn in list(self.subscribers):
            try:
                conn.send_frames(frames, timeout=SEND_TIMEOUT)
            except (TransportError, OSError):
                if conn in self.subscribers:
                    self.subscribers.remove(conn)

    def state_message(self) -> Message:
        """The snapshot a new subscriber gets: every peer, process and live description."""
        state = self.state
        with state.lock:
            return Message.make("State", *(p.to_message() for p in state.peers.values()),
                                *(p.to_message() for p in state.processes.values()),
                                *(d.to_message() for d in state.descriptions.live()))
