"""Commits: versioned key/value documents with who/why/when metadata, and their serializations.

A :class:`Commit` is one version of one key: :class:`CommitMetadata` (key, version, author,
comment, mtime, empty) plus a payload of bytes. The payload is what is stored and served; the
value is the payload read through a :class:`Serialization` (JSON by default, YAML, text or raw
bytes). Because the bytes are kept as given, a document a person edited keeps its comments and
whitespace (``Commit.from_bytes``); ``Commit.from_value`` serializes a Python value instead.
An *empty* commit (a tombstone, ``Commit.tombstone``) marks a key as deleted while its history stays.

::

    >>> c = Commit.from_value("foo", 1, {"hey": "what"}, author="gian", comment="rofl")
    >>> c.payload, c.value
    (b'{"hey":"what"}', {'hey': 'what'})
    >>> Commit.from_bytes("conf.yaml", 1, b"a: 1  # why\\n", "me", serialization=YAML).value
    {'a': 1}

This module does no I/O and imports nothing from storage, ZooKeeper or HTTP layers.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Protocol, runtime_checkable

from workbench.errors import CommitsError

__all__ = [
    "Commit",
    "CommitMetadata",
    "CommitConflict",
    "InvalidCommit",
    "Serialization",
    "JsonSerialization",
    "YamlSerialization",
    "TextSerialization",
    "RawSerialization",
    "JSON",
    "YAML",
    "TEXT",
    "RAW",
    "SerializationChooser",
    "serialization_by_suffix",
    "check_key",
    "format_mtime",
    "parse_mtime",
    "now",
    "MAX_KEY_LENGTH",
    "MAX_AUTHOR_LENGTH",
]

#: longest key accepted (keys are SQL primary-key columns and ZooKeeper node names)
MAX_KEY_LENGTH = 255
#: longest author accepted (a VARCHAR(255) column in every SQL storage)
MAX_AUTHOR_LENGTH = 255


# -- errors ------------------------------------------------------------------------------------
class CommitConflict(CommitsError):
    """A save whose version is not exactly the current version + 1.

    Fields: ``key``, ``expected_version`` (the version a save must carry now) and
    ``provided_version`` (the one it carried)::

        >>> e = CommitConflict("foo", expected_version=3, provided_version=2)
        >>> e.expected_version, str(e)
        (3, 'conflicting version for key foo (key=foo, expected_version=3, provided_version=2)')
    """

    def __init__(self, key: str, expected_version: int, provided_version: int) -> None:
        super().__init__(f"conflicting version for key {key}", key=key,
                         expected_version=expected_version, provided_version=provided_version)

    def __reduce__(self):  # pickles through the fields, like every WorkbenchError
        return (CommitConflict, (self.fields["key"], self.fields["expected_version"],
                                 self.fields["provided_version"]))


class InvalidCommit(CommitsError):
    """A commit that cannot exist: bad key, version < 1, missing author, unreadable payload.

    Fields name what is wrong (``key``, ``version``, ``reason``...).
    """


# -- time ----------------------------------------------------------------------------------------
def now() -> datetime:
    """The current time, timezone-aware in the local zone, at millisecond precision (as stored)."""
    moment = datetime.now().astimezone()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_mtime(moment: datetime) -> str:
    """ISO 8601 with milliseconds and a numeric offset, as Rainer prints it.

    ::

        >>> from datetime import timezone
        >>> format_mtime(datetime(2014, 2, 11, 14, 1, 28, 839000, timezone(timedelta(hours=-8))))
        '2014-02-11T14:01:28.839-08:00'
    """
    if moment.tzinfo is None:
        moment = moment.astimezone()
    text = moment.isoformat(timespec="milliseconds")
    # a zero offset prints as "Z" (as Joda did), so a time reads back and prints the same
    return text[:-6] + "Z" if moment.utcoffset() == timedelta(0) else text


def parse_mtime(text: str, *, check_range: bool = True) -> datetime:
    """Read an ISO 8601 time (``Z`` or an offset; a naive time is taken as local).

    Raises :class:`InvalidCommit` (field ``mtime``) for anything else and, with ``check_range``
    (for times that come in), for a time without a UTC equivalent in the years 1 to 9999
    (``0001-01-01T00:00:00+05:00``), which no reader could compare or convert. Stored times are
    read with ``check_range=False``: what was once accepted stays readable.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except (TypeError, ValueError, AttributeError):
        raise InvalidCommit("mtime is not an ISO 8601 time", mtime=text, reason="format") from None
    return _aware(moment, text, check_range)


def _aware(moment: datetime, text: object, check_range: bool = False) -> datetime:
    """``moment`` made timezone-aware (a naive time is local); with ``check_range``, only if its
    UTC time lies within the years 1 to 9999."""
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()
        if check_range:
            moment.astimezone(timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise InvalidCommit("mtime is out of range: its UTC time must lie within the years 1 to 9999",
                            mtime=str(text), reason="range") from None
    return moment


# -- keys ----------------------------------------------------------------------------------------
def check_key(key: Any) -> str:
    """Return ``key`` if it can name a commit, else raise :class:`InvalidCommit`.

    A key is 1 to 255 characters of any script, without "/" (it is one URL path segment and one
    ZooKeeper node name), without control characters, and not "." or "..".
    """
    if not isinstance(key, str):
        raise InvalidCommit("key must be a string", key=repr(key), reason="type")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidCommit(f"key must have 1 to {MAX_KEY_LENGTH} characters", key=key, reason="length")
    if key in (".", "..") or "/" in key:
        raise InvalidCommit("key must not contain '/' nor be '.' or '..'", key=key, reason="path")
    if _has_control(key):
        raise InvalidCommit("key must not contain control characters", key=key, reason="control")
    return key


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidCommit("version must be an integer >= 1", version=version)
    return version


# -- serializations ------------------------------------------------------------------------------
@runtime_checkable
class Serialization(Protocol):
    """How a payload's bytes become a value and back. ``loads`` raises ValueError on bad bytes."""

    name: str
    content_type: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, payload: bytes) -> Any: ...


class _NamedSerialization:
    """Shows a serialization by its name (``<json serialization>``); the four below are one each."""

    name: str

    def __repr__(self) -> str:
        return f"<{self.name} serialization>"


class JsonSerialization(_NamedSerialization):
    """UTF-8 JSON; ``dumps`` is compact (``{"hey":"what"}``) with keys in the order given."""

    name = "json"
    content_type = "application/json"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def loads(self, payload: bytes) -> Any:
        try:
            return json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        except RecursionError:
            # the C decoder counts its depth against the recursion limit and stops cleanly
            raise ValueError("invalid JSON: nested too deeply") from None


class YamlSerialization(_NamedSerialization):
    """YAML via pyyaml's safe loader (no Python objects from documents)."""

    name = "yaml"
    content_type = "application/yaml"

    def dumps(self, value: Any) -> bytes:
        import yaml

        return yaml.safe_dump(value, allow_unicode=True, sort_keys=False).encode("utf-8")

    def loads(self, payload: bytes) -> Any:
        import yaml

        try:
            return yaml.safe_load(payload.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"invalid YAML: {exc}") from None
        except RecursionError:
            raise ValueError("invalid YAML: nested too deeply") from None


class TextSerialization(_NamedSerialization):
    """UTF-8 text: the value is a ``str``."""

    name = "text"
    content_type = "text/plain; charset=utf-8"

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"text payloads are str, not {type(value).__name__}")
        return value.encode("utf-8")

    def loads(self, payload: bytes) -> Any:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"invalid UTF-8: {exc}") from None


class RawSerialization(_NamedSerialization):
    """No transformation: the value is the payload's ``bytes``."""

    name = "raw"
    content_type = "application/octet-stream"

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"raw payloads are bytes, not {type(value).__name__}")
        return bytes(value)

    def loads(self, payload: bytes) -> Any:
        return bytes(payload)


JSON = JsonSerialization()
YAML = YamlSerialization()
TEXT = TextSerialization()
RAW = RawSerialization()

#: picks the serialization of a key (servers validate POSTed payloads with it)
SerializationChooser = Callable[[str], Serialization]

_SUFFIXES: dict[str, Serialization] = {".yaml": YAML, ".yml": YAML, ".txt": TEXT, ".bin": RAW, ".json": JSON}


def serialization_by_suffix(key: str) -> Serialization:
    """JSON unless the key ends in ``.yaml``/``.yml`` (YAML), ``.txt`` (text) or ``.bin`` (raw)."""
    dot = key.rfind(".")
    return _SUFFIXES.get(key[dot:].lower(), JSON) if dot > 0 else JSON


# -- commits ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommitMetadata:
    """Who committed which version of a key, when and why; ``empty`` marks a tombstone."""

    key: str
    version: int
    author: str
    comment: str = ""
    mtime: datetime = field(default_factory=now)
    empty: bool = False

    def __post_init__(self) -> None:
        check_key(self.key)
        _check_version(self.version)
        if not isinstance(self.author, str) or not self.author.strip():
            raise InvalidCommit("author must be a non-empty string", key=self.key, version=self.version,
                                reason="author")
        if not isinstance(self.comment, str):
            raise InvalidCommit("comment must be a string", key=self.key, version=self.version,
                                reason="comment")
        if not isinstance(self.mtime, datetime):
            raise InvalidCommit("mtime must be a datetime", key=self.key, version=self.version, reason="mtime")
        # a naive time is local time; stored times are always aware
        object.__setattr__(self, "mtime", _aware(self.mtime, self.mtime))

    def check_storable(self) -> CommitMetadata:
        """Self if every SQL storage can hold it, else :class:`InvalidCommit`: an author of at most
        255 characters without control characters, a comment without NUL (PostgreSQL refuses it).

        New commits are checked (``Commit.from_value``, ``from_bytes``, ``tombstone``,
        ``with_version``); metadata read back is not, so what was stored before stays readable.
        """
        if len(self.author) > MAX_AUTHOR_LENGTH or _has_control(self.author):
            raise InvalidCommit(f"author must have at most {MAX_AUTHOR_LENGTH} characters and no control "
                                "characters", key=self.key, version=self.version, reason="author")
        if "\x00" in self.comment:
            raise InvalidCommit("comment must not contain NUL characters", key=self.key, version=self.version,
                                reason="comment")
        return self

    def to_json(self) -> dict[str, Any]:
        """Rainer's metadata object: author, comment, key, mtime, version (+ ``empty`` when true)."""
        document: dict[str, Any] = {"author": self.author, "comment": self.comment, "key": self.key,
                                    "mtime": format_mtime(self.mtime), "version": self.version}
        if self.empty:
            document["empty"] = True
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CommitMetadata:
        """The inverse of :meth:`to_json`; raises :class:`InvalidCommit` on a malformed object."""
        try:
            return cls(key=document["key"], version=document["version"], author=document["author"],
                       comment=document.get("comment") or "",
                       mtime=parse_mtime(document["mtime"], check_range=False),
                       empty=bool(document.get("empty", False)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidCommit("malformed commit metadata", reason=repr(exc)) from None


@dataclass(frozen=True, eq=False)
class Commit:
    """One version of one key: metadata plus payload bytes (``None`` for a tombstone).

    Build with :meth:`from_value`, :meth:`from_bytes` or :meth:`tombstone`. Two commits are equal
    when metadata and payload bytes are equal (the serialization is how to read, not what is stored).
    """

    meta: CommitMetadata
    payload: bytes | None
    serialization: Serialization = JSON

    def __post_init__(self) -> None:
        if self.meta.empty and self.payload is not None:
            raise InvalidCommit("an empty commit has no payload", key=self.meta.key, version=self.meta.version)
        if not self.meta.empty:
            if not isinstance(self.payload, (bytes, bytearray, memoryview)):
                raise InvalidCommit("payload must be bytes", key=self.meta.key, version=self.meta.version,
                                    reason="payload")
            object.__setattr__(self, "payload", bytes(self.payload))

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_value(cls, key: str, version: int, value: Any, author: str, comment: str = "",
                   mtime: datetime | None = None, serialization: Serialization = JSON) -> Commit:
        """A commit whose payload is ``serialization.dumps(value)``."""
        meta = CommitMetadata(key, version, author, comment, mtime or now()).check_storable()
        try:
            payload = serialization.dumps(value)
        except (TypeError, ValueError) as exc:
            raise InvalidCommit(f"cannot serialize value as {serialization.name}: {exc}", key=key,
                                version=version, reason="payload") from None
        return cls(meta, payload, serialization)

    @classmethod
    def from_bytes(cls, key: str, version: int, payload: bytes, author: str, comment: str = "",
                   mtime: datetime | None = None, serialization: Serialization = JSON,
                   validate: bool = True) -> Commit:
        """A commit of exactly these bytes (comments and whitespace a person typed survive).

        With ``validate`` (default) the bytes must be readable by ``serialization``, else
        :class:`InvalidCommit` with ``reason`` saying why.
        """
        commit = cls(CommitMetadata(key, version, author, comment, mtime or now()).check_storable(), payload,
                     serialization)
        if validate:
            commit.validate()
        return commit

    @classmethod
    def tombstone(cls, key: str, version: int, author: str, comment: str = "",
                  mtime: datetime | None = None) -> Commit:
        """An empty commit: the key reads as absent from this version on; history is kept."""
        return cls(CommitMetadata(key, version, author, comment, mtime or now(), empty=True).check_storable(), None)

    def with_version(self, version: int, author: str | None = None, comment: str | None = None,
                     mtime: datetime | None = None) -> Commit:
        """The same payload as another version (e.g. a revert: ``old.with_version(head.version + 1)``)."""
        meta = replace(self.meta, version=version, author=author or self.meta.author,
                       comment=self.meta.comment if comment is None else comment, mtime=mtime or now())
        return Commit(meta.check_storable(), self.payload, self.serialization)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def version(self) -> int:
        return self.meta.version

    @property
    def author(self) -> str:
        return self.meta.author

    @property
    def comment(self) -> str:
        return self.meta.comment

    @property
    def mtime(self) -> datetime:
        return self.meta.mtime

    @property
    def empty(self) -> bool:
        return self.meta.empty

    @property
    def value(self) -> Any:
        """The payload read through the serialization (``None`` for a tombstone).

        Raises :class:`InvalidCommit` when the bytes are not readable.
        """
        if self.payload is None:
            return None
        try:
            return self.serialization.loads(self.payload)
        except ValueError as exc:
            raise InvalidCommit(str(exc), key=self.key, version=self.version, reason="payload") from None

    def validate(self) -> Commit:
        """Raise :class:`InvalidCommit` unless the payload reads; return self."""
        _ = self.value
        return self

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Commit):
            return NotImplemented
        return self.meta == other.meta and self.payload == other.payload

    def __hash__(self) -> int:
        return hash((self.meta, self.payload))

    def __repr__(self) -> str:
        size = "empty" if self.payload is None else f"{len(self.payload)} bytes"
        return f"<Commit {self.key}@{self.version} by {self.author} ({size})>"
