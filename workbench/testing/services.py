"""The real servers the integration tests run against: ZooKeeper, sshd, MariaDB, PostgreSQL, Redis.

Each class is a :class:`~workbench.testing.process.ServiceProcess`: it runs the server binary in
the foreground as a child process on a free 127.0.0.1 port, with its configuration, data and log
under its own work directory, and exposes what clients need (hosts string, keys, SQLAlchemy URLs).

::

    with RedisServer(tmp_path / "redis") as redis_server:
        client = redis.Redis.from_url(redis_server.url())

MariaDB and PostgreSQL refuse to run as root, so when we are root they run as the ``mysql`` and
``postgres`` system users. Those users must be able to reach their work directory: use
:func:`traversable_tempdir` rather than a pytest ``tmp_path`` (whose parents are private to root).
"""

from __future__ import annotations

import base64
import getpass
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence
from urllib.parse import quote

from workbench.errors import ServiceError
from workbench.testing.process import LOOPBACK, ServiceProcess, require_binary, running_as_root

# Client libraries are imported where used: this module is loaded with the pytest plugin on
# every run, and paramiko alone would add a quarter second to each start of pytest.
if TYPE_CHECKING:
    import kazoo.client
    import paramiko
    import pymysql.connections
    import psycopg

__all__ = [
    "HarnessService",
    "ZooKeeperServer",
    "SshServer",
    "SqlServer",
    "MariaDBServer",
    "PostgresServer",
    "RedisServer",
    "traversable_tempdir",
    "unique_name",
]

#: Unix socket paths longer than this do not fit in ``sockaddr_un.sun_path`` (108 bytes with NUL).
MAX_UNIX_SOCKET_PATH = 107

#: Database names we create are interpolated into DDL (identifiers cannot be bound parameters),
#: so they are restricted to a safe alphabet that is valid unquoted in MariaDB and PostgreSQL.
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def traversable_tempdir(prefix: str) -> Path:
    """A fresh temp directory (mode 0755) that system users such as mysql/postgres can enter.

    ``tempfile.mkdtemp`` creates mode 0700 and pytest's base temp dir is private to its owner,
    so a service running as another user could not reach a data dir below either of them.
    The caller removes the directory when done.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def unique_name(prefix: str) -> str:
    """``prefix`` plus a random hex suffix: a database or znode name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex}"


def _check_database_name(name: str) -> str:
    if not DATABASE_NAME.match(name):
        raise ServiceError(f"unsafe database name {name!r}: use letters, digits and _ (max 63)",
                           database=name)
    return name


class HarnessService(ServiceProcess):
    """What every harness server adds to ServiceProcess.

    * ``after_ready()``: setup that needs the running server (e.g. create a TCP user); its time
      counts in ``start_seconds``.
    * Any failure while starting stops the child and becomes a ServiceError carrying the log tail.
    * ``stop()`` first signals the real server rather than the ``runuser`` wrapper: runuser
      answers SIGTERM by SIGKILLing its child two seconds later, which would cut a database
      shutdown short.
    """

    #: the signal that makes the server shut down cleanly and promptly
    stop_signal: signal.Signals = signal.SIGTERM

    def after_ready(self) -> None:
        """Setup that needs the server up (runs once ``is_ready()`` is true)."""

    def start(self) -> HarnessService:
        try:
            super().start()
            setup_began = time.monotonic()
            self.after_ready()
        except ServiceError:
            self.stop()
            raise
        except Exception as exc:
            self.stop()
            raise ServiceError(f"{self.name} failed to start: {exc!r}", service=self.name,
                               log=self.log_tail()) from exc
        except BaseException:  # KeyboardInterrupt: never leave a server behind
            self.stop()
            raise
        assert self.start_seconds is not None
        self.start_seconds += time.monotonic() - setup_began
        return self

    def server_pid(self) -> int | None:
        """Pid of the server itself: the child of ``runuser`` when wrapped, else our child."""
        if self.process is None:
            return None
        if self.run_as and running_as_root():
            pid = self.process.pid
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                return None
            return int(children[0]) if children else None
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            pid = self.server_pid()
            if pid is not None:
                try:
                    os.kill(pid, self.stop_signal)
                    # runuser exits with its child, so waiting on our child covers both
                    process.wait(timeout)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        # whatever is still running (or never forked) gets the process-group treatment
        super().stop(timeout)

    # -- helpers for subclasses -----------------------------------------------------------
    def run_tool(self, argv: Sequence[str], timeout: float = 120.0) -> None:
        """Run a setup command (initdb...), appending its output to the service log."""
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                completed = subprocess.run(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, cwd=self.workdir, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ServiceError(f"{self.name}: {argv[0]} did not finish in {timeout:.0f}s",
                                   service=self.name, log=self.log_tail()) from None
        if completed.returncode != 0:
            raise ServiceError(f"{self.name}: {argv[0]} failed with code {completed.returncode}",
                               service=self.name, log=self.log_tail())

    def check_reachable_by_run_as_user(self) -> None:
        """Fail early and clearly when ``run_as`` cannot enter the work directory.

        Otherwise the server dies with a bare "Permission denied" on some file below it. Asking
        the user itself (``test -x`` as that user) also honours ACLs and group membership.
        """
        if not (self.run_as and running_as_root()):
            return
        probe = subprocess.run(["runuser", "-u", self.run_as, "--", "test", "-x", str(self.workdir)],
                               stdin=subprocess.DEVNULL, capture_output=True)
        if probe.returncode != 0:
            raise ServiceError(
                f"{self.name} runs as user {self.run_as}, who cannot enter {self.workdir}: some "
                f"parent directory is private (pytest's tmp_path is); use traversable_tempdir()",
                service=self.name, workdir=str(self.workdir))

    def check_socket_path(self, path: Path) -> None:
        if len(str(path)) > MAX_UNIX_SOCKET_PATH:
            raise ServiceError(f"{self.name}: unix socket path too long for the kernel: {path}; "
                               f"use a shorter work directory", service=self.name)


# ---------------------------------------------------------------------------------------------
class ZooKeeperServer(HarnessService):
    """A standalone ZooKeeper on ``hosts`` ("127.0.0.1:PORT"), run on the JVM from Debian's jars.

    Its log4j configuration sends everything to stdout, i.e. into ``log_path``.
    ``chroot()`` gives a test its own subtree; clients then use ``hosts + "/t-..."``.
    """

    name = "zookeeper"

    #: Debian's zookeeper.jar lists its other dependencies in its manifest Class-Path; the logging
    #: bridge and log4j 1.2 must be added by hand (that is what zkEnv.sh does too).
    DEFAULT_JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-log4j12.jar",
                    "/usr/share/java/log4j-1.2.jar")

    LOG4J_PROPERTIES = "\n".join([
        "# Written by workbench.testing.services: everything at INFO to stdout (the service log).",
        "log4j.rootLogger=INFO, CONSOLE",
        "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender",
        "log4j.appender.CONSOLE.Target=System.out",
        "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n",
        "",
    ])

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None, *,
                 java: str = "java", jars: Sequence[str] = DEFAULT_JARS) -> None:
        super().__init__(workdir, host, port)
        self.java = require_binary(java, "default-jre-headless")
        for jar in jars:
            if not os.path.isfile(jar):
                raise ServiceError(f"{jar} not found; install it with: apt-get install -y zookeeper",
                                   binary=jar, package="zookeeper")
        self.jars = list(jars)
        self.conf_dir = self.workdir / "conf"
        self.data_dir = self.workdir / "data"
        self.log_dir = self.workdir / "logs"

    @property
    def hosts(self) -> str:
        """The kazoo ``hosts`` string of this server."""
        return self.address

    def prepare(self) -> None:
        for path in (self.conf_dir, self.data_dir, self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        settings = {
            "tickTime": 2000,
            "initLimit": 10,
            "syncLimit": 5,
            "dataDir": self.data_dir,
            "clientPort": self.port,
            "clientPortAddress": self.host,
            # the admin server would take port 8080: one test run would then block the next
            "admin.enableServer": "false",
            # kazoo's server_version() uses "envi"; readiness uses "srvr"
            "4lw.commands.whitelist": "*",
            # every test client comes from 127.0.0.1: the default cap of 60 per IP is too low
            "maxClientCnxns": 0,
            # data is thrown away after the run: skip fsync on every write (zookeeper.forceSync)
            "forceSync": "no",
        }
        (self.conf_dir / "zoo.cfg").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        (self.conf_dir / "log4j.properties").write_text(self.LOG4J_PROPERTIES)

    def command(self) -> Sequence[str]:
        return [
            self.java, "-Xmx256m",
            # a short-lived test server: the quick JIT tier and serial GC start fastest
            "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dzookeeper.log.dir={self.log_dir}",
            f"-Dlog4j.configuration=file:{self.conf_dir / 'log4j.properties'}",
            "-cp", os.pathsep.join([str(self.conf_dir), *self.jars]),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.conf_dir / "zoo.cfg"),
        ]

    def four_letter_word(self, word: str, timeout: float = 2.0) -> str:
        """Send a ZooKeeper four-letter command ("ruok", "srvr", ...) and return the answer."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(word.encode("ascii"))
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def is_ready(self) -> bool:
        # The port opens before the database is loaded; until then "srvr" answers "This
        # ZooKeeper instance is not currently serving requests" instead of the server's mode.
        # (No bare port_open() probe first: ZooKeeper logs a stack trace for every connection
        # closed without a request.)
        try:
            return "Mode:" in self.four_letter_word("srvr")
        except OSError:
            return False

    @contextmanager
    def client(self, hosts: str | None = None, timeout: float = 15.0) -> Iterator[kazoo.client.KazooClient]:
        """A started kazoo client, stopped and closed afterwards.

        ``hosts`` defaults to the whole tree; pass a ``chroot()`` hosts string to confine it.
        """
        from kazoo.client import KazooClient

        hosts = hosts or self.hosts
        client = KazooClient(hosts=hosts, timeout=timeout)
        try:
            client.start(timeout=timeout)
        except Exception as exc:
            client.close()
            raise ServiceError(f"kazoo cannot connect to {hosts}: {exc!r}",
                               service=self.name, log=self.log_tail()) from exc
        try:
            yield client
        finally:
            client.stop()
            client.close()

    @contextmanager
    def chroot(self, prefix: str = "t-") -> Iterator[str]:
        """Create a unique top-level znode, yield ``"HOST:PORT/<node>"``, delete it afterwards."""
        path = "/" + unique_name(prefix)
        with self.client() as admin:
            admin.create(path)
        try:
            yield self.hosts + path
        finally:
            with self.client() as admin:
                admin.delete(path, recursive=True)


# ---------------------------------------------------------------------------------------------
def _write_ed25519_keypair(private_path: Path, comment: str) -> str:
    """Write an OpenSSH ed25519 private key (mode 0600) and its ``.pub``; return the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption())
    # create with 0600 from the start: sshd and ssh refuse private keys others can read
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_bytes)
    public_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH).decode()
    public_line = f"{public_line} {comment}"
    Path(f"{private_path}.pub").write_text(public_line + "\n")
    return public_line


class SshServer(HarnessService):
    """An OpenSSH sshd on a loopback port with a generated host key and one authorized client key.

    Tests pin ``host_public_key`` (under the name ``host_key_name``) and log in as ``username``
    with ``client_key_path``. Only key authentication is enabled; only the generated
    ``authorized_keys`` file of this server is consulted, never the user's own.
    """

    name = "sshd"

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None, *,
                 sshd: str = "/usr/sbin/sshd") -> None:
        super().__init__(workdir, host, port)
        # sshd re-executes itself for every connection and so insists on an absolute path
        self.sshd = os.path.abspath(require_binary(sshd, "openssh-server"))
        self.config_path = self.workdir / "sshd_config"
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"
        self.client_key_path = self.workdir / "client_ed25519_key"
        self.authorized_keys_path = self.workdir / "authorized_keys"
        # sshd run by a normal user can only log that same user in
        self.username = "root" if running_as_root() else getpass.getuser()

    @property
    def host_key_name(self) -> str:
        """The name of this server in known_hosts terms (paramiko looks up ``[host]:port``)."""
        return f"[{self.host}]:{self.port}" if self.port != 22 else self.host

    @property
    def host_public_key(self) -> paramiko.PKey:
        """The server's public host key, to pin in a client's host keys."""
        import paramiko

        public_path = Path(f"{self.host_key_path}.pub")
        if not public_path.exists():
            raise ServiceError("the sshd host key is generated by start(): start the server first",
                               service=self.name)
        key_type, blob = public_path.read_text().split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))

    def pin_host_key(self, client: paramiko.SSHClient) -> None:
        """Trust exactly this server's host key in ``client`` (use with RejectPolicy)."""
        key = self.host_public_key
        client.get_host_keys().add(self.host_key_name, key.get_name(), key)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``SSHClient.connect`` that log in with the generated client key."""
        return dict(hostname=self.host, port=self.port, username=self.username,
                    key_filename=str(self.client_key_path), look_for_keys=False, allow_agent=False,
                    timeout=10, banner_timeout=10, auth_timeout=10)

    def prepare(self) -> None:
        # generated once per work dir: a restarted server keeps the keys tests have pinned
        if not self.host_key_path.exists():
            _write_ed25519_keypair(self.host_key_path, "workbench-test-host")
            client_public = _write_ed25519_keypair(self.client_key_path, "workbench-test-client")
            self.authorized_keys_path.write_text(client_public + "\n")
        self.config_path.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            # the keys live under /tmp (world-writable): strict mode would reject them
            "StrictModes no",
            # no PAM: no session modules, and a login needs nothing but the key
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            # in-process SFTP: does not depend on where the sftp-server helper is installed
            "Subsystem sftp internal-sftp",
            "",
        ]))
        # the privilege separation directory sshd chroots its pre-auth child into
        if running_as_root():
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        # a config error is clearer from "sshd -t" than from a server that exits at once
        self.run_tool([self.sshd, "-t", "-f", str(self.config_path)])

    def command(self) -> Sequence[str]:
        # -D: stay in the foreground as our child; -e: log to stderr, i.e. into log_path
        return [self.sshd, "-D", "-e", "-f", str(self.config_path)]

    def is_ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
class SqlServer(HarnessService):
    """Common part of the SQL servers: a TCP login for SQLAlchemy and throwaway databases."""

    #: the TCP login created after start, with all privileges; the password is random per server
    username = "workbench"
    #: SQLAlchemy dialect+driver of ``url()``
    drivername = ""

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None) -> None:
        super().__init__(workdir, host, port)
        self.password = secrets.token_hex(16)

    def url(self, database: str = "") -> str:
        """SQLAlchemy URL of ``database`` on this server, logging in as ``username``."""
        return (f"{self.drivername}://{quote(self.username, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{database}")

    def create_database(self, name: str) -> None:
        raise NotImplementedError

    def drop_database(self, name: str) -> None:
        raise NotImplementedError

    def database_exists(self, name: str) -> bool:
        raise NotImplementedError

    @contextmanager
    def temporary_database(self, prefix: str = "t_") -> Iterator[str]:
        """Create a uniquely named database, yield its URL, drop it afterwards."""
        name = unique_name(prefix)
        self.create_database(name)
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


class MariaDBServer(SqlServer):
    """A MariaDB server with a fresh data directory, run as user mysql when we are root.

    Administration goes through the unix socket as the OS user (socket authentication);
    clients use ``url(database)`` (``mysql+pymysql://workbench:...@127.0.0.1:PORT/db``).
    """

    name = "mariadb"
    run_as = "mysql"
    drivername = "mysql+pymysql"

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None, *,
                 mariadbd: str = "/usr/sbin/mariadbd",
                 install_db: str = "/usr/bin/mariadb-install-db") -> None:
        super().__init__(workdir, host, port)
        self.mariadbd = require_binary(mariadbd, "mariadb-server")
        self.install_db = require_binary(install_db, "mariadb-server")
        self.data_dir = self.workdir / "data"
        self.tmp_dir = self.workdir / "tmp"
        self.socket_path = self.workdir / "run" / "mysqld.sock"
        self.pid_path = self.workdir / "run" / "mysqld.pid"
        # socket authentication maps the OS user running the tests to the same-named SQL account
        self.admin_user = "root" if running_as_root() else getpass.getuser()

    def prepare(self) -> None:
        self.check_socket_path(self.socket_path)
        for path in (self.tmp_dir, self.socket_path.parent):
            path.mkdir(parents=True, exist_ok=True)
        self.give_to_run_as_user(self.workdir)
        self.check_reachable_by_run_as_user()
        if not (self.data_dir / "mysql").is_dir():
            argv = [self.install_db, "--no-defaults", f"--datadir={self.data_dir}",
                    "--auth-root-authentication-method=socket", "--skip-test-db"]
            if running_as_root():
                argv.append(f"--user={self.run_as}")
            else:
                argv.append(f"--auth-root-socket-user={self.admin_user}")
            self.run_tool(argv)

    def command(self) -> Sequence[str]:
        return [
            # --no-defaults: never pick up /etc/mysql/*.cnf of the machine
            self.mariadbd, "--no-defaults",
            f"--datadir={self.data_dir}", f"--tmpdir={self.tmp_dir}",
            f"--socket={self.socket_path}", f"--pid-file={self.pid_path}",
            f"--port={self.port}", f"--bind-address={self.host}",
            # the TCP account is '...'@'127.0.0.1': match addresses, never ask DNS
            "--skip-name-resolve",
            # the compiled-in default is latin1; Debian's packaged config sets utf8mb4
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
            # throwaway data: do not flush the redo log on every commit
            "--innodb-flush-log-at-trx-commit=0",
            # no --log-error: the error log goes to stderr, i.e. into log_path
        ]

    @contextmanager
    def admin_connection(self) -> Iterator[pymysql.connections.Connection]:
        """An autocommit pymysql connection over the unix socket as the admin account."""
        import pymysql

        connection = pymysql.connect(unix_socket=str(self.socket_path), user=self.admin_user,
                                     autocommit=True, connect_timeout=5)
        try:
            yield connection
        finally:
            connection.close()

    def is_ready(self) -> bool:
        import pymysql

        if not self.socket_path.exists():
            return False
        try:
            with self.admin_connection() as connection, connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return True
        except (pymysql.err.MySQLError, OSError):
            return False

    def after_ready(self) -> None:
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                           (self.username, self.host, self.password))
            # a restarted server keeps the account: make its password the current one
            cursor.execute("ALTER USER %s@%s IDENTIFIED BY %s", (self.username, self.host, self.password))
            cursor.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION",
                           (self.username, self.host))

    def create_database(self, name: str) -> None:
        name = _check_database_name(name)
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")

    def drop_database(self, name: str) -> None:
        """Drop ``name``, first killing sessions still using it (a leaked connection inside a
        transaction would otherwise hold a metadata lock and make DROP wait forever)."""
        import pymysql

        name = _check_database_name(name)
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                           (name,))
            for (session_id,) in cursor.fetchall():
                try:
                    cursor.execute(f"KILL {int(session_id)}")
                except pymysql.err.OperationalError:
                    pass  # it ended in the meantime
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def database_exists(self, name: str) -> bool:
        with self.admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            return cursor.fetchone() is not None


def _newest_postgres_bindir() -> str:
    """Debian installs each PostgreSQL major version under /usr/lib/postgresql/N/bin."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((int(p.name), p) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []
    for _, path in reversed(versions):
        if (path / "bin" / "postgres").exists():
            return str(path / "bin")
    return "/usr/lib/postgresql/15/bin"  # only used to name what is missing


class PostgresServer(SqlServer):
    """A PostgreSQL cluster made by initdb, its ``postgres`` binary run in the foreground.

    Runs as user postgres when we are root. Local (socket) connections are trusted and used for
    administration as superuser postgres; TCP needs the password of ``username`` (scram).
    """

    name = "postgres"
    run_as = "postgres"
    drivername = "postgresql+psycopg"
    #: SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect
    stop_signal = signal.SIGINT

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None, *,
                 bindir: str | None = None) -> None:
        super().__init__(workdir, host, port)
        bindir = bindir or _newest_postgres_bindir()
        self.postgres = require_binary(os.path.join(bindir, "postgres"), "postgresql")
        self.initdb = require_binary(os.path.join(bindir, "initdb"), "postgresql")
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "run"
        self.superuser = "postgres"

    def prepare(self) -> None:
        self.check_socket_path(self.socket_dir / f".s.PGSQL.{self.port}")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.give_to_run_as_user(self.workdir)
        self.check_reachable_by_run_as_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self.run_tool(self.wrap_command([
                self.initdb, "-D", str(self.data_dir), "-U", self.superuser,
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C.UTF-8",
                # throwaway cluster: no fsync of the new files
                "--no-sync", "--no-instructions",
            ]))

    def command(self) -> Sequence[str]:
        return [
            self.postgres, "-D", str(self.data_dir), "-p", str(self.port),
            "-k", str(self.socket_dir), "-c", f"listen_addresses={self.host}",
            # throwaway data: durability costs time and buys nothing here
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            # logs go to stderr, i.e. into log_path
            "-c", "logging_collector=off",
        ]

    @contextmanager
    def admin_connection(self, database: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """An autocommit psycopg connection over the unix socket as superuser postgres."""
        import psycopg

        connection = psycopg.connect(host=str(self.socket_dir), port=self.port, user=self.superuser,
                                     dbname=database, autocommit=True, connect_timeout=5)
        try:
            yield connection
        finally:
            connection.close()

    def is_ready(self) -> bool:
        import psycopg

        # while the cluster starts up connections fail with "the database system is starting up"
        try:
            with self.admin_connection() as connection:
                connection.execute("SELECT 1")
                return True
        except (psycopg.OperationalError, OSError):
            return False

    def after_ready(self) -> None:
        from psycopg import sql

        with self.admin_connection() as connection:
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.username,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            connection.execute(sql.SQL("{} ROLE {} WITH LOGIN SUPERUSER PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(self.username), sql.Literal(self.password)))

    def create_database(self, name: str) -> None:
        from psycopg import sql

        name = _check_database_name(name)
        with self.admin_connection() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(self.username)))

    def drop_database(self, name: str) -> None:
        """Drop ``name`` even if a test leaked connections to it (``WITH (FORCE)``)."""
        from psycopg import sql

        name = _check_database_name(name)
        with self.admin_connection() as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def database_exists(self, name: str) -> bool:
        with self.admin_connection() as connection:
            return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


# ---------------------------------------------------------------------------------------------
class RedisServer(HarnessService):
    """A Redis server without persistence; ``url(db)`` is its redis-py URL."""

    name = "redis"

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None, *,
                 redis_server: str = "redis-server") -> None:
        super().__init__(workdir, host, port)
        self.redis_server = require_binary(redis_server, "redis-server")

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def command(self) -> Sequence[str]:
        return [
            self.redis_server, "--port", str(self.port), "--bind", self.host,
            # a test cache: no RDB snapshots, no append-only file
            "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), "--daemonize", "no",
            # empty logfile: log to stdout, i.e. into log_path
            "--logfile", "",
        ]

    def is_ready(self) -> bool:
        import redis

        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
