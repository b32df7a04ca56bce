"""zdb pipelines: many ops in one request, results in order, one journal append per batch, kill -9 safe."""

from __future__ import annotations

import pytest

from workbench.testing.zdb import kill9_while_writing
from workbench.zdb import UnstorableValueError, ZdbKeyError
from workbench.zdb.archive import parse_record


def test_queued_writes_reads_and_calls_run_in_one_request_in_order(sm, connect):
    db, conn = connect(sm.address)
    db["l"] = [1]
    requests_before = sm.stats.requests
    with db.pipeline() as p:
        p["d"] = {"name": "teas", "tags": []}
        p["d"]["tags"].append("green")
        p["l"] += [2, 3]
        p["d"]["name"]._run()
        p["l"]._run()
        p["d"]["tags"].count("green")
        p["d"].get("missing", "default")
    assert sm.stats.requests == requests_before + 1
    assert p.results == [None, None, None, "teas", [1, 2, 3], 1, "default"]
    assert db["d"]._run() == {"name": "teas", "tags": ["green"]}
    assert len(p) == 0


def test_execute_returns_results_and_empties_the_queue(sm, connect):
    db, conn = connect(sm.address)
    p = conn.pipeline()
    assert p.queue((), "__setitem__", ("x", 5)) is p
    p["x"]._run()
    assert len(p) == 2
    assert p.execute() == [None, 5]
    assert p.execute() == []


def test_an_error_does_not_stop_the_others_and_the_first_is_raised_after_all_ran(sm, connect):
    db, conn = connect(sm.address)
    db["d"] = {}
    p = db.pipeline()
    p["d"]["a"] = 1
    p["d"]["nope"]._run()
    p["d"]["b"] = 2
    p["d"].pop("also-missing")
    with pytest.raises(ZdbKeyError) as raised:
        p.execute()
    assert "nope" in str(raised.value)
    assert db["d"]._run() == {"a": 1, "b": 2}
    assert isinstance(p.results[1], KeyError) and isinstance(p.results[3], KeyError)


def test_without_raise_on_error_failures_take_their_places_in_the_results(sm, connect):
    db, conn = connect(sm.address)
    with db.pipeline(raise_on_error=False) as p:
        p["x"] = 1
        p["x"].append(2)  # an int has no append
        p["x"]._run()
    assert p.results[0] is None and p.results[2] == 1
    assert isinstance(p.results[1], TypeError)


def test_a_read_sees_the_writes_before_it_in_the_batch_and_each_write_is_one_undo_step(sm, connect):
    db, conn = connect(sm.address)
    with db.pipeline() as p:
        p["n"] = 1
        p["n"]._run()
        p["n"] = 2
        p["n"]._run()
    assert p.results == [None, 1, None, 2]
    db.undo()
    assert db["n"]._run() == 1


def test_a_block_left_by_an_exception_sends_nothing(sm, connect):
    db, conn = connect(sm.address)
    with pytest.raises(RuntimeError):
        with db.pipeline() as p:
            p["x"] = 1
            raise RuntimeError("changed my mind")
    assert "x" not in db


def test_an_unstorable_value_fails_where_it_is_queued(sm, connect):
    db, conn = connect(sm.address)
    p = db.pipeline()
    with pytest.raises(UnstorableValueError):
        p["x"] = (1, 2)
    assert len(p) == 0


def test_the_writes_of_a_batch_are_one_record_each_in_the_journal(sm, connect):
    db, conn = connect(sm.address)
    with db.pipeline() as p:
        for n in range(50):
            p[f"k{n}"] = n
    assert sm.seq == 50 and sm.stats.writes == 50
    journal = sorted(sm.archive.path.glob("journal-*.log"))[-1]
    records = [parse_record(line) for line in journal.read_bytes().splitlines(keepends=True)]
    assert [r["seq"] for r in records] == list(range(1, 51))
    assert records[-1]["ops"] == [[[], "__setitem__", ["k49", 49], {}]]


def test_a_quiesced_server_refuses_the_batch_writes_and_answers_its_reads(sm, connect):
    db, conn = connect(sm.address)
    db["x"] = 1
    conn.request("quiesce")
    try:
        with db.pipeline(raise_on_error=False) as p:
            p["x"]._run()
            p["y"] = 2
    finally:
        conn.request("unquiesce")
    assert p.results[0] == 1
    assert type(p.results[1]).__name__ == "QuiescedError"
    assert "y" not in db


def test_a_batch_through_a_replica_is_read_back_there(sm, te, connect):
    db, conn = connect(te.address)
    with db.pipeline() as p:
        p["r"] = [1]
        p["r"].append(2)
    assert db["r"]._run() == [1, 2]
    assert sm.document.root["r"] == [1, 2]


@pytest.mark.parametrize("fsync", ["never", "batch"])
def test_every_acknowledged_batch_is_entirely_present_after_kill_9(tmp_path, fsync):
    def write_batch(db, batch: int) -> None:
        with db.pipeline() as p:
            for item in range(20):
                p["w"].append([batch, item])

    acknowledged, stored = kill9_while_writing(tmp_path, fsync, write_batch, writers=2, acknowledged_before_kill=40)
    assert len(acknowledged) >= 40
    by_batch: dict[int, list[int]] = {}
    for batch, item in stored:
        by_batch.setdefault(batch, []).append(item)
    for batch in acknowledged:
        assert by_batch.get(batch) == list(range(20)), f"batch {batch} incomplete after restart"


def test_a_batch_the_journal_refuses_is_refused_whole_and_the_journal_cut_back(tmp_path):
    import errno

    from workbench.testing.adversarial import fill_disk, small_tmpfs
    from workbench.zdb.archive import Archive, JournalError
    from workbench.zdb.protocol import encode

    def body(seq: int, size: int) -> bytes:
        return encode({"seq": seq, "kind": "write", "ops": [[[], "__setitem__", [f"k{seq}", "v" * size], {}]]})

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        archive = Archive(disk / "archive", fsync="never")
        archive.open()
        archive.append_many([body(1, 10), body(2, 10)], 1)
        filler = fill_disk(disk)
        # Bigger than what is left: part of the batch may reach the file; all of it is cut again.
        with pytest.raises(JournalError) as refused:
            archive.append_many([body(seq, 4000) for seq in range(3, 13)], 3)
        assert refused.value.fields["errno"] == errno.ENOSPC and refused.value.fields["seq"] == 3
        assert archive.refused == 10
        journal = sorted((disk / "archive").glob("journal-*.log"))[-1]
        assert [parse_record(line)["seq"] for line in journal.read_bytes().splitlines(keepends=True)] == [1, 2]
        filler.unlink()
        archive.append_many([body(3, 10)], 3)
        archive.close()
        recovered = Archive(disk / "archive").open()
        assert [r["seq"] for r in recovered.records] == [1, 2, 3] and recovered.dropped == 0
