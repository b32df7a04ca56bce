"""Errors of workbench.clusters.

::

    ClustersError                  (workbench.errors) root of this package's errors
    +-- SettingsError              a bad option (fields: option, value); also a ConfigurationError
    +-- ValidationError            bad input to a model operation (fields: field, value)
    +-- NotFoundError              no such cluster, datastore, instance, key or backup
    +-- TokenRequired              the HTTP API refused the request's token (none, or not the right one)
    +-- KeyDecryptionError         wrong passphrase / master key for a stored private key
    +-- ConnectionFailed           cannot reach or log in to a host (fields: host, port)
    |   +-- UnknownHostKeyError    the host's key is neither pinned nor vouched for
    +-- CommandError               a remote command failed (fields: command, exit_status, stderr, host)
    +-- ManagerError               a datastore manager cannot do what it was asked
    +-- ProviderError              a provider action failed (the seed's ProviderError)
    +-- TaskError                  a task step failed (fields: task, instance, step)
        +-- TaskCancelled          the task was cancelled

The HTTP API answers every error with the envelope of ``workbench.errors`` (``{"kind", "message",
"fields"}``, and ``error``, the message its first clients read): ``api`` encodes with
``CLUSTERS_ERRORS.envelope``, ``client`` raises ``CLUSTERS_ERRORS.error``; a kind this library does
not know arrives as a ``ClustersError`` with a ``kind`` field.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import ClustersError, ConfigurationError, ErrorRegistry

CLUSTERS_ERRORS = ErrorRegistry("clusters", fallback=ClustersError)
CLUSTERS_ERRORS.declare(ClustersError)  # raised as itself too (a server that is not started...)


@CLUSTERS_ERRORS.declare
class SettingsError(ClustersError, ConfigurationError):
    """A clusters option is unknown, missing or has a bad value (fields: option, value)."""


@CLUSTERS_ERRORS.declare
class ValidationError(ClustersError):
    """Bad input for a model operation (fields: field, value...; ``fields``: every bad field's problem).

    On the wire its fields are the bad fields and their problems, ``{"size": "a cluster has at most
    5 nodes"}``, as the HTTP API has always answered them.
    """

    def wire_fields(self) -> dict[str, Any]:
        problems = self.fields.get("fields")
        if isinstance(problems, dict) and problems:
            return dict(problems)
        return {str(self.fields.get("field", "body")): self.message}

    @classmethod
    def from_wire(cls, message: str, fields: dict[str, Any]) -> ValidationError:
        return cls(message, field=next(iter(fields), "body"), fields=dict(fields))


@CLUSTERS_ERRORS.declare
class NotFoundError(ClustersError):
    """The named cluster, datastore, instance, key or backup does not exist."""


@CLUSTERS_ERRORS.declare
class TokenRequired(ClustersError):
    """The HTTP API refused the request: it came without the API token, or with another one."""


@CLUSTERS_ERRORS.declare
class KeyDecryptionError(ClustersError):
    """A stored secret could not be decrypted: wrong passphrase or master key."""


@CLUSTERS_ERRORS.declare
class ConnectionFailed(ClustersError):
    """A host could not be reached or refused the login (fields: host, port, reason)."""


@CLUSTERS_ERRORS.declare
class UnknownHostKeyError(ConnectionFailed):
    """The host presented a key that is neither in known_hosts nor vouched for by the provider."""


@CLUSTERS_ERRORS.declare
class CommandError(ClustersError):
    """A command exited non-zero or timed out (fields: command, exit_status, stderr, host)."""


@CLUSTERS_ERRORS.declare
class ManagerError(ClustersError):
    """A datastore manager cannot do what it was asked (e.g. packages missing and not installable)."""


@CLUSTERS_ERRORS.declare
class ProviderError(ClustersError):
    """An exception during a provider action (create, destroy, status, volumes, snapshots)."""


@CLUSTERS_ERRORS.declare
class TaskError(ClustersError):
    """A task step failed (fields: task, instance, step)."""


@CLUSTERS_ERRORS.declare
class TaskCancelled(TaskError):
    """The task was cancelled before it finished."""


__all__ = ["CLUSTERS_ERRORS", "ClustersError", "SettingsError", "ValidationError", "NotFoundError", "KeyDecryptionError",
           "ConnectionFailed", "UnknownHostKeyError", "CommandError", "ManagerError", "ProviderError",
           "TaskError", "TaskCancelled", "TokenRequired"]
