"""The OpenStack Trove v1.0 API over workbench.clusters (tornado), so Trove's own clients drive it.

Served by :class:`~workbench.clusters.api.ClustersApi` beside ``/api``, under ``/v1.0/<project_id>/``,
with the bodies, status codes and error bodies of Trove's API, so ``python-troveclient`` works (and,
through the identity endpoint of :mod:`workbench.clusters.identity`, ``openstack --os-auth-url``)::

    from keystoneauth1 import session, token_endpoint
    from troveclient.v1 import client

    auth = token_endpoint.Token(f"{api.url}/v1.0/demo", api.token)
    trove = client.Client(session=session.Session(auth=auth))
    trove.clusters.create("cache", "redis", "7", instances=[{"flavorRef": "local"}] * 2)

Routes (each needs ``X-Auth-Token``, the token ``/api`` takes; the project id is only echoed in links)::

    GET    clusters                         {"clusters": [...]}           (?limit, ?marker)
    POST   clusters                         {"cluster": {"name", "datastore": {"type", "version"},
                                             "instances": [{"flavorRef", "volume"?}...], "provider"?}} -> 200
    GET    clusters/<id or name>            {"cluster": {..., "task": {"id", "name", "description"}}}
    DELETE clusters/<id or name>            -> 202, no body
    POST   clusters/<id or name>            {"grow": [{"flavorRef"}...]} | {"shrink": [{"id"}...]}
                                            | {"reset-status": {}} -> 202 {"cluster"}
    GET    clusters/<id>/instances/<id>     {"instance": {...}}
    GET    datastores[/<name>]              {"datastores": [...]} / {"datastore": {...}}
    GET    datastores/<name>/versions[/<id or name>]     {"versions": [...]} / {"version": {...}}
    GET    datastores/versions/<id>         {"version": {...}}
    GET    datastores/<name>/versions/<id>/flavors       {"flavors": [...]}
    GET    flavors[/<id>]                   {"flavors": [...]} / {"flavor": {...}}   (the provider's)
    GET    limits                           {"limits": [{"verb": "ABSOLUTE", ...}]}
    GET    instances[/detail]               {"instances": [...]} (?include_clustered=true: every node)
    POST   instances                        {"instance": {"name", "flavorRef", "volume"?, "datastore":
                                             {"type", "version"?}}} -> 200 (a one-node cluster)
    GET    instances/<id or name>           {"instance": {...}}
    DELETE instances/<id or name>           -> 202, no body (a single instance only: 501 for a node)
    POST   instances/<id or name>/action    {"restart": {}} -> 202 (status REBOOT meanwhile)
    GET    backups                          {"backups": [...]} (?instance_id, ?datastore, ?limit, ?marker)
    POST   backups                          {"backup": {"name", "instance"}} -> 202 {"backup"} (of the
                                             instance's cluster: its primary is backed up)
    GET    backups/<id or name>             {"backup": {...}}
    DELETE backups/<id or name>             -> 202, no body (its file goes too)
    GET    instances/<id>/backups           {"backups": [...]}
    GET    instances/<id>/databases         {"databases": [{"name"}...]}  (MySQL/MariaDB, PostgreSQL:
    POST   instances/<id>/databases         {"databases": [{"name"}...]} -> 202     on the cluster's
    DELETE instances/<id>/databases/<name>  -> 202                                    primary; Redis: 501)
    GET    instances/<id>/users             {"users": [{"name", "host": "%", "databases": [{"name"}]}]}
    POST   instances/<id>/users             {"users": [{"name", "password", "databases"?}...]} -> 202
    DELETE instances/<id>/users/<name>      -> 202
    PUT    instances/<id>                   {"instance": {"configuration": id | null}} -> 202 (attach or
                                             detach a group; applied live, restarted only if needed)
    GET    instances/<id>/configuration     {"instance": {"configuration": {parameter: value}}}
    GET    configurations                   {"configurations": [...]}  (?limit, ?marker)
    POST   configurations                   {"configuration": {"name", "values", "datastore": {"type",
                                             "version"?}, "description"?}} -> 200
    GET    configurations/<id>              {"configuration": {..., "values", "instance_count"}}
    PATCH  configurations/<id>              {"configuration": {"values"}} -> 202 (merged; PUT: replaced),
                                             applied to every instance it is attached to
    DELETE configurations/<id>              -> 202 (400 while attached)
    GET    configurations/<id>/instances    {"instances": [{"id", "name"}]}
    GET    datastores/<name>/versions/<v>/parameters[/<name>]   {"configuration-parameters": [{"name",
    GET    datastores/versions/<id>/parameters[/<name>]          "type", "min", "max", "restart_required"}]}

A backup is restored into a new single instance: ``POST instances`` with ``"restorePoint":
{"backupRef": <id>}`` (409 ``conflict`` for a backup not COMPLETED).

Errors are Trove's faults, ``{name: {"code": status, "message": text}}``, which troveclient turns
into its exceptions: 400 ``badRequest`` (a refused body or value), 401 ``unauthorized``, 404
``itemNotFound``, 405 ``badMethod``, 422 ``unprocessableEntity`` (the cluster's current task does not
allow the action), 500 ``instanceFault``, 501 ``notImplemented`` (an option with no counterpart here
yet: replicas, databases and users at create, incremental backups, resize, a user's
host other than ``%``, renaming an instance). Scheduled backups are not Trove's API: troveclient's
``backups.schedule_create`` makes a Mistral cron trigger with Mistral's client; workbench schedules
them itself (``/api``'s ``clusters/<id>/schedule``, ``workbench clusters schedule``). Every name and value of a request is checked before anything changes.

What workbench is and Trove is not shows through as follows: a datastore is a manager (its id is its
name) and each registered version a version (its id is the row's id); a cluster's instances have
``type`` ``primary`` or ``replica`` and, beside Trove's fields, the ``port`` the datastore listens on;
every instance belongs to a cluster, so a single instance is a one-node cluster (named as the
instance) and ``GET instances`` lists those only unless ``include_clustered=true``; flavors are the
provider's (the static pool's hosts, the cloud's flavors), a ``flavorRef`` must name one of them, and
the provider places servers as it always does (where ``os_flavor`` names the cloud flavor it builds
with, a ``flavorRef`` naming another one is refused); a failed cluster's task is ``NONE`` with the
failure in its description.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable

import tornado.web

from workbench.clusters.errors import ClustersError, NotFoundError, TaskError, ValidationError
from workbench.clusters.identity import identity_routes
from workbench.clusters.managers.base import BaseManager, check_sql_name
from workbench.clusters.models import (BUILDING, DESTROYING, DONE, NEW, Backup, Cluster, Configuration, Datastore,
                                       Instance)
from workbench.clusters.parameters import parameters_of
from workbench.clusters.trove_protocol import (BACKUP_STATUS, RUNNING_TASKS, UNLIMITED, Views, check_nodes,
                                               check_object, check_text, fault_body, fault_status, paginate)

if TYPE_CHECKING:
    from workbench.clusters.api import ClustersApi

#: the path of every route: the API version, then the project id (echoed in links, never checked)
PREFIX = r"/v1\.0/([A-Za-z0-9_.-]{1,64})"
#: a path segment naming a resource by id or name
SEGMENT = r"([A-Za-z0-9_.-]{1,128})"
#: options of an instance create that this service has no counterpart for yet (refused: 501)
NOT_YET = ("replica_of", "replica_count", "databases", "users", "modules")


class _TroveFault(tornado.web.HTTPError):
    """A Trove fault to answer with: ``status`` and ``message`` (its name follows from the status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.message = message


# -- handlers ---------------------------------------------------------------------------------------
class TroveHandler(tornado.web.RequestHandler):
    """Base of the Trove routes: the token, JSON bodies, store calls off the loop, Trove's faults."""

    def initialize(self, api: ClustersApi) -> None:
        self.api = api
        self._flavors: dict[str, list[dict[str, Any]]] = {}

    @property
    def store(self) -> Any:
        return self.api.store

    def prepare(self) -> None:
        if not self.api.token_matches(self.request.headers.get("X-Auth-Token", "")):
            self.set_header("WWW-Authenticate", f'Keystone uri="{self.request.protocol}://{self.request.host}"')
            raise _TroveFault(401, "The request you have made requires authentication (X-Auth-Token).")

    def check_xsrf_cookie(self) -> None:  # token-authenticated API: no cookies, no forms
        return None

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run store, runner and provider calls on a worker thread: SQL and clouds must not stall the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.api.executor, function, *args)

    def body(self) -> dict[str, Any]:
        try:
            parsed = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError):
            raise ValidationError("The request body is not valid JSON.", field="body") from None
        return check_object(parsed, "body")

    def page(self, project_id: str, resource: str, items: list[Any], key: Callable[[Any], int]
             ) -> tuple[list[Any], dict[str, Any]]:
        """The page of ``items`` the query asks for (``?limit``, ``?marker``) and what the body adds:
        Trove's ``links`` with a ``next`` one when more follow."""
        limit = self.get_query_argument("limit", None)
        page, next_marker = paginate(items, key, limit, self.get_query_argument("marker", None))
        if next_marker is None:
            return page, {}
        href = (f"{self.request.protocol}://{self.request.host}/v1.0/{project_id}/{resource}?limit={limit}"
                f"&marker={next_marker}")
        return page, {"links": [{"rel": "next", "href": href}]}

    def views(self, project_id: str) -> Views:
        return Views(f"{self.request.protocol}://{self.request.host}", project_id, self.flavor_id,
                     self.store.settings.volume_size_gb)

    def reply(self, body: dict[str, Any] | None, status: int = 200) -> None:
        """Answer ``status`` with ``body`` as JSON; None: no body at all, as Trove's 202 of a delete."""
        self.set_status(status)
        if body is not None:
            self.set_header("Content-Type", "application/json")
        self.finish(None if body is None else json.dumps(body))

    # -- flavors, which come from the provider ---------------------------------------------------------
    def flavors(self, provider: str | None = None) -> list[dict[str, Any]]:
        """The provider's flavors (on a worker thread only: a cloud's are fetched), once per request.

        A provider that lists none (a pool of given hosts) has one, named after it.
        """
        name = provider or self.store.settings.provider
        if name not in self._flavors:
            listed = self.api.runner.provider_for(name).flavors()
            self._flavors[name] = listed or [{"id": name, "name": name, "ram": 0, "vcpus": 0, "disk": 0}]
        return self._flavors[name]

    def flavor_id(self, provider: str) -> str:
        """The id of the flavor ``provider`` builds servers with: ``os_flavor`` when it names one, else
        the first the provider lists."""
        flavors = self.flavors(provider)
        wanted = self.store.settings.os_flavor
        chosen = next((f for f in flavors if wanted and wanted in (str(f.get("id")), f.get("name"))), flavors[0])
        return str(chosen.get("id"))

    def check_flavor(self, ref: Any, provider: str | None) -> None:
        """``ref`` (an id, a name or a link ending in one) must name a flavor of ``provider`` and, when
        the settings name the one it builds with (``os_flavor``), that one: no other is ever used."""
        ref = str(ref).rstrip("/").rsplit("/", 1)[-1]
        name = provider or self.store.settings.provider
        flavors = self.flavors(name)
        flavor = next((f for f in flavors if ref in (str(f.get("id")), f.get("name"))), None)
        if flavor is None:
            raise NotFoundError(f"Flavor '{ref}' cannot be found.", flavor=ref)
        wanted = self.store.settings.os_flavor
        built = [f for f in flavors if wanted and wanted in (str(f.get("id")), f.get("name"))]
        if built and str(built[0].get("id")) != str(flavor.get("id")):
            raise ValidationError(f"Flavor '{ref}' is not the one provider {name} builds servers with "
                                  f"('{built[0].get('name')}').", field="flavorRef", value=ref)

    # -- faults -----------------------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, _TroveFault):
            message = error.message
        elif isinstance(error, tornado.web.HTTPError) and status_code < 500:
            message = error.log_message or self._reason
        else:
            message = ("The server has either erred or is incapable of performing the requested operation "
                       "(see the server log).")
        self.reply(fault_body(status_code, message), status_code)

    def _handle_request_exception(self, error: BaseException) -> None:
        if isinstance(error, ClustersError) and not self._finished:
            status = fault_status(error)
            if status >= 500:  # not the caller's doing: keep the traceback in the log
                super()._handle_request_exception(error)
                return
            self.clear()
            self.reply(fault_body(status, error.message), status)
            return
        super()._handle_request_exception(error)

    # -- lookups ----------------------------------------------------------------------------------------
    @staticmethod
    def lookup(find: Callable[[int | str], Any], ref: str, what: str, field: str) -> Any:
        """``find(ref)`` (an id when ``ref`` is a number a column can hold, else a name), Trove's 404
        ("<what> '<ref>' cannot be found.") otherwise."""
        try:
            return find(int(ref) if ref.isdigit() and len(ref) < 19 else ref)
        except NotFoundError:
            raise NotFoundError(f"{what} '{ref}' cannot be found.", **{field: ref}) from None

    def cluster(self, ref: str) -> Cluster:
        """A cluster by id or name, Trove's 404 otherwise (on a worker thread)."""
        return self.lookup(self.store.get_cluster, ref, "Cluster", "cluster")

    def instance(self, ref: str) -> Instance:
        return self.lookup(self.store.get_instance, ref, "Instance", "instance")

    def backup_record(self, ref: str) -> Backup:
        return self.lookup(self.store.get_backup, ref, "Backup", "backup")

    def group(self, ref: str) -> Configuration:
        """A configuration group by id or name, Trove's 404 otherwise."""
        return self.lookup(self.store.get_configuration, ref, "Configuration group", "configuration")

    def backup_json(self, views: Views, backup: Backup) -> dict[str, Any]:
        try:
            primary = self.store.get_cluster(backup.cluster_name).primary.id
        except NotFoundError:  # the cluster is gone; its backups stay
            primary = None
        return views.backup(backup, primary)

    def version_by_id(self, ref: str) -> Datastore:
        for version in self.store.datastores():
            if ref == str(version.id):
                return version
        raise NotFoundError(f"Datastore version '{ref}' cannot be found.", version=ref)

    def versions_of(self, manager: str) -> list[Datastore]:
        versions = [d for d in self.store.datastores() if d.manager == manager]
        if not versions:
            raise NotFoundError(f"Datastore '{manager}' cannot be found.", datastore=manager)
        return versions

    def version_of(self, manager: str, ref: str) -> Datastore:
        """A version of datastore ``manager`` by its id or its name."""
        for version in self.versions_of(manager):
            if ref in (str(version.id), version.version):
                return version
        raise NotFoundError(f"Datastore version '{ref}' cannot be found.", datastore=manager, version=ref)

    def task_of(self, cluster: Cluster) -> str:
        """Trove's task name for ``cluster``: from the operation under way, else from its status."""
        for handle in reversed(self.api.runner.live_tasks(cluster.name)):
            if handle.name in RUNNING_TASKS:
                return RUNNING_TASKS[handle.name]
        if cluster.status == DESTROYING:
            return "DELETING"
        if cluster.status in (NEW, BUILDING):
            return "BUILDING"
        return "NONE"

    def check_available(self, cluster: Cluster, allowed: tuple[str, ...] = ("NONE",)) -> str:
        """Trove's 422 unless the cluster's task is one of ``allowed``; returns the task."""
        task = self.task_of(cluster)
        if task not in allowed:
            raise TaskError(f"This action cannot be performed on the cluster while the current cluster task "
                            f"is '{task}'.", cluster=cluster.name, task=task)
        return task


class ClustersHandler(TroveHandler):
    async def get(self, project_id: str) -> None:
        def listing() -> dict[str, Any]:
            views = self.views(project_id)
            clusters, links = self.page(project_id, "clusters", self.store.clusters(), lambda c: c.id)
            return {"clusters": [views.cluster(c, self.task_of(c), servers=False) for c in clusters], **links}

        self.reply(await self.call(listing))

    async def post(self, project_id: str) -> None:
        spec = check_object(self.body().get("cluster"), "cluster")
        for option in ("configuration", "extended_properties"):
            if spec.get(option) not in (None, {}):
                raise _TroveFault(501, f"cluster.{option} is not supported by this service yet.")
        name = check_text(spec, "name", "cluster")
        datastore_spec = check_object(spec.get("datastore"), "cluster.datastore")
        manager = check_text(datastore_spec, "type", "cluster.datastore")
        version_ref = check_text(datastore_spec, "version", "cluster.datastore")
        nodes = check_nodes(spec.get("instances"), "cluster.instances", "flavorRef")
        provider = spec.get("provider")
        if provider is not None and not isinstance(provider, str):
            raise ValidationError("cluster.provider must be a string", field="cluster.provider")
        refs = {str(node["flavorRef"]) for node in nodes}
        if len(refs) > 1:
            raise ValidationError("The flavor for each instance in a cluster must be the same.",
                                  field="cluster.instances")

        def create() -> dict[str, Any]:
            version = self.version_of(manager, version_ref)
            if provider is not None and provider not in self.store.settings.providers:
                raise ValidationError(f"unknown provider {provider!r}", field="cluster.provider", value=provider)
            self.check_flavor(nodes[0]["flavorRef"], provider)
            self.api.runner.create_cluster(name, version, len(nodes), provider)
            cluster = self.store.get_cluster(name)
            return {"cluster": self.views(project_id).cluster(cluster, self.task_of(cluster), servers=False)}

        self.reply(await self.call(create))


class ClusterHandler(TroveHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def show() -> dict[str, Any]:
            cluster = self.cluster(ref)
            return {"cluster": self.views(project_id).cluster(cluster, self.task_of(cluster))}

        self.reply(await self.call(show))

    async def delete(self, project_id: str, ref: str) -> None:
        def delete() -> None:
            cluster = self.cluster(ref)
            self.check_available(cluster, ("NONE", "DELETING"))
            # a teardown under way goes on: a second one would race it
            if not any(h.name == "destroy_cluster" for h in self.api.runner.live_tasks(cluster.name)):
                self.api.runner.destroy_cluster(cluster.name)

        await self.call(delete)
        self.reply(None, 202)

    async def post(self, project_id: str, ref: str) -> None:
        body = self.body()
        if len(body) != 1:
            raise ValidationError("Action request should have exactly one action specified in body",
                                  field="body")
        action, param = next(iter(body.items()))
        actions: dict[str, Callable[[Cluster, Any], None]] = {
            "grow": self._grow, "shrink": self._shrink, "reset-status": self._reset_status}
        if action not in actions:
            raise ValidationError(f"Action {action} not supported", field="body", action=action)

        def perform() -> dict[str, Any]:
            cluster = self.cluster(ref)
            actions[action](cluster, param)
            cluster = self.store.get_cluster(cluster.id)
            return {"cluster": self.views(project_id).cluster(cluster, self.task_of(cluster), servers=False)}

        self.reply(await self.call(perform), 202)

    def _grow(self, cluster: Cluster, param: Any) -> None:
        nodes = check_nodes(param, "grow", "flavorRef")
        self.check_available(cluster)
        for node in nodes:
            self.check_flavor(node["flavorRef"], cluster.provider)
        self.api.runner.add_nodes(cluster.name, len(nodes))

    def _shrink(self, cluster: Cluster, param: Any) -> None:
        nodes = check_nodes(param, "shrink", "id")
        self.check_available(cluster)
        ids = []
        for node in nodes:
            ref = str(node["id"])
            match = next((i for i in cluster.instances if ref in (str(i.id), i.name)), None)
            if match is None:
                raise NotFoundError(f"Instance '{ref}' cannot be found in cluster {cluster.name}.",
                                    cluster=cluster.name, instance=ref)
            ids.append(match.id)
        self.api.runner.remove_nodes(cluster.name, ids)

    def _reset_status(self, cluster: Cluster, param: Any) -> None:
        check_object(param, "reset-status")
        self.api.runner.reset_status(cluster.name)


class ClusterInstanceHandler(TroveHandler):
    async def get(self, project_id: str, cluster_ref: str, instance_ref: str) -> None:
        def show() -> dict[str, Any]:
            cluster = self.cluster(cluster_ref)
            for instance in cluster.instances:
                if instance_ref in (str(instance.id), instance.name):
                    return {"instance": self.views(project_id).instance(cluster, instance, detail=True)}
            raise NotFoundError(f"Instance '{instance_ref}' cannot be found.", instance=instance_ref)

        self.reply(await self.call(show))


class DatastoresHandler(TroveHandler):
    async def get(self, project_id: str) -> None:
        def listing() -> dict[str, Any]:
            managers: dict[str, list[Datastore]] = {}
            for datastore in self.store.datastores():
                managers.setdefault(datastore.manager, []).append(datastore)
            views = self.views(project_id)
            return {"datastores": [views.datastore(m, v) for m, v in managers.items()]}

        self.reply(await self.call(listing))


class DatastoreHandler(TroveHandler):
    async def get(self, project_id: str, manager: str) -> None:
        versions = await self.call(self.versions_of, manager)
        self.reply({"datastore": self.views(project_id).datastore(manager, versions)})


class VersionsHandler(TroveHandler):
    async def get(self, project_id: str, manager: str) -> None:
        versions = await self.call(self.versions_of, manager)
        views = self.views(project_id)
        self.reply({"versions": [views.version(v, detail=True) for v in versions]})


class VersionHandler(TroveHandler):
    async def get(self, project_id: str, manager: str, ref: str) -> None:
        version = await self.call(self.version_of, manager, ref)
        self.reply({"version": self.views(project_id).version(version, detail=True)})


class VersionByIdHandler(TroveHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def find() -> Datastore:
            for version in self.store.datastores():
                if ref == str(version.id):
                    return version
            raise NotFoundError(f"Datastore version '{ref}' cannot be found.", version=ref)

        version = await self.call(find)
        self.reply({"version": self.views(project_id).version(version, detail=True)})


class VersionFlavorsHandler(TroveHandler):
    async def get(self, project_id: str, manager: str, ref: str) -> None:
        def listing() -> list[dict[str, Any]]:
            version = self.version_of(manager, ref)
            provider = self.api.runner.provider_for(self.store.settings.provider)
            # those fit for the datastore (a cloud's big enough ones); a provider listing none has its one
            return provider.flavors(version.name) or ([] if provider.flavors() else self.flavors())

        flavors = await self.call(listing)
        views = self.views(project_id)
        self.reply({"flavors": [views.flavor(f) for f in flavors]})


class ParametersHandler(TroveHandler):
    """The parameters a configuration group of a datastore version may set (by datastore and version,
    or by the version's id alone)."""

    async def get(self, project_id: str, *refs: str) -> None:
        *where, name = refs  # (version id | datastore, version), then the parameter's name or None

        def find() -> dict[str, Any]:
            version = self.version_of(*where) if len(where) == 2 else self.version_by_id(where[0])
            known = parameters_of(version.manager)
            if name is None:
                return {"configuration-parameters": [Views.parameter(p, version) for p in known.values()]}
            if name not in known:
                raise NotFoundError(f"No configuration parameter {name} for {version.name}.", parameter=name)
            return Views.parameter(known[name], version)

        self.reply(await self.call(find))


class ConfigurationsHandler(TroveHandler):
    async def get(self, project_id: str) -> None:
        def listing() -> dict[str, Any]:
            page, links = self.page(project_id, "configurations", self.store.configurations(), lambda c: c.id)
            views = self.views(project_id)
            return {"configurations": [views.configuration(c) for c in page], **links}

        self.reply(await self.call(listing))

    async def post(self, project_id: str) -> None:
        spec = check_object(self.body().get("configuration"), "configuration")
        name = check_text(spec, "name", "configuration")
        description = spec.get("description") or ""
        values = spec.get("values")
        datastore_spec = check_object(spec.get("datastore"), "configuration.datastore")
        manager = check_text(datastore_spec, "type", "configuration.datastore")
        version_ref = datastore_spec.get("version")

        def create() -> dict[str, Any]:
            version = (self.version_of(manager, str(version_ref)) if version_ref
                       else max(self.versions_of(manager), key=lambda v: v.id))
            group = self.store.create_configuration(name, version, values, description)
            return {"configuration": self.views(project_id).configuration(group, 0)}

        self.reply(await self.call(create))


class ConfigurationHandler(TroveHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def show() -> dict[str, Any]:
            group = self.group(ref)
            count = len(self.store.configuration_instances(group.id))
            return {"configuration": self.views(project_id).configuration(group, count)}

        self.reply(await self.call(show))

    async def _update(self, ref: str, replace: bool) -> None:
        spec = check_object(self.body().get("configuration"), "configuration")
        if "values" not in spec:
            raise ValidationError("configuration.values is required", field="configuration.values")

        def update() -> None:
            group = self.group(ref)
            self.api.runner.update_configuration(group.id, spec["values"], replace=replace,
                                                 name=spec.get("name"), description=spec.get("description"))

        await self.call(update)
        self.reply(None, 202)

    async def put(self, project_id: str, ref: str) -> None:
        await self._update(ref, replace=True)

    async def patch(self, project_id: str, ref: str) -> None:
        await self._update(ref, replace=False)

    async def delete(self, project_id: str, ref: str) -> None:
        await self.call(lambda: self.store.delete_configuration(self.group(ref).id))
        self.reply(None, 202)


class ConfigurationInstancesHandler(ConfigurationHandler):
    async def get(self, project_id: str, ref: str) -> None:  # type: ignore[override]
        def listing() -> dict[str, Any]:
            instances = self.store.configuration_instances(self.group(ref).id)
            page, links = self.page(project_id, f"configurations/{ref}/instances", instances, lambda i: i.id)
            return {"instances": [{"id": str(i.id), "name": i.name} for i in page], **links}

        self.reply(await self.call(listing))


class InstanceConfigurationHandler(TroveHandler):
    """The values an instance's config has from its configuration group."""

    async def get(self, project_id: str, ref: str) -> None:
        def show() -> dict[str, Any]:
            instance = self.instance(ref)
            return {"instance": {"configuration": self.api.runner.configuration_values(instance)}}

        self.reply(await self.call(show))


class FlavorsHandler(TroveHandler):
    async def get(self, project_id: str) -> None:
        flavors = await self.call(self.flavors)
        views = self.views(project_id)
        self.reply({"flavors": [views.flavor(f) for f in flavors]})


class FlavorHandler(TroveHandler):
    async def get(self, project_id: str, ref: str) -> None:
        flavors = await self.call(self.flavors)
        for flavor in flavors:
            if ref in (str(flavor.get("id")), flavor.get("name")):
                self.reply({"flavor": self.views(project_id).flavor(flavor)})
                return
        raise NotFoundError(f"Flavor '{ref}' cannot be found.", flavor=ref)


class LimitsHandler(TroveHandler):
    async def get(self, project_id: str) -> None:
        # no rate limits here: only the absolute ones, the size of a cluster the one workbench has
        self.reply({"limits": [{"verb": "ABSOLUTE", "max_instances": UNLIMITED, "max_backups": UNLIMITED,
                                "max_volumes": UNLIMITED,
                                "max_cluster_size": self.store.settings.max_cluster_size}]})


class InstancesHandler(TroveHandler):
    async def get(self, project_id: str, detail: str | None = None) -> None:
        clustered = self.get_query_argument("include_clustered", "").lower() == "true"

        def listing() -> dict[str, Any]:
            pairs = [(c, i) for c in self.store.clusters() for i in c.instances
                     if clustered or len(c.instances) == 1]
            page, links = self.page(project_id, "instances", pairs, lambda pair: pair[1].id)
            views = self.views(project_id)
            return {"instances": [views.instance(c, i, detail=bool(detail)) for c, i in page], **links}

        self.reply(await self.call(listing))

    async def post(self, project_id: str, detail: str | None = None) -> None:
        if detail:
            raise _TroveFault(405, "The method is not allowed for this resource.")
        spec = check_object(self.body().get("instance"), "instance")
        for option in NOT_YET:
            if spec.get(option) not in (None, [], {}):
                raise _TroveFault(501, f"instance.{option} is not supported by this service yet.")
        name = check_text(spec, "name", "instance")
        datastore_spec = check_object(spec.get("datastore"), "instance.datastore")
        manager = check_text(datastore_spec, "type", "instance.datastore")
        version_ref = datastore_spec.get("version")
        [node] = check_nodes([{k: v for k, v in spec.items() if k in ("flavorRef", "volume")}], "instance", "flavorRef")

        restore = spec.get("restorePoint")
        backup_ref = str(check_object(restore, "instance.restorePoint").get("backupRef") or "") if restore else ""
        if restore and not backup_ref:
            raise ValidationError("instance.restorePoint.backupRef is required", field="instance.restorePoint")

        def create() -> dict[str, Any]:
            # a datastore named without a version means its newest, as Trove's default version
            version = (self.version_of(manager, str(version_ref)) if version_ref
                       else max(self.versions_of(manager), key=lambda v: v.id))
            self.check_flavor(node["flavorRef"], None)
            record = None
            if backup_ref:
                record = self.backup_record(backup_ref)
                if record.status != DONE:
                    raise _TroveFault(409, f"Backup {backup_ref} cannot be restored: it is "
                                          f"{BACKUP_STATUS.get(record.status, 'FAILED')}, not COMPLETED.")
                if record.datastore_id != version.id:
                    raise ValidationError(f"Backup {backup_ref} is of datastore {record.datastore.name}, not "
                                          f"{version.name}.", field="instance.datastore")
            group = self.group(str(spec["configuration"])).id if spec.get("configuration") is not None else None
            self.api.runner.create_cluster(name, version, 1, restore_from=record, configuration=group)
            cluster = self.store.get_cluster(name)
            return {"instance": self.views(project_id).instance(cluster, cluster.instances[0])}

        self.reply(await self.call(create))


class InstanceHandler(TroveHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def show() -> dict[str, Any]:
            instance = self.instance(ref)
            cluster = self.store.get_cluster(instance.cluster_id)
            return {"instance": self.views(project_id).instance(
                cluster, instance, detail=True, configuration=self.store.instance_configuration(instance.id))}

        self.reply(await self.call(show))

    async def put(self, project_id: str, ref: str) -> None:
        """Attach a configuration group (``{"instance": {"configuration": id}}``) or detach it (null)."""
        spec = check_object(self.body().get("instance"), "instance")
        others = sorted(set(spec) - {"configuration"})
        if others:
            raise _TroveFault(501, f"instance.{others[0]} cannot be changed by this service yet.")
        if "configuration" not in spec:
            raise ValidationError("instance.configuration is required", field="instance.configuration")
        ref_value = spec["configuration"]
        if ref_value is not None and (isinstance(ref_value, bool) or not isinstance(ref_value, (str, int))):
            raise ValidationError("instance.configuration must be an id or null", field="instance.configuration")

        def configure() -> None:
            instance = self.instance(ref)
            group = None
            if ref_value is not None:
                group = self.group(str(ref_value)).id
            self.check_available(self.store.get_cluster(instance.cluster_id))
            self.api.runner.configure_instance(instance.id, group)

        await self.call(configure)
        self.reply(None, 202)

    async def delete(self, project_id: str, ref: str) -> None:
        def delete() -> None:
            instance = self.instance(ref)
            cluster = self.store.get_cluster(instance.cluster_id)
            if len(cluster.instances) > 1:
                raise _TroveFault(501, "Operation not supported for instances that are part of a cluster.")
            self.check_available(cluster, ("NONE", "DELETING"))
            if not any(h.name == "destroy_cluster" for h in self.api.runner.live_tasks(cluster.name)):
                self.api.runner.destroy_cluster(cluster.name)

        await self.call(delete)
        self.reply(None, 202)


class InstanceActionHandler(TroveHandler):
    async def post(self, project_id: str, ref: str) -> None:
        body = self.body()
        if len(body) != 1:
            raise ValidationError("Invalid instance action: exactly one action is expected", field="body")
        action, param = next(iter(body.items()))
        if action == "resize":
            raise _TroveFault(501, "Resizing is not supported: the providers place servers of one size.")
        if action != "restart":
            raise ValidationError(f"Invalid instance action: {action}", field="body", action=action)
        check_object(param, "restart")

        def restart() -> None:
            self.api.runner.restart_instance(self.instance(ref).id)

        await self.call(restart)
        self.reply(None, 202)


class AccountsHandler(TroveHandler):
    """Base of an instance's databases and users: on its cluster's primary, where writes go (they
    replicate); a datastore without them (Redis) answers 501."""

    def primary_of(self, ref: str, method: str) -> tuple[Any, Instance]:
        """(the datastore manager, the primary) of instance ``ref``'s cluster, once no task runs on it."""
        cluster = self.store.get_cluster(self.instance(ref).cluster_id)
        manager = self.api.runner.manager_for(cluster.datastore)
        if getattr(type(manager), method) is getattr(BaseManager, method):
            raise _TroveFault(501, f"The datastore {cluster.datastore.manager} has no databases or users.")
        self.check_available(cluster)
        return manager, cluster.primary


class DatabasesHandler(AccountsHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def listing() -> dict[str, Any]:
            manager, primary = self.primary_of(ref, "list_databases")
            return {"databases": [{"name": name} for name in manager.list_databases(primary)]}

        self.reply(await self.call(listing))

    async def post(self, project_id: str, ref: str) -> None:
        names = [check_sql_name(check_text(d, "name", f"databases[{n}]"), "database")
                 for n, d in enumerate(check_nodes(self.body().get("databases"), "databases", "name"))]

        def create() -> None:
            manager, primary = self.primary_of(ref, "list_databases")
            for name in names:
                manager.create_database(primary, name)

        await self.call(create)
        self.reply(None, 202)


class DatabaseHandler(AccountsHandler):
    async def delete(self, project_id: str, ref: str, name: str) -> None:
        def delete() -> None:
            manager, primary = self.primary_of(ref, "delete_database")
            if name not in manager.list_databases(primary):
                raise NotFoundError(f"Database '{name}' cannot be found.", database=name)
            manager.delete_database(primary, name)

        await self.call(delete)
        self.reply(None, 202)


class UsersHandler(AccountsHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def listing() -> dict[str, Any]:
            manager, primary = self.primary_of(ref, "list_users")
            return {"users": [{"name": name, "host": "%", "databases": [{"name": d} for d in databases]}
                              for name, databases in manager.list_users(primary)]}

        self.reply(await self.call(listing))

    async def post(self, project_id: str, ref: str) -> None:
        users = []
        for n, user in enumerate(check_nodes(self.body().get("users"), "users", "name")):
            where = f"users[{n}]"
            databases = user.get("databases") or []
            if not isinstance(databases, list):
                raise ValidationError(f"{where}.databases must be a list", field=f"{where}.databases")
            if user.get("host") not in (None, "%"):
                raise _TroveFault(501, "Users are made for every host ('%'); another host is not supported yet.")
            grants = [check_sql_name(check_text(check_object(d, f"{where}.databases"), "name", f"{where}.databases"),
                                     "database") for d in databases]
            name = check_sql_name(check_text(user, "name", where), "user")
            users.append((name, check_text(user, "password", where), grants))

        def create() -> None:
            manager, primary = self.primary_of(ref, "list_users")
            for name, password, databases in users:
                for database in databases or [None]:
                    manager.create_user(primary, name, password, database)

        await self.call(create)
        self.reply(None, 202)


class UserHandler(AccountsHandler):
    async def delete(self, project_id: str, ref: str, quoted: str) -> None:
        # troveclient names a user as user[@host], quoted, with its dots as %2e
        name = urllib.parse.unquote(quoted).partition("@")[0]

        def delete() -> None:
            manager, primary = self.primary_of(ref, "delete_user")
            if name not in [user for user, _ in manager.list_users(primary)]:
                raise NotFoundError(f"User '{name}' cannot be found.", user=name)
            manager.delete_user(primary, name)

        await self.call(delete)
        self.reply(None, 202)


class BackupsHandler(TroveHandler):
    async def get(self, project_id: str, instance_ref: str | None = None) -> None:
        def listing() -> dict[str, Any]:
            backups = self.store.backups()
            wanted = instance_ref or self.get_query_argument("instance_id", None)
            if wanted:
                cluster_name = self.store.get_cluster(self.instance(wanted).cluster_id).name
                backups = [b for b in backups if b.cluster_name == cluster_name]
            datastore = self.get_query_argument("datastore", None)
            if datastore:
                backups = [b for b in backups if datastore in (b.datastore.manager, str(b.datastore.id))]
            page, links = self.page(project_id, "backups", backups, lambda b: b.id)
            views = self.views(project_id)
            return {"backups": [self.backup_json(views, b) for b in page], **links}

        self.reply(await self.call(listing))

    async def post(self, project_id: str, instance_ref: str | None = None) -> None:
        if instance_ref is not None:
            raise _TroveFault(405, "The method is not allowed for this resource.")
        spec = check_object(self.body().get("backup"), "backup")
        for option in ("restore_from", "parent_id", "swift_container", "storage_driver"):
            if spec.get(option) not in (None, ""):
                raise _TroveFault(501, f"backup.{option} is not supported by this service yet.")
        if spec.get("incremental") not in (None, 0, False):
            raise _TroveFault(501, "Incremental backups are not supported by this service yet.")
        name = check_text(spec, "name", "backup")
        instance_ref = str(spec.get("instance") or "")
        if not instance_ref:
            raise ValidationError("backup.instance is required", field="backup.instance")

        def create() -> dict[str, Any]:
            cluster = self.store.get_cluster(self.instance(instance_ref).cluster_id)
            self.check_available(cluster)
            record, _handle = self.api.runner.start_backup(cluster.name, name)
            return {"backup": self.backup_json(self.views(project_id), record)}

        self.reply(await self.call(create), 202)


class BackupHandler(TroveHandler):
    async def get(self, project_id: str, ref: str) -> None:
        def show() -> dict[str, Any]:
            return {"backup": self.backup_json(self.views(project_id), self.backup_record(ref))}

        self.reply(await self.call(show))

    async def delete(self, project_id: str, ref: str) -> None:
        await self.call(lambda: self.api.runner.delete_backup(self.backup_record(ref).id))
        self.reply(None, 202)


class TroveNotFoundHandler(TroveHandler):
    def prepare(self) -> None:
        super().prepare()
        raise _TroveFault(404, f"The resource could not be found: {self.request.path}")


def trove_routes(api: ClustersApi) -> list[tuple[str, type[TroveHandler], dict[str, Any]]]:
    """The Trove routes of ``api`` (a ``ClustersApi``: its store, runner, executor and token), with the
    identity endpoint its clients log in at (:mod:`workbench.clusters.identity`)."""
    routes: list[tuple[str, type[TroveHandler]]] = [
        (rf"{PREFIX}/clusters/?", ClustersHandler),
        (rf"{PREFIX}/clusters/{SEGMENT}/?", ClusterHandler),
        (rf"{PREFIX}/clusters/{SEGMENT}/instances/{SEGMENT}/?", ClusterInstanceHandler),
        (rf"{PREFIX}/datastores/?", DatastoresHandler),
        (rf"{PREFIX}/datastores/versions/{SEGMENT}/?", VersionByIdHandler),
        (rf"{PREFIX}/datastores/{SEGMENT}/?", DatastoreHandler),
        (rf"{PREFIX}/datastores/{SEGMENT}/versions/?", VersionsHandler),
        (rf"{PREFIX}/datastores/{SEGMENT}/versions/{SEGMENT}/?", VersionHandler),
        (rf"{PREFIX}/datastores/{SEGMENT}/versions/{SEGMENT}/flavors/?", VersionFlavorsHandler),
        (rf"{PREFIX}/datastores/versions/{SEGMENT}/parameters(?:/{SEGMENT})?/?", ParametersHandler),
        (rf"{PREFIX}/datastores/{SEGMENT}/versions/{SEGMENT}/parameters(?:/{SEGMENT})?/?", ParametersHandler),
        (rf"{PREFIX}/configurations/?", ConfigurationsHandler),
        (rf"{PREFIX}/configurations/{SEGMENT}/?", ConfigurationHandler),
        (rf"{PREFIX}/configurations/{SEGMENT}/instances/?", ConfigurationInstancesHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/configuration/?", InstanceConfigurationHandler),
        (rf"{PREFIX}/flavors/?", FlavorsHandler),
        (rf"{PREFIX}/flavors/{SEGMENT}/?", FlavorHandler),
        (rf"{PREFIX}/limits/?", LimitsHandler),
        (rf"{PREFIX}/instances(?:/(detail))?/?", InstancesHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/?", InstanceHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/action/?", InstanceActionHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/backups/?", BackupsHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/databases/?", DatabasesHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/databases/{SEGMENT}/?", DatabaseHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/users/?", UsersHandler),
        (rf"{PREFIX}/instances/{SEGMENT}/users/([^/]{{1,200}})/?", UserHandler),
        (rf"{PREFIX}/backups/?", BackupsHandler),
        (rf"{PREFIX}/backups/{SEGMENT}/?", BackupHandler),
        (r"/v1\.0(?:/.*)?", TroveNotFoundHandler),
    ]
    return identity_routes(api) + [(path, handler, {"api": api}) for path, handler in routes]


__all__ = ["trove_routes", "TroveHandler"]
