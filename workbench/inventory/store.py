"""The SQL store of the inventory (SQLAlchemy 2): schema, full load, write-through, change log, servers.

::

    store = Store("sqlite:///inventory.db")          # or mysql+pymysql://..., postgresql+psycopg://...
    inventory = Inventory()
    seq = store.load(inventory)                      # the whole image, and the change number it is at
    with store.transaction() as tx:                  # one SQL transaction for a batch of changes
        inventory.add_sink(tx.sink)
        ...                                          # inventory.update(...) / delete(...)
        inventory.remove_sink(tx.sink)

Object tables hold the inventory (identifiers are unique keys; foreign keys cascade as the RAM
image does: deleting a dataset row removes its blocks, files and replicas, deleting a group row
sets its replicas' group to NULL, the null group). The service tables carry what servers share:

* ``inv_changes``: every applied change in order (numbered without gaps, stored in chunks), read
  by secondary servers;
* ``inv_state``: one row with the last ``seq``, the primary's id and heartbeat counter, and the
  application writer currently holding the one write slot;
* ``inv_servers``: one row per server (status, role, applied seq, heartbeat, ports);
* ``inv_authorizations`` and ``inv_applications``: authorized scripts and the runs' history.

A batch's row effects go out in a few bulk statements whatever its size (see ``StoreTransaction``):
new rows get their ids from the writing transaction, so nothing waits for the database's.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    inspect,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from workbench.inventory.dataformat import (
    Block,
    BlockReplica,
    Dataset,
    DatasetReplica,
    File,
    FileLoader,
    Group,
    InventoryObject,
    Partition,
    Site,
    SitePartition,
)
from workbench.inventory.errors import NotPrimaryError, StoreError, WriterBusyError
from workbench.inventory.inventory import Change, Inventory, Write

log = logging.getLogger(__name__)


def _name_type(length: int) -> Any:
    # MariaDB's default collation ignores case: identifiers must compare byte for byte.
    return String(length).with_variant(mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"),
                                       "mysql", "mariadb")


def _text_type() -> Any:
    return Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


metadata = MetaData()

datasets_table = Table(
    "inv_datasets", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", _name_type(512), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("data_type", String(16), nullable=False),
    Column("software_version", String(128)),
    Column("last_update", BigInteger, nullable=False),
    Column("is_open", Boolean, nullable=False),
)
blocks_table = Table(
    "inv_blocks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", Integer, ForeignKey("inv_datasets.id", ondelete="CASCADE"), nullable=False),
    Column("name", _name_type(256), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("num_files", Integer, nullable=False),
    Column("is_open", Boolean, nullable=False),
    Column("last_update", BigInteger, nullable=False),
    UniqueConstraint("dataset_id", "name", name="uq_inv_blocks"),
)
files_table = Table(
    "inv_files", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("block_id", Integer, ForeignKey("inv_blocks.id", ondelete="CASCADE"), nullable=False),
    Column("lfn", _name_type(512), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("adler32", String(8)),
    Column("md5", String(32)),
    UniqueConstraint("block_id", "lfn", name="uq_inv_files"),
)
sites_table = Table(
    "inv_sites", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", _name_type(128), nullable=False, unique=True),
    Column("host", String(256), nullable=False),
    Column("storage_type", String(16), nullable=False),
    Column("backend", String(512), nullable=False),
    Column("status", String(16), nullable=False),
    Column("filename_mapping", _text_type(), nullable=False),
)
groups_table = Table(
    "inv_groups", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", _name_type(128), nullable=False, unique=True),
    Column("olevel", String(16), nullable=False),
)
partitions_table = Table(
    "inv_partitions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", _name_type(128), nullable=False, unique=True),
    Column("condition", Text),
    Column("subpartitions", Text, nullable=False),
)
site_partitions_table = Table(
    "inv_site_partitions", metadata,
    Column("site_id", Integer, ForeignKey("inv_sites.id", ondelete="CASCADE"), nullable=False),
    Column("partition_id", Integer, ForeignKey("inv_partitions.id", ondelete="CASCADE"), nullable=False),
    Column("quota", BigInteger),
    PrimaryKeyConstraint("site_id", "partition_id"),
)
dataset_replicas_table = Table(
    "inv_dataset_replicas", metadata,
    Column("dataset_id", Integer, ForeignKey("inv_datasets.id", ondelete="CASCADE"), nullable=False),
    Column("site_id", Integer, ForeignKey("inv_sites.id", ondelete="CASCADE"), nullable=False),
    Column("growing", Boolean, nullable=False),
    Column("group_id", Integer, ForeignKey("inv_groups.id", ondelete="SET NULL")),
    PrimaryKeyConstraint("dataset_id", "site_id"),
)
block_replicas_table = Table(
    "inv_block_replicas", metadata,
    Column("block_id", Integer, ForeignKey("inv_blocks.id", ondelete="CASCADE"), nullable=False),
    Column("site_id", Integer, ForeignKey("inv_sites.id", ondelete="CASCADE"), nullable=False),
    Column("group_id", Integer, ForeignKey("inv_groups.id", ondelete="SET NULL")),
    Column("is_custodial", Boolean, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("last_update", BigInteger, nullable=False),
    PrimaryKeyConstraint("block_id", "site_id"),
)
#: the change log: each row a chunk of consecutive changes ``first..seq`` of one batch, as a JSON
#: list of ``{"op", "object"}`` (one row per change would cost a round of escaping per change)
changes_table = Table(
    "inv_changes", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("first", BigInteger, nullable=False),
    Column("batch", BigInteger, nullable=False),
    Column("data", _text_type(), nullable=False),
)
#: most changes in one row of the change log
CHANGES_PER_ROW = 500
state_table = Table(
    "inv_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("batch", BigInteger, nullable=False),
    Column("master_id", String(64)),
    Column("master_beat", BigInteger, nullable=False),
    Column("writer", String(256)),
    Column("writer_server", String(64)),
)
servers_table = Table(
    "inv_servers", metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(256), nullable=False),
    Column("app_port", Integer, nullable=False),
    Column("web_port", Integer),
    # the application socket's path (added later: create_schema adds it to older databases)
    Column("app_socket", String(1024)),
    Column("status", String(16), nullable=False),
    Column("role", String(16), nullable=False),
    Column("applied_seq", BigInteger, nullable=False),
    Column("beat", BigInteger, nullable=False),
    Column("updated", Float, nullable=False),
)
authorizations_table = Table(
    "inv_authorizations", metadata,
    Column("title", _name_type(128), nullable=False),
    Column("user", _name_type(128), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("authorized", Float, nullable=False),
    PrimaryKeyConstraint("title", "user"),
)
applications_table = Table(
    "inv_applications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("title", String(128), nullable=False),
    Column("user", String(128), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("write", Boolean, nullable=False),
    Column("server", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("exit_code", Integer),
    Column("changes", Integer, nullable=False),
    Column("started", Float, nullable=False),
    Column("finished", Float),
)

#: tables holding the inventory itself, children after parents
OBJECT_TABLES = (groups_table, partitions_table, sites_table, site_partitions_table, datasets_table,
                 blocks_table, files_table, dataset_replicas_table, block_replicas_table)


class _StoredFiles(FileLoader):
    """A block's files, read from the store on first access and checked against the block's totals."""

    __slots__ = ("store", "block_id")

    def __init__(self, store: Store, block_id: int) -> None:
        self.store = store
        self.block_id = block_id

    def load(self, block: Block) -> list[File]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(files_table.c.lfn, files_table.c.size, files_table.c.adler32,
                                       files_table.c.md5).where(files_table.c.block_id == self.block_id)).all()
        files = [File.trusted(lfn, block, size, adler32, md5) for lfn, size, adler32, md5 in rows]
        if not _check_block_files(block, files, sum(file.size for file in files)):
            log.warning("block %s: its stored files do not add up to its totals (`workbench inventory check`)",
                        block.full_name())
        return files


def _check_block_files(block: Block, files: list[File], total: int) -> bool:
    """Whether the block's declared totals match its files; a mismatch is reported, never fatal.

    The store holds what servers wrote: refusing it would leave an inventory that cannot start.
    ``Store.check`` lists every such block and ``Store.repair`` sets its totals to its files' sums.
    """
    if len(files) == block.num_files and total == block.size:
        return True
    log.debug("block %s declares %s files / %s bytes; its stored files are %s / %s", block.full_name(),
              block.num_files, block.size, len(files), total)
    return False


class Store:
    """An inventory store on a SQLAlchemy URL; ``create_schema()`` runs on construction.

    ``Store("sqlite:///inventory.db")``; MariaDB/MySQL (``mysql+pymysql://``) and PostgreSQL
    (``postgresql+psycopg://``) are tested too.
    """

    def __init__(self, url: str, *, create: bool = True, echo: bool = False) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, echo=echo, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the store: {exc}", url=self.safe_url) from exc
        if self.engine.dialect.name == "sqlite":
            self._configure_sqlite(self.engine)
        if create:
            self.create_schema()

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except AttributeError:
            return self.url.split("@")[-1]

    @staticmethod
    def _configure_sqlite(engine: Engine) -> None:
        # pysqlite opens transactions lazily and not for SELECTs; take control so a load reads one
        # snapshot and a batch is one transaction. Foreign keys are off unless asked for.
        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

    def create_schema(self, attempts: int = 3) -> None:
        """Create missing tables and the state row (idempotent, safe with several servers starting)."""
        for attempt in range(attempts):
            try:
                metadata.create_all(self.engine)
                self._add_missing_columns()
                with self.engine.begin() as conn:
                    if conn.execute(select(state_table.c.id)).first() is None:
                        conn.execute(insert(state_table).values(id=1, seq=0, batch=0, master_id=None,
                                                                master_beat=0))
                return
            except SQLAlchemyError as exc:
                # another server creating the same tables at this moment: look again
                if attempt + 1 == attempts:
                    raise StoreError(f"cannot create the schema: {exc}", url=self.safe_url) from exc
                time.sleep(0.2 * (attempt + 1))

    def _add_missing_columns(self) -> None:
        """Columns newer than a database's tables: added in place (nullable, so old rows stay valid)."""
        present = {column["name"] for column in inspect(self.engine).get_columns(servers_table.name)}
        if "app_socket" not in present:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {servers_table.name} ADD COLUMN app_socket VARCHAR(1024)")

    def close(self) -> None:
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a forked child: use a new engine, leaving the parent's pooled connections untouched.

        The parent's pool (and its locks, which another thread may have held at the fork) is
        never used again in the child.
        """
        self.engine = create_engine(self.url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            self._configure_sqlite(self.engine)

    # -- load -------------------------------------------------------------------------------------
    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        conn = self.engine.connect()
        if self.engine.dialect.name in ("postgresql", "mysql", "mariadb"):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with conn.begin():
                yield conn
        finally:
            conn.close()

    def load(self, inventory: Inventory, *, lazy_files: bool = False) -> int:
        """Fill ``inventory`` (emptied first) with the stored image; return the change seq it is at.

        Everything is read in one snapshot transaction. With ``lazy_files`` the files of a block
        are read on first access and checked against the block's file count and size.
        """
        fresh = Inventory(inventory.name)
        fresh.emit_events = False
        try:
            with self._snapshot() as conn:
                seq = conn.execute(select(state_table.c.seq)).scalar_one()
                self._read_image(conn, fresh, lazy_files)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot load the inventory: {exc}", url=self.safe_url, operation="load") from exc
        inventory.replace_with(fresh)
        return seq

    def _read_image(self, conn: Connection, inv: Inventory, lazy_files: bool) -> None:
        groups: dict[int | None, Group] = {None: inv.groups[None]}
        for gid, name, olevel in conn.execute(select(groups_table.c.id, groups_table.c.name, groups_table.c.olevel)):
            groups[gid] = inv.groups[name] = Group(name, olevel)
        partitions: dict[int, Partition] = {}
        for pid, name, condition, subs in conn.execute(select(partitions_table)):
            partition = Partition(name, condition, json.loads(subs))
            partition._inventory_partitions = inv.partitions
            partitions[pid] = inv.partitions[name] = partition
        sites: dict[int, Site] = {}
        for row in conn.execute(select(sites_table)):
            site = Site(row.name, row.host, row.storage_type, row.backend, row.status,
                        json.loads(row.filename_mapping))
            sites[row.id] = inv.sites[row.name] = site
        for site_id, partition_id, quota in conn.execute(select(site_partitions_table)):
            site, partition = sites[site_id], partitions[partition_id]
            site.partitions[partition.name] = SitePartition(site, partition, quota)
        datasets: dict[int, Dataset] = {}
        for row in conn.execute(select(datasets_table)):
            dataset = Dataset(row.name, row.status, row.data_type, row.software_version, row.last_update,
                              bool(row.is_open))
            datasets[row.id] = inv.datasets[row.name] = dataset
        blocks: dict[int, Block] = {}
        for row in conn.execute(select(blocks_table)):
            dataset = datasets[row.dataset_id]
            block = Block(row.name, dataset, row.size, row.num_files, bool(row.is_open), row.last_update)
            if lazy_files:
                block._files = _StoredFiles(self, row.id)
            blocks[row.id] = dataset.blocks[row.name] = block
        if not lazy_files:
            self._read_files(conn, blocks)
        for dataset_id, site_id, growing, group_id in conn.execute(select(dataset_replicas_table)):
            dataset, site = datasets[dataset_id], sites[site_id]
            replica = DatasetReplica(dataset, site, bool(growing), groups[group_id])
            dataset.replicas[site.name] = replica
            site.dataset_replicas[dataset.name] = replica
        for row in conn.execute(select(block_replicas_table)):
            block, site = blocks[row.block_id], sites[row.site_id]
            block_replica = BlockReplica(block, site, groups[row.group_id], bool(row.is_custodial), row.size,
                                         row.last_update)
            block.replicas[site.name] = block_replica
            site.block_replicas.add(block_replica)

    @staticmethod
    def _read_files(conn: Connection, blocks: dict[int, Block]) -> None:
        """Stream every file into its block, checking each block's file count and total size."""
        query = select(files_table.c.block_id, files_table.c.lfn, files_table.c.size, files_table.c.adler32,
                       files_table.c.md5).order_by(files_table.c.block_id)
        trusted = File.trusted
        current: Block | None = None
        files: list[File] = []
        total = 0
        differing = []
        for block_id, lfn, size, adler32, md5 in conn.execution_options(yield_per=20000).execute(query):
            if current is None or blocks[block_id] is not current:
                if current is not None and not _check_block_files(current, files, total):
                    differing.append(current.full_name())
                current = blocks[block_id]
                files = current._files  # type: ignore[assignment]
                total = 0
            files.append(trusted(lfn, current, size, adler32, md5))
            total += size
        if current is not None and not _check_block_files(current, files, total):
            differing.append(current.full_name())
        for block in blocks.values():
            if not block._files and (block.num_files or block.size):  # a block whose files are all missing
                differing.append(block.full_name())
        if differing:
            log.warning("%s block(s) declare totals their stored files do not add up to (first: %s); "
                        "`workbench inventory check --store URL` lists them, --repair fixes them",
                        len(differing), ", ".join(differing[:3]))

    # -- consistency --------------------------------------------------------------------------------
    def check(self) -> list[dict[str, Any]]:
        """Every block whose stored files do not add up to its declared totals (one load of the image).

        Each entry: ``block`` (dataset#block), ``dataset``, ``name``, ``num_files`` and ``size`` as
        declared, ``found_files`` and ``found_size`` as stored.
        """
        image = Inventory("check")
        image.emit_events = False
        try:
            self.load(image)
            return _differing_blocks(image)
        finally:
            image.close()

    def repair(self) -> list[dict[str, Any]]:
        """Set the totals of every block ``check`` lists to its files' sums, in one logged batch.

        The fix goes through the change log like any write, so running secondaries follow it; a
        running primary keeps its image's totals until it reloads: stop the servers first.
        """
        image = Inventory("repair")
        image.emit_events = False
        try:
            self.load(image)
            differing = _differing_blocks(image)
            changes = []
            for entry in differing:
                block = image.datasets[entry["dataset"]].blocks[entry["name"]]
                changes.append(Change("update", {"kind": "Block", "name": block.name, "dataset": entry["dataset"],
                                                 "size": entry["found_size"], "num_files": entry["found_files"],
                                                 "is_open": block.is_open, "last_update": block.last_update}))
            if changes:
                self.apply_and_write(image, changes)
            return differing
        finally:
            image.close()

    # -- version ------------------------------------------------------------------------------------
    def seq(self) -> int:
        """The number of the last change committed to the store."""
        with self.engine.connect() as conn:
            return conn.execute(select(state_table.c.seq)).scalar_one()

    def version(self) -> dict[str, Any]:
        """``{"seq", "checksum"}``: the checksum of the image as stored, comparable with ``Inventory.checksum()``."""
        image = Inventory("store-version")
        image.emit_events = False
        seq = self.load(image)
        return {"seq": seq, "checksum": image.checksum()}

    # -- changes ------------------------------------------------------------------------------------
    def changes_since(self, seq: int, limit: int = 100000) -> list[tuple[int, int, Change]]:
        """Committed changes after ``seq``, in order, as (seq, batch, change); at most about ``limit``."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(changes_table).where(changes_table.c.seq > seq)
                                .order_by(changes_table.c.seq).limit(max(1, limit // CHANGES_PER_ROW))).all()
        changes = []
        for row in rows:
            for offset, item in enumerate(json.loads(row.data)):
                number = row.first + offset
                if number > seq:
                    changes.append((number, row.batch, Change.from_json(item)))
        return changes

    def oldest_change(self) -> int | None:
        """The number of the oldest change still in the log (None when it is empty)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.min(changes_table.c.first))).scalar()

    def prune_changes(self, keep: int) -> int:
        """Delete all but the newest ``keep`` changes; returns how many were removed."""
        with self.engine.begin() as conn:
            last = conn.execute(select(state_table.c.seq)).scalar_one()
            return conn.execute(delete(changes_table).where(changes_table.c.seq <= last - keep)).rowcount

    def replace_image(self, inventory: Inventory, seq: int) -> None:
        """Make the stored image a copy of ``inventory`` at change ``seq`` (one transaction; the log is emptied)."""
        conn = self.engine.connect()
        try:
            with conn.begin():
                tx = StoreTransaction(self, conn)
                tx.begin(None)
                for table in reversed(OBJECT_TABLES):
                    conn.execute(delete(table))
                conn.execute(delete(changes_table))
                with inventory.lock:
                    for obj in inventory.objects():
                        tx.add(obj)
                    tx._flush()
                tx._sync_sequences()
                conn.execute(update(state_table).where(state_table.c.id == 1).values(seq=seq))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot copy the image into the store: {exc}", url=self.safe_url,
                             operation="replace") from exc
        finally:
            conn.close()

    @contextmanager
    def transaction(self, master_id: str | None = None) -> Iterator[StoreTransaction]:
        """One SQL transaction for a batch of changes: commit on success, roll back on any error.

        With ``master_id`` the state row is locked first and must name that server as primary,
        so a server that lost the primary role can never write.
        """
        conn = self.engine.connect()
        try:
            with conn.begin():
                tx = StoreTransaction(self, conn)
                tx.begin(master_id)
                yield tx
                tx.finish()
        except SQLAlchemyError as exc:
            raise StoreError(f"the store refused a change: {exc.__class__.__name__}: {exc}",
                             url=self.safe_url, operation="write") from exc
        finally:
            conn.close()

    def apply_and_write(self, inventory: Inventory, changes: Iterable[Change], master_id: str | None = None) -> int:
        """Apply ``changes`` to ``inventory`` and write them through in one transaction; returns the new seq.

        If anything fails the transaction is rolled back and the RAM image may be ahead of the
        store: the caller reloads it (``load``).
        """
        with inventory.lock, self.transaction(master_id) as tx:
            inventory.add_sink(tx.sink)
            try:
                for change in changes:
                    inventory.apply(change)
            finally:
                inventory.remove_sink(tx.sink)
        return tx.seq


def _differing_blocks(image: Inventory) -> list[dict[str, Any]]:
    found = []
    for dataset_name, dataset in sorted(image.datasets.items()):
        for name, block in sorted(dataset.blocks.items()):
            files = block.files
            total = sum(file.size for file in files)
            if len(files) != block.num_files or total != block.size:
                found.append({"block": block.full_name(), "dataset": dataset_name, "name": name,
                              "num_files": block.num_files, "size": block.size, "found_files": len(files),
                              "found_size": total})
    return found


#: tables whose rows other rows refer to by id
_REFERENCED_TABLES = frozenset({datasets_table, blocks_table, sites_table, groups_table, partitions_table})
#: tables no row refers to: deleting one of their rows cascades nowhere, so it can wait with the rest
_LEAF_TABLES = frozenset({files_table, block_replicas_table, site_partitions_table})
#: the table of each kind of object
_TABLE_OF: dict[type, Table] = {
    Dataset: datasets_table, Block: blocks_table, File: files_table, Site: sites_table, Group: groups_table,
    Partition: partitions_table, SitePartition: site_partitions_table, DatasetReplica: dataset_replicas_table,
    BlockReplica: block_replicas_table}
#: rows built and sent per executemany while flushing (bounds the memory of a large flush)
_FLUSH_ROWS = 10000
#: update and delete statements by (table, key columns, value columns): built once, executed many times
_STATEMENTS: dict[tuple[str, tuple[str, ...], tuple[str, ...] | None], Any] = {}


def _keyed_statement(table: Table, keys: tuple[str, ...], columns: tuple[str, ...] | None) -> Any:
    """``UPDATE table SET columns WHERE keys`` (or ``DELETE`` when ``columns`` is None), parameters k_*, v_*."""
    found = _STATEMENTS.get((table.name, keys, columns))
    if found is None:
        where = and_(*(table.c[name] == bindparam(f"k_{name}") for name in keys))
        if columns is None:
            found = delete(table).where(where)
        else:
            found = update(table).where(where).values({name: bindparam(f"v_{name}") for name in columns})
        _STATEMENTS[(table.name, keys, columns)] = found
    return found


class StoreTransaction:
    """Writes the row effects of changes (``sink``) and appends the changes to the change log.

    A batch costs few statements, whatever its size. A new row gets its id here, the next
    after the table's largest (read once per transaction: the state row's lock, taken in
    ``begin``, makes this transaction the only writer), so rows that refer to it need no round
    trip. New and changed rows, and removed rows that nothing refers to (files, block replicas,
    site partitions), are only noted until a statement that must see them runs (a delete that
    cascades) or the batch ends; then they are written with one executemany per table: deletes
    first (a row removed and added again within the window is a new object, added after), then
    inserts parents first, then updates, each row's columns taken from its object at that moment,
    which is the state the changes so far left it in. A row added and removed within the window
    is never written.
    """

    def __init__(self, store: Store, conn: Connection) -> None:
        self.store = store
        self.conn = conn
        self.seq = 0
        self.batch = 0
        self._log: list[dict[str, Any]] = []
        self._ids: dict[tuple[Any, ...], int] = {}
        self._next_id: dict[Table, int] = {}
        # pending work: new objects (by identity, with their ids) and removed keys by table, changed objects
        self._inserts: dict[Table, dict[int, tuple[InventoryObject, int | None]]] = {}
        self._deletes: dict[Table, list[dict[str, Any]]] = {}
        self._puts: dict[int, InventoryObject] = {}
        self._dirty_blocks: dict[tuple[str, str], Block] = {}

    def begin(self, master_id: str | None) -> None:
        query = select(state_table.c.seq, state_table.c.batch, state_table.c.master_id).where(state_table.c.id == 1)
        if self.conn.dialect.name != "sqlite":
            query = query.with_for_update()
        else:
            # take SQLite's write lock now, so two writers queue instead of failing at commit
            self.conn.execute(update(state_table).where(state_table.c.id == 1).values(seq=state_table.c.seq))
        seq, batch, master = self.conn.execute(query).one()
        if master_id is not None and master != master_id:
            raise NotPrimaryError("this server is not the primary", server=master_id, primary=master)
        self.seq, self.batch = seq, batch + 1

    def sink(self, change: Change, writes: list[Write]) -> None:
        """Inventory sink: note the row effects, log the change for secondaries."""
        for op, obj in writes:
            if op == "put":
                if isinstance(obj, Block):
                    # file changes touch their block's totals: written once, when the batch ends
                    self._dirty_blocks[obj.key()] = obj
                elif not self._is_new(obj):  # a row still to be inserted is written as it is then
                    self._puts[id(obj)] = obj
            elif op == "add":
                self.add(obj)
            elif _TABLE_OF.get(type(obj)) in _LEAF_TABLES:
                self._drop_later(obj)
            else:
                self._drop(obj)
        self.seq += 1
        self._log.append(change.to_json())

    def add(self, obj: InventoryObject) -> None:
        """Note a new row for ``obj`` (its id, for tables that have one, is given now)."""
        table, key = self._key(obj)
        row_id = None
        if table in _REFERENCED_TABLES:
            row_id = self._next_id.get(table)
            if row_id is None:
                row_id = self._largest_id(table) + 1
            self._next_id[table] = row_id + 1
            self._ids[(table.name, *key.items())] = row_id
        self._inserts.setdefault(table, {})[id(obj)] = (obj, row_id)

    def _largest_id(self, table: Table) -> int:
        query = select(func.max(table.c.id))
        if self.conn.dialect.name in ("mysql", "mariadb"):
            # a locking read sees the latest rows whatever snapshot REPEATABLE READ would give
            query = query.with_for_update()
        return self.conn.execute(query).scalar() or 0

    def _is_new(self, obj: InventoryObject) -> bool:
        return id(obj) in self._inserts.get(_TABLE_OF[type(obj)], ())

    def _drop_later(self, obj: InventoryObject) -> None:
        table, key = self._key(obj)  # the ids it needs are known now
        if self._inserts.get(table, {}).pop(id(obj), None) is not None:
            return  # added in this window: never written, nothing to remove
        self._puts.pop(id(obj), None)
        self._deletes.setdefault(table, []).append(key)

    def finish(self) -> None:
        for block in self._dirty_blocks.values():
            # a block deleted (or replaced) later in the batch is not this object any more
            if block.dataset.blocks.get(block.name) is block and not self._is_new(block):
                self._puts[id(block)] = block
        self._dirty_blocks.clear()
        self._flush()
        self._sync_sequences()
        if not self._log:
            return
        first = self.seq - len(self._log) + 1
        rows = []
        for start in range(0, len(self._log), CHANGES_PER_ROW):
            chunk = self._log[start:start + CHANGES_PER_ROW]
            rows.append({"seq": first + start + len(chunk) - 1, "first": first + start, "batch": self.batch,
                         "data": json.dumps(chunk, separators=(",", ":"))})
        self.conn.execute(insert(changes_table), rows)
        self.conn.execute(update(state_table).where(state_table.c.id == 1).values(seq=self.seq, batch=self.batch))

    # -- statements --------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Write the pending deletes, then the new rows (parents first), then the changed rows."""
        inserts, self._inserts = self._inserts, {}
        deletes, self._deletes = self._deletes, {}
        puts, self._puts = self._puts, {}
        for table, keys in deletes.items():
            for start in range(0, len(keys), _FLUSH_ROWS):
                groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                for key in keys[start:start + _FLUSH_ROWS]:
                    groups.setdefault(tuple(key), []).append({f"k_{name}": value for name, value in key.items()})
                for names, params in groups.items():
                    self.conn.execute(_keyed_statement(table, names, None), params)
        for table in OBJECT_TABLES:
            pending = list(inserts.get(table, {}).values())
            for start in range(0, len(pending), _FLUSH_ROWS):
                rows = []
                for obj, row_id in pending[start:start + _FLUSH_ROWS]:
                    _, key, values = self._row(obj)
                    row = {**key, **values}
                    if row_id is not None:
                        row["id"] = row_id
                    rows.append(row)
                self.conn.execute(insert(table), rows)
        by_table: dict[Table, list[InventoryObject]] = {}
        for obj in puts.values():
            by_table.setdefault(_TABLE_OF[type(obj)], []).append(obj)
        for table, objects in by_table.items():
            for start in range(0, len(objects), _FLUSH_ROWS):
                self._update_rows(table, objects[start:start + _FLUSH_ROWS])

    def _update_rows(self, table: Table, objects: list[InventoryObject]) -> None:
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
        for obj in objects:
            _, key, values = self._row(obj)
            params = {f"k_{name}": value for name, value in key.items()}
            params.update((f"v_{name}", value) for name, value in values.items())
            groups.setdefault((tuple(key), tuple(values)), []).append(params)
        for (keys, columns), rows in groups.items():
            statement = _keyed_statement(table, keys, columns)
            if self.conn.dialect.supports_sane_multi_rowcount:
                if self.conn.execute(statement, rows).rowcount == len(rows):
                    continue
            # a row is missing (or the driver cannot say how many matched): find which, one by one
            for params in rows:
                if self.conn.execute(statement, params).rowcount == 0:
                    raise StoreError("the store lacks a row the RAM image changed", table=table.name,
                                     key={name: params[f"k_{name}"] for name in keys})

    def _sync_sequences(self) -> None:
        # PostgreSQL's id sequences do not follow explicit ids: move them past the ids given here
        if self.conn.dialect.name == "postgresql":
            for table, next_id in self._next_id.items():
                self.conn.execute(select(func.setval(func.pg_get_serial_sequence(table.name, "id"), next_id - 1)))

    def _exec(self, statement: Any) -> Any:
        if self._inserts or self._puts or self._deletes:
            self._flush()
        return self.conn.execute(statement)


    # -- ids ---------------------------------------------------------------------------------------
    def _id(self, table: Table, **where: Any) -> int | None:
        key = (table.name, *where.items())
        found = self._ids.get(key)
        if found is None:
            clause = and_(*(table.c[name] == value for name, value in where.items()))
            # No flush needed: every row still to be inserted has its id in the cache, and the
            # rows whose deletes wait have no id.
            found = self.conn.execute(select(table.c.id).where(clause)).scalar()
            if found is not None:
                self._ids[key] = found
        return found

    def _need(self, table: Table, **where: Any) -> int:
        found = self._id(table, **where)
        if found is None:
            raise StoreError("the store lacks a row the RAM image has", table=table.name, key=where)
        return found

    def _dataset_id(self, dataset: Dataset) -> int:
        return self._need(datasets_table, name=dataset.name)

    def _block_id(self, block: Block) -> int:
        return self._need(blocks_table, dataset_id=self._dataset_id(block.dataset), name=block.name)

    def _site_id(self, site: Site) -> int:
        return self._need(sites_table, name=site.name)

    def _group_id(self, group: Group) -> int | None:
        return None if group.name is None else self._need(groups_table, name=group.name)

    # -- rows --------------------------------------------------------------------------------------
    def _row(self, obj: InventoryObject) -> tuple[Table, dict[str, Any], dict[str, Any]]:
        """(table, identifying columns, other columns) of an object."""
        if isinstance(obj, Dataset):
            return datasets_table, {"name": obj.name}, {
                "status": obj.status.value, "data_type": obj.data_type.value,
                "software_version": obj.software_version, "last_update": obj.last_update, "is_open": obj.is_open}
        if isinstance(obj, Block):
            return blocks_table, {"dataset_id": self._dataset_id(obj.dataset), "name": obj.name}, {
                "size": obj.size, "num_files": obj.num_files, "is_open": obj.is_open, "last_update": obj.last_update}
        if isinstance(obj, File):
            return (files_table, {"block_id": self._block_id(obj.block), "lfn": obj.lfn},
                    {"size": obj.size, "adler32": obj.adler32, "md5": obj.md5})
        if isinstance(obj, Site):
            return sites_table, {"name": obj.name}, {
                "host": obj.host, "storage_type": obj.storage_type.value, "backend": obj.backend,
                "status": obj.status.value, "filename_mapping": json.dumps(obj.filename_mapping)}
        if isinstance(obj, Group):
            return groups_table, {"name": obj.name}, {"olevel": obj.olevel.value}
        if isinstance(obj, Partition):
            return (partitions_table, {"name": obj.name},
                    {"condition": obj.condition, "subpartitions": json.dumps(obj.subpartitions)})
        if isinstance(obj, SitePartition):
            return site_partitions_table, {
                "site_id": self._site_id(obj.site),
                "partition_id": self._need(partitions_table, name=obj.partition.name)}, {"quota": obj.quota}
        if isinstance(obj, DatasetReplica):
            return dataset_replicas_table, {
                "dataset_id": self._dataset_id(obj.dataset), "site_id": self._site_id(obj.site)}, {
                "growing": obj.growing, "group_id": self._group_id(obj.group)}
        if isinstance(obj, BlockReplica):
            return block_replicas_table, {
                "block_id": self._block_id(obj.block), "site_id": self._site_id(obj.site)}, {
                "group_id": self._group_id(obj.group), "is_custodial": obj.is_custodial, "size": obj.size,
                "last_update": obj.last_update}
        raise StoreError("cannot store this object", kind=type(obj).__name__)

    def _key(self, obj: InventoryObject) -> tuple[Table, dict[str, Any]]:
        table, key, _ = self._row(obj)
        return table, key

    def _drop(self, obj: InventoryObject) -> None:
        # Foreign keys cascade in the database as the RAM image cascades (see the schema).
        if isinstance(obj, DatasetReplica):
            dataset_id, site_id = self._dataset_id(obj.dataset), self._site_id(obj.site)
            block_ids = select(blocks_table.c.id).where(blocks_table.c.dataset_id == dataset_id)
            self._exec(delete(block_replicas_table).where(and_(
                block_replicas_table.c.site_id == site_id, block_replicas_table.c.block_id.in_(block_ids))))
        table, key, _ = self._row(obj) if not isinstance(obj, Group) else (groups_table, {"name": obj.name}, {})
        self._exec(delete(table).where(and_(*(table.c[name] == value for name, value in key.items()))))
        # a dropped row's id must not be reused from the cache by a later change of this batch
        self._ids.clear()


__all__ = ["NotPrimaryError", "OBJECT_TABLES", "Store", "StoreError", "StoreTransaction", "WriterBusyError", "metadata"]
