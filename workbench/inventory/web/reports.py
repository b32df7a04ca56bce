"""Reports on the RAM image as JSON-able dicts: what the web pages and the notebook magics show.

Each function reads the image as it is (callers hold ``inventory.lock`` when they need one
consistent view) and returns plain values, so ``/data`` can send them and a notebook can make a
DataFrame of them::

    from workbench.inventory.web.reports import inventory_stats, site_summary
    inventory_stats(inventory)["replication_factor"]
    [site_summary(site)["usage"] for site in inventory.sites.values()]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from workbench.inventory.dataformat import Block, Dataset, DatasetReplica, Site


def human_size(size: int | float) -> str:
    """Bytes as a short decimal figure: ``1.5 GB``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} PB"  # pragma: no cover - the loop always returns


def values_of(mapping: Any) -> list[Any]:
    # A snapshot: the image may change on another thread while a page is built.
    return list(mapping.values()) if hasattr(mapping, "values") else list(mapping)


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """The JSON form of a dataset in lists: attributes, totals, and the sites holding it."""
    blocks = values_of(dataset.blocks)
    return {**dataset.to_dict(), "size": sum(block.size for block in blocks),
            "num_blocks": len(blocks), "num_files": sum(block.num_files for block in blocks),
            "sites": sorted(dataset.replicas)}


def dataset_detail(dataset: Dataset) -> dict[str, Any]:
    """One dataset with its blocks and replicas."""
    replicas = []
    for replica in values_of(dataset.replicas):
        block_replicas = replica.block_replicas
        replicas.append({**replica.to_dict(), "size": sum(r.size for r in block_replicas),
                         "num_blocks": len(block_replicas), "complete": replica.is_complete()})
    blocks = [{**block.to_dict(), "sites": sorted(block.replicas)}
              for block in sorted(values_of(dataset.blocks), key=lambda b: b.name)]
    return {**dataset_summary(dataset), "blocks": blocks,
            "replicas": sorted(replicas, key=lambda r: r["site"])}


def site_summary(site: Site) -> dict[str, Any]:
    """A site's attributes with its usage, replica counts and partitions (quota and occupancy)."""
    partitions = []
    for site_partition in values_of(site.partitions):
        partitions.append({"partition": site_partition.partition.name, "quota": site_partition.quota,
                           "occupancy": site_partition.occupancy()})
    block_replicas = list(site.block_replicas)
    used = sum(replica.size for replica in block_replicas)
    quotas = [p["quota"] for p in partitions if p["quota"] is not None]
    return {**site.to_dict(), "usage": used, "num_dataset_replicas": len(site.dataset_replicas),
            "num_block_replicas": len(block_replicas), "quota": sum(quotas) if quotas else None,
            "partitions": sorted(partitions, key=lambda p: p["partition"])}


def site_detail(site: Site) -> dict[str, Any]:
    """A site with its dataset replicas."""
    replicas = []
    for replica in values_of(site.dataset_replicas):
        block_replicas = replica.block_replicas
        replicas.append({**replica.to_dict(), "size": sum(r.size for r in block_replicas),
                         "num_blocks": len(block_replicas), "complete": replica.is_complete()})
    return {**site_summary(site), "dataset_replicas": sorted(replicas, key=lambda r: r["dataset"])}


def all_block_replicas(inventory: Any) -> Iterable[Any]:
    for site in values_of(inventory.sites):
        yield from list(site.block_replicas)


def group_summaries(inventory: Any) -> list[dict[str, Any]]:
    """Every group with the number and bytes of block replicas it owns (the null group as None)."""
    counts: Counter[str | None] = Counter()
    sizes: Counter[str | None] = Counter()
    for replica in all_block_replicas(inventory):
        counts[replica.group.name] += 1
        sizes[replica.group.name] += replica.size
    groups = [{**group.to_dict(), "num_block_replicas": counts[group.name], "size": sizes[group.name]}
              for group in values_of(inventory.groups)]
    if counts[None] and not any(g["name"] is None for g in groups):
        groups.append({"kind": "Group", "name": None, "olevel": "block", "num_block_replicas": counts[None],
                       "size": sizes[None]})
    return sorted(groups, key=lambda g: (g["name"] is None, g["name"] or ""))


def dataset_replica_row(replica: DatasetReplica) -> dict[str, Any]:
    block_replicas = replica.block_replicas
    return {**replica.to_dict(), "size": sum(r.size for r in block_replicas), "num_blocks": len(block_replicas),
            "complete": replica.is_complete()}


def inventory_stats(inventory: Any) -> dict[str, Any]:
    """Totals, datasets per status, the replication histogram and usage per site."""
    datasets = values_of(inventory.datasets)
    blocks: list[Block] = [block for dataset in datasets for block in values_of(dataset.blocks)]
    unique = sum(block.size for block in blocks)
    sites = [site_summary(site) for site in values_of(inventory.sites)]
    stored = sum(site["usage"] for site in sites)
    replication = Counter(len(dataset.replicas) for dataset in datasets)
    return {
        "datasets": len(datasets), "blocks": len(blocks), "files": sum(block.num_files for block in blocks),
        "sites": len(sites), "groups": sum(1 for name in inventory.groups if name is not None),
        "size": unique, "stored": stored,
        "replication_factor": (stored / unique) if unique else 0.0,
        "datasets_by_status": dict(sorted(Counter(d.status.value for d in datasets).items())),
        "datasets_by_replicas": {str(n): replication[n] for n in sorted(replication)},
        "site_usage": [{"site": s["name"], "usage": s["usage"], "quota": s["quota"],
                        "fraction": (s["usage"] / s["quota"]) if s["quota"] else None}
                       for s in sorted(sites, key=lambda s: s["name"])],
    }

__all__ = ["dataset_detail", "dataset_summary", "group_summaries", "human_size", "inventory_stats", "site_detail",
           "site_summary"]
