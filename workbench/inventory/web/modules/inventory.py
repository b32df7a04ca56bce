"""The built-in web module ``inventory``: what the inventory holds, as pages and as JSON.

``/data/inventory/{datasets,sites,groups,blockreplicas,nodes,data}`` answer what Dynamo's data API
answers (its fields, units and filters: see ``web/dynamo.py``). With ``format=workbench`` they
answer this project's richer forms below, which the pages under ``/web`` show.

Reads (``/web/inventory/<page>`` and ``/data/inventory/<page>``; ``format=workbench`` for the
first three under ``/data``)::

    datasets   ?dataset=GLOB&status=S&site=SITE&limit=N&offset=N   datasets with sizes and replica sites
    dataset    ?name=NAME                                          one dataset: blocks and replicas
    sites      ?site=GLOB                                          sites with usage and partitions
    site       ?name=NAME                                          one site: partitions and dataset replicas
    groups                                                         groups with what they own
    replicas   ?dataset=GLOB&site=GLOB&group=NAME&level=dataset|block
    stats                                                          totals, replication, usage per site
    blockreplicas, nodes, data                                     Dynamo's only (``/data``)

Writes (``/data`` only, POST, a certificate with the ``write`` role)::

    inject     {"objects": [{"kind": "Dataset", "name": ...}, ...]}   update each object, in order
    delete     {"objects": [{"kind": "Dataset", "name": ...}, ...]}   delete each by its identifier
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote

from workbench.inventory.dataformat import Dataset, DatasetStatus, Site, from_dict
from workbench.inventory.web import dynamo
from workbench.inventory.web.auth import User
from workbench.inventory.web.errors import BadRequest, NotFound
from workbench.inventory.web.modules._base import (HTMLMixin, Request, WebModule, choice, integer, pattern, text,
                                                   texts)
from workbench.inventory.web.page import Markup
from workbench.inventory.web.reports import (dataset_detail, dataset_replica_row, dataset_summary, group_summaries,
                                             human_size, inventory_stats, site_detail, site_summary, values_of)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
MAX_OBJECTS = 1_000_000


def _site_link(layout: HTMLMixin, name: str) -> Markup:
    return layout.html_link(f"/web/inventory/site?name={quote(name, safe='')}", name)


def _dataset_link(layout: HTMLMixin, name: str) -> Markup:
    return layout.html_link(f"/web/inventory/dataset?name={quote(name, safe='')}", name)


#: ``format=``: Dynamo's answers (the default) or this project's
FORMATS = ("dynamo", "workbench")


def dynamo_format(request: Request) -> bool:
    """True unless the request asks for ``format=workbench``."""
    return choice(request, "format", FORMATS, "dynamo") == "dynamo"


class _DynamoAnswer(WebModule):
    """A page of Dynamo's data API; with ``format=workbench``, ``workbench_answer`` instead (when there is one)."""

    page = ""

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        if dynamo_format(request) or not hasattr(self, "workbench_answer"):
            return dynamo.ANSWERS[self.page](request, inventory)
        return self.workbench_answer(request, inventory)


def _page(request: Request, rows: list[Any]) -> tuple[list[Any], int]:
    limit = integer(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = integer(request, "offset", 0, 0)
    return rows[offset:offset + limit], len(rows)


# -- datasets -------------------------------------------------------------------------------------


class _DatasetQuery:
    def select(self, request: Request, inventory: Any) -> list[Dataset]:
        name = pattern(request, "dataset")
        statuses = texts(request, "status")
        known = [s.value for s in DatasetStatus]
        for status in statuses:
            if status not in known:
                raise BadRequest(f"parameter 'status' must be among {', '.join(known)}", parameter="status",
                                 value=status)
        site = text(request, "site", None)
        selected = []
        for dataset in values_of(inventory.datasets):
            if name is not None and not name.match(dataset.name):
                continue
            if statuses and dataset.status.value not in statuses:
                continue
            if site is not None and site not in dataset.replicas:
                continue
            selected.append(dataset)
        selected.sort(key=lambda d: d.name)
        return selected


class DatasetsData(_DatasetQuery, _DynamoAnswer):
    """``/data/inventory/datasets``: Dynamo's list; ``format=workbench``: the matching datasets (``limit``/``offset``)."""

    page = "datasets"

    def workbench_answer(self, request: Request, inventory: Any) -> Any:
        rows, total = _page(request, self.select(request, inventory))
        return {"total": total, "datasets": [dataset_summary(d) for d in rows]}


class DatasetsPage(_DatasetQuery, HTMLMixin, WebModule):
    """``/web/inventory/datasets``: a table of the matching datasets."""

    nav_label = "Datasets"

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        rows, total = _page(request, self.select(request, inventory))
        table = self.html_table(
            ["dataset", "status", "type", "blocks", "files", "size", "sites"],
            ([_dataset_link(self, s["name"]), s["status"], s["data_type"], s["num_blocks"], s["num_files"],
              human_size(s["size"]), ", ".join(s["sites"])] for s in map(dataset_summary, rows)),
            empty="no dataset matches")
        return self.html_page("Datasets", "<p>{{ shown }} of {{ total }} datasets</p>{{ table }}", caller,
                              shown=len(rows), total=total, table=table)


def _find(request: Request, table: Any, what: str) -> Any:
    """The object named by the ``name`` parameter in ``table`` (404 when there is none)."""
    name = text(request, "name")
    found = table.get(name)
    if found is None:
        raise NotFound(f"no {what} named {name!r}", **{what: name})
    return found


def _find_dataset(request: Request, inventory: Any) -> Dataset:
    return _find(request, inventory.datasets, "dataset")


class DatasetData(WebModule):
    """``/data/inventory/dataset?name=NAME``."""

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        return dataset_detail(_find_dataset(request, inventory))


class DatasetPage(HTMLMixin, WebModule):
    """``/web/inventory/dataset?name=NAME``: attributes, blocks and replicas of one dataset."""

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        detail = dataset_detail(_find_dataset(request, inventory))
        attributes = self.html_table(["attribute", "value"], [
            ("status", detail["status"]), ("data type", detail["data_type"]),
            ("software version", detail["software_version"] or ""), ("open", "yes" if detail["is_open"] else "no"),
            ("size", human_size(detail["size"])), ("blocks", detail["num_blocks"]),
            ("files", detail["num_files"])])
        replicas = self.html_table(
            ["site", "group", "blocks", "size", "complete"],
            ([_site_link(self, r["site"]), r["group"] or "(none)", r["num_blocks"], human_size(r["size"]),
              "yes" if r["complete"] else "no"] for r in detail["replicas"]),
            empty="no replicas")
        blocks = self.html_table(
            ["block", "files", "size", "open", "sites"],
            ([b["name"], b["num_files"], human_size(b["size"]), "yes" if b["is_open"] else "no", ", ".join(b["sites"])]
             for b in detail["blocks"]), empty="no blocks")
        return self.html_page(f"Dataset {detail['name']}",
                              "{{ attributes }}<h2>Replicas</h2>{{ replicas }}<h2>Blocks</h2>{{ blocks }}",
                              caller, attributes=attributes, replicas=replicas, blocks=blocks)


# -- sites ----------------------------------------------------------------------------------------


def _select_sites(request: Request, inventory: Any) -> list[Site]:
    name = pattern(request, "site")
    return sorted((site for site in values_of(inventory.sites) if name is None or name.match(site.name)),
                  key=lambda s: s.name)


class SitesData(_DynamoAnswer):
    """``/data/inventory/sites``: Dynamo's list (quotas in TB); ``format=workbench``: usage in bytes."""

    page = "sites"

    def workbench_answer(self, request: Request, inventory: Any) -> Any:
        return {"sites": [site_summary(site) for site in _select_sites(request, inventory)]}


class SitesPage(HTMLMixin, WebModule):
    """``/web/inventory/sites``: every site with its usage."""

    nav_label = "Sites"

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        sites = [site_summary(site) for site in _select_sites(request, inventory)]
        table = self.html_table(
            ["site", "host", "storage", "status", "dataset replicas", "block replicas", "used", "quota"],
            ([_site_link(self, s["name"]), s["host"], s["storage_type"], s["status"], s["num_dataset_replicas"],
              s["num_block_replicas"], human_size(s["usage"]),
              "unlimited" if s["quota"] is None else human_size(s["quota"])] for s in sites),
            empty="no site matches")
        return self.html_page("Sites", "<p>{{ count }} sites</p>{{ table }}", caller, count=len(sites), table=table)


def _find_site(request: Request, inventory: Any) -> Site:
    return _find(request, inventory.sites, "site")


class SiteData(WebModule):
    """``/data/inventory/site?name=NAME``."""

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        return site_detail(_find_site(request, inventory))


class SitePage(HTMLMixin, WebModule):
    """``/web/inventory/site?name=NAME``: one site's partitions and dataset replicas."""

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        detail = site_detail(_find_site(request, inventory))
        attributes = self.html_table(["attribute", "value"], [
            ("host", detail["host"]), ("storage type", detail["storage_type"]), ("backend", detail["backend"]),
            ("status", detail["status"]), ("used", human_size(detail["usage"])),
            ("block replicas", detail["num_block_replicas"])])
        partitions = self.html_table(
            ["partition", "quota", "occupancy"],
            ([p["partition"], "unlimited" if p["quota"] is None else human_size(p["quota"]),
              human_size(p["occupancy"])] for p in detail["partitions"]), empty="no partitions")
        replicas = self.html_table(
            ["dataset", "group", "blocks", "size", "complete"],
            ([_dataset_link(self, r["dataset"]), r["group"] or "(none)", r["num_blocks"], human_size(r["size"]),
              "yes" if r["complete"] else "no"] for r in detail["dataset_replicas"]),
            empty="no dataset replicas")
        return self.html_page(f"Site {detail['name']}",
                              "{{ attributes }}<h2>Partitions</h2>{{ partitions }}"
                              "<h2>Dataset replicas</h2>{{ replicas }}",
                              caller, attributes=attributes, partitions=partitions, replicas=replicas)


# -- groups and replicas --------------------------------------------------------------------------


class GroupsData(_DynamoAnswer):
    """``/data/inventory/groups``: Dynamo's names; ``format=workbench``: what each group owns."""

    page = "groups"

    def workbench_answer(self, request: Request, inventory: Any) -> Any:
        return {"groups": group_summaries(inventory)}


class BlockReplicasData(_DynamoAnswer):
    """``/data/inventory/blockreplicas``: Dynamo's (PhEDEx's) ``{"block": [...]}`` with each block's replicas."""

    page = "blockreplicas"


class FilesData(_DynamoAnswer):
    """``/data/inventory/data?block=DATASET#BLOCK``: Dynamo's (DBS's) files of one block, per replica."""

    page = "data"


class NodesData(_DynamoAnswer):
    """``/data/inventory/nodes``: Dynamo's (PhEDEx's) ``{"node": [...]}``, one entry per site."""

    page = "nodes"


class GroupsPage(HTMLMixin, WebModule):
    """``/web/inventory/groups``."""

    nav_label = "Groups"

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        table = self.html_table(
            ["group", "ownership", "block replicas", "size"],
            ([g["name"] or "(none)", g["olevel"], g["num_block_replicas"], human_size(g["size"])]
             for g in group_summaries(inventory)), empty="no groups")
        return self.html_page("Groups", "{{ table }}", caller, table=table)


def select_replicas(request: Request, inventory: Any) -> list[dict[str, Any]]:
    """Dataset (default) or block replicas matching the ``dataset`` / ``site`` globs and ``group``."""
    dataset_name, site_name = pattern(request, "dataset"), pattern(request, "site")
    group = text(request, "group", None)
    level = choice(request, "level", ("dataset", "block"), "dataset")
    rows: list[dict[str, Any]] = []
    for site in values_of(inventory.sites):
        if site_name is not None and not site_name.match(site.name):
            continue
        if level == "block":
            for replica in list(site.block_replicas):
                if dataset_name is not None and not dataset_name.match(replica.block.dataset.name):
                    continue
                if group is not None and replica.group.name != group:
                    continue
                rows.append({**replica.to_dict(), "complete": replica.is_complete()})
            continue
        for replica in values_of(site.dataset_replicas):
            if dataset_name is not None and not dataset_name.match(replica.dataset.name):
                continue
            if group is not None and replica.group.name != group:
                continue
            rows.append(dataset_replica_row(replica))
    rows.sort(key=lambda r: (r["dataset"], r.get("block", ""), r["site"]))
    return rows


class ReplicasData(WebModule):
    """``/data/inventory/replicas``."""

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        rows, total = _page(request, select_replicas(request, inventory))
        return {"total": total, "replicas": rows}


class ReplicasPage(HTMLMixin, WebModule):
    """``/web/inventory/replicas``."""

    nav_label = "Replicas"

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        rows, total = _page(request, select_replicas(request, inventory))
        table = self.html_table(
            ["dataset", "block", "site", "group", "size", "complete"],
            ([_dataset_link(self, r["dataset"]), r.get("block", ""), _site_link(self, r["site"]),
              r["group"] or "(none)", human_size(r["size"]), "yes" if r["complete"] else "no"] for r in rows),
            empty="no replica matches")
        return self.html_page("Replicas", "<p>{{ shown }} of {{ total }} replicas</p>{{ table }}", caller,
                              shown=len(rows), total=total, table=table)


# -- stats ----------------------------------------------------------------------------------------


class StatsData(WebModule):
    """``/data/inventory/stats``."""

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        return inventory_stats(inventory)


class StatsPage(HTMLMixin, WebModule):
    """``/web/inventory/stats``: totals and a bar per site of the bytes it holds."""

    nav_label = "Statistics"

    def run(self, caller: User, request: Request, inventory: Any) -> str:
        stats = inventory_stats(inventory)
        totals = self.html_table(["measure", "value"], [
            ("datasets", stats["datasets"]), ("blocks", stats["blocks"]), ("files", stats["files"]),
            ("sites", stats["sites"]), ("groups", stats["groups"]), ("unique size", human_size(stats["size"])),
            ("stored size", human_size(stats["stored"])),
            ("replication factor", f"{stats['replication_factor']:.2f}")])
        widest = max((s["usage"] for s in stats["site_usage"]), default=0) or 1
        bars = self.html_table(["site", "used", "quota", ""], (
            [_site_link(self, s["site"]), human_size(s["usage"]),
             "unlimited" if s["quota"] is None else human_size(s["quota"]),
             self.html_fragment("<span class=\"bar\" style=\"width: {{ width }}px\"></span>",
                                width=round(300 * s["usage"] / widest))]
            for s in stats["site_usage"]), empty="no sites")
        replication = self.html_table(["sites holding it", "datasets"],
                                      list(stats["datasets_by_replicas"].items()), empty="no datasets")
        return self.html_page("Statistics", "{{ totals }}<h2>Usage per site</h2>{{ bars }}"
                              "<h2>Replication</h2>{{ replication }}", caller,
                              totals=totals, bars=bars, replication=replication)


# -- writes ---------------------------------------------------------------------------------------

def _objects(request: Request) -> list[Any]:
    objects = request.get("objects")
    if isinstance(objects, str):  # a form field holding JSON text
        try:
            objects = json.loads(objects)
        except ValueError as exc:
            raise BadRequest(f"parameter 'objects' is not JSON: {exc}", parameter="objects") from None
    if not isinstance(objects, list) or not objects:
        raise BadRequest("parameter 'objects' must be a non-empty list of objects", parameter="objects")
    if len(objects) > MAX_OBJECTS:
        raise BadRequest(f"at most {MAX_OBJECTS} objects per request", parameter="objects", value=len(objects))
    return objects


class InjectData(WebModule):
    """``POST /data/inventory/inject``: ``inventory.update`` each object of ``objects``, in order."""

    write_enabled = True

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        # Parse everything first: one malformed object refuses the whole request.
        objects = [from_dict(data) for data in _objects(request)]
        for obj in objects:
            inventory.update(obj)
        return {"injected": len(objects), "kinds": dict(Counter(obj.KIND for obj in objects))}


class DeleteData(WebModule):
    """``POST /data/inventory/delete``: ``inventory.delete`` each object of ``objects`` (identifiers suffice)."""

    write_enabled = True

    def run(self, caller: User, request: Request, inventory: Any) -> Any:
        objects = [from_dict(data, key_only=True) for data in _objects(request)]
        for obj in objects:
            inventory.delete(obj)
        return {"deleted": len(objects), "kinds": dict(Counter(obj.KIND for obj in objects))}


export_web = {
    "datasets": DatasetsPage, "dataset": DatasetPage, "sites": SitesPage, "site": SitePage,
    "groups": GroupsPage, "replicas": ReplicasPage, "stats": StatsPage,
}
export_data = {
    "datasets": DatasetsData, "dataset": DatasetData, "sites": SitesData, "site": SiteData,
    "groups": GroupsData, "replicas": ReplicasData, "stats": StatsData,
    "blockreplicas": BlockReplicasData, "nodes": NodesData, "data": FilesData,
    "inject": InjectData, "delete": DeleteData,
}
