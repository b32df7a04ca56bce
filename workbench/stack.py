"""The embedded stack: every workbench server in one process tree, with its state under one directory.

``workbench up`` builds an :class:`EmbeddedStack` and keeps it running until Ctrl-C; ``workbench
status`` reads the stack file it writes (``<state dir>/stack.json``) and checks what answers;
``workbench lab`` starts the stack and JupyterLab with ``WORKBENCH_STACK`` pointing at that file,
so the notebook extension connects to it. Nothing outside the machine is needed: SQLite stores,
loopback ports, self-signed TLS. Components are started in order and stopped in reverse; a
component that fails to start stops everything started before it.

::

    with EmbeddedStack("~/.workbench", domain_port=0) as stack:
        print(stack.endpoints())      # {"domain": {...}, "zdb": {...}, ...}

Credentials are generated once (random, mode 0600 file ``credentials.json``) and reused, so a
restarted stack keeps its passwords and data; the file's path is printed, never its contents.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from workbench.errors import ConfigurationError, ServiceError, WorkbenchError
from workbench.ports import port_open
from workbench.stack_watchdog import pid_alive as _pid_alive, start_watchdog

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "~/.workbench"
STACK_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.json"
ENVIRONMENT_VARIABLE = "WORKBENCH_STACK"
#: names the state directory every command and notebook uses when none is given
STATE_DIR_VARIABLE = "WORKBENCH_STATE_DIR"
#: where `workbench up` reads its SQLAlchemy URL when --sql is not given (a password stays off ps)
SQL_URL_VARIABLE = "WORKBENCH_SQL_URL"


class StackComponent(Protocol):
    """One server of the stack: started in order, stopped in reverse."""

    name: str

    def start(self, stack: "EmbeddedStack") -> None: ...

    def stop(self) -> None: ...

    def endpoints(self) -> dict[str, Any]: ...


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def load_credentials(state_dir: Path) -> dict[str, dict[str, str]]:
    """The stack's credentials, generated on first use and kept in ``credentials.json`` (0600)."""
    path = state_dir / CREDENTIALS_FILE
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigurationError("the stack's credentials file is not JSON", path=str(path)) from exc
    credentials = {
        "domain": {"user": "domain", "password": secrets.token_urlsafe(12)},
        "zdb": {"user": "dba", "password": secrets.token_urlsafe(12)},
        "commits": {"token": secrets.token_urlsafe(24)},
        "clusters": {"token": secrets.token_urlsafe(24)},
    }
    _write_private(path, json.dumps(credentials, indent=2))
    return credentials


class DomainComponent:
    """A domain broker and one agent on this host, and the zdb database ``demo`` (SM + TE) they run."""

    name = "domain"

    def __init__(self, port: int = 48004, agent_port: int = 0, database: str = "demo") -> None:
        self.port = port
        self.agent_port = agent_port
        self.database = database
        self.broker: Any = None
        self.agent: Any = None
        self.domain: Any = None
        self._stack: EmbeddedStack | None = None

    def start(self, stack: "EmbeddedStack") -> None:
        from workbench.domain import Agent, Domain
        from workbench.domain.transport import KnownBrokers

        self._stack = stack
        creds = stack.credentials["domain"]
        base = stack.state_dir / "domain"
        self.broker = Agent(port=self.port, state_dir=base / "broker", domain_user=creds["user"],
                            domain_password=creds["password"], broker=True, tags={"role": "broker"}).start()
        self.agent = Agent(port=self.agent_port, state_dir=base / "agent", domain_user=creds["user"],
                           domain_password=creds["password"], peer=self.broker.address,
                           tags={"role": "agent"}).start()
        self.domain = Domain(self.broker.address, creds["user"], creds["password"],
                             known_brokers=KnownBrokers(stack.known_brokers_path))
        agent_peer = self._wait_for_peer(self.agent.address)
        archive = stack.state_dir / "zdb" / self.database
        initialize = not archive.exists()
        dba = stack.credentials["zdb"]
        agent_peer.start_storage_manager(self.database, str(archive), initialize, wait_seconds=60)
        agent_peer.start_transaction_engine(
            self.database, options=[("--dba-user", dba["user"]), ("--dba-password", dba["password"])],
            wait_seconds=60)

    def _wait_for_peer(self, address: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            peer = self.domain.get_peer(address)
            if peer is not None:
                return peer
            time.sleep(0.05)
        raise ServiceError("the stack's agent did not join its broker", agent=address,
                           broker=self.broker.address)

    def stop(self) -> None:
        if self.domain is not None:
            try:
                database = self.domain.get_database(self.database)
                if database is not None:
                    database.shutdown()
            except WorkbenchError as exc:  # the agents stop what is left below
                log.warning("shutting down %s: %s", self.database, exc)
            self.domain.disconnect()
        for peer in (self.agent, self.broker):
            if peer is not None:
                peer.stop()

    def endpoints(self) -> dict[str, Any]:
        processes = [] if self.domain is None else [
            {"type": "TE" if p.is_transactional else "SM", "address": f"{p.address}:{p.port}", "pid": p.pid}
            for p in self.domain.get_database(self.database).processes]
        dba = self._stack.credentials["zdb"]["user"] if self._stack else "dba"
        host, port = self.broker.address.rsplit(":", 1)
        return {
            "domain": {"broker": self.broker.address, "agent": self.agent.address, "port": int(port),
                       "user": self._stack.credentials["domain"]["user"] if self._stack else "domain"},
            "zdb": {"database": self.database, "uri": f"zdb://{dba}:PASSWORD@{host}:{port}/{self.database}",
                    "processes": processes},
        }


class CommitsComponent:
    """A commits (Rainer) HTTP server on SQLite in the state dir, or ``sql_url``; ZooKeeper when given."""

    name = "commits"

    def __init__(self, port: int = 0, sql_url: str | None = None, zookeeper: str | None = None) -> None:
        self.port = port
        self.sql_url = sql_url
        self.zookeeper = zookeeper
        self.rainer: Any = None

    def start(self, stack: "EmbeddedStack") -> None:
        from workbench.commits.builder import create_rainer
        from workbench.commits.server import TokenAuth

        url = self.sql_url or f"sqlite:///{stack.state_dir / 'commits.db'}"
        zk_options = {"zookeeper": self.zookeeper, "zk_path": "/workbench/commits"} if self.zookeeper else {}
        # Reads stay open, as Rainer's are; a write needs the stack's token (a file from an older
        # stack lacks it: it is added, and saved with the others once the stack runs).
        token = stack.credentials.setdefault("commits", {}).setdefault("token", secrets.token_urlsafe(24))
        self.rainer = create_rainer(url, port=self.port, auth=TokenAuth(token), **zk_options).start()

    def stop(self) -> None:
        if self.rainer is not None:
            self.rainer.stop()

    def endpoints(self) -> dict[str, Any]:
        values = {"url": self.rainer.url}
        if self.zookeeper:
            values["zookeeper"] = f"{self.zookeeper}/workbench/commits"
        return {"commits": values}


class InventoryComponent:
    """An inventory server (application socket and web port) on SQLite in the state dir, or ``sql_url``.

    The application socket is ``socket_path``, or ``<state dir>/inventory.sock`` (reachable by
    this user and root alone, since the state dir is private).
    """

    name = "inventory"

    def __init__(self, socket_path: str | None = None, web_port: int = 0, sql_url: str | None = None) -> None:
        self.socket_path = socket_path
        self.web_port = web_port
        self.sql_url = sql_url
        self.server: Any = None

    def start(self, stack: "EmbeddedStack") -> None:
        from workbench.inventory.server import InventoryServer

        url = self.sql_url or f"sqlite:///{stack.state_dir / 'inventory.db'}"
        workdir = stack.state_dir / "inventory"
        workdir.mkdir(exist_ok=True)
        socket_path = self.socket_path or str(stack.state_dir / "inventory.sock")
        self.server = InventoryServer(url, socket_path=socket_path, web_port=self.web_port,
                                      workdir=str(workdir)).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def endpoints(self) -> dict[str, Any]:
        return {"inventory": {"socket": self.server.address, "web": self.server.web_url or ""}}


class ClustersComponent:
    """The clusters task runner with the local provider, and its HTTP API (token in the credentials)."""

    name = "clusters"

    def __init__(self, port: int = 0, sql_url: str | None = None) -> None:
        self.port = port
        self.sql_url = sql_url
        self.api: Any = None
        self.store: Any = None

    def start(self, stack: "EmbeddedStack") -> None:
        from workbench.clusters.api import ClustersApi
        from workbench.clusters.models import ClusterStore
        from workbench.clusters.settings import Settings

        settings = Settings.load()
        # Instance directories cannot live in the (private) state dir: MariaDB and PostgreSQL run
        # as their own users. One root per stack below the shared default keeps two stacks (and
        # their cluster names) apart.
        stack_id = hashlib.sha256(str(stack.state_dir).encode()).hexdigest()[:12]
        settings = settings.replace(state_dir=str(stack.state_dir / "clusters"), provider="local",
                                    instances_dir=str(Path(settings.instances_dir) / f"stack-{stack_id}"))
        self.store = ClusterStore(self.sql_url or settings.db_url, settings)
        # the versions the CLI defaults to are there for every client (Trove's list datastores and
        # create with one; they do not register any)
        from workbench.clusters.cli import DEFAULT_VERSIONS

        for manager, version in DEFAULT_VERSIONS.items():
            if manager in settings.datastore_managers:
                self.store.add_datastore(manager, version)
        token = stack.credentials.setdefault("clusters", {}).setdefault("token", secrets.token_urlsafe(24))
        self.api = ClustersApi(self.store, token=token, port=self.port).start()

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        if self.store is not None:
            try:  # the stack's own instances root goes once no cluster lives in it
                Path(self.store.settings.instances_dir).rmdir()
            except OSError:
                pass

    def endpoints(self) -> dict[str, Any]:
        return {"clusters": {"url": self.api.url, "provider": "local", "database": self.store.url,
                             "state_dir": str(self.store.settings.state_path),
                             "instances_dir": self.store.settings.instances_dir}}


class EmbeddedStack:
    """The workbench servers for one user, state under ``state_dir`` (default ``~/.workbench``)."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None, domain_port: int = 48004,
                 components: list[StackComponent] | None = None, *, commits_port: int = 0,
                 inventory_socket: str | None = None, inventory_web_port: int = 0, clusters_port: int = 0,
                 sql_url: str | None = None, zookeeper: str | None = None) -> None:
        self.state_dir = Path(state_dir or default_state_dir()).expanduser().resolve()
        self.components: list[StackComponent] = components if components is not None else [
            DomainComponent(port=domain_port),
            CommitsComponent(port=commits_port, sql_url=sql_url, zookeeper=zookeeper),
            InventoryComponent(socket_path=inventory_socket, web_port=inventory_web_port, sql_url=sql_url),
            ClustersComponent(port=clusters_port, sql_url=sql_url),
        ]
        self.started: list[StackComponent] = []
        self.credentials: dict[str, dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"<EmbeddedStack {self.state_dir}: {len(self.started)} of {len(self.components)} components started>"

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE

    @property
    def known_brokers_path(self) -> Path:
        return self.state_dir / "known_brokers"

    def start(self) -> "EmbeddedStack":
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        running = read_stack_file(self.state_dir)
        if running is not None and _pid_alive(running.get("pid", -1)) and running.get("pid") != os.getpid():
            raise ServiceError("a stack already runs on this state directory", state_dir=str(self.state_dir),
                               pid=running["pid"])
        self.credentials = load_credentials(self.state_dir)
        try:
            for component in self.components:
                log.info("starting %s", component.name)
                # Counted as started before it starts: one interrupted half-way (Ctrl-C, a failed
                # bind) is stopped too, and its stop() tolerates the parts that never came up.
                self.started.append(component)
                component.start(self)
        except BaseException:
            self.stop()
            raise
        # A kernel or script that exits without stop() must not leave database processes behind
        # (the agent starts them in sessions of their own, so they would outlive it).
        atexit.register(self.stop)
        # Components may have added credentials of their own (a file from an older stack lacks them).
        _write_private(self.state_dir / CREDENTIALS_FILE, json.dumps(self.credentials, indent=2))
        _write_private(self.stack_file, json.dumps(self.describe(), indent=2))
        return self

    def stop(self) -> None:
        """Stop every started component, newest first; forget the stack file."""
        atexit.unregister(self.stop)
        while self.started:
            component = self.started.pop()
            try:
                component.stop()
            except Exception:  # keep stopping the others: no component may leave orphans
                log.exception("stopping %s", component.name)
        if self.stack_file.exists():
            running = read_stack_file(self.state_dir)
            if running is None or running.get("pid") == os.getpid():
                self.stack_file.unlink()

    def endpoints(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for component in self.started:
            merged.update(component.endpoints())
        return merged

    def describe(self) -> dict[str, Any]:
        """What the stack file holds: who runs it, where its state and credentials are, its endpoints."""
        return {"pid": os.getpid(), "state_dir": str(self.state_dir),
                "credentials": str(self.state_dir / CREDENTIALS_FILE),
                "known_brokers": str(self.known_brokers_path), "started": time.time(),
                "endpoints": self.endpoints()}

    def __enter__(self) -> "EmbeddedStack":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def serve_until_signalled(self) -> None:
        """Block until SIGINT or SIGTERM (main thread only), then return; the caller stops the stack."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.wait(1.0):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def add_arguments(parser: Any, domain_port: int = 48004) -> None:
    """The flags that shape the stack, shared by ``workbench up`` and ``workbench lab``."""
    parser.add_argument("--state-dir", default=default_state_dir(),
                        help=f"where state lives (default ${STATE_DIR_VARIABLE} or {DEFAULT_STATE_DIR})")
    parser.add_argument("--domain-port", type=int, default=domain_port,
                        help=f"the domain broker's port (default {domain_port}; 0 picks a free one)")
    parser.add_argument("--commits-port", type=int, default=8080, help="the commits HTTP port (default 8080)")
    from workbench.inventory.protocol import DEFAULT_SOCKET

    parser.add_argument("--inventory-socket", default=DEFAULT_SOCKET, metavar="PATH",
                        help=f"the inventory application socket (default {DEFAULT_SOCKET}; 'state': one in the "
                             "state dir)")
    parser.add_argument("--inventory-web-port", type=int, default=8081,
                        help="the inventory web port (default 8081)")
    parser.add_argument("--clusters-port", type=int, default=0,
                        help="the clusters HTTP API port (default: a free one)")
    parser.add_argument("--sql", default=None, metavar="URL",
                        help="a SQLAlchemy URL for commits, inventory and clusters (default: "
                             f"${SQL_URL_VARIABLE}, else SQLite files in the state dir), e.g. "
                             "mysql+pymysql://... or postgresql+psycopg://...; a password belongs in the "
                             "variable, not here (ps shows command lines to every user)")
    parser.add_argument("--zookeeper", default=None, metavar="HOST:PORT",
                        help="publish commits through this ZooKeeper (default: none)")


def from_arguments(args: Any) -> "EmbeddedStack":
    """An (unstarted) stack shaped by the flags of :func:`add_arguments`."""
    from workbench.credentials import url_from

    sql_url = url_from(args.sql, "--sql", SQL_URL_VARIABLE)
    return EmbeddedStack(args.state_dir, domain_port=args.domain_port, commits_port=args.commits_port,
                         inventory_socket=None if args.inventory_socket == "state" else args.inventory_socket,
                         inventory_web_port=args.inventory_web_port,
                         clusters_port=args.clusters_port, sql_url=sql_url, zookeeper=args.zookeeper)


def default_state_dir() -> str:
    """``$WORKBENCH_STATE_DIR``, else ``~/.workbench``: where a stack lives when none is named."""
    return os.environ.get(STATE_DIR_VARIABLE) or DEFAULT_STATE_DIR


def read_stack_file(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The stack file of ``state_dir`` (default :func:`default_state_dir`), or None when no stack wrote one."""
    path = Path(state_dir or default_state_dir()).expanduser() / STACK_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigurationError("the stack file is not JSON", path=str(path)) from exc


def _addresses(endpoints: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, host:port) pairs worth checking in ``endpoints``."""
    found = []
    for system, values in endpoints.items():
        for key, value in values.items():
            if isinstance(value, str) and key in {"broker", "agent", "address", "url", "web"}:
                hostport = value.split("://", 1)[-1].split("/", 1)[0]
                if ":" in hostport:
                    found.append((f"{system}.{key}", hostport))
    return found


def stack_status(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Whether a stack runs on ``state_dir`` (default :func:`default_state_dir`), and what answers."""
    state_dir = state_dir or default_state_dir()
    described = read_stack_file(state_dir)
    if described is None:
        return {"running": False, "state_dir": str(Path(state_dir).expanduser()), "endpoints": {}}
    alive = _pid_alive(described.get("pid", -1))
    checks = {}
    for label, hostport in _addresses(described.get("endpoints", {})):
        host, port = hostport.rsplit(":", 1)
        checks[label] = alive and port_open("127.0.0.1" if host == "localhost" else host, int(port))
    for system, values in described.get("endpoints", {}).items():
        if isinstance(values.get("socket"), str):
            checks[f"{system}.socket"] = alive and _socket_answers(values["socket"])
    # The database processes the stack started: each must still run and listen (a shut-down
    # database, or a killed SM, is named here rather than hidden behind a broker that answers).
    for process in described.get("endpoints", {}).get("zdb", {}).get("processes", []):
        host, port = str(process.get("address", "")).rsplit(":", 1)
        checks[f"zdb.{process.get('type')} {host}:{port}"] = (
            alive and _pid_alive(process.get("pid", -1)) and port_open(host, int(port)))
    return {**described, "running": alive, "answering": checks}


def _socket_answers(path: str) -> bool:
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def environment_stack() -> dict[str, Any] | None:
    """The running stack of this user, with its credentials; None when none runs.

    The stack named by ``WORKBENCH_STACK`` (a stack file path: how notebooks opened by
    ``workbench lab`` find theirs), else the one ``workbench up`` runs on the default state
    directory (``$WORKBENCH_STATE_DIR`` or ``~/.workbench``), as ``workbench status`` finds it.
    The magics use it for their defaults.
    """
    path = os.environ.get(ENVIRONMENT_VARIABLE)
    status = stack_status(Path(path).parent if path else None)
    if not status["running"]:
        return None
    try:
        status["secrets"] = json.loads(Path(status["credentials"]).read_text())
    except (OSError, ValueError, KeyError):
        status["secrets"] = {}
    return status


class StackHandle:
    """A notebook's view of the stack: endpoints and credentials, whoever started it.

    ``use_stack()`` returns the stack named by ``WORKBENCH_STACK`` when one runs (``workbench lab``,
    Binder), else starts an embedded one in a temporary directory that ``close()`` stops, so a
    notebook runs the same under ``workbench lab``, in CI and on a laptop with nothing running.
    """

    def __init__(self, described: dict[str, Any], owned: EmbeddedStack | None = None) -> None:
        self.described = described
        self.owned = owned
        self.endpoints: dict[str, Any] = described.get("endpoints", {})
        self.secrets: dict[str, dict[str, str]] = described.get("secrets", {})
        self.state_dir = Path(described["state_dir"])
        # Trust decisions about the stack's broker live with the stack, not in the user's file.
        os.environ.setdefault("WORKBENCH_KNOWN_BROKERS", described.get("known_brokers", ""))

    @property
    def broker(self) -> str:
        return self.endpoints["domain"]["broker"]

    @property
    def domain_credentials(self) -> tuple[str, str]:
        return self.secrets["domain"]["user"], self.secrets["domain"]["password"]

    @property
    def zdb_uri(self) -> str:
        """The demo database's ``zdb://`` URI, with its password (keep it out of outputs)."""
        return self.endpoints["zdb"]["uri"].replace("PASSWORD", self.secrets["zdb"]["password"])

    def close(self) -> None:
        """Stop the stack if this handle started it; a stack started elsewhere keeps running."""
        if self.owned is not None:
            if os.environ.get(ENVIRONMENT_VARIABLE) == str(self.owned.stack_file):
                del os.environ[ENVIRONMENT_VARIABLE]
            self.owned.stop()
            self.owned = None

    def __enter__(self) -> "StackHandle":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StackHandle({str(self.state_dir)!r}, {sorted(self.endpoints)})"


def use_stack(**options: Any) -> StackHandle:
    """The running stack (:func:`environment_stack`), or a new embedded one on free ports in a temp dir."""
    described = environment_stack()
    if described is not None:
        return StackHandle(described)
    import tempfile

    free = {"domain_port": 0, "commits_port": 0, "inventory_web_port": 0, "clusters_port": 0}
    stack = EmbeddedStack(tempfile.mkdtemp(prefix="workbench-stack-"), **{**free, **options}).start()
    described = {**stack.describe(), "secrets": stack.credentials}
    # So that %workbench and the magics' defaults see this stack too, as under `workbench lab`.
    os.environ[ENVIRONMENT_VARIABLE] = str(stack.stack_file)
    # atexit stops it with this process; a kill (no exit handlers) leaves that to the watchdog.
    start_watchdog(stack.state_dir, stack.stack_file)
    return StackHandle(described, owned=stack)


def print_stack(described: dict) -> None:
    """Print the endpoints and the credentials file of a running stack (never a password)."""
    for system, values in described.get("endpoints", {}).items():
        for key, value in values.items():
            if key == "processes":
                for process in value:
                    print(f"  {system:<10} {process['type']}: {process['address']} pid {process['pid']}")
            else:
                print(f"  {system:<10} {key}: {value}")
    print(f"  credentials: {described.get('credentials')} (readable by you only)")
    print(f"  state:       {described.get('state_dir')}", flush=True)


__all__ = ["CREDENTIALS_FILE", "DEFAULT_STATE_DIR", "ENVIRONMENT_VARIABLE", "EmbeddedStack", "SQL_URL_VARIABLE", "STATE_DIR_VARIABLE",
           "STACK_FILE", "StackComponent", "StackHandle", "add_arguments", "default_state_dir", "environment_stack", "from_arguments",
           "load_credentials", "print_stack", "read_stack_file", "stack_status", "use_stack"]
