"""A live dashboard of one zdb database: keys and their sizes, journal, clients, requests, writes, replicas.

Everything but the key sizes comes from a ``ZdbMonitor``'s events: ``record_applied`` for each
write (in order, as it is journaled) and ``server_status`` (the storage manager's heartbeat, about
twice a second: seq, snapshot seq, clients, request counts, replicas and their lag).

The status carries only the *number* of top-level keys, so sizes are worked out from the writes,
as cheaply as each allows:

* ``db[k] = value`` (a write at the root) carries its value: the size is ``len(value)``, no read;
* ``del db[k]`` / ``db.pop(k)`` remove the key, no read;
* a write *on* a top-level container (``db[k].append(...)``, ``db[k][i] = ...``) changes its
  length: the key is marked stale and one ``len`` read is sent for it at the next render (so a
  burst of appends to one list costs one read per render, at most ``max_rate`` a second);
* writes deeper down (``db[k][i].append(...)``) cannot change a top-level size: nothing to do;
* anything else at the root (``update``, ``clear``, ``popitem``), a gap in the record sequence
  (records published before the monitor subscribed) or a key count that disagrees with the
  status makes the dashboard re-read everything: one ``keys`` read and one ``len`` per key.

Reads go through a client of their own (``reader``), on the render thread; while the database
is locked they wait for the unlock instead of queueing behind the lock.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Any, Callable

import ipywidgets as widgets

from workbench.errors import ZdbError
from workbench.events import CLOSED, Event
from workbench_jupyter.dashboard import DEFAULT_MAX_RATE, Dashboard

#: a top-level value that is not a container has no size
SCALAR = None
_ROOT_KEY_WRITES = frozenset({"__setitem__", "__delitem__", "pop", "setdefault"})


def describe_op(op: Any, width: int = 80) -> str:
    """One journaled op as the Python that made it: ``db['l'][4] = ['a', 'b', 'c']``."""
    try:
        path, method, args, kwargs = op
    except (TypeError, ValueError):
        return _shorten(repr(op), width)
    target = "db" + "".join(f"[{key!r}]" for key in path)
    if method == "__setitem__" and len(args) == 2:
        text = f"{target}[{args[0]!r}] = {args[1]!r}"
    elif method == "__delitem__" and len(args) == 1:
        text = f"del {target}[{args[0]!r}]"
    else:
        arguments = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
        text = f"{target}.{method}({', '.join(arguments)})"
    return _shorten(text, width)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _size_of(value: Any) -> int | None:
    return len(value) if isinstance(value, (list, dict)) else SCALAR


class ZdbDashboard(Dashboard):
    """Live view of a zdb database, fed by a ``ZdbMonitor`` (or anything forwarding its listeners).

    ::

        monitor = ZdbMonitor("tcp://127.0.0.1:5559")
        reader = Client("tcp://127.0.0.1:5559", timeout=1.0, retries=0)
        dash = ZdbDashboard(monitor, reader=reader)
        dash            # displays the widget
        dash.flush()    # every write committed so far is shown
        dash.sizes      # {'l': 10, 'x': None}
        dash.close()

    ``reader`` is a ``Client`` used for the few reads key sizes need (see the module docstring);
    without one the dashboard makes its own client of ``source.uri`` (no credentials). A reader
    it made, or one given with ``own_reader=True``, is closed by ``close()``.

    Plain state, for tests and code: ``status`` (the last server status), ``seq``, ``sizes``,
    ``recent`` (newest first: ``(seq, kind, [op text...])``), ``replicas``.
    """

    def __init__(self, source: Any, reader: Any = None, title: str = "zdb", recent: int = 8,
                 max_rate: float = DEFAULT_MAX_RATE, own_reader: bool = False) -> None:
        self.title = title
        self.status: dict[str, Any] = {}
        self.seq = 0                       # highest journal position seen (records or status)
        self.sizes: dict[Any, int | None] = {}
        self.recent: deque[tuple[int, str, list[str]]] = deque(maxlen=recent)
        self.closed_by_source = False
        self.size_error: str | None = None
        self._record_seq: int | None = None  # last record applied, to detect gaps
        self._suspect_gap: int | None = None
        self._stale: set[Any] = set()
        self._reread_all = True             # first render reads the keys
        self._owns_reader = own_reader or reader is None
        if reader is None:
            from workbench.zdb import Client

            reader = Client(getattr(source, "uri"), timeout=1.0, retries=0)
        self.reader = reader
        super().__init__(source, max_rate=max_rate)

    @property
    def replicas(self) -> dict[str, dict[str, int]]:
        return dict(self.status.get("replicas") or {})

    # -- widgets --------------------------------------------------------------------------------
    def build(self) -> widgets.Widget:
        self._progress = threading.Condition(self._lock)
        self.header = widgets.HTML(value=f"<b>{html.escape(self.title)}</b>: waiting for the server")
        self.counters = widgets.HTML(value="")
        self.keys_table = widgets.HTML(value="")
        self.writes_table = widgets.HTML(value="")
        self.replicas_table = widgets.HTML(value="")
        return widgets.VBox([self.header, self.counters, self.keys_table, self.writes_table,
                             self.replicas_table])

    # -- events (dispatcher thread) -------------------------------------------------------------
    def apply(self, event: Event) -> None:
        if event.kind == "record_applied":
            self._apply_record(event.args[0])
        elif event.kind == "server_status":
            self._apply_status(event.args[0])
        elif event.kind == CLOSED:
            self.closed_by_source = True
        self._progress.notify_all()

    def _apply_record(self, record: dict[str, Any]) -> None:
        seq = record.get("seq")
        if not isinstance(seq, int):
            return
        if self._record_seq is not None and seq != self._record_seq + 1 and seq > self._record_seq:
            self._reread_all = True  # records we never saw: sizes may be off
        self._record_seq = max(seq, self._record_seq or 0)
        self.seq = max(self.seq, seq)
        ops = record.get("ops") or []
        self.recent.appendleft((seq, str(record.get("kind")), [describe_op(op) for op in ops]))
        for op in ops:
            self._note_size_change(op)

    def _note_size_change(self, op: Any) -> None:
        try:
            path, method, args, _ = op
        except (TypeError, ValueError):
            self._reread_all = True
            return
        if not path:
            if method not in _ROOT_KEY_WRITES or not args:
                self._reread_all = True  # update/clear/popitem: which keys? read them all
                return
            key = args[0]
            if method == "__setitem__" and len(args) == 2:
                self.sizes[key] = _size_of(args[1])  # the value is in the record: no read
                self._stale.discard(key)
            elif method in ("__delitem__", "pop"):
                self.sizes.pop(key, None)
                self._stale.discard(key)
            else:  # setdefault: set only if missing, so ask
                self._stale.add(key)
        elif len(path) == 1:
            self._stale.add(path[0])  # a write on a top-level container may change its length

    def _apply_status(self, status: dict[str, Any]) -> None:
        self.status = dict(status)
        seq = status.get("seq")
        if not isinstance(seq, int):
            return
        self.seq = max(self.seq, seq)
        if self._record_seq is None:
            self._record_seq = seq
        elif seq > self._record_seq:
            # The status may run ahead of the records of its own batch; if it still does at the
            # next heartbeat, those records were lost (published before we subscribed).
            if self._suspect_gap is not None and self._suspect_gap > self._record_seq:
                self._record_seq = seq
                self._reread_all = True
                self._suspect_gap = None
            else:
                self._suspect_gap = seq
        else:
            self._suspect_gap = None
            if seq == self._record_seq and not self._stale and not self._reread_all \
                    and status.get("keys") != len(self.sizes):
                self._reread_all = True

    # -- reading sizes (render thread) ----------------------------------------------------------
    def _refresh_sizes(self) -> None:
        if not (self._reread_all or self._stale) or self.status.get("locked"):
            return  # nothing to read, or reads would wait behind the lock: after the unlock
        try:
            if self._reread_all:
                keys = self.reader.run((), "keys")
                self.sizes = {key: self._read_size(key) for key in keys}
                self._reread_all = False
                self._stale.clear()
            for key in list(self._stale):
                size = self._read_size(key)
                if size != "missing":
                    self.sizes[key] = size
                else:
                    self.sizes.pop(key, None)
                self._stale.discard(key)
            self.size_error = None
        except ZdbError as exc:  # a timeout or a closed server: keep what is stale for next time
            self.size_error = f"{type(exc).__name__}: {exc.message}"

    def _read_size(self, key: Any) -> Any:
        try:
            return int(self.reader.run((key,), "__len__"))
        except KeyError:
            return "missing"
        except TypeError:
            return SCALAR

    # -- rendering ------------------------------------------------------------------------------
    def render(self) -> None:
        self._refresh_sizes()
        status = self.status
        state = "closed" if self.closed_by_source else ("locked" if status.get("locked") else "open")
        header = (f"<b>{html.escape(self.title)}</b>: seq {self.seq} · snapshot "
                  f"{status.get('snapshot_seq', '?')} · {status.get('clients', '?')} clients · {state}")
        counters = " · ".join(f"{name} {status.get(name, '?')}"
                              for name in ("requests", "reads", "writes", "errors", "undo", "redo"))
        with self.header.hold_sync():
            self.header.value = header
        with self.counters.hold_sync():
            self.counters.value = counters
        with self.keys_table.hold_sync():
            self.keys_table.value = self._keys_html()
        with self.writes_table.hold_sync():
            self.writes_table.value = self._writes_html()
        with self.replicas_table.hold_sync():
            self.replicas_table.value = self._replicas_html()
        self._progress.notify_all()

    def _keys_html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(repr(key))}</td><td>{'—' if size is SCALAR else size}"
            f"{' (stale)' if key in self._stale else ''}</td></tr>"
            for key, size in sorted(self.sizes.items(), key=lambda item: repr(item[0])))
        note = f"<p>sizes: {html.escape(self.size_error)}</p>" if self.size_error else ""
        return ("<table class='zdb-keys'><tr><th>key</th><th>size</th></tr>"
                f"{rows or '<tr><td colspan=2>no keys</td></tr>'}</table>{note}")

    def _writes_html(self) -> str:
        rows = "".join(f"<tr><td>{seq}</td><td>{html.escape(kind)}</td>"
                       f"<td>{'<br>'.join(html.escape(op) for op in ops)}</td></tr>"
                       for seq, kind, ops in self.recent)
        return ("<table class='zdb-writes'><tr><th>seq</th><th>kind</th><th>ops</th></tr>"
                f"{rows or '<tr><td colspan=3>no writes seen yet</td></tr>'}</table>")

    def _replicas_html(self) -> str:
        replicas = self.replicas
        if not replicas:
            return "<p>no replicas</p>"
        rows = "".join(f"<tr><td>{html.escape(str(address))}</td><td>{info.get('seq')}</td>"
                       f"<td>{info.get('lag')}</td></tr>" for address, info in sorted(replicas.items()))
        return f"<table class='zdb-replicas'><tr><th>replica</th><th>seq</th><th>lag</th></tr>{rows}</table>"

    # -- waiting --------------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every write the server had committed when called is shown (False on timeout).

        Asks the server for its position (one status request), waits for the monitor to deliver
        up to it, then for the render.
        """
        deadline = time.monotonic() + timeout
        try:
            target = int(self.reader.status()["seq"])
        except ZdbError:
            target = 0
        with self._lock:
            if not self._progress.wait_for(lambda: self.seq >= target or self.closed,
                                           max(0.0, deadline - time.monotonic())):
                return False
        return super().flush(max(0.0, deadline - time.monotonic()))

    def wait_for(self, predicate: Callable[["ZdbDashboard"], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(dashboard)`` holds after an event or a render (False on timeout).

        E.g. ``dash.wait_for(lambda d: d.status.get("snapshot_seq") == 5)`` after a save, since
        the snapshot position arrives with the next heartbeat.
        """
        with self._lock:
            return self._progress.wait_for(lambda: predicate(self) or self.closed, timeout) \
                and not self.closed

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        super().close()
        if self._owns_reader:
            self.reader.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            # The widget's own text repr is a dump of its HTML at display time; say what it is.
            bundle["text/plain"] = f"ZdbDashboard({self.title})"
        return bundle
