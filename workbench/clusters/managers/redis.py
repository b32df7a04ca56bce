"""The Redis manager: a redis-server per instance, replicas by ``replicaof``, backups as RDB files."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.clusters.connection import Connection
from workbench.clusters.errors import ManagerError, ValidationError
from workbench.clusters.managers.base import BaseManager, check_sql_name

if TYPE_CHECKING:
    from workbench.clusters.models import Instance


class RedisManager(BaseManager):
    """Redis: ``redis-server <config>`` daemonized, its pid file under the instance's ``run/``."""

    service_name = "redis-server"
    required_binaries = ("redis-server", "redis-cli")
    default_packages = ("redis-server",)

    def cli(self, instance: Instance, *args: str) -> list[str]:
        return ["redis-cli", "-h", instance.addr, "-p", str(instance.port), *args]

    def ping_command(self, conn: Connection, instance: Instance) -> list[str]:
        # redis-cli exits 0 even on an error reply; grep makes "PONG" the only success
        return ["sh", "-c", '"$@" | grep -qx PONG', "sh", *self.cli(instance, "ping")]

    def install(self, instance: Instance, log: Any = None) -> None:
        """Directories, config and the started server, in one round trip."""
        with self.connection(instance) as conn:
            self.run_step(conn, instance, lambda: self._start_script(instance, with_setup=True), log=log)
        if log:
            log(f"redis-server answers on {instance.addr}:{instance.port}")

    def _start_script(self, instance: Instance, with_setup: bool = False) -> str:
        setup = ""
        if with_setup:
            # a replica's config names no primary yet: follow() points it there once the primary runs
            setup = self.sh_make_directories(instance) + self.sh_write_config(instance, primary=None)
        return (setup + "step start redis-server\n"
                f"redis-server {shlex.quote(self.paths(instance)['config'])} </dev/null\n"
                + self.sh_wait_until_ready(instance))

    def _follow_script(self, replica: Instance, primary: Instance) -> str:
        cli = shlex.join(self.cli(replica))
        return (f"step follow {shlex.quote(primary.name)}\n"
                f"out=$({cli} REPLICAOF {shlex.quote(primary.addr)} {int(primary.port)})\n"
                'case "$out" in OK*) ;; *) echo "REPLICAOF: $out" >&2; exit 1;; esac\n'
                f"out=$({cli} CONFIG REWRITE)\n"
                'case "$out" in OK*) ;; *) echo "CONFIG REWRITE: $out" >&2; exit 1;; esac\n')

    def follow(self, replica: Instance, primary: Instance, log: Any = None) -> None:
        """REPLICAOF, then CONFIG REWRITE (a restarted replica still follows), in one round trip."""
        with self.connection(replica) as conn:
            self.run_step(conn, replica, self._follow_script(replica, primary), log=log)
        if log:
            log(f"replicating from {primary.name}")

    def install_replica(self, replica: Instance, primary: Instance, log: Any = None) -> bool:
        """Install and start the replica, then (same round trip) follow the primary once it answers
        PING, which it does when its own install is done (starting is its last part)."""
        ping = shlex.join(self.cli(primary, "ping"))
        ticks = int(self.EARLY_FOLLOW_WAIT * 50)

        def script() -> str:
            return (self._start_script(replica, with_setup=True)
                    + f"step wait for {shlex.quote(primary.name)}\n"
                    f'i=0; until [ "$({ping} 2>/dev/null </dev/null)" = PONG ]; do i=$((i+1)); '
                    f'if [ $i -ge {ticks} ]; then echo "fact: followed=0"; exit 0; fi; sleep 0.02; done\n'
                    + self._follow_script(replica, primary) + 'echo "fact: followed=1"\n')

        with self.connection(replica) as conn:
            result = self.run_step(conn, replica, script, log=log)
        followed = "fact: followed=1" in result.stdout.splitlines()
        if log:
            log(f"redis-server answers on {replica.addr}:{replica.port}"
                + (f"; replicating from {primary.name}" if followed else f"; {primary.name} not up yet"))
        return followed

    def _start(self, conn: Connection, instance: Instance) -> None:
        self.run_step(conn, instance, self._start_script(instance))

    def start(self, instance: Instance) -> None:
        with self.connection(instance) as conn:
            self._start(conn, instance)

    def query(self, conn: Connection, instance: Instance, *args: str) -> str:
        """Run one redis command with redis-cli; an error reply raises ``ManagerError``."""
        out = conn.run(self.cli(instance, *args)).stdout.strip()
        if out.startswith("ERR") or out.startswith("(error)") or out.startswith("WRONGPASS"):
            raise ManagerError(f"redis on {instance.name}: {' '.join(args[:2])}: {out}", manager=self.name,
                               instance=instance.name)
        return out

    def parameter_line(self, name: str, value: Any) -> str:
        return f"{name} {self.parameter_text(value)}"

    def config_extra(self, instance: Instance, primary: Instance | None) -> dict[str, Any]:
        # a replica's config names its primary (as CONFIG REWRITE left it after follow)
        return {"primary": primary if instance.role == "replica" else None}

    def set_parameters(self, conn: Connection, instance: Instance, values: dict[str, Any]) -> None:
        for name, value in sorted(values.items()):
            self.query(conn, instance, "CONFIG", "SET", name, self.parameter_text(value))

    def write_check(self, conn: Connection, primary: Instance, token: str) -> None:
        self.query(conn, primary, "SET", "workbench:replication-check", token)

    def read_check(self, conn: Connection, replica: Instance, token: str) -> bool:
        return self.query(conn, replica, "GET", "workbench:replication-check") == token

    def read_check_script(self, replica: Instance, token: str) -> str:
        get = shlex.join(self.cli(replica, "GET", "workbench:replication-check"))
        return f'[ "$({get} 2>/dev/null)" = {shlex.quote(token)} ]'

    def replication_state(self, conn: Connection, replica: Instance) -> str:
        info = conn.run(self.cli(replica, "INFO", "replication"), check=False).stdout
        return ", ".join(line.strip() for line in info.splitlines() if line.startswith(("master_link_status",
                                                                                        "role")))

    def backup(self, instance: Instance, destination: Path) -> Path:
        name = f"{instance.name}-{time.strftime('%Y%m%dT%H%M%S')}-{self.new_token()[:6]}.rdb"
        remote = f"{self.paths(instance)['backup_dir']}/{name}"
        with self.connection(instance) as conn:
            conn.run(self.cli(instance, "--rdb", remote))
            return self.fetch(conn, remote, destination, name)

    def restore(self, instance: Instance, backup_file: Path) -> None:
        """Stop the server, put the RDB file in place, start it (its replicas then resync)."""
        self.stop(instance)
        with self.connection(instance) as conn:
            conn.upload(backup_file, f"{self.paths(instance)['data_dir']}/dump.rdb", mode=0o644)
            self._start(conn, instance)

    def create_user(self, instance: Instance, user: str, password: str, database: str | None = None) -> None:
        """An ACL user with all commands on all keys (``database`` is not used by Redis)."""
        check_sql_name(user, "user")
        if not password or any(c.isspace() for c in password):
            raise ValidationError("a Redis password must be non-empty and without spaces", field="password")
        with self.connection(instance) as conn:
            # the password travels on stdin, never on a command line another user could read
            script = 'IFS= read -r pw; "$@" ">$pw" "~*" "&*" "+@all" | grep -qx OK'
            conn.run(["sh", "-c", script, "sh", *self.cli(instance, "ACL", "SETUSER", user, "reset", "on")],
                     input=password + "\n")
