"""The MySQL/MariaDB manager: a mariadbd (or mysqld) per instance, GTID replication, logical backups."""

from __future__ import annotations

import re
import shlex
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.clusters.connection import Connection
from workbench.clusters.managers.base import BaseManager, check_sql_name, sql_literal

from workbench.clusters.models import PRIMARY

if TYPE_CHECKING:
    from workbench.clusters.models import Instance

#: databases that belong to the server, never to users: not backed up, not restored
SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")
#: the database where replication is verified: copied to new replicas, left out of backups
CHECK_DATABASE = "workbench"
REPLICATION_USER = "workbench_repl"


class MySQLManager(BaseManager):
    """MariaDB (or MySQL): the server drops to user mysql itself (``user = mysql`` in its config).

    Replicas follow the primary by GTID: each one is seeded from a consistent dump of the
    primary's user databases, then starts replicating at the dump's GTID position, so a replica
    added to a cluster that already holds data gets all of it.
    """

    service_name = "mysql"
    required_binaries = ("mariadbd", "mariadb", "mariadb-install-db", "mariadb-dump", "mariadb-admin")
    default_packages = ("mariadb-server", "mariadb-client")
    server_user = "mysql"
    #: seconds a seed dump is reused for further replicas of the same primary
    SEED_REUSE_SECONDS = 60.0

    def __init__(self, datastore: Any, runtime: Any = None) -> None:
        super().__init__(datastore, runtime)
        self._seed_lock = threading.Lock()
        self._seeds: dict[int, tuple[Path, str, float]] = {}
        self._seed_dir: tempfile.TemporaryDirectory[str] | None = None

    def socket(self, instance: Instance) -> str:
        return f"{self.paths(instance)['run_dir']}/mysqld.sock"

    def client(self, instance: Instance, tool: str = "mariadb") -> list[str]:
        # --no-defaults: never the host's /etc/mysql; root over the socket (socket authentication)
        return [tool, "--no-defaults", f"--socket={self.socket(instance)}", "-uroot"]

    def ping_command(self, conn: Connection, instance: Instance) -> list[str]:
        return [*self.client(instance, "mariadb-admin"), "ping"]

    def sql(self, conn: Connection, instance: Instance, statement: str) -> str:
        """Run SQL as root over the instance's socket; returns tab-separated rows."""
        return conn.run([*self.client(instance), "-N", "-B", "-e", statement]).stdout

    def set_parameters(self, conn: Connection, instance: Instance, values: dict[str, Any]) -> None:
        """``SET GLOBAL`` each value (names and values were checked: parameters.PARAMETERS)."""
        statements = [f"SET GLOBAL {name} = {self.parameter_text(value).upper()}" for name, value in sorted(values.items())]
        self.sql(conn, instance, "; ".join(statements))

    # -- lifecycle --------------------------------------------------------------------------------
    def install(self, instance: Instance, log: Any = None) -> None:
        """Directories, config, data directory, the started server (and on a primary the replication
        account and the check database): one round trip."""
        paths = self.paths(instance)
        statements, last = None, ""
        if instance.role == PRIMARY:
            # the statements (with the replication password) go on stdin, not on a command line
            statements = (f"CREATE USER IF NOT EXISTS {REPLICATION_USER}@'%' IDENTIFIED BY "
                          f"{sql_literal(self.secret(instance))};\n"
                          f"GRANT REPLICATION SLAVE ON *.* TO {REPLICATION_USER}@'%';\n"
                          f"CREATE DATABASE IF NOT EXISTS {CHECK_DATABASE};\n")
            last = f"step create the replication account\n{shlex.join(self.client(instance))}\n"

        def script() -> str:
            return (self.sh_make_directories(instance) + self.sh_write_config(instance)
                    + self.sh_give_to_server_user(paths["directory"], paths["data_dir"] + "/")
                    + "step mariadb-install-db\n"
                    # --defaults-file must come first; socket authentication for root, no test database
                    + shlex.join(["mariadb-install-db", f"--defaults-file={paths['config']}",
                                  "--auth-root-authentication-method=socket", "--skip-test-db"]) + " </dev/null\n"
                    + self._start_script(instance) + last)

        if log:
            log("initializing the data directory and starting mariadbd")
        with self.connection(instance) as conn:
            self.run_step(conn, instance, script, input=statements, timeout=300, log=log, ready_timeout=120)

    def _start_script(self, instance: Instance) -> str:
        return ("step start mariadbd\n"
                + self.sh_start_detached(instance, ["mariadbd", f"--defaults-file={self.paths(instance)['config']}"])
                + self.sh_wait_until_ready(instance, timeout=120))

    def _start(self, conn: Connection, instance: Instance) -> None:
        self.run_step(conn, instance, self._start_script(instance), ready_timeout=120)

    def start(self, instance: Instance) -> None:
        with self.connection(instance) as conn:
            self._start(conn, instance)

    # -- replication ------------------------------------------------------------------------------
    def seed(self, primary: Instance) -> tuple[Path, str]:
        """A dump of ``primary`` for new replicas and its GTID position.

        Replicas added together share one dump: any dump is a valid seed, because each replica
        starts replicating at the position of the snapshot it loaded.
        """
        with self._seed_lock:
            if self._seed_dir is None:
                # removed with the manager (or at exit): dumps never outlive the process
                self._seed_dir = tempfile.TemporaryDirectory(prefix="workbench-mysql-seed-")
            cached = self._seeds.get(primary.id)
            if cached is not None and time.monotonic() - cached[2] < self.SEED_REUSE_SECONDS and cached[0].exists():
                return cached[0], cached[1]
            # accounts first (they live in the mysql schema, which the dump leaves out), read before
            # the snapshot: one made in between is missed rather than replayed twice, which would
            # stop replication; accounts and dump are made by one script
            dump = self._dump(primary, Path(self._seed_dir.name), with_position=True)
            match = re.search(r"gtid_slave_pos\s*=\s*'([^']*)'", dump.read_text(errors="replace"))
            position = match.group(1) if match else ""
            if cached is not None:
                cached[0].unlink(missing_ok=True)
            self._seeds[primary.id] = (dump, position, time.monotonic())
            return dump, position

    def account_statements(self, instance: Instance) -> str:
        """``CREATE USER`` and ``GRANT`` statements of the accounts users made (not the server's own)."""
        system = ("root", "mysql", "mariadb.sys", "", REPLICATION_USER)
        listed = ", ".join(sql_literal(name) for name in system)
        with self.connection(instance) as conn:
            rows = self.sql(conn, instance, "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user "
                                            f"WHERE User NOT IN ({listed}) AND is_role = 'N'").split("\n")
            accounts = [row for row in rows if row.strip()]
            if not accounts:
                return ""
            queries = "; ".join(f"SHOW CREATE USER {a}; SHOW GRANTS FOR {a}" for a in accounts)
            out = conn.run([*self.client(instance), "-N", "-B", "-r", "-e", queries]).stdout
        return "".join(f"{line};\n" for line in out.splitlines() if line.strip())

    def follow(self, replica: Instance, primary: Instance, log: Any = None) -> None:
        """Seed ``replica`` from a dump of ``primary`` and start replicating from the dump's GTID position."""
        dump, position = self.seed(primary)
        client = shlex.join(self.client(replica))
        remote = f"{self.paths(replica)['tmp_dir']}/seed.sql"
        # the statements (with the replication password) go on stdin, not on a command line
        statements = (f"STOP SLAVE; SET GLOBAL gtid_slave_pos = {sql_literal(position)};\n"
                      f"CHANGE MASTER TO MASTER_HOST={sql_literal(primary.addr)}, MASTER_PORT={int(primary.port)}, "
                      f"MASTER_USER={sql_literal(REPLICATION_USER)}, "
                      f"MASTER_PASSWORD={sql_literal(self.secret(replica))}, "
                      f"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;\nSTART SLAVE;\n")
        script = (f"step load the seed\n{client} < {shlex.quote(remote)}\nrm -f {shlex.quote(remote)}\n"
                  f"step start replicating\n{client}\n")
        with self.connection(replica) as conn:
            conn.upload(dump, remote, mode=0o600)
            self.run_step(conn, replica, script, input=statements, timeout=3600, log=log)
        if log:
            log(f"replicating from {primary.name} at GTID position {position or '(start)'}")

    def write_check(self, conn: Connection, primary: Instance, token: str) -> None:
        self.sql(conn, primary, f"CREATE TABLE IF NOT EXISTS {CHECK_DATABASE}.replication_check "
                                "(token VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB; "
                                f"INSERT INTO {CHECK_DATABASE}.replication_check VALUES ({sql_literal(token)})")

    def read_check(self, conn: Connection, replica: Instance, token: str) -> bool:
        query = f"SELECT COUNT(*) FROM {CHECK_DATABASE}.replication_check WHERE token = {sql_literal(token)}"
        result = conn.run([*self.client(replica), "-N", "-B", "-e", query], check=False)
        return result.ok and result.stdout.strip() == "1"

    def read_check_script(self, replica: Instance, token: str) -> str:
        query = f"SELECT COUNT(*) FROM {CHECK_DATABASE}.replication_check WHERE token = {sql_literal(token)}"
        # before the write arrives the table may not exist yet: an error is "not yet"
        return f'[ "$({shlex.join([*self.client(replica), "-N", "-B", "-e", query])} 2>/dev/null)" = 1 ]'

    def replication_state(self, conn: Connection, replica: Instance) -> str:
        status = conn.run([*self.client(replica), "-e", "SHOW SLAVE STATUS\\G"], check=False).stdout
        return "; ".join(re.findall(r"(?:Slave_IO_Running|Slave_SQL_Running|Last_(?:IO|SQL)_Error): (.+)", status))

    # -- backups ----------------------------------------------------------------------------------
    def user_databases(self, conn: Connection, instance: Instance, include_check: bool = False) -> list[str]:
        names = self.sql(conn, instance, "SHOW DATABASES").split()
        skip = SYSTEM_DATABASES if include_check else (*SYSTEM_DATABASES, CHECK_DATABASE)
        return [name for name in names if name not in skip]

    def _dump(self, instance: Instance, destination: Path, with_position: bool = False) -> Path:
        """Dump the user databases and fetch the file; a replica seed (``with_position``) also holds
        the check database, the GTID of its snapshot and, first, the accounts users made."""
        name = f"{instance.name}-{time.strftime('%Y%m%dT%H%M%S')}-{self.new_token()[:6]}.sql"
        path = f"{self.paths(instance)['backup_dir']}/{name}"
        remote = shlex.quote(path)
        client = shlex.join(self.client(instance))
        skip = "|".join(SYSTEM_DATABASES if with_position else (*SYSTEM_DATABASES, CHECK_DATABASE))
        argv = [*self.client(instance, "mariadb-dump"), "--single-transaction", "--routines", "--events",
                "--triggers"]
        if with_position:
            # the GTID of the dump's snapshot, written as a comment the replica reads back
            argv += ["--gtid", "--master-data=2"]
        script = f": > {remote}\n"
        if with_position:
            system = ", ".join(sql_literal(n) for n in ("root", "mysql", "mariadb.sys", "", REPLICATION_USER))
            listing = ("SELECT CONCAT('SHOW CREATE USER ', QUOTE(User), '@', QUOTE(Host), '; SHOW GRANTS FOR ', "
                       f"QUOTE(User), '@', QUOTE(Host), ';') FROM mysql.user WHERE User NOT IN ({system}) "
                       "AND is_role = 'N'")
            script += (f"step list the accounts\nq=$({client} -N -B -e {shlex.quote(listing)} </dev/null)\n"
                       f'if [ -n "$q" ]; then acc=$(printf \'%s\\n\' "$q" | {client} -N -B -r); '
                       f"printf '%s\\n' \"$acc\" | sed '/^[[:space:]]*$/d; s/$/;/' >> {remote}; fi\n")
        script += (f"step list the databases\ndbs=$({client} -N -B -e 'SHOW DATABASES' </dev/null)\n"
                   # one name a line, taken as is (no globbing, spaces kept)
                   "set -f; IFS='\n'; set --\n"
                   f'for d in $dbs; do case "$d" in {skip}) ;; *) set -- "$@" "$d";; esac; done\n'
                   "unset IFS; set +f\n"
                   f"step mariadb-dump\nif [ $# -gt 0 ]; then {shlex.join(argv)} --databases \"$@\" >> {remote} "
                   f"</dev/null; else echo '-- no user databases' >> {remote}; fi\n")
        with self.connection(instance) as conn:
            self.run_step(conn, instance, script, timeout=3600)
            return self.fetch(conn, path, destination, name)

    def backup(self, instance: Instance, destination: Path) -> Path:
        return self._dump(instance, destination)

    def restore(self, instance: Instance, backup_file: Path) -> None:
        with self.connection(instance) as conn:
            remote = f"{self.paths(instance)['tmp_dir']}/restore.sql"
            conn.upload(backup_file, remote, mode=0o600)
            try:
                conn.run(["sh", "-c", '"$@" < "$0"', remote, *self.client(instance)], timeout=3600)
            finally:
                conn.run(["rm", "-f", remote])

    # -- accounts ---------------------------------------------------------------------------------
    def create_database(self, instance: Instance, name: str) -> None:
        check_sql_name(name, "database")
        with self.connection(instance) as conn:
            self.sql(conn, instance, f"CREATE DATABASE IF NOT EXISTS `{name}` "
                                     "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    def create_user(self, instance: Instance, user: str, password: str, database: str | None = None) -> None:
        """A login from any address with all privileges on ``database`` (or none when not given)."""
        check_sql_name(user, "user")
        statements = [f"CREATE USER IF NOT EXISTS `{user}`@'%' IDENTIFIED BY {sql_literal(password)}",
                      f"ALTER USER `{user}`@'%' IDENTIFIED BY {sql_literal(password)}"]
        if database:
            check_sql_name(database, "database")
            statements.append(f"GRANT ALL PRIVILEGES ON `{database}`.* TO `{user}`@'%'")
        with self.connection(instance) as conn:
            # the statement (with the password) goes on stdin, not on a command line
            conn.run(self.client(instance), input="; ".join(statements) + ";\n")

    def list_databases(self, instance: Instance) -> list[str]:
        with self.connection(instance) as conn:
            return sorted(self.user_databases(conn, instance))

    def delete_database(self, instance: Instance, name: str) -> None:
        check_sql_name(name, "database")
        with self.connection(instance) as conn:
            self.sql(conn, instance, f"DROP DATABASE IF EXISTS `{name}`")

    def list_users(self, instance: Instance) -> list[tuple[str, list[str]]]:
        system = ", ".join(sql_literal(n) for n in ("root", "mysql", "mariadb.sys", "", REPLICATION_USER))
        query = ("SELECT u.User, IFNULL(GROUP_CONCAT(d.Db ORDER BY d.Db), '') FROM mysql.user u LEFT JOIN mysql.db d "
                 f"ON d.User = u.User AND d.Host = u.Host WHERE u.User NOT IN ({system}) AND u.is_role = 'N' "
                 "GROUP BY u.User ORDER BY u.User")
        with self.connection(instance) as conn:
            rows = [line.split("\t") for line in self.sql(conn, instance, query).splitlines() if line]
        return [(row[0], [d for d in (row[1] if len(row) > 1 else "").split(",") if d]) for row in rows]

    def delete_user(self, instance: Instance, user: str) -> None:
        check_sql_name(user, "user")
        with self.connection(instance) as conn:
            self.sql(conn, instance, f"DROP USER IF EXISTS `{user}`@'%'")
