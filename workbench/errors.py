"""The exception hierarchy shared by every workbench subsystem.

::

    WorkbenchError                 root: catch this to catch anything workbench raises
    +-- ConfigurationError         bad settings, flags or arguments given by the user
    +-- ServiceError               an external service (ZooKeeper, SQL, sshd...) failed or is missing
    +-- EventsError                misuse of the listener model (emit after close...)
    +-- DomainError                workbench.domain
    |   +-- AuthenticationError    wrong domain credentials or an unverified peer
    +-- ZdbError                   workbench.zdb
    +-- CommitsError               workbench.commits
    +-- ClustersError              workbench.clusters
    +-- InventoryError             workbench.inventory

Every error carries structured fields (``fields``) besides its message, so callers can act on
them and dashboards can show them without parsing text.

Errors cross every wire in one envelope, ``{"kind": K, "message": M, "fields": {...}}``. Each
subsystem declares the classes its clients raise in an :class:`ErrorRegistry` (as kazoo's error
table maps ZooKeeper's codes to exceptions): the server turns an exception into an envelope with
``registry.envelope(exc)`` and the client's transport turns it back with ``registry.error(envelope)``,
so ``except LockError`` catches what the server meant. The registries are ``zdb.errors.ZDB_ERRORS``,
``inventory.errors.INVENTORY_ERRORS`` (the application port) and ``clusters.errors.CLUSTERS_ERRORS``
(the HTTP API); commits speak Rainer's HTTP (plain-text and ``{"error"}`` bodies), so its client
reads the status code instead. A class whose wire form differs from its fields (a wire older than
the class) says so with ``wire_fields`` and ``from_wire``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar


class WorkbenchError(Exception):
    """Root of every exception raised by workbench.

    Keyword arguments become structured fields, readable as attributes and through ``fields``::

        >>> e = WorkbenchError("cannot reach broker", host="db1", port=48004)
        >>> e.port, str(e)
        (48004, 'cannot reach broker (host=db1, port=48004)')
    """

    def __init__(self, message: str, /, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = dict(fields)
        for name, value in fields.items():
            # A field named like an existing attribute (message, args...) stays in `fields` only.
            if not hasattr(self, name):
                setattr(self, name, value)

    def __str__(self) -> str:
        if not self.fields:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.message} ({details})"

    def __repr__(self) -> str:
        args = [repr(self.message)] + [f"{k}={v!r}" for k, v in self.fields.items()]
        return f"{type(self).__name__}({', '.join(args)})"

    def __reduce__(self):  # keep fields when pickled across process pools
        return (_rebuild, (type(self), self.message, self.fields))

    def wire_fields(self) -> dict[str, Any]:
        """The fields an envelope carries for this error: ``fields``, unless a class says otherwise."""
        return self.fields

    @classmethod
    def from_wire(cls, message: str, fields: dict[str, Any]) -> WorkbenchError:
        """The error an envelope of this class's kind stands for: the inverse of ``wire_fields``."""
        return cls(message, **fields)


def _rebuild(cls: type[WorkbenchError], message: str, fields: dict[str, Any]) -> WorkbenchError:
    return cls(message, **fields)


class ConfigurationError(WorkbenchError):
    """A setting, flag or argument given by the user is wrong or missing."""


class ServiceError(WorkbenchError):
    """An external service could not be started, reached or used (fields: service, address...)."""


class EventsError(WorkbenchError):
    """The listener model was used wrongly, e.g. emitting into a closed dispatcher."""


class DomainError(WorkbenchError):
    """Base of workbench.domain errors."""


class AuthenticationError(DomainError):
    """Credentials were refused or a peer could not be verified."""


class ZdbError(WorkbenchError):
    """Base of workbench.zdb errors."""


class CommitsError(WorkbenchError):
    """Base of workbench.commits errors."""


class ClustersError(WorkbenchError):
    """Base of workbench.clusters errors."""


class InventoryError(WorkbenchError):
    """Base of workbench.inventory errors."""


E = TypeVar("E", bound=type[WorkbenchError])


class ErrorRegistry:
    """The exception classes one subsystem's wire can carry, by their ``kind``.

    ``declare`` registers a class (a decorator); ``builtin`` carries a Python exception a server
    may raise from user input (``KeyError`` of a missing path...) under its own name, as the
    declared class a client raises for it, which subclasses both the subsystem's base and the
    builtin::

        >>> registry = ErrorRegistry("demo", fallback=WorkbenchError)
        >>> class NoSuchThing(WorkbenchError, KeyError):
        ...     "No such thing."
        >>> registry.builtin(KeyError, NoSuchThing)
        >>> envelope = registry.envelope(KeyError("teas"))
        >>> envelope
        {'kind': 'KeyError', 'message': 'teas', 'fields': {}}
        >>> error = registry.error(envelope)
        >>> isinstance(error, NoSuchThing) and isinstance(error, KeyError)
        True
        >>> registry.error({"kind": "Strange", "message": "odd"})
        WorkbenchError('odd', kind='Strange')
    """

    def __init__(self, subsystem: str, fallback: type[WorkbenchError]) -> None:
        self.subsystem = subsystem
        self.fallback = fallback  # raised for a kind this client does not know (a newer server)
        self.classes: dict[str, type[WorkbenchError]] = {}  # by kind
        self._builtins: set[type[BaseException]] = set()  # travel under their own names

    def declare(self, cls: E) -> E:
        """Register ``cls`` under its own name (a decorator)."""
        self._register(cls.__name__, cls)
        return cls

    def builtin(self, exc_type: type[BaseException], cls: type[WorkbenchError]) -> None:
        """Carry ``exc_type`` (and ``cls``, its declared form) as the kind ``exc_type.__name__``."""
        self._register(exc_type.__name__, cls)
        self._builtins.add(exc_type)

    def _register(self, kind: str, cls: type[WorkbenchError]) -> None:
        if self.classes.get(kind, cls) is not cls:  # a second class of one kind is refused
            raise TypeError(f"{self.subsystem} already declares an error of kind {kind}")
        self.classes[kind] = cls

    def kind_of(self, exc: BaseException) -> str:
        """The wire kind of ``exc``: its nearest declared class, a carried builtin, else its own name."""
        for klass in type(exc).__mro__:
            if self.classes.get(klass.__name__) is klass:
                return klass.__name__
        for klass in type(exc).__mro__:
            if klass in self._builtins:
                return klass.__name__
        return type(exc).__name__

    def envelope(self, exc: BaseException) -> dict[str, Any]:
        """``{"kind", "message", "fields"}`` for ``exc``; fields JSON cannot carry go as their repr."""
        if isinstance(exc, WorkbenchError):
            message, fields = exc.message, exc.wire_fields()
        else:
            message, fields = (str(exc.args[0]) if len(exc.args) == 1 else str(exc)), {}
        return {"kind": self.kind_of(exc), "message": message, "fields": json_safe(fields)}

    def error(self, envelope: Mapping[str, Any]) -> WorkbenchError:
        """The exception an envelope stands for (``fallback`` with a ``kind`` field if unknown)."""
        kind = str(envelope.get("kind") or "")
        message = str(envelope.get("message") or "the server failed the request")
        fields = envelope.get("fields")
        fields = dict(fields) if isinstance(fields, Mapping) else {}
        cls = self.classes.get(kind)
        if cls is None:
            fields.setdefault("kind", kind)
            return self.fallback(message, **fields)
        return cls.from_wire(message, fields)

    def __repr__(self) -> str:
        return f"ErrorRegistry({self.subsystem!r}, {sorted(self.classes)})"


def json_safe(fields: Mapping[str, Any], encode: Callable[[Any], Any] = json.dumps,
              refused: tuple[type[BaseException], ...] = (TypeError, ValueError)) -> dict[str, Any]:
    """``fields`` with every value JSON cannot carry replaced by its repr.

    ``encode`` is the wire's own encoder; ``refused``, what it raises for a value it cannot carry.
    """
    safe: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            encode(value)
            safe[str(name)] = value
        except refused:
            safe[str(name)] = repr(value)
    return safe


__all__ = [
    "ErrorRegistry",
    "json_safe",
    "WorkbenchError",
    "ConfigurationError",
    "ServiceError",
    "EventsError",
    "DomainError",
    "AuthenticationError",
    "ZdbError",
    "CommitsError",
    "ClustersError",
    "InventoryError",
]
