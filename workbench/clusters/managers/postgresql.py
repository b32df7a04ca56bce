"""The PostgreSQL manager: a cluster per instance run by pg_ctl as user postgres, streaming replicas."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.clusters.connection import Connection
from workbench.clusters.errors import ManagerError
from workbench.clusters.managers.base import BaseManager, check_sql_name
from workbench.clusters.models import REPLICA

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

    def script_preamble(self) -> str:
        # Debian's layout first: the datastore's major version, else any; then PATH (checked below)
        major = shlex.quote(self.version.split(".")[0])
        return ('bindir=; for d in /usr/lib/postgresql/' + major + '/bin /usr/lib/postgresql/*/bin; do '
                'if [ -x "$d/pg_ctl" ]; then bindir=$d; break; fi; done\n'
                'if [ -n "$bindir" ]; then PATH="$bindir:$PATH"; export PATH; fi; echo "fact: bindir=$bindir"\n'
                + super().script_preamble()
                # absolute paths: runuser need not keep PATH
                + "".join(f'{name}=$(command -v {name})\n' for name in self.required_binaries))

    @staticmethod
    def sh_tool(name: str, args: list[str]) -> str:
        """Shell text running binary ``name`` as the step script resolved it, with quoted ``args``."""
        return f'"${name}" {shlex.join(args)}'

    def _binaries(self, conn: Connection) -> dict[str, str]:
        facts = self.host_facts(conn)
        if "binaries" not in facts:
            if facts.get("bindir"):
                binaries = {name: f"{facts['bindir']}/{name}" for name in self.required_binaries}
            else:
                binaries = self.ensure_packages(conn)
            self.remember_facts(conn, {"binaries": "\n".join(f"{k}={v}" for k, v in binaries.items())})
            facts = self.host_facts(conn)
        return dict(line.split("=", 1) for line in facts["binaries"].splitlines())

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

    def _psql_args(self, instance: Instance, database: str = "postgres") -> list[str]:
        return ["-X", "-h", self.paths(instance)["run_dir"], "-p", str(instance.port), "-U", "postgres",
                "-d", database, "-v", "ON_ERROR_STOP=1", "-At"]

    def ping_script(self, instance: Instance) -> str:
        # in a step script psql is on PATH (the preamble put the binary directory first)
        return self.sh_as_server_user(self.sh_tool("psql", [*self._psql_args(instance), "-c", "SELECT 1"]))

    # -- lifecycle --------------------------------------------------------------------------------
    def _setup_script(self, instance: Instance) -> str:
        """Directories and the three config files, owned by postgres."""
        paths = self.paths(instance)
        context = {"replication_user": REPLICATION_USER}
        return (self.sh_make_directories(instance)
                + self.sh_write_config(instance, **context)
                + self.sh_write_config(instance, "hba", f"{paths['directory']}/pg_hba.conf", **context)
                + self.sh_write_config(instance, "ident", f"{paths['directory']}/pg_ident.conf", **context)
                # data_dir + "/": a data directory on an attached volume is a link, which -R does not follow
                + self.sh_give_to_server_user(paths["directory"], paths["data_dir"] + "/")
                + f"chmod 700 {shlex.join([paths['run_dir'], paths['data_dir'] + '/'])}\n")

    def install(self, instance: Instance, log: Any = None) -> None:
        """A primary: directories, config, initdb, the started server, the replication role (one round
        trip). A replica: directories and config only; ``follow`` copies the running primary."""
        paths = self.paths(instance)

        def script() -> str:
            text = self._setup_script(instance)
            if instance.role != REPLICA:
                text += ("step initdb\n" + self.sh_as_server_user(self.sh_tool("initdb", [
                    "-D", paths["data_dir"], "-U", "postgres", "--auth-local=trust", "--encoding=UTF8",
                    "--locale=C.UTF-8", "--no-instructions"]) + " </dev/null") + "\n" + self._start_script(instance)
                    + "step create the replication role\n"
                    + self.sh_as_server_user(self.sh_tool("psql", self._psql_args(instance))) + "\n")
            return text

        statements = None
        if instance.role != REPLICA:
            if log:
                log("initdb and start")
            # the statements (with the replication password) go on stdin, not on a command line
            statements = (f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD "
                          f"{_pg_literal(self.secret(instance))};\n"
                          f"CREATE TABLE {CHECK_TABLE} (token text PRIMARY KEY);\n")
        with self.connection(instance) as conn:
            self.run_step(conn, instance, script, input=statements, timeout=300, log=log)

    def follow(self, replica: Instance, primary: Instance, log: Any = None) -> None:
        """Copy the running primary with ``pg_basebackup -R`` and start the copy: one round trip."""
        paths = self.paths(replica)
        passfile = f"{paths['directory']}/pgpass"
        if log:
            log(f"copying {primary.name} with pg_basebackup")
        # the password file's content comes on stdin: the secret is never part of a command line
        script = (f"step pgpass\n(umask 077; cat > {shlex.quote(passfile)})\n"
                  + self.sh_give_to_server_user(passfile)
                  + "step pg_basebackup\n" + self.sh_as_server_user(
                      f"env {shlex.quote('PGPASSFILE=' + passfile)} " + self.sh_tool("pg_basebackup", [
                          "-h", primary.addr, "-p", str(primary.port), "-U", REPLICATION_USER, "-D", paths["data_dir"],
                          "-R", "-X", "stream", "-c", "fast", "-d", f"passfile={passfile}"]) + " </dev/null") + "\n"
                  + self._start_script(replica))
        content = (f"{self._pgpass_field(primary.addr)}:{primary.port}:*:{REPLICATION_USER}:"
                   f"{self._pgpass_field(self.secret(replica))}\n")
        with self.connection(replica) as conn:
            self.run_step(conn, replica, script, input=content, timeout=3600, log=log)

    @staticmethod
    def _pgpass_field(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    def _start_script(self, instance: Instance) -> str:
        paths = self.paths(instance)
        # pg_ctl hands -o to a shell: the path is quoted for that shell
        options = f"-c config_file={shlex.quote(paths['config'])}"
        return ("step pg_ctl start\n" + self.sh_as_server_user(self.sh_tool("pg_ctl", [
            "-D", paths["data_dir"], "-l", paths["log_file"], "-o", options, "-w", "-t", "120", "start"])
            + " </dev/null") + "\n" + self.sh_wait_until_ready(instance))

    def _start(self, conn: Connection, instance: Instance) -> None:
        self.run_step(conn, instance, self._start_script(instance))

    def start(self, instance: Instance) -> None:
        with self.connection(instance) as conn:
            self._start(conn, instance)

    def config_extra(self, instance: Instance, primary: Instance | None) -> dict[str, Any]:
        return {"replication_user": REPLICATION_USER}

    def set_parameters(self, conn: Connection, instance: Instance, values: dict[str, Any]) -> None:
        """The config file has the values: the server reads it again (every one here is reloadable)."""
        self.sql(conn, instance, "SELECT pg_reload_conf()")

    # -- replication ------------------------------------------------------------------------------
    def write_check(self, conn: Connection, primary: Instance, token: str) -> None:
        self.sql(conn, primary, f"INSERT INTO {CHECK_TABLE} VALUES ({_pg_literal(token)})")

    def read_check(self, conn: Connection, replica: Instance, token: str) -> bool:
        query = f"SELECT count(*) FROM {CHECK_TABLE} WHERE token = {_pg_literal(token)}"
        return self.sql(conn, replica, query, check=False).strip() == "1"

    def read_check_script(self, replica: Instance, token: str) -> str:
        query = f"SELECT count(*) FROM {CHECK_TABLE} WHERE token = {_pg_literal(token)}"
        psql = self.sh_as_server_user(self.sh_tool("psql", [*self._psql_args(replica), "-c", query]))
        return f'[ "$({psql} 2>/dev/null)" = 1 ]'

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

    def list_databases(self, instance: Instance) -> list[str]:
        with self.connection(instance) as conn:
            out = self.sql(conn, instance, "SELECT datname FROM pg_database WHERE NOT datistemplate "
                                           "AND datname <> 'postgres' ORDER BY datname")
        return out.split()

    def delete_database(self, instance: Instance, name: str) -> None:
        check_sql_name(name, "database")
        with self.connection(instance) as conn:
            self.sql(conn, instance, f'DROP DATABASE IF EXISTS "{name}"')

    def list_users(self, instance: Instance) -> list[tuple[str, list[str]]]:
        # the databases a role owns: create_user makes it the owner of the one it is given
        query = ("SELECT r.rolname, COALESCE(string_agg(d.datname, ',' ORDER BY d.datname), '') FROM pg_roles r "
                 "LEFT JOIN pg_database d ON d.datdba = r.oid WHERE r.rolcanlogin AND r.rolname NOT IN "
                 f"('postgres', {_pg_literal(REPLICATION_USER)}) AND r.rolname NOT LIKE 'pg\\_%' "
                 "GROUP BY r.rolname ORDER BY r.rolname")
        with self.connection(instance) as conn:
            rows = [line.split("|", 1) for line in self.sql(conn, instance, query).splitlines() if line]
        return [(row[0], [d for d in (row[1] if len(row) > 1 else "").split(",") if d]) for row in rows]

    def delete_user(self, instance: Instance, user: str) -> None:
        """Drop the role; what it owns (its databases) passes to postgres first, its grants go."""
        check_sql_name(user, "user")
        statement = (f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_pg_literal(user)}) THEN "
                     f"EXECUTE 'REASSIGN OWNED BY \"{user}\" TO postgres'; EXECUTE 'DROP OWNED BY \"{user}\"'; "
                     f"EXECUTE 'DROP ROLE \"{user}\"'; END IF; END $$;")
        with self.connection(instance) as conn:
            self.sql(conn, instance, statement)


def _pg_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings: only quotes are doubled)."""
    if "\x00" in value:
        raise ManagerError("a NUL character cannot be part of a password", field="password")
    return "'" + value.replace("'", "''") + "'"
