"""Trove's v1.0 wire shapes over workbench's records (no I/O): the views, fault bodies, the checks of
request bodies and pagination, as :mod:`workbench.clusters.trove_api` serves them.

::

    views = Views("http://127.0.0.1:8779", "demo", flavor_of=lambda provider: "local", volume_size=1)
    views.cluster(store.get_cluster("cache"), "NONE")   # {"id": "1", "name": "cache", "task": {...}, ...}
    fault_body(404, "Cluster 'x' cannot be found.")    # {"itemNotFound": {"code": 404, "message": ...}}
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from workbench.clusters.errors import ClustersError, NotFoundError, TaskError, ValidationError
from workbench.clusters.models import (ACTIVE, BUILDING, CANCELLED, DELETED, DESTROYING, DONE, ERROR, FAILED, NEW,
                                       QUEUED, RUNNING, Backup, Cluster, Configuration, Datastore, Instance)
from workbench.clusters.parameters import Parameter

#: Trove's cluster tasks: name -> (id, description), as Trove reports them
CLUSTER_TASKS: dict[str, tuple[int, str]] = {
    "NONE": (1, "No tasks for the cluster."),
    "BUILDING": (2, "Building the initial cluster."),
    "DELETING": (3, "Deleting the cluster."),
    "GROWING_CLUSTER": (5, "Increasing the size of the cluster."),
    "SHRINKING_CLUSTER": (6, "Decreasing the size of the cluster."),
}
#: the runner task whose being under way is a Trove cluster task
RUNNING_TASKS = {"remove_nodes": "SHRINKING_CLUSTER", "add_nodes": "GROWING_CLUSTER",
                 "destroy_cluster": "DELETING", "create_cluster": "BUILDING"}
#: workbench instance status -> Trove instance status
INSTANCE_STATUS = {NEW: "BUILD", BUILDING: "BUILD", ACTIVE: "ACTIVE", ERROR: "ERROR", DESTROYING: "SHUTDOWN",
                   DELETED: "SHUTDOWN"}
#: workbench backup (task) status -> Trove backup status
BACKUP_STATUS = {QUEUED: "NEW", RUNNING: "BUILDING", DONE: "COMPLETED", FAILED: "FAILED", CANCELLED: "FAILED"}
#: Trove's fault name for each status it answers with
FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
               409: "conflict", 413: "overLimit", 415: "badMediaType", 422: "unprocessableEntity",
               500: "instanceFault", 501: "notImplemented", 503: "serviceUnavailable"}
#: Trove's quotas are per project; workbench has none, which Trove writes as -1
UNLIMITED = -1


def fault_body(status: int, message: str) -> dict[str, Any]:
    """Trove's error body: ``{"itemNotFound": {"code": 404, "message": "..."}}``."""
    return {FAULT_NAMES.get(status, "computeFault" if status >= 500 else "badRequest"):
            {"code": status, "message": message}}


def fault_status(error: ClustersError) -> int:
    """The status a library error is answered with."""
    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, TaskError):
        return 422
    return 500


# -- JSON shapes ------------------------------------------------------------------------------------
def trove_time(value: Any) -> str | None:
    """Trove's time format, ``2019-12-23T20:58:35`` (UTC, no zone)."""
    return value.isoformat(timespec="seconds") if value is not None else None


def trove_status(instance: Instance) -> str:
    """Trove's status of an instance: ``REBOOT`` while it restarts, else after its workbench status."""
    return "REBOOT" if instance.task == "restart" else INSTANCE_STATUS.get(instance.status, "ERROR")


class Views:
    """Trove's JSON shapes of workbench's records, with links built for one request."""

    def __init__(self, base_url: str, project_id: str, flavor_of: Callable[[str], str], volume_size: int) -> None:
        self.base_url = base_url
        self.project_id = project_id
        #: the size (GB) of the volume an instance with one has
        self.volume_size = volume_size
        #: provider name -> id of the flavor its servers are built with
        self.flavor_of = flavor_of

    def links(self, resource: str, ident: Any) -> list[dict[str, str]]:
        return [{"href": f"{self.base_url}/v1.0/{self.project_id}/{resource}/{ident}", "rel": "self"},
                {"href": f"{self.base_url}/{resource}/{ident}", "rel": "bookmark"}]

    def flavor(self, flavor: dict[str, Any]) -> dict[str, Any]:
        ident = str(flavor.get("id"))
        # Trove gives an integer id where the id is a number, else null and the id as str_id
        number = int(ident) if ident.isdigit() and not ident.startswith("0") else None
        return {"id": number, "str_id": ident, "name": flavor.get("name") or ident, "ram": flavor.get("ram") or 0,
                "vcpus": flavor.get("vcpus") or 0, "disk": flavor.get("disk") or 0, "ephemeral": 0,
                "links": self.links("flavors", ident)}

    def version(self, datastore: Datastore, detail: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"id": str(datastore.id), "name": datastore.version,
                                "links": self.links("datastores/versions", datastore.id)}
        if detail:
            body.update(datastore=datastore.manager, version=datastore.version, active=True,
                        packages=datastore.packages or "", image=datastore.image or None)
        return body

    def datastore(self, manager: str, versions: Sequence[Datastore]) -> dict[str, Any]:
        body: dict[str, Any] = {"id": manager, "name": manager, "links": self.links("datastores", manager),
                                "versions": [self.version(v) for v in versions]}
        if versions:  # the newest, as a datastore named without a version means it
            body["default_version"] = str(max(versions, key=lambda v: v.id).id)
        return body

    def _ips(self, instance: Instance) -> list[str]:
        return [instance.addr] if instance.addr else []

    def cluster_instance(self, cluster: Cluster, instance: Instance, servers: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"id": str(instance.id), "name": instance.name, "type": instance.role,
                                "links": self.links("instances", instance.id)}
        if servers:
            flavor = self.flavor_of(cluster.provider)
            body.update(status=trove_status(instance),
                        flavor={"id": flavor, "links": self.links("flavors", flavor)}, port=instance.port or None)
            if instance.volume:
                body["volume"] = {"size": self.volume_size}
            if instance.addr:
                body["ip"] = self._ips(instance)
        return body

    def cluster(self, cluster: Cluster, task: str, servers: bool = True) -> dict[str, Any]:
        ident, description = CLUSTER_TASKS[task]
        if task == "NONE" and cluster.message:  # a failure (of the build, a grow...): Trove has no task for it
            description = f"{description} {cluster.message}"
        body: dict[str, Any] = {
            "id": str(cluster.id), "name": cluster.name,
            "task": {"id": ident, "name": task, "description": description},
            "created": trove_time(cluster.created), "updated": trove_time(cluster.created),
            "links": self.links("clusters", cluster.id),
            "datastore": {"type": cluster.datastore.manager, "version": cluster.datastore.version},
            "instances": [self.cluster_instance(cluster, i, servers) for i in cluster.instances]}
        if servers:
            body["ip"] = [ip for i in cluster.instances for ip in self._ips(i)]
        return body

    def instance(self, cluster: Cluster, instance: Instance, detail: bool = False,
                 configuration: Configuration | None = None) -> dict[str, Any]:
        flavor = self.flavor_of(cluster.provider)
        status = instance.status
        # the only node of a one-node cluster is a single instance: it goes by the cluster's name
        name = cluster.name if len(cluster.instances) == 1 else instance.name
        body: dict[str, Any] = {
            "id": str(instance.id), "name": name, "status": trove_status(instance),
            "operating_status": {ACTIVE: "HEALTHY", ERROR: "ERROR"}.get(status, "UNKNOWN"),
            "links": self.links("instances", instance.id),
            "flavor": {"id": flavor, "links": self.links("flavors", flavor)},
            "datastore": {"type": cluster.datastore.manager, "version": cluster.datastore.version},
            "region": cluster.provider, "access": {}, "cluster_id": str(cluster.id), "type": instance.role,
            "port": instance.port or None}
        if instance.addr:
            body["ip"] = self._ips(instance)
            body["addresses"] = [{"address": instance.addr, "type": "private"}]
        primary = next((i for i in cluster.instances if i.role == "primary"), None)
        if primary is not None and primary.id != instance.id:
            body["replica_of"] = {"id": str(primary.id), "links": self.links("instances", primary.id)}
        elif primary is not None and len(cluster.instances) > 1:
            body["replicas"] = [{"id": str(i.id), "links": self.links("instances", i.id)}
                                for i in cluster.instances if i.id != primary.id]
        if configuration is not None:
            body["configuration"] = {"id": str(configuration.id), "name": configuration.name,
                                     "links": self.links("configurations", configuration.id)}
        if detail:
            body.update(created=trove_time(instance.created), updated=trove_time(instance.created),
                        service_status_updated=trove_time(instance.created))
            body["datastore"]["version_number"] = cluster.datastore.version
        return body


    def configuration(self, configuration: Configuration, instance_count: int | None = None) -> dict[str, Any]:
        """A configuration group; with its ``values`` and ``instance_count`` when ``instance_count`` is given
        (as Trove shows one; its list leaves them out)."""
        body: dict[str, Any] = {
            "id": str(configuration.id), "name": configuration.name, "description": configuration.description,
            "created": trove_time(configuration.created), "updated": trove_time(configuration.updated),
            "datastore_name": configuration.datastore.manager,
            "datastore_version_id": str(configuration.datastore_id),
            "datastore_version_name": configuration.datastore.version,
            "links": self.links("configurations", configuration.id)}
        if instance_count is not None:
            body.update(values=configuration.values, instance_count=instance_count)
        return body

    @staticmethod
    def parameter(parameter: Parameter, datastore: Datastore) -> dict[str, Any]:
        body: dict[str, Any] = {"name": parameter.name, "type": parameter.type,
                                "restart_required": parameter.restart_required,
                                "datastore_version_id": str(datastore.id)}
        if parameter.type == "integer":
            body.update(min=parameter.min, max=parameter.max)
        return body

    def backup(self, backup: Backup, instance_id: int | None) -> dict[str, Any]:
        """``instance_id``: the primary of the backed-up cluster while it exists (what was backed up)."""
        return {"id": str(backup.id), "name": backup.name, "description": None,
                "locationRef": backup.path or None, "instance_id": str(instance_id) if instance_id else None,
                "created": trove_time(backup.created), "updated": trove_time(backup.created),
                # Trove counts in GB
                "size": backup.size / 1024 ** 3 if backup.size else None,
                "status": BACKUP_STATUS.get(backup.status, "FAILED"), "parent_id": None,
                "project_id": self.project_id, "cluster_name": backup.cluster_name,
                "datastore": {"type": backup.datastore.manager, "version": backup.datastore.version,
                              "version_id": str(backup.datastore.id)}}


def paginate(items: list[Any], key: Callable[[Any], int], limit: str | None, marker: str | None
             ) -> tuple[list[Any], str | None]:
    """(the page, the marker of the next one or None): items after ``marker`` (an id), at most ``limit``."""
    if marker is not None:
        if not marker.isdigit():
            raise ValidationError(f"marker must be an id, not {marker[:40]!r}", field="marker")
        items = [i for i in items if key(i) > int(marker)]
    if limit is None:
        return items, None
    if not limit.isdigit() or int(limit) < 1:
        raise ValidationError(f"limit must be a whole number >= 1, not {limit[:40]!r}", field="limit")
    page = items[:int(limit)]
    return page, (str(key(page[-1])) if len(items) > len(page) else None)


# -- request bodies ---------------------------------------------------------------------------------
def check_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object", field=where)
    return value


def check_text(body: dict[str, Any], key: str, where: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{where}.{key} is required: a non-empty string", field=f"{where}.{key}")
    if len(value) > 255:
        raise ValidationError(f"{where}.{key} must have at most 255 characters", field=f"{where}.{key}")
    return value


def check_nodes(value: Any, where: str, required: str) -> list[dict[str, Any]]:
    """A non-empty list of objects, each with the string or integer ``required``."""
    if not isinstance(value, list) or not value:
        raise ValidationError(f"{where} must be a non-empty list of objects", field=where)
    nodes = [check_object(node, f"{where}[{n}]") for n, node in enumerate(value)]
    for n, node in enumerate(nodes):
        ref = node.get(required)
        if isinstance(ref, bool) or not isinstance(ref, (str, int)) or ref == "":
            raise ValidationError(f"{where}[{n}].{required} is required", field=f"{where}[{n}].{required}")
        volume = node.get("volume")
        if volume is not None:
            size = check_object(volume, f"{where}[{n}].volume").get("size")
            if isinstance(size, bool) or not isinstance(size, (int, str)) or not str(size).isdigit() \
                    or int(size) < 1:
                raise ValidationError(f"{where}[{n}].volume.size must be a whole number >= 1",
                                      field=f"{where}[{n}].volume.size")
    return nodes


__all__ = ["Views", "fault_body", "fault_status", "trove_time", "trove_status", "paginate", "check_object",
           "check_text", "check_nodes", "CLUSTER_TASKS", "RUNNING_TASKS", "INSTANCE_STATUS", "BACKUP_STATUS",
           "FAULT_NAMES", "UNLIMITED"]
