"""The static-hosts provider: a pool of existing machines reached over SSH (key auth, pinned host keys).

Each pool entry (``Settings.static_hosts``) names an address, its SSH port, the login and key file,
the host's public key (the pool vouches for it: connections pin it and refuse any other), and a base
directory. An instance is a directory ``<base_dir>/<cluster>/<instance>`` on the least-used host and
a port the host's kernel reports free; the datastore listens on the host's address. Several entries
may name one sshd with different base directories.
"""

from __future__ import annotations

import posixpath
import threading
from typing import Any

from workbench.clusters.connection import Connection, SshConnection, format_prefix
from workbench.clusters.errors import ClustersError, ProviderError
from workbench.clusters.models import Instance
from workbench.clusters.providers.base import BaseProvider
from workbench.clusters.settings import StaticHost

#: asks the host's kernel for a free TCP port on the given address
FREE_PORT_SCRIPT = ("import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); "
                    "print(s.getsockname()[1]); s.close()")
#: the host's own interpreter when it has one: a python3 first on PATH may be a version manager's
#: shim, which costs a further shell or two per call
PYTHON = 'py() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$@"; else python3 "$@"; fi; }; '


class StaticHostsProvider(BaseProvider):
    """Places instances on a fixed pool of SSH hosts, spreading each cluster over the pool."""

    name = "static"
    supports_volumes = False
    supports_snapshots = False
    uses_cluster_key = False

    _lock = threading.Lock()
    #: (host label, port) handed out by this process, so two instances created at once never share one
    _handed_out: set[tuple[str, int]] = set()

    @property
    def hosts(self) -> tuple[StaticHost, ...]:
        if not self.settings.static_hosts:
            raise ProviderError("the static provider has no hosts: set static_hosts in the settings",
                                provider=self.name)
        return self.settings.static_hosts

    def host_of(self, instance: Instance) -> StaticHost:
        for host in self.hosts:
            if instance.server.startswith(host.label + "/"):
                return host
        raise ProviderError(f"instance {instance.name} is on no host of the pool ({instance.server})",
                            provider=self.name, instance=instance.name)

    def _load(self) -> dict[str, int]:
        """Instances per host label, from the store (what this provider placed before)."""
        counts = {host.label: 0 for host in self.hosts}
        if self.store is not None:
            for cluster in self.store.clusters():
                for other in cluster.instances:
                    for label in counts:
                        if other.server.startswith(label + "/"):
                            counts[label] += 1
        return counts

    def _choose(self, instance: Instance) -> StaticHost:
        counts = self._load()
        siblings = set()
        if self.store is not None:
            siblings = {other.server.split("/", 1)[0] for other in self.store.get_cluster(instance.cluster_id).instances
                        if other.id != instance.id and other.server}
        # prefer a host without a sibling of this cluster, then the least loaded one
        return min(self.hosts, key=lambda h: (h.label in siblings, counts.get(h.label, 0), h.label))

    def host_connection(self, host: StaticHost, instance: Instance | None = None) -> Connection:
        fields = instance.prefix_fields if instance is not None else {}
        return self.shared(tag=host.label, conn=SshConnection(host.address, host.ssh_port, host.user, key_filename=host.key_file,
                             known_hosts=self.settings.known_hosts_path, trusted_host_key=host.host_key,
                             prefix=format_prefix(self.settings.command_prefix, fields),
                             timeout=self.settings.command_timeout, connect_timeout=self.settings.ssh_timeout))

    def session_tag(self, instance: Instance) -> str:
        # one session per pool entry: entries that share an sshd still run commands in parallel
        return self.host_of(instance).label if instance.server else ""

    def create(self, instance: Instance, **kwargs: Any) -> None:
        with self._lock:
            host = self._choose(instance)
            directory = posixpath.join(host.base_dir, instance.cluster.name, instance.name)
            # claim the host at once, so parallel creates of one cluster spread over the pool
            self.update(instance, server=f"{host.label}/{instance.name}")
        try:
            with self.host_connection(host, instance) as conn:
                # one round trip: refuse a directory another instance owns, make it, open it to
                # the database users, and ask the kernel for a free port
                script = (PYTHON + '[ -e "$1" ] && { echo "exists" >&2; exit 17; }; mkdir -p "$1" && '
                          'chmod 755 "$2" "$(dirname "$1")" "$1" && py -c "$3" "$4"')
                result = conn.run(["sh", "-c", script, "sh", directory, host.base_dir, FREE_PORT_SCRIPT,
                                   host.address], check=False)
                if result.exit_status == 17:
                    raise ProviderError(f"{directory} exists on {host.label}: another instance owns it",
                                        provider=self.name, host=host.label, directory=directory)
                port = self._claim_port(conn, host, int(result.check().stdout.strip()))
        except ClustersError as exc:
            self.update(instance, server="")
            if isinstance(exc, ProviderError):
                raise
            raise ProviderError(f"cannot create {instance.name} on {host.label}: {exc.message}", provider=self.name,
                                host=host.label) from exc
        self.update(instance, addr=host.address, port=port, user=host.user, directory=directory,
                    ssh_host=host.address, ssh_port=host.ssh_port, ssh_key_file=host.key_file,
                    host_key=host.host_key, server_status="ACTIVE", progress=30)

    def _claim_port(self, conn: Connection, host: StaticHost, port: int) -> int:
        for _ in range(20):
            with self._lock:
                if (host.address, port) not in self._handed_out:
                    self._handed_out.add((host.address, port))
                    return port
            port = int(conn.run(["sh", "-c", PYTHON + 'py -c "$1" "$2"', "sh", FREE_PORT_SCRIPT,
                                 host.address]).stdout.strip())
        raise ProviderError(f"no free port found on {host.label}", provider=self.name, host=host.label)

    def destroy(self, instance: Instance) -> None:
        if not instance.server:
            return
        host = self.host_of(instance)
        if instance.directory:
            # only ever below the host's base directory: a corrupt row must not remove anything else
            directory = posixpath.normpath(instance.directory)
            if not directory.startswith(posixpath.normpath(host.base_dir) + "/"):
                raise ProviderError(f"refusing to remove {directory}: not below {host.base_dir}",
                                    provider=self.name, host=host.label)
            with self.host_connection(host, instance) as conn:
                conn.run(["sh", "-c", 'rm -rf "$1" && { rmdir "$(dirname "$1")" 2>/dev/null; true; }', "sh",
                          directory])
        with self._lock:
            self._handed_out.discard((host.address, instance.port))
        self.update(instance, server_status="DELETED")

    def update_status(self, instance: Instance) -> tuple[str, int]:
        host = self.host_of(instance)
        with self.host_connection(host, instance) as conn:
            present = conn.run(["test", "-d", instance.directory], check=False).ok
        status = "ACTIVE" if present else "DELETED"
        self.update(instance, server_status=status, progress=100 if present else 0)
        return status, instance.progress

    def flavors(self, datastore: str | None = None) -> list[dict[str, Any]]:
        return [{"id": host.label, "name": host.name or host.address} for host in self.hosts]
