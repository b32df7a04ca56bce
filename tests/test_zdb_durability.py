"""zdb durability: acknowledged writes survive kill -9, torn records are dropped, checkpoints prune."""

from __future__ import annotations

import logging
import threading

import pytest

from workbench.testing.zdb import kill9_while_writing
from workbench.zdb import StorageManager, ZdbTimeout, client
from workbench.zdb.archive import Archive, ArchiveError, parse_record


@pytest.mark.parametrize("fsync", ["never", "batch", "always"])
def test_every_acknowledged_write_survives_kill_9(tmp_path, fsync):
    acknowledged, stored = kill9_while_writing(tmp_path, fsync, lambda db, n: db["w"].append(n), writers=4,
                                               acknowledged_before_kill=400)
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged writes lost"
    assert len(stored) == len(set(stored))  # nothing applied twice


def test_torn_last_record_is_dropped_with_a_warning(tmp_path, caplog, connect):
    archive = tmp_path / "archive"
    server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    db, _ = connect(server.address)
    for n in range(5):
        db[f"k{n}"] = n
    server.stop()
    journal = sorted(archive.glob("journal-*.log"))[-1]
    with open(journal, "ab") as stream:
        stream.write(b'0badc0de {"seq": 6, "kind": "write", "ops": [[[], "__setitem__", ["torn"')
    with caplog.at_level(logging.WARNING, logger="workbench.zdb.archive"):
        server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    try:
        assert any("torn or corrupt" in r.getMessage() for r in caplog.records)
        db, _ = connect(server.address)
        assert db._run() == {f"k{n}": n for n in range(5)}
        db["after"] = True  # the journal goes on after the dropped record
        assert server.seq == 6
        assert list(archive.glob("journal-*.corrupt-*"))  # the damaged bytes are kept for inspection
    finally:
        server.stop()


def test_corrupt_checksum_in_the_middle_stops_replay_there(tmp_path, connect):
    archive = tmp_path / "archive"
    server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    db, _ = connect(server.address)
    for n in range(4):
        db[f"k{n}"] = n
    server.stop()
    journal = sorted(archive.glob("journal-*.log"))[-1]
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"k2"', b'"K2"')  # same length, wrong checksum
    journal.write_bytes(b"".join(lines))
    server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    try:
        db, _ = connect(server.address)
        assert db._run() == {"k0": 0, "k1": 1}
    finally:
        server.stop()


def test_save_checkpoints_prunes_and_recovers_with_history(tmp_path, connect):
    archive = tmp_path / "archive"
    server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    db, connection = connect(server.address)
    db["l"] = list(range(100))
    db["l"].append(100)
    result = db.save()
    assert result["started"] and result["seq"] == 2
    db["after"] = "save"
    db["l"].pop(0)
    deadline = threading.Event()
    while connection.status()["snapshot_seq"] != 2:
        deadline.wait(0.02)
    assert (archive / "snapshot-000000000002.json").exists()
    journals = sorted(p.name for p in archive.glob("journal-*.log"))
    assert journals == ["journal-000000000003.log"]  # segments the snapshot covers are gone
    server.stop()
    server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    try:
        db, _ = connect(server.address)
        assert db["l"]._run() == list(range(1, 101)) and db["after"]._run() == "save"
        db.undo()  # history survives the restart: undo the pop(0)...
        assert db["l"][0]._run() == 0
        db.undo()  # ...and the write before it
        assert "after" not in db
        db.undo()  # ...and across the snapshot
        assert len(db["l"]) == 100
    finally:
        server.stop()


def test_second_server_on_the_same_archive_is_refused(sm, tmp_path):
    from workbench.zdb.archive import ArchiveError

    with pytest.raises(ArchiveError, match="in use"):
        StorageManager(sm.archive.path, bind="tcp://127.0.0.1:0").start()


def test_bad_fsync_mode_is_refused(tmp_path):
    from workbench.zdb.archive import ArchiveError

    with pytest.raises(ArchiveError, match="fsync"):
        Archive(tmp_path, fsync="sometimes")


def test_servers_start_and_stop_cleanly_many_times(tmp_path):
    # stop() races the server loop noticing it: neither order may raise or hang.
    for n in range(60):
        server = StorageManager(tmp_path / f"a{n % 3}", bind="tcp://127.0.0.1:0").start()
        server.stop()
        assert server.wait(5)


def _record(seq: int, key: str = "k", value: object = 0) -> dict:
    return {"seq": seq, "kind": "write", "ops": [[[], "__setitem__", [key, value], {}]]}


def test_failed_append_is_refused_cut_back_to_the_last_record_and_appends_resume(tmp_path):
    import errno

    from workbench.testing.adversarial import fill_disk, small_tmpfs
    from workbench.zdb.archive import JournalError

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        archive = Archive(disk / "archive", fsync="never")
        archive.open()
        seq = 0
        for _ in range(5):
            seq += 1
            archive.append(_record(seq))
        filler = fill_disk(disk)
        # Records bigger than what is left: whatever part of one reached the file is cut again.
        refused = 0
        for _ in range(20):
            try:
                archive.append(_record(seq + 1, value="v" * 5000))
            except JournalError as exc:
                assert exc.fields["errno"] == errno.ENOSPC and exc.fields["reason"]
                refused += 1
            else:
                seq += 1
        assert refused >= 19
        journal = sorted((disk / "archive").glob("journal-*.log"))[-1]
        lines = journal.read_bytes().splitlines(keepends=True)
        assert len(lines) == seq and all(parse_record(line) for line in lines)
        assert archive.journal_error is None and archive.refused == refused
        filler.unlink()
        for _ in range(10):
            seq += 1
            archive.append(_record(seq, value="v" * 5000))
        archive.close()
        recovered = Archive(disk / "archive").open()
        assert [r["seq"] for r in recovered.records] == list(range(1, seq + 1))
        assert recovered.dropped == 0


def test_torn_tail_of_an_earlier_segment_does_not_hide_the_segments_after_it(tmp_path):
    from workbench.zdb.protocol import encode
    import zlib

    def line(record: dict) -> bytes:
        body = encode(record)
        return b"%08x " % zlib.crc32(body) + body + b"\n"

    directory = tmp_path / "archive"
    directory.mkdir()
    # Segment 1 ends in a torn record 3 that was refused; segment 3 carries on from seq 3.
    (directory / "journal-000000000001.log").write_bytes(line(_record(1)) + line(_record(2)) + line(_record(3))[:20])
    (directory / "journal-000000000003.log").write_bytes(line(_record(3, "x")) + line(_record(4, "y")))
    archive = Archive(directory)
    recovered = archive.open()
    try:
        assert [r["seq"] for r in recovered.records] == [1, 2, 3, 4]
        assert recovered.records[2]["ops"][0][2] == ["x", 0]
        assert recovered.dropped == 1  # the torn bytes, kept aside
        assert (directory / "journal-000000000003.log").exists()
    finally:
        archive.close()


def test_segment_rotation_without_a_descriptor_keeps_the_journal_open(tmp_path):
    import errno
    import os
    import resource

    archive = Archive(tmp_path / "archive", fsync="never")
    archive.open()
    archive.append(_record(1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor number
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        with pytest.raises(ArchiveError) as caught:
            archive.checkpoint({"format": 1, "seq": 1, "root": {"k": 0}, "history": {}}, 1)
        assert caught.value.fields["errno"] == errno.EMFILE
        archive.append(_record(2))  # the segment in use is still open
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert archive.checkpoint({"format": 1, "seq": 2, "root": {"k": 0}, "history": {}}, 2)
    archive.poll_checkpoint(wait=True)
    archive.append(_record(3))
    archive.close()
    recovered = Archive(tmp_path / "archive").open()
    assert recovered.seq == 2 and [r["seq"] for r in recovered.records] == [3]


def test_a_blob_upload_holds_no_descriptor_between_chunks(tmp_path):
    import os

    archive = Archive(tmp_path / "archive")
    archive.open()
    try:
        before = len(os.listdir("/proc/self/fd"))
        uploads = [archive.new_upload() for _ in range(20)]
        for upload in uploads:
            upload.write(b"a" * 100)
            upload.write(b"b" * 100)
        assert len(os.listdir("/proc/self/fd")) == before
        blob = uploads[0].finish("x.bin")
        assert archive.blob_path(blob.hash).read_bytes() == b"a" * 100 + b"b" * 100
        for upload in uploads[1:]:
            upload.abort()
        assert not list((tmp_path / "archive" / "blobs" / "tmp").iterdir())
    finally:
        archive.close()
