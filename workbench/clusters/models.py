"""SQLAlchemy models of workbench.clusters (Datastore, Cluster, Instance, Key, Backup, Task) and their store.

The models hold what the seed's Django models held; status, progress and message are columns
(stored, never a cache that forgets). :class:`ClusterStore` is the one way to change them: it opens
a session per operation (tasks run on many threads), enforces the rules (names, the maximum
cluster size on create and ``add_node``), and emits every change as an event::

    >>> store = ClusterStore("sqlite://", Settings(master_key="m"))
    >>> ds = store.add_datastore("redis", "7")
    >>> cluster = store.create_cluster("cache", ds, size=3)
    >>> [i.role for i in cluster.instances]
    ['primary', 'replica', 'replica']

Events (``store.add_listener``): ``cluster_changed(ClusterView)``, ``instance_changed(InstanceView)``,
``cluster_removed(name)``, ``task_changed(TaskView)``, ``task_output(task_id, instance_name, line)``.
The views are frozen snapshots, safe to keep on another thread.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine,
                        event, select)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, mapped_column, lazyload, relationship, selectinload,
                            sessionmaker, validates)

from workbench.clusters import encryption
from workbench.clusters.errors import NotFoundError, ValidationError
from workbench.clusters.settings import Settings
from workbench.events import EventDispatcher, EventSource

#: names of clusters, instances and keys: they become directory names and appear in commands
NAME = re.compile(r"[a-z][a-z0-9-]{0,47}")
#: a datastore version: it names template directories and appears in commands
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
#: one entry of a datastore's ``packages``: a Debian package name (lower-case letter or digit, then
#: at least one of ``a-z 0-9 + . -``), optionally ``:ARCH`` and ``=VERSION`` as apt-get takes them.
#: Nothing can start with "-", so no entry is ever read as an option of the package manager.
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9][a-z0-9-]*)?(?:=[0-9][A-Za-z0-9.+~:-]*)?")
#: what the columns hold (longer values would be refused by MySQL and PostgreSQL, not by SQLite)
MAX_PACKAGES_LENGTH = 1024
MAX_IMAGE_LENGTH = 255

# statuses of clusters and instances
NEW, BUILDING, ACTIVE, ERROR, DESTROYING, DELETED = "new", "building", "active", "error", "destroying", "deleted"
# statuses of tasks and backups
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
PRIMARY, REPLICA = "primary", "replica"


def split_datastore_ref(ref: str) -> tuple[str, str]:
    """``"redis"`` -> (redis, ""); ``"redis-7"``, ``"redis 7"``, ``"redis - 7"`` -> (redis, 7)."""
    match = re.match(r"^\s*([A-Za-z0-9_]+)(?:\s*-\s*|\s+)?(.*?)\s*$", ref)
    if not match:
        return ref, ""
    return match.group(1), match.group(2)


def _check_label(value: Any, field: str, limit: int, empty: bool = False) -> str:
    """A name or description: a string of at most ``limit`` characters, no control characters."""
    if not isinstance(value, str) or (not empty and not value.strip()) or len(value) > limit \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(f"{field} must be {'a' if empty else 'a non-empty'} string of at most {limit} "
                              "characters, without control characters", field=field, value=str(value)[:40])
    return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def check_name(value: str, field: str = "name") -> str:
    """``value`` if it is a valid cluster/instance/key name, else ``ValidationError`` naming ``field``."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValidationError(f"{field} must be 1-48 characters: a lower-case letter, then letters, "
                              f"digits or '-'", field=field, value=value)
    return value


def check_version(value: Any) -> str:
    """``value`` if it can be a datastore version (letters, digits, '.', '_', '-'; not first), else
    ``ValidationError`` (field ``version``)."""
    if not isinstance(value, str) or not VERSION.fullmatch(value):
        raise ValidationError("version must be 1-32 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit", field="version", value=value)
    return value


def check_packages(value: Any) -> list[str]:
    """The package names of a comma-separated ``packages`` value, each a Debian package name
    (``PACKAGE``: e.g. ``redis-server``, ``libc6:amd64``, ``redis-server=5:7.0.15-1``), else
    ``ValidationError`` (field ``packages``) naming the first bad entry."""
    if not isinstance(value, str):
        raise ValidationError("packages must be a comma-separated string of package names", field="packages")
    if len(value) > MAX_PACKAGES_LENGTH:
        raise ValidationError(f"packages must have at most {MAX_PACKAGES_LENGTH} characters", field="packages",
                              length=len(value))
    names = [p.strip() for p in value.split(",") if p.strip()]
    for name in names:
        if not PACKAGE.fullmatch(name):
            raise ValidationError(f"{name!r} is not a package name: a lower-case letter or digit, then at least "
                                  "one of a-z, 0-9, '+', '.', '-' (optionally :ARCH and =VERSION)",
                                  field="packages", value=name)
    return names


def check_image(value: Any) -> str:
    """``value`` if it can name a VM image (at most 255 characters, none of them control characters)."""
    if not isinstance(value, str) or len(value) > MAX_IMAGE_LENGTH or any(ord(c) < 32 or ord(c) == 127
                                                                          for c in value):
        raise ValidationError(f"image must be at most {MAX_IMAGE_LENGTH} characters, without control characters",
                              field="image")
    return value


class Base(DeclarativeBase):
    """Declarative base of the clusters tables."""


class Datastore(Base):
    """A version of a datastore that clusters can be made of (the seed's Datastore).

    ``manager`` names an entry of ``Settings.datastore_managers`` (mysql, redis, postgresql);
    ``packages`` is a comma-separated list of Debian package names (:data:`PACKAGE`) installed by
    ``prepare`` when missing; ``image`` is the VM image a cloud provider boots. Version, packages
    and image are checked whenever they are set (``ValidationError``).
    """

    __tablename__ = "clusters_datastores"
    __table_args__ = (UniqueConstraint("manager", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    manager: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    image: Mapped[str] = mapped_column(String(255), default="")
    packages: Mapped[str] = mapped_column(String(1024), default="")

    @validates("version")
    def _valid_version(self, _key: str, value: str) -> str:
        return check_version(value)

    @validates("packages")
    def _valid_packages(self, _key: str, value: str | None) -> str:
        check_packages(value or "")
        return value or ""

    @validates("image")
    def _valid_image(self, _key: str, value: str | None) -> str:
        return check_image(value or "")

    @property
    def name(self) -> str:
        """Display name, as the seed's: ``"mysql - 5.5"``."""
        return f"{self.manager} - {self.version}"

    @property
    def package_list(self) -> list[str]:
        """The package names, checked again: a row written before the rule (or by hand) never
        reaches a package manager with an option in it (``ValidationError`` instead)."""
        return check_packages(self.packages or "")

    def __repr__(self) -> str:
        return f"<Datastore: {self.name}>"


class Key(Base):
    """An SSH key pair whose private half is stored only encrypted (the seed's Key, made safe).

    ::

        key = Key.create("cache-key", passphrase="s3cret")      # ed25519; kind="rsa" for RSA
        key.public          # "ssh-ed25519 AAAA... cache-key"
        key.private         # an encrypted token, never the PEM
        key.private_pem("s3cret")   # the OpenSSH private key, decrypted in memory
    """

    __tablename__ = "clusters_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    public: Mapped[str] = mapped_column(Text)
    private: Mapped[str] = mapped_column(Text)  # encryption.encrypt() token of the OpenSSH PEM
    fingerprint: Mapped[str] = mapped_column(String(128))
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    @classmethod
    def create(cls, name: str, passphrase: str | bytes, kind: str = "ed25519", bits: int = 3072) -> Key:
        """Make a new key pair (``kind`` "ed25519" or "rsa"), its private half encrypted with ``passphrase``."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        check_name(name, "key name")
        if kind == "ed25519":
            private_key: Any = ed25519.Ed25519PrivateKey.generate()
        elif kind == "rsa":
            if bits < 2048:
                raise ValidationError("RSA keys must have at least 2048 bits", field="bits", value=bits)
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        else:
            raise ValidationError("key kind must be 'ed25519' or 'rsa'", field="kind", value=kind)
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption())
        return cls.from_private_pem(name, pem, passphrase, kind=kind)

    @classmethod
    def from_private_pem(cls, name: str, pem: bytes, passphrase: str | bytes, kind: str = "") -> Key:
        """Import an existing unencrypted OpenSSH/PEM private key, storing it encrypted."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        try:
            private_key = serialization.load_ssh_private_key(pem, password=None)
        except ValueError as exc:
            raise ValidationError(f"not an unencrypted OpenSSH private key: {exc}", field="private") from None
        public = private_key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH).decode()
        digest = hashes.Hash(hashes.SHA256())
        import base64

        digest.update(base64.b64decode(public.split()[1]))
        fingerprint = "SHA256:" + base64.b64encode(digest.finalize()).decode().rstrip("=")
        kind = kind or ("ed25519" if isinstance(private_key, ed25519.Ed25519PrivateKey) else "rsa")
        return cls(name=name, kind=kind, public=f"{public} {name}", fingerprint=fingerprint,
                   private=encryption.encrypt(pem, passphrase))

    def private_pem(self, passphrase: str | bytes) -> bytes:
        """The decrypted OpenSSH private key (``KeyDecryptionError`` on a wrong passphrase)."""
        return encryption.decrypt(self.private, passphrase)

    def paramiko_key(self, passphrase: str | bytes) -> Any:
        """The private key as a paramiko ``PKey``, built in memory (never written in clear)."""
        import io

        import paramiko

        text = self.private_pem(passphrase).decode()
        loader = paramiko.Ed25519Key if self.kind == "ed25519" else paramiko.RSAKey
        return loader.from_private_key(io.StringIO(text))

    def __repr__(self) -> str:
        return f"<Key: {self.name} {self.fingerprint}>"


class Cluster(Base):
    """A datastore cluster: ``size`` nodes, one primary and ``size - 1`` replicas (the seed's Cluster)."""

    __tablename__ = "clusters_clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("clusters_datastores.id"))
    size: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default=NEW)
    message: Mapped[str] = mapped_column(Text, default="")
    key_id: Mapped[int | None] = mapped_column(ForeignKey("clusters_keys.id"), nullable=True)
    #: encrypted token of the cluster's internal password (replication and admin accounts)
    secret: Mapped[str] = mapped_column(Text, default="")
    restore_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    datastore: Mapped[Datastore] = relationship(lazy="joined")
    key: Mapped[Key | None] = relationship(lazy="joined")
    instances: Mapped[list[Instance]] = relationship(back_populates="cluster", order_by="Instance.index",
                                                     cascade="all, delete-orphan")

    @property
    def primary(self) -> Instance:
        for instance in self.instances:
            if instance.role == PRIMARY:
                return instance
        raise NotFoundError(f"cluster {self.name} has no primary", cluster=self.name)

    @property
    def replicas(self) -> list[Instance]:
        return [i for i in self.instances if i.role == REPLICA]

    def __repr__(self) -> str:
        return f"<Cluster: {self.name}>"


class Instance(Base):
    """One server of a cluster (the seed's Instance): where it runs and how far its current task got.

    ``addr``/``port`` is the datastore's address; ``ssh_host``/``ssh_port`` how to log in (empty for
    the local provider); ``host_key`` the host key the provider vouched for; ``directory`` the
    instance's own directory on that host (config, data, logs, backups).
    """

    __tablename__ = "clusters_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    index: Mapped[int] = mapped_column(Integer)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters_clusters.id"))
    role: Mapped[str] = mapped_column(String(16), default=REPLICA)
    user: Mapped[str] = mapped_column(String(64), default="")
    addr: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    ssh_host: Mapped[str] = mapped_column(String(255), default="")
    ssh_port: Mapped[int] = mapped_column(Integer, default=22)
    ssh_key_file: Mapped[str] = mapped_column(String(1024), default="")
    host_key: Mapped[str] = mapped_column(Text, default="")
    server: Mapped[str] = mapped_column(String(255), default="")
    volume: Mapped[str] = mapped_column(String(255), default="")
    directory: Mapped[str] = mapped_column(String(1024), default="")
    status: Mapped[str] = mapped_column(String(32), default=NEW)
    server_status: Mapped[str] = mapped_column(String(32), default="")
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    task: Mapped[str] = mapped_column(String(64), default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    cluster: Mapped[Cluster] = relationship(back_populates="instances", lazy="joined")

    @property
    def prefix_fields(self) -> dict[str, Any]:
        """What ``Settings.command_prefix`` may refer to as ``%(field)s``."""
        return {"name": self.name, "server": self.server, "local_id": self.server, "addr": self.addr,
                "port": self.port, "directory": self.directory, "user": self.user}

    def __repr__(self) -> str:
        return f"<Instance: {self.name} {self.role} {self.addr}:{self.port} {self.status}>"


class Backup(Base):
    """A backup file fetched from a cluster's primary into the workbench's backup directory."""

    __tablename__ = "clusters_backups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cluster_name: Mapped[str] = mapped_column(String(64))
    datastore_id: Mapped[int] = mapped_column(ForeignKey("clusters_datastores.id"))
    path: Mapped[str] = mapped_column(String(1024), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(32), default=QUEUED)
    message: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    datastore: Mapped[Datastore] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<Backup: {self.name} of {self.cluster_name}, {self.status}, {self.size} bytes>"


class Configuration(Base):
    """A configuration group (Trove's): values of a datastore's parameters (``parameters.PARAMETERS``),
    rendered into the config of each instance it is attached to."""

    __tablename__ = "clusters_configurations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    datastore_id: Mapped[int] = mapped_column(ForeignKey("clusters_datastores.id"))
    #: JSON object: parameter name -> value (checked on every change)
    values_json: Mapped[str] = mapped_column(Text, default="{}")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    datastore: Mapped[Datastore] = relationship(lazy="joined")

    @property
    def values(self) -> dict[str, Any]:
        return json.loads(self.values_json or "{}")


class ConfigurationAttachment(Base):
    """Which configuration group an instance has (a table of its own: the instances table stays as it was)."""

    __tablename__ = "clusters_configuration_attachments"

    instance_id: Mapped[int] = mapped_column(ForeignKey("clusters_instances.id", ondelete="CASCADE"),
                                             primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("clusters_configurations.id"))


class BackupSchedule(Base):
    """Automated backups of a cluster: one every ``interval`` seconds, the newest ``keep`` of them kept."""

    __tablename__ = "clusters_backup_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters_clusters.id", ondelete="CASCADE"), unique=True)
    interval: Mapped[int] = mapped_column(Integer)
    keep: Mapped[int] = mapped_column(Integer)
    next_run: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_run: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


def scheduled_backup_prefix(cluster_name: str) -> str:
    """What the names of a cluster's scheduled backups start with: retention drops only those, never
    a backup someone asked for."""
    return f"{cluster_name}-scheduled-"


class Task(Base):
    """One background task: its state and its log, kept after it ends."""

    __tablename__ = "clusters_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    cluster_name: Mapped[str] = mapped_column(String(64), default="")
    instance_name: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(32), default=QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    def __repr__(self) -> str:
        where = self.instance_name or self.cluster_name
        return f"<Task: {self.name}{' on ' + where if where else ''}, {self.status} {self.progress or 0}%>"


# -- snapshots delivered with events -------------------------------------------------------------
@dataclass(frozen=True)
class InstanceView:
    """A frozen copy of an Instance row, as events carry it."""

    id: int
    name: str
    cluster: str
    role: str
    addr: str
    port: int
    status: str
    progress: int
    message: str
    task: str

    @classmethod
    def of(cls, instance: Instance, cluster_name: str) -> InstanceView:
        return cls(instance.id, instance.name, cluster_name, instance.role, instance.addr, instance.port,
                   instance.status, instance.progress, instance.message, instance.task)


@dataclass(frozen=True)
class ClusterView:
    """A frozen copy of a Cluster row with its instances."""

    id: int
    name: str
    datastore: str
    size: int
    provider: str
    status: str
    message: str
    instances: tuple[InstanceView, ...]

    @classmethod
    def of(cls, cluster: Cluster) -> ClusterView:
        return cls(cluster.id, cluster.name, cluster.datastore.name, cluster.size, cluster.provider,
                   cluster.status, cluster.message,
                   tuple(InstanceView.of(i, cluster.name) for i in cluster.instances))


@dataclass(frozen=True)
class TaskView:
    """A frozen copy of a Task row (without its log)."""

    id: int
    name: str
    cluster: str
    instance: str
    status: str
    progress: int
    message: str

    @classmethod
    def of(cls, task: Task) -> TaskView:
        return cls(task.id, task.name, task.cluster_name, task.instance_name, task.status, task.progress,
                   task.message)


# -- the store -----------------------------------------------------------------------------------
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # tasks write from several threads: wait for the lock instead of failing at once
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA foreign_keys = ON")
    # every progress step and log line is a commit: WAL with NORMAL sync makes them cheap while
    # other processes (the CLI's show, a build worker) keep reading
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def load_master_key(settings: Settings) -> str:
    """``settings.master_key``, or the one kept in ``<state_dir>/master.key`` (made on first use)."""
    if settings.master_key:
        return settings.master_key
    path = settings.state_path / "master.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class ClusterStore(EventSource):
    """The state database of clusters: every read and change goes through here, every change is an event.

    ``url`` is a SQLAlchemy URL (``sqlite:///file.db`` by default from settings,
    ``mysql+pymysql://...``, ``postgresql+psycopg://...``). Tables are created if missing. The
    attribute ``url`` keeps it with any password masked (``***``): it is what may be printed.
    """

    def __init__(self, url: str | None = None, settings: Settings | None = None, *,
                 engine: Engine | None = None) -> None:
        self.settings = settings or Settings.load()
        url = url or self.settings.db_url
        if url.startswith("sqlite:///") and url != "sqlite://":
            Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = engine or create_engine(url, pool_pre_ping=True)
        self.url = self.engine.url.render_as_string(hide_password=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._events = EventDispatcher(f"clusters:{self.engine.url.render_as_string(hide_password=True)}")
        self._log_lock = threading.Lock()
        self._master_key: str | None = None

    def __repr__(self) -> str:
        return f"<ClusterStore {self.url}>"  # the URL with its password masked

    @property
    def master_key(self) -> str:
        if self._master_key is None:
            self._master_key = load_master_key(self.settings)
        return self._master_key

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Deliver pending events, stop the dispatcher and dispose of the engine."""
        self._events.close()
        self.engine.dispose()

    def __enter__(self) -> ClusterStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def initial_events(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("cluster_changed", (view,)) for view in self.cluster_views()]

    # -- datastores -----------------------------------------------------------------------------
    def add_datastore(self, manager: str, version: str, image: str = "", packages: str = "") -> Datastore:
        """Register a datastore version (idempotent: an existing (manager, version) is returned)."""
        if manager not in self.settings.datastore_managers:
            raise ValidationError(f"unknown datastore manager {manager!r}; known: "
                                  f"{', '.join(sorted(self.settings.datastore_managers))}",
                                  field="datastore", value=manager)
        check_version(version)
        check_image(image)
        check_packages(packages)
        with self.session() as session:
            found = session.scalar(select(Datastore).filter_by(manager=manager, version=version))
            if found is not None:
                return found
            datastore = Datastore(manager=manager, version=version, image=image, packages=packages)
            session.add(datastore)
        return datastore

    def datastores(self) -> list[Datastore]:
        with self.session() as session:
            return list(session.scalars(select(Datastore).order_by(Datastore.id)))

    def get_datastore(self, ref: int | str) -> Datastore:
        """A datastore by id, ``"manager"`` (newest version), ``"manager-version"`` or ``"manager - version"``."""
        with self.session() as session:
            if isinstance(ref, int):
                found = session.get(Datastore, ref)
            else:
                manager, version = split_datastore_ref(ref)
                query = select(Datastore).filter_by(manager=manager)
                if version:
                    query = query.filter_by(version=version)
                found = session.scalars(query.order_by(Datastore.id.desc())).first()
        if found is None:
            raise NotFoundError(f"no datastore {ref!r}", datastore=ref)
        return found

    # -- keys -----------------------------------------------------------------------------------
    def add_key(self, key: Key) -> Key:
        with self.session() as session:
            session.add(key)
        return key

    def get_key(self, key_id: int) -> Key:
        with self.session() as session:
            key = session.get(Key, key_id)
        if key is None:
            raise NotFoundError(f"no key {key_id}", key=key_id)
        return key

    # -- clusters -------------------------------------------------------------------------------
    def _check_size(self, size: Any, field: str = "size") -> int:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValidationError(f"{field} must be a whole number >= 1", field=field, value=size)
        if size > self.settings.max_cluster_size:
            raise ValidationError(f"a cluster has at most {self.settings.max_cluster_size} nodes "
                                  f"(max_cluster_size)", field=field, value=size,
                                  limit=self.settings.max_cluster_size)
        return size

    def create_cluster(self, name: str, datastore: Datastore | int | str, size: int = 1,
                       provider: str | None = None, restore_from: int | None = None) -> Cluster:
        """Record a new cluster with its instances (primary first) and its own SSH key.

        Nothing is provisioned here: the task runner does that. Raises ``ValidationError`` for a
        bad name or size (above ``max_cluster_size``) or an existing name.
        """
        check_name(name)
        self._check_size(size)
        provider = provider or self.settings.provider
        if provider not in self.settings.providers:
            raise ValidationError(f"unknown provider {provider!r}", field="provider", value=provider)
        if not isinstance(datastore, Datastore):
            datastore = self.get_datastore(datastore)
        key = Key.create(f"{name}-key", self.master_key)
        secret = encryption.encrypt(secrets.token_urlsafe(24).encode(), self.master_key)
        try:
            with self.session() as session:
                if session.scalar(select(Cluster.id).filter_by(name=name)) is not None:
                    raise ValidationError(f"a cluster named {name} exists", field="name", value=name)
                old_key = session.scalar(select(Key).filter_by(name=key.name))
                if old_key is not None:  # left by a destroyed cluster of the same name
                    session.delete(old_key)
                    session.flush()
                session.add(key)
                cluster = Cluster(name=name, datastore_id=datastore.id, size=size, provider=provider,
                                  key=key, secret=secret, restore_from=restore_from, status=NEW)
                session.add(cluster)
                for index in range(size):
                    cluster.instances.append(self._new_instance(cluster, index))
        except IntegrityError as exc:
            raise ValidationError(f"a cluster named {name} exists", field="name", value=name) from exc
        view = self.get_cluster(name)
        self._events.emit("cluster_changed", ClusterView.of(view))
        return view

    def _new_instance(self, cluster: Cluster, index: int) -> Instance:
        return Instance(name=f"{cluster.name}-{index + 1}", index=index,
                        role=PRIMARY if index == 0 else REPLICA, user=self.settings.ssh_user, status=NEW)

    def add_node(self, name: str, count: int = 1) -> list[Instance]:
        """Record ``count`` more replicas of cluster ``name`` (max cluster size enforced); returns them."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValidationError("count must be a whole number >= 1", field="count", value=count)
        with self.session() as session:
            # no joined eager loads here: PostgreSQL refuses FOR UPDATE on the nullable side of an outer join
            query = select(Cluster).options(lazyload(Cluster.datastore), lazyload(Cluster.key))
            cluster = session.scalar(query.filter_by(name=name).with_for_update())
            if cluster is None:
                raise NotFoundError(f"no cluster {name}", cluster=name)
            self._check_size(len(cluster.instances) + count, field="count")
            start = max((i.index for i in cluster.instances), default=-1) + 1
            added = [self._new_instance(cluster, start + n) for n in range(count)]
            cluster.instances.extend(added)
            cluster.size = len(cluster.instances)
            session.flush()
            ids = [i.id for i in added]
        self.emit_cluster(name)
        return [self.get_instance(i) for i in ids]

    def get_cluster(self, ref: int | str) -> Cluster:
        """A cluster (with datastore, key and instances loaded) by id or name."""
        with self.session() as session:
            query = select(Cluster).options(selectinload(Cluster.instances))
            query = query.filter_by(id=ref) if isinstance(ref, int) else query.filter_by(name=ref)
            cluster = session.scalars(query).unique().first()
        if cluster is None:
            raise NotFoundError(f"no cluster {ref}", cluster=ref)
        return cluster

    def clusters(self) -> list[Cluster]:
        with self.session() as session:
            return list(session.scalars(select(Cluster).options(selectinload(Cluster.instances))
                                        .order_by(Cluster.id)).unique())

    def cluster_views(self) -> list[ClusterView]:
        return [ClusterView.of(c) for c in self.clusters()]

    def cluster_secret(self, cluster: Cluster) -> str:
        """The cluster's internal password (replication and admin accounts), decrypted."""
        return encryption.decrypt(cluster.secret, self.master_key).decode()

    def update_cluster(self, ref: int | str, **fields: Any) -> Cluster:
        """Change columns of a cluster (status, message...) and emit ``cluster_changed``."""
        with self.session() as session:
            query = select(Cluster).filter_by(id=ref) if isinstance(ref, int) else select(Cluster).filter_by(name=ref)
            cluster = session.scalars(query).unique().first()
            if cluster is None:
                raise NotFoundError(f"no cluster {ref}", cluster=ref)
            for key, value in fields.items():
                setattr(cluster, key, value)
            name = cluster.name
        return self.emit_cluster(name)

    def emit_cluster(self, name: str) -> Cluster:
        cluster = self.get_cluster(name)
        self._events.emit("cluster_changed", ClusterView.of(cluster))
        return cluster

    def delete_cluster(self, name: str) -> None:
        """Remove a cluster and its instances from the database (after its servers are gone)."""
        with self.session() as session:
            cluster = session.scalar(select(Cluster).filter_by(name=name))
            if cluster is None:
                raise NotFoundError(f"no cluster {name}", cluster=name)
            key = cluster.key
            session.delete(cluster)
            session.flush()
            if key is not None:
                session.delete(key)
        self._events.emit("cluster_removed", name)

    # -- instances ------------------------------------------------------------------------------
    def get_instance(self, ref: int | str) -> Instance:
        with self.session() as session:
            query = select(Instance).filter_by(id=ref) if isinstance(ref, int) else select(Instance).filter_by(name=ref)
            instance = session.scalars(query).unique().first()
        if instance is None:
            raise NotFoundError(f"no instance {ref}", instance=ref)
        return instance

    def update_instance(self, instance_id: int, **fields: Any) -> Instance:
        """Change columns of an instance (status, progress, message, addr...) and emit ``instance_changed``."""
        with self.session() as session:
            instance = session.get(Instance, instance_id)
            if instance is None:
                raise NotFoundError(f"no instance {instance_id}", instance=instance_id)
            for key, value in fields.items():
                if not hasattr(Instance, key):
                    raise ValidationError(f"Instance has no field {key}", field=key)
                setattr(instance, key, value)
            cluster_name = instance.cluster.name
        self._events.emit("instance_changed", InstanceView.of(instance, cluster_name))
        return instance

    def remove_instance(self, instance_id: int) -> None:
        with self.session() as session:
            instance = session.get(Instance, instance_id)
            if instance is not None:
                cluster = instance.cluster
                session.delete(instance)
                session.flush()
                cluster.size = len([i for i in cluster.instances if i.id != instance_id])
                name = cluster.name
            else:
                return
        self.emit_cluster(name)

    # -- backups --------------------------------------------------------------------------------
    def add_backup(self, cluster: Cluster, name: str | None = None) -> Backup:
        """Record a running backup of ``cluster``, named ``name`` (at most 128 characters, no control
        characters, not taken: else ``ValidationError``) or ``<cluster>-<time>-<random>``."""
        if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 128
                                 or any(ord(c) < 32 or ord(c) == 127 for c in name)):
            raise ValidationError("a backup name has 1-128 characters, no control characters", field="name",
                                  value=name)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        try:
            with self.session() as session:
                if name is not None and session.scalar(select(Backup.id).filter_by(name=name)) is not None:
                    raise ValidationError(f"a backup named {name} exists", field="name", value=name)
                backup = Backup(name=name or f"{cluster.name}-{stamp}-{secrets.token_hex(3)}",
                                cluster_name=cluster.name, datastore_id=cluster.datastore_id, status=RUNNING)
                session.add(backup)
        except IntegrityError as exc:
            raise ValidationError(f"a backup named {name} exists", field="name", value=name) from exc
        return self.get_backup(backup.id)

    def delete_backup(self, ref: int | str) -> None:
        """Forget a backup (its file is the caller's: see ``TaskRunner.delete_backup``)."""
        with self.session() as session:
            query = select(Backup).filter_by(id=ref) if isinstance(ref, int) else select(Backup).filter_by(name=ref)
            backup = session.scalars(query).first()
            if backup is None:
                raise NotFoundError(f"no backup {ref}", backup=ref)
            session.delete(backup)

    def update_backup(self, backup_id: int, **fields: Any) -> Backup:
        with self.session() as session:
            backup = session.get(Backup, backup_id)
            for key, value in fields.items():
                setattr(backup, key, value)
        return self.get_backup(backup_id)

    def get_backup(self, ref: int | str) -> Backup:
        with self.session() as session:
            query = select(Backup).filter_by(id=ref) if isinstance(ref, int) else select(Backup).filter_by(name=ref)
            backup = session.scalars(query).unique().first()
        if backup is None:
            raise NotFoundError(f"no backup {ref}", backup=ref)
        return backup

    def backups(self, cluster_name: str | None = None) -> list[Backup]:
        with self.session() as session:
            query = select(Backup).order_by(Backup.id)
            if cluster_name:
                query = query.filter_by(cluster_name=cluster_name)
            return list(session.scalars(query).unique())

    # -- configuration groups -------------------------------------------------------------------
    def create_configuration(self, name: str, datastore: Datastore | int | str, values: Any,
                             description: str = "") -> Configuration:
        """Record a configuration group of ``datastore`` whose ``values`` are checked against its
        manager's parameters (``ValidationError`` naming every bad one)."""
        from workbench.clusters.parameters import check_values

        _check_label(name, "name", 255)
        _check_label(description, "description", 1024, empty=True)
        if not isinstance(datastore, Datastore):
            datastore = self.get_datastore(datastore)
        checked = check_values(datastore.manager, values)
        with self.session() as session:
            configuration = Configuration(name=name, description=description, datastore_id=datastore.id,
                                          values_json=json.dumps(checked, sort_keys=True))
            session.add(configuration)
        return self.get_configuration(configuration.id)

    def get_configuration(self, ref: int | str) -> Configuration:
        """A configuration group by id or name."""
        with self.session() as session:
            query = select(Configuration)
            query = query.filter_by(id=ref) if isinstance(ref, int) else query.filter_by(name=ref)
            found = session.scalars(query.order_by(Configuration.id)).unique().first()
        if found is None:
            raise NotFoundError(f"no configuration {ref}", configuration=ref)
        return found

    def configurations(self) -> list[Configuration]:
        with self.session() as session:
            return list(session.scalars(select(Configuration).order_by(Configuration.id)).unique())

    def update_configuration(self, ref: int | str, values: Any = None, *, replace: bool = False,
                             name: str | None = None, description: str | None = None) -> Configuration:
        """Change a group's values (merged into the old ones, or instead of them with ``replace``),
        its name or description. Applying the change to attached instances is the runner's."""
        from workbench.clusters.parameters import check_values

        configuration = self.get_configuration(ref)
        merged = configuration.values
        if values is not None:
            checked = check_values(configuration.datastore.manager, values)
            merged = checked if replace else {**merged, **checked}
        if name is not None:
            _check_label(name, "name", 255)
        if description is not None:
            _check_label(description, "description", 1024, empty=True)
        with self.session() as session:
            row = session.get(Configuration, configuration.id)
            row.values_json = json.dumps(merged, sort_keys=True)
            row.updated = utcnow()
            if name is not None:
                row.name = name
            if description is not None:
                row.description = description
        return self.get_configuration(configuration.id)

    def delete_configuration(self, ref: int | str) -> None:
        """Forget a configuration group; one attached to instances is refused (``ValidationError``)."""
        configuration = self.get_configuration(ref)
        with self.session() as session:
            if session.scalar(select(ConfigurationAttachment.instance_id)
                              .filter_by(configuration_id=configuration.id)) is not None:
                raise ValidationError(f"configuration {configuration.name} is attached to instances: detach it "
                                      "first", field="configuration", value=configuration.id)
            session.delete(session.get(Configuration, configuration.id))

    def attach_configuration(self, instance_id: int, configuration_id: int | None) -> None:
        """Give an instance a configuration group (None: none); the datastores must match."""
        instance = self.get_instance(instance_id)
        with self.session() as session:
            if configuration_id is not None:
                configuration = session.get(Configuration, configuration_id)
                if configuration is None:
                    raise NotFoundError(f"no configuration {configuration_id}", configuration=configuration_id)
                if configuration.datastore.manager != instance.cluster.datastore.manager:
                    raise ValidationError(f"configuration {configuration.name} is for {configuration.datastore.name}, "
                                          f"not {instance.cluster.datastore.name}", field="configuration",
                                          value=configuration_id)
            row = session.get(ConfigurationAttachment, instance_id)
            if configuration_id is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(ConfigurationAttachment(instance_id=instance_id, configuration_id=configuration_id))
            else:
                row.configuration_id = configuration_id

    def instance_configuration(self, instance_id: int) -> Configuration | None:
        """The configuration group attached to an instance, if any."""
        with self.session() as session:
            row = session.get(ConfigurationAttachment, instance_id)
            configuration_id = row.configuration_id if row is not None else None
        return self.get_configuration(configuration_id) if configuration_id is not None else None

    def configuration_instances(self, configuration_id: int) -> list[Instance]:
        """The instances a configuration group is attached to."""
        with self.session() as session:
            ids = list(session.scalars(select(ConfigurationAttachment.instance_id)
                                       .filter_by(configuration_id=configuration_id)
                                       .order_by(ConfigurationAttachment.instance_id)))
        return [self.get_instance(i) for i in ids]

    # -- backup schedules -----------------------------------------------------------------------
    def set_backup_schedule(self, cluster_name: str, interval: Any, keep: Any) -> BackupSchedule:
        """Back up cluster ``cluster_name`` every ``interval`` seconds (>= 1), keeping the newest ``keep``
        (>= 1) scheduled backups; the first one is due after one interval. Replaces an earlier schedule."""
        for field, value in (("interval", interval), ("keep", keep)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10 ** 8:
                raise ValidationError(f"{field} must be a whole number >= 1", field=field, value=value)
        cluster = self.get_cluster(cluster_name)
        with self.session() as session:
            row = session.scalar(select(BackupSchedule).filter_by(cluster_id=cluster.id))
            if row is None:
                row = BackupSchedule(cluster_id=cluster.id, interval=interval, keep=keep)
                session.add(row)
            row.interval, row.keep = interval, keep
            row.next_run = utcnow() + dt.timedelta(seconds=interval)
        return self.backup_schedule(cluster_name)  # type: ignore[return-value]

    def backup_schedule(self, cluster_name: str) -> BackupSchedule | None:
        cluster = self.get_cluster(cluster_name)
        with self.session() as session:
            return session.scalar(select(BackupSchedule).filter_by(cluster_id=cluster.id))

    def delete_backup_schedule(self, cluster_name: str) -> None:
        cluster = self.get_cluster(cluster_name)
        with self.session() as session:
            row = session.scalar(select(BackupSchedule).filter_by(cluster_id=cluster.id))
            if row is None:
                raise NotFoundError(f"cluster {cluster_name} has no backup schedule", cluster=cluster_name)
            session.delete(row)

    def due_backup_schedules(self) -> list[tuple[BackupSchedule, str]]:
        """(schedule, cluster name) of every schedule whose next run is due, each moved on by its
        interval in the same transaction (a due run is taken once)."""
        now = utcnow()
        due = []
        with self.session() as session:
            for row in session.scalars(select(BackupSchedule).filter(BackupSchedule.next_run <= now)):
                cluster = session.get(Cluster, row.cluster_id)
                row.last_run = now
                row.next_run = now + dt.timedelta(seconds=row.interval)
                due.append((row, cluster.name))
        return due

    # -- tasks ----------------------------------------------------------------------------------
    def add_task(self, name: str, cluster_name: str = "", instance_name: str = "") -> Task:
        with self.session() as session:
            task = Task(name=name, cluster_name=cluster_name, instance_name=instance_name, status=QUEUED)
            session.add(task)
        self._events.emit("task_changed", TaskView.of(task))
        return task

    def update_task(self, task_id: int, **fields: Any) -> Task:
        with self.session() as session:
            task = session.get(Task, task_id)
            for key, value in fields.items():
                setattr(task, key, value)
        self._events.emit("task_changed", TaskView.of(task))
        return task

    def append_task_log(self, task_id: int, line: str, instance_name: str = "") -> None:
        """Append a line to a task's stored log and emit ``task_output``."""
        with self._log_lock, self.session() as session:
            task = session.get(Task, task_id)
            if task is not None:
                task.log = (task.log or "") + line.rstrip("\n") + "\n"
        self._events.emit("task_output", task_id, instance_name, line.rstrip("\n"))

    def get_task(self, task_id: int) -> Task:
        with self.session() as session:
            task = session.get(Task, task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id}", task=task_id)
        return task

    def tasks(self, cluster_name: str | None = None) -> list[Task]:
        with self.session() as session:
            query = select(Task).order_by(Task.id)
            if cluster_name:
                query = query.filter_by(cluster_name=cluster_name)
            return list(session.scalars(query))


__all__ = ["Base", "Datastore", "Key", "Cluster", "Instance", "Backup", "Task", "Configuration",
           "ConfigurationAttachment", "BackupSchedule", "scheduled_backup_prefix", "ClusterStore",
           "ClusterView", "InstanceView", "TaskView", "check_name", "check_version", "check_packages", "check_image",
           "load_master_key", "PACKAGE",
           "NEW", "BUILDING", "ACTIVE", "ERROR", "DESTROYING", "DELETED",
           "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", "PRIMARY", "REPLICA"]
