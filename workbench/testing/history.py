"""Recorded histories of client operations and a checker of what a replicated store promises.

Clients record each operation's invocation and completion with monotonic timestamps::

    history = History()
    op = history.invoke("writer", "write", "x", 1)
    ...                                   # the real call
    history.complete(op, "ok")            # or "fail" (surely not applied) / "timeout" (maybe applied)

    op = history.invoke("reader", "read", "x", replica="te-b")
    history.complete(op, "ok", result=1)

    report = check(history, {"sm": {"x": 1}, "te-b": {"x": 1}}, stale_bound=5.0)
    assert not report.violations, report.summary()

Written values must be unique per key (a counter does) so a value names the write that made it.
PyPI has no Python linearizability checker (porcupine is Go, knossos Clojure; both search orderings
against a model and say nothing of staleness bounds or zombie writes), so this small checker reports, per property, :class:`Violation` objects of these kinds:

- ``lost-write``: a replica's final value for a key is older than an acknowledged write (written by
  a write that completed before that acknowledged write was invoked), or no write of it is known;
- ``failed-write-applied``: a final value or read comes from a write that reported a sure failure;
- ``zombie-write``: a final value comes from a write that timed out at its client, although the same
  client wrote the key later and had that acknowledged (the late write overwrote newer data); or a
  replica, having shown that later write, goes back to the timed-out one;
- ``regressed-read``: a replica shows a value older (in real time) than one it showed before;
- ``stale-read``: a read returned a value superseded by an acknowledged write that completed more than
  ``stale_bound`` seconds before the read was invoked (``writes_behind`` says by how many writes);
- ``future-read`` / ``phantom-read``: a value whose write was invoked after the read ended / never written;
- ``divergence``: the replicas' final states differ.

When writes append to a list (``applied``: each replica's final list per key, in applied order),
the order of application is checked too: an acknowledged write missing is ``lost-write``, two
acknowledged writes applied against their real-time order ``reordered-write``, a value applied twice
``duplicate-write``, and a timed-out write applied after its client's later acknowledged write
``zombie-write``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["Operation", "History", "Violation", "CheckReport", "check", "OUTCOMES"]

#: ok: acknowledged; fail: surely not applied; timeout: the client gave up, it may have applied
OUTCOMES = ("ok", "fail", "timeout")
_ABSENT = object()


@dataclass
class Operation:
    """One invocation and (once known) its completion."""

    id: int
    client: str
    kind: str  # "write" or "read"
    key: str
    value: Any = None
    replica: str | None = None
    invoked: float = 0.0
    completed: float | None = None
    outcome: str | None = None
    result: Any = None

    @property
    def acknowledged(self) -> bool:
        return self.outcome == "ok"


class History:
    """A thread-safe, append-only record of operations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.operations: list[Operation] = []

    def invoke(self, client: str, kind: str, key: str, value: Any = None, replica: str | None = None,
               at: float | None = None) -> Operation:
        """Record that ``client`` starts an operation (``at`` for hand-made histories)."""
        if kind not in ("write", "read"):
            raise ValueError(f"kind must be write or read, not {kind!r}")
        with self._lock:
            op = Operation(next(self._ids), client, kind, key, value, replica,
                           time.monotonic() if at is None else at)
            self.operations.append(op)
        return op

    def complete(self, op: Operation, outcome: str, result: Any = None, at: float | None = None) -> Operation:
        """Record how ``op`` ended."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        op.completed = time.monotonic() if at is None else at
        op.outcome, op.result = outcome, result
        return op

    def dump(self, path: Path) -> None:
        """Write the operations as JSON (a workload in another namespace hands its history over so)."""
        Path(path).write_text(json.dumps([dataclasses.asdict(op) for op in self.operations]))

    @classmethod
    def load(cls, path: Path) -> "History":
        history = cls()
        history.operations = [Operation(**fields) for fields in json.loads(Path(path).read_text())]
        return history

    def counts(self) -> dict[str, int]:
        """Operations by ``kind:outcome`` (e.g. ``write:ok``)."""
        return dict(Counter(f"{op.kind}:{op.outcome}" for op in self.operations))


@dataclass(frozen=True)
class Violation:
    """One broken promise: its kind, the key, a sentence, and the operations involved."""

    kind: str
    key: str
    detail: str
    operations: tuple[int, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CheckReport:
    """The violations found and the size of what was checked."""

    operations: int
    violations: list[Violation]

    def of_kind(self, kind: str) -> list[Violation]:
        return [v for v in self.violations if v.kind == kind]

    def counts(self) -> dict[str, int]:
        return dict(Counter(v.kind for v in self.violations))

    def summary(self) -> str:
        lines = [f"{self.operations} operations, {len(self.violations)} violations {self.counts()}"]
        lines += [f"  {v.kind} {v.key}: {v.detail}" for v in self.violations[:20]]
        return "\n".join(lines)


def _precedes(a: Operation, b: Operation) -> bool:
    """a ended before b began (real-time order); a write that timed out never surely ended."""
    return a.outcome != "timeout" and a.completed is not None and a.completed < b.invoked


def check(history: History, final_states: Mapping[str, Mapping[str, Any]], stale_bound: float | None = None,
          keys: Iterable[str] | None = None,
          applied: Mapping[str, Mapping[str, list[Any]]] | None = None) -> CheckReport:
    """Check ``history`` against each replica's final state (``{replica: {key: value}}``).

    ``applied`` (``{replica: {key: [values in applied order]}}``) adds the order checks.
    """
    ops = [op for op in history.operations if op.outcome is not None]
    writes: dict[str, list[Operation]] = {}
    for op in ops:
        if op.kind == "write":
            writes.setdefault(op.key, []).append(op)
    by_value = {(op.key, _hashable(op.value)): op for ops_ in writes.values() for op in ops_}
    violations: list[Violation] = []
    checked_keys = set(keys) if keys is not None else set(writes)

    for replica, state in final_states.items():
        for key in sorted(checked_keys):
            violations += _check_final(replica, key, state.get(key, _ABSENT), writes.get(key, []), by_value)
    for op in ops:
        if op.kind == "read" and op.acknowledged and (keys is None or op.key in checked_keys):
            violations += _check_read(op, writes.get(op.key, []), by_value, stale_bound)
    violations += _check_regressions([op for op in ops if op.kind == "read" and op.acknowledged
                                      and op.key in checked_keys], by_value)
    violations += _check_convergence(final_states, checked_keys)
    for replica, lists in (applied or {}).items():
        for key, values in lists.items():
            if key in checked_keys:
                violations += _check_applied(replica, key, values, writes.get(key, []))
    return CheckReport(len(ops), violations)


def _hashable(value: Any) -> Any:
    return repr(value)


def _check_final(replica: str, key: str, value: Any, writes: list[Operation],
                 by_value: Mapping[tuple[str, Any], Operation]) -> list[Violation]:
    acknowledged = [w for w in writes if w.acknowledged]
    if value is _ABSENT:
        if acknowledged:
            return [Violation("lost-write", key, f"{replica} has no value; {len(acknowledged)} writes were acknowledged",
                              tuple(w.id for w in acknowledged), {"replica": replica})]
        return []
    source = by_value.get((key, _hashable(value)))
    if source is None:
        return [Violation("lost-write", key, f"{replica} holds {value!r}, which no recorded write wrote",
                          (), {"replica": replica, "value": value})]
    if source.outcome == "fail":
        return [Violation("failed-write-applied", key, f"{replica} holds {value!r} from a write that failed",
                          (source.id,), {"replica": replica})]
    newer = [w for w in acknowledged if _precedes(source, w)]
    if newer:
        return [Violation("lost-write", key, f"{replica} holds {value!r} (write {source.id}), older than "
                          f"{len(newer)} acknowledged writes, the last wrote {newer[-1].value!r}",
                          (source.id, *(w.id for w in newer)), {"replica": replica, "writes_lost": len(newer)})]
    if source.outcome == "timeout":
        later_own = [w for w in acknowledged if w.client == source.client and w.invoked > source.completed]
        if later_own:
            return [Violation("zombie-write", key, f"{replica} holds {value!r} from write {source.id} that timed "
                              f"out at {source.client}, applied after its later acknowledged write {later_own[-1].id}",
                              (source.id, later_own[-1].id), {"replica": replica})]
    return []


def _check_read(read: Operation, writes: list[Operation], by_value: Mapping[tuple[str, Any], Operation],
                stale_bound: float | None) -> list[Violation]:
    source = by_value.get((read.key, _hashable(read.result)))
    if source is None:
        if read.result is None and not any(w.completed is not None and w.completed < read.invoked
                                           and w.acknowledged for w in writes):
            return []  # nothing acknowledged yet: an empty read is fine
        return [Violation("phantom-read", read.key, f"read {read.id} on {read.replica} returned {read.result!r}, "
                          "which no recorded write wrote", (read.id,), {"replica": read.replica})]
    if source.outcome == "fail":
        return [Violation("failed-write-applied", read.key, f"read {read.id} saw {read.result!r} from a failed write",
                          (read.id, source.id), {"replica": read.replica})]
    assert read.completed is not None
    if source.invoked > read.completed:
        return [Violation("future-read", read.key, f"read {read.id} saw write {source.id} invoked after it ended",
                          (read.id, source.id), {"replica": read.replica})]
    superseding = [w for w in writes if w.acknowledged and _precedes(source, w)
                   and w.completed is not None and w.completed < read.invoked]
    if not superseding or stale_bound is None:
        return []
    first = min(superseding, key=lambda w: w.completed or 0.0)
    staleness = read.invoked - (first.completed or 0.0)
    if staleness <= stale_bound:
        return []
    return [Violation("stale-read", read.key, f"read {read.id} on {read.replica} returned {read.result!r}, "
                      f"{staleness:.1f}s and {len(superseding)} acknowledged writes behind",
                      (read.id, first.id), {"replica": read.replica, "staleness": staleness,
                                            "writes_behind": len(superseding)})]


def _check_regressions(reads: list[Operation], by_value: Mapping[tuple[str, Any], Operation]) -> list[Violation]:
    """Per replica and key, a read must not show a write that precedes one an earlier read showed."""
    violations = []
    newest: dict[tuple[str | None, str], tuple[Operation, Operation]] = {}  # -> (read, write it saw)
    for read in sorted(reads, key=lambda op: op.invoked):
        source = by_value.get((read.key, _hashable(read.result)))
        if source is None:
            continue
        slot = (read.replica, read.key)
        seen = newest.get(slot)
        if seen is not None and seen[0].completed is not None and seen[0].completed < read.invoked:
            shown = seen[1]
            if source.outcome == "timeout" and shown.client == source.client and shown.invoked > source.completed:
                violations.append(Violation("zombie-write", read.key, f"{read.replica} went back from write "
                                            f"{shown.id} to {source.id}, which timed out at {source.client} "
                                            "before that later write", (read.id, source.id, shown.id),
                                            {"replica": read.replica}))
                continue
            if _precedes(source, shown):
                violations.append(Violation("regressed-read", read.key, f"{read.replica} went back from "
                                            f"{shown.value!r} to {read.result!r}", (read.id, seen[0].id),
                                            {"replica": read.replica}))
                continue
        if seen is None or _precedes(seen[1], source) or seen[1].outcome == "timeout":
            newest[slot] = (read, source)
    return violations


def _check_applied(replica: str, key: str, values: list[Any], writes: list[Operation]) -> list[Violation]:
    """The order in which a replica applied appended writes, against the history."""
    violations = []
    position: dict[Any, int] = {}
    for index, value in enumerate(values):
        if _hashable(value) in position:
            violations.append(Violation("duplicate-write", key, f"{replica} applied {value!r} twice",
                                        (), {"replica": replica}))
        position.setdefault(_hashable(value), index)
    placed = [(position[_hashable(w.value)], w) for w in writes if _hashable(w.value) in position]
    for w in writes:
        if w.acknowledged and _hashable(w.value) not in position:
            violations.append(Violation("lost-write", key, f"{replica} never applied acknowledged write {w.id} "
                                        f"({w.value!r})", (w.id,), {"replica": replica}))
        elif w.outcome == "fail" and _hashable(w.value) in position:
            violations.append(Violation("failed-write-applied", key, f"{replica} applied failed write {w.id}",
                                        (w.id,), {"replica": replica}))
    for index, w in placed:
        if w.outcome == "timeout":
            overtaken = [o for i, o in placed if i < index and o.acknowledged and o.client == w.client
                         and w.completed is not None and o.invoked > w.completed]
            if overtaken:
                violations.append(Violation("zombie-write", key, f"{replica} applied write {w.id} ({w.value!r}), "
                                            f"which timed out at {w.client}, after {len(overtaken)} of its later "
                                            "acknowledged writes", (w.id, *(o.id for o in overtaken)),
                                            {"replica": replica, "overtaken": len(overtaken)}))
        elif w.acknowledged:
            later = [o for i, o in placed if i < index and o.acknowledged and _precedes(w, o)]
            if later:
                violations.append(Violation("reordered-write", key, f"{replica} applied write {w.id} after "
                                            f"{len(later)} writes invoked after it was acknowledged",
                                            (w.id, *(o.id for o in later)), {"replica": replica}))
    return violations


def _check_convergence(final_states: Mapping[str, Mapping[str, Any]], keys: set[str]) -> list[Violation]:
    violations = []
    for key in sorted(keys):
        values = {replica: state.get(key, _ABSENT) for replica, state in final_states.items()}
        if len({_hashable(v) for v in values.values()}) > 1:
            shown = {r: (None if v is _ABSENT else v) for r, v in values.items()}
            violations.append(Violation("divergence", key, f"replicas differ: {shown}", (), {"values": shown}))
    return violations
