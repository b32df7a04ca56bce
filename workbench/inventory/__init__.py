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

Modules: ``dataformat`` (the objects) and ``inventory`` (the RAM image) know nothing of storage
or networks; ``store`` (SQL), ``applications`` (forked runs, authorizations); the application
port is ``protocol`` (frames, no I/O) -> ``transport`` (a Unix socket; ``access``: who may do what) ->
``server`` / ``client`` -> ``cli``;
``web`` serves ``/web`` and ``/data``.
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
from workbench.inventory.inventory import Change, Inventory, UnknownReferenceError

__all__ = [
    "Block", "BlockReplica", "Change", "DataFormatError", "DataType", "Dataset", "DatasetReplica",
    "DatasetStatus", "File", "Group", "Inventory", "OwnershipLevel", "Partition", "Site", "SitePartition",
    "SiteStatus", "StorageType", "UnknownReferenceError", "from_dict",
]
