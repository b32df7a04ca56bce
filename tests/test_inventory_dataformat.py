"""The data format and the RAM image: identifiers, update/delete with cascades, partitions, serialization."""

from __future__ import annotations

import json
import sys

import pytest

from workbench.errors import InventoryError
from workbench.events import EventRecorder
from workbench.inventory import (
    Block,
    BlockReplica,
    Change,
    DataFormatError,
    Dataset,
    DatasetReplica,
    DatasetStatus,
    File,
    Group,
    Inventory,
    Partition,
    Site,
    SitePartition,
    StorageType,
    UnknownReferenceError,
    from_dict,
)
from workbench.inventory.dataformat import KINDS


def small_inventory(journal: list[Change] | None = None) -> Inventory:
    """Two sites, two groups, one dataset of two blocks with files, replicas at both sites."""
    inv = Inventory()
    if journal is not None:
        inv.add_sink(lambda change, writes: journal.append(change))
    inv.update(Site("T1_US_FNAL", host="fnal.gov", storage_type="mss",
                    filename_mapping={"root": [["/store/(.*)", r"root://cmsdcadisk.fnal.gov//dcache/\1"]]}))
    inv.update(Site("T2_CH_CERN", storage_type=StorageType.DISK))
    inv.update(Group("AnalysisOps"))
    inv.update(Group("DataOps", olevel="dataset"))
    inv.update(Dataset("/Higgs/Run2024-v1/AOD", status="valid", data_type="data", software_version="CMSSW_14_0_1"))
    dataset = Dataset("/Higgs/Run2024-v1/AOD")
    for b in range(2):
        block = Block(f"b{b}", dataset, size=3003, num_files=3)  # the totals of its three files
        inv.update(block)
        for f in range(3):
            inv.update(File(f"/store/data/Higgs/AOD/{b}/{f:04d}.root", block, size=1000 + f, adler32=f"{f:08x}"))
    for site, group in (("T1_US_FNAL", "DataOps"), ("T2_CH_CERN", "AnalysisOps")):
        inv.update(DatasetReplica(dataset, Site(site), group=Group(group)))
        for b in range(2):
            inv.update(BlockReplica(Block(f"b{b}", dataset), Site(site), group=Group(group),
                                    is_custodial=site.startswith("T1"), size=3003))
    return inv


def test_update_returns_the_inventory_object_also_when_nothing_changed():
    inv = Inventory()
    clone = Dataset("/A/B/AOD", status="production")
    linked = inv.update(clone)
    assert linked is inv.datasets["/A/B/AOD"] and linked is not clone
    recorded: list = []
    inv.add_sink(lambda change, writes: recorded.append(change))
    # as Dynamo's inventory.update: the inventory's object, so a second run links to it; no change is recorded
    assert inv.update(Dataset("/A/B/AOD", status="production")) is linked and recorded == []
    assert inv.update(Group(None)) is inv.groups[None] and recorded == []
    again = inv.update(Dataset("/A/B/AOD", status="valid"))
    assert again is linked and linked.status is DatasetStatus.VALID


def test_block_totals_are_declared_files_leave_them_and_stay_compact():
    inv = small_inventory()
    block = inv.datasets["/Higgs/Run2024-v1/AOD"].blocks["b0"]
    assert (block.num_files, block.size, len(block.files)) == (3, 3003, 3)
    file = block.find_file("/store/data/Higgs/AOD/0/0002.root")
    assert (file.size, file.adler32, file.md5) == (1002, "00000002", None)
    inv.update(File(file.lfn, Block("b0", Dataset("/Higgs/Run2024-v1/AOD")), size=5002, adler32="ffffffff",
                    md5="0123456789abcdef0123456789abcdef"))
    # one rule everywhere (Dynamo's): a block's totals are what its Block update declares
    assert (block.size, file.size, file.adler32, file.md5) == (3003, 5002, "ffffffff",
                                                                "0123456789abcdef0123456789abcdef")
    inv.delete(File(file.lfn, Block("b0", Dataset("/Higgs/Run2024-v1/AOD"))))
    assert (block.num_files, block.size, len(block.files)) == (3, 3003, 2)
    # a block declared with its totals, then its file: the totals stay as declared (not doubled)
    declared = inv.update(Block("b9", Dataset("/Higgs/Run2024-v1/AOD"), size=10, num_files=1))
    inv.update(File("/store/data/Higgs/AOD/9/0000.root", declared, size=10))
    assert (declared.num_files, declared.size, len(declared.files)) == (1, 10, 1)
    inv.update(Block("b9", Dataset("/Higgs/Run2024-v1/AOD"), size=12, num_files=2))
    assert (declared.num_files, declared.size, len(declared.files)) == (2, 12, 1)
    # object plus its packed bytes, for a 41-character base name: well under 200 bytes
    lfn = "/store/mc/Run3/X/AODSIM/v1/00000/0A1B2C3D-4E5F-6789-ABCD-EF0123456789.root"
    compact = File(lfn, block, size=2_500_000_000, adler32="89abcdef")
    assert compact.lfn == lfn and compact.size == 2_500_000_000
    assert sys.getsizeof(compact) + sys.getsizeof(compact._packed) <= 160


def test_delete_dataset_cascades_to_blocks_files_and_replicas():
    inv = small_inventory()
    fnal, cern = inv.sites["T1_US_FNAL"], inv.sites["T2_CH_CERN"]
    assert len(fnal.block_replicas) == 2 and len(cern.dataset_replicas) == 1
    removed = inv.delete(Dataset("/Higgs/Run2024-v1/AOD"))
    assert removed is not None and "/Higgs/Run2024-v1/AOD" not in inv.datasets
    assert not fnal.block_replicas and not cern.block_replicas
    assert not fnal.dataset_replicas and not cern.dataset_replicas
    assert inv.delete(Dataset("/Higgs/Run2024-v1/AOD")) is None


def test_delete_group_moves_its_replicas_to_the_null_group():
    inv = small_inventory()
    replicas = list(inv.sites["T2_CH_CERN"].block_replicas)
    inv.delete(Group("AnalysisOps"))
    assert "AnalysisOps" not in inv.groups
    assert all(r.group is inv.groups[None] for r in replicas)
    assert inv.sites["T2_CH_CERN"].dataset_replicas["/Higgs/Run2024-v1/AOD"].group.name is None
    assert all(r.group.name == "DataOps" for r in inv.sites["T1_US_FNAL"].block_replicas)


def test_delete_site_and_dataset_replica_cascade():
    inv = small_inventory()
    dataset = inv.datasets["/Higgs/Run2024-v1/AOD"]
    inv.delete(DatasetReplica(Dataset(dataset.name), Site("T2_CH_CERN")))
    assert set(dataset.replicas) == {"T1_US_FNAL"}
    assert all(set(b.replicas) == {"T1_US_FNAL"} for b in dataset.blocks.values())
    inv.delete(Site("T1_US_FNAL"))
    assert not dataset.replicas and all(not b.replicas for b in dataset.blocks.values())


def test_unknown_references_change_nothing():
    inv = small_inventory()
    before = inv.checksum()
    with pytest.raises(UnknownReferenceError) as info:
        inv.update(Block("b9", Dataset("/No/Such/AOD")))
    assert info.value.kind == "Dataset" and info.value.name == "/No/Such/AOD"
    with pytest.raises(UnknownReferenceError):
        inv.update(BlockReplica(Block("b0", Dataset("/Higgs/Run2024-v1/AOD")), Site("T3_Nowhere")))
    with pytest.raises(UnknownReferenceError) as info:
        inv.update(DatasetReplica(Dataset("/Higgs/Run2024-v1/AOD"), Site("T2_CH_CERN"), group=Group("Nobody")))
    assert info.value.kind == "Group"
    assert inv.checksum() == before


def test_partitions_by_condition_with_quota_and_occupancy():
    inv = small_inventory()
    inv.update(Partition("AnalysisOps", condition="group == AnalysisOps"))
    inv.update(Partition("Custodial", condition="custodial == true and dataset matches /Higgs/*"))
    inv.update(Partition("Physics", subpartitions=["AnalysisOps", "Custodial"]))
    cern, fnal = Site("T2_CH_CERN"), Site("T1_US_FNAL")
    ao = inv.update(SitePartition(cern, Partition("AnalysisOps"), quota=12012))
    assert ao.occupancy() == 6006 and ao.occupancy_fraction() == 0.5
    custodial_cern = inv.update(SitePartition(cern, Partition("Custodial"), quota=0))
    assert custodial_cern.occupancy() == 0 and custodial_cern.occupancy_fraction() == 0.0
    physics_fnal = inv.update(SitePartition(fnal, Partition("Physics")))
    assert physics_fnal.occupancy() == 6006 and physics_fnal.occupancy_fraction() is None
    inv.delete(Partition("AnalysisOps"))
    assert "AnalysisOps" not in inv.sites["T2_CH_CERN"].partitions
    with pytest.raises(DataFormatError) as info:
        Partition("Bad", condition="__import__('os') == 1")
    assert info.value.field == "condition"


def test_lfn_to_pfn_mapping():
    inv = small_inventory()
    fnal = inv.sites["T1_US_FNAL"]
    assert fnal.to_pfn("/store/data/x.root", "root") == "root://cmsdcadisk.fnal.gov//dcache/data/x.root"
    assert fnal.to_pfn("/other/x.root", "root") is None and fnal.to_pfn("/store/x", "gsiftp") is None
    with pytest.raises(DataFormatError):
        Site("T2_X", filename_mapping={"root": [["(unclosed", "x"]]})


def test_every_kind_round_trips_through_json():
    journal: list[Change] = []
    inv = small_inventory(journal)
    inv.update(Partition("All"))
    inv.update(SitePartition(Site("T2_CH_CERN"), Partition("All"), quota=10**12))
    seen = set()
    for obj in inv.objects():
        data = json.loads(json.dumps(obj.to_dict()))
        clone = from_dict(data)
        assert clone.to_dict() == data
        seen.add(data["kind"])
    assert seen == set(KINDS)
    # replaying the journal of applied changes, as a secondary server does, gives the same image
    rebuilt = Inventory()
    rebuilt.apply_all(Change.from_json(json.loads(json.dumps(change.to_json()))) for change in journal)
    assert rebuilt.checksum() == inv.checksum()


@pytest.mark.parametrize("data, field", [
    ({"kind": "Dataset"}, "name"),
    ({"kind": "Dataset", "name": "/A/B/C", "status": "bogus"}, "status"),
    ({"kind": "Block", "name": "b", "dataset": "/A/B/C", "size": -1}, "size"),
    ({"kind": "File", "lfn": "/x", "block": "b", "dataset": "/d", "adler32": "xyz"}, "adler32"),
    ({"kind": "Dataset", "name": "/A/B/C", "evil": 1}, "evil"),
    ({"kind": "Nothing"}, "kind"),
    ({"kind": "BlockReplica", "dataset": "/d", "block": "b", "site": "S", "is_custodial": "yes"}, "is_custodial"),
])
def test_malformed_dicts_are_refused_with_fields(data, field):
    with pytest.raises(DataFormatError) as info:
        from_dict(data)
    assert info.value.field == field


def test_listeners_get_applied_changes_in_order():
    inv = Inventory()
    recorder = EventRecorder()
    inv.add_listener(recorder)
    inv.update(Dataset("/A/B/C"))
    inv.update(Dataset("/A/B/C"))  # no change: no event
    inv.delete(Dataset("/A/B/C"))
    recorder.wait_for("object_deleted")
    assert [(e.kind, e.args[0]["name"]) for e in recorder.events] == [
        ("object_updated", "/A/B/C"), ("object_deleted", "/A/B/C")]
    inv.close()


def test_sinks_see_changes_with_their_row_writes():
    inv = small_inventory()
    seen: list[tuple[str, str, list[str]]] = []
    inv.add_sink(lambda change, writes: seen.append(
        (change.op, change.data["kind"], [f"{op}:{obj.KIND}" for op, obj in writes])))
    block = Block("b0", Dataset("/Higgs/Run2024-v1/AOD"))
    inv.update(File("/store/new.root", block, size=5))
    inv.delete(Group("DataOps"))
    assert seen == [("update", "File", ["add:File"]), ("delete", "Group", ["drop:Group"])]
    with pytest.raises(InventoryError):
        inv.delete(Group(None))
