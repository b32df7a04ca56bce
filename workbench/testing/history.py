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
  client wrote the key later and had that acknowledged (the late write overwrote newer data);
- ``stale-read``: a read returned a value superseded by an acknowledged write that completed more than
  ``stale_bound`` seconds before the read was invoked (``writes_behind`` says by how many writes);
- ``future-read`` / ``phantom-read``: a value whose write was invoked after the read ended / never written;
- ``divergence``: the replicas' final states differ.
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
          keys: Iterable[str] | None = None) -> CheckReport:
    """Check ``history`` against each replica's final state (``{replica: {key: value}}``)."""
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
    violations += _check_convergence(final_states, checked_keys)
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


def _check_convergence(final_states: Mapping[str, Mapping[str, Any]], keys: set[str]) -> list[Violation]:
    violations = []
    for key in sorted(keys):
        values = {replica: state.get(key, _ABSENT) for replica, state in final_states.items()}
        if len({_hashable(v) for v in values.values()}) > 1:
            shown = {r: (None if v is _ABSENT else v) for r, v in values.items()}
            violations.append(Violation("divergence", key, f"replicas differ: {shown}", (), {"values": shown}))
    return violations
