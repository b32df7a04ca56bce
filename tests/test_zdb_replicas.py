"""Transaction engines: follow the change stream, catch up after gaps and restarts, forward writes."""

from __future__ import annotations

import time

import pytest

from workbench.testing.zdb import ZdbReplicaProcess, ZdbServerProcess
from workbench.zdb import StorageManager, TransactionEngine, client


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_replica_starts_from_a_snapshot_and_follows_the_stream(sm, connect):
    db, _ = connect(sm.address)
    db["before"] = list(range(5))
    replica = TransactionEngine(sm.address, bind="tcp://127.0.0.1:0").start()
    try:
        assert replica.document.root == {"before": [0, 1, 2, 3, 4]}
        for n in range(200):
            db["before"].append(n)
        db.undo()
        wait_until(lambda: replica.seq == sm.seq)
        assert replica.document.root == sm.document.root
    finally:
        replica.stop()


def test_writes_sent_to_a_replica_are_forwarded_never_lost(sm, te, connect):
    db, _ = connect(te.address)  # the replica is this client's only endpoint
    db["x"] = 1
    db["l"] = []
    db["l"].append("forwarded")
    assert db["l"].pop() == "forwarded"
    db.undo()
    assert db["l"]._run() == ["forwarded"]  # read on the replica right after: already applied there
    assert sm.document.root == {"x": 1, "l": ["forwarded"]}
    assert te.status()["forwarded"] >= 4


def test_read_your_writes_on_a_replica(sm, te, connect):
    db, _ = connect(sm.address, te.address, read_your_writes=True)
    for n in range(50):
        db["n"] = n
        assert db["n"]._run() == n


def test_replica_catches_up_after_a_gap(sm, te, connect):
    db, _ = connect(sm.address)
    db["k"] = 0
    wait_until(lambda: te.seq == sm.seq)
    # Cut the replica off the stream while writes go on: it must notice the gap and sync.
    te.subscriber.setsockopt(__import__("zmq").UNSUBSCRIBE, b"")
    for n in range(1, 50):
        db["k"] = n
    te.subscriber.setsockopt(__import__("zmq").SUBSCRIBE, b"")
    db["k"] = 50
    wait_until(lambda: te.seq == sm.seq)
    assert te.document.root == {"k": 50}


def test_replica_catches_up_from_the_journal_when_memory_is_not_enough(tmp_path, connect, monkeypatch):
    from collections import deque

    server = StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0").start()
    server.recent = deque(maxlen=3)  # forces catch-up from the journal on disk
    replica = TransactionEngine(server.address, bind="tcp://127.0.0.1:0").start()
    try:
        db, _ = connect(server.address)
        replica.subscriber.setsockopt(__import__("zmq").UNSUBSCRIBE, b"")
        time.sleep(0.1)
        for n in range(20):
            db[f"k{n}"] = n
        replica.subscriber.setsockopt(__import__("zmq").SUBSCRIBE, b"")
        wait_until(lambda: replica.seq == server.seq)
        assert replica.document.root == server.document.root
    finally:
        replica.stop()
        server.stop()


def test_replica_follows_a_restarted_primary(tmp_path):
    primary = ZdbServerProcess(tmp_path / "sm", tmp_path / "archive").start()
    replica = ZdbReplicaProcess(tmp_path / "te", primary.uri).start()
    try:
        db, connection = client(primary.uri, replica.uri, timeout=5.0, read_your_writes=True)
        db["x"] = 1
        assert db["x"]._run() == 1
        primary.kill9()
        port = primary.port
        primary = ZdbServerProcess(tmp_path / "sm2", tmp_path / "archive")
        primary.port = port
        primary.start()
        db["x"] = 2  # written to the restarted primary...
        assert db["x"]._run() == 2  # ...and read back through the replica that followed it
        reader, reader_connection = client(replica.uri, timeout=5.0)
        wait_until(lambda: reader["x"]._run() == 2)
        reader_connection.close()
        connection.close()
    finally:
        replica.stop()
        primary.stop()


def test_a_restarted_replica_is_current_again(sm, connect):
    db, _ = connect(sm.address)
    replica = TransactionEngine(sm.address, bind="tcp://127.0.0.1:0").start()
    address = replica.address
    db["a"] = 1
    replica.stop()
    db["b"] = 2
    replica = TransactionEngine(sm.address, bind=address).start()
    try:
        reader, _ = connect(address)
        assert reader._run() == {"a": 1, "b": 2}
    finally:
        replica.stop()


def test_replica_refuses_to_start_without_a_primary():
    from workbench.errors import ZdbError
    from workbench.testing.process import free_port

    with pytest.raises(ZdbError, match="did not answer"):
        TransactionEngine(f"tcp://127.0.0.1:{free_port()}", bind="tcp://127.0.0.1:0", sync_timeout=0.5).start()
