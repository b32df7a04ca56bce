"""workbench.clusters: datastore clusters (MySQL/MariaDB, Redis, PostgreSQL) provisioned and run over SSH.

No guest agent: every action is a command sent over SSH (or run locally by the embedded local
provider). The layers, imports flowing one way::

    settings, parameters (what configuration groups may set) -> models (SQLAlchemy state, events)
             -> connection (SSH / local)
             -> providers (where servers come from) + managers (what runs on them)
             -> tasks (background runner) -> cli, api (HTTP; ``client`` calls it over the wire)

A cluster in a few lines::

    from workbench.clusters import ClusterStore, Settings, TaskRunner

    store = ClusterStore("sqlite:///clusters.db", Settings.load())
    store.add_datastore("redis", "7")
    with TaskRunner(store) as runner:
        runner.create_cluster("cache", "redis-7", size=3).wait(timeout=300)
        print([(i.name, i.role, i.addr, i.port) for i in store.get_cluster("cache").instances])
"""

from __future__ import annotations

from workbench.clusters.client import ClustersClient
from workbench.clusters.errors import ClustersError, NotFoundError, ProviderError, TokenRequired, ValidationError
from workbench.clusters.models import (
    Backup,
    Cluster,
    ClusterStore,
    ClusterView,
    Datastore,
    Instance,
    InstanceView,
    Key,
    Task,
    split_datastore_ref,
)
from workbench.clusters.settings import Settings, StaticHost
from workbench.clusters.tasks import TaskHandle, TaskRunner

__all__ = ["Backup", "Cluster", "ClusterStore", "ClusterView", "ClustersClient", "ClustersError", "Datastore",
           "Instance", "InstanceView", "Key", "NotFoundError", "ProviderError", "Settings", "StaticHost", "Task",
           "TaskHandle", "TaskRunner", "TokenRequired", "ValidationError", "split_datastore_ref"]
