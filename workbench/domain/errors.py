"""Errors of workbench.domain that a client sees as well as a server raises.

::

    DomainError                    (workbench.errors) root of this package's errors
    +-- AuthenticationError        (workbench.errors) wrong domain credentials or an unverified peer
    +-- ProcessStartError          a database process could not be started
    +-- NoSuchProcessError         the process asked for is not (or no longer) known
"""

from __future__ import annotations

from workbench.errors import AuthenticationError, DomainError


class ProcessStartError(DomainError):
    """A database process could not be started (bad options, archive problems, early exit)."""


class NoSuchProcessError(DomainError):
    """The process asked for is not (or no longer) known: it never ran there, or it has left."""


__all__ = ["AuthenticationError", "DomainError", "NoSuchProcessError", "ProcessStartError"]
