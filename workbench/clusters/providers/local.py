"""The local provider, the embedded default: an instance is a directory and a port on this machine.

No servers to boot and no SSH: commands run through ``LocalConnection`` (with the command prefix).
Instance directories live below ``Settings.instances_dir`` (``<cluster>/<instance>``); that root is
made world-traversable because MariaDB and PostgreSQL run as their own system users. Volumes are
directories too: attaching one makes the instance's ``data`` a link to it.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

from workbench.clusters.connection import Connection, LocalConnection
from workbench.clusters.errors import ProviderError
from workbench.clusters.models import Instance
from workbench.clusters.providers.base import BaseProvider
from workbench.ports import LOOPBACK, free_port


class LocalProvider(BaseProvider):
    """Instances as directories under ``instances_dir`` listening on free ports of 127.0.0.1."""

    name = "local"
    supports_volumes = True
    supports_snapshots = False
    uses_cluster_key = False

    _ports_lock = threading.Lock()
    #: ports handed out by this process and not yet released: free_port() alone could give the
    #: same port to two instances created at the same moment, before either server binds it
    _handed_out: set[int] = set()

    @property
    def root(self) -> Path:
        return Path(self.settings.instances_dir).expanduser()

    def _allocate_port(self) -> int:
        with self._ports_lock:
            for _ in range(100):
                port = free_port(LOOPBACK)
                if port not in self._handed_out:
                    self._handed_out.add(port)
                    return port
        raise ProviderError("no free port found on 127.0.0.1", provider=self.name)

    def check_traversable(self) -> None:
        """Fail clearly when a parent of the instances root is closed to other users.

        MariaDB and PostgreSQL run as their own users: they would otherwise die later with a bare
        "Permission denied" on some file below.
        """
        if os.geteuid() != 0:
            return
        for parent in [self.root, *self.root.parents]:
            if parent.exists() and not (parent.stat().st_mode & 0o001):
                raise ProviderError(f"{parent} is closed to other users, so database servers running as "
                                    f"mysql or postgres cannot reach instances below {self.root}; choose another "
                                    f"instances_dir or chmod o+x {parent}", provider=self.name, directory=str(parent))

    def create(self, instance: Instance, **kwargs: Any) -> None:
        directory = self.root / instance.cluster.name / instance.name
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)
            self.check_traversable()
            directory.mkdir(parents=True, exist_ok=False)
            os.chmod(directory.parent, 0o755)
            os.chmod(directory, 0o755)
        except FileExistsError:
            raise ProviderError(f"instance directory {directory} exists: another instance owns it",
                                provider=self.name, directory=str(directory)) from None
        except OSError as exc:
            raise ProviderError(f"cannot make instance directory {directory}: {exc}", provider=self.name,
                                directory=str(directory)) from None
        self.update(instance, server=f"local:{directory}", addr=LOOPBACK, port=self._allocate_port(),
                    user=os.environ.get("USER", "") or str(os.getuid()), directory=str(directory),
                    server_status="ACTIVE", progress=30)

    def destroy(self, instance: Instance) -> None:
        directory = Path(instance.directory) if instance.directory else None
        if directory is not None and directory.exists():
            if self.root not in directory.parents:
                raise ProviderError(f"refusing to remove {directory}: not below {self.root}", provider=self.name)
            shutil.rmtree(directory, ignore_errors=False)
            try:
                directory.parent.rmdir()  # the cluster's directory, once its last instance is gone
            except OSError:
                pass
        with self._ports_lock:
            self._handed_out.discard(instance.port)
        self.update(instance, server_status="DELETED")

    def update_status(self, instance: Instance) -> tuple[str, int]:
        status = "ACTIVE" if instance.directory and Path(instance.directory).is_dir() else "DELETED"
        self.update(instance, server_status=status, progress=100 if status == "ACTIVE" else 0)
        return status, instance.progress

    def flavors(self, datastore: str | None = None) -> list[dict[str, Any]]:
        return [{"id": "local", "name": "local", "ram": 0, "vcpus": os.cpu_count() or 1, "disk": 0}]

    def create_volume(self, instance: Instance, size_gb: int = 1) -> str:
        path = self.root / "volumes" / f"{instance.name}-data"
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        return str(path)

    def attach_volume(self, instance: Instance, volume_id: str | None = None) -> str:
        volume = volume_id or self.create_volume(instance)
        data = Path(instance.directory) / "data"
        if data.exists() or data.is_symlink():
            raise ProviderError(f"{data} exists: attach the volume before preparing", provider=self.name)
        data.symlink_to(volume)
        self.update(instance, volume=volume)
        return volume

    def delete_volume(self, volume_id: str) -> None:
        path = Path(volume_id)
        if self.root / "volumes" in path.parents:
            shutil.rmtree(path, ignore_errors=True)

    def connect(self, instance: Instance, key: Any = None) -> Connection:
        return LocalConnection(prefix=self.command_prefix(instance), timeout=self.settings.command_timeout)
