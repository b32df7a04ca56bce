"""The zdb document: nested lists and dicts, the operations allowed on them, and exact undo/redo.

No I/O here. A write is a list of ``Op`` applied atomically: either every op applies or, on an
error, the ones already applied are rolled back by their inverses. Each applied write yields its
inverse ops, which become one undo step; undo and redo apply those recorded ops, so history is
plain data that can be journaled and replayed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from workbench.zdb.protocol import (
    MAX_DEPTH,
    BadRequest,
    File,
    Key,
    OperationError,
    check_value,
)

Path = list[Key]

#: methods that only read, per container type; the server, not the client, decides what writes
READ_METHODS: dict[type, frozenset[str]] = {
    dict: frozenset({"get", "keys", "items", "values", "copy", "__len__", "__contains__", "__iter__",
                     "__getitem__"}),
    list: frozenset({"index", "count", "copy", "__len__", "__contains__", "__iter__", "__getitem__"}),
}
WRITE_METHODS: dict[type, frozenset[str]] = {
    dict: frozenset({"__setitem__", "__delitem__", "pop", "popitem", "setdefault", "update", "clear"}),
    list: frozenset({"__setitem__", "__delitem__", "append", "extend", "insert", "pop", "remove",
                     "reverse", "sort", "clear"}),
}
#: keyword arguments a method may take (anything else, e.g. sort(key=...), would need code)
ALLOWED_KWARGS: dict[str, frozenset[str]] = {"sort": frozenset({"reverse"})}


class Op(NamedTuple):
    """One method call on the container at ``path`` (``method=None`` reads the value itself).

    A named tuple rather than a frozen dataclass: every write builds at least two (the request's
    and its inverse), and a tuple is built several times faster. Ops are never mutated.
    """

    path: tuple[Key, ...]
    method: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012  (shared empty default: ops never mutate kwargs)

    def to_json(self) -> list[Any]:
        return [list(self.path), self.method, list(self.args), self.kwargs]

    @classmethod
    def from_json(cls, data: Any) -> "Op":
        try:
            path, method, args, kwargs = data
        except (TypeError, ValueError):
            raise BadRequest("an op is [path, method, args, kwargs]", got=repr(data)[:80]) from None
        if not isinstance(path, list) or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise BadRequest("an op is [path, method, args, kwargs] with list, list, dict")
        if method is not None and not isinstance(method, str):
            raise BadRequest("method must be a string or null")
        return cls(tuple(path), method, tuple(args), dict(kwargs))


@dataclass
class Step:
    """One undo (or redo) step: the ops that revert one request.

    Only inverse ops are kept: they hold values detached from the document at the time, which
    nothing changes afterwards, while a request's own arguments may be live objects of the
    document that later writes mutate.
    """

    inverse: list[Op]


class Change(NamedTuple):
    """A change applied to the document whose history is not recorded yet (see ``Document.commit``)."""

    kind: str  # "write", "undo" or "redo"
    ops: list[Op]  # what was applied: the request's ops, or the undo/redo step's
    inverse: list[Op]  # what reverts it


class Document:
    """The whole database: a root dict plus bounded undo/redo history.

    ::

        >>> doc = Document()
        >>> doc.write([Op((), "__setitem__", ("l", [1, 2]))])
        [None]
        >>> doc.read(Op(("l",), "__len__"))
        2
        >>> _ = doc.undo(); doc.root
        {}
    """

    def __init__(self, root: dict[str, Any] | None = None, history_limit: int = 1000) -> None:
        self.root: dict[str, Any] = root if root is not None else {}
        self.history_limit = history_limit
        self.undo_stack: deque[Step] = deque(maxlen=history_limit or None)
        self.redo_stack: deque[Step] = deque(maxlen=history_limit or None)

    # -- navigation -----------------------------------------------------------------------------
    def resolve(self, path: tuple[Key, ...] | list[Key], for_write: bool = False) -> Any:
        node: Any = self.root
        for depth, key in enumerate(path):
            # The common steps first, a present string key into a dict or an index inside a list,
            # without building the error path; anything else goes through _getitem's checks.
            kind = type(node)
            if kind is dict and type(key) is str:
                child = node.get(key, _MISSING)
                if child is not _MISSING:
                    node = child
                    continue
            elif kind is list and type(key) is int and -len(node) <= key < len(node):
                node = node[key]
                continue
            if for_write and isinstance(key, slice):
                raise OperationError("TypeError", "cannot write through a slice", path=list(path[:depth + 1]))
            node = _getitem(node, key, path[:depth + 1])
        return node

    def is_write(self, op: Op) -> bool:
        """True when ``op`` would change the document (decided here, never by the client)."""
        if op.method is None:
            return False
        try:
            target = self.resolve(op.path)
        except OperationError:
            # A bad path: let the read or write path report the error; classify by name only.
            return any(op.method in methods for methods in WRITE_METHODS.values())
        return op.method in WRITE_METHODS.get(type(target), frozenset())

    # -- reads ----------------------------------------------------------------------------------
    def try_read(self, op: Op) -> tuple[bool, Any]:
        """(True, result) when ``op`` is a read; (False, node it would change) when it is a write.

        One path walk: the node of a write can go straight to ``write_one``.
        """
        node = self.resolve(op.path)
        if op.method is None:
            return True, node
        if op.method in READ_METHODS.get(type(node), frozenset()):
            return True, self._read_on(node, op)
        return False, node

    def read(self, op: Op) -> Any:
        node = self.resolve(op.path)
        if op.method is None:
            return node
        allowed = READ_METHODS.get(type(node), frozenset())
        if op.method not in allowed:
            raise _not_allowed(node, op)
        return self._read_on(node, op)

    def _read_on(self, node: Any, op: Op) -> Any:
        _check_kwargs(op)
        try:
            if op.method == "__iter__":
                return list(node)
            if op.method == "__getitem__":
                (key,) = op.args
                return _getitem(node, key, (*op.path, key))
            result = getattr(node, op.method)(*op.args, **op.kwargs)
        except OperationError:
            raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise OperationError.from_exception(exc, path=list(op.path), method=op.method) from None
        if op.method in ("keys", "values"):
            return list(result)
        if op.method == "items":
            return [list(pair) for pair in result]
        return result

    # -- writes ---------------------------------------------------------------------------------
    def write(self, ops: list[Op], record: bool = True) -> list[Any]:
        """Apply ``ops`` atomically and (if ``record``) push one undo step; return each op's result."""
        results, change = self.stage_write(ops)
        if record and ops:
            self.commit(change)
        return results

    def write_one(self, op: Op, node: Any) -> Any:
        """``write([op])[0]`` for the node ``try_read(op)`` returned, without walking the path again."""
        result, change = self.stage_write_one(op, node)
        self.commit(change)
        return result

    # A staged change is applied to the document but not to its history: the server journals it,
    # then commits it (history recorded) or reverts it (the document as before, history untouched).
    def stage_write(self, ops: list[Op]) -> tuple[list[Any], "Change"]:
        results, inverse = self.apply(ops)
        return results, Change("write", ops, inverse)

    def stage_write_one(self, op: Op, node: Any) -> tuple[Any, "Change"]:
        for depth, key in enumerate(op.path):
            if isinstance(key, slice):
                raise OperationError("TypeError", "cannot write through a slice", path=list(op.path[:depth + 1]))
        result, inverse = self._apply_on(node, op)
        return result, Change("write", [op], inverse)

    def stage_move(self, name: str) -> "Change":
        """Apply the top undo (``name="undo"``) or redo step, leaving both stacks as they are."""
        source = self.undo_stack if name == "undo" else self.redo_stack
        if not source:
            raise OperationError("UndoError", f"nothing to {name}")
        step = source[-1]
        # Applying a step's inverse yields the ops that revert it again: the step for the other stack.
        _, reverted = self.apply(step.inverse)
        return Change(name, step.inverse, reverted)

    def commit(self, change: "Change") -> None:
        """Record a staged change in the history."""
        if change.kind == "write":
            self.undo_stack.append(Step(change.inverse))
            self.redo_stack.clear()
        else:
            source, target = ((self.undo_stack, self.redo_stack) if change.kind == "undo"
                              else (self.redo_stack, self.undo_stack))
            source.pop()
            target.append(Step(change.inverse))

    def revert(self, change: "Change") -> None:
        """Take a staged change back (it was never committed: the history is untouched)."""
        self._apply_unchecked(change.inverse)

    def apply(self, ops: list[Op]) -> tuple[list[Any], list[Op]]:
        """Apply ops in order; on an error undo the applied ones and re-raise. Returns results, inverse."""
        results: list[Any] = []
        inverse: list[Op] = []
        try:
            for op in ops:
                result, undo_ops = self._apply_one(op)
                results.append(result)
                inverse = undo_ops + inverse  # revert in reverse order
        except BaseException:
            self._apply_unchecked(inverse)
            raise
        return results, inverse

    def _apply_unchecked(self, ops: list[Op]) -> None:
        for op in ops:
            self._apply_one(op)

    def undo(self) -> list[Op]:
        """Revert the last write; returns the ops applied (what replicas must apply)."""
        return self._move("undo")

    def redo(self) -> list[Op]:
        """Re-apply the last undone write; returns the ops applied."""
        return self._move("redo")

    def _move(self, name: str) -> list[Op]:
        change = self.stage_move(name)
        self.commit(change)
        return change.ops

    def _apply_one(self, op: Op) -> tuple[Any, list[Op]]:
        if op.method is None:
            raise BadRequest("a write needs a method")
        return self._apply_on(self.resolve(op.path, for_write=True), op)

    def _apply_on(self, node: Any, op: Op) -> tuple[Any, list[Op]]:
        if op.method is None:
            raise BadRequest("a write needs a method")
        allowed = WRITE_METHODS.get(type(node), frozenset())
        if op.method not in allowed:
            raise _not_allowed(node, op)
        _check_kwargs(op)
        # Keys (which may be slices) are checked by the handlers; everything else may be stored.
        values = op.args[1:] if op.method in ("__setitem__", "__delitem__") else op.args
        # the value of `node[key] = value` is met at path + [key]
        where = (*op.path, op.args[0]) if op.method == "__setitem__" and op.args and isinstance(op.args[0], str) \
            else op.path
        for value in (*values, *op.kwargs.values()):
            check_value(value, len(op.path) + 1, where)
        handler = _DICT_WRITES.get(op.method) if isinstance(node, dict) else _LIST_WRITES.get(op.method)
        assert handler is not None, op.method
        try:
            return handler(node, op)
        except OperationError:
            raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise OperationError.from_exception(exc, path=list(op.path), method=op.method) from None

    # -- persistence helpers --------------------------------------------------------------------
    def history_to_json(self) -> dict[str, Any]:
        def steps(stack: deque[Step]) -> list[Any]:
            return [[o.to_json() for o in s.inverse] for s in stack]

        return {"undo": steps(self.undo_stack), "redo": steps(self.redo_stack)}

    def history_from_json(self, data: dict[str, Any]) -> None:
        def steps(items: list[Any]) -> list[Step]:
            return [Step([Op.from_json(o) for o in ops]) for ops in items]

        self.undo_stack.clear()
        self.undo_stack.extend(steps(data.get("undo", [])))
        self.redo_stack.clear()
        self.redo_stack.extend(steps(data.get("redo", [])))


# -- helpers -------------------------------------------------------------------------------------
def _getitem(node: Any, key: Key, path: tuple[Key, ...] | list[Key]) -> Any:
    if isinstance(node, dict):
        if not isinstance(key, str):
            raise OperationError("TypeError", f"dict keys are strings, got {type(key).__name__}", path=list(path))
        try:
            return node[key]
        except KeyError:
            raise OperationError("KeyError", repr(key), path=list(path)) from None
    if isinstance(node, list):
        if isinstance(key, bool) or not isinstance(key, (int, slice)):
            raise OperationError("TypeError", f"list indices are integers or slices, got {type(key).__name__}",
                                 path=list(path))
        try:
            return node[key]
        except IndexError:
            raise OperationError("IndexError", "list index out of range", path=list(path)) from None
        except ValueError as exc:  # slice step 0
            raise OperationError("ValueError", str(exc), path=list(path)) from None
    raise OperationError("TypeError", f"{type(node).__name__} is not a container", path=list(path))


def _not_allowed(node: Any, op: Op) -> OperationError:
    kind = type(node).__name__
    if type(node) not in READ_METHODS:
        return OperationError("TypeError", f"{kind} is not a container: cannot call {op.method}",
                              path=list(op.path), method=op.method)
    return OperationError("AttributeError", f"{kind} has no operation {op.method!r}",
                          path=list(op.path), method=op.method)


def _check_kwargs(op: Op) -> None:
    if not op.kwargs or op.method == "update":  # dict.update(**pairs): any keyword is a key
        return
    extra = set(op.kwargs) - ALLOWED_KWARGS.get(op.method or "", frozenset())
    if extra:
        raise OperationError("TypeError", f"{op.method}() takes no keyword arguments {sorted(extra)}",
                             path=list(op.path), method=op.method)


def _norm_index(length: int, index: int) -> int:
    """The position an ``insert``/``pop`` index really refers to (negative and out-of-range clamp)."""
    if index < 0:
        index += length
    return max(0, min(index, length))


def _args(op: Op, count: int) -> tuple[Any, ...]:
    if len(op.args) != count:
        raise OperationError("TypeError", f"{op.method}() takes {count} argument(s), got {len(op.args)}",
                             path=list(op.path), method=op.method)
    return op.args


Handler = Callable[[Any, Op], tuple[Any, list[Op]]]
_MISSING = object()


def _dict_setitem(node: dict, op: Op) -> tuple[Any, list[Op]]:
    key, value = _args(op, 2)
    if not isinstance(key, str):
        raise OperationError("TypeError", "dict keys are strings", path=list(op.path))
    old = node.get(key, _MISSING)
    node[key] = value
    undo = Op(op.path, "__delitem__", (key,)) if old is _MISSING else Op(op.path, "__setitem__", (key, old))
    return None, [undo]


def _dict_delitem(node: dict, op: Op) -> tuple[Any, list[Op]]:
    (key,) = _args(op, 1)
    old = _getitem(node, key, (*op.path, key))
    del node[key]
    return None, [Op(op.path, "__setitem__", (key, old))]


def _dict_pop(node: dict, op: Op) -> tuple[Any, list[Op]]:
    if not 1 <= len(op.args) <= 2:
        raise OperationError("TypeError", "pop expected 1 or 2 arguments", path=list(op.path))
    key = op.args[0]
    if key not in node:
        if len(op.args) == 2:
            return op.args[1], []
        raise OperationError("KeyError", repr(key), path=list(op.path))
    old = node.pop(key)
    return old, [Op(op.path, "__setitem__", (key, old))]


def _dict_popitem(node: dict, op: Op) -> tuple[Any, list[Op]]:
    _args(op, 0)
    if not node:
        raise OperationError("KeyError", "popitem(): dictionary is empty", path=list(op.path))
    key, value = node.popitem()
    return [key, value], [Op(op.path, "__setitem__", (key, value))]


def _dict_setdefault(node: dict, op: Op) -> tuple[Any, list[Op]]:
    if not 1 <= len(op.args) <= 2:
        raise OperationError("TypeError", "setdefault expected 1 or 2 arguments", path=list(op.path))
    key = op.args[0]
    if not isinstance(key, str):
        raise OperationError("TypeError", "dict keys are strings", path=list(op.path))
    if key in node:
        return node[key], []
    node[key] = op.args[1] if len(op.args) == 2 else None
    return node[key], [Op(op.path, "__delitem__", (key,))]


def _dict_update(node: dict, op: Op) -> tuple[Any, list[Op]]:
    if len(op.args) > 1:
        raise OperationError("TypeError", "update expected at most 1 argument", path=list(op.path))
    changes: dict[str, Any] = {}
    if op.args:
        source = op.args[0]
        pairs = source.items() if isinstance(source, dict) else source
        try:
            for key, value in pairs:
                changes[key] = value
        except (TypeError, ValueError):
            raise OperationError("TypeError", "update needs a dict or a list of [key, value] pairs",
                                 path=list(op.path)) from None
    changes.update(op.kwargs)
    if any(not isinstance(k, str) for k in changes):
        raise OperationError("TypeError", "dict keys are strings", path=list(op.path))
    undo = []
    for key, value in changes.items():
        old = node.get(key, _MISSING)
        node[key] = value
        undo.insert(0, Op(op.path, "__delitem__", (key,)) if old is _MISSING
                    else Op(op.path, "__setitem__", (key, old)))
    return None, undo


def _dict_clear(node: dict, op: Op) -> tuple[Any, list[Op]]:
    _args(op, 0)
    old = dict(node)
    node.clear()
    return None, [Op(op.path, "update", (old,))] if old else []


def _list_setitem(node: list, op: Op) -> tuple[Any, list[Op]]:
    key, value = _args(op, 2)
    if isinstance(key, slice):
        if not isinstance(value, list):
            raise OperationError("TypeError", "can only assign a list to a slice", path=list(op.path))
        start, stop, step = key.indices(len(node))
        old = node[key]
        node[key] = value
        if step == 1:
            # A simple slice may change the length: the new items occupy [start, start+len(value)).
            return None, [Op(op.path, "__setitem__", (slice(start, start + len(value)), old))]
        return None, [Op(op.path, "__setitem__", (key, old))]
    if isinstance(key, bool) or not isinstance(key, int):
        raise OperationError("TypeError", "list indices are integers or slices", path=list(op.path))
    old = _getitem(node, key, (*op.path, key))
    index = key + len(node) if key < 0 else key
    node[index] = value
    return None, [Op(op.path, "__setitem__", (index, old))]


def _list_delitem(node: list, op: Op) -> tuple[Any, list[Op]]:
    (key,) = _args(op, 1)
    if isinstance(key, slice):
        start, stop, step = key.indices(len(node))
        old = node[key]
        positions = list(range(start, stop, step))
        del node[key]
        if step == 1 or not old:
            return None, [Op(op.path, "__setitem__", (slice(start, start), old))]
        # An extended slice: put each item back at its old position, lowest first.
        if step < 0:
            positions, old = positions[::-1], old[::-1]
        return None, [Op(op.path, "insert", (pos, item)) for pos, item in zip(positions, old)]
    old = _getitem(node, key, (*op.path, key))
    index = key + len(node) if key < 0 else key
    del node[index]
    return None, [Op(op.path, "insert", (index, old))]


def _list_append(node: list, op: Op) -> tuple[Any, list[Op]]:
    (value,) = _args(op, 1)
    node.append(value)
    return None, [Op(op.path, "pop", ())]


def _list_extend(node: list, op: Op) -> tuple[Any, list[Op]]:
    (values,) = _args(op, 1)
    if not isinstance(values, list):
        raise OperationError("TypeError", "extend needs a list", path=list(op.path))
    before = len(node)
    node.extend(values)
    return None, [Op(op.path, "__delitem__", (slice(before, None),))] if values else []


def _list_insert(node: list, op: Op) -> tuple[Any, list[Op]]:
    index, value = _args(op, 2)
    if isinstance(index, bool) or not isinstance(index, int):
        raise OperationError("TypeError", "insert index must be an integer", path=list(op.path))
    position = _norm_index(len(node), index)
    node.insert(position, value)
    return None, [Op(op.path, "pop", (position,))]


def _list_pop(node: list, op: Op) -> tuple[Any, list[Op]]:
    if len(op.args) > 1:
        raise OperationError("TypeError", "pop expected at most 1 argument", path=list(op.path))
    index = op.args[0] if op.args else -1
    if isinstance(index, bool) or not isinstance(index, int):
        raise OperationError("TypeError", "pop index must be an integer", path=list(op.path))
    if not node:
        raise OperationError("IndexError", "pop from empty list", path=list(op.path))
    position = index + len(node) if index < 0 else index
    if not 0 <= position < len(node):
        raise OperationError("IndexError", "pop index out of range", path=list(op.path))
    value = node.pop(position)
    return value, [Op(op.path, "insert", (position, value))]


def _list_remove(node: list, op: Op) -> tuple[Any, list[Op]]:
    (value,) = _args(op, 1)
    try:
        position = node.index(value)
    except ValueError:
        raise OperationError("ValueError", "list.remove(x): x not in list", path=list(op.path)) from None
    removed = node.pop(position)
    return None, [Op(op.path, "insert", (position, removed))]


def _list_reverse(node: list, op: Op) -> tuple[Any, list[Op]]:
    _args(op, 0)
    node.reverse()
    return None, [Op(op.path, "reverse", ())]


def _list_sort(node: list, op: Op) -> tuple[Any, list[Op]]:
    _args(op, 0)
    old = list(node)  # sorting loses the old order: keep it (shallow: same child objects)
    try:
        node.sort(**op.kwargs)
    except TypeError as exc:
        node[:] = old
        raise OperationError("TypeError", str(exc), path=list(op.path), method="sort") from None
    return None, [Op(op.path, "__setitem__", (slice(0, len(node)), old))]


def _list_clear(node: list, op: Op) -> tuple[Any, list[Op]]:
    _args(op, 0)
    old = list(node)
    node.clear()
    return None, [Op(op.path, "extend", (old,))] if old else []


_DICT_WRITES: dict[str, Handler] = {
    "__setitem__": _dict_setitem, "__delitem__": _dict_delitem, "pop": _dict_pop,
    "popitem": _dict_popitem, "setdefault": _dict_setdefault, "update": _dict_update,
    "clear": _dict_clear,
}
_LIST_WRITES: dict[str, Handler] = {
    "__setitem__": _list_setitem, "__delitem__": _list_delitem, "append": _list_append,
    "extend": _list_extend, "insert": _list_insert, "pop": _list_pop, "remove": _list_remove,
    "reverse": _list_reverse, "sort": _list_sort, "clear": _list_clear,
}

__all__ = ["Change", "Document", "Op", "Step", "READ_METHODS", "WRITE_METHODS", "MAX_DEPTH", "File"]
