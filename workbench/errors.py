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
"""

from __future__ import annotations

from typing import Any


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


__all__ = [
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
