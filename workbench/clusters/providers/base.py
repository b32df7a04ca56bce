"""The provider interface: where an instance's server comes from and how to reach it (the seed's BaseProvider).

A provider is used by the tasks (long running, on worker threads). It records what it learns on
the instance through :meth:`BaseProvider.update` (stored and emitted as ``instance_changed``)::

    class MyProvider(BaseProvider):
        name = "mine"

        def create(self, instance, **kwargs):
            server = my_cloud.boot(instance.name)
            self.update(instance, server=server.id, addr=server.ip, user="root", port=6379,
                        directory=f"/srv/{instance.name}", progress=50)

What ``create`` must fill in: ``server`` (the provider's id of the server), ``addr`` (the address
the datastore listens on), ``port``, ``user``, ``directory`` (the instance's own directory on the
host) and, for SSH, ``ssh_host``/``ssh_port`` and ``host_key`` when the provider can vouch for
the host's key. Failures are ``ProviderError`` with fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.clusters.connection import Connection, SessionPool, SshConnection, format_prefix
from workbench.clusters.errors import ProviderError
from workbench.clusters.settings import Settings

if TYPE_CHECKING:
    from workbench.clusters.models import ClusterStore, Instance


class BaseProvider:
    """Base provider interface. Subclasses override what they support; the rest raises ``ProviderError``."""

    #: the name this provider is registered under in ``Settings.providers``
    name = "base"
    #: whether or not this provider supports creating and attaching volumes
    supports_volumes = True
    #: whether or not this provider supports snapshots
    supports_snapshots = True

    def __init__(self, settings: Settings, store: ClusterStore | None = None) -> None:
        self.settings = settings
        self.store = store
        #: set by the task runner: the provider's own SSH connections then share its sessions
        self.sessions: SessionPool | None = None

    def shared(self, conn: Connection, tag: str = "") -> Connection:
        """``conn``, or a view of the equal pooled session when the runner gave this provider a pool."""
        return self.sessions.share(conn, tag) if self.sessions is not None else conn

    def session_tag(self, instance: Instance) -> str:
        """Instances with different tags never share an SSH session (default: sessions are per host)."""
        return ""

    # -- recording --------------------------------------------------------------------------------
    def update(self, instance: Instance, **fields: Any) -> Instance:
        """Set ``fields`` on ``instance`` and, when the provider has a store, save and emit them."""
        for key, value in fields.items():
            setattr(instance, key, value)
        if self.store is not None and instance.id is not None:
            self.store.update_instance(instance.id, **fields)
        return instance

    # -- the interface ------------------------------------------------------------------------------
    def create(self, instance: Instance, **kwargs: Any) -> None:
        """Create the server of ``instance`` and fill in server, addr, port, user, directory.

        Should report progress (``self.update(instance, progress=...)``) while it waits.
        Raises ``ProviderError`` if the create failed.
        """
        raise ProviderError(f"{self.name} provider cannot create servers", provider=self.name)

    def destroy(self, instance: Instance) -> None:
        """Delete the server of ``instance`` and wait until it is gone; ``ProviderError`` on failure.

        Must succeed for an instance whose create failed half way (cleanup calls it).
        """
        raise ProviderError(f"{self.name} provider cannot destroy servers", provider=self.name)

    def update_status(self, instance: Instance) -> tuple[str, int]:
        """Refresh ``server_status``, ``progress`` and ``message`` of ``instance``; return (status, progress)."""
        raise ProviderError(f"{self.name} provider cannot report status", provider=self.name)

    def flavors(self, datastore: str | None = None) -> list[dict[str, Any]]:
        """The flavors (server sizes) available, optionally only those fit for ``datastore``."""
        return []

    def snapshot(self, instance: Instance) -> str:
        """Snapshot the server of ``instance``; returns the snapshot's id. ``ProviderError`` if unsupported."""
        raise ProviderError(f"{self.name} provider does not support snapshots", provider=self.name)

    def create_volume(self, instance: Instance, size_gb: int = 1) -> str:
        """Create a volume for ``instance``; returns its id. ``ProviderError`` if unsupported."""
        raise ProviderError(f"{self.name} provider does not support volumes", provider=self.name)

    def attach_volume(self, instance: Instance, volume_id: str | None = None) -> str:
        """Attach (creating it when ``volume_id`` is None) a volume to ``instance``; records ``volume``.

        Raises ``ProviderError`` if the volume create or attach failed.
        """
        raise ProviderError(f"{self.name} provider does not support volumes", provider=self.name)

    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume (cleanup of a failed create)."""

    # -- reaching the instance ----------------------------------------------------------------------
    def command_prefix(self, instance: Instance) -> str:
        return format_prefix(self.settings.command_prefix, instance.prefix_fields)

    def connect(self, instance: Instance, key: Any = None) -> Connection:
        """A connection to the host of ``instance``: SSH by default, with the cluster's key ``key``.

        The host key recorded on the instance (vouched for by this provider) is trusted; any
        other unknown key is refused.
        """
        return SshConnection(instance.ssh_host or instance.addr, instance.ssh_port or 22,
                             instance.user or self.settings.ssh_user, key=key,
                             key_filename=instance.ssh_key_file or None,
                             known_hosts=self.settings.known_hosts_path,
                             trusted_host_key=instance.host_key or None, prefix=self.command_prefix(instance),
                             timeout=self.settings.command_timeout, connect_timeout=self.settings.ssh_timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


__all__ = ["BaseProvider", "ProviderError"]
