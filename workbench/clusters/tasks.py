"""Background tasks: the seed's perform, create_server, create_volume, attach_volume, prepare, backup,
plus restore and destroy, and the runner that executes them on threads.

Each task is a function ``task(ctx, ...)`` where ``ctx`` (:class:`TaskContext`) logs lines into the
task's stored log, reports progress, and raises ``TaskCancelled`` once the task is cancelled. The
:class:`TaskRunner` runs whole operations (create a cluster, add or remove nodes, back up, restore, destroy,
perform) as tasks and returns a :class:`TaskHandle`::

    runner = TaskRunner(store)
    handle = runner.create_cluster("cache", "redis-7", size=3)
    handle.wait(timeout=300)                 # raises the task's error, if any
    runner.perform("cache", "uptime", "uptime").wait()

``configure_instance``/``configure_cluster`` attach a configuration group and apply it
(``apply_configuration``: live, restarting only when a parameter needs it); ``start_scheduler``
takes the clusters' scheduled backups (``scheduled_backup``: a backup, then its retention) until
``close()``.

Instances of one cluster are created and installed in parallel; each replica then follows the
primary as soon as the primary runs (in its install step already, where the manager can wait
briefly on the host for the primary to answer). A failed step marks the instance and the cluster as
error with the message, then stops and destroys every server the operation created.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.clusters.connection import Connection, OutputCallback, SessionPool
from workbench.clusters.errors import (ClustersError, ConnectionFailed, NotFoundError, TaskCancelled, TaskError,
                                       UnknownHostKeyError, ValidationError)
from workbench.clusters.managers.base import BaseManager
from workbench.clusters.models import (ACTIVE, BUILDING, CANCELLED, DELETED, DESTROYING, DONE, ERROR, FAILED, NEW,
                                       PRIMARY, QUEUED, RUNNING, Backup, Cluster, ClusterStore, Configuration, Datastore,
                                       Instance, scheduled_backup_prefix, utcnow)
from workbench.clusters.providers import BaseProvider, get_provider, load_object
from workbench.clusters.settings import Settings

log = logging.getLogger(__name__)


#: seconds a replica's install waits for its primary's server to be placed, so that it can follow
#: the primary in the same step
PLACEMENT_WAIT = 0.5


class TaskContext:
    """What a running task can do besides its work: log, report progress, notice cancellation."""

    def __init__(self, runner: TaskRunner, task_id: int, name: str, cancelled: threading.Event,
                 cluster_name: str = "") -> None:
        self.runner = runner
        self.store = runner.store
        self.task_id = task_id
        self.name = name
        self.cancelled = cancelled
        self.cluster_name = cluster_name
        #: the instance whose failure (not a cancellation) stopped the operation: its message is the cluster's
        self.first_failure: int | None = None

    def log(self, line: str, instance_name: str = "") -> None:
        """Append a line to the task's stored log (and emit it as ``task_output``)."""
        prefix = f"[{instance_name}] " if instance_name else ""
        self.store.append_task_log(self.task_id, prefix + line, instance_name)

    def output(self, instance_name: str, extra: OutputCallback | None = None) -> OutputCallback:
        """A callback for command output lines: logged as ``out: ...`` and passed on to ``extra``."""
        def write(line: str) -> None:
            self.log(f"out: {line}", instance_name)
            if extra is not None:
                extra(line)
        return write

    def progress(self, percent: int, message: str | None = None) -> None:
        fields: dict[str, Any] = {"progress": max(0, min(100, int(percent)))}
        if message is not None:
            fields["message"] = message
        self.store.update_task(self.task_id, **fields)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise TaskCancelled(f"task {self.name} was cancelled", task=self.name)

    def step(self, instance: Instance, task: str, progress: int | None = None, **fields: Any) -> None:
        """Record that ``instance`` is at step ``task`` (stored, emitted) after a cancellation check."""
        self.check_cancelled()
        fields["task"] = task
        if progress is not None:
            fields["progress"] = progress
        self.runner.store.update_instance(instance.id, **fields)
        self.log(task, instance.name)

    def retry(self, action: Callable[[], Any], what: str, attempts: int | None = None) -> Any:
        """Run ``action``, repeating it after connection failures (only for actions safe to repeat)."""
        attempts = (self.runner.settings.task_retries if attempts is None else attempts) + 1
        for attempt in range(1, attempts + 1):
            self.check_cancelled()
            try:
                return action()
            except UnknownHostKeyError:
                raise
            except ConnectionFailed as exc:
                if attempt == attempts:
                    raise
                self.log(f"{what}: {exc}; retrying ({attempt}/{attempts - 1})")
                time.sleep(min(0.5 * 2 ** attempt, 5.0))
        raise AssertionError("unreachable")


class TaskHandle:
    """A submitted task: wait for it, cancel it, read its state from the store."""

    def __init__(self, runner: TaskRunner, task_id: int, name: str, future: concurrent.futures.Future[Any],
                 cancelled: threading.Event, cluster_name: str = "") -> None:
        self.runner = runner
        self.task_id = task_id
        self.name = name
        self.cluster_name = cluster_name
        self.future = future
        self._cancelled = cancelled

    def wait(self, timeout: float | None = None) -> Any:
        """The task's result; re-raises its error; ``TimeoutError`` if not done in ``timeout`` seconds."""
        try:
            return self.future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"task {self.name} ({self.task_id}) not done after {timeout}s") from None

    def cancel(self) -> None:
        """Ask the task to stop at its next step; a failed-step cleanup then runs as for any failure."""
        self._cancelled.set()
        self.runner.store.append_task_log(self.task_id, "cancel requested")

    def done(self) -> bool:
        return self.future.done()

    @property
    def status(self) -> str:
        return self.runner.store.get_task(self.task_id).status

    @property
    def log(self) -> str:
        return self.runner.store.get_task(self.task_id).log

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task_id} {self.name} {'done' if self.done() else 'running'}>"


# -- the tasks -----------------------------------------------------------------------------------------
def perform_environment(instance: Instance) -> dict[str, str]:
    """What a ``perform`` command finds in its environment on the host: this instance's own values.

    ``WB_PORT`` (the datastore's port), ``WB_ADDRESS`` (its address), ``WB_ROLE`` (primary or
    replica) and ``WB_DATASTORE`` (``redis-7``): one command line serves every instance, e.g.
    ``redis-cli -p $WB_PORT info replication``.
    """
    datastore = instance.cluster.datastore
    return {"WB_PORT": str(instance.port), "WB_ADDRESS": instance.addr, "WB_ROLE": instance.role,
            "WB_DATASTORE": f"{datastore.manager}-{datastore.version}"}


def perform(ctx: TaskContext, instance_id: int, name: str, *cmds: str,
            on_output: OutputCallback | None = None) -> list[str]:
    """Execute remote commands (shell scripts, on purpose) on an instance; returns each one's output.

    Each command runs with the instance's :func:`perform_environment` (``$WB_PORT``...).
    """
    instance = ctx.store.get_instance(instance_id)
    env = perform_environment(instance)
    outputs = []
    with ctx.runner.connect(instance) as conn:
        for cmd in cmds:
            ctx.check_cancelled()
            ctx.log(f"[{instance.user or 'local'}@{instance.addr}] run: {cmd}", instance.name)
            result = conn.run_shell(cmd, check=False, on_output=ctx.output(instance.name, on_output), env=env)
            for line in result.stderr.splitlines():
                ctx.log(f"err: {line}", instance.name)
            result.check()
            outputs.append(result.stdout)
    ctx.log(f"{name}: done", instance.name)
    return outputs


def create_server(ctx: TaskContext, instance_id: int, volume_id: str | None = None) -> Instance:
    """Create the server of an instance with its cluster's provider (and attach ``volume_id``)."""
    instance = ctx.store.get_instance(instance_id)
    ctx.step(instance, "create_server", progress=5, status=BUILDING)
    provider = ctx.runner.provider_for(instance.cluster)
    provider.create(instance)
    if volume_id:
        attach_volume(ctx, instance_id, volume_id)
    return ctx.store.get_instance(instance_id)


def create_volume(ctx: TaskContext, instance_id: int, size_gb: int = 1) -> str:
    """Create a volume for the instance; returns its id."""
    instance = ctx.store.get_instance(instance_id)
    ctx.step(instance, "create_volume")
    return ctx.runner.provider_for(instance.cluster).create_volume(instance, size_gb)


def attach_volume(ctx: TaskContext, instance_id: int, volume_id: str) -> str:
    """Attach a volume to the instance's server."""
    instance = ctx.store.get_instance(instance_id)
    ctx.step(instance, "attach_volume")
    return ctx.runner.provider_for(instance.cluster).attach_volume(instance, volume_id)


def prepare(ctx: TaskContext, instance_id: int, primary_id: int | None = None) -> None:
    """Install and configure the datastore on the instance (and make it follow ``primary_id`` if given;
    the cluster build leaves that to ``replicate``, which runs once the primary is up)."""
    instance = ctx.store.get_instance(instance_id)
    ctx.step(instance, "prepare", progress=40)
    manager = ctx.runner.manager_for(instance.cluster.datastore)
    primary = ctx.store.get_instance(primary_id) if primary_id is not None else None
    manager.prepare(instance, primary=primary, log=lambda line: ctx.log(line, instance.name))
    ctx.store.update_instance(instance.id, progress=80, server_status="running")


def prepare_replica(ctx: TaskContext, instance_id: int, primary_id: int) -> bool:
    """``prepare`` a replica and, when the manager can and the primary answers soon, make it follow
    in the same step; returns whether it follows (else ``replicate`` is still to run)."""
    primary = ctx.store.get_instance(primary_id)
    instance = ctx.store.get_instance(instance_id)
    manager = ctx.runner.manager_for(instance.cluster.datastore)
    # a manager that overrides prepare (the seed's interface) is always called through it; a
    # primary without a server yet has nothing to wait for
    if type(manager).prepare is not BaseManager.prepare or not (primary.addr and primary.port):
        prepare(ctx, instance_id)
        return False
    ctx.step(instance, "prepare", progress=40)
    followed = manager.install_replica(instance, primary, log=lambda line: ctx.log(line, instance.name))
    ctx.store.update_instance(instance.id, progress=85 if followed else 80, server_status="running")
    return followed


def replicate(ctx: TaskContext, instance_id: int, primary_id: int) -> None:
    """Make an installed replica follow its running primary."""
    instance = ctx.store.get_instance(instance_id)
    ctx.step(instance, "replicate", progress=85)
    primary = ctx.store.get_instance(primary_id)
    ctx.runner.manager_for(instance.cluster.datastore).follow(instance, primary,
                                                             log=lambda line: ctx.log(line, instance.name))


def backup(ctx: TaskContext, cluster_id: int, record_id: int | None = None) -> Backup:
    """Back up a cluster's primary into the workbench's backup directory; returns the Backup record
    (``record_id``: the one recorded when the backup was asked for, else a new one)."""
    cluster = ctx.store.get_cluster(cluster_id)
    if cluster.status != ACTIVE:
        error = TaskError(f"cluster {cluster.name} is {cluster.status}, not active: cannot back it up",
                          task="backup", cluster=cluster.name)
        if record_id is not None:
            ctx.store.update_backup(record_id, status=FAILED, message=error.message)
        raise error
    record = ctx.store.get_backup(record_id) if record_id is not None else ctx.store.add_backup(cluster)
    primary = cluster.primary
    try:
        ctx.step(primary, "backup")
        manager = ctx.runner.manager_for(cluster.datastore)
        path = manager.backup(primary, ctx.runner.settings.backup_path / cluster.name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record = ctx.store.update_backup(record.id, path=str(path), size=path.stat().st_size, sha256=digest,
                                         status=DONE)
    except BaseException as exc:
        ctx.store.update_backup(record.id, status=FAILED, message=str(exc))
        raise
    finally:
        ctx.store.update_instance(primary.id, task="")
    ctx.log(f"backup {record.name}: {record.size} bytes in {record.path}", primary.name)
    return record


def restore(ctx: TaskContext, instance_id: int, backup_id: int) -> None:
    """Load a backup into an instance (the primary of a new cluster)."""
    instance = ctx.store.get_instance(instance_id)
    record = ctx.store.get_backup(backup_id)
    ctx.step(instance, "restore", progress=85)
    path = Path(record.path)
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != record.sha256:
        raise TaskError(f"backup file {path} is missing or does not match its checksum", task="restore",
                        backup=record.name)
    ctx.runner.manager_for(instance.cluster.datastore).restore(instance, path)


def restart(ctx: TaskContext, instance_id: int) -> None:
    """Stop and start the datastore of an instance (done once it answers); a failure marks it error."""
    instance = ctx.store.get_instance(instance_id)
    ctx.step(instance, "restart")
    try:
        ctx.runner.manager_for(instance.cluster.datastore).restart(instance)
    except BaseException as exc:
        _mark_failed(ctx, instance, exc)
        raise
    finally:
        ctx.store.update_instance(instance.id, task="")


def apply_configuration(ctx: TaskContext, instance_id: int, before: dict[str, Any]) -> bool:
    """Render an instance's config again with its configuration group's values (``before``: what the
    running server has) and apply them, restarting only if a parameter needs it; returns whether it
    restarted. A failure marks the instance error."""
    instance = ctx.store.get_instance(instance_id)
    cluster = ctx.store.get_cluster(instance.cluster_id)
    ctx.step(instance, "configure")
    try:
        after = ctx.runner.configuration_values(instance)
        restarted = ctx.runner.manager_for(cluster.datastore).apply_parameters(
            instance, before, after, primary=cluster.primary, log=lambda line: ctx.log(line, instance.name))
    except BaseException as exc:
        _mark_failed(ctx, instance, exc)
        raise
    finally:
        ctx.store.update_instance(instance.id, task="")
    return restarted


def scheduled_backup(ctx: TaskContext, cluster_id: int, record_id: int, keep: int) -> Backup:
    """A backup the schedule of a cluster asked for, then its retention: of the cluster's completed
    scheduled backups, only the newest ``keep`` stay (the others are deleted with their files)."""
    record = backup(ctx, cluster_id, record_id)
    prefix = scheduled_backup_prefix(record.cluster_name)
    done = [b for b in ctx.store.backups(record.cluster_name) if b.name.startswith(prefix) and b.status == DONE]
    for old in done[:-keep] if len(done) > keep else []:
        ctx.log(f"retention: deleting backup {old.name} (keeping the newest {keep})")
        ctx.runner.delete_backup(old.id)
    return record


def destroy(ctx: TaskContext, instance_id: int) -> None:
    """Stop the datastore of an instance and destroy its server (best effort on the datastore)."""
    instance = ctx.store.get_instance(instance_id)
    ctx.store.update_instance(instance.id, task="destroy", status=DESTROYING)
    ctx.log("destroy", instance.name)
    _stop_and_release(ctx, instance)
    ctx.store.update_instance(instance.id, status=DELETED, server="", task="", progress=0)


def _stop_and_release(ctx: TaskContext, instance: Instance) -> None:
    """Stop the datastore (best effort: the server goes anyway), destroy the server, delete its volume."""
    if instance.server and instance.directory:
        try:
            ctx.runner.manager_for(instance.cluster.datastore).stop(instance)
        except ClustersError as exc:
            ctx.log(f"stop failed, destroying anyway: {exc}", instance.name)
    if instance.server:
        ctx.runner.provider_for(instance.cluster).destroy(instance)
    if instance.volume:
        ctx.runner.provider_for(instance.cluster).delete_volume(instance.volume)


# -- the runner ----------------------------------------------------------------------------------
class TaskRunner:
    """Runs tasks on background threads and is the managers' runtime (connections, cluster secrets).

    ``max_workers`` operations run at once; inside one operation the instances of a cluster are
    handled by up to ``settings.parallel_instances`` threads.
    """

    def __init__(self, store: ClusterStore, settings: Settings | None = None, max_workers: int = 4) -> None:
        self.store = store
        self.settings = settings or store.settings
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="clusters-task")
        self._providers: dict[str, BaseProvider] = {}
        self._lock = threading.Lock()
        self._handles: list[TaskHandle] = []
        self.sessions = SessionPool()
        self._managers: dict[tuple[int, str], BaseManager] = {}
        self._keys: dict[int, Any] = {}
        self._secrets: dict[int, str] = {}
        self._scheduler: threading.Thread | None = None
        self._closing = threading.Event()

    def __repr__(self) -> str:
        return f"<TaskRunner on {self.store.url}>"

    # -- runtime of managers and providers -----------------------------------------------------
    def provider_for(self, cluster: Cluster | str) -> BaseProvider:
        name = cluster if isinstance(cluster, str) else cluster.provider
        with self._lock:
            if name not in self._providers:
                provider = get_provider(self.settings, name, self.store)
                provider.sessions = self.sessions
                self._providers[name] = provider
            return self._providers[name]

    def manager_for(self, datastore: Datastore) -> BaseManager:
        path = self.settings.datastore_managers.get(datastore.manager)
        if path is None:
            raise NotFoundError(f"no manager configured for datastore {datastore.manager}",
                                datastore=datastore.manager)
        with self._lock:
            manager = self._managers.get((datastore.id, path))
            if manager is None:
                # one manager per datastore and runner: it may remember what it did (staged hosts)
                manager = load_object(path, "datastore_managers")(datastore, self)
                self._managers[(datastore.id, path)] = manager
        return manager

    def connect(self, instance: Instance) -> Connection:
        """A connection to the instance's host, from its cluster's provider (with the cluster key)."""
        cluster = instance.cluster
        provider = self.provider_for(cluster)
        key = None
        if getattr(provider, "uses_cluster_key", True) and cluster.key_id is not None:
            key = self._cluster_key(cluster.key_id)
        # one SSH session per host for every task of this runner (the view keeps the prefix)
        return self.sessions.share(provider.connect(instance, key), provider.session_tag(instance))

    def _cluster_key(self, key_id: int) -> Any:
        with self._lock:
            cached = self._keys.get(key_id)
        if cached is None:
            # decrypted once per runner: the key derivation is deliberately slow
            cached = self.store.get_key(key_id).paramiko_key(self.store.master_key)
            with self._lock:
                self._keys[key_id] = cached
        return cached

    def secret(self, instance: Instance) -> str:
        with self._lock:
            cached = self._secrets.get(instance.cluster_id)
        if cached is None:
            cached = self.store.cluster_secret(self.store.get_cluster(instance.cluster_id))
            with self._lock:
                self._secrets[instance.cluster_id] = cached
        return cached

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, name: str, function: Callable[..., Any], *args: Any, cluster_name: str = "",
               instance_name: str = "", **kwargs: Any) -> TaskHandle:
        """Run ``function(ctx, *args, **kwargs)`` as a task in the background."""
        task = self.store.add_task(name, cluster_name, instance_name)
        cancelled = threading.Event()
        ctx = TaskContext(self, task.id, name, cancelled, cluster_name)

        def run() -> Any:
            self.store.update_task(task.id, status=RUNNING)
            try:
                result = function(ctx, *args, **kwargs)
            except TaskCancelled as exc:
                self.store.append_task_log(task.id, f"cancelled: {exc.message}")
                self.store.update_task(task.id, status=CANCELLED, message=exc.message, finished=_now())
                raise
            except BaseException as exc:
                message = exc.message if isinstance(exc, ClustersError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, ClustersError):
                    self.store.append_task_log(task.id, traceback.format_exc())
                self.store.append_task_log(task.id, f"failed: {message}")
                self.store.update_task(task.id, status=FAILED, message=message, finished=_now())
                raise
            self.store.update_task(task.id, status=DONE, progress=100, finished=_now())
            return result

        handle = TaskHandle(self, task.id, name, self._pool.submit(run), cancelled, cluster_name)
        with self._lock:
            self._handles.append(handle)
        return handle

    def live_tasks(self, cluster_name: str | None = None) -> list[TaskHandle]:
        """The tasks this runner was given that have not ended (only those of ``cluster_name`` if
        given), oldest first."""
        with self._lock:
            handles = list(self._handles)
        return [h for h in handles if not h.done() and (cluster_name is None or h.cluster_name == cluster_name)]

    def close(self, cancel: bool = True, timeout: float | None = 120.0) -> None:
        """Cancel (by default) and wait for running tasks, then stop the threads."""
        self._closing.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout)
        with self._lock:
            handles = list(self._handles)
        if cancel:
            for handle in handles:
                if not handle.done():
                    handle.cancel()
        concurrent.futures.wait([h.future for h in handles], timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.sessions.close()

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- operations ------------------------------------------------------------------------------
    def create_cluster(self, name: str, datastore: Datastore | int | str, size: int = 1,
                       provider: str | None = None, restore_from: Backup | int | str | None = None,
                       configuration: int | str | None = None) -> TaskHandle:
        """Record a cluster and build it in the background (``restore_from``: a backup to load;
        ``configuration``: a configuration group its instances are built with)."""
        backup_id = None
        if restore_from is not None:
            record = restore_from if isinstance(restore_from, Backup) else self.store.get_backup(restore_from)
            backup_id = record.id
            datastore = record.datastore_id if isinstance(datastore, str) and not datastore else datastore
        group = self.store.get_configuration(configuration) if configuration is not None else None
        if group is not None:
            wanted = datastore if isinstance(datastore, Datastore) else self.store.get_datastore(datastore)
            if group.datastore.manager != wanted.manager:
                raise ValidationError(f"configuration {group.name} is for {group.datastore.name}, not {wanted.name}",
                                      field="configuration", value=group.id)
        cluster = self.store.create_cluster(name, datastore, size, provider, restore_from=backup_id)
        if group is not None:  # before the build: the first config rendered has the group's values
            for instance in cluster.instances:
                self.store.attach_configuration(instance.id, group.id)
        return self.submit("create_cluster", build_cluster, cluster.id, cluster_name=name)

    def restore_backup(self, backup: Backup | int | str, name: str, size: int = 1,
                       provider: str | None = None) -> TaskHandle:
        """A new cluster ``name`` holding the data of ``backup``."""
        record = backup if isinstance(backup, Backup) else self.store.get_backup(backup)
        return self.create_cluster(name, record.datastore_id, size, provider, restore_from=record)

    def add_nodes(self, name: str, count: int = 1) -> TaskHandle:
        """Add ``count`` replicas to an active cluster (max cluster size enforced before anything runs)."""
        cluster = self.store.get_cluster(name)
        if cluster.status != ACTIVE:
            raise TaskError(f"cluster {name} is {cluster.status}, not active", task="add_nodes", cluster=name)
        added = self.store.add_node(name, count)
        return self.submit("add_nodes", grow_cluster, cluster.id, [i.id for i in added], cluster_name=name)

    def remove_nodes(self, name: str, instance_ids: Sequence[int]) -> TaskHandle:
        """Destroy replicas ``instance_ids`` of an active cluster and forget them; the primary cannot
        be removed (``ValidationError``), nor an instance of another cluster (``NotFoundError``)."""
        cluster = self.store.get_cluster(name)
        if cluster.status != ACTIVE:
            raise TaskError(f"cluster {name} is {cluster.status}, not active", task="remove_nodes", cluster=name)
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            raise ValidationError("name at least one instance to remove", field="instances", cluster=name)
        members = {i.id: i for i in cluster.instances}
        for instance_id in ids:
            instance = members.get(instance_id)
            if instance is None:
                raise NotFoundError(f"cluster {name} has no instance {instance_id}", cluster=name,
                                    instance=instance_id)
            if instance.role == PRIMARY:
                raise ValidationError(f"{instance.name} is the primary of cluster {name}: only replicas can be "
                                      "removed", field="instances", cluster=name, instance=instance.name)
        return self.submit("remove_nodes", shrink_cluster, cluster.id, ids, cluster_name=name)

    def reset_status(self, name: str) -> Cluster:
        """Mark cluster ``name`` as error when an operation left it new, building or destroying but no
        task of this runner works on it any more (the process that ran it ended); its unfinished
        tasks are marked failed. Then it can be destroyed. A cluster a live task works on is refused
        (``TaskError``); an active or failed one is returned as it is.

        As Trove's reset-status, this is the operator's word: a task run by another process is not seen.
        """
        cluster = self.store.get_cluster(name)
        live = self.live_tasks(name)
        if live:
            raise TaskError(f"cluster {name} is not stuck: task {live[0].name} is running on it",
                            task=live[0].name, cluster=name)
        for task in self.store.tasks(name):
            if task.status in (QUEUED, RUNNING):
                self.store.update_task(task.id, status=FAILED, message="interrupted: its process ended",
                                       finished=_now())
        if cluster.status not in (NEW, BUILDING, DESTROYING):
            return cluster
        reason = f"status reset while {cluster.status} with no task running"
        for instance in cluster.instances:
            if instance.status not in (ACTIVE, ERROR):
                self.store.update_instance(instance.id, status=ERROR, task="", message=reason)
        return self.store.update_cluster(cluster.id, status=ERROR, message=reason)

    def restart_instance(self, ref: int | str) -> TaskHandle:
        """Restart the datastore of an active instance (by id or name)."""
        instance = self.store.get_instance(ref)
        if instance.status != ACTIVE:
            raise TaskError(f"instance {instance.name} is {instance.status}, not active", task="restart",
                            instance=instance.name)
        return self.submit("restart", restart, instance.id, cluster_name=instance.cluster.name,
                           instance_name=instance.name)

    def destroy_cluster(self, name: str) -> TaskHandle:
        cluster = self.store.get_cluster(name)
        return self.submit("destroy_cluster", tear_down_cluster, cluster.id, cluster_name=name)

    def backup_cluster(self, name: str) -> TaskHandle:
        cluster = self.store.get_cluster(name)
        return self.submit("backup", backup, cluster.id, cluster_name=name)

    def start_backup(self, name: str, backup_name: str | None = None) -> tuple[Backup, TaskHandle]:
        """Record a backup of active cluster ``name`` (named ``backup_name``, else after the cluster and
        the time) and take it in the background: the record is there at once, as clients ask for it."""
        cluster = self.store.get_cluster(name)
        if cluster.status != ACTIVE:
            raise TaskError(f"cluster {name} is {cluster.status}, not active: cannot back it up", task="backup",
                            cluster=name)
        record = self.store.add_backup(cluster, backup_name)
        return record, self.submit("backup", backup, cluster.id, record.id, cluster_name=name)

    # -- configuration groups ----------------------------------------------------------------------
    def configuration_values(self, instance: Instance) -> dict[str, Any]:
        """The values of the configuration group attached to ``instance`` (managers render them)."""
        configuration = self.store.instance_configuration(instance.id)
        return configuration.values if configuration is not None else {}

    def configure_instance(self, ref: int | str, configuration: int | str | None) -> TaskHandle:
        """Attach configuration group ``configuration`` to an active instance (None: detach its group)
        and apply it: the config is rendered again, the values are set on the running server, which
        restarts only if a changed parameter needs it."""
        instance = self.store.get_instance(ref)
        if instance.status != ACTIVE:
            raise TaskError(f"instance {instance.name} is {instance.status}, not active", task="configure",
                            instance=instance.name)
        group = self.store.get_configuration(configuration) if configuration is not None else None
        before = self.configuration_values(instance)
        self.store.attach_configuration(instance.id, group.id if group is not None else None)
        return self.submit("configure", apply_configuration, instance.id, before, cluster_name=instance.cluster.name,
                           instance_name=instance.name)

    def configure_cluster(self, name: str, configuration: int | str | None) -> TaskHandle:
        """``configure_instance`` for every instance of cluster ``name``, as one task."""
        cluster = self.store.get_cluster(name)
        if cluster.status != ACTIVE:
            raise TaskError(f"cluster {name} is {cluster.status}, not active", task="configure", cluster=name)
        group = self.store.get_configuration(configuration) if configuration is not None else None
        befores = {i.id: self.configuration_values(i) for i in cluster.instances}
        for instance in cluster.instances:
            self.store.attach_configuration(instance.id, group.id if group is not None else None)

        def configure_all(ctx: TaskContext) -> dict[str, bool]:
            return {i.name: apply_configuration(ctx, i.id, befores[i.id]) for i in cluster.instances}

        return self.submit("configure", configure_all, cluster_name=name)

    def update_configuration(self, ref: int | str, values: Any = None, *, replace: bool = False,
                             name: str | None = None, description: str | None = None
                             ) -> tuple[Configuration, TaskHandle | None]:
        """Change a configuration group (``ClusterStore.update_configuration``) and apply it to every
        instance it is attached to (one task; None when there is none)."""
        group = self.store.get_configuration(ref)
        attached = self.store.configuration_instances(group.id)
        befores = {i.id: self.configuration_values(i) for i in attached}
        group = self.store.update_configuration(group.id, values, replace=replace, name=name,
                                                description=description)
        if all(before == group.values for before in befores.values()):  # none attached, or nothing changed
            return group, None

        def configure_all(ctx: TaskContext) -> dict[str, bool]:
            return {i.name: apply_configuration(ctx, i.id, befores[i.id]) for i in attached}

        return group, self.submit("configure", configure_all, cluster_name=attached[0].cluster.name)

    # -- scheduled backups -----------------------------------------------------------------------
    def start_scheduler(self, poll: float = 1.0) -> None:
        """Take the backups of the clusters' schedules (``ClusterStore.set_backup_schedule``) from a
        thread of this runner, looking every ``poll`` seconds, until ``close()``. Idempotent."""
        with self._lock:
            if self._scheduler is not None:
                return
            self._scheduler = threading.Thread(target=self._schedule_loop, args=(poll,), daemon=True,
                                               name="clusters-scheduler")
            self._scheduler.start()

    def _schedule_loop(self, poll: float) -> None:
        while not self._closing.wait(poll):
            try:
                self.run_due_backups()
            except Exception:  # a broken tick must not end the schedules: log it, try again next poll
                log.exception("scheduled backups")

    def run_due_backups(self) -> list[TaskHandle]:
        """Start the backup of every schedule that is due (a cluster that is not active is skipped
        until its next run); returns their tasks."""
        handles = []
        for schedule, cluster_name in self.store.due_backup_schedules():
            cluster = self.store.get_cluster(cluster_name)
            if cluster.status != ACTIVE or any(h.name == "scheduled_backup" for h in self.live_tasks(cluster_name)):
                continue
            name = f"{scheduled_backup_prefix(cluster_name)}{utcnow().strftime('%Y%m%dT%H%M%S%f')}"
            record = self.store.add_backup(cluster, name)
            handles.append(self.submit("scheduled_backup", scheduled_backup, cluster.id, record.id, schedule.keep,
                                       cluster_name=cluster_name))
        return handles

    def delete_backup(self, ref: int | str) -> None:
        """Remove a finished (or failed) backup: its file, then its record; one being taken is refused."""
        record = self.store.get_backup(ref)
        if record.status in (QUEUED, RUNNING):
            raise TaskError(f"backup {record.name} is {record.status}: it can be deleted once it ends",
                            task="delete_backup", backup=record.name)
        if record.path:
            Path(record.path).unlink(missing_ok=True)
        self.store.delete_backup(record.id)

    def perform(self, target: str, name: str, *cmds: str, on_output: Callable[[str, str], None] | None = None
                ) -> TaskHandle:
        """Run shell commands on every instance of cluster ``target`` (or on instance ``target``).

        ``on_output(instance_name, line)`` receives output lines as they come. The result is
        ``{instance_name: [stdout of each command]}``.
        """
        try:
            instances = list(self.store.get_cluster(target).instances)
            cluster_name = target
        except NotFoundError:
            instance = self.store.get_instance(target)
            instances, cluster_name = [instance], instance.cluster.name
        if not cmds:
            raise TaskError("perform needs at least one command", task="perform")

        def run_all(ctx: TaskContext) -> dict[str, list[str]]:
            results = {}
            for instance in instances:
                callback = (lambda line, n=instance.name: on_output(n, line)) if on_output else None
                results[instance.name] = perform(ctx, instance.id, name, *cmds, on_output=callback)
            return results

        return self.submit(f"perform:{name}", run_all, cluster_name=cluster_name)


def _now() -> Any:
    from workbench.clusters.models import utcnow

    return utcnow()


# -- cluster-wide operations (run as one task each) ----------------------------------------------------
def _in_parallel(ctx: TaskContext, instances: Sequence[Instance], action: Callable[[Instance], Any]) -> None:
    """Run ``action`` on each instance on its own thread; the first failure is re-raised after all end.

    A failure marks its instance as error with the message, and cancels the rest at their next step.
    """
    if not instances:
        return
    errors: list[BaseException] = []

    def guarded(instance: Instance) -> None:
        try:
            action(instance)
        except BaseException as exc:
            errors.append(exc)
            _mark_failed(ctx, instance, exc)
            if not isinstance(exc, TaskCancelled):
                with ctx.runner._lock:
                    if ctx.first_failure is None:
                        ctx.first_failure = instance.id
                ctx.cancelled.set()  # the others stop at their next step: the cluster is failing anyway

    workers = min(len(instances), ctx.runner.settings.parallel_instances)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="clusters-instance") as pool:
        list(pool.map(guarded, instances))
    if errors:
        first = next((e for e in errors if not isinstance(e, TaskCancelled)), errors[0])
        raise first


def _mark_failed(ctx: TaskContext, instance: Instance, exc: BaseException) -> None:
    message = exc.message if isinstance(exc, ClustersError) else f"{type(exc).__name__}: {exc}"
    current = ctx.store.get_instance(instance.id)
    step = current.task or "?"
    if isinstance(exc, TaskCancelled):
        message = f"cancelled during {step}"
    ctx.store.update_instance(instance.id, status=ERROR, message=f"{step}: {message}")
    ctx.log(f"{step} failed: {message}", instance.name)


def _cleanup(ctx: TaskContext, instance_ids: Sequence[int], reason: str) -> list[str]:
    """Stop and destroy what an operation created; returns what could not be cleaned up."""
    problems = []
    for instance_id in instance_ids:
        instance = ctx.store.get_instance(instance_id)
        try:
            _stop_and_release(ctx, instance)
        except Exception as exc:  # keep cleaning the others; report it on the cluster
            problems.append(f"{instance.name}: {exc}")
            ctx.log(f"cleanup failed: {exc}", instance.name)
            continue
        fields: dict[str, Any] = {"server": "", "volume": "", "task": "", "server_status": ""}
        if instance.status != ERROR:
            fields.update(status=ERROR, message=f"cleaned up: {reason}")
        ctx.store.update_instance(instance.id, **fields)
        ctx.log("cleaned up", instance.name)
    return problems


def _fail_cluster(ctx: TaskContext, cluster_id: int, created: Sequence[int], exc: BaseException) -> None:
    message = exc.message if isinstance(exc, ClustersError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TaskCancelled):
        message = "cancelled"
    failed = [i for i in ctx.store.get_cluster(cluster_id).instances if i.status == ERROR and i.message]
    # the instance that failed first, not one the failure then cancelled
    failed.sort(key=lambda i: i.id != ctx.first_failure)
    if failed and not isinstance(exc, TaskCancelled):
        message = f"{failed[0].name}: {failed[0].message}"
    problems = _cleanup(ctx, created, message)
    if problems:
        message += "; cleanup incomplete: " + "; ".join(problems)
    ctx.store.update_cluster(cluster_id, status=ERROR, message=message)


def _build_instances(ctx: TaskContext, cluster: Cluster, new: Sequence[Instance], primary: Instance,
                     restore_id: int | None) -> None:
    manager = ctx.runner.manager_for(cluster.datastore)
    provider = ctx.runner.provider_for(cluster)

    def make_server(instance: Instance) -> None:
        volume_id = None
        if ctx.runner.settings.use_volumes and provider.supports_volumes:
            volume_id = create_volume(ctx, instance.id, ctx.runner.settings.volume_size_gb)
        create_server(ctx, instance.id, volume_id)

    # Each instance has its server made and is installed at once (packages, directories, config,
    # data directory, server: nothing there needs the primary); only a replica's follow step waits,
    # for the primary alone, and the replicas then follow it concurrently.
    primary_ready = threading.Event()
    primary_placed = threading.Event()  # its address and port are known: a replica can wait for it
    if not any(i.id == primary.id for i in new):
        primary_ready.set()
        primary_placed.set()

    def build(instance: Instance) -> None:
        try:
            make_server(instance)
        finally:
            if instance.id == primary.id:
                primary_placed.set()  # placed, or failed: either way nobody waits for it longer
        if instance.id == primary.id:
            prepare(ctx, instance.id)
            ctx.store.update_instance(primary.id, progress=90)
            primary_ready.set()
            return
        # servers are made at once, so the primary's is usually placed within moments of this one;
        # a slow one (a cloud) is not waited for: this replica then installs and follows apart
        primary_placed.wait(PLACEMENT_WAIT)
        if prepare_replica(ctx, instance.id, primary.id):
            return
        while not primary_ready.wait(0.1):
            ctx.check_cancelled()  # a failed primary cancels the operation
        replicate(ctx, instance.id, primary.id)

    _in_parallel(ctx, new, build)
    if restore_id is not None:
        restore(ctx, primary.id, restore_id)
    cluster = ctx.store.get_cluster(cluster.id)
    all_replicas = cluster.replicas
    if all_replicas:
        for instance in cluster.instances:
            ctx.step(instance, "verify_replication", progress=95)
        token = ctx.retry(lambda: manager.verify_replication(cluster.primary, all_replicas), "verify replication")
        ctx.log(f"replication verified: token {token} written on {cluster.primary.name}, "
                f"read on {', '.join(i.name for i in all_replicas)}")
    for instance in cluster.instances:
        ctx.store.update_instance(instance.id, status=ACTIVE, progress=100, task="", message="")


def build_cluster(ctx: TaskContext, cluster_id: int) -> Cluster:
    """Create every server of a cluster, prepare the primary and the replicas, verify replication."""
    cluster = ctx.store.update_cluster(cluster_id, status=BUILDING, message="")
    created = [i.id for i in cluster.instances]
    try:
        _build_instances(ctx, cluster, cluster.instances, cluster.primary, cluster.restore_from)
    except BaseException as exc:
        _fail_cluster(ctx, cluster_id, created, exc)
        raise
    return ctx.store.update_cluster(cluster_id, status=ACTIVE, message="")


def grow_cluster(ctx: TaskContext, cluster_id: int, instance_ids: Sequence[int]) -> Cluster:
    """Create and prepare new replicas of an active cluster; on failure only they are removed."""
    cluster = ctx.store.update_cluster(cluster_id, status=BUILDING, message="")
    new = [ctx.store.get_instance(i) for i in instance_ids]
    try:
        _build_instances(ctx, cluster, new, cluster.primary, None)
    except BaseException as exc:
        message = exc.message if isinstance(exc, ClustersError) else str(exc)
        problems = _cleanup(ctx, instance_ids, message)
        for instance_id in instance_ids:
            ctx.store.remove_instance(instance_id)
        note = "; cleanup incomplete: " + "; ".join(problems) if problems else ""
        ctx.store.update_cluster(cluster_id, status=ACTIVE, message=f"adding nodes failed: {message}{note}")
        raise
    return ctx.store.update_cluster(cluster_id, status=ACTIVE, message="")


def shrink_cluster(ctx: TaskContext, cluster_id: int, instance_ids: Sequence[int]) -> Cluster:
    """Destroy replicas of an active cluster, forgetting each once its server is gone; one that cannot
    be destroyed stays, marked error, and the cluster stays active with the message."""
    ctx.store.update_cluster(cluster_id, status=BUILDING, message="")

    def remove(instance: Instance) -> None:
        destroy(ctx, instance.id)
        ctx.store.remove_instance(instance.id)

    try:
        _in_parallel(ctx, [ctx.store.get_instance(i) for i in instance_ids], remove)
    except BaseException as exc:
        message = exc.message if isinstance(exc, ClustersError) else str(exc)
        ctx.store.update_cluster(cluster_id, status=ACTIVE, message=f"removing nodes failed: {message}")
        raise
    return ctx.store.update_cluster(cluster_id, status=ACTIVE, message="")


def tear_down_cluster(ctx: TaskContext, cluster_id: int) -> None:
    """Destroy every instance of a cluster, then forget the cluster."""
    cluster = ctx.store.update_cluster(cluster_id, status=DESTROYING, message="")
    try:
        _in_parallel(ctx, cluster.instances, lambda i: destroy(ctx, i.id))
    except BaseException as exc:
        message = exc.message if isinstance(exc, ClustersError) else str(exc)
        ctx.store.update_cluster(cluster_id, status=ERROR, message=f"destroy failed: {message}")
        raise
    ctx.store.delete_cluster(cluster.name)


__all__ = ["TaskRunner", "TaskHandle", "TaskContext", "perform", "perform_environment", "create_server", "create_volume",
           "attach_volume", "prepare", "prepare_replica", "replicate", "backup", "restore", "restart", "destroy",
           "apply_configuration", "scheduled_backup", "build_cluster", "grow_cluster", "shrink_cluster",
           "tear_down_cluster"]
