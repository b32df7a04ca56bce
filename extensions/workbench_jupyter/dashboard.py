"""Live dashboards: ipywidgets views fed by a client's listeners, throttled to a few updates a second.

A dashboard is a listener. The client's dispatcher thread calls it with each event; the dashboard
folds the event into plain Python state (``apply``) and marks itself dirty. A render thread of its
own pushes that state into the widgets (``render``) at most ``max_rate`` times a second, so a
burst of thousands of events costs a handful of widget messages and the last state always shows.

Widgets are changed only from the render thread, under ``hold_sync`` so one render is one message
per widget. ipykernel sends comm messages through its IOPub thread, which accepts sends from any
thread; keeping every widget change on one thread avoids interleaving half-applied states.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Any

import ipywidgets as widgets

from workbench.events import Event

DEFAULT_MAX_RATE = 10.0


class Dashboard:
    """Base class: subclass ``build`` (make widgets), ``apply`` (fold an event) and ``render``.

    ::

        class ProcessCount(Dashboard):
            def build(self):
                self.label = widgets.Label()
                self.count = 0
                return self.label
            def apply(self, event):
                self.count += {"process_joined": 1, "process_left": -1}.get(event.kind, 0)
            def render(self):
                self.label.value = f"{self.count} processes"

        dashboard = ProcessCount(domain)   # subscribes to domain's listeners
        dashboard                          # displays the widget
        dashboard.close()                  # unsubscribes, stops, closes widgets
    """

    def __init__(self, *sources: Any, max_rate: float = DEFAULT_MAX_RATE) -> None:
        if max_rate <= 0:
            raise ValueError("max_rate must be positive")
        self.max_rate = max_rate
        self.render_count = 0
        self.event_count = 0
        self._lock = threading.RLock()
        self._dirty = False
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self._sources: list[Any] = []
        self.widget = self.build()
        self._render_thread = threading.Thread(target=self._render_loop, daemon=True,
                                               name=f"dashboard-{type(self).__name__}")
        self._render_thread.start()
        for source in sources:
            self.subscribe(source)

    def __repr__(self) -> str:
        # what a terminal shows (a notebook shows the widget)
        state = ", closed" if self._closed else ""
        return (f"<{type(self).__name__} of {len(self._sources)} source(s): {self.event_count} event(s), "
                f"{self.render_count} render(s){state}>")

    # -- to fill in -----------------------------------------------------------------------------
    def build(self) -> widgets.Widget:
        """Create and return the root widget (called once, from the constructor)."""
        raise NotImplementedError

    def apply(self, event: Event) -> None:
        """Fold one event into the dashboard's state. Runs on the source's dispatcher thread."""

    def render(self) -> None:
        """Push the current state into the widgets. Runs on the render thread, lock held."""

    # -- listener side --------------------------------------------------------------------------
    def subscribe(self, source: Any) -> None:
        """Listen to a client (anything with ``add_listener``); its current state is replayed."""
        source.add_listener(self)
        with self._lock:
            self._sources.append(source)

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            self.event_count += 1
            self.apply(event)
            self._dirty = True
            self._idle.clear()
            self._wake.notify()

    def refresh(self) -> None:
        """Ask for a render although no event came (e.g. after changing a display option)."""
        with self._lock:
            self._dirty = True
            self._idle.clear()
            self._wake.notify()

    # -- render side ----------------------------------------------------------------------------
    def _render_loop(self) -> None:
        interval = 1.0 / self.max_rate
        last = -interval
        while True:
            with self._lock:
                while not self._dirty and not self._closed:
                    self._idle.set()
                    self._wake.wait()
                if self._closed:
                    self._idle.set()
                    return
            # Coalesce: wait out the rest of the interval, events keep folding in meanwhile.
            delay = last + interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._lock:
                if self._closed:
                    self._idle.set()
                    return
                self._dirty = False
                last = time.monotonic()
                try:
                    self.render()
                finally:
                    self.render_count += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event received so far is rendered (False on timeout)."""
        for source in list(self._sources):
            flush_events = getattr(source, "flush_events", None)
            if callable(flush_events):
                flush_events(timeout)
        return self._idle.wait(timeout)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Unsubscribe from every source, stop rendering and close the widgets. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sources, self._sources = self._sources, []
            self._wake.notify()
        for source in sources:
            source.remove_listener(self)
        self._render_thread.join(5)
        self.widget.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class EventFeedDashboard(Dashboard):
    """The generic live view of any source: an event counter and the latest events, newest first."""

    def __init__(self, *sources: Any, limit: int = 15, title: str = "Events",
                 max_rate: float = DEFAULT_MAX_RATE) -> None:
        self.limit = limit
        self.title = title
        self.latest: deque[Event] = deque(maxlen=limit)
        self.counts: dict[str, int] = {}
        super().__init__(*sources, max_rate=max_rate)

    def build(self) -> widgets.Widget:
        self.summary = widgets.HTML(value=f"<b>{html.escape(self.title)}</b>: no events yet")
        self.table = widgets.HTML(value="")
        return widgets.VBox([self.summary, self.table])

    def apply(self, event: Event) -> None:
        self.latest.appendleft(event)
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1

    def render(self) -> None:
        by_kind = ", ".join(f"{html.escape(k)}: {n}" for k, n in sorted(self.counts.items()))
        rows = "".join(
            f"<tr><td>{e.seq}</td><td>{html.escape(e.kind)}</td>"
            f"<td>{html.escape(', '.join(map(str, e.args)))}</td></tr>" for e in self.latest)
        with self.summary.hold_sync():
            self.summary.value = (f"<b>{html.escape(self.title)}</b>: {self.event_count} events"
                                  + (f" ({by_kind})" if by_kind else ""))
        with self.table.hold_sync():
            self.table.value = ("<table class='workbench-events'><tr><th>#</th><th>event</th>"
                                f"<th>details</th></tr>{rows}</table>")
