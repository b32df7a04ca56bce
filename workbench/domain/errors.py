"""Errors of workbench.domain, declared once: what a broker or agent raises is what its clients catch.

::

    DomainError                    (workbench.errors) root of this package's errors; the fallback kind
    +-- AuthenticationError        (workbench.errors) wrong domain credentials or an unverified peer
    +-- ProtocolError              a peer sent something that is not a valid domain message
    +-- DescriptionError           an unknown template, variables that do not fit it, a bad description
    +-- ProcessStartError          a database process could not be started
    +-- NoSuchProcessError         the process asked for is not (or no longer) known
    +-- NoSuchDatabaseError        no running transaction engine serves the database asked for
    +-- LoginBusy                  too many logins are being checked at once: try again shortly
    AuthenticationError
    +-- LoginThrottled             too many failed logins from this address (field retry_after)

Responses, and the ``<Error>`` a broker answers a refused ``<Connect>`` or ``<Locate>`` with, carry an error in the envelope of ``workbench.errors`` (``kind``, ``message``,
``fields``), as ``workbench.domain.requests`` writes it into the XML: ``kind`` is the declared
class's name, and a kind this client does not know (a newer broker's) is raised as ``DomainError``.
"""

from __future__ import annotations

from workbench.errors import AuthenticationError, DomainError, ErrorRegistry

DOMAIN_ERRORS = ErrorRegistry("domain", fallback=DomainError)
DOMAIN_ERRORS.declare(DomainError)
DOMAIN_ERRORS.declare(AuthenticationError)


@DOMAIN_ERRORS.declare
class ProtocolError(DomainError):
    """A peer sent something that is not a valid domain message (the connection is closed)."""


@DOMAIN_ERRORS.declare
class DescriptionError(DomainError):
    """A description names an unknown template, or its variables do not fit the template."""


@DOMAIN_ERRORS.declare
class ProcessStartError(DomainError):
    """A database process could not be started (bad options, archive problems, early exit)."""


@DOMAIN_ERRORS.declare
class NoSuchProcessError(DomainError):
    """The process asked for is not (or no longer) known: it never ran there, or it has left."""


@DOMAIN_ERRORS.declare
class NoSuchDatabaseError(DomainError):
    """No running transaction engine serves the database asked for (field database)."""


@DOMAIN_ERRORS.declare
class LoginBusy(DomainError):
    """Too many logins are being checked at once: try again shortly."""


@DOMAIN_ERRORS.declare
class LoginThrottled(AuthenticationError):
    """Too many failed logins from this address: the next attempt waits ``retry_after`` seconds."""


__all__ = ["AuthenticationError", "DOMAIN_ERRORS", "DescriptionError", "DomainError", "LoginBusy", "LoginThrottled",
           "NoSuchDatabaseError", "NoSuchProcessError", "ProcessStartError", "ProtocolError"]
