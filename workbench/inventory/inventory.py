"""The RAM image of the inventory: every object linked to its neighbours, changed by update/delete.

::

    inventory = Inventory()
    inventory.update(Site("T2_US_MIT", storage_type="disk"))
    dataset = inventory.update(Dataset("/A/B/AOD", status="valid"))   # the inventory's own object
    inventory.update(Dataset("/A/B/AOD", status="valid"))             # the same object: nothing changed
    inventory.delete(Dataset("/A/B/AOD"))                             # blocks, files, replicas go too

``update`` copies a clone in (or the attributes into the object with the same identifier) and
returns the inventory's object, changed or not (as Dynamo's ``inventory.update`` does: an
application that runs twice links its next objects to what the first call returned). ``delete``
unlinks by identifier and returns the removed object, or None when there was none.

Every applied change is a :class:`Change` (``op`` and the object as a dict). It is handed, in
order, to the *sinks* (the store's write-through transaction, an application's change journal)
and emitted to listeners as ``object_updated(data)`` / ``object_deleted(data)``. Listeners use
the one event model of ``workbench.events``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from workbench.errors import InventoryError
from workbench.inventory.errors import UnknownReferenceError
from workbench.events import EventDispatcher, EventSource
from workbench.inventory.dataformat import (
    Block,
    BlockReplica,
    DataFormatError,
    Dataset,
    DatasetReplica,
    File,
    Group,
    InventoryObject,
    Partition,
    Site,
    SitePartition,
    from_dict,
)


#: a row-level effect of a change for a store: ("add" | "put" | "drop", linked object) for a new,
#: changed or removed object
Write = tuple[str, InventoryObject]


@dataclass(frozen=True)
class Change:
    """One applied change: ``op`` is "update" (``data`` is the whole object) or "delete" (its identifier)."""

    op: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "object": self.data}

    @classmethod
    def from_json(cls, value: Any) -> Change:
        """Read a change sent over the wire; malformed input raises ``DataFormatError``."""
        if not isinstance(value, dict) or value.get("op") not in ("update", "delete") \
                or not isinstance(value.get("object"), dict) or set(value) != {"op", "object"}:
            raise DataFormatError('a change is {"op": "update"|"delete", "object": {...}}', kind=None,
                                  field="op", value=value)
        return cls(value["op"], value["object"])

    def object(self) -> InventoryObject:
        """The unlinked object this change carries."""
        return from_dict(self.data, key_only=self.op == "delete")


Sink = Callable[[Change, list[Write]], None]


class Inventory(EventSource):
    """The in-RAM inventory: ``datasets``, ``sites``, ``groups``, ``partitions`` dicts keyed by name.

    ``groups[None]`` is the null group, owner of replicas whose group was deleted. ``lock`` (a
    re-entrant lock) is held by every change; readers that need a stable view hold it too.
    """

    def __init__(self, name: str = "inventory") -> None:
        self.name = name
        self.datasets: dict[str, Dataset] = {}
        self.sites: dict[str, Site] = {}
        self.groups: dict[str | None, Group] = {None: Group(None)}
        self.partitions: dict[str, Partition] = {}
        self.lock = threading.RLock()
        self._sinks: list[Sink] = []
        self._events: EventDispatcher = EventDispatcher(name)
        self.emit_events = True
        #: False while a server has not loaded the image yet (web pages answer 503 then)
        self.loaded = True
        # lfn -> File of the blocks changed most recently: bulk file changes would otherwise scan
        # a block's list once per file. Bounded, so it never costs memory per file of the image.
        self._file_index: dict[Block, dict[str, File]] = {}

    # -- listeners and sinks ------------------------------------------------------------------
    def add_sink(self, sink: Sink) -> None:
        """Call ``sink(change, writes)`` for every change applied from now on, in order."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        self._sinks = [existing for existing in self._sinks if existing != sink]  # bound methods are equal, not identical

    def emit(self, kind: str, *args: Any) -> None:
        """Emit an event to this inventory's listeners (servers announce batches and reloads this way)."""
        if self.emit_events:
            self._events.emit(kind, *args)

    def close(self) -> None:
        """Stop the event thread (listeners get ``closed()``)."""
        self._events.close()

    def _applied(self, op: str, obj: InventoryObject, writes: list[Write]) -> None:
        if not self._sinks and not (self.emit_events and self._events.listeners):
            return  # nobody to tell (a secondary following the log): no need to describe the change
        data = obj.to_dict() if op == "update" else {"kind": obj.KIND, **obj.key_dict()}
        change = Change(op, data)
        for sink in self._sinks:
            sink(change, writes)
        self.emit("object_updated" if op == "update" else "object_deleted", data)

    # -- lookups -------------------------------------------------------------------------------
    def _dataset(self, dataset: Dataset, needed_by: InventoryObject) -> Dataset:
        found = self.datasets.get(dataset.name)
        if found is None:
            raise UnknownReferenceError("no such dataset in the inventory", kind="Dataset", name=dataset.name,
                                        needed_by=repr(needed_by))
        return found

    def _block(self, block: Block, needed_by: InventoryObject) -> Block:
        found = self._dataset(block.dataset, needed_by).blocks.get(block.name)
        if found is None:
            raise UnknownReferenceError("no such block in the inventory", kind="Block", name=block.full_name(),
                                        needed_by=repr(needed_by))
        return found

    def _site(self, site: Site, needed_by: InventoryObject) -> Site:
        found = self.sites.get(site.name)
        if found is None:
            raise UnknownReferenceError("no such site in the inventory", kind="Site", name=site.name,
                                        needed_by=repr(needed_by))
        return found

    def _group(self, group: Group, needed_by: InventoryObject) -> Group:
        found = self.groups.get(group.name)
        if found is None:
            raise UnknownReferenceError("no such group in the inventory", kind="Group", name=group.name,
                                        needed_by=repr(needed_by))
        return found

    def _partition(self, partition: Partition, needed_by: InventoryObject) -> Partition:
        found = self.partitions.get(partition.name)
        if found is None:
            raise UnknownReferenceError("no such partition in the inventory", kind="Partition",
                                        name=partition.name, needed_by=repr(needed_by))
        return found

    def find(self, obj: InventoryObject) -> InventoryObject | None:
        """The inventory's object with ``obj``'s identifier, or None."""
        with self.lock:
            try:
                return self._find(obj)
            except UnknownReferenceError:
                return None

    def _find(self, obj: InventoryObject) -> InventoryObject | None:
        if isinstance(obj, Dataset):
            return self.datasets.get(obj.name)
        if isinstance(obj, Block):
            return self._dataset(obj.dataset, obj).blocks.get(obj.name)
        if isinstance(obj, File):
            return self._find_file(self._block(obj.block, obj), obj.lfn)
        if isinstance(obj, Site):
            return self.sites.get(obj.name)
        if isinstance(obj, Group):
            return self.groups.get(obj.name)
        if isinstance(obj, Partition):
            return self.partitions.get(obj.name)
        if isinstance(obj, SitePartition):
            return self._site(obj.site, obj).partitions.get(obj.partition.name)
        if isinstance(obj, DatasetReplica):
            return self._dataset(obj.dataset, obj).replicas.get(obj.site.name)
        if isinstance(obj, BlockReplica):
            return self._block(obj.block, obj).replicas.get(obj.site.name)
        raise DataFormatError("not an inventory object", kind=type(obj).__name__, field=None, value=repr(obj))

    # -- update ----------------------------------------------------------------------------------
    def update(self, obj: InventoryObject) -> InventoryObject:
        """Copy ``obj`` into the inventory; return the inventory's object (also when nothing changed).

        Referenced objects (a block's dataset, a replica's site and group...) must already be in
        the inventory: ``UnknownReferenceError`` otherwise, and nothing changes. Whether anything
        changed is told to the sinks and listeners (no change, no event), not by the return value.
        """
        return self._update(obj)[0]

    def _update(self, obj: InventoryObject) -> tuple[InventoryObject, bool]:
        """(the inventory's object, whether this call changed anything)."""
        with self.lock:
            handler = self._UPDATERS.get(type(obj))
            if handler is None:
                raise DataFormatError("not an inventory object", kind=type(obj).__name__, field=None,
                                      value=repr(obj))
            result = handler(self, obj)
            if result is None:
                unchanged = self._find(obj)
                assert unchanged is not None  # an updater reports "no change" only for an existing object
                return unchanged, False
            linked, writes = result
            self._applied("update", linked, writes)
            return linked, True

    def _update_plain(self, obj: InventoryObject, table: dict[Any, Any], make: Callable[[], InventoryObject]
                      ) -> tuple[InventoryObject, list[Write]] | None:
        existing = table.get(obj.key()[0])
        if existing is None:
            existing = make()
            table[obj.key()[0]] = existing
            return existing, [("add", existing)]
        if not existing.copy_from(obj):
            return None
        return existing, [("put", existing)]

    def _update_dataset(self, obj: Dataset) -> tuple[InventoryObject, list[Write]] | None:
        return self._update_plain(obj, self.datasets, lambda: Dataset(
            obj.name, obj.status, obj.data_type, obj.software_version, obj.last_update, obj.is_open))

    def _update_site(self, obj: Site) -> tuple[InventoryObject, list[Write]] | None:
        return self._update_plain(obj, self.sites, lambda: Site(
            obj.name, obj.host, obj.storage_type, obj.backend, obj.status, obj.filename_mapping))

    def _update_group(self, obj: Group) -> tuple[InventoryObject, list[Write]] | None:
        if obj.name is None:
            return None  # the null group always exists and has nothing to change
        return self._update_plain(obj, self.groups, lambda: Group(obj.name, obj.olevel))

    def _update_partition(self, obj: Partition) -> tuple[InventoryObject, list[Write]] | None:
        for name in obj.subpartitions:
            if name not in self.partitions and name != obj.name:
                raise UnknownReferenceError("no such subpartition in the inventory", kind="Partition", name=name,
                                            needed_by=repr(obj))

        def make() -> Partition:
            partition = Partition(obj.name, obj.condition, obj.subpartitions)
            partition._inventory_partitions = self.partitions
            return partition
        return self._update_plain(obj, self.partitions, make)

    def _update_block(self, obj: Block) -> tuple[InventoryObject, list[Write]] | None:
        dataset = self._dataset(obj.dataset, obj)
        existing = dataset.blocks.get(obj.name)
        if existing is None:
            existing = Block(obj.name, dataset, obj.size, obj.num_files, obj.is_open, obj.last_update)
            dataset.blocks[obj.name] = existing
            return existing, [("add", existing)]
        existing.files  # noqa: B018 - a lazily loaded block reads its files before its totals change
        if not existing.copy_from(obj):
            return None
        return existing, [("put", existing)]

    _INDEXED_BLOCKS = 32
    _INDEX_FROM_FILES = 16

    def _find_file(self, block: Block, lfn: str) -> File | None:
        files = block.files
        if len(files) < self._INDEX_FROM_FILES:
            return block.find_file(lfn)
        index = self._file_index.get(block)
        if index is None or len(index) != len(files):
            index = {file.lfn: file for file in files}
            if len(self._file_index) >= self._INDEXED_BLOCKS:
                self._file_index.pop(next(iter(self._file_index)))
            self._file_index[block] = index
        return index.get(lfn)

    def _update_file(self, obj: File) -> tuple[InventoryObject, list[Write]] | None:
        block = self._block(obj.block, obj)
        lfn = obj.lfn
        existing = self._find_file(block, lfn)
        if existing is None:
            existing = File(lfn, block)
            existing._packed = obj._packed
            block.files.append(existing)
            index = self._file_index.get(block)
            if index is not None:
                index[lfn] = existing
            # A block's size and num_files are what its Block update declares (as in Dynamo): adding,
            # changing or deleting a file leaves them alone, so a Block(size=10, num_files=1) and its
            # 10-byte file stay 10 / 1. ``Store.check`` reports blocks whose files disagree.
            return existing, [("add", existing)]
        if not existing.copy_from(obj):
            return None
        return existing, [("put", existing)]

    def _update_site_partition(self, obj: SitePartition) -> tuple[InventoryObject, list[Write]] | None:
        site = self._site(obj.site, obj)
        partition = self._partition(obj.partition, obj)
        existing = site.partitions.get(partition.name)
        if existing is None:
            existing = SitePartition(site, partition, obj.quota)
            site.partitions[partition.name] = existing
            return existing, [("add", existing)]
        if not existing.copy_from(obj):
            return None
        return existing, [("put", existing)]

    def _update_dataset_replica(self, obj: DatasetReplica) -> tuple[InventoryObject, list[Write]] | None:
        dataset = self._dataset(obj.dataset, obj)
        site = self._site(obj.site, obj)
        group = self._group(obj.group, obj)
        existing = dataset.replicas.get(site.name)
        if existing is None:
            existing = DatasetReplica(dataset, site, obj.growing, group)
            dataset.replicas[site.name] = existing
            site.dataset_replicas[dataset.name] = existing
            return existing, [("add", existing)]
        if existing.growing == obj.growing and existing.group is group:
            return None
        existing.growing, existing.group = obj.growing, group
        return existing, [("put", existing)]

    def _update_block_replica(self, obj: BlockReplica) -> tuple[InventoryObject, list[Write]] | None:
        block = self._block(obj.block, obj)
        site = self._site(obj.site, obj)
        group = self._group(obj.group, obj)
        if site.name not in block.dataset.replicas:
            raise UnknownReferenceError("a block replica needs the dataset replica at its site first",
                                        kind="DatasetReplica", name=f"{block.dataset.name}@{site.name}",
                                        needed_by=repr(obj))
        existing = block.replicas.get(site.name)
        if existing is None:
            existing = BlockReplica(block, site, group, obj.is_custodial, obj.size, obj.last_update)
            block.replicas[site.name] = existing
            site.block_replicas.add(existing)
            return existing, [("add", existing)]
        if (existing.group is group and existing.is_custodial == obj.is_custodial
              and existing.size == obj.size and existing.last_update == obj.last_update):
            return None
        existing.group, existing.is_custodial = group, obj.is_custodial
        existing.size, existing.last_update = obj.size, obj.last_update
        return existing, [("put", existing)]

    _UPDATERS: dict[type, Callable[..., Any]] = {
        Dataset: _update_dataset, Block: _update_block, File: _update_file, Site: _update_site,
        Group: _update_group, Partition: _update_partition, SitePartition: _update_site_partition,
        DatasetReplica: _update_dataset_replica, BlockReplica: _update_block_replica,
    }

    # -- delete ----------------------------------------------------------------------------------
    def delete(self, obj: InventoryObject) -> InventoryObject | None:
        """Remove the object with ``obj``'s identifier and what depends on it; return it, or None.

        Cascades: a dataset takes its blocks, files and replicas; a block its files and replicas;
        a site its replicas and site partitions; a partition its site partitions; a dataset replica
        its block replicas; a group's replicas move to the null group.
        """
        if isinstance(obj, Group) and obj.name is None:
            raise InventoryError("the null group cannot be deleted", kind="Group", name=None)
        with self.lock:
            try:
                existing = self._find(obj)
            except UnknownReferenceError:
                return None
            if existing is None:
                return None
            self._DELETERS[type(existing)](self, existing)
            writes: list[Write] = [("drop", existing)]
            self._applied("delete", existing, writes)
            return existing

    @staticmethod
    def _unlink_block_replica(replica: BlockReplica) -> None:
        replica.block.replicas.pop(replica.site.name, None)
        replica.site.block_replicas.discard(replica)

    def _delete_block(self, block: Block) -> None:
        self._file_index.pop(block, None)
        for replica in list(block.replicas.values()):
            self._unlink_block_replica(replica)
        block.dataset.blocks.pop(block.name, None)

    def _delete_dataset(self, dataset: Dataset) -> None:
        for block in list(dataset.blocks.values()):
            self._delete_block(block)
        for replica in list(dataset.replicas.values()):
            replica.site.dataset_replicas.pop(dataset.name, None)
        dataset.replicas.clear()
        del self.datasets[dataset.name]

    def _delete_file(self, file: File) -> None:
        block = file.block
        block.files.remove(file)
        index = self._file_index.get(block)
        if index is not None:
            index.pop(file.lfn, None)

    def _delete_site(self, site: Site) -> None:
        for replica in list(site.block_replicas):
            self._unlink_block_replica(replica)
        for replica in list(site.dataset_replicas.values()):
            replica.dataset.replicas.pop(site.name, None)
        site.dataset_replicas.clear()
        site.partitions.clear()
        del self.sites[site.name]

    def _delete_group(self, group: Group) -> None:
        null = self.groups[None]
        for site in self.sites.values():
            for replica in site.block_replicas:
                if replica.group is group:
                    replica.group = null
            for dataset_replica in site.dataset_replicas.values():
                if dataset_replica.group is group:
                    dataset_replica.group = null
        del self.groups[group.name]

    def _delete_partition(self, partition: Partition) -> None:
        for site in self.sites.values():
            site.partitions.pop(partition.name, None)
        del self.partitions[partition.name]

    def _delete_site_partition(self, site_partition: SitePartition) -> None:
        site_partition.site.partitions.pop(site_partition.partition.name, None)

    def _delete_dataset_replica(self, replica: DatasetReplica) -> None:
        for block in replica.dataset.blocks.values():
            block_replica = block.replicas.get(replica.site.name)
            if block_replica is not None:
                self._unlink_block_replica(block_replica)
        replica.dataset.replicas.pop(replica.site.name, None)
        replica.site.dataset_replicas.pop(replica.dataset.name, None)

    def _delete_block_replica(self, replica: BlockReplica) -> None:
        self._unlink_block_replica(replica)

    _DELETERS: dict[type, Callable[..., None]] = {
        Dataset: _delete_dataset, Block: _delete_block, File: _delete_file, Site: _delete_site,
        Group: _delete_group, Partition: _delete_partition, SitePartition: _delete_site_partition,
        DatasetReplica: _delete_dataset_replica, BlockReplica: _delete_block_replica,
    }

    # -- changes as data -------------------------------------------------------------------------
    def apply(self, change: Change) -> InventoryObject | None:
        """Apply a change given as data (from an application or the change log).

        Returns what ``update`` / ``delete`` return: the inventory's object, or None for a delete
        that found nothing.
        """
        return self._apply(change)[0]

    def _apply(self, change: Change) -> tuple[InventoryObject | None, bool]:
        obj = change.object()
        if change.op == "update":
            return self._update(obj)
        removed = self.delete(obj)
        return removed, removed is not None

    def apply_all(self, changes: Iterable[Change]) -> int:
        """Apply changes in order; returns how many changed something. Stops at the first error."""
        applied = 0
        with self.lock:
            for change in changes:
                if self._apply(change)[1]:
                    applied += 1
        return applied

    # -- whole-image views ------------------------------------------------------------------------
    def objects(self) -> Iterator[InventoryObject]:
        """Every object, in a deterministic order (kinds in dependency order, then identifiers)."""
        for name in sorted(self.groups, key=lambda n: (n is not None, n or "")):
            if name is not None:
                yield self.groups[name]
        for name in sorted(self.partitions):
            yield self.partitions[name]
        for name in sorted(self.sites):
            site = self.sites[name]
            yield site
            yield from sorted(site.partitions.values(), key=lambda sp: sp.partition.name)
        for name in sorted(self.datasets):
            dataset = self.datasets[name]
            yield dataset
            for block_name in sorted(dataset.blocks):
                block = dataset.blocks[block_name]
                yield block
                yield from sorted(block.files, key=lambda f: f.lfn)
            for site_name in sorted(dataset.replicas):
                yield dataset.replicas[site_name]
                for block_name in sorted(dataset.blocks):
                    replica = dataset.blocks[block_name].replicas.get(site_name)
                    if replica is not None:
                        yield replica

    def checksum(self) -> str:
        """SHA-256 of the whole image in a canonical form: equal images give equal checksums."""
        digest = hashlib.sha256()
        with self.lock:
            for obj in self.objects():
                digest.update(json.dumps(obj.to_dict(), sort_keys=True, separators=(",", ":")).encode())
                digest.update(b"\n")
        return digest.hexdigest()

    def summary(self) -> dict[str, int]:
        """Counts of every kind of object and the total bytes of block replicas."""
        with self.lock:
            blocks = sum(len(d.blocks) for d in self.datasets.values())
            files = sum(b.num_files for d in self.datasets.values() for b in d.blocks.values())
            return {
                "datasets": len(self.datasets), "blocks": blocks, "files": files, "sites": len(self.sites),
                "groups": len(self.groups) - 1, "partitions": len(self.partitions),
                "dataset_replicas": sum(len(d.replicas) for d in self.datasets.values()),
                "block_replicas": sum(len(s.block_replicas) for s in self.sites.values()),
                "replica_bytes": sum(s.usage() for s in self.sites.values()),
            }

    def replace_with(self, other: Inventory) -> None:
        """Take over ``other``'s objects (a reload), keeping this object, its lock, sinks and listeners."""
        with self.lock:
            self._file_index.clear()
            self.datasets, self.sites = other.datasets, other.sites
            self.groups, self.partitions = other.groups, other.partitions
            for partition in self.partitions.values():
                partition._inventory_partitions = self.partitions

    def __repr__(self) -> str:
        return f"<Inventory {self.name}: {len(self.datasets)} datasets, {len(self.sites)} sites>"


__all__ = ["Change", "Inventory", "UnknownReferenceError", "Write"]
