"""pytest fixtures for workbench.clusters: settings, a store and a task runner over temp directories,
a static-hosts pool on the session's real sshd, and a check that nothing a cluster ran is left.

::

    from workbench.testing.clusters import clusters_runner, clusters_settings, static_pool  # noqa: F401

Instance directories live in a world-traversable temp directory (MariaDB and PostgreSQL run as
their own users and must reach them). After each test every server an instance ran is stopped
and every instance directory removed, even when the test failed half way.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from workbench.ports import port_open
from workbench.testing.services import traversable_tempdir

if TYPE_CHECKING:
    from workbench.clusters.models import ClusterStore
    from workbench.clusters.settings import Settings, StaticHost
    from workbench.clusters.tasks import TaskRunner
    from workbench.testing.services import SshServer


class LocalRuntime:
    """The smallest runtime a datastore manager needs: local connections and a fixed secret."""

    def __init__(self, settings: "Settings | None" = None) -> None:
        from workbench.clusters.settings import Settings

        self.settings = settings or Settings(master_key="m")

    def connect(self, instance: object) -> object:
        from workbench.clusters.connection import LocalConnection

        return LocalConnection()

    def secret(self, instance: object) -> str:
        return "secret"


def processes_below(root: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line or working directory is below ``root``."""
    root = str(root)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if root in cmdline or cwd.startswith(root):
            found.append((int(entry), cmdline.strip()))
    return found


def leftovers(store: ClusterStore, roots: list[str]) -> list[str]:
    """What is still running or present for the store's instances: open ports, processes, directories."""
    found = []
    for cluster in store.clusters():
        for instance in cluster.instances:
            if instance.port and instance.addr and port_open(instance.addr, instance.port):
                found.append(f"{instance.name}: port {instance.addr}:{instance.port} still open")
            if instance.directory and os.path.exists(instance.directory):
                found.append(f"{instance.name}: directory {instance.directory} still there")
    for root in roots:
        found += [f"process {pid}: {cmd}" for pid, cmd in processes_below(root)]
    return found


def _stop_everything(store: ClusterStore, runner: TaskRunner, roots: list[str]) -> None:
    """Stop whatever servers are still running below ``roots`` (a failed test may leave some)."""
    import signal
    import time

    for cluster in store.clusters():
        for instance in cluster.instances:
            if instance.directory and os.path.isdir(instance.directory):
                try:
                    runner.manager_for(cluster.datastore).stop(instance, timeout=20)
                except Exception:  # best effort: whatever remains is killed below
                    pass
    for root in roots:
        for pid, _ in processes_below(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


@pytest.fixture
def clusters_settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: its own state dir, a traversable instances dir, a fixed master key."""
    from workbench.clusters.settings import Settings

    instances = traversable_tempdir("wb-clusters-")
    try:
        yield Settings(master_key="test-master-key", state_dir=str(tmp_path / "state"),
                       instances_dir=str(instances), task_retries=1)
    finally:
        shutil.rmtree(instances, ignore_errors=True)


@pytest.fixture
def static_pool(ssh_server: SshServer) -> Iterator[tuple[StaticHost, ...]]:
    """Three static "hosts" on the session's sshd: one address, key auth, the host key pinned,
    each with its own base directory (world-traversable, removed afterwards)."""
    from workbench.clusters.settings import StaticHost

    base = traversable_tempdir("wb-static-")
    host_key = " ".join(Path(f"{ssh_server.host_key_path}.pub").read_text().split()[:2])
    hosts = []
    for n in range(1, 4):
        directory = base / f"host{n}"
        directory.mkdir(mode=0o755)
        hosts.append(StaticHost(address=ssh_server.host, ssh_port=ssh_server.port, user=ssh_server.username,
                                key_file=str(ssh_server.client_key_path), host_key=host_key,
                                base_dir=str(directory), name=f"host{n}"))
    try:
        yield tuple(hosts)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def running_clusters(settings: Settings) -> Iterator[TaskRunner]:
    """A TaskRunner over a SQLite store in ``settings.state_dir`` with the three datastores
    registered (redis 7, mysql 10.11, postgresql 15); every server left is stopped on exit."""
    from workbench.clusters.models import ClusterStore
    from workbench.clusters.tasks import TaskRunner

    store = ClusterStore(None, settings)
    for manager, version in (("redis", "7"), ("mysql", "10.11"), ("postgresql", "15")):
        store.add_datastore(manager, version)
    runner = TaskRunner(store)
    try:
        yield runner
    finally:
        runner.close()
        roots = [settings.instances_dir, *(h.base_dir for h in settings.static_hosts)]
        _stop_everything(store, runner, roots)
        store.close()


@pytest.fixture
def clusters_runner(clusters_settings: Settings) -> Iterator[TaskRunner]:
    """A TaskRunner with the local provider (see ``running_clusters``)."""
    with running_clusters(clusters_settings) as runner:
        yield runner


@pytest.fixture
def static_runner(clusters_settings: Settings, static_pool: tuple[StaticHost, ...]) -> Iterator[TaskRunner]:
    """A TaskRunner whose default provider is the static pool on the session's sshd."""
    with running_clusters(clusters_settings.replace(provider="static", static_hosts=static_pool)) as runner:
        yield runner


__all__ = ["clusters_settings", "clusters_runner", "static_runner", "static_pool", "running_clusters", "leftovers", "processes_below"]
