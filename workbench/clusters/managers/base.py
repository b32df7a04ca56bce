"""The datastore manager interface (the seed's BaseManager) and what every manager shares.

A manager installs, configures, starts, stops, backs up and restores one kind of datastore on an
instance, through a ``Connection`` it gets from its runtime (the task runner). Subclass and
override what differs, as the seed shows::

    from workbench.clusters.managers.base import BaseManager

    class MyBackyardDBManager(BaseManager):
        service_name = "backyardd"

        def backup(self, instance, destination):
            with self.connection(instance) as conn:
                conn.run_shell("/bin/bash my_backup.sh")
            ...

        @property
        def name(self):
            return "ClassNameOverriddenDB"

Templates live in ``managers/templates/<name>/`` where ``name`` is the lower-case class name
without "Manager" (MySQLManager -> mysql); ``<name>/<version>/config`` wins over ``<name>/config``.
Every instance has its own directory on its host: ``config``, ``data/``, ``run/``, ``log``,
``backups/``; the server runs as a process on the instance's address and port (never the
system service, so several instances share a host).
"""

from __future__ import annotations

import concurrent.futures
import re
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import jinja2

from workbench.clusters.connection import CommandResult, Connection
from workbench.clusters.errors import CommandError, ManagerError, ValidationError

if TYPE_CHECKING:
    from workbench.clusters.models import Datastore, Instance
    from workbench.clusters.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"

#: database and user names we put into SQL: identifiers cannot be bound parameters
SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: package manager binary -> install command prefix (argv), tried in this order; ``ensure_packages``
#: puts "--" after it, so a package name is never read as an option
PACKAGE_MANAGERS: dict[str, list[str]] = {
    "apt-get": ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends"],
    "dnf": ["dnf", "install", "-y"],
    "yum": ["yum", "install", "-y"],
    "apk": ["apk", "add", "--no-cache"],
    "zypper": ["zypper", "--non-interactive", "install"],
}


class ManagerRuntime(Protocol):
    """What a manager needs from its surroundings (the task runner provides it)."""

    settings: Settings

    def connect(self, instance: Instance) -> Connection: ...

    def secret(self, instance: Instance) -> str: ...


def check_sql_name(value: str, field: str) -> str:
    if not isinstance(value, str) or not SQL_NAME.fullmatch(value):
        raise ValidationError(f"{field} must be letters, digits and _ (max 63), not starting with a digit",
                              field=field, value=value)
    return value


def sql_literal(value: str) -> str:
    """A single-quoted SQL string literal (backslashes doubled too, for MySQL's default sql_mode)."""
    if "\x00" in value:
        raise ValidationError("a NUL character cannot be part of a password", field="password")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class BaseManager:
    """Manager base: ``datastore`` is the datastore version being managed (image and packages).

    ``runtime`` gives connections and the cluster's secret; the task runner passes itself.
    """

    #: name of the service, i.e. 'mysql' (for logs; the server is run as a process, not the service)
    service_name: str | None = None
    #: binaries prepare() needs on the host (names on PATH or absolute paths)
    required_binaries: Sequence[str] = ()
    #: packages installed when binaries are missing and the datastore lists none
    default_packages: Sequence[str] = ()
    #: the OS user the server runs as when started by root (None: the login user)
    server_user: str | None = None
    #: signal stop() sends (pid from ``pid_file``)
    stop_signal = "TERM"
    package_managers: dict[str, list[str]] = PACKAGE_MANAGERS

    def __init__(self, datastore: Datastore, runtime: ManagerRuntime | None = None) -> None:
        self.datastore = datastore
        self.runtime = runtime
        self._templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                             autoescape=False)
        self._templates.filters["shell"] = lambda value: shlex.quote(str(value))
        # what step scripts learned about each host (uid, binary directory): asked once per host
        self._facts: dict[tuple[Any, ...], dict[str, str]] = {}
        self._facts_lock = threading.Lock()

    @property
    def name(self) -> str:
        """Returns the name of the manager ex: MySQLManager = mysql."""
        return type(self).__name__.removesuffix("Manager").lower()

    @property
    def version(self) -> str:
        return self.datastore.version

    # -- reaching the instance --------------------------------------------------------------------
    def connection(self, instance: Instance) -> Connection:
        """A connection to the host of ``instance`` (use as a context manager)."""
        if self.runtime is None:
            raise ManagerError("this manager has no runtime to connect with", manager=self.name)
        return self.runtime.connect(instance)

    def secret(self, instance: Instance) -> str:
        if self.runtime is None:
            raise ManagerError("this manager has no runtime to read the cluster secret", manager=self.name)
        return self.runtime.secret(instance)

    # -- instance layout ----------------------------------------------------------------------------
    def paths(self, instance: Instance) -> dict[str, str]:
        """Where this instance's files are on its host."""
        base = instance.directory.rstrip("/")
        if not base:
            raise ManagerError(f"instance {instance.name} has no directory (create its server first)",
                               instance=instance.name)
        return {"directory": base, "config": f"{base}/config", "data_dir": f"{base}/data",
                "run_dir": f"{base}/run", "log_file": f"{base}/server.log", "backup_dir": f"{base}/backups",
                "tmp_dir": f"{base}/tmp", "pid_file": f"{base}/run/server.pid"}

    def as_server_user(self, conn: Connection, argv: Sequence[str]) -> list[str]:
        """``argv`` run as ``server_user`` when we are root on the host (runuser), else as is."""
        if self.server_user and self._is_root(conn):
            return ["runuser", "-u", self.server_user, "--", *argv]
        return list(argv)

    def _is_root(self, conn: Connection) -> bool:
        facts = self.host_facts(conn)
        if "uid" not in facts:
            self.remember_facts(conn, {"uid": conn.run(["id", "-u"]).stdout.strip()})
        return self.host_facts(conn)["uid"] == "0"

    # -- what is known about a host ------------------------------------------------------------------
    @staticmethod
    def host_key(conn: Connection) -> tuple[Any, ...]:
        """Identifies the host behind ``conn`` (views of one pooled SSH session share it)."""
        session = getattr(conn, "session", conn)
        key = getattr(session, "session_key", None)
        return (type(session).__name__, *(key or (session.host,)), conn.prefix)

    def host_facts(self, conn: Connection) -> dict[str, str]:
        with self._facts_lock:
            return dict(self._facts.get(self.host_key(conn), {}))

    def remember_facts(self, conn: Connection, facts: dict[str, str]) -> None:
        with self._facts_lock:
            self._facts.setdefault(self.host_key(conn), {}).update(facts)

    def give_to_server_user(self, conn: Connection, *paths: str) -> None:
        if self.server_user and self._is_root(conn):
            conn.run(["chown", "-R", f"{self.server_user}:{self.server_user}", *paths])

    # -- templates --------------------------------------------------------------------------------
    def template_names(self, filename: str = "config") -> list[str]:
        """Lookup order of a template: ``<name>/<version>/<filename>``, then ``<name>/<filename>``."""
        return [f"{self.name}/{self.version}/{filename}", f"{self.name}/{filename}"]

    def template_context(self, instance: Instance, **extra: Any) -> dict[str, Any]:
        # "parameters": the lines of the instance's configuration group, which templates put last
        lines = [self.parameter_line(name, value) for name, value in sorted(self.parameter_values(instance).items())]
        return {"instance": instance, "datastore": self.datastore, "version": self.version,
                "role": instance.role, "server_id": instance.index + 1, "parameters": lines,
                **self.paths(instance), **extra}

    # -- configuration groups ------------------------------------------------------------------------
    def parameter_values(self, instance: Instance) -> dict[str, Any]:
        """The values of the configuration group attached to ``instance`` (from the runtime, when it
        keeps groups: the task runner does)."""
        lookup = getattr(self.runtime, "configuration_values", None)
        return lookup(instance) if lookup is not None else {}

    @staticmethod
    def parameter_text(value: Any) -> str:
        """A checked parameter value as config files and SET commands write it."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value)

    def parameter_line(self, name: str, value: Any) -> str:
        """One line of the config file setting parameter ``name`` (``name = value``)."""
        return f"{name} = {self.parameter_text(value)}"

    def config_extra(self, instance: Instance, primary: Instance | None) -> dict[str, Any]:
        """What the main config template needs beside the usual context, to render it again."""
        return {}

    def apply_parameters(self, instance: Instance, before: dict[str, Any], after: dict[str, Any],
                         primary: Instance | None = None, log: Any = None) -> bool:
        """Render the config again (it now carries ``after``, the runtime's values) and bring the running
        server from ``before`` to ``after``: live where every changed parameter allows it, else by a
        restart. Returns whether the server was restarted."""
        from workbench.clusters.parameters import needs_restart

        with self.connection(instance) as conn:
            self.write_config(conn, instance, **self.config_extra(instance, primary))
        if needs_restart(self.datastore.manager, before, after):
            if log:
                log("restarting to apply the configuration")
            self.restart(instance)
            return True
        changed = {name: value for name, value in after.items() if before.get(name) != value}
        if changed:
            if log:
                log(f"applying {', '.join(sorted(changed))} to the running server")
            with self.connection(instance) as conn:
                self.set_parameters(conn, instance, changed)
        return False

    def set_parameters(self, conn: Connection, instance: Instance, values: dict[str, Any]) -> None:
        """Apply checked ``values`` of dynamic parameters to the running server."""
        raise ManagerError(f"{self.name} cannot change parameters of a running server", manager=self.name)

    def render_config_file(self, instance: Instance, filename: str = "config", **extra: Any) -> str:
        """Load and render a config file for this datastore (version-specific template first)."""
        try:
            template = self._templates.select_template(self.template_names(filename))
        except jinja2.TemplatesNotFound:
            raise ManagerError(f"no template for {self.name}: looked for {', '.join(self.template_names(filename))}",
                               manager=self.name, templates=self.template_names(filename)) from None
        return template.render(**self.template_context(instance, **extra))

    # -- packages -------------------------------------------------------------------------------
    def resolve_binaries(self, conn: Connection) -> dict[str, str]:
        """name -> path on the host of each required binary; missing ones are absent."""
        names = list(self.required_binaries)
        if not names:
            return {}
        script = "for b in \"$@\"; do p=$(command -v \"$b\") && echo \"$b=$p\"; done; true"
        found = conn.run(["sh", "-c", script, "sh", *names]).stdout.split()
        return dict(line.split("=", 1) for line in found if "=" in line)

    def ensure_packages(self, conn: Connection, log: Any = None) -> dict[str, str]:
        """Find the required binaries, installing the datastore's packages when some are missing.

        Raises ``ManagerError`` naming what is missing when nothing can install it (no known package
        manager on the host, or ``install_packages`` is off), ``ValidationError`` when a package
        name is not one (checked before any command runs).
        """
        from workbench.clusters.models import check_packages

        binaries = self.resolve_binaries(conn)
        missing = [b for b in self.required_binaries if b not in binaries]
        if not missing:
            return binaries
        packages = self.datastore.package_list or check_packages(",".join(self.default_packages))
        settings = self.runtime.settings if self.runtime is not None else None
        if settings is not None and not settings.install_packages:
            raise ManagerError(f"{self.name}: {', '.join(missing)} missing on {conn.host} and installing "
                               f"packages is turned off (install_packages); install: {' '.join(packages)}",
                               manager=self.name, missing=missing, packages=packages, host=conn.host)
        installer = None
        for binary, argv in self.package_managers.items():
            if conn.run(["sh", "-c", 'command -v "$1"', "sh", binary], check=False).ok:
                installer = argv
                break
        if installer is None or not packages:
            raise ManagerError(f"{self.name}: {', '.join(missing)} missing on {conn.host} and no known package "
                               f"manager to install {' '.join(packages) or 'them'}", manager=self.name,
                               missing=missing, packages=packages, host=conn.host)
        if log:
            log(f"installing {' '.join(packages)} with {installer[0] if installer[0] != 'env' else installer[2]}")
        # "--" ends the options: whatever a name looks like, the package manager reads it as a name
        conn.run([*installer, "--", *packages], timeout=1800)
        binaries = self.resolve_binaries(conn)
        still = [b for b in self.required_binaries if b not in binaries]
        if still:
            raise ManagerError(f"{self.name}: {', '.join(still)} still missing after installing "
                               f"{' '.join(packages)}", manager=self.name, missing=still, host=conn.host)
        return binaries

    # -- lifecycle --------------------------------------------------------------------------------
    def prepare(self, instance: Instance, primary: Instance | None = None, log: Any = None) -> None:
        """Install and configure the datastore on the instance; a replica is made to follow ``primary``.

        Two parts, which the task runner calls apart so that a cluster is built in parallel:
        ``install`` (whatever needs no running primary: on every instance at once) and, for a
        replica, ``follow`` once its primary runs. Given ``primary`` (which must be running), both
        are done here.
        """
        self.install(instance, log)
        if primary is not None:
            self.follow(instance, primary, log)

    def install(self, instance: Instance, log: Any = None) -> None:
        """Packages, directories, config; for a primary (or a datastore whose replicas are started
        empty) the data directory and the running server. Needs no running primary."""
        raise NotImplementedError

    def follow(self, replica: Instance, primary: Instance, log: Any = None) -> None:
        """Make the installed ``replica`` replicate from the running ``primary`` (started, if
        ``install`` left it stopped)."""

    #: seconds ``install_replica`` waits on the host for the primary before leaving the follow
    #: step to the caller (short: a primary that failed must not hold its replicas up)
    EARLY_FOLLOW_WAIT = 2.0

    def install_replica(self, replica: Instance, primary: Instance, log: Any = None) -> bool:
        """``install`` the replica and, where the manager can do it in the same round trip, follow
        ``primary`` at once if it answers within ``EARLY_FOLLOW_WAIT`` seconds; returns whether
        it follows (if not, the caller runs ``follow`` once the primary is up)."""
        self.install(replica, log)
        return False

    def start(self, instance: Instance) -> None:
        """Start the datastore (returns once it answers)."""
        raise NotImplementedError

    # A shell function: is process $1 alive? A server that exited but is not reaped yet (a zombie)
    # is not: daemons are reparented to the host's init, which on containers reaps late or never,
    # and `kill -0` succeeds on a zombie (a stop waited for the reaper: 1-2 s here, up to its timeout).
    SH_ALIVE = ('alive() { if [ -r "/proc/$1/stat" ]; then _state=$(sed "s/^.*) //" "/proc/$1/stat" 2>/dev/null) '
                '|| return 1; case "$_state" in Z*|X*|"") return 1;; esac; fi; kill -0 "$1" 2>/dev/null; }; ')

    def stop(self, instance: Instance, timeout: float = 60.0) -> None:
        """Stop the datastore: signal the pid in its pid file and wait until the process is gone."""
        ticks = int(timeout * 10)
        script = (self.SH_ALIVE + 'p=$(head -n 1 "$1" 2>/dev/null) || exit 0; [ -n "$p" ] || exit 0; '
                  'kill -"$2" "$p" 2>/dev/null || exit 0; '
                  'i=0; while alive "$p"; do i=$((i+1)); '
                  '[ $i -gt "$3" ] && { kill -KILL "$p"; sleep 0.2; exit 0; }; sleep 0.1; done')
        with self.connection(instance) as conn:
            conn.run(["sh", "-c", script, "sh", self.pid_file(instance), self.stop_signal, str(ticks)],
                     timeout=timeout + 30)

    def restart(self, instance: Instance) -> None:
        """Restart the datastore."""
        self.stop(instance)
        self.start(instance)

    def pid_file(self, instance: Instance) -> str:
        return self.paths(instance)["pid_file"]

    def status(self, instance: Instance) -> str:
        """'running' when the server process is alive and answers, 'stopped' when not, else 'unresponsive'."""
        with self.connection(instance) as conn:
            alive = conn.run(["sh", "-c", self.SH_ALIVE + 'p=$(head -n 1 "$1" 2>/dev/null) && [ -n "$p" ] && alive "$p"',
                              "sh", self.pid_file(instance)], check=False).ok
            if not alive:
                return "stopped"
            return "running" if conn.run(self.ping_command(conn, instance), check=False).ok else "unresponsive"

    def ping_command(self, conn: Connection, instance: Instance) -> list[str]:
        """A command that succeeds once the server answers."""
        raise NotImplementedError

    def wait_until_ready(self, conn: Connection, instance: Instance, timeout: float = 60.0) -> None:
        """Poll ``ping_command`` on the host (one round trip) until it succeeds; ``ManagerError`` on timeout."""
        ping = shlex.join(self.ping_command(conn, instance))
        script = (f'i=0; while [ $i -lt {int(timeout * 5)} ]; do {ping} >/dev/null 2>&1 && exit 0; '
                  f'i=$((i+1)); sleep 0.2; done; exit 1')
        result = conn.run(["sh", "-c", script], check=False, timeout=timeout + 30)
        if not result.ok:
            tail = conn.run(["tail", "-n", "20", self.paths(instance)["log_file"]], check=False).stdout
            raise ManagerError(f"{self.name} on {instance.name} did not answer within {timeout:.0f}s: {tail[-1500:]}",
                               manager=self.name, instance=instance.name)

    def start_detached(self, conn: Connection, instance: Instance, argv: Sequence[str]) -> None:
        """Start ``argv`` as a daemon in its own session, output appended to the instance log."""
        log_file = self.paths(instance)["log_file"]
        conn.run(["sh", "-c", 'log="$1"; shift; setsid -f "$@" >>"$log" 2>&1 </dev/null', "sh", log_file, *argv])

    def make_directories(self, conn: Connection, instance: Instance) -> None:
        paths = self.paths(instance)
        conn.run(["sh", "-c", 'mkdir -p "$2" "$3" "$4" "$5" && chmod 755 "$1" && touch "$6"', "sh",
                  paths["directory"], paths["data_dir"], paths["run_dir"], paths["backup_dir"], paths["tmp_dir"],
                  paths["log_file"]])

    def write_config(self, conn: Connection, instance: Instance, filename: str = "config",
                     remote: str | None = None, **extra: Any) -> str:
        text = self.render_config_file(instance, filename, **extra)
        conn.write_file(remote or self.paths(instance)["config"], text, mode=0o644)
        return text

    # -- steps as scripts: one round trip each -------------------------------------------------------
    # Every command over SSH pays for a login shell on the host (sshd runs it as `$SHELL -c ...`,
    # and bash reads ~/.bashrc), which is CPU work on the host: a step that is one script anyway
    # (directories, config, data directory, start, wait) is sent as one script. Every value in
    # a script is shell-quoted into it; secrets travel on stdin, never in the script text.

    #: exit status of a step script when required binaries are missing (packages are then installed)
    MISSING_BINARIES = 97
    #: exit status of a step script when the server did not answer in time
    NOT_READY = 98

    def script_preamble(self) -> str:
        """Shell that starts every step script: stop at the first failure, learn the uid, check the
        required binaries (exit ``MISSING_BINARIES`` before touching anything when some are missing)."""
        names = " ".join(shlex.quote(b) for b in self.required_binaries)
        return ("set -e\n"
                'step() { echo "step: $*" >&2; }\n'
                'uid=$(id -u); echo "fact: uid=$uid"\n'
                f'missing=; for b in {names}; do command -v "$b" >/dev/null 2>&1 || missing="$missing $b"; done\n'
                f'[ -z "$missing" ] || {{ echo "missing:$missing" >&2; exit {self.MISSING_BINARIES}; }}\n')

    def sh_as_server_user(self, argv: Sequence[str] | str) -> str:
        """Shell running ``argv`` (a list, or shell text) as ``server_user`` when the script runs as root."""
        line = argv if isinstance(argv, str) else shlex.join(argv)
        if not self.server_user:
            return line
        return f'if [ "$uid" = 0 ]; then runuser -u {shlex.quote(self.server_user)} -- {line}; else {line}; fi'

    def sh_give_to_server_user(self, *paths: str) -> str:
        if not self.server_user:
            return ""
        owner = shlex.quote(f"{self.server_user}:{self.server_user}")
        return f'if [ "$uid" = 0 ]; then chown -R {owner} {shlex.join(paths)}; fi\n'

    def sh_make_directories(self, instance: Instance) -> str:
        paths = self.paths(instance)
        return (f"mkdir -p {shlex.join([paths['data_dir'], paths['run_dir'], paths['backup_dir'], paths['tmp_dir']])}"
                f" && chmod 755 {shlex.quote(paths['directory'])} && touch {shlex.quote(paths['log_file'])}\n")

    def sh_write_file(self, path: str, text: str, mode: int = 0o644) -> str:
        """Shell writing ``text`` (not a secret: it is part of the script) to ``path``."""
        if "\x00" in text:
            raise ManagerError("a file written by a step script cannot hold NUL characters", manager=self.name)
        return f"printf '%s' {shlex.quote(text)} > {shlex.quote(path)} && chmod {mode:o} {shlex.quote(path)}\n"

    def sh_write_config(self, instance: Instance, filename: str = "config", remote: str | None = None,
                        **extra: Any) -> str:
        return self.sh_write_file(remote or self.paths(instance)["config"],
                                  self.render_config_file(instance, filename, **extra))

    def sh_start_detached(self, instance: Instance, argv: Sequence[str]) -> str:
        log_file = shlex.quote(self.paths(instance)["log_file"])
        return f"setsid -f {shlex.join(argv)} >>{log_file} 2>&1 </dev/null\n"

    def ping_script(self, instance: Instance) -> str:
        """Shell text that succeeds once the server answers (in a step script: ``$uid`` is known).

        The default quotes ``ping_command`` (given no connection); a manager whose ping needs one
        overrides this."""
        return shlex.join(self.ping_command(None, instance))  # type: ignore[arg-type]

    def sh_wait_until_ready(self, instance: Instance, timeout: float = 60.0) -> str:
        """Shell polling ``ping_script`` until it succeeds; exits ``NOT_READY`` with the log's tail."""
        log_file = shlex.quote(self.paths(instance)["log_file"])
        return (f"i=0; until {self.ping_script(instance)} >/dev/null 2>&1 </dev/null; do i=$((i+1)); "
                f"if [ $i -ge {int(timeout * 10)} ]; then tail -n 20 {log_file} >&2; exit {self.NOT_READY}; fi; "
                "sleep 0.1; done\n")

    def run_step(self, conn: Connection, instance: Instance, script: str | Callable[[], str], *,
                 input: str | bytes | None = None, timeout: float = 600.0, log: Any = None,
                 ready_timeout: float = 60.0) -> CommandResult:
        """Run ``script`` after the preamble in one round trip; missing binaries are installed
        (``ensure_packages``, which says clearly when it cannot) and the script is run once more.

        ``script`` may be a function making it (rendering templates): when that fails, missing
        binaries are still what is reported first.
        """
        if callable(script):
            try:
                script = script()
            except ManagerError:
                self.ensure_packages(conn, log)
                raise
        for attempt in (1, 2):
            result = conn.run(["sh", "-c", self.script_preamble() + script], check=False, input=input,
                              timeout=timeout)
            facts = dict(line[len("fact: "):].split("=", 1) for line in result.stdout.splitlines()
                         if line.startswith("fact: ") and "=" in line)
            if facts:
                self.remember_facts(conn, facts)
            if result.exit_status == self.MISSING_BINARIES and "missing:" in result.stderr and attempt == 1:
                self.ensure_packages(conn, log)
                continue
            break
        if result.exit_status == self.NOT_READY:
            raise ManagerError(f"{self.name} on {instance.name} did not answer within {ready_timeout:.0f}s: "
                               f"{result.stderr[-1500:]}", manager=self.name, instance=instance.name)
        return result.check()

    # -- replication, backups, accounts -----------------------------------------------------------
    def verify_replication(self, primary: Instance, replicas: Sequence[Instance], timeout: float = 60.0) -> str:
        """Write a fresh token on the primary and wait until every replica reads it; returns the token.

        The replicas are read concurrently; the first one that does not get the token in time fails it.
        """
        token = self.new_token()
        if all(self.read_check_script(replica, token) is not None for replica in replicas):
            return self._verify_on_hosts(primary, replicas, token, timeout)
        with self.connection(primary) as conn:
            self.write_check(conn, primary, token)

        def read(replica: Instance) -> None:
            with self.connection(replica) as conn:
                deadline = time.monotonic() + timeout
                while not self.read_check(conn, replica, token):
                    if time.monotonic() > deadline:
                        raise ManagerError(f"replica {replica.name} did not receive a write on {primary.name} "
                                           f"within {timeout:.0f}s ({self.replication_state(conn, replica)})",
                                           manager=self.name, instance=replica.name)
                    time.sleep(0.05)

        with concurrent.futures.ThreadPoolExecutor(max(1, len(replicas)), thread_name_prefix="clusters-verify") as pool:
            for future in [pool.submit(read, replica) for replica in replicas]:
                future.result()
        return token

    def _verify_on_hosts(self, primary: Instance, replicas: Sequence[Instance], token: str, timeout: float) -> str:
        """The primary writes ``token``, then each replica polls for it on its own host (one round
        trip each, concurrently), so it is seen as soon as it arrives.

        The token is new, so only this write, made after the replicas follow, can bring it."""
        ticks = int(timeout * 50)

        def read(replica: Instance) -> None:
            check = self.read_check_script(replica, token)
            poll = (f"step wait for the token\ni=0; until {{ {check}; }} </dev/null; do i=$((i+1)); "
                    f"if [ $i -ge {ticks} ]; then exit 1; fi; sleep 0.02; done\n")
            with self.connection(replica) as conn:
                try:
                    self.run_step(conn, replica, poll, timeout=timeout + 30)
                except CommandError:
                    raise ManagerError(f"replica {replica.name} did not receive a write on {primary.name} "
                                       f"within {timeout:.0f}s ({self.replication_state(conn, replica)})",
                                       manager=self.name, instance=replica.name) from None

        # the write first: a poll started before it would wait out its timeout if the write failed
        with self.connection(primary) as conn:
            self.write_check(conn, primary, token)
        with concurrent.futures.ThreadPoolExecutor(max(1, len(replicas)), thread_name_prefix="clusters-verify") as pool:
            for future in [pool.submit(read, replica) for replica in replicas]:
                future.result()
        return token

    def read_check_script(self, replica: Instance, token: str) -> str | None:
        """Shell (in a step script) that succeeds once ``replica`` has ``token``, quietly; None when
        the manager has none (the replica is then asked from here until it has it)."""
        return None

    def write_check(self, conn: Connection, primary: Instance, token: str) -> None:
        """Write ``token`` on the primary where ``read_check`` looks for it."""
        raise NotImplementedError

    def read_check(self, conn: Connection, replica: Instance, token: str) -> bool:
        """Whether ``replica`` has ``token`` yet."""
        raise NotImplementedError

    def replication_state(self, conn: Connection, replica: Instance) -> str:
        """A short description of the replica's replication state, for error messages."""
        return "no replication state available"

    def backup(self, instance: Instance, destination: Path) -> Path:
        """Preform a backup on the remote instance; the file is fetched into ``destination`` (a directory)."""
        raise NotImplementedError

    def restore(self, instance: Instance, backup_file: Path) -> None:
        """Load a backup file made by ``backup`` into the (primary) instance."""
        raise NotImplementedError

    def create_database(self, instance: Instance, name: str) -> None:
        raise ManagerError(f"{self.name} has no databases to create", manager=self.name)

    def create_user(self, instance: Instance, user: str, password: str, database: str | None = None) -> None:
        raise NotImplementedError

    def list_databases(self, instance: Instance) -> list[str]:
        """The user databases of the instance, sorted (not the system ones, nor workbench's own)."""
        raise ManagerError(f"{self.name} has no databases to list", manager=self.name)

    def delete_database(self, instance: Instance, name: str) -> None:
        raise ManagerError(f"{self.name} has no databases to delete", manager=self.name)

    def list_users(self, instance: Instance) -> list[tuple[str, list[str]]]:
        """(user, the databases it was given) of each account users made, sorted by name."""
        raise ManagerError(f"{self.name} has no users to list", manager=self.name)

    def delete_user(self, instance: Instance, user: str) -> None:
        raise ManagerError(f"{self.name} has no users to delete", manager=self.name)

    # -- shared helpers ---------------------------------------------------------------------------
    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(8)

    def fetch(self, conn: Connection, remote: str, destination: Path, name: str) -> Path:
        destination.mkdir(parents=True, exist_ok=True)
        local = destination / name
        try:
            conn.download(remote, local)
        finally:
            conn.remove(remote)
        return local

    def command_failed(self, exc: CommandError, what: str, instance: Instance) -> ManagerError:
        return ManagerError(f"{self.name} on {instance.name}: {what} failed: {exc.fields.get('stderr', '')}",
                            manager=self.name, instance=instance.name, command=exc.fields.get("command"))


__all__ = ["BaseManager", "ManagerRuntime", "PACKAGE_MANAGERS", "check_sql_name", "sql_literal", "TEMPLATES"]
