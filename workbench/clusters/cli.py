"""``workbench clusters create|list|show|destroy|backup|perform|configure|schedule...``: builds a store and
runner from flags.

State lives in ``--db URL`` (default: SQLite ``clusters.db`` under ``--state-dir``, itself
``~/.workbench/clusters`` by default). ``create`` without ``--wait`` records the cluster, checks the
request, and hands the build to a detached worker process, so the command returns at once and
the build goes on after it exits; ``show`` follows its progress.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from workbench.clusters.errors import ValidationError
from workbench.credentials import url_has_password, warn_secret_on_command_line

#: version used when --version is not given
DEFAULT_VERSIONS = {"redis": "7", "mysql": "10.11", "postgresql": "15"}
#: where the state database URL comes from without --db (a URL may hold a password, which the
#: process list would show on a command line)
DATABASE_ENVIRONMENT = "WORKBENCH_CLUSTERS_DATABASE_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="SQLAlchemy URL of the state database (default: $WORKBENCH_CLUSTERS_DATABASE_URL, "
                        "else SQLite under --state-dir); a password here is visible in ps, so prefer the variable")
    parser.add_argument("--state-dir", help="state directory (default ~/.workbench/clusters)")
    parser.add_argument("--config", help="TOML settings file (default $WORKBENCH_CLUSTERS_CONFIG)")
    commands = parser.add_subparsers(dest="clusters_command", metavar="COMMAND")

    create = commands.add_parser("create", help="create a cluster")
    create.add_argument("name")
    create.add_argument("--datastore", required=True,
                        help="redis, mysql or postgresql (or NAME-VERSION, e.g. redis-7)")
    create.add_argument("--version", help="datastore version (default: redis 7, mysql 10.11, postgresql 15)")
    create.add_argument("--size", type=int, default=1, help="number of nodes: 1 primary + N-1 replicas")
    create.add_argument("--provider", help="provider name (default from settings: local)")
    create.add_argument("--restore", metavar="BACKUP", help="load this backup into the new cluster")
    create.add_argument("--wait", action="store_true", help="wait until the cluster is active (or failed)")
    create.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits (default 900)")
    create.set_defaults(func=cmd_create)

    commands.add_parser("list", help="list clusters").set_defaults(func=cmd_list)

    show = commands.add_parser("show", help="a cluster's instances: address, port, role, status")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)

    destroy = commands.add_parser("destroy", help="stop and remove every instance of a cluster")
    destroy.add_argument("name")
    destroy.set_defaults(func=cmd_destroy)

    backup = commands.add_parser("backup", help="back up a cluster's primary into the backup directory")
    backup.add_argument("name")
    backup.set_defaults(func=cmd_backup)

    perform = commands.add_parser("perform", help="run shell commands on every instance of a cluster")
    perform.add_argument("name", help="cluster (or instance) name")
    perform.add_argument("commands", nargs="+", metavar="CMD",
                         help="shell lines; each instance's $WB_PORT, $WB_ADDRESS, $WB_ROLE and $WB_DATASTORE are set")
    perform.set_defaults(func=cmd_perform)

    commands.add_parser("backups", help="list backups").set_defaults(func=cmd_backups)

    group = commands.add_parser("configuration-create", help="a configuration group: parameter values of a datastore")
    group.add_argument("name")
    group.add_argument("--datastore", required=True, help="redis, mysql or postgresql (or NAME-VERSION)")
    group.add_argument("--version", help="datastore version (default as for create)")
    group.add_argument("--set", action="append", default=[], metavar="PARAMETER=VALUE", dest="values",
                       help="a parameter's value (repeat it); see the Trove API's datastores/.../parameters")
    group.add_argument("--description", default="")
    group.set_defaults(func=cmd_configuration_create)

    commands.add_parser("configurations", help="list configuration groups").set_defaults(func=cmd_configurations)

    configure = commands.add_parser("configure", help="attach a configuration group to every instance of a "
                                    "cluster and apply it (restarting only if a parameter needs it)")
    configure.add_argument("name", help="cluster name")
    configure.add_argument("configuration", help="configuration group (id or name), or 'none' to detach")
    configure.set_defaults(func=cmd_configure)

    schedule = commands.add_parser("schedule", help="back up a cluster every N seconds, keeping the newest K "
                                   "(taken by the clusters API of workbench up while it runs)")
    schedule.add_argument("name", help="cluster name")
    schedule.add_argument("--every", type=int, metavar="SECONDS", help="interval between backups")
    schedule.add_argument("--keep", type=int, default=7, help="scheduled backups kept (default 7)")
    schedule.add_argument("--off", action="store_true", help="remove the schedule")
    schedule.set_defaults(func=cmd_schedule)

    # the detached worker of `create` without --wait
    build = commands.add_parser("build-worker", help=argparse.SUPPRESS)
    build.add_argument("name")
    build.set_defaults(func=cmd_build_worker)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


# -- building the library objects from flags ---------------------------------------------------------
def _store(args: argparse.Namespace) -> Any:
    from workbench.clusters.models import ClusterStore
    from workbench.clusters.settings import Settings

    overrides: dict[str, Any] = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if args.db:
        if url_has_password(args.db):
            warn_secret_on_command_line("--db holds a password", DATABASE_ENVIRONMENT)
        overrides["database_url"] = args.db
    settings = Settings.load(args.config, **overrides)
    return ClusterStore(None, settings)


def _global_flags(args: argparse.Namespace) -> list[str]:
    """The flags a background worker needs; the database URL is not one (see ``_worker_environment``)."""
    flags = []
    for flag, value in (("--state-dir", args.state_dir), ("--config", args.config)):
        if value:
            flags += [flag, value]
    return flags


def _worker_environment(args: argparse.Namespace) -> dict[str, str]:
    """The worker's environment: ours, with the database URL of --db, off its command line."""
    env = dict(os.environ)
    if args.db:
        env[DATABASE_ENVIRONMENT] = args.db
    return env


def _datastore(store: Any, spec: str, version: str | None) -> Any:
    manager, _, inline_version = spec.partition("-")
    if manager not in store.settings.datastore_managers:
        raise ValidationError(f"unknown datastore {manager!r}; known: "
                              f"{', '.join(sorted(store.settings.datastore_managers))}", field="datastore",
                              value=spec)
    return store.add_datastore(manager, version or inline_version or DEFAULT_VERSIONS.get(manager, "1"))


# -- commands -------------------------------------------------------------------------------------
def cmd_create(args: argparse.Namespace) -> int:
    from workbench.clusters.tasks import TaskRunner, build_cluster

    with _store(args) as store:
        restore_id = store.get_backup(args.restore).id if args.restore else None
        if restore_id is not None:
            datastore = store.get_backup(restore_id).datastore
        else:
            datastore = _datastore(store, args.datastore, args.version)
        cluster = store.create_cluster(args.name, datastore, args.size, args.provider, restore_from=restore_id)
        if not args.wait:
            worker = [sys.executable, "-m", "workbench.clusters", *_global_flags(args), "build-worker", args.name]
            subprocess.Popen(worker, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=_worker_environment(args))
            print(f"cluster {cluster.name}: building {cluster.size} x {cluster.datastore.name} in the background; "
                  f"follow it with: workbench clusters show {cluster.name}")
            return 0
        with TaskRunner(store) as runner:
            handle = runner.submit("create_cluster", build_cluster, cluster.id, cluster_name=cluster.name)
            try:
                handle.wait(args.timeout)
            except TimeoutError:
                handle.cancel()
                handle.future.exception()
                print(f"cluster {args.name}: not active after {args.timeout:.0f}s; cancelled", file=sys.stderr)
                return 1
            except Exception:
                pass  # the cluster records the failure: show it below
        _print_cluster(store, args.name)
        return 0 if store.get_cluster(args.name).status == "active" else 1


def cmd_build_worker(args: argparse.Namespace) -> int:
    from workbench.clusters.tasks import TaskRunner, build_cluster

    with _store(args) as store, TaskRunner(store) as runner:
        cluster = store.get_cluster(args.name)
        handle = runner.submit("create_cluster", build_cluster, cluster.id, cluster_name=cluster.name)
        try:
            handle.wait()
        except Exception:
            return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = [(c.name, c.datastore.name, str(c.size), c.provider, c.status, c.message[:60])
                for c in store.clusters()]
        _print_table(("NAME", "DATASTORE", "SIZE", "PROVIDER", "STATUS", "MESSAGE"), rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        _print_cluster(store, args.name)
    return 0


def _print_cluster(store: Any, name: str) -> None:
    cluster = store.get_cluster(name)
    print(f"cluster {cluster.name}: {cluster.datastore.name}, {cluster.size} node(s), provider {cluster.provider}, "
          f"{cluster.status}" + (f": {cluster.message}" if cluster.message else ""))
    rows = [(i.name, i.role, i.addr or "-", str(i.port or "-"), i.status, f"{i.progress}%", i.task or "",
             i.message[:80]) for i in cluster.instances]
    _print_table(("INSTANCE", "ROLE", "ADDRESS", "PORT", "STATUS", "PROGRESS", "TASK", "MESSAGE"), rows)


def cmd_destroy(args: argparse.Namespace) -> int:
    from workbench.clusters.tasks import TaskRunner

    with _store(args) as store, TaskRunner(store) as runner:
        runner.destroy_cluster(args.name).wait()
    print(f"cluster {args.name} destroyed")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from workbench.clusters.tasks import TaskRunner

    with _store(args) as store, TaskRunner(store) as runner:
        record = runner.backup_cluster(args.name).wait()
    print(f"backup {record.name}: {record.size} bytes in {record.path} (sha256 {record.sha256})")
    return 0


def cmd_backups(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = [(b.name, b.cluster_name, b.datastore.name, str(b.size), b.status, b.path) for b in store.backups()]
        _print_table(("BACKUP", "CLUSTER", "DATASTORE", "SIZE", "STATUS", "PATH"), rows)
    return 0


def _parameter_values(pairs: list[str]) -> dict[str, Any]:
    """``["maxmemory=1048576", "maxmemory-policy=allkeys-lru"]`` -> values (whole numbers as numbers)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValidationError(f"--set takes PARAMETER=VALUE, not {pair!r}", field="set", value=pair)
        values[name] = int(text) if text.lstrip("-").isdigit() else text
    return values


def cmd_configuration_create(args: argparse.Namespace) -> int:
    with _store(args) as store:
        group = store.create_configuration(args.name, _datastore(store, args.datastore, args.version),
                                           _parameter_values(args.values), args.description)
        print(f"configuration {group.id} ({group.name}) for {group.datastore.name}: "
              + ", ".join(f"{k}={v}" for k, v in sorted(group.values.items())))
    return 0


def cmd_configurations(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = [(str(c.id), c.name, c.datastore.name, " ".join(f"{k}={v}" for k, v in sorted(c.values.items())),
                 ", ".join(i.name for i in store.configuration_instances(c.id))) for c in store.configurations()]
        _print_table(("ID", "NAME", "DATASTORE", "VALUES", "INSTANCES"), rows)
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    from workbench.clusters.tasks import TaskRunner

    ref = None if args.configuration == "none" else args.configuration
    with _store(args) as store, TaskRunner(store) as runner:
        group = store.get_configuration(int(ref) if ref and ref.isdigit() else ref) if ref else None
        restarted = runner.configure_cluster(args.name, group.id if group else None).wait()
    what = f"configuration {group.name}" if group else "no configuration group"
    print(f"cluster {args.name}: {what}; restarted: {', '.join(n for n, r in restarted.items() if r) or 'none'}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if args.off:
            store.delete_backup_schedule(args.name)
            print(f"cluster {args.name}: no scheduled backups")
            return 0
        if args.every is None:
            schedule = store.backup_schedule(args.name)
            print(f"cluster {args.name}: " + (f"a backup every {schedule.interval}s, the newest {schedule.keep} kept, "
                                              f"next at {schedule.next_run:%Y-%m-%d %H:%M:%S} UTC"
                                              if schedule else "no scheduled backups"))
            return 0
        schedule = store.set_backup_schedule(args.name, args.every, args.keep)
        print(f"cluster {args.name}: a backup every {schedule.interval}s, the newest {schedule.keep} kept")
    return 0


def cmd_perform(args: argparse.Namespace) -> int:
    from workbench.clusters.tasks import TaskRunner

    def show(instance: str, line: str) -> None:
        print(f"[{instance}] {line}", flush=True)

    with _store(args) as store, TaskRunner(store) as runner:
        runner.perform(args.name, "cli", *args.commands, on_output=show).wait()
    return 0


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


__all__ = ["add_arguments", "DEFAULT_VERSIONS"]
