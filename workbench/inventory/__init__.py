"""inventory: a data inventory (datasets, blocks, files, sites, replicas) held in RAM and persisted in SQL.

::

    from workbench.inventory import Inventory, Dataset, Block, File, Site
    inventory = Inventory()
    dataset = inventory.update(Dataset("/Higgs/Run2024-v1/AOD", status="valid"))
    block = inventory.update(Block("b1", dataset))
    inventory.update(File("/store/data/Higgs/f1.root", block, size=1000, adler32="0a1b2c3d"))

Servers (``workbench inventory serve``) keep the image in a SQL store, run applications
(``workbench inventory exec SCRIPT``) that see it through
``from workbench.inventory.executable import inventory, read_only``, and scale out with
secondary servers fed through tables of the shared database.

Modules: ``errors`` (every error a client may catch, declared once), ``dataformat`` (the objects)
and ``inventory`` (the RAM image) know nothing of storage or networks; ``store`` (SQL), ``applications`` (forked runs, authorizations); the application
port is ``protocol`` (frames, no I/O) -> ``transport`` (a Unix socket; ``access``: who may do what) ->
``server`` / ``client`` -> ``cli``;
``web`` serves ``/web`` and ``/data``.

Dynamo's interfaces (SmartDataProjects/dynamo): ``/data/inventory/...`` answers its data API's
shapes (``web/dynamo.py``; ``format=workbench`` for this project's), applications may import
``dynamo.dataformat`` and ``dynamo.core.executable`` (``dynamo.py``), and the data format has its
names where scripts use them (``Dataset.status_name``, ``site.partitions[partition]``, ``Block.full_name()``).
"""

from workbench.inventory.dataformat import (
    Block,
    BlockReplica,
    DataFormatError,
    Dataset,
    DatasetReplica,
    DatasetStatus,
    DataType,
    File,
    Group,
    OwnershipLevel,
    Partition,
    Site,
    SitePartition,
    SiteStatus,
    StorageType,
    from_dict,
)
from workbench.inventory.errors import (
    AccessDenied,
    ApplicationRefused,
    InventoryRemoteError,
    NotPrimaryError,
    ProtocolError,
    StoreError,
    TransportError,
    WriterBusyError,
)
from workbench.inventory.inventory import Change, Inventory, UnknownReferenceError

# The servers, clients and reports load on first use: the data format alone must stay cheap to
# import (applications import it in every forked run).
_LAZY = {
    "DEFAULT_SOCKET": "workbench.inventory.protocol",
    "InventoryClient": "workbench.inventory.client",
    "InventoryServer": "workbench.inventory.server",
    "WebClient": "workbench.inventory.web.client",
    "dataset_summary": "workbench.inventory.web.reports",
    "human_size": "workbench.inventory.web.reports",
    "inventory_stats": "workbench.inventory.web.reports",
    "site_summary": "workbench.inventory.web.reports",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workbench.inventory' has no attribute {name!r}")


__all__ = [
    "AccessDenied", "ApplicationRefused", "Block", "BlockReplica", "Change", "DEFAULT_SOCKET", "DataFormatError",
    "DataType", "Dataset", "DatasetReplica", "DatasetStatus", "File", "Group", "Inventory", "InventoryClient",
    "InventoryRemoteError", "InventoryServer", "NotPrimaryError", "OwnershipLevel", "Partition", "ProtocolError",
    "Site", "SitePartition", "SiteStatus", "StorageType", "StoreError", "TransportError", "UnknownReferenceError",
    "WebClient", "WriterBusyError", "dataset_summary", "from_dict", "human_size", "inventory_stats", "site_summary",
]
