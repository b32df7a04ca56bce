"""The one listener model of every workbench client: events, a dispatcher thread, and a recorder.

A source (a ``Domain``, a zdb client, a commits mirror...) owns an ``EventDispatcher`` and calls
``emit("process_joined", process)``. Listeners are added with ``add_listener`` and may be:

* objects with optional methods named after events (the seed's style)::

      class Listener:
          def process_joined(self, process):
              print("joined:", process)

  an event whose method the object lacks is simply not delivered to it;
* callables, which receive every ``Event`` object they have no named method for::

      dispatcher.add_listener(lambda event: print(event.kind, event.args))

Events are delivered in emit order on one dispatcher thread per source, so a listener never runs
concurrently with itself and never blocks the emitting thread. A listener that raises is logged
and delivery goes on. ``close()`` delivers what is queued, then ``closed()`` exactly once, then
stops the thread. Tests wait for events with ``EventRecorder.wait_for`` instead of sleeping.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from workbench.errors import EventsError

log = logging.getLogger(__name__)

#: the event every dispatcher delivers last, exactly once, when it closes
CLOSED = "closed"


@dataclass(frozen=True)
class Event:
    """One thing that happened at a source: ``kind`` names the listener method, ``args`` are its arguments."""

    kind: str
    args: tuple[Any, ...] = ()
    source: str = ""
    seq: int = 0
    time: float = field(default_factory=time.time)

    def deliver_to(self, listener: Any) -> bool:
        """Call the listener for this event; False when the listener does not take this kind."""
        method = getattr(listener, self.kind, None)
        if callable(method):
            method(*self.args)
            return True
        if callable(listener):
            # A callable is the catch-all: it gets every event it has no named method for.
            listener(self)
            return True
        return False


_STOP = object()


class EventDispatcher:
    """Delivers a source's events to its listeners, in order, on one background thread.

    ::

        >>> d = EventDispatcher("demo")
        >>> rec = EventRecorder()
        >>> d.add_listener(rec)
        >>> d.emit("peer_joined", "host1").seq        # emit returns the queued Event
        1
        >>> rec.wait_for("peer_joined").args
        ('host1',)
        >>> d.close()
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self._listeners: list[Any] = []
        self._joined_at: dict[int, int] = {}  # id(listener) -> last seq emitted before it was added
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = threading.Event()
        self._delivering: Any = None  # the listener being called right now, for remove_listener

    def __repr__(self) -> str:
        state = ", closed" if self._closed.is_set() else ""
        return f"<EventDispatcher {self.source!r}: {len(self._listeners)} listener(s){state}>"

    # -- listeners ----------------------------------------------------------------------------
    def add_listener(self, listener: Any, initial: Iterable[tuple[str, tuple[Any, ...]]] = ()) -> None:
        """Subscribe ``listener``; ``initial`` events (kind, args) go to it alone, before anything newer.

        Sources use ``initial`` to replay current state (e.g. every running process) to a new
        listener without replaying it to the others.
        """
        if listener is None:
            raise EventsError("listener must not be None", source=self.source)
        with self._lock:
            if self._closing:
                raise EventsError("cannot add a listener to a closed event source", source=self.source)
            if any(existing is listener for existing in self._listeners):
                return
            self._listeners = [*self._listeners, listener]
            # Events already queued for everyone predate this listener: it must not get them,
            # or state replayed through ``initial`` would arrive twice.
            self._joined_at[id(listener)] = self._last_seq
            for kind, args in initial:
                self._put(Event(kind, tuple(args), self.source, self._next_seq()), target=listener)
            self._ensure_thread()

    def remove_listener(self, listener: Any) -> None:
        """Unsubscribe; no event is delivered to ``listener`` once this returns (safe from a listener)."""
        with self._lock:
            self._listeners = [existing for existing in self._listeners if existing is not listener]
            self._joined_at.pop(id(listener), None)

    @property
    def listeners(self) -> list[Any]:
        return list(self._listeners)

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, kind: str, *args: Any) -> Event | None:
        """Queue an event for every listener; returns it, or None once the dispatcher is closed."""
        with self._lock:
            if self._closing:
                log.debug("%s: dropping %s emitted after close", self.source, kind)
                return None
            event = Event(kind, args, self.source, self._next_seq())
            self._put(event, target=None)
            self._ensure_thread()
        return event

    def _next_seq(self) -> int:
        self._last_seq = next(self._seq)
        return self._last_seq

    def _put(self, event: Event, target: Any) -> None:
        self._queue.put((event, target))

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"events-{self.source or id(self)}",
                                            daemon=True)
            self._thread.start()

    # -- delivery -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if isinstance(item, threading.Event):  # a flush marker: everything before it is delivered
                item.set()
                continue
            event, target = item
            if target is not None:
                self._deliver(event, target)
                continue
            for listener in self._listeners:
                self._deliver(event, listener)
        self._closed.set()

    def _deliver(self, event: Event, listener: Any) -> None:
        # Re-check membership right before the call: a listener removed by an earlier listener
        # of this same event must not receive it.
        if not any(existing is listener for existing in self._listeners):
            return
        if event.seq <= self._joined_at.get(id(listener), 0) and event.kind != CLOSED:
            return  # emitted before this listener joined (it got the current state instead)
        try:
            event.deliver_to(listener)
        except Exception:
            log.exception("%s: listener %r raised on %s; delivery goes on", self.source, listener, event.kind)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted before this call has been delivered (False on timeout)."""
        if self._thread is None or self._closed.is_set():
            return True
        if threading.current_thread() is self._thread:
            raise EventsError("flush() called from a listener would wait for itself", source=self.source)
        marker = threading.Event()
        self._queue.put(marker)
        return marker.wait(timeout)

    flush_events = flush  # the name EventSource uses, so either can feed a dashboard

    # -- shutdown -----------------------------------------------------------------------------
    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is queued, then ``closed()`` to every listener once, then stop the thread.

        Idempotent. Called from a listener it does not wait (the thread finishes after returning).
        """
        with self._lock:
            if not self._closing:
                self._closing = True
                self._put(Event(CLOSED, (), self.source, self._next_seq()), target=None)
                self._queue.put(_STOP)
                self._ensure_thread()
        if threading.current_thread() is not self._thread:
            self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closing

    def __enter__(self) -> "EventDispatcher":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventSource:
    """Mixin for clients: gives them ``add_listener`` / ``remove_listener`` over an ``EventDispatcher``."""

    _events: EventDispatcher

    def __repr__(self) -> str:
        # A client that emits events is named by its dispatcher's source: its address, URL or path.
        events = getattr(self, "_events", None)
        return f"<{type(self).__name__} {events.source if events is not None else '(not open)'}>"

    def add_listener(self, listener: Any) -> None:
        """Subscribe a listener object (methods named after events) or a callable taking ``Event``."""
        self._events.add_listener(listener, self.initial_events())

    def remove_listener(self, listener: Any) -> None:
        self._events.remove_listener(listener)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted so far has reached the listeners."""
        return self._events.flush(timeout)

    def initial_events(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Events that bring a new listener up to date (override: e.g. every running process)."""
        return []


class EventRecorder:
    """A listener that records every event and lets tests wait for one without sleeping.

    ::

        rec = EventRecorder()
        domain.add_listener(rec)
        process = rec.wait_for("process_joined", lambda e: e.args[0].port == 50450).args[0]
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._condition = threading.Condition()

    def __repr__(self) -> str:
        return f"<EventRecorder: {len(self.events)} event(s)>"

    def __call__(self, event: Event) -> None:
        with self._condition:
            self.events.append(event)
            self._condition.notify_all()

    def kinds(self) -> list[str]:
        with self._condition:
            return [event.kind for event in self.events]

    def wait_for(self, kind: str, predicate: Callable[[Event], bool] | None = None,
                 timeout: float = 10.0, count: int = 1) -> Event:
        """Block until ``count`` events of ``kind`` (matching ``predicate``) arrived; return the last.

        Raises ``TimeoutError`` listing what did arrive, so a failing test says what happened.
        """
        deadline = time.monotonic() + timeout

        def matching() -> list[Event]:
            return [e for e in self.events if e.kind == kind and (predicate is None or predicate(e))]

        with self._condition:
            while len(found := matching()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [event.kind for event in self.events]
                    raise TimeoutError(f"waited {timeout}s for {count} x {kind!r}; got {got}")
                self._condition.wait(remaining)
            return found[count - 1]


__all__ = ["CLOSED", "Event", "EventDispatcher", "EventRecorder", "EventSource"]
