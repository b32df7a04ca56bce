"""CommitKeeper against a real ZooKeeper: guarded writes, live mirrors through restarts and session
expiry, publishing storage, and the leader-elected auto-publisher healing out-of-band edits."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from workbench.commits.keeper import CommitKeeper, decode_znode, encode_znode, keeper_publishing
from workbench.commits.model import Commit, CommitConflict, InvalidCommit
from workbench.commits.storage import MemoryCommitStorage, SqlCommitStorage
from workbench.errors import CommitsError
from workbench.events import EventRecorder
from workbench.testing.commits import expire_session, own_zookeeper, quick_reconnecting_client, \
    wait_until  # noqa: F401

PATH = "/rainer/diary"


def commit(key="foo", version=1, value=None, author="gian"):
    return Commit.from_value(key, version, {"v": version} if value is None else value, author=author)


@pytest.fixture
def keeper(zookeeper_client):
    return CommitKeeper(zookeeper_client, PATH)


@pytest.fixture
def second_client(zookeeper_server, zookeeper_chroot):
    """Another session on the same chroot: 'another server of the cluster', or an operator."""
    with zookeeper_server.client(zookeeper_chroot) as client:
        yield client


def versions(mapping):
    return {key: c.version for key, c in mapping.items()}


# -- on-demand access and guarded writes -------------------------------------------------------------
def test_save_get_keys_heads(keeper):
    assert keeper.get("foo") is None and keeper.keys() == [] and keeper.heads() == {}
    assert keeper.save(commit("foo", 1)) is True
    assert keeper.save(commit("foo", 2)) is True
    assert keeper.save(commit("bar", 5)) is True  # the keeper alone does not insist on +1
    assert keeper.get("foo").version == 2 and keeper.get("foo").value == {"v": 2}
    assert keeper.keys() == ["bar", "foo"]
    assert versions(keeper.heads()) == {"bar": 5, "foo": 2}


def test_older_and_equal_versions_are_refused(keeper):
    keeper.save(commit("foo", 3, value="three"))
    assert keeper.save(commit("foo", 2)) is False
    assert keeper.save(commit("foo", 3, value="other")) is False
    assert keeper.get("foo").value == "three"


def test_writes_without_a_read_still_see_other_writers(keeper, second_client):
    other = CommitKeeper(second_client, PATH)
    keeper.save(commit("foo", 1))
    other.save(commit("foo", 5))
    assert keeper.save(commit("foo", 2)) is False  # its remembered znode version is stale now
    assert keeper.get("foo").version == 5
    assert keeper.save(commit("foo", 6)) is True
    second_client.delete(keeper.node_path("foo"))  # out of band
    assert keeper.save(commit("foo", 7)) is True
    assert other.get("foo").version == 7
    second_client.set(keeper.node_path("foo"), b"garbage")
    assert keeper.save(commit("foo", 8)) is True and other.get("foo").version == 8


def test_tombstones_delete_the_znode(keeper, zookeeper_client):
    keeper.save(commit("foo", 1))
    assert keeper.save(Commit.tombstone("foo", 2, "gian")) is True
    assert zookeeper_client.exists(keeper.node_path("foo")) is None
    assert keeper.get("foo") is None and keeper.keys() == []
    assert keeper.save(Commit.tombstone("never", 1, "gian")) is False


def test_corrupt_znodes_are_ignored_on_read_and_overwritten(keeper, zookeeper_client):
    keeper.save(commit("foo", 4))
    keeper.save(commit("bar", 1))
    zookeeper_client.set(keeper.node_path("foo"), b"\x00 not a commit")
    assert keeper.get("foo") is None
    assert versions(keeper.heads()) == {"bar": 1}
    assert keeper.save(commit("foo", 2)) is True  # any version replaces garbage
    assert keeper.get("foo").version == 2


def test_unicode_and_odd_keys_map_to_znode_names_and_back(keeper, zookeeper_client):
    keys = ["ключ 日本", "100%", "a.b", "?&=#"]
    for key in keys:
        keeper.save(commit(key, 1))
    assert keeper.keys() == sorted(keys)
    assert sorted(zookeeper_client.get_children(PATH + "/data")) == sorted(keys)  # raw names, as Rainer's
    with pytest.raises(InvalidCommit):
        keeper.get("a/b")


def test_concurrent_publishers_never_regress_a_key(keeper, second_client):
    other = CommitKeeper(second_client, PATH)
    order = list(range(1, 31))
    random.Random(7).shuffle(order)

    def publish(version):
        (keeper if version % 2 else other).save(commit("foo", version))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(publish, order))
    assert keeper.get("foo").version == 30


def test_znode_format_rejects_garbage_and_tombstones():
    original = Commit.from_bytes("foo", 2, b'{ "v" : 2 }  ', "gian", "why")
    assert decode_znode(encode_znode(original)) == original
    for garbage in (b"", b"{}", b'{"key":"foo"}', b"\xff", b"[1,2]"):
        with pytest.raises(InvalidCommit):
            decode_znode(garbage)


def test_bad_paths_are_refused(zookeeper_client):
    for path in ("relative", "/", "/trailing/"):
        with pytest.raises(CommitsError):
            CommitKeeper(zookeeper_client, path)


# -- mirrors -----------------------------------------------------------------------------------------
def test_mirror_is_complete_at_once_and_follows_changes(keeper, second_client):
    for i in range(5):
        keeper.save(commit(f"k{i}", i + 1))
    operator = CommitKeeper(second_client, PATH)
    with keeper.mirror() as mirror:
        assert versions(mirror) == {f"k{i}": i + 1 for i in range(5)}  # no waiting needed
        recorder = EventRecorder()
        mirror.add_listener(recorder)
        recorder.wait_for("commit_updated", count=5)  # the current state, replayed to the new listener

        operator.save(commit("k0", 2))
        mirror.wait_for("k0", 2)
        operator.save(commit("new", 1, value="fresh"))
        assert mirror.wait_for("new", 1)["new"].value == "fresh"
        operator.save(Commit.tombstone("k1", 3, "gian"))
        mirror.wait_for("k1", absent=True)

        assert recorder.wait_for("commit_removed").args[0] == "k1"
        assert recorder.wait_for("commit_updated", lambda e: e.args[0].key == "new").args[0].version == 1
        assert versions(mirror) == {"k0": 2, "k2": 3, "k3": 4, "k4": 5, "new": 1}
        snapshot = mirror.value
        operator.save(commit("k2", 4))
        mirror.wait_for("k2", 4)
        assert snapshot["k2"].version == 3  # an old snapshot never changes under its reader


def test_mirror_drops_corrupt_znodes_and_takes_them_back_when_repaired(keeper, second_client):
    keeper.save(commit("foo", 1))
    with keeper.mirror() as mirror:
        second_client.set(keeper.node_path("foo"), b"garbage")
        mirror.wait_for("foo", absent=True)
        keeper.save(commit("foo", 2))
        mirror.wait_for("foo", 2)


def test_mirror_survives_the_whole_path_being_deleted(keeper, second_client):
    keeper.save(commit("foo", 1))
    with keeper.mirror() as mirror:
        second_client.delete(PATH, recursive=True)
        mirror.wait_for("foo", absent=True)
        CommitKeeper(second_client, PATH).save(commit("bar", 1))
        mirror.wait_for("bar", 1)


def test_mirror_is_correct_after_session_expiry_with_changes_in_between(zookeeper_server, zookeeper_chroot,
                                                                        second_client):
    operator = CommitKeeper(second_client, PATH)
    operator.save(commit("stays", 1))
    operator.save(commit("goes", 1))
    with zookeeper_server.client(zookeeper_chroot) as client:
        mirror = CommitKeeper(client, PATH).mirror()
        try:
            resyncs = mirror.resyncs
            client_lost = threading.Event()
            client.add_listener(lambda state: client_lost.set() if state == "LOST" else None)
            # change things while the mirror's session dies: those notifications go nowhere
            changer = threading.Thread(target=lambda: (client_lost.wait(15), operator.save(commit("stays", 2)),
                                                       operator.save(Commit.tombstone("goes", 2, "gian")),
                                                       operator.save(commit("arrives", 1))))
            changer.start()
            expire_session(client)
            changer.join(20)
            mirror.wait_for("arrives", 1, timeout=20)
            mirror.wait_for("goes", absent=True)
            assert versions(mirror.wait_for("stays", 2)) == {"stays": 2, "arrives": 1}
            assert mirror.resyncs > resyncs
            # and it keeps following with the new session's watches
            operator.save(commit("stays", 3))
            mirror.wait_for("stays", 3)
        finally:
            mirror.close()


def test_mirror_is_correct_after_a_zookeeper_restart(own_zookeeper):
    with quick_reconnecting_client(own_zookeeper.hosts) as client, \
            quick_reconnecting_client(own_zookeeper.hosts) as operator_client:
        CommitKeeper(client, PATH).save(commit("foo", 1))
        mirror = CommitKeeper(client, PATH).mirror()
        try:
            own_zookeeper.restart(down_seconds=1.0)
            operator = CommitKeeper(operator_client, PATH)
            wait_until(lambda: operator_client.connected, timeout=45, what="operator reconnected")
            operator.save(commit("foo", 2))
            operator.save(commit("after", 1))
            mirror.wait_for("foo", 2, timeout=30)
            assert versions(mirror.wait_for("after", 1, timeout=30)) == {"foo": 2, "after": 1}
            operator.save(commit("after", 2))
            mirror.wait_for("after", 2)
        finally:
            mirror.close()


# -- publishing storage ---------------------------------------------------------------------------------
def test_keeper_publishing_saves_sql_first_then_zookeeper(keeper):
    underlying = SqlCommitStorage().start()
    storage = keeper_publishing(underlying, keeper)
    published = []
    underlying.add_post_save_hook(lambda c: published.append(keeper.get(c.key)))
    storage.save(commit("foo", 1))
    assert published == [None]  # when SQL had it, ZooKeeper did not yet
    assert keeper.get("foo").version == 1 and underlying.get("foo").version == 1
    with pytest.raises(CommitConflict):
        storage.save(commit("foo", 1, value="clobber"))
    assert keeper.get("foo").value == {"v": 1}
    storage.save(Commit.tombstone("foo", 2, "gian"))
    assert keeper.get("foo") is None and storage.get("foo").empty
    assert [c.version for c in storage.history("foo")] == [1, 2]
    storage.close()


def test_the_system_of_records_commit_saved_event_comes_after_the_publish(keeper, tmp_path):
    underlying = SqlCommitStorage(f"sqlite:///{tmp_path / 'c.db'}").start()
    storage = keeper_publishing(underlying, keeper)
    seen_in_zookeeper = []
    underlying.add_listener(lambda event: seen_in_zookeeper.append(
        (event.args[0].version, getattr(keeper.get(event.args[0].key), "version", None)))
        if event.kind == "commit_saved" else None)
    recorder = EventRecorder()
    underlying.add_listener(recorder)
    storage.save(commit("foo", 1))
    storage.save(commit("foo", 2))
    recorder.wait_for("commit_saved", count=2)
    # each event is emitted once ZooKeeper has its version: a listener reading the keeper never
    # finds ZooKeeper behind the event it is handling
    assert [version for version, _ in seen_in_zookeeper] == [1, 2]
    assert all(published is not None and published >= version for version, published in seen_in_zookeeper)
    storage.close()


def test_saves_go_on_while_zookeeper_is_down_and_are_published_after(own_zookeeper):
    with quick_reconnecting_client(own_zookeeper.hosts) as client:
        keeper = CommitKeeper(client, PATH)
        underlying = SqlCommitStorage().start()
        storage = keeper_publishing(underlying, keeper)
        storage.save(commit("foo", 1))
        with keeper.auto_publisher(underlying, period=0.3, fuzz=0.1) as publisher:
            own_zookeeper.stop()
            wait_until(lambda: not client.connected, what="client disconnected")
            began = time.monotonic()
            storage.save(commit("foo", 2))  # does not wait for ZooKeeper
            assert time.monotonic() - began < 2.0
            assert underlying.get("foo").version == 2
            own_zookeeper.start()
            wait_until(lambda: client.connected, timeout=45, what="client reconnected")
            wait_until(lambda: (keeper.get("foo") or commit("foo", 1)).version == 2, timeout=20,
                       what="the save published by the auto-publisher")
            assert publisher.rounds >= 1
        storage.close()


# -- auto publisher -------------------------------------------------------------------------------------
def test_auto_publisher_heals_out_of_band_edits_within_a_period(keeper, second_client):
    storage = MemoryCommitStorage([commit("plain", 1), commit("plain", 2), commit("deleted", 1),
                                   commit("garbled", 1), commit("edited", 1), commit("bumped", 1),
                                   commit("retired", 1), Commit.tombstone("retired", 2, "gian")])
    for head in storage.heads().values():
        keeper.save(head)
    keeper.save(commit("retired", 1))  # a stale znode of a tombstoned key
    period = 0.5
    with keeper.auto_publisher(storage, period=period, fuzz=0.1) as publisher:
        wait_until(lambda: publisher.rounds >= 1, what="first round")
        assert keeper.get("retired") is None
        # an operator (or a bug) edits ZooKeeper behind the storage's back
        second_client.delete(keeper.node_path("deleted"))
        second_client.set(keeper.node_path("garbled"), b"{not json")
        second_client.set(keeper.node_path("edited"), encode_znode(commit("edited", 1, value="forged")))
        second_client.set(keeper.node_path("bumped"), encode_znode(commit("bumped", 9)))
        second_client.create(keeper.node_path("stray"), encode_znode(commit("stray", 1)))
        began = time.monotonic()
        # all but the garbled znode, which healing never touches (it holds nothing it can read)
        expected = {key: c for key, c in storage.heads_non_empty().items() if key != "garbled"}
        wait_until(lambda: keeper.heads() == expected, timeout=10, what="ZooKeeper equal to storage")
        assert time.monotonic() - began < 3 * (period + 0.1) + 1.0
        assert keeper.keys() == sorted([*expected, "garbled"])
        assert second_client.get(keeper.node_path("garbled"))[0] == b"{not json"


def test_auto_publisher_pushes_what_keeper_publishing_could_not(keeper):
    underlying = MemoryCommitStorage()
    underlying.save(commit("missed", 1))  # saved while the publish path was down
    with keeper.auto_publisher(underlying, period=0.3, fuzz=0.0):
        wait_until(lambda: keeper.get("missed") is not None, what="missed commit published")


def test_two_publishers_never_both_lead(zookeeper_server, zookeeper_chroot, keeper):
    storage = MemoryCommitStorage([commit("foo", 1)])
    with zookeeper_server.client(zookeeper_chroot) as client_a, zookeeper_server.client(zookeeper_chroot) as client_b:
        a = CommitKeeper(client_a, PATH).auto_publisher(storage, period=0.2, fuzz=0.05, identifier="a").start()
        b = CommitKeeper(client_b, PATH).auto_publisher(storage, period=0.2, fuzz=0.05, identifier="b").start()
        both = []
        leaders = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                state = (a.is_leader, b.is_leader)
                if all(state):
                    both.append(time.monotonic())
                if any(state) and (not leaders or leaders[-1] != state):
                    leaders.append(state)
                time.sleep(0.002)

        sampler = threading.Thread(target=watch)
        sampler.start()
        try:
            first = wait_until(lambda: a if a.is_leader else b if b.is_leader else None, what="a leader")
            second = b if first is a else a
            expire_session(first.keeper.zk)  # the leader's session dies: the other takes over
            wait_until(lambda: second.is_leader, what="takeover after session expiry")
            time.sleep(0.5)  # the expired one rejoins as a follower
            assert not first.is_leader
            second.close()
            wait_until(lambda: first.is_leader, what="takeover after close")
            # the sampler, polling on its own thread, has seen this last leader too before it stops
            now = (first is a, first is b)
            wait_until(lambda: leaders and leaders[-1] == now, what="the sampler to see the last leader")
            assert keeper.get("foo").version == 1
        finally:
            stop.set()
            sampler.join()
            a.close()
            b.close()
        assert both == []
        assert len(leaders) >= 3  # leadership really moved: first, second, first again


def test_auto_publisher_leads_and_heals_again_after_a_zookeeper_restart(own_zookeeper):
    storage = MemoryCommitStorage([commit("foo", 1), commit("bar", 1)])
    with quick_reconnecting_client(own_zookeeper.hosts) as client, \
            quick_reconnecting_client(own_zookeeper.hosts) as operator:
        keeper = CommitKeeper(client, PATH)
        recorder = EventRecorder()
        with keeper.auto_publisher(storage, period=0.3, fuzz=0.1) as publisher:
            publisher.add_listener(recorder)
            wait_until(lambda: versions(keeper.heads()) == {"foo": 1, "bar": 1}, what="first publication")
            own_zookeeper.restart(down_seconds=0.5)
            recorder.wait_for("leadership_lost", timeout=30)
            wait_until(lambda: client.connected and operator.connected, timeout=45, what="reconnected")
            wait_until(lambda: publisher.is_leader, timeout=30, what="leading again")
            operator.delete(keeper.node_path("foo"))
            storage.save(commit("bar", 2))
            wait_until(lambda: versions(CommitKeeper(operator, PATH).heads()) == {"foo": 1, "bar": 2},
                       timeout=20, what="healed after the restart")
