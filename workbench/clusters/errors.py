"""Errors of workbench.clusters.

::

    ClustersError                  (workbench.errors) root of this package's errors
    +-- SettingsError              a bad option (fields: option, value); also a ConfigurationError
    +-- ValidationError            bad input to a model operation (fields: field, value)
    +-- NotFoundError              no such cluster, datastore, instance, key or backup
    +-- KeyDecryptionError         wrong passphrase / master key for a stored private key
    +-- ConnectionFailed           cannot reach or log in to a host (fields: host, port)
    |   +-- UnknownHostKeyError    the host's key is neither pinned nor vouched for
    +-- CommandError               a remote command failed (fields: command, exit_status, stderr, host)
    +-- ManagerError               a datastore manager cannot do what it was asked
    +-- ProviderError              a provider action failed (the seed's ProviderError)
    +-- TaskError                  a task step failed (fields: task, instance, step)
        +-- TaskCancelled          the task was cancelled
"""

from __future__ import annotations

from workbench.errors import ClustersError, ConfigurationError


class SettingsError(ClustersError, ConfigurationError):
    """A clusters option is unknown, missing or has a bad value (fields: option, value)."""


class ValidationError(ClustersError):
    """Bad input for a model operation (fields: field, value...)."""


class NotFoundError(ClustersError):
    """The named cluster, datastore, instance, key or backup does not exist."""


class KeyDecryptionError(ClustersError):
    """A stored secret could not be decrypted: wrong passphrase or master key."""


class ConnectionFailed(ClustersError):
    """A host could not be reached or refused the login (fields: host, port, reason)."""


class UnknownHostKeyError(ConnectionFailed):
    """The host presented a key that is neither in known_hosts nor vouched for by the provider."""


class CommandError(ClustersError):
    """A command exited non-zero or timed out (fields: command, exit_status, stderr, host)."""


class ManagerError(ClustersError):
    """A datastore manager cannot do what it was asked (e.g. packages missing and not installable)."""


class ProviderError(ClustersError):
    """An exception during a provider action (create, destroy, status, volumes, snapshots)."""


class TaskError(ClustersError):
    """A task step failed (fields: task, instance, step)."""


class TaskCancelled(TaskError):
    """The task was cancelled before it finished."""


__all__ = ["ClustersError", "SettingsError", "ValidationError", "NotFoundError", "KeyDecryptionError",
           "ConnectionFailed", "UnknownHostKeyError", "CommandError", "ManagerError", "ProviderError",
           "TaskError", "TaskCancelled"]
