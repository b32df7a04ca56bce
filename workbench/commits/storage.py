"""Journaled commit storage: every version of every key, with an atomic version check on save.

:class:`CommitStorage` is the interface (and the save protocol every implementation shares:
pre-save hooks, the version check, post-save hooks, a ``commit_saved`` event to listeners).
:class:`MemoryCommitStorage` keeps commits in a dict; :class:`SqlCommitStorage` keeps them in a
SQL table through SQLAlchemy 2 (SQLite by default, MariaDB/MySQL and PostgreSQL for deployments).

A save succeeds only when its version is exactly the key's current version + 1 (1 for a new key);
otherwise it raises :class:`~workbench.commits.model.CommitConflict`. In SQL the check and the
insert run in one transaction and ``(key, version)`` is the primary key, so among concurrent savers
of the same version exactly one wins, whichever process or host they run on.

::

    storage = SqlCommitStorage("sqlite:///commits.db").start()
    storage.save(Commit.from_value("foo", 1, {"hey": "what"}, author="gian", comment="rofl"))
    storage.get("foo").value          # {'hey': 'what'}
    storage.history("foo")            # [<Commit foo@1 by gian (14 bytes)>]
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import String
from sqlalchemy.types import TypeDecorator

from workbench.errors import CommitsError
from workbench.events import EventDispatcher, EventSource
from workbench.commits.model import (
    JSON,
    Commit,
    CommitConflict,
    CommitMetadata,
    InvalidCommit,
    Serialization,
    SerializationChooser,
    check_key,
    format_mtime,
    parse_mtime,
)

log = logging.getLogger(__name__)

__all__ = ["CommitStorage", "MemoryCommitStorage", "SqlCommitStorage", "SaveHook", "SCHEMA_VERSION"]

#: a hook called with the commit being saved; a pre-save hook vetoes the save by raising
SaveHook = Callable[[Commit], None]


class CommitStorage(EventSource, ABC):
    """Every version of every key. Subclasses implement ``_head``, ``_get``, ``_heads``,
    ``_history`` and ``_insert``; the save protocol lives here.

    Reads: ``heads()`` (latest commit of every key, tombstones included), ``heads_non_empty()``,
    ``get(key)`` / ``get(key, version)`` (``None`` when absent), ``history(key)`` (oldest first).

    ``save(commit)``: pre-save hooks (raise to veto), the atomic version check and write
    (``CommitConflict`` on a wrong version), post-save hooks (a raising one is logged: the commit
    is already stored), then the event ``commit_saved(commit)`` to listeners added with
    ``add_listener`` (delivered on the storage's event thread).

    ``serialization`` chooses how commits read back from storage are deserialized: one
    :class:`Serialization` for every key, or a function of the key.
    """

    #: True when calls block on I/O (servers then run them off their event loop)
    blocking = True

    def __init__(self, serialization: Serialization | SerializationChooser = JSON) -> None:
        self._serialization = serialization
        self._pre_save: list[SaveHook] = []
        self._post_save: list[SaveHook] = []
        self._events = EventDispatcher(f"commits-storage-{id(self):x}")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> CommitStorage:
        """Prepare the storage (create or migrate a schema); returns self. Idempotent."""
        return self

    def close(self) -> None:
        """Release connections and stop the event thread (``closed()`` reaches listeners)."""
        self._events.close()

    def __enter__(self) -> CommitStorage:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- hooks -------------------------------------------------------------------------------------
    def add_pre_save_hook(self, hook: SaveHook) -> None:
        """Call ``hook(commit)`` before every save; an exception it raises aborts the save."""
        self._pre_save.append(hook)

    def add_post_save_hook(self, hook: SaveHook) -> None:
        """Call ``hook(commit)`` after every successful save, on the saving thread."""
        self._post_save.append(hook)

    # -- reads -------------------------------------------------------------------------------------
    def serialization_for(self, key: str) -> Serialization:
        """The serialization commits of ``key`` are read with."""
        chosen = self._serialization
        return chosen if isinstance(chosen, Serialization) else chosen(key)

    def get(self, key: str, version: int | None = None) -> Commit | None:
        """The commit of ``key`` at ``version`` (the latest when None), or None."""
        check_key(key)
        if version is None:
            return self._head(key)
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidCommit("version must be an integer", key=key, version=version)
        return self._get(key, version) if version >= 1 else None

    def heads(self) -> dict[str, Commit]:
        """The latest commit of every key, tombstones included."""
        return self._heads()

    def heads_non_empty(self) -> dict[str, Commit]:
        """The latest commit of every key whose latest commit is not a tombstone."""
        return {key: commit for key, commit in self._heads().items() if not commit.empty}

    def history(self, key: str) -> list[Commit]:
        """Every commit of ``key``, oldest first (empty when the key never existed)."""
        check_key(key)
        return self._history(key)

    def keys(self) -> list[str]:
        """Every key that has a commit (tombstoned ones included), sorted."""
        return sorted(self._heads())

    # -- writes ------------------------------------------------------------------------------------
    def save(self, commit: Commit) -> Commit:
        """Store ``commit`` if its version is the key's current version + 1; return it.

        Raises :class:`CommitConflict` (key, expected_version, provided_version) otherwise, and
        whatever a pre-save hook raises. Nothing is stored in either case.
        """
        self._store(commit)
        self._announce(commit)
        return commit

    def _store(self, commit: Commit) -> None:
        """``save`` up to the event: pre-save hooks, the version check and write, post-save hooks."""
        if not isinstance(commit, Commit):
            raise InvalidCommit("save() takes a Commit", got=type(commit).__name__)
        for hook in self._pre_save:
            hook(commit)
        self._insert(commit)
        for hook in self._post_save:
            try:
                hook(commit)
            except Exception:
                log.exception("post-save hook %r failed for %r (the commit is stored)", hook, commit)

    def _announce(self, commit: Commit) -> None:
        """The end of ``save``: ``commit_saved`` to listeners (delivered on the event thread)."""
        self._events.emit("commit_saved", commit)

    # -- to implement ------------------------------------------------------------------------------
    @abstractmethod
    def _head(self, key: str) -> Commit | None: ...

    @abstractmethod
    def _get(self, key: str, version: int) -> Commit | None: ...

    @abstractmethod
    def _heads(self) -> dict[str, Commit]: ...

    @abstractmethod
    def _history(self, key: str) -> list[Commit]: ...

    @abstractmethod
    def _insert(self, commit: Commit) -> None:
        """Atomically check ``commit.version == current + 1`` and store it, else raise CommitConflict."""


class MemoryCommitStorage(CommitStorage):
    """Commits in a dict of lists, guarded by a lock: for tests, notebooks and single processes.

    ::

        storage = MemoryCommitStorage()
        storage.save(Commit.from_value("foo", 1, [1, 2], author="me"))
    """

    blocking = False

    def __init__(self, commits: Iterable[Commit] = (),
                 serialization: Serialization | SerializationChooser = JSON) -> None:
        super().__init__(serialization)
        self._lock = threading.Lock()
        self._commits: dict[str, list[Commit]] = {}
        for commit in commits:
            self._insert(commit)

    def _head(self, key: str) -> Commit | None:
        with self._lock:
            versions = self._commits.get(key)
            return versions[-1] if versions else None

    def _get(self, key: str, version: int) -> Commit | None:
        with self._lock:
            versions = self._commits.get(key, [])
            return versions[version - 1] if version <= len(versions) else None

    def _heads(self) -> dict[str, Commit]:
        with self._lock:
            return {key: versions[-1] for key, versions in self._commits.items()}

    def _history(self, key: str) -> list[Commit]:
        with self._lock:
            return list(self._commits.get(key, []))

    def _insert(self, commit: Commit) -> None:
        with self._lock:
            versions = self._commits.setdefault(commit.key, [])
            if commit.version != len(versions) + 1:
                if not versions:
                    del self._commits[commit.key]
                raise CommitConflict(commit.key, len(versions) + 1, commit.version)
            versions.append(commit)


# -- SQL ------------------------------------------------------------------------------------------
#: the schema version this code writes; older schemas are migrated on start()
SCHEMA_VERSION = 1

#: execution option marking a connection that writes (SQLite then takes the write lock up front)
_WRITE_OPTION = "commits_write"

#: how often a save is retried after a deadlock or serialization failure the database reported
_TRANSIENT_RETRIES = 20


class SqlCommitStorage(CommitStorage):
    """Commits in one SQL table (``table``, default ``commits``) through SQLAlchemy 2.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path.db`` (the default is an in-memory SQLite
    database), ``mysql+pymysql://user:pw@host/db``, ``postgresql+psycopg://user:pw@host/db``;
    or pass an ``engine``. ``start()`` creates the table and a schema-version table
    (``<table>_schema``) if missing and runs migrations from an older schema version; a schema
    newer than this code is refused with a CommitsError.

    The table's primary key is ``(commit_key, version)``. ``save`` checks the key's current
    version and inserts in one transaction (on SQLite under ``BEGIN IMMEDIATE``, on a database
    server as one ``INSERT ... SELECT`` that inserts only over the expected version); a concurrent
    winner makes the insert hit the primary key, which becomes a ``CommitConflict``. Deadlocks and
    serialization failures reported by the database are retried, so callers only ever see success
    or a conflict. A save returns once the database committed it.
    """

    def __init__(self, url: str = "sqlite://", table: str = "commits", *, engine: Any = None,
                 serialization: Serialization | SerializationChooser = JSON, echo: bool = False) -> None:
        super().__init__(serialization)
        self.url = url
        self.table_name = table
        self._engine = engine if engine is not None else _make_engine(url, echo)
        self._owns_engine = engine is None
        self._shared_lock = threading.RLock() if _is_memory_sqlite(self._engine.url) else None
        self._sqlite_writer: _SqliteWriter | None = None
        self._inherited_writers: list[_SqliteWriter] = []
        self._writer_lock = threading.Lock()
        self._started = False
        self._start_lock = threading.Lock()
        self._build_tables()

    def __repr__(self) -> str:
        return f"<SqlCommitStorage {self._engine.url.render_as_string(hide_password=True)} table {self.table_name}>"

    @property
    def engine(self) -> Any:
        """The SQLAlchemy engine."""
        return self._engine

    def _build_tables(self) -> None:
        from sqlalchemy import BigInteger, Boolean, Column, Integer, LargeBinary, MetaData, String, Table, Text
        from sqlalchemy.dialects.mysql import LONGBLOB, LONGTEXT

        self._metadata = MetaData()
        # MariaDB's plain BLOB/TEXT stop at 64 KiB: payloads and comments get the long variants.
        payload_type = LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb")
        text_type = Text().with_variant(LONGTEXT(), "mysql", "mariadb")
        self._table = Table(
            self.table_name, self._metadata,
            Column("commit_key", _KeyType(), primary_key=True),
            Column("version", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                   autoincrement=False),
            Column("author", String(255), nullable=False),
            Column("comment", text_type, nullable=False),
            Column("mtime", String(40), nullable=False),
            Column("is_empty", Boolean(), nullable=False),
            Column("payload", payload_type, nullable=True),
            mysql_charset="utf8mb4",
        )
        self._schema_table = Table(
            f"{self.table_name}_schema", self._metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("version", Integer, nullable=False),
        )
        # The statements of a save, built once: building and cache-keying them again on every
        # save cost more than SQLite's whole transaction (fsync included).
        from sqlalchemy import bindparam, func, select

        table = self._table
        self._current_version_query = (select(func.max(table.c.version))
                                       .where(table.c.commit_key == bindparam("key")))
        self._insert_statement = table.insert()
        # On a database server the version check and the insert are one statement (one round
        # trip): the row is inserted only if the key's current version is :previous. Two savers
        # of one version both pass the check, and the primary key stops the second.
        existing = table.alias("existing")
        current = (select(func.coalesce(func.max(existing.c.version), 0))
                   .where(existing.c.commit_key == bindparam("commit_key", type_=table.c.commit_key.type))
                   .scalar_subquery())
        row = select(*[bindparam(column.name, type_=column.type) for column in table.c]).where(
            current == bindparam("previous", type_=table.c.version.type))
        # rowcount says whether the check passed; SQLAlchemy keeps it for INSERTs only when asked
        self._guarded_insert = (table.insert().from_select([column.name for column in table.c], row)
                                .execution_options(preserve_rowcount=True))

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> SqlCommitStorage:
        """Create the tables if missing and migrate an older schema; returns self."""
        with self._start_lock:
            if self._started:
                return self
            from sqlalchemy.exc import DBAPIError

            # Several processes may start on a fresh database at once: whoever loses the race
            # to CREATE TABLE sees an error and simply checks again.
            for attempt in range(5):
                try:
                    self._metadata.create_all(self._engine, checkfirst=True)
                    self._migrate()
                    break
                except DBAPIError:
                    if attempt == 4:
                        raise
                    time.sleep(0.1 * (attempt + 1))
            self._started = True
        return self

    def close(self) -> None:
        super().close()
        with self._writer_lock:
            if self._sqlite_writer is not None:
                self._sqlite_writer.close()
                self._sqlite_writer = None
        if self._owns_engine:
            self._engine.dispose()

    def schema_version(self) -> int | None:
        """The schema version recorded in the database (None before the first start)."""
        from sqlalchemy import select

        with self._connection() as connection:
            return connection.execute(select(self._schema_table.c.version)
                                      .where(self._schema_table.c.id == 1)).scalar()

    def _migrate(self) -> None:
        from sqlalchemy import select

        with self._connection() as connection, connection.begin():
            found = connection.execute(select(self._schema_table.c.version)
                                       .where(self._schema_table.c.id == 1)).scalar()
            if found is None:
                connection.execute(self._schema_table.insert().values(id=1, version=SCHEMA_VERSION))
                return
            if found > SCHEMA_VERSION:
                raise CommitsError("the commits table has a newer schema than this code understands",
                                   table=self.table_name, schema_version=found, supported=SCHEMA_VERSION)
            for version in range(found + 1, SCHEMA_VERSION + 1):
                # Each step moves the schema from version-1 to version; none exists yet beyond 1.
                MIGRATIONS[version](connection, self)
                connection.execute(self._schema_table.update().where(self._schema_table.c.id == 1)
                                   .values(version=version))

    @contextmanager
    def _connection(self, write: bool = False) -> Iterator[Any]:
        # An in-memory SQLite database is one connection shared by every thread: take turns.
        with self._shared_lock or nullcontext():
            with self._engine.connect() as connection:
                if write:
                    connection.execution_options(**{_WRITE_OPTION: True})
                yield connection

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    # -- rows <-> commits ---------------------------------------------------------------------------
    def _commit_from_row(self, row: Any) -> Commit:
        meta = CommitMetadata(key=row.commit_key, version=int(row.version), author=row.author,
                              comment=row.comment, mtime=parse_mtime(row.mtime, check_range=False),
                              empty=bool(row.is_empty))
        payload = None if meta.empty else bytes(row.payload or b"")
        return Commit(meta, payload, self.serialization_for(meta.key))

    def _row_from_commit(self, commit: Commit) -> dict[str, Any]:
        return {"commit_key": commit.key, "version": commit.version, "author": commit.author,
                "comment": commit.comment, "mtime": format_mtime(commit.mtime), "is_empty": commit.empty,
                "payload": commit.payload}

    # -- reads -------------------------------------------------------------------------------------
    def _head(self, key: str) -> Commit | None:
        from sqlalchemy import select

        self._ensure_started()
        table = self._table
        with self._connection() as connection:
            row = connection.execute(select(table).where(table.c.commit_key == key)
                                     .order_by(table.c.version.desc()).limit(1)).first()
        return None if row is None else self._commit_from_row(row)

    def _get(self, key: str, version: int) -> Commit | None:
        from sqlalchemy import select

        self._ensure_started()
        table = self._table
        with self._connection() as connection:
            row = connection.execute(select(table).where(table.c.commit_key == key,
                                                         table.c.version == version)).first()
        return None if row is None else self._commit_from_row(row)

    def _heads(self) -> dict[str, Commit]:
        from sqlalchemy import func, select

        self._ensure_started()
        table = self._table
        latest = (select(table.c.commit_key, func.max(table.c.version).label("version"))
                  .group_by(table.c.commit_key).subquery())
        query = select(table).join(latest, (table.c.commit_key == latest.c.commit_key)
                                   & (table.c.version == latest.c.version))
        with self._connection() as connection:
            rows = connection.execute(query).all()
        return {row.commit_key: self._commit_from_row(row) for row in sorted(rows, key=lambda r: r.commit_key)}

    def _history(self, key: str) -> list[Commit]:
        from sqlalchemy import select

        self._ensure_started()
        table = self._table
        with self._connection() as connection:
            rows = connection.execute(select(table).where(table.c.commit_key == key)
                                      .order_by(table.c.version)).all()
        return [self._commit_from_row(row) for row in rows]

    # -- writes ------------------------------------------------------------------------------------
    def _current_version(self, connection: Any, key: str) -> int:
        return connection.execute(self._current_version_query, {"key": key}).scalar() or 0

    def _insert(self, commit: Commit) -> None:
        from sqlalchemy.exc import DBAPIError, IntegrityError

        self._ensure_started()
        if self._engine.url.get_backend_name() == "sqlite" and self._shared_lock is None:
            self._insert_sqlite(commit)
            return
        for attempt in range(_TRANSIENT_RETRIES + 1):
            try:
                with self._connection(write=True) as connection, connection.begin():
                    inserted = connection.execute(self._guarded_insert,
                                                  {**self._row_from_commit(commit), "previous": commit.version - 1})
                    if inserted.rowcount != 1:
                        current = self._current_version(connection, commit.key)
                        raise CommitConflict(commit.key, current + 1, commit.version)
                return
            except IntegrityError:
                # Another saver inserted this (key, version) between our read and our insert.
                with self._connection() as connection:
                    current = self._current_version(connection, commit.key)
                raise CommitConflict(commit.key, current + 1, commit.version) from None
            except DBAPIError as exc:
                if attempt == _TRANSIENT_RETRIES or not _is_transient(exc):
                    raise
                time.sleep(0.005 * (attempt + 1))


    def _insert_sqlite(self, commit: Commit) -> None:
        """The save of a file SQLite database, on this storage's writing connection."""
        with self._writer_lock:
            writer = self._sqlite_writer
            if writer is not None and not writer.usable:
                # a forked child: keep the parent's connection referenced but never touch it
                # (finalizing it here would roll back on the parent's connection)
                self._inherited_writers.append(writer)
                writer = None
            if writer is None:
                writer = self._sqlite_writer = _SqliteWriter(self)
            writer.insert(commit)


class _SqliteWriter:
    """The save transaction of a file SQLite database, on one connection kept for writing.

    SQLite runs in this process, so SQLAlchemy's per-statement work (a pool checkout and return,
    events, parameter and result objects) cost about as much as the fsynced commit itself. A
    save here runs the statements SQLAlchemy compiled once for this database on the driver
    connection directly: BEGIN IMMEDIATE (the write lock before the version is read), the version
    query, the insert, COMMIT. The connection comes from the engine's pool, so it has every
    setting the engine gives its connections (WAL journal, the driver's default
    ``synchronous=FULL``): a save is as durable as before once it returns. Savers of this process
    take turns on the storage's lock (SQLite admits one writer at a time anyway); savers in other
    processes are waited for by SQLite's busy timeout, as before.
    """

    def __init__(self, storage: SqlCommitStorage) -> None:
        import os

        self._pid = os.getpid()
        self._storage = storage
        self._pooled = storage.engine.raw_connection()
        self._driver = self._pooled.driver_connection
        dialect = storage.engine.dialect
        version_query = storage._current_version_query.compile(dialect=dialect)
        self._version_sql = version_query.string
        columns = [column.name for column in storage._table.c]
        insert = storage._insert_statement.compile(dialect=dialect, column_keys=columns)
        self._insert_sql = insert.string
        self._insert_order = list(insert.positiontup or columns)

    @property
    def usable(self) -> bool:
        """False in a forked child: the parent's connection must not be used there."""
        import os

        return os.getpid() == self._pid

    def close(self) -> None:
        if self.usable:
            self._pooled.close()

    def _current_version(self, key: str) -> int:
        row = self._driver.execute(self._version_sql, (key,)).fetchone()
        return (row[0] if row else None) or 0

    def insert(self, commit: Commit) -> None:
        import sqlite3

        from sqlalchemy.exc import DBAPIError

        row = self._storage._row_from_commit(commit)
        values = [row[name] for name in self._insert_order]
        driver = self._driver
        if driver.in_transaction:  # left open by a failed ROLLBACK: start clean
            driver.rollback()
        for attempt in range(_TRANSIENT_RETRIES + 1):
            try:
                driver.execute("BEGIN IMMEDIATE")
                try:
                    current = self._current_version(commit.key)
                    if commit.version != current + 1:
                        raise CommitConflict(commit.key, current + 1, commit.version)
                    driver.execute(self._insert_sql, values)
                    driver.execute("COMMIT")
                except BaseException:
                    if driver.in_transaction:
                        driver.execute("ROLLBACK")
                    raise
                return
            except sqlite3.IntegrityError:
                # BEGIN IMMEDIATE excludes other savers, so only a row written behind SQLite's
                # back (or a broken lock) gets here: report what is stored now.
                raise CommitConflict(commit.key, self._current_version(commit.key) + 1,
                                     commit.version) from None
            except sqlite3.Error as exc:
                wrapped = DBAPIError.instance(self._insert_sql, values, exc, sqlite3.Error)
                if attempt == _TRANSIENT_RETRIES or not _is_transient(wrapped):
                    raise wrapped from exc
                time.sleep(0.005 * (attempt + 1))


def _is_transient(exc: Any) -> bool:
    """Deadlocks, lock timeouts and serialization failures: the transaction may simply be retried."""
    original = getattr(exc, "orig", None)
    code = getattr(original, "args", [None])[0] if original is not None else None
    if code in (1205, 1213):  # MariaDB/MySQL: lock wait timeout, deadlock
        return True
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in ("40001", "40P01"):  # PostgreSQL: serialization failure, deadlock
        return True
    return "database is locked" in str(original)  # SQLite: busy beyond the timeout


def _is_memory_sqlite(url: Any) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _make_engine(url: str, echo: bool) -> Any:
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import StaticPool

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    in_memory = _is_memory_sqlite(parsed)
    engine = create_engine(
        url, echo=echo,
        connect_args={"check_same_thread": False, "timeout": 30},
        # one shared connection keeps an in-memory database alive and the same for every thread
        **({"poolclass": StaticPool} if in_memory else {}))

    # pysqlite's own transaction handling starts transactions late and as DEFERRED, so two savers
    # could both read version N and one would fail on upgrade. Begin IMMEDIATE ourselves: the
    # write lock is taken before the version is read.
    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        if not in_memory:
            # write-ahead logging: readers do not wait for the writer, and a commit costs one
            # fsync of the log instead of several of the journal and the database
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class _KeyType(TypeDecorator):
    """A commit key column: VARCHAR(255), but VARBINARY (UTF-8) on MariaDB/MySQL.

    MariaDB's string collations ignore trailing spaces ("PAD SPACE") and most ignore case, so
    "foo" and "foo " would be one primary key there. Bytes compare exactly, as keys must.
    """

    impl = String(255)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import VARBINARY

            return dialect.type_descriptor(VARBINARY(4 * 255))
        return dialect.type_descriptor(String(255))

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is not None and dialect.name in ("mysql", "mariadb"):
            return value.encode("utf-8")
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode("utf-8")
        return value


#: schema migrations: version -> function(connection, storage) moving the schema from version-1
MIGRATIONS: dict[int, Callable[[Any, SqlCommitStorage], None]] = {}
