"""The SQL store: full load, write-through, rollback of failed batches, lazy files, change log, memory."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from sqlalchemy import func, select, update

from workbench.inventory import Block, Change, Dataset, File, Inventory, Site
from workbench.inventory.store import (
    NotPrimaryError,
    Store,
    StoreError,
    block_replicas_table,
    blocks_table,
    files_table,
    state_table,
)
from tests.test_inventory_dataformat import small_inventory


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/inventory.db"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    made = Store(url)
    yield made
    made.close()


def filled(store: Store) -> tuple[Inventory, list[Change]]:
    journal: list[Change] = []
    small_inventory(journal)
    inventory = Inventory()
    store.apply_and_write(inventory, journal)
    return inventory, journal


def count(store: Store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_write_through_and_full_load_give_the_same_image(store):
    inventory, journal = filled(store)
    loaded = Inventory()
    assert store.load(loaded) == len(journal) == store.seq()
    assert loaded.checksum() == inventory.checksum()
    assert store.version() == {"seq": len(journal), "checksum": inventory.checksum()}
    assert [seq for seq, _, _ in store.changes_since(len(journal) - 2)] == [len(journal) - 1, len(journal)]


def test_deleting_a_dataset_cascades_in_sql(store):
    inventory, _ = filled(store)
    assert (count(store, blocks_table), count(store, files_table), count(store, block_replicas_table)) == (2, 6, 4)
    store.apply_and_write(inventory, [Change("delete", {"kind": "Dataset", "name": "/Higgs/Run2024-v1/AOD"})])
    assert (count(store, blocks_table), count(store, files_table), count(store, block_replicas_table)) == (0, 0, 0)
    assert store.version()["checksum"] == inventory.checksum()


def test_deleting_a_group_moves_stored_replicas_to_the_null_group(store):
    inventory, _ = filled(store)
    store.apply_and_write(inventory, [Change("delete", {"kind": "Group", "name": "AnalysisOps"})])
    loaded = Inventory()
    store.load(loaded)
    assert {r.group.name for r in loaded.sites["T2_CH_CERN"].block_replicas} == {None}
    assert loaded.checksum() == inventory.checksum()


def test_a_failing_batch_leaves_the_store_untouched(store):
    inventory, _ = filled(store)
    before = store.version()
    bad_batch = [
        Change("update", {"kind": "Dataset", "name": "/New/Run/AOD"}),
        Change("delete", {"kind": "Site", "name": "T2_CH_CERN"}),
        Change("update", {"kind": "Block", "name": "b0", "dataset": "/Not/There/AOD"}),
    ]
    with pytest.raises(Exception) as info:
        store.apply_and_write(inventory, bad_batch)
    assert getattr(info.value, "kind", None) == "Dataset"
    assert store.version() == before
    store.load(inventory)  # what a server does when its image got ahead of the store
    assert inventory.checksum() == before["checksum"] and "T2_CH_CERN" in inventory.sites


def test_names_are_case_sensitive(store):
    inventory = Inventory()
    store.apply_and_write(inventory, [Change("update", {"kind": "Dataset", "name": "/A/b/AOD"}),
                                      Change("update", {"kind": "Dataset", "name": "/A/B/AOD"})])
    loaded = Inventory()
    store.load(loaded)
    assert sorted(loaded.datasets) == ["/A/B/AOD", "/A/b/AOD"]


def test_only_the_named_primary_writes(store):
    inventory, _ = filled(store)
    with store.engine.begin() as conn:
        conn.execute(update(state_table).values(master_id="server-a"))
    with pytest.raises(NotPrimaryError) as info:
        store.apply_and_write(inventory, [Change("update", {"kind": "Site", "name": "T3_X"})], master_id="server-b")
    assert info.value.primary == "server-a"
    assert store.apply_and_write(inventory, [Change("update", {"kind": "Site", "name": "T3_X"})],
                                 master_id="server-a") == store.seq()
    loaded = Inventory()
    store.load(loaded)
    assert "T3_X" in loaded.sites and loaded.checksum() == inventory.checksum()


def test_lazy_files_are_checked_against_the_block(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/lazy.db")
    inventory, _ = filled(store)
    lazy = Inventory()
    store.load(lazy, lazy_files=True)
    block = lazy.datasets["/Higgs/Run2024-v1/AOD"].blocks["b0"]
    assert not block.files_loaded
    assert sorted(f.lfn for f in block.files) == sorted(f.lfn for f in inventory.datasets[
        "/Higgs/Run2024-v1/AOD"].blocks["b0"].files)
    assert lazy.checksum() == inventory.checksum()
    # a store whose file rows no longer add up to the block is caught on first access
    with store.engine.begin() as conn:
        conn.execute(update(files_table).where(files_table.c.lfn.like("%/1/0000.root")).values(size=1))
    lazy = Inventory()
    store.load(lazy, lazy_files=True)
    with pytest.raises(StoreError) as info:
        lazy.datasets["/Higgs/Run2024-v1/AOD"].blocks["b1"].files
    assert info.value.expected_size == 3003 and info.value.found_size == 2004
    # a full load checks every block the same way
    with pytest.raises(StoreError) as info:
        store.load(Inventory())
    assert info.value.block == "/Higgs/Run2024-v1/AOD#b1" and info.value.found_files == 3
    store.close()


def test_bad_urls_are_clear_errors(tmp_path):
    with pytest.raises(StoreError) as info:
        Store("nosuchdialect://x/y")
    assert "nosuchdialect" in info.value.url


def test_a_loaded_file_takes_at_most_200_bytes(tmp_path):
    """Resident bytes per File object after a load: object, packed state and its slot in the block's list."""
    store = Store(f"sqlite:///{tmp_path}/memory.db")
    inventory = Inventory()
    dataset, files_per_block, blocks = "/Memory/Run2024-v1/AODSIM", 100, 100
    changes = [Change("update", {"kind": "Dataset", "name": dataset})]
    for b in range(blocks):
        changes.append(Change("update", {"kind": "Block", "name": f"{b:08x}-blk", "dataset": dataset}))
        for f in range(files_per_block):
            lfn = f"/store/mc/Run2024/Memory/AODSIM/v1/{b:05d}/{b:08X}-{f:04X}-4E5F-6789-ABCDEF012345.root"
            changes.append(Change("update", {"kind": "File", "lfn": lfn, "block": f"{b:08x}-blk",
                                             "dataset": dataset, "size": 2_000_000_000 + f, "adler32": f"{f:08x}"}))
    store.apply_and_write(inventory, changes)
    gc.collect()
    tracemalloc.start()
    without_files = Inventory()
    store.load(without_files, lazy_files=True)
    lazy_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del without_files
    gc.collect()
    tracemalloc.start()
    with_files = Inventory()
    store.load(with_files)
    eager_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_file = (eager_bytes - lazy_bytes) / (blocks * files_per_block)
    assert with_files.summary()["files"] == blocks * files_per_block
    assert per_file <= 200, per_file
    store.close()


def test_the_change_log_numbers_changes_without_gaps_across_chunks(store):
    inventory = Inventory()
    batch = [Change("update", {"kind": "Site", "name": f"T3_S{i:04d}"}) for i in range(1200)]
    assert store.apply_and_write(inventory, batch) == 1200
    store.apply_and_write(inventory, [Change("delete", {"kind": "Site", "name": "T3_S0000"})])
    after = store.changes_since(700)
    assert [seq for seq, _, _ in after] == list(range(701, 1202))
    assert after[0][2].data["name"] == "T3_S0700" and after[-1][2].op == "delete"
    assert {batch_id for _, batch_id, _ in after} == {1, 2}
    store.prune_changes(keep=300)
    assert store.oldest_change() <= 1201 - 300 + 1
    assert [seq for seq, _, _ in store.changes_since(1000)] == list(range(1001, 1202))
