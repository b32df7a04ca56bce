"""zdb wire and disk format: JSON messages, value rules, File references and errors (no I/O).

Every request is one JSON object::

    {"id": 7, "client": "c-1f3a", "kind": "op", "ops": [[path, method, args, kwargs], ...],
     "after": 41}

``kind`` is ``op`` (reads or writes; the server decides which; several ops are one atomic
write), ``batch`` (a pipeline: ops run one after another, each with its own result or error,
answered as ``"result": [{"result": ...} or {"error": {...}}, ...]``; its writes are one
journal append and one fsync), ``undo``, ``redo``, ``save``,
``lock``, ``unlock``, ``renew``, ``status``, ``ping``, ``blob_put``, ``blob_get``, ``sync`` or
``login``. ``after`` asks a replica to answer only once it has applied write ``after``
(read-your-writes). ``client`` only names the client in statistics (at most 128 characters); it
grants nothing. The login is not a message: a server with one checks it in each connection's
handshake, and ``login`` merely confirms it. The reply to ``lock`` carries the lock's secret
``token``; the holder sends it as ``lock_token`` with every request while it holds the lock.
Replies are ``{"id": 7, "ok": true, "result": ..., "seq": 42}`` or
``{"id": 7, "ok": false, "error": {"kind": "KeyError", "message": "'x'", "fields": {...}}}``
(the envelope of ``workbench.errors``; the kinds are declared in ``workbench.zdb.errors``).

Slices travel as ``{"$slice": [start, stop, step]}`` and blob references as
``{"$file": {"hash": ..., "name": ..., "size": ...}}``; a stored dict may therefore not be a
single-key dict whose key is ``$slice`` or ``$file``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

from workbench.errors import ZdbError, json_safe
from workbench.zdb.errors import ZDB_ERRORS, BadRequest

#: deepest nesting a stored value may have (bounded recursion everywhere); a message's nesting is
#: bounded by the C JSON parser's recursion limit, checked as it parses (no scan of its own)
MAX_DEPTH = 64
#: largest message a server accepts; blobs travel in chunks below this
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: blob chunk size used by clients
BLOB_CHUNK_BYTES = 1024 * 1024

Key = Union[str, int, slice]

REQUEST_KINDS = frozenset({"op", "batch", "undo", "redo", "save", "lock", "unlock", "renew", "status", "ping",
                           "blob_put", "blob_get", "sync", "login"})
_RESERVED_KEYS = frozenset({"$slice", "$file"})
_SCALARS = frozenset({str, int, bool, type(None)})  # always storable (floats must be finite)


class OperationError(ZdbError):
    """An operation failed the way Python would fail it (``kind`` is the Python exception name)."""

    def __init__(self, kind: str, message: str, /, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.kind = kind

    @classmethod
    def from_exception(cls, exc: BaseException, **fields: Any) -> "OperationError":
        message = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
        return cls(type(exc).__name__, message, **fields)


@dataclass(frozen=True)
class File:
    """A blob stored by the server under its content hash; the database holds this reference."""

    hash: str
    name: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"$file": {"hash": self.hash, "name": self.name, "size": self.size}}


def unstorable(value: Any, path: Sequence[Any] = (), *, sending: bool = False) -> tuple[str, str, list[Any], str] | None:
    """What JSON cannot keep in ``value`` (at ``path``): ``(kind, message, path, type)``, or None.

    A dict key that is not a string (JSON would turn ``{1: 2}`` into ``{"1": 2}``), a tuple or
    set (JSON has lists only), bytes, any other object, NaN or infinity. ``sending`` is a client
    about to encode: a ``range`` stands for its list there (as in the pyzdb seed, ``db["l"] =
    range(10)``), and slices and Files have their tagged forms. Nesting is the server's check.
    """
    if type(value) in _SCALARS:  # most stored values: nothing to walk
        return None
    stack: list[tuple[Any, list[Any]]] = [(value, list(path))]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, (bool, int, str, File)) or (sending and isinstance(item, (range, slice))):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return ("ValueError", f"{item} cannot be stored at {where} (JSON has no NaN or infinity)", where,
                        "float")
            continue
        if isinstance(item, list):
            stack.extend((child, [*where, index]) for index, child in enumerate(item))
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return ("TypeError", f"dict keys are strings, got {type(key).__name__} key {key!r} at {where} "
                            "(JSON would make it a string)", [*where, key], type(key).__name__)
                stack.append((child, [*where, key]))
            continue
        kind = type(item).__name__
        hint = " (JSON has lists only: give a list)" if isinstance(item, (tuple, set, frozenset)) else ""
        return ("TypeError", f"cannot store {kind} at {where}: only None, bool, int, float, str, list, dict "
                f"and File{hint}", where, kind)
    return None


def check_value(value: Any, depth: int = 0, path: Sequence[Any] = ()) -> None:
    """Refuse what JSON cannot hold faithfully (fields: path, type), and nesting deeper than MAX_DEPTH."""
    if type(value) in _SCALARS and depth <= MAX_DEPTH:
        return
    problem = unstorable(value, path)
    if problem is not None:
        kind, message, where, type_name = problem
        raise OperationError(kind, message, path=where, type=type_name)
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            raise OperationError("ValueError", f"value nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
            if len(item) == 1 and next(iter(item)) in _RESERVED_KEYS:
                raise OperationError("ValueError", f"a dict with the single key {next(iter(item))!r} is reserved")
    return None


def _default(obj: Any) -> Any:
    if isinstance(obj, slice):
        return {"$slice": [obj.start, obj.stop, obj.step]}
    if isinstance(obj, File):
        return obj.to_json()
    if isinstance(obj, (tuple, range)):  # Python 3's range(10) stores as the list it stands for
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$slice" in obj:
            parts = obj["$slice"]
            if (not isinstance(parts, list) or len(parts) != 3
                    or not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts)):
                raise BadRequest("a $slice is [start, stop, step] of integers or null")
            return slice(*parts)
        if "$file" in obj:
            spec = obj["$file"]
            try:
                return File(str(spec["hash"]), str(spec["name"]), int(spec["size"]))
            except (TypeError, KeyError, ValueError):
                raise BadRequest("a $file is {hash, name, size}") from None
    return obj


_encoder = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# What _encoder.encode() builds on every call, called directly (a third less per message). A
# fresh markers dict each time keeps the circular-reference check and makes it thread-safe.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def encode(message: Any) -> bytes:
    """Message -> UTF-8 JSON bytes (slices and Files in their tagged forms)."""
    try:
        if _c_make_encoder is None:
            return _encoder.encode(message).encode()
        return "".join(_c_make_encoder({}, _default, json.encoder.encode_basestring, None, ":", ",",
                                       False, False, False)(message, 0)).encode()
    except ValueError as exc:  # NaN / infinity, circular reference
        raise OperationError("ValueError", str(exc)) from None


def decode(data: bytes, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """UTF-8 JSON bytes -> message; BadRequest for anything malformed, oversized or too deep."""
    if len(data) > limit:
        raise BadRequest(f"message of {len(data)} bytes exceeds the {limit}-byte limit", size=len(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("message is not UTF-8") from None
    # Nesting: the C parser recurses once per level under the interpreter's recursion limit and
    # raises RecursionError past it, in time linear in the message (a per-character scan in
    # Python cost 1.5 s per 16 MB). Stored values are held to MAX_DEPTH by check_value.
    # Tagged values all contain "$": without one, skip the per-object hook.
    decoder = _tagged_decoder if "$" in text else _plain_decoder
    try:
        # The scanner alone: what decode() runs, minus its two whitespace regexes. Anything it
        # does not take whole (whitespace around the value, errors) goes through decode().
        value, end = decoder.scan_once(text, 0)
        if end == len(text):
            return value
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("message nested deeper than the decoder allows") from None
    except (StopIteration, ValueError):
        pass
    try:
        return decoder.decode(text)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("message nested deeper than the decoder allows") from None
    except ValueError as exc:
        raise BadRequest(f"message is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not allowed in messages")


# Built once: json.loads() with any non-default argument constructs a decoder per call.
_plain_decoder = json.JSONDecoder(parse_constant=_no_constant)
_tagged_decoder = json.JSONDecoder(object_hook=_object_hook, parse_constant=_no_constant)


def error_reply(request_id: Any, error: BaseException) -> dict[str, Any]:
    """The reply for a failed request: the error's envelope (its declared kind, message and fields)."""
    kind = error.kind if isinstance(error, OperationError) else ZDB_ERRORS.kind_of(error)
    fields = getattr(error, "fields", {})
    message = getattr(error, "message", None) or str(error)
    return {"id": request_id, "ok": False,
            "error": {"kind": kind, "message": message,
                      # zdb's encoder: fields may hold slices, Files and tuples; NaN is its OperationError
                      "fields": json_safe(fields, encode, refused=(TypeError, ValueError, OperationError))}}
