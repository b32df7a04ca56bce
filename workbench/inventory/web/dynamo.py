"""The answers of Dynamo's data API (``/data/inventory/...`` of SmartDataProjects/dynamo), built from the RAM image.

Each function takes the request's parameters and the image and returns what Dynamo's module of
that name returns, field for field::

    datasets       ?dataset=NAME|GLOB                 [{name, size, num_files, status, type}]
    sites          ?site=...&partition=...            [{name, host, storage_type, status, partitions: [...],
                                                         total_quota, total_usage, total_projected_usage}]
    groups         ?group=NAME|GLOB                   [{name}]   ("(no group)" for the null group)
    blockreplicas  ?dataset=...|block=DS#BLOCK&node=...&group=...&complete=y|n&update_since=T&create_since=T
                                                      {"block": [{name, files, bytes, is_open, id, replica: [...]}]}
    nodes          ?node=NAME|GLOB                    {"node": [{name, kind, se, technology, id}]}
    data           ?block=DATASET#BLOCK               {"dbs": [{"dataset": [{..., "block": [{..., "file": [...]}]}]}]}

Units are Dynamo's: sizes in bytes, except the quotas and usages of ``sites`` in TB (10^12
bytes); booleans of ``blockreplicas`` are ``"y"``/``"n"``. Filters are Dynamo's: a value with ``*``
is a shell-style pattern, any other value an exact name; several values come comma separated or
as a repeated parameter (``site=A,B`` or ``site=A&site=B``; Dynamo's ``site[]=A`` too). Without
a ``dataset`` (or ``block``) parameter ``datasets`` and ``blockreplicas`` answer an empty list,
as Dynamo's do.

Where this inventory has no counterpart of a Dynamo field the answer says so plainly: objects
have no numeric ids (``id``, ``node_id`` are 0, Dynamo's id of an object never stored) and no
storage technology (``technology`` is ""); a site partition never set has quota 0 (Dynamo's
"no quota") and a partition with an unlimited quota answers 0 too; an incomplete block replica's
``files`` is null (a replica records its bytes, not its files).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

from workbench.inventory.dataformat import Block, BlockReplica, Dataset, Partition, Site, SitePartition
from workbench.inventory.web.errors import BadRequest
from workbench.inventory.web.modules._base import Request, texts

#: Dynamo's sites answer quotas and usages in TB
TERABYTE = 1e12

Matcher = Callable[[str], bool]


def names_matcher(request: Request, name: str) -> Matcher | None:
    """Dynamo's name filter of parameter ``name``: None when absent, else a test of a name.

    A value with ``*`` is a shell-style pattern (as Dynamo: ``?`` and ``[...]`` count only then),
    any other value an exact name.
    """
    values = texts(request, name)
    if not values and request.get(name) is None:
        return None
    exact = {value for value in values if "*" not in value}
    patterns = [re.compile(fnmatch.translate(value)) for value in values if "*" in value]
    return lambda candidate: candidate in exact or any(p.match(candidate) for p in patterns)


def _selected(table: Any, matcher: Matcher | None) -> list[Any]:
    """The values of ``table`` (name -> object) whose name passes ``matcher``, by name."""
    return [table[key] for key in sorted(k for k in list(table) if k is not None)
            if matcher is None or matcher(key)]


# -- datasets, sites, groups ------------------------------------------------------------------------

def datasets(request: Request, inventory: Any) -> list[dict[str, Any]]:
    """Dynamo's ``datasets``: one entry per dataset ``dataset`` names (none without it)."""
    matcher = names_matcher(request, "dataset")
    if matcher is None:
        return []
    return [{"name": dataset.name, "size": dataset.size, "num_files": dataset.num_files,
             "status": Dataset.status_name(dataset.status), "type": Dataset.data_type_name(dataset.data_type)}
            for dataset in _selected(inventory.datasets, matcher)]


def _partition_usage(site: Site, partition: Partition) -> tuple[float, float, float]:
    """(quota, used, projected) in bytes; projected counts incomplete block replicas at their block's size."""
    site_partition = site.partitions.get(partition) or SitePartition(site, partition, 0)
    replicas = list(site_partition.replicas())
    return (float(site_partition.quota or 0), float(sum(r.size for r in replicas)),
            float(sum(r.block.size for r in replicas)))


def sites(request: Request, inventory: Any) -> list[dict[str, Any]]:
    """Dynamo's ``sites``: sites and their partitions (``site`` and ``partition`` filter), quotas in TB."""
    shown_partitions = _selected(inventory.partitions, names_matcher(request, "partition"))
    every_partition = _selected(inventory.partitions, None)
    answer = []
    for site in _selected(inventory.sites, names_matcher(request, "site")):
        entry: dict[str, Any] = {"name": site.name, "host": site.host,
                                 "storage_type": Site.storage_type_name(site.storage_type),
                                 "status": Site.status_name(site.status), "partitions": []}
        totals = [0.0, 0.0, 0.0]
        for partition in every_partition:
            quota, used, projected = _partition_usage(site, partition)
            kind = "composite" if partition.subpartitions else "basic"
            # Dynamo's totals add the basic partitions that have a quota, shown or not
            if kind == "basic" and quota > 0:
                totals = [totals[0] + quota, totals[1] + used, totals[2] + projected]
            if partition in shown_partitions:
                entry["partitions"].append({"name": partition.name, "type": kind, "quota": quota / TERABYTE,
                                            "usage": used / TERABYTE, "projected_usage": projected / TERABYTE})
        entry.update(total_quota=totals[0] / TERABYTE, total_usage=totals[1] / TERABYTE,
                     total_projected_usage=totals[2] / TERABYTE)
        answer.append(entry)
    return answer


def groups(request: Request, inventory: Any) -> list[dict[str, Any]]:
    """Dynamo's ``groups``: names; the null group is ``(no group)`` when every group is listed."""
    matcher = names_matcher(request, "group")
    answer = [{"name": group.name} for group in _selected(inventory.groups, matcher)]
    if matcher is None and None in inventory.groups:
        answer.insert(0, {"name": "(no group)"})  # Dynamo sorts None first
    return answer


def nodes(request: Request, inventory: Any) -> dict[str, Any]:
    """Dynamo's ``nodes`` (PhEDEx's shape): every site ``node`` names, all without it."""
    return {"node": [{"kind": Site.storage_type_name(site.storage_type), "se": site.host, "technology": "",
                      "name": site.name, "id": 0}
                     for site in _selected(inventory.sites, names_matcher(request, "node"))]}


# -- block replicas -----------------------------------------------------------------------------------

def _yn(value: bool) -> str:
    return "y" if value else "n"


def _since(request: Request, name: str) -> int | None:
    values = texts(request, name)
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be a UNIX time (an integer)", parameter=name,
                         value=values[-1]) from None


def _replica_filter(request: Request) -> Callable[[BlockReplica], bool]:
    node = names_matcher(request, "node")
    group = names_matcher(request, "group")
    complete = texts(request, "complete")
    if complete and complete[-1] not in ("y", "n"):
        raise BadRequest("parameter 'complete' must be y or n", parameter="complete", value=complete[-1])
    # Dynamo compares both to the replica's last update (it records no creation time)
    since = [value for value in (_since(request, "update_since"), _since(request, "create_since")) if value is not None]

    def keep(replica: BlockReplica) -> bool:
        if node is not None and not node(replica.site.name):
            return False
        if complete and (complete[-1] == "y") != replica.is_complete():
            return False
        if group is not None and not group(replica.group.name if replica.group.name is not None else ""):
            return False
        return all(replica.last_update >= value for value in since)

    return keep


def _blocks(request: Request, inventory: Any) -> Iterable[Block] | None:
    """The blocks ``block`` (``DATASET#BLOCK``, either part a pattern) or ``dataset`` names; None: neither given."""
    wanted = texts(request, "block")
    if wanted:
        chosen: dict[int, Block] = {}  # by identity, in the order found: a block named twice is listed once
        for value in wanted:
            dataset_name, sep, block_name = value.partition("#")
            if not sep:
                raise BadRequest("parameter 'block' is DATASET#BLOCK", parameter="block", value=value)
            in_block = names_matcher({"block": block_name}, "block")
            for dataset in _selected(inventory.datasets, names_matcher({"dataset": dataset_name}, "dataset")):
                chosen.update((id(block), block) for block in _selected(dataset.blocks, in_block))
        return list(chosen.values())
    matcher = names_matcher(request, "dataset")
    if matcher is None:
        return None
    return [block for dataset in _selected(inventory.datasets, matcher) for block in _selected(dataset.blocks, None)]


def blockreplicas(request: Request, inventory: Any) -> Any:
    """Dynamo's ``blockreplicas``: ``{"block": [...]}``, the blocks with a replica that passes the filters."""
    blocks = _blocks(request, inventory)
    if blocks is None:
        return []  # Dynamo answers a bare list when neither dataset nor block is given
    keep = _replica_filter(request)
    answer = []
    for block in blocks:
        replicas = [replica for _, replica in sorted(block.replicas.items()) if keep(replica)]
        if not replicas:
            continue
        answer.append({"name": block.full_name(), "files": block.num_files, "bytes": block.size,
                       "is_open": _yn(block.is_open), "id": 0, "replica": [_replica(r) for r in replicas]})
    return {"block": answer}


def _replica(replica: BlockReplica) -> dict[str, Any]:
    complete = replica.is_complete()
    return {"bytes": replica.size, "node": replica.site.name,
            # a replica records bytes, not files: a complete one holds every file of its block
            "files": replica.block.num_files if complete else None,
            "node_id": 0, "se": replica.site.host, "complete": _yn(complete),
            "time_create": replica.last_update, "time_update": replica.last_update,
            "group": replica.group.name, "custodial": _yn(replica.is_custodial),
            "subscribed": _yn(replica.group.name is not None)}


def data(request: Request, inventory: Any) -> dict[str, Any]:
    """Dynamo's ``data`` (DBS's shape): the files of the block ``block=DATASET#BLOCK`` names, per replica.

    A complete replica lists every file of the block at its node; an incomplete one lists none
    (this inventory records a replica's bytes, not which files it holds). Checksums are
    ``adler32:HEX`` (Dynamo's own spelling there is a typo, ``alde32``, next to a ``cksum`` this
    inventory does not keep).
    """
    wanted = texts(request, "block")
    if not wanted:
        return {"dbs": []}
    dataset_name, sep, block_name = wanted[-1].partition("#")
    dataset = inventory.datasets.get(dataset_name) if sep else None
    block = dataset.blocks.get(block_name) if dataset is not None else None
    if block is None:
        return {"dbs": []}
    files = [{"checksum": f"adler32:{file.adler32}" if file.adler32 else "", "node": replica.site.name,
              "lfn": file.lfn, "time_create": replica.last_update, "size": file.size}
             for _, replica in sorted(block.replicas.items()) if replica.is_complete()
             for file in sorted(block.files, key=lambda f: f.lfn)]
    entry = {"time_update": block.last_update, "bytes": block.size, "files": block.num_files,
             "name": block.full_name(), "is_open": _yn(block.is_open), "time_create": block.last_update,
             "file": files}
    return {"dbs": [{"dataset": [{"time_update": None, "is_transient": "n", "is_open": _yn(dataset.is_open),
                                  "name": dataset.name, "block": [entry]}]}]}


#: page name -> its answer, for the module that serves them
ANSWERS: dict[str, Callable[[Request, Any], Any]] = {
    "datasets": datasets, "sites": sites, "groups": groups, "blockreplicas": blockreplicas, "nodes": nodes,
    "data": data,
}

__all__ = ["ANSWERS", "TERABYTE", "blockreplicas", "data", "datasets", "groups", "names_matcher", "nodes", "sites"]
