"""The HTTP API of workbench.clusters (tornado): datastores, clusters, nodes and backups as JSON.

::

    with ClustersApi(store, token="s3cret") as api:        # port 0: a free port, see api.url
        requests.post(f"{api.url}/api/clusters", headers={"Authorization": "Token s3cret"},
                      json={"name": "cache", "datastore": "redis-7", "size": 3})

Routes (every one needs the token, as ``Authorization: Token T``, ``Authorization: Bearer T`` or
``X-Auth-Token: T``; without it: 401)::

    GET    /api/datastores                 {"datastores": [...]}
    POST   /api/datastores                 {"manager", "version", "image"?, "packages"?} -> 201
    GET    /api/datastores/<id>            {"datastore": {...}}
    GET    /api/clusters                   {"clusters": [...]}
    POST   /api/clusters                   {"name", "datastore", "version"?, "size"?, "provider"?,
                                            "restore_from"?} -> 202 {"cluster", "task"}
    GET    /api/clusters/<id or name>      {"cluster": {..., "instances": [...]}}
    DELETE /api/clusters/<id or name>      -> 202 {"cluster", "task"} (destroyed in the background)
    POST   /api/clusters/<id>/nodes        {"count"?: 1} -> 202 {"cluster", "instances", "task"}
    GET    /api/clusters/<id>/backups      {"backups": [...]}
    POST   /api/clusters/<id>/backups      -> 202 {"task"}
    POST   /api/clusters/<id>/perform      {"command"} -> 202 {"task"} (a shell line run on each instance
                                            with $WB_PORT, $WB_ADDRESS, $WB_ROLE, $WB_DATASTORE set;
                                            the output is in the task's log, "out: ..." lines)
    PUT    /api/clusters/<id>/configuration  {"configuration": id, name or null} -> 202 {"task"} (applied
                                            to every instance; restarted only where a parameter needs it)
    GET    /api/clusters/<id>/schedule     {"schedule": {"interval", "keep", "next_run", "last_run"} or null}
    PUT    /api/clusters/<id>/schedule     {"interval": seconds, "keep": N} -> {"schedule"} (the API's
                                            runner takes them; only the newest N scheduled backups stay)
    DELETE /api/clusters/<id>/schedule     -> {"schedule": null}
    GET    /api/configurations             {"configurations": [...]}
    POST   /api/configurations             {"name", "datastore", "version"?, "values", "description"?} -> 201
    GET    /api/configurations/<id>        {"configuration": {..., "values", "instances"}}
    PATCH  /api/configurations/<id>        {"values"?, "name"?, "description"?} (values merged; PUT:
                                            replaced) -> 202 {"configuration", "task"} (re-applied)
    DELETE /api/configurations/<id>        -> {"configuration"} (400 while attached)
    GET    /api/tasks/<id>                 {"task": {..., "log"}}

Long operations run on the :class:`~workbench.clusters.tasks.TaskRunner` and answer 202 with
the task; clients poll the cluster or the task. Errors are the envelope of ``workbench.errors``
(``kind``, ``message``, ``fields``; ``client.ClustersClient`` raises the class ``kind`` names) with
``error``, the line to show::

    400 {"kind": "ValidationError", "fields": {"size": "a cluster has at most 5 nodes ..."},
         "error": "validation failed", "message": "validation failed"}
    401 {"kind": "TokenRequired", "error": "a valid API token is required", ...}
    404 {"kind": "NotFoundError", "error": "no cluster nope", "fields": {"cluster": "nope"}, ...}
    409 {"kind": "TaskError", "error": "cluster cache is building, not active", ...}

Nothing is changed by a refused request: every field is checked before the store is touched.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import tornado.web

from workbench.clusters.errors import CLUSTERS_ERRORS, ClustersError, NotFoundError, TaskError, TokenRequired, \
    ValidationError
from workbench.clusters.models import (Backup, BackupSchedule, Cluster, ClusterStore, Configuration, Datastore,
                                       Instance, Task)
from workbench.clusters.tasks import TaskHandle, TaskRunner
from workbench.clusters.trove_api import trove_routes
from workbench.httpserver import HttpServer
from workbench.servers import Address, ServerLifecycle

#: the fields each request body may have, with their JSON types (checked before anything runs)
CLUSTER_FIELDS: dict[str, tuple[type, ...]] = {"name": (str,), "datastore": (str, int), "version": (str,),
                                               "size": (int,), "provider": (str,), "restore_from": (str, int)}
DATASTORE_FIELDS: dict[str, tuple[type, ...]] = {"manager": (str,), "version": (str,), "image": (str,),
                                                 "packages": (str,)}
NODES_FIELDS: dict[str, tuple[type, ...]] = {"count": (int,)}
CONFIGURATION_FIELDS: dict[str, tuple[type, ...]] = {"name": (str,), "datastore": (str, int), "version": (str,),
                                                     "values": (dict,), "description": (str,)}
CONFIGURATION_UPDATE_FIELDS: dict[str, tuple[type, ...]] = {"values": (dict,), "name": (str,),
                                                            "description": (str,)}
CONFIGURE_FIELDS: dict[str, tuple[type, ...]] = {"configuration": (str, int)}
SCHEDULE_FIELDS: dict[str, tuple[type, ...]] = {"interval": (int,), "keep": (int,)}
#: the longest string a field may hold (the widest column is 1024 characters)
MAX_FIELD_LENGTH = 1024
#: whole numbers must fit the 64-bit integer columns they are looked up in
MAX_INTEGER = 2**63 - 1
#: the largest request body read (tornado buffers a body before the token is checked)
MAX_BODY_BYTES = 1 << 20


# -- JSON shapes ------------------------------------------------------------------------------------
def _time(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def datastore_json(datastore: Datastore) -> dict[str, Any]:
    return {"id": datastore.id, "manager": datastore.manager, "version": datastore.version, "name": datastore.name,
            "image": datastore.image,
            # as stored, unchecked: listing a row written before the package rule must still work
            "packages": [p.strip() for p in (datastore.packages or "").split(",") if p.strip()]}


def instance_json(instance: Instance) -> dict[str, Any]:
    return {"id": instance.id, "name": instance.name, "role": instance.role, "addr": instance.addr,
            "port": instance.port, "status": instance.status, "server_status": instance.server_status,
            "progress": instance.progress, "message": instance.message, "task": instance.task,
            "volume": instance.volume or None}


def cluster_json(cluster: Cluster) -> dict[str, Any]:
    return {"id": cluster.id, "name": cluster.name, "datastore": datastore_json(cluster.datastore),
            "size": cluster.size, "provider": cluster.provider, "status": cluster.status,
            "message": cluster.message, "created": _time(cluster.created),
            "instances": [instance_json(i) for i in cluster.instances]}


def backup_json(backup: Backup) -> dict[str, Any]:
    return {"id": backup.id, "name": backup.name, "cluster": backup.cluster_name,
            "datastore": backup.datastore.name, "size": backup.size, "sha256": backup.sha256,
            "status": backup.status, "message": backup.message, "created": _time(backup.created)}


def configuration_json(configuration: Configuration, instances: list[Instance] | None = None) -> dict[str, Any]:
    body = {"id": configuration.id, "name": configuration.name, "description": configuration.description,
            "datastore": configuration.datastore.name, "values": configuration.values,
            "created": _time(configuration.created), "updated": _time(configuration.updated)}
    if instances is not None:
        body["instances"] = [i.name for i in instances]
    return body


def schedule_json(schedule: BackupSchedule | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    return {"interval": schedule.interval, "keep": schedule.keep, "next_run": _time(schedule.next_run),
            "last_run": _time(schedule.last_run)}


def task_json(task: Task, log: bool = False) -> dict[str, Any]:
    body = {"id": task.id, "name": task.name, "cluster": task.cluster_name, "status": task.status,
            "progress": task.progress, "message": task.message, "created": _time(task.created),
            "finished": _time(task.finished)}
    if log:
        body["log"] = task.log
    return body


def check_fields(body: Any, allowed: dict[str, tuple[type, ...]], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``body`` if it is an object with only ``allowed`` fields of the right types, else ``ValidationError``.

    Every problem is reported at once, one message per field.
    """
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body",
                              fields={"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    for name in required:
        if body.get(name) in (None, ""):
            problems[name] = "this field is required"
    for name, value in body.items():
        if name not in allowed:
            problems[name] = f"unknown field (allowed: {', '.join(allowed)})"
        elif value is not None and name not in problems and (
                not isinstance(value, allowed[name]) or isinstance(value, bool)):
            kinds = " or ".join({str: "a string", int: "a whole number", dict: "an object"}[t] for t in allowed[name])
            problems[name] = f"must be {kinds}"
        elif isinstance(value, int) and not isinstance(value, bool) and not -MAX_INTEGER <= value <= MAX_INTEGER:
            problems[name] = "is out of range"
        elif isinstance(value, str) and len(value) > MAX_FIELD_LENGTH:
            problems[name] = f"must have at most {MAX_FIELD_LENGTH} characters"
        elif isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
            # NUL alone is refused by PostgreSQL; no field has a use for any control character
            problems[name] = "must not contain control characters"
    if problems:
        raise ValidationError("validation failed", field=next(iter(problems)), fields=problems)
    return {k: v for k, v in body.items() if v is not None}


# -- handlers ---------------------------------------------------------------------------------------
class ApiHandler(tornado.web.RequestHandler):
    """Base of the routes: token check, JSON bodies, store calls off the event loop, JSON errors."""

    def initialize(self, api: ClustersApi) -> None:
        self.api = api

    def prepare(self) -> None:
        if not self.api.token_matches(self._presented_token()):
            self.set_header("WWW-Authenticate", 'Token realm="workbench-clusters"')
            raise _HttpError(401, "a valid API token is required (Authorization: Token <token>)")

    def _presented_token(self) -> str:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return self.request.headers.get("X-Auth-Token", "")

    def parsed_body(self) -> Any:
        """The request body parsed as JSON (an empty body is ``{}``), else ``ValidationError``."""
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise ValidationError(f"the request body is not JSON: {exc}", field="body",
                                  fields={"body": f"not JSON: {exc}"}) from None
        except RecursionError:  # the C decoder stops at the recursion limit, cleanly
            raise ValidationError("the request body is nested too deeply", field="body",
                                  fields={"body": "nested too deeply"}) from None

    def body_json(self, allowed: dict[str, tuple[type, ...]], required: tuple[str, ...] = ()) -> dict[str, Any]:
        return check_fields(self.parsed_body(), allowed, required)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a store or runner call on a worker thread: SQL and key generation must not stall the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.api.executor, function, *args)

    async def task_reply(self, handle: TaskHandle) -> dict[str, Any]:
        """The JSON of a submitted task, as stored now."""
        return task_json(await self.call(self.api.store.get_task, handle.task_id))

    def reply(self, body: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if isinstance(error, _HttpError):
            message = error.message
        elif isinstance(error, tornado.web.HTTPError):
            message = error.log_message or self._reason
        else:
            message = "internal error (see the server log)"
        self.finish(json.dumps(_http_error_body(status_code, message)))

    def _handle_request_exception(self, error: BaseException) -> None:
        if isinstance(error, ClustersError) and not self._finished:
            status, body = _error_reply(error)
            self.clear()
            self.reply(body, status)
            return
        super()._handle_request_exception(error)

    def check_xsrf_cookie(self) -> None:  # token-authenticated API: no cookies, no forms
        return None


class _HttpError(tornado.web.HTTPError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.message = message


def _error_reply(error: ClustersError) -> tuple[int, dict[str, Any]]:
    """The status and body a library error becomes: its envelope, and ``error`` to show."""
    envelope = CLUSTERS_ERRORS.envelope(error)
    if isinstance(error, ValidationError):
        # the envelope's fields are every bad field's problem (ValidationError.wire_fields)
        return 400, {"error": "validation failed" if "fields" in error.fields else error.message, **envelope}
    status = 404 if isinstance(error, NotFoundError) else 409 if isinstance(error, TaskError) else 500
    return status, {"error": error.message, **envelope}


#: the library error an HTTP status of the API's own stands for (others: an "HTTPError" kind)
_STATUS_ERRORS: dict[int, type[ClustersError]] = {401: TokenRequired, 404: NotFoundError}


def _http_error_body(status: int, message: str) -> dict[str, Any]:
    """The body of an error the HTTP layer answers (no token, no route, bad method, a crash)."""
    error_class = _STATUS_ERRORS.get(status)
    if error_class is not None:
        return {"error": message, **CLUSTERS_ERRORS.envelope(error_class(message))}
    # not a library error: a client raises its ClustersError fallback, kind "HTTPError", with the status
    return {"error": message, "kind": "HTTPError", "message": message, "fields": {"status": status}}


class DatastoresHandler(ApiHandler):
    async def get(self) -> None:
        datastores = await self.call(self.api.store.datastores)
        self.reply({"datastores": [datastore_json(d) for d in datastores]})

    async def post(self) -> None:
        body = self.body_json(DATASTORE_FIELDS, required=("manager", "version"))
        try:
            datastore = await self.call(lambda: self.api.store.add_datastore(
                body["manager"], body["version"], body.get("image", ""), body.get("packages", "")))
        except ValidationError as exc:  # the store names the manager "datastore"
            field = "manager" if exc.fields.get("field") == "datastore" else exc.fields.get("field", "body")
            raise ValidationError("validation failed", field=field, fields={field: exc.message}) from None
        self.set_header("Location", f"/api/datastores/{datastore.id}")
        self.reply({"datastore": datastore_json(datastore)}, 201)


class DatastoreHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        datastore = await self.call(self.api.store.get_datastore, _ref(ref))
        self.reply({"datastore": datastore_json(datastore)})


class ClustersHandler(ApiHandler):
    async def get(self) -> None:
        clusters = await self.call(self.api.store.clusters)
        self.reply({"clusters": [cluster_json(c) for c in clusters]})

    async def post(self) -> None:
        raw = self.parsed_body()
        # a restore takes its datastore from the backup
        restoring = isinstance(raw, dict) and raw.get("restore_from") is not None
        body = check_fields(raw, CLUSTER_FIELDS, required=("name",) if restoring else ("name", "datastore"))
        restore = body.get("restore_from")
        datastore = body.get("datastore", "")
        if body.get("version"):
            if not isinstance(datastore, str) or not datastore:
                raise ValidationError("validation failed", field="version",
                                      fields={"version": "goes with a datastore manager name, e.g. redis"})
            datastore = f"{datastore}-{body['version']}"

        def create() -> tuple[Cluster, TaskHandle]:
            handle = self.api.runner.create_cluster(body["name"], datastore, body.get("size", 1),
                                                    body.get("provider"), restore_from=restore)
            return self.api.store.get_cluster(body["name"]), handle

        try:
            cluster, handle = await self.call(create)
        except NotFoundError as exc:  # a datastore or backup named in the body: the body is wrong
            field = "restore_from" if "backup" in exc.fields else "datastore"
            raise ValidationError("validation failed", field=field, fields={field: exc.message}) from None
        self.set_header("Location", f"/api/clusters/{cluster.id}")
        self.reply({"cluster": cluster_json(cluster), "task": await self.task_reply(handle)}, 202)


class ClusterHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        self.reply({"cluster": cluster_json(cluster)})

    async def delete(self, ref: str) -> None:
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        handle = await self.call(self.api.runner.destroy_cluster, cluster.name)
        cluster = await self.call(self.api.store.get_cluster, cluster.id)
        self.reply({"cluster": cluster_json(cluster), "task": await self.task_reply(handle)}, 202)


class NodesHandler(ApiHandler):
    async def post(self, ref: str) -> None:
        body = self.body_json(NODES_FIELDS)
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        before = {i.id for i in cluster.instances}
        handle = await self.call(self.api.runner.add_nodes, cluster.name, body.get("count", 1))
        cluster = await self.call(self.api.store.get_cluster, cluster.id)
        added = [instance_json(i) for i in cluster.instances if i.id not in before]
        self.reply({"cluster": cluster_json(cluster), "instances": added, "task": await self.task_reply(handle)}, 202)


class BackupsHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        backups = await self.call(self.api.store.backups, cluster.name)
        self.reply({"backups": [backup_json(b) for b in backups]})

    async def post(self, ref: str) -> None:
        self.body_json({})
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        if cluster.status != "active":
            raise TaskError(f"cluster {cluster.name} is {cluster.status}, not active: cannot back it up",
                            cluster=cluster.name)
        handle = await self.call(self.api.runner.backup_cluster, cluster.name)
        self.reply({"task": await self.task_reply(handle)}, 202)


class PerformHandler(ApiHandler):
    async def post(self, ref: str) -> None:
        body = self.body_json({"command": (str,)}, required=("command",))
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        if cluster.status != "active":
            raise TaskError(f"cluster {cluster.name} is {cluster.status}, not active: cannot perform on it",
                            cluster=cluster.name)
        handle = await self.call(self.api.runner.perform, cluster.name, "api", body["command"])
        self.reply({"task": await self.task_reply(handle)}, 202)


class ConfigurationsHandler(ApiHandler):
    async def get(self) -> None:
        groups = await self.call(self.api.store.configurations)
        self.reply({"configurations": [configuration_json(c) for c in groups]})

    async def post(self) -> None:
        body = self.body_json(CONFIGURATION_FIELDS, required=("name", "datastore"))
        datastore = body["datastore"]
        if body.get("version"):
            datastore = f"{datastore}-{body['version']}"
        group = await self.call(lambda: self.api.store.create_configuration(
            body["name"], datastore, body.get("values", {}), body.get("description", "")))
        self.set_header("Location", f"/api/configurations/{group.id}")
        self.reply({"configuration": configuration_json(group, [])}, 201)


class ConfigurationHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        group = await self.call(self.api.store.get_configuration, _ref(ref))
        attached = await self.call(self.api.store.configuration_instances, group.id)
        self.reply({"configuration": configuration_json(group, attached)})

    async def _update(self, ref: str, replace: bool) -> None:
        body = self.body_json(CONFIGURATION_UPDATE_FIELDS)
        group = await self.call(self.api.store.get_configuration, _ref(ref))
        group, handle = await self.call(lambda: self.api.runner.update_configuration(
            group.id, body.get("values"), replace=replace, name=body.get("name"), description=body.get("description")))
        task = await self.task_reply(handle) if handle is not None else None
        self.reply({"configuration": configuration_json(group), "task": task}, 202 if task else 200)

    async def patch(self, ref: str) -> None:
        await self._update(ref, replace=False)

    async def put(self, ref: str) -> None:
        await self._update(ref, replace=True)

    async def delete(self, ref: str) -> None:
        group = await self.call(self.api.store.get_configuration, _ref(ref))
        await self.call(self.api.store.delete_configuration, group.id)
        self.reply({"configuration": configuration_json(group)})


class ClusterConfigurationHandler(ApiHandler):
    async def put(self, ref: str) -> None:
        """``{"configuration": id or name}`` attaches the group to every instance; null detaches it."""
        body = self.body_json(CONFIGURE_FIELDS)
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        group = body.get("configuration")
        handle = await self.call(self.api.runner.configure_cluster, cluster.name,
                                 _ref(group) if isinstance(group, str) else group)
        self.reply({"task": await self.task_reply(handle)}, 202)


class ScheduleHandler(ApiHandler):
    async def get(self, ref: str) -> None:
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        self.reply({"schedule": schedule_json(await self.call(self.api.store.backup_schedule, cluster.name))})

    async def put(self, ref: str) -> None:
        body = self.body_json(SCHEDULE_FIELDS, required=("interval", "keep"))
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        schedule = await self.call(self.api.store.set_backup_schedule, cluster.name, body["interval"], body["keep"])
        self.reply({"schedule": schedule_json(schedule)})

    async def delete(self, ref: str) -> None:
        cluster = await self.call(self.api.store.get_cluster, _ref(ref))
        await self.call(self.api.store.delete_backup_schedule, cluster.name)
        self.reply({"schedule": None})


class TaskHandler(ApiHandler):
    async def get(self, task_id: str) -> None:
        task = await self.call(self.api.store.get_task, _ref(task_id))
        self.reply({"task": task_json(task, log=True)})


class NotFoundHandler(ApiHandler):
    def prepare(self) -> None:
        super().prepare()
        raise _HttpError(404, f"no such resource: {self.request.path}")


def _ref(value: str) -> int | str:
    """A path segment as an id when it is a number, else as a name (an id no column can hold:
    ``NotFoundError``)."""
    if not value.isdigit():
        return value
    if int(value) > MAX_INTEGER:
        raise NotFoundError(f"no such id {value[:40]}", id=value[:40])
    return int(value)


# -- the server -------------------------------------------------------------------------------------
class ClustersApi(ServerLifecycle):
    """The clusters HTTP API as a server object: ``start()`` (returns once bound), ``url``, ``stop()``.

    ``store`` holds the state; ``runner`` runs the long operations (default: a ``TaskRunner`` of
    the store, closed by ``stop()``); ``token`` is the API token (default: a random one, see
    ``token``); ``port`` 0 picks a free port.
    """

    def __init__(self, store: ClusterStore, runner: TaskRunner | None = None, *, token: str | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if token is not None and len(token) < 8:
            raise ValidationError("the API token must have at least 8 characters", field="token")
        super().__init__()
        self.store = store
        self._own_runner = runner is None
        self.runner = runner or TaskRunner(store)
        self.token = token or secrets.token_urlsafe(24)
        self.executor = ThreadPoolExecutor(4, thread_name_prefix="clusters-api")
        self._http = HttpServer(self.application(), host, port, name="clusters-api", bind_error=ClustersError,
                                max_body_size=MAX_BODY_BYTES)

    def application(self) -> tornado.web.Application:
        ident = r"([A-Za-z0-9_.-]+)"
        routes: list[tuple[str, type[ApiHandler]]] = [
            (r"/api/datastores/?", DatastoresHandler),
            (rf"/api/datastores/{ident}/?", DatastoreHandler),
            (r"/api/clusters/?", ClustersHandler),
            (rf"/api/clusters/{ident}/?", ClusterHandler),
            (rf"/api/clusters/{ident}/nodes/?", NodesHandler),
            (rf"/api/clusters/{ident}/backups/?", BackupsHandler),
            (rf"/api/clusters/{ident}/perform/?", PerformHandler),
            (rf"/api/clusters/{ident}/configuration/?", ClusterConfigurationHandler),
            (rf"/api/clusters/{ident}/schedule/?", ScheduleHandler),
            (r"/api/configurations/?", ConfigurationsHandler),
            (rf"/api/configurations/{ident}/?", ConfigurationHandler),
            (r"/api/tasks/([0-9]+)/?", TaskHandler),
            (r"/.*", NotFoundHandler),
        ]
        # Trove's v1.0 API (workbench.clusters.trove_api) beside /api, before the catch-all
        return tornado.web.Application(trove_routes(self) + [(path, handler, {"api": self})
                                                             for path, handler in routes])

    def token_matches(self, presented: str) -> bool:
        return bool(presented) and secrets.compare_digest(presented.encode(), self.token.encode())

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def address(self) -> Address:
        return self._http.address

    # start(), stop() and serve_forever() are ServerLifecycle's
    def _start(self) -> None:
        """Serve, and take the clusters' scheduled backups while serving: the API is the process that stays."""
        self._http.start()
        self.runner.start_scheduler()

    def _stop(self) -> None:
        """Stop serving; a runner this API made is closed too (cancelling what it still runs)."""
        self._http.stop()
        self.executor.shutdown(wait=True)
        if self._own_runner:
            self.runner.close()


__all__ = ["ClustersApi", "check_fields", "cluster_json", "instance_json",
           "datastore_json", "backup_json", "task_json", "configuration_json", "schedule_json"]
