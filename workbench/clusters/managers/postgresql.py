"""The PostgreSQL manager: a cluster per instance run by pg_ctl as user postgres, streaming replicas."""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.clusters.connection import Connection
from workbench.clusters.errors import ManagerError
from workbench.clusters.managers.base import BaseManager, check_sql_name

if TYPE_CHECKING:
    from workbench.clusters.models import Instance

REPLICATION_USER = "workbench_repl"
CHECK_TABLE = "workbench_replication_check"


class PostgresManager(BaseManager):
    """PostgreSQL: initdb on the primary, ``pg_basebackup -R`` on replicas (hot standbys).

    The configuration (``config``, ``pg_hba.conf``, ``pg_ident.conf``) lives in the instance
    directory, outside the data directory, so replicas copied from the primary get their own.
    Binaries are taken from ``/usr/lib/postgresql/<version>/bin`` when the datastore's major
    version is installed there (Debian's layout), else from PATH.
    """

    service_name = "postgresql"
    required_binaries = ("initdb", "pg_ctl", "psql", "pg_basebackup", "pg_dumpall")
    default_packages = ("postgresql",)
    server_user = "postgres"
    stop_signal = "INT"  # "fast" shutdown: does not wait for clients to disconnect

    def resolve_binaries(self, conn: Connection) -> dict[str, str]:
        major = self.version.split(".")[0]
        script = ('for d in "/usr/lib/postgresql/$1/bin" /usr/lib/postgresql/*/bin; do '
                  '[ -x "$d/pg_ctl" ] && { echo "$d"; exit 0; }; done; true')
        bindir = conn.run(["sh", "-c", script, "sh", major]).stdout.strip()
        if bindir:
            return {name: f"{bindir}/{name}" for name in self.required_binaries}
        return super().resolve_binaries(conn)

    def _binaries(self, conn: Connection) -> dict[str, str]:
        cached = getattr(conn, "_workbench_pg_binaries", None)
        if cached is None:
            cached = self.ensure_packages(conn)
            setattr(conn, "_workbench_pg_binaries", cached)
        return cached

    def pid_file(self, instance: Instance) -> str:
        return f"{self.paths(instance)['data_dir']}/postmaster.pid"

    def psql(self, conn: Connection, instance: Instance, database: str = "postgres") -> list[str]:
        return self.as_server_user(conn, [self._binaries(conn)["psql"], "-X", "-h", self.paths(instance)["run_dir"],
                                          "-p", str(instance.port), "-U", "postgres", "-d", database,
                                          "-v", "ON_ERROR_STOP=1", "-At"])

    def sql(self, conn: Connection, instance: Instance, statement: str, database: str = "postgres",
            check: bool = True) -> str:
        """Run SQL as superuser postgres over the instance's socket (given on stdin)."""
        result = conn.run(self.psql(conn, instance, database), input=statement + "\n", check=check)
        return result.stdout if result.ok else ""

    def ping_command(self, conn: Connection, instance: Instance) -> list[str]:
        return [*self.psql(conn, instance), "-c", "SELECT 1"]

    # -- lifecycle --------------------------------------------------------------------------------
    replica_copies_primary = True

    def __init__(self, datastore: Any, runtime: Any = None) -> None:
        super().__init__(datastore, runtime)
        self._staged: set[int] = set()
        self._staged_lock = threading.Lock()

    def stage(self, instance: Instance, log: Any = None) -> None:
        """Packages, directories and the three config files, owned by postgres."""
        paths = self.paths(instance)
        context = {"replication_user": REPLICATION_USER}
        with self.connection(instance) as conn:
            self.ensure_packages(conn, log)
            self.make_directories(conn, instance)
            self.write_config(conn, instance, **context)
            self.write_config(conn, instance, "hba", f"{paths['directory']}/pg_hba.conf", **context)
            self.write_config(conn, instance, "ident", f"{paths['directory']}/pg_ident.conf", **context)
            # data_dir + "/": a data directory on an attached volume is a link, which -R does not follow
            self.give_to_server_user(conn, paths["directory"], paths["data_dir"] + "/")
            conn.run(["chmod", "700", paths["run_dir"], paths["data_dir"] + "/"])
        with self._staged_lock:
            self._staged.add(instance.id)

    def install(self, instance: Instance, log: Any = None, primary: Instance | None = None) -> None:
        paths = self.paths(instance)
        with self._staged_lock:
            staged = instance.id in self._staged and instance.id is not None
            self._staged.discard(instance.id)
        if not staged:
            self.stage(instance, log)
            with self._staged_lock:
                self._staged.discard(instance.id)
        with self.connection(instance) as conn:
            binaries = self._binaries(conn)
            if primary is None:
                if log:
                    log("initdb")
                conn.run(self.as_server_user(conn, [
                    binaries["initdb"], "-D", paths["data_dir"], "-U", "postgres", "--auth-local=trust",
                    "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"]), timeout=300)
            else:
                if log:
                    log(f"copying {primary.name} with pg_basebackup")
                passfile = f"{paths['directory']}/pgpass"
                conn.write_file(passfile, f"{self._pgpass_field(primary.addr)}:{primary.port}:*:{REPLICATION_USER}:"
                                          f"{self._pgpass_field(self.secret(instance))}\n", mode=0o600)
                self.give_to_server_user(conn, passfile)
                conn.run(self.as_server_user(conn, [
                    "env", f"PGPASSFILE={passfile}", binaries["pg_basebackup"], "-h", primary.addr,
                    "-p", str(primary.port), "-U", REPLICATION_USER, "-D", paths["data_dir"], "-R",
                    "-X", "stream", "-c", "fast", "-d", f"passfile={passfile}"]), timeout=3600)
            self._start(conn, instance)
            if primary is None:
                self.sql(conn, instance,
                         f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD "
                         f"{_pg_literal(self.secret(instance))};"
                         f"CREATE TABLE {CHECK_TABLE} (token text PRIMARY KEY);")

    @staticmethod
    def _pgpass_field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    def _start(self, conn: Connection, instance: Instance) -> None:
        paths = self.paths(instance)
        # pg_ctl hands -o to a shell: the path is quoted for that shell
        options = f"-c config_file={shlex.quote(paths['config'])}"
        conn.run(self.as_server_user(conn, [
            self._binaries(conn)["pg_ctl"], "-D", paths["data_dir"], "-l", paths["log_file"], "-o", options,
            "-w", "-t", "120", "start"]), timeout=180)
        self.wait_until_ready(conn, instance)

    def start(self, instance: Instance) -> None:
        with self.connection(instance) as conn:
            self._start(conn, instance)

    # -- replication ------------------------------------------------------------------------------
    def write_check(self, conn: Connection, primary: Instance, token: str) -> None:
        self.sql(conn, primary, f"INSERT INTO {CHECK_TABLE} VALUES ({_pg_literal(token)})")

    def read_check(self, conn: Connection, replica: Instance, token: str) -> bool:
        query = f"SELECT count(*) FROM {CHECK_TABLE} WHERE token = {_pg_literal(token)}"
        return self.sql(conn, replica, query, check=False).strip() == "1"

    def replication_state(self, conn: Connection, replica: Instance) -> str:
        state = self.sql(conn, replica, "SELECT status, sender_host FROM pg_stat_wal_receiver", check=False).strip()
        return f"wal receiver: {state or 'none'}"

    # -- backups ----------------------------------------------------------------------------------
    def backup(self, instance: Instance, destination: Path) -> Path:
        """``pg_dumpall`` without role passwords (a restored cluster keeps its own accounts' secrets)."""
        name = f"{instance.name}-{time.strftime('%Y%m%dT%H%M%S')}-{self.new_token()[:6]}.sql"
        remote = f"{self.paths(instance)['backup_dir']}/{name}"
        with self.connection(instance) as conn:
            argv = self.as_server_user(conn, [self._binaries(conn)["pg_dumpall"], "-h", self.paths(instance)["run_dir"],
                                              "-p", str(instance.port), "-U", "postgres", "--no-role-passwords",
                                              "--exclude-database=postgres"])
            conn.run(["sh", "-c", '"$@" > "$0"', remote, *argv], timeout=3600)
            return self.fetch(conn, remote, destination, name)

    def restore(self, instance: Instance, backup_file: Path) -> None:
        with self.connection(instance) as conn:
            remote = f"{self.paths(instance)['tmp_dir']}/restore.sql"
            conn.upload(backup_file, remote, mode=0o600)
            try:
                # not ON_ERROR_STOP: "role postgres already exists" and the like are expected
                argv = [a for a in self.psql(conn, instance) if a != "ON_ERROR_STOP=1" and a != "-v"]
                result = conn.run(["sh", "-c", '"$@" < "$0"', remote, *argv], timeout=3600)
                fatal = [line for line in result.stderr.splitlines()
                         if "ERROR" in line and "already exists" not in line]
                if fatal:
                    raise ManagerError(f"restore into {instance.name} failed: {fatal[0]}", manager=self.name,
                                       instance=instance.name, errors=fatal[:10])
            finally:
                conn.run(["rm", "-f", remote])
            # the dump's ALTER ROLE lines may have changed the replication role: make it ours again
            self.sql(conn, instance, f"ALTER ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD "
                                     f"{_pg_literal(self.secret(instance))}")

    # -- accounts ---------------------------------------------------------------------------------
    def create_database(self, instance: Instance, name: str) -> None:
        check_sql_name(name, "database")
        with self.connection(instance) as conn:
            exists = self.sql(conn, instance, f"SELECT 1 FROM pg_database WHERE datname = {_pg_literal(name)}")
            if not exists.strip():
                self.sql(conn, instance, f'CREATE DATABASE "{name}"')

    def create_user(self, instance: Instance, user: str, password: str, database: str | None = None) -> None:
        """A login role; owner of ``database`` with all privileges on it when given."""
        check_sql_name(user, "user")
        statements = [f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_pg_literal(user)}) "
                      f'THEN CREATE ROLE "{user}" LOGIN; END IF; END $$;',
                      f'ALTER ROLE "{user}" WITH LOGIN PASSWORD {_pg_literal(password)};']
        if database:
            check_sql_name(database, "database")
            statements += [f'GRANT ALL PRIVILEGES ON DATABASE "{database}" TO "{user}";',
                           f'ALTER DATABASE "{database}" OWNER TO "{user}";']
        with self.connection(instance) as conn:
            self.sql(conn, instance, "\n".join(statements))


def _pg_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only quotes are doubled)."""
    if "\x00" in value:
        raise ManagerError("a NUL character cannot be part of a password", field="password")
    return "'" + value.replace("'", "''") + "'"
