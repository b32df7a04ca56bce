"""CommitKeeper sharing one ZooKeeper path with Rainer's JVM CommitKeeper (gianm/rainer).

The znodes here are written and read by hand, as the Scala code does, never through our encoder:

* ``<zkPath>/data/<key>`` (the raw key as node name) holds ``Commit.serialize``: the header's byte
  length in decimal, ``\\n``, the header (``Jackson.bytes(meta.asMap)``), ``\\n``, the payload, ``\\n``.
  ``meta.asMap`` is a six-entry Scala ``Map``, so a ``HashMap`` whose iteration (and so Jackson's
  output) order is author, empty, key, version, mtime, comment; Jackson writes it compact, the
  mtime as Joda's ``DateTime.toString()`` and ``empty`` always.
* The auto-publisher is Curator's ``LeaderSelector`` at ``<zkPath>/election``: an
  ``InterProcessMutex`` whose contenders are protected ephemeral-sequential nodes
  ``_c_<uuid>-lock-<sequence>``, ranked by what follows the last ``lock-`` in each name.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest

from workbench.commits.keeper import CommitKeeper
from workbench.commits.model import YAML, Commit
from workbench.commits.storage import MemoryCommitStorage
from workbench.testing.commits import wait_until

PATH = "/rainer/diary"
DATA = PATH + "/data"
ELECTION = PATH + "/election"
PST = timezone(timedelta(hours=-8))

#: Commit.serialize of Commit("foo", 1, {"hey":"what"}, "gian", "rofl", 2014-02-11T14:01:28.839-08:00)
SCALA_FOO = (b'112\n{"author":"gian","empty":false,"key":"foo","version":1,'
             b'"mtime":"2014-02-11T14:01:28.839-08:00","comment":"rofl"}\n{"hey":"what"}\n')
#: a Curator protected lock node of LeaderSelector's mutex
CURATOR_NODE = re.compile(r"_c_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-lock-\d{10}")


def scala_bytes(key, version, payload, author="gian", comment="", mtime="2014-02-11T14:01:28.839-08:00",
                empty=False):
    """What Rainer's ``Commit.serialize`` writes (the strings here have nothing Jackson escapes)."""
    def text(value):
        return json.dumps(value, ensure_ascii=False)

    header = (f'{{"author":{text(author)},"empty":{"true" if empty else "false"},"key":{text(key)},'
              f'"version":{version},"mtime":{text(mtime)},"comment":{text(comment)}}}').encode("utf-8")
    return str(len(header)).encode("ascii") + b"\n" + header + b"\n" + (payload or b"") + b"\n"


def scala_parse(data):
    """Rainer's ``Commit.deserializeOrThrow``: (header as an ordered dict, raw header, payload)."""
    digits = data[:data.index(b"\n")]
    size = int(digits.decode("ascii"))
    header = data[len(digits) + 1:len(digits) + 1 + size]
    payload = data[len(digits) + 1 + size + 1:-1]
    # what Rainer skips without looking, checked here: the separators are there
    assert data[len(digits) + 1 + size:len(digits) + 2 + size] == b"\n" and data.endswith(b"\n")
    return json.loads(header.decode("utf-8")), header, payload


def curator_order(children):
    """Curator's LockInternals.getSortedChildren: by the text after the last "lock-" of each name."""
    def sequence(name):
        at = name.rfind("lock-")
        return name[at + len("lock-"):] if at >= 0 else name
    return sorted(children, key=sequence)


def commit(key, version, value=None, author="gian"):
    return Commit.from_value(key, version, {"v": version} if value is None else value, author=author)


@pytest.fixture
def keeper(zookeeper_client):
    return CommitKeeper(zookeeper_client, PATH)


# -- the znode format, both ways ---------------------------------------------------------------------
def test_we_read_znodes_as_the_scala_keeper_writes_them(keeper, zookeeper_client):
    assert scala_bytes("foo", 1, b'{"hey":"what"}', comment="rofl") == SCALA_FOO  # the helper is right
    zookeeper_client.create(f"{DATA}/foo", SCALA_FOO, makepath=True)
    zookeeper_client.create(f"{DATA}/ключ 日本", scala_bytes("ключ 日本", 4, b'"x"\n\n', "ян", "a\nb",
                                                          "2020-01-01T00:00:00.000Z"))
    zookeeper_client.create(f"{DATA}/gone", scala_bytes("gone", 2, None, empty=True))  # a tombstone, by hand

    foo = keeper.get("foo")
    assert (foo.key, foo.version, foo.author, foo.comment, foo.payload, foo.value) == \
        ("foo", 1, "gian", "rofl", b'{"hey":"what"}', {"hey": "what"})
    assert foo.mtime == datetime(2014, 2, 11, 14, 1, 28, 839000, PST) and not foo.empty
    odd = keeper.get("ключ 日本")
    assert (odd.version, odd.author, odd.comment, odd.payload) == (4, "ян", "a\nb", b'"x"\n\n')
    assert odd.mtime == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert keeper.get("gone") is None  # a tombstone is no head
    assert {key: c.version for key, c in keeper.heads().items()} == {"foo": 1, "ключ 日本": 4}

    with keeper.mirror() as mirror:
        assert mirror["foo"] == foo and mirror["ключ 日本"] == odd and "gone" not in mirror
        zookeeper_client.set(f"{DATA}/foo", scala_bytes("foo", 2, b"[2]", "sue", "bump"))
        assert mirror.wait_for("foo", 2)["foo"].value == [2]
        zookeeper_client.create(f"{DATA}/new", scala_bytes("new", 1, b'"n"'))
        assert mirror.wait_for("new", 1)["new"].author == "gian"
        zookeeper_client.delete(f"{DATA}/new")
        mirror.wait_for("new", absent=True)


def test_the_scala_keeper_reads_our_znodes(keeper, zookeeper_client):
    saved = Commit.from_bytes("foo", 1, b'{"hey":"what"}', "gian", "rofl",
                              mtime=datetime(2014, 2, 11, 14, 1, 28, 839000, PST))
    assert keeper.save(saved) is True
    data, _ = zookeeper_client.get(f"{DATA}/foo")
    assert data == SCALA_FOO  # byte for byte what Commit.serialize writes

    odd = Commit.from_bytes("ключ 日本", 3, b"a: 1  # why\n", "ян", "déjà", serialization=YAML,
                            mtime=datetime(2020, 1, 1, 12, 0, 0, 5000, timezone.utc))
    keeper.save(odd)
    data, _ = zookeeper_client.get(f"{DATA}/ключ 日本")  # the raw key is the node's name
    meta, header, payload = scala_parse(data)
    assert list(meta) == ["author", "empty", "key", "version", "mtime", "comment"]
    assert meta == {"author": "ян", "empty": False, "key": "ключ 日本", "version": 3,
                    "mtime": "2020-01-01T12:00:00.005Z", "comment": "déjà"}
    assert header == json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert payload == b"a: 1  # why\n"

    for key in ("100%", "?&=#", "a.b"):
        keeper.save(commit(key, 1))
    assert sorted(zookeeper_client.get_children(DATA)) == sorted(["foo", "ключ 日本", "100%", "?&=#", "a.b"])
    assert zookeeper_client.get_children(PATH) == ["data"]  # nothing else beside Rainer's data node

    # a tombstone removes the znode, as Rainer's save does
    assert keeper.save(Commit.tombstone("foo", 2, "gian")) is True
    assert zookeeper_client.exists(f"{DATA}/foo") is None


def test_header_strings_are_escaped_as_jackson_escapes_them(keeper, zookeeper_client):
    # Jackson: the short escapes for quote, backslash, \b \t \n \f \r; \u00XX in upper-case hex for
    # the other control characters; "/" and everything non-ASCII as they are (UTF-8)
    keeper.save(Commit.from_bytes("k", 1, b"{}", "gian", 'q"b\\ t\tn\nesc\x1b/é😀',
                                  mtime=datetime(2014, 2, 11, tzinfo=timezone.utc)))
    data, _ = zookeeper_client.get(f"{DATA}/k")
    assert b'"comment":"q\\"b\\\\ t\\tn\\nesc\\u001B/\xc3\xa9\xf0\x9f\x98\x80"}' in data
    assert keeper.get("k").comment == 'q"b\\ t\tn\nesc\x1b/é😀'


# -- healing leaves alone what it cannot read ----------------------------------------------------------
def test_healing_never_deletes_nor_overwrites_a_znode_it_cannot_parse(keeper, zookeeper_client):
    storage = MemoryCommitStorage([commit("foo", 1), commit("bar", 1)])
    garbage = {"foo": b"\x00 not a commit",  # a key the storage has
               "junk": b"not a commit either",  # a key it does not
               "mismatch": scala_bytes("other", 1, b"1"),  # Rainer's format, another key's header
               "torn": scala_bytes("torn", 1, b"{}")[:30]}  # cut short in its header
    for name, data in garbage.items():
        zookeeper_client.create(f"{DATA}/{name}", data, makepath=True)
    before = {name: zookeeper_client.get(f"{DATA}/{name}")[1].version for name in garbage}
    publisher = keeper.auto_publisher(storage)
    publisher.publish_now()
    publisher.publish_now()
    for name, data in garbage.items():
        now, stat = zookeeper_client.get(f"{DATA}/{name}")
        assert (now, stat.version) == (data, before[name]), name
    assert keeper.get("bar") == storage.get("bar")  # the rest healed
    assert keeper.get("foo") is None and set(keeper.heads()) == {"bar"}


def test_a_key_znode_with_children_does_not_stop_the_others_healing(keeper, zookeeper_client):
    storage = MemoryCommitStorage([commit("aaa", 1), Commit.tombstone("aaa", 2, "gian"), commit("mmm", 1),
                                   commit("zzz", 1), commit("zzz", 2)])
    zookeeper_client.create(f"{DATA}/aaa", scala_bytes("aaa", 1, b"{}"), makepath=True)  # tombstoned since
    zookeeper_client.create(f"{DATA}/aaa/child", b"someone's")
    zookeeper_client.create(f"{DATA}/bbb", scala_bytes("bbb", 1, b"{}"))  # the storage never had it
    zookeeper_client.create(f"{DATA}/bbb/child", b"someone else's")
    zookeeper_client.create(f"{DATA}/zzz", scala_bytes("zzz", 1, b"{}"))  # behind the storage
    publisher = keeper.auto_publisher(storage)
    publisher.publish_now()
    assert keeper.get("mmm") == storage.get("mmm") and keeper.get("zzz") == storage.get("zzz")
    for name in ("aaa", "bbb"):  # not deleted with what hangs below them
        assert zookeeper_client.get_children(f"{DATA}/{name}") == ["child"]


def test_forward_healing_keeps_a_jvm_rainers_commits_beside_ours(keeper, zookeeper_client):
    # A JVM Rainer on a database of its own shares the path: its keys and its newer versions are
    # not ours to delete or roll back; what we hold newer, or it lacks, is published.
    storage = MemoryCommitStorage([commit("ours", 1), commit("shared", 1), commit("shared", 2),
                                   commit("ahead", 1)])
    zookeeper_client.create(f"{DATA}/theirs", scala_bytes("theirs", 3, b'{"jvm":true}'), makepath=True)
    zookeeper_client.create(f"{DATA}/shared", scala_bytes("shared", 1, b"{}"))  # older than ours
    zookeeper_client.create(f"{DATA}/ahead", scala_bytes("ahead", 5, b'"jvm"'))  # newer than ours
    exact_copy = {name: zookeeper_client.get(f"{DATA}/{name}")[0] for name in ("theirs", "ahead")}
    publisher = keeper.auto_publisher(storage, heal="forward")
    assert publisher.publish_now() == 2  # "ours" created, "shared" brought to version 2
    assert publisher.publish_now() == 0
    assert keeper.get("ours") == storage.get("ours") and keeper.get("shared").version == 2
    for name, data in exact_copy.items():
        assert zookeeper_client.get(f"{DATA}/{name}")[0] == data, name
    # The default heals exactly: the storage is the system of record.
    keeper.auto_publisher(storage).publish_now()
    assert zookeeper_client.exists(f"{DATA}/theirs") is None and keeper.get("ahead").version == 1


def test_the_serve_command_takes_the_heal_mode():
    import argparse

    from workbench.commits.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["serve", "--storage", "sqlite://", "--zk-heal", "forward"])
    assert args.zk_heal == "forward"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--storage", "sqlite://", "--zk-heal", "sideways"])


def test_keys_zookeeper_cannot_name_stay_in_the_storage(keeper, zookeeper_client):
    # ZooKeeper refuses, as Java's UTF-16 sees them, surrogates (all of U+10000 and up), private use
    # and U+FFF0-U+FFFF in node names: a JVM Rainer cannot publish these keys either
    refused = ["\U0001f600", "a\ue000", "\ufff0"]
    storage = MemoryCommitStorage([commit(key, 1) for key in refused] + [commit("ok", 1)])
    for key in refused:
        assert keeper.save(commit(key, 1)) is False
    keeper.auto_publisher(storage).publish_now()
    assert keeper.keys() == ["ok"]
    with keeper.mirror() as mirror:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            mirror.wait_for(refused[0], 1, timeout=10)  # a server's read-your-writes wait: it never comes
        assert time.monotonic() - began < 1.0


# -- one election with Curator's LeaderSelector ------------------------------------------------------------
def test_only_one_publishes_beside_a_jvm_leader_selector(zookeeper_server, zookeeper_chroot, keeper,
                                                         zookeeper_client):
    storage = MemoryCommitStorage([commit("foo", 1)])
    both = []
    stop = threading.Event()
    with zookeeper_server.client(zookeeper_chroot) as jvm:
        # the JVM's LeaderSelector joined first: its mutex node, as Curator creates it
        jvm_node = jvm.create(f"{ELECTION}/_c_{uuid.uuid4()}-lock-", b"10.0.0.7", ephemeral=True, sequence=True,
                              makepath=True).rsplit("/", 1)[1]

        def jvm_leads():
            children = zookeeper_client.get_children(ELECTION)
            return bool(children) and curator_order(children)[0] == jvm_node

        with keeper.auto_publisher(storage, period=0.2, fuzz=0.0, identifier="workbench-1") as publisher:
            def sample():
                while not stop.is_set():
                    if publisher.is_leader and jvm_leads():
                        both.append(time.monotonic())
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                children = wait_until(lambda: len(zookeeper_client.get_children(ELECTION)) == 2
                                      and zookeeper_client.get_children(ELECTION), what="our contender")
                assert all(CURATOR_NODE.fullmatch(name) for name in children), children
                ours = next(name for name in children if name != jvm_node)
                assert zookeeper_client.get(f"{ELECTION}/{ours}")[0] == b"workbench-1"  # Curator's participant id
                time.sleep(1.0)  # five periods: a leader would have published by now
                assert not publisher.is_leader and publisher.rounds == 0
                assert zookeeper_client.exists(f"{DATA}/foo") is None

                jvm.delete(f"{ELECTION}/{jvm_node}")  # the JVM's selector closes
                wait_until(lambda: publisher.is_leader, what="our takeover")
                wait_until(lambda: keeper.get("foo") is not None, what="foo published")

                # a JVM joining now queues behind us, by Curator's own ranking
                jvm_node = jvm.create(f"{ELECTION}/_c_{uuid.uuid4()}-lock-", b"10.0.0.7", ephemeral=True,
                                      sequence=True).rsplit("/", 1)[1]
                assert curator_order(zookeeper_client.get_children(ELECTION))[0] == ours
                time.sleep(0.5)
                assert publisher.is_leader
            finally:
                stop.set()
                sampler.join()
    assert both == []


# -- the layout before this one ------------------------------------------------------------------------------
def legacy_bytes(key, version, payload, author="gian", comment="", mtime="2024-05-01T10:00:00.000Z"):
    """A znode of the earlier layout: ``<zkPath>/<URL-quoted key>`` holding metadata JSON + base64 payload."""
    return json.dumps({"author": author, "comment": comment, "key": key, "mtime": mtime, "version": version,
                       "payload_base64": base64.b64encode(payload).decode("ascii")},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_the_earlier_layout_is_migrated_once(keeper, zookeeper_client):
    legacy = {"foo": (2, b'{"a":1}'), "ключ 日本": (1, b'"k"'), "data": (1, b"[1]"), "stale": (1, b"1"),
              "\U0001f600": (1, b"2")}  # a key ZooKeeper refuses as a raw node name
    for key, (version, payload) in legacy.items():
        zookeeper_client.create(f"{PATH}/{quote(key, safe='')}", legacy_bytes(key, version, payload, comment="c"),
                                makepath=True)
    zookeeper_client.create(f"{PATH}/junk", b"whatever this is")
    newer = scala_bytes("stale", 3, b"3")  # already written in the new layout, and newer
    zookeeper_client.create(f"{DATA}/stale", newer)

    assert keeper.migrate_legacy_layout() == 3
    for key in ("foo", "ключ 日本", "data"):
        meta, _, payload = scala_parse(zookeeper_client.get(f"{DATA}/{key}")[0])
        assert (meta["key"], meta["version"], meta["comment"], meta["mtime"], payload) == \
            (key, legacy[key][0], "c", "2024-05-01T10:00:00.000Z", legacy[key][1])
    assert zookeeper_client.get(f"{DATA}/stale")[0] == newer  # never rolled back
    # the old nodes are gone, but what it cannot read and what it could not move
    assert sorted(zookeeper_client.get_children(PATH)) == sorted(["data", "junk", quote("\U0001f600", safe="")])
    assert zookeeper_client.get(f"{PATH}/junk")[0] == b"whatever this is"
    assert zookeeper_client.get(DATA)[0] == b""  # the old "data" key's node is Rainer's parent now
    assert keeper.migrate_legacy_layout() == 0  # once


def test_a_leading_publisher_migrates_the_earlier_layout(keeper, zookeeper_client):
    storage = MemoryCommitStorage([commit("foo", 1)])
    zookeeper_client.create(f"{PATH}/foo", legacy_bytes("foo", 1, storage.get("foo").payload), makepath=True)
    with keeper.mirror() as mirror, keeper.auto_publisher(storage, period=0.2, fuzz=0.0):
        assert mirror.wait_for("foo", 1)["foo"].payload == b'{"v":1}'
        wait_until(lambda: zookeeper_client.exists(f"{PATH}/foo") is None, what="the old node removed")
