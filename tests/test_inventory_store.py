"""The SQL store: full load, write-through, rollback of failed batches, lazy files, change log, memory."""

from __future__ import annotations

import gc
import logging
import tracemalloc

import pytest
from sqlalchemy import delete, func, insert, select, update

from workbench.inventory import Block, Change, Dataset, File, Inventory, Site
from workbench.inventory.store import (
    NotPrimaryError,
    Store,
    StoreError,
    block_replicas_table,
    blocks_table,
    datasets_table,
    files_table,
    sites_table,
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


def test_lazy_files_are_checked_against_the_block(tmp_path, caplog):
    store = Store(f"sqlite:///{tmp_path}/lazy.db")
    inventory, _ = filled(store)
    lazy = Inventory()
    store.load(lazy, lazy_files=True)
    block = lazy.datasets["/Higgs/Run2024-v1/AOD"].blocks["b0"]
    assert not block.files_loaded
    assert sorted(f.lfn for f in block.files) == sorted(f.lfn for f in inventory.datasets[
        "/Higgs/Run2024-v1/AOD"].blocks["b0"].files)
    assert lazy.checksum() == inventory.checksum()
    # a store whose file rows no longer add up to the block is reported on first access, and served
    with store.engine.begin() as conn:
        conn.execute(update(files_table).where(files_table.c.lfn.like("%/1/0000.root")).values(size=1))
    lazy = Inventory()
    store.load(lazy, lazy_files=True)
    with caplog.at_level(logging.WARNING, logger="workbench.inventory.store"):
        assert len(lazy.datasets["/Higgs/Run2024-v1/AOD"].blocks["b1"].files) == 3
    assert "/Higgs/Run2024-v1/AOD#b1" in caplog.text and "do not add up" in caplog.text
    # a full load reports every such block the same way, and still loads
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workbench.inventory.store"):
        store.load(Inventory())
    assert "1 block(s)" in caplog.text and "--repair" in caplog.text
    # check lists it; repair sets the totals to the files' sums, through the change log
    assert store.check() == [{"block": "/Higgs/Run2024-v1/AOD#b1", "dataset": "/Higgs/Run2024-v1/AOD", "name": "b1",
                              "num_files": 3, "size": 3003, "found_files": 3, "found_size": 2004}]
    seq = store.seq()
    assert [entry["block"] for entry in store.repair()] == ["/Higgs/Run2024-v1/AOD#b1"]
    assert store.check() == [] and store.seq() == seq + 1
    repaired = Inventory()
    store.load(repaired)
    assert repaired.datasets["/Higgs/Run2024-v1/AOD"].blocks["b1"].size == 2004
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
        changes.append(Change("update", {"kind": "Block", "name": f"{b:08x}-blk", "dataset": dataset,
                                         "num_files": files_per_block}))
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


def test_one_batch_that_adds_changes_and_removes_rows_is_stored_as_applied(store):
    inventory, _ = filled(store)
    name, higgs = "/Mixed/Run2025-v1/AOD", "/Higgs/Run2024-v1/AOD"
    batch = [Change("update", {"kind": "Dataset", "name": name, "status": "production"})]
    for b in range(3):
        batch.append(Change("update", {"kind": "Block", "name": f"b{b}", "dataset": name}))
        batch += [Change("update", {"kind": "File", "lfn": f"{name}/{b}/{f}.root", "block": f"b{b}", "dataset": name,
                                    "size": 10 + f}) for f in range(4)]
    batch += [
        # changed after it was added, in the same batch
        Change("update", {"kind": "Dataset", "name": name, "status": "valid"}),
        Change("update", {"kind": "File", "lfn": f"{name}/0/0.root", "block": "b0", "dataset": name, "size": 99}),
        # added, removed and added again
        Change("delete", {"kind": "Block", "name": "b1", "dataset": name}),
        Change("update", {"kind": "Block", "name": "b1", "dataset": name}),
        Change("update", {"kind": "File", "lfn": f"{name}/1/again.root", "block": "b1", "dataset": name, "size": 7}),
        # rows that were there before the batch: changed, one removed
        Change("update", {"kind": "Dataset", "name": higgs, "status": "deprecated"}),
        Change("update", {"kind": "File", "lfn": "/store/data/Higgs/AOD/0/0000.root", "block": "b0",
                          "dataset": higgs, "size": 5}),
        Change("delete", {"kind": "File", "lfn": "/store/data/Higgs/AOD/1/0001.root", "block": "b1",
                          "dataset": higgs}),
        Change("update", {"kind": "DatasetReplica", "dataset": name, "site": "T2_CH_CERN", "group": "DataOps"}),
        Change("update", {"kind": "BlockReplica", "block": "b2", "dataset": name, "site": "T2_CH_CERN",
                          "group": "DataOps", "size": 42}),
        Change("delete", {"kind": "Group", "name": "DataOps"}),
    ]
    assert store.apply_and_write(inventory, batch) == store.seq()
    loaded = Inventory()
    store.load(loaded)
    assert loaded.checksum() == inventory.checksum()
    block = loaded.datasets[name].blocks["b1"]
    assert [(f.lfn, f.size) for f in block.files] == [(f"{name}/1/again.root", 7)]
    # the totals are as declared (none for the new blocks, 3 files for Higgs's b1), whatever the files
    assert (loaded.datasets[name].blocks["b0"].size, loaded.datasets[higgs].blocks["b1"].num_files) == (0, 3)
    assert sum(f.size for f in loaded.datasets[name].blocks["b0"].files) == 99 + 11 + 12 + 13
    assert len(loaded.datasets[higgs].blocks["b1"].files) == 2
    assert loaded.datasets[name].replicas["T2_CH_CERN"].group.name is None


def test_rows_inserted_by_others_and_by_batches_do_not_collide(store):
    # a batch gives new rows their ids itself: the database's own numbering must stay usable
    inventory, _ = filled(store)
    with store.engine.begin() as conn:
        conn.execute(insert(datasets_table).values(name="/Outside/Tool/AOD", status="valid", data_type="data",
                                                   last_update=0, is_open=False))
    store.load(inventory)
    store.apply_and_write(inventory, [Change("update", {"kind": "Dataset", "name": "/After/Outside/AOD"}),
                                      Change("update", {"kind": "Block", "name": "b", "dataset": "/After/Outside/AOD"})])
    with store.engine.begin() as conn:
        conn.execute(insert(datasets_table).values(name="/Outside/Again/AOD", status="valid", data_type="data",
                                                   last_update=0, is_open=False))
        ids = conn.execute(select(datasets_table.c.id)).scalars().all()
    assert len(ids) == len(set(ids)) == 4
    loaded = Inventory()
    store.load(loaded)
    assert sorted(loaded.datasets) == ["/After/Outside/AOD", "/Higgs/Run2024-v1/AOD", "/Outside/Again/AOD",
                                       "/Outside/Tool/AOD"]


def test_a_changed_row_missing_from_the_store_fails_the_whole_batch(store):
    inventory, _ = filled(store)
    with store.engine.begin() as conn:  # behind the image's back
        conn.execute(delete(sites_table).where(sites_table.c.name == "T1_US_FNAL"))
    before = store.version()
    batch = [Change("update", {"kind": "Site", "name": f"T3_New{i}"}) for i in range(3)]
    batch += [Change("update", {"kind": "Site", "name": "T2_CH_CERN", "host": "cern.ch"}),
              Change("update", {"kind": "Site", "name": "T1_US_FNAL", "host": "elsewhere.gov"})]
    with pytest.raises(StoreError) as info:
        store.apply_and_write(inventory, batch)
    assert info.value.table == "inv_sites" and info.value.key == {"name": "T1_US_FNAL"}
    assert store.version() == before


def test_removals_that_wait_keep_their_order_with_additions(store):
    inventory, _ = filled(store)
    higgs = "/Higgs/Run2024-v1/AOD"

    def file(lfn: str, block: str, **fields) -> dict:
        return {"kind": "File", "lfn": lfn, "block": block, "dataset": higgs, **fields}

    batch = [
        # removed, then added again under the same name with other values
        Change("delete", file("/store/data/Higgs/AOD/0/0000.root", "b0")),
        Change("update", file("/store/data/Higgs/AOD/0/0000.root", "b0", size=77)),
        # added, then removed: never written
        Change("update", file("/store/data/Higgs/AOD/0/short.root", "b0", size=5)),
        Change("delete", file("/store/data/Higgs/AOD/0/short.root", "b0")),
        # changed, then removed
        Change("update", file("/store/data/Higgs/AOD/1/0000.root", "b1", size=6)),
        Change("delete", file("/store/data/Higgs/AOD/1/0000.root", "b1")),
        Change("delete", {"kind": "BlockReplica", "block": "b1", "dataset": higgs, "site": "T1_US_FNAL"}),
        Change("update", {"kind": "BlockReplica", "block": "b1", "dataset": higgs, "site": "T1_US_FNAL",
                          "group": "AnalysisOps", "size": 1}),
        Change("delete", {"kind": "BlockReplica", "block": "b0", "dataset": higgs, "site": "T2_CH_CERN"}),
    ]
    store.apply_and_write(inventory, batch)
    loaded = Inventory()
    store.load(loaded)
    assert loaded.checksum() == inventory.checksum()
    blocks = loaded.datasets[higgs].blocks
    assert sorted((f.lfn, f.size) for f in blocks["b0"].files) == [
        ("/store/data/Higgs/AOD/0/0000.root", 77), ("/store/data/Higgs/AOD/0/0001.root", 1001),
        ("/store/data/Higgs/AOD/0/0002.root", 1002)]
    assert sorted(f.lfn for f in blocks["b1"].files) == ["/store/data/Higgs/AOD/1/0001.root",
                                                          "/store/data/Higgs/AOD/1/0002.root"]
    assert (blocks["b1"].replicas["T1_US_FNAL"].group.name, sorted(blocks["b0"].replicas)) == (
        "AnalysisOps", ["T1_US_FNAL"])
    assert count(store, files_table) == 5 and count(store, block_replicas_table) == 3
