"""The zdb client cache: served from memory, invalidated by the change stream, never stale for this process."""

from __future__ import annotations

import time

import pytest

from workbench.zdb import CacheOptions, StorageManager, TransactionEngine


def _live(connection, timeout: float = 5.0) -> None:
    """Wait for the cache's first heartbeat (before it, reads go to the server)."""
    deadline = time.monotonic() + timeout
    while not connection.cache.live:
        assert time.monotonic() < deadline, "the cache never followed the stream"
        time.sleep(0.02)


def test_off_by_default(sm, connect):
    _, connection = connect(sm.address)
    assert connection.cache is None


def test_a_cached_read_sends_no_request(sm, connect):
    db, connection = connect(sm.address, cache=True)
    db["k"] = {"a": [1, 2]}
    _live(connection)
    assert db["k"]._run() == {"a": [1, 2]}  # a miss: read from the server, then kept
    before = sm.stats.requests
    for _ in range(50):
        assert db["k"]._run() == {"a": [1, 2]}
    assert sm.stats.requests == before
    assert connection.cache.stats.hits == 50
    # A copy comes out: changing the result changes nothing cached.
    value = db["k"]._run()
    value["a"].append(3)
    assert db["k"]._run() == {"a": [1, 2]}


def test_another_clients_write_is_seen_by_the_next_read(sm, connect):
    db_a, a = connect(sm.address, cache=True)
    db_b, _ = connect(sm.address)  # no cache: its acknowledged writes still count
    db_b["x"] = 0
    _live(a)
    for i in range(200):
        assert db_a["x"]._run() == i  # cached after the first read of each value
        db_b["x"] = i + 1
    assert a.cache.stats.invalidations >= 199
    # and between writes the cache answers
    db_a["x"]._run()
    before = sm.stats.requests
    assert db_a["x"]._run() == 200
    assert sm.stats.requests == before


def test_a_write_from_another_process_is_invalidated_by_the_stream(sm, connect, tmp_path):
    """A writer the process does not know of: the record on the stream drops the entry."""
    import subprocess
    import sys

    db, connection = connect(sm.address, cache=True)
    db["y"] = "old"
    _live(connection)
    assert db["y"]._run() == "old" and db["y"]._run() == "old"
    code = (f"from workbench.zdb import client\ndb, c = client({sm.address!r})\n"
            "db['y'] = 'new'\nc.close()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    connection.cache.sync(connection)  # ZEO's server_sync: one round trip, then wait for the stream
    assert db["y"]._run() == "new"


def test_own_write_is_visible_at_once(sm, connect):
    db, connection = connect(sm.address, cache=True)
    _live(connection)
    db["d"] = {"n": 1}
    assert db["d"]["n"]._run() == 1
    for n in range(2, 50):
        db["d"]["n"] = n
        assert db["d"]["n"]._run() == n
    db["d"].update({"n": 100})  # a write through a method call
    assert db["d"]["n"]._run() == 100


def test_own_pipelined_writes_are_visible_at_once(sm, connect):
    db, connection = connect(sm.address, cache=True)
    _live(connection)
    db["x"] = 0
    db["y"] = {"a": []}
    for n in range(1, 30):
        assert db["x"]._run() == n - 1 and len(db["y"]["a"]._run()) == n - 1  # cached before the batch
        with db.pipeline() as batch:
            batch["x"] = n
            batch["y"]["a"].append(n)
        assert db["x"]._run() == n and db["y"]["a"]._run()[-1] == n


def test_lock_holder_reads_through(sm, connect):
    db, connection = connect(sm.address, cache=True)
    db["z"] = 1
    _live(connection)
    db["z"]._run()
    with connection.locked():
        before = sm.stats.reads
        assert db["z"]._run() == 1
        assert db["z"]._run() == 1
        assert sm.stats.reads == before + 2
    before = sm.stats.reads
    assert db["z"]._run() == 1
    assert sm.stats.reads == before  # after unlock the cache answers again


@pytest.mark.parametrize("write", ["parent", "child"])
def test_prefix_invalidation_both_ways(sm, connect, write):
    db_a, a = connect(sm.address, cache=True)
    db_b, _ = connect(sm.address)
    db_b["a"] = {"b": {"c": 1}, "other": 5}
    _live(a)
    assert db_a["a"]._run() == {"b": {"c": 1}, "other": 5}
    assert db_a["a"]["b"]._run() == {"c": 1}
    assert db_a["a"]["other"]._run() == 5
    if write == "parent":
        db_b["a"] = {"b": {"c": 2}, "other": 5}
        assert db_a["a"]["b"]._run() == {"c": 2}
        assert db_a["a"]._run() == {"b": {"c": 2}, "other": 5}
    else:
        db_b["a"]["b"]["c"] = 3
        assert db_a["a"]._run() == {"b": {"c": 3}, "other": 5}
        assert db_a["a"]["b"]._run() == {"c": 3}
        before = sm.stats.reads
        assert db_a["a"]["other"]._run() == 5  # a sibling is not touched by the write
        assert sm.stats.reads == before


def test_list_items_are_invalidated_whole(sm, connect):
    db_a, a = connect(sm.address, cache=True)
    db_b, _ = connect(sm.address)
    db_b["l"] = [1, 2, 3]
    _live(a)
    assert db_a["l"][-1]._run() == 3
    db_b["l"][2] = 30  # the same item by another index
    assert db_a["l"][-1]._run() == 30
    db_b["l"].insert(0, 0)
    assert db_a["l"][-1]._run() == 30 and db_a["l"][0]._run() == 0


def test_the_cache_is_bounded(sm, connect):
    db, connection = connect(sm.address, cache=CacheOptions(entries=10, bytes=2000))
    for i in range(30):
        db[f"k{i}"] = i
    db["big"] = "x" * 500
    _live(connection)
    for i in range(30):
        assert db[f"k{i}"]._run() == i
    assert len(connection.cache) == 10
    before = sm.stats.reads
    assert db["k29"]._run() == 29  # the most recent are kept
    assert sm.stats.reads == before
    assert db["k0"]._run() == 0  # the least recently used went
    assert sm.stats.reads == before + 1
    for _ in range(4):
        db["big"]._run()
    assert connection.cache.size_bytes <= 2000
    db["huge"] = "x" * 5000
    db["huge"]._run()
    assert ("huge",) not in connection.cache._entries  # larger than the whole bound: never kept


def test_a_gap_in_the_stream_drops_the_cache(sm, connect):
    db, connection = connect(sm.address, cache=True)
    db["g"] = 1
    _live(connection)
    db["g"]._run()
    assert len(connection.cache) == 1
    drops = connection.cache.stats.drops
    # A record whose seq jumps, as after messages lost in a full queue.
    sm_seq = connection.cache.last_seq
    connection.cache._on_message(b'{"seq": %d, "kind": "write", "ops": []}' % (sm_seq + 5))
    assert len(connection.cache) == 0 and connection.cache.stats.drops == drops + 1


def test_silence_drops_the_cache(tmp_path, connect):
    server = StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0").start()
    try:
        db, connection = connect(server.address, cache=CacheOptions(max_silence=0.6))
        db["s"] = 1
        _live(connection)
        db["s"]._run()
        assert len(connection.cache) == 1
    finally:
        server.stop()  # no more heartbeats
    deadline = time.monotonic() + 5
    while connection.cache.live and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not connection.cache.live and len(connection.cache) == 0


def test_a_restarted_server_drops_the_cache(tmp_path, connect):
    archive = tmp_path / "r"
    server = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    address, publish = server.address, server.publish_address
    db, connection = connect(address, cache=True)
    db["r"] = "before"
    _live(connection)
    db["r"]._run()
    server.stop()
    # Changed behind the cache's back: a new server on the same archive and endpoints.
    server = StorageManager(archive, bind=address, publish_bind=publish).start()
    try:
        db2, other = connect(address)
        db2["r"] = "after"
        other.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and db["r"]._run() != "after":
            time.sleep(0.05)
        assert db["r"]._run() == "after"
        assert connection.cache.stats.drops >= 1
    finally:
        server.stop()


def test_a_transaction_engine_as_the_read_endpoint(sm, te, connect):
    db, connection = connect(sm.address, te.address, cache=True)
    db_b, _ = connect(sm.address)
    db["t"] = {"v": 1}
    _live(connection)
    assert db["t"]["v"]._run() == 1
    before = te.stats.reads
    assert db["t"]["v"]._run() == 1
    assert te.stats.reads == before
    for v in range(2, 30):
        db_b["t"]["v"] = v
        assert db["t"]["v"]._run() == v


def test_a_transaction_engine_as_the_only_endpoint(sm, te, connect):
    db, connection = connect(te.address, cache=True)
    db_b, _ = connect(te.address)
    db["t"] = 1
    _live(connection)
    assert db["t"]._run() == 1
    before = te.stats.requests
    assert db["t"]._run() == 1
    assert te.stats.requests == before
    db_b["t"] = 2
    assert db["t"]._run() == 2


def _served_from_memory(server, connect, **options) -> None:
    """A client of ``server`` with these credentials follows the stream and answers a read from memory."""
    try:
        db, connection = connect(server.address, cache=True, **options)
        db["p"] = 1
        _live(connection)  # the stream accepted the client's login or key
        db["p"]._run()
        before = server.stats.reads
        assert db["p"]._run() == 1 and server.stats.reads == before
    finally:
        server.stop()


def test_the_stream_takes_the_same_login(tmp_path, connect):
    server = StorageManager(tmp_path / "l", bind="tcp://127.0.0.1:0", users={"dba": "secret"}).start()
    _served_from_memory(server, connect, user="dba", password="secret")


def test_a_server_restarted_behind_us_is_followed_again(tmp_path, connect):
    """A new history on the same endpoints (lower seqs): the cache drops and then serves again."""
    server = StorageManager(tmp_path / "old", bind="tcp://127.0.0.1:0").start()
    address, publish = server.address, server.publish_address
    db, connection = connect(address, cache=True)
    for i in range(20):
        db["h"] = i
    _live(connection)
    assert db["h"]._run() == 19
    server.stop()
    server = StorageManager(tmp_path / "new", bind=address, publish_bind=publish).start()
    try:
        db2, other = connect(address)
        db2["h"] = "new"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (connection.cache.last_seq > server.seq or db["h"]._run() != "new"):
            time.sleep(0.05)
        assert db["h"]._run() == "new"
        # The acknowledgements of the old history (seq 20) are not waited for: the cache answers.
        before = server.stats.requests
        assert db["h"]._run() == "new"
        assert server.stats.requests == before
        assert connection.cache.stats.waits_expired == 0
    finally:
        server.stop()


def test_the_stream_takes_the_same_curve_key(tmp_path, connect):
    from workbench.zdb.transport import CurveKeys

    server_keys, allowed = CurveKeys.generate(), CurveKeys.generate()
    server = StorageManager(tmp_path / "c", bind="tcp://127.0.0.1:0", curve=server_keys,
                            allowed_clients=[allowed.public]).start()
    _served_from_memory(server, connect, server_key=server_keys.public, keys=allowed)


def test_a_login_the_stream_refuses_leaves_every_read_to_the_server(tmp_path, connect):
    """The cache subscribes with the login of the client's reads, nothing else: refused, it caches nothing."""
    server = StorageManager(tmp_path / "s", bind="tcp://127.0.0.1:0", users={"dba": "secret"}).start()
    replica = TransactionEngine(server.address, bind="tcp://127.0.0.1:0", users={"reader": "other"},
                                primary_user="dba", primary_password="secret").start()
    try:
        db, connection = connect(replica.address, user="reader", password="other", cache=True)
        db["q"] = 1
        time.sleep(1.5)  # three heartbeats a subscriber with the storage manager's login would have seen
        assert not connection.cache.live
        before = replica.stats.reads
        assert db["q"]._run() == 1 and db["q"]._run() == 1
        assert replica.stats.reads == before + 2 and len(connection.cache) == 0
    finally:
        replica.stop()
        server.stop()
