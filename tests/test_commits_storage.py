"""Commit storage in memory, SQLite, MariaDB and PostgreSQL: the save protocol, hooks, events,
schema versions, and racing savers (threads and processes) with exactly one winner per version."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from workbench.commits import storage as storage_module
from workbench.commits.model import RAW, YAML, Commit, CommitConflict, InvalidCommit
from workbench.commits.storage import MemoryCommitStorage, SqlCommitStorage
from workbench.errors import CommitsError
from workbench.events import EventRecorder
from workbench.testing.commits import race_saves


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def sql_url(request, tmp_path):
    """A SQLAlchemy URL of an empty database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'commits.db'}"
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(params=["memory", "sql"])
def storage(request, tmp_path):
    if request.param == "memory":
        made = MemoryCommitStorage()
    else:
        made = SqlCommitStorage(f"sqlite:///{tmp_path / 'c.db'}").start()
    yield made
    made.close()


def commit(key="foo", version=1, value=None, author="gian", comment=""):
    return Commit.from_value(key, version, {"v": version} if value is None else value, author=author,
                             comment=comment)


# -- the protocol, on memory and SQLite ------------------------------------------------------------
def test_save_get_history_heads(storage):
    storage.save(commit("foo", 1, comment="first"))
    storage.save(commit("foo", 2, comment="second"))
    storage.save(commit("bar", 1))
    assert storage.get("foo").version == 2 and storage.get("foo").value == {"v": 2}
    assert storage.get("foo", 1).comment == "first"
    assert storage.get("foo", 3) is None and storage.get("nope") is None and storage.get("foo", 0) is None
    assert [c.version for c in storage.history("foo")] == [1, 2]
    assert storage.history("nope") == []
    assert {k: c.version for k, c in storage.heads().items()} == {"bar": 1, "foo": 2}
    assert storage.keys() == ["bar", "foo"]


def test_a_wrong_version_is_a_conflict_and_stores_nothing(storage):
    storage.save(commit("foo", 1))
    for provided in (1, 3, 7):
        with pytest.raises(CommitConflict) as caught:
            storage.save(commit("foo", provided, author="sue"))
        assert caught.value.fields == {"key": "foo", "expected_version": 2, "provided_version": provided}
    with pytest.raises(CommitConflict) as caught:
        storage.save(commit("new", 2))
    assert caught.value.expected_version == 1
    assert [c.author for c in storage.history("foo")] == ["gian"]
    assert storage.get("new") is None and "new" not in storage.heads()


def test_tombstones_hide_a_key_from_non_empty_heads_but_keep_history(storage):
    storage.save(commit("foo", 1))
    storage.save(commit("bar", 1))
    storage.save(Commit.tombstone("foo", 2, "gian", "retired"))
    assert storage.get("foo").empty and storage.get("foo").payload is None
    assert set(storage.heads()) == {"foo", "bar"}
    assert set(storage.heads_non_empty()) == {"bar"}
    storage.save(commit("foo", 3, value={"back": True}))
    assert storage.heads_non_empty()["foo"].value == {"back": True}
    assert [c.empty for c in storage.history("foo")] == [False, True, False]


def test_payload_bytes_and_metadata_round_trip_exactly(storage):
    edited = b"# keep me\nname:  diary   # aligned\n"
    saved = storage.save(Commit.from_bytes("conf.yaml", 1, edited, "s\u00fce \U0001F600", "p\u00e4ss\nline 2",
                                           serialization=YAML))
    back = storage.get("conf.yaml")
    assert back == saved and back.payload == edited
    assert back.mtime == saved.mtime and back.author == "s\u00fce \U0001F600"


def test_bad_calls_get_clear_errors(storage):
    with pytest.raises(InvalidCommit):
        storage.save({"key": "foo"})
    with pytest.raises(InvalidCommit):
        storage.get("a/b")
    with pytest.raises(InvalidCommit):
        storage.get("foo", "1")
    with pytest.raises(InvalidCommit):
        storage.history("")


def test_hooks_run_around_saves_and_a_pre_hook_vetoes(storage):
    seen = []

    def veto_bad_authors(c):
        seen.append(("pre", c.version))
        if c.author == "mallory":
            raise CommitsError("mallory may not commit", author=c.author)

    storage.add_pre_save_hook(veto_bad_authors)
    storage.add_post_save_hook(lambda c: seen.append(("post", c.version)))
    storage.add_post_save_hook(lambda c: 1 / 0)  # a failing post hook: logged, commit kept
    storage.save(commit("foo", 1))
    with pytest.raises(CommitsError, match="mallory"):
        storage.save(commit("foo", 2, author="mallory"))
    with pytest.raises(CommitConflict):
        storage.save(commit("foo", 5))
    assert seen == [("pre", 1), ("post", 1), ("pre", 2), ("pre", 5)]
    assert [c.version for c in storage.history("foo")] == [1]


def test_listeners_hear_every_save_through_the_event_model(storage):
    recorder = EventRecorder()
    storage.add_listener(recorder)
    storage.save(commit("foo", 1))
    storage.save(commit("foo", 2))
    with pytest.raises(CommitConflict):
        storage.save(commit("foo", 2))
    event = recorder.wait_for("commit_saved", count=2)
    assert event.args[0].version == 2
    storage.flush_events()
    assert recorder.kinds().count("commit_saved") == 2


def test_memory_storage_can_start_from_commits():
    made = MemoryCommitStorage([commit("a", 1), commit("a", 2)])
    assert made.get("a").version == 2
    with pytest.raises(CommitConflict):
        MemoryCommitStorage([commit("a", 2)])


# -- SQL specifics ---------------------------------------------------------------------------------
def test_sql_engines_store_and_read_everything(sql_url):
    with SqlCommitStorage(sql_url) as storage:
        big = bytes(range(256)) * 4096  # 1 MiB of every byte value: beyond MariaDB's plain BLOB
        storage.save(Commit.from_bytes("blob.bin", 1, big, "me", serialization=RAW))
        storage.save(commit("ключ-日本", 1, value={"ü": "ñ"}, author="søren", comment="ünï\ncode"))
        storage.save(commit("ключ-日本", 2))
        storage.save(Commit.tombstone("ключ-日本", 3, "søren"))
        storage.save(commit("Foo", 1))
        storage.save(commit("foo", 1))  # keys are case-sensitive on every engine
        storage.save(commit("foo ", 1))  # and trailing spaces count (MariaDB's collations ignore them)
        storage.save(commit("foo ", 2))
        assert storage.schema_version() == storage_module.SCHEMA_VERSION
    with SqlCommitStorage(sql_url, serialization=lambda key: RAW if key.endswith(".bin") else YAML) as reopened:
        assert reopened.get("blob.bin").payload == big
        assert reopened.get("blob.bin").value == big
        first = reopened.get("ключ-日本", 1)
        assert (first.author, first.comment, first.value) == ("søren", "ünï\ncode", {"ü": "ñ"})
        assert reopened.get("ключ-日本").empty
        assert set(reopened.heads_non_empty()) == {"blob.bin", "Foo", "foo", "foo "}
        assert (reopened.get("foo").version, reopened.get("foo ").version) == (1, 2)
        with pytest.raises(CommitConflict) as caught:
            reopened.save(commit("ключ-日本", 3))
        assert caught.value.expected_version == 4


def test_schema_newer_than_the_code_is_refused(sql_url):
    url = sql_url
    with SqlCommitStorage(url) as storage:
        storage.save(commit())
        with storage.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE commits_schema SET version = 99")
    with pytest.raises(CommitsError) as caught:
        SqlCommitStorage(url).start()
    assert caught.value.fields["schema_version"] == 99


def test_an_older_schema_is_migrated_on_start(sql_url, monkeypatch):
    from sqlalchemy import inspect

    url = sql_url
    with SqlCommitStorage(url) as storage:
        storage.save(commit())
    ran = []

    def add_origin_column(connection, storage):
        ran.append(storage.table_name)
        connection.exec_driver_sql(f"ALTER TABLE {storage.table_name} ADD COLUMN origin VARCHAR(64)")

    # the next schema version of this code, as a release would add it
    monkeypatch.setattr(storage_module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(storage_module.MIGRATIONS, 2, add_origin_column)
    with SqlCommitStorage(url) as storage:
        assert storage.schema_version() == 2 and ran == ["commits"]
        assert storage.get("foo").version == 1
        columns = [column["name"] for column in inspect(storage.engine).get_columns("commits")]
        assert "origin" in columns
    with SqlCommitStorage(url) as storage:  # already migrated: nothing runs again
        assert ran == ["commits"]


def test_two_tables_in_one_database_are_independent(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with SqlCommitStorage(url, table="diary") as diary, SqlCommitStorage(url, table="settings") as settings:
        diary.save(commit("foo", 1))
        assert settings.get("foo") is None
        settings.save(commit("foo", 1, author="sue"))
        assert diary.get("foo").author == "gian"


def test_in_memory_sqlite_is_shared_by_threads():
    with SqlCommitStorage() as storage:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: storage.save(commit(f"k{i}", 1)), range(40)))
        assert len(storage.heads()) == 40


# -- racing savers ----------------------------------------------------------------------------------
def check_race(url: str, key: str, wins: list[list[int]], racers: list[str]) -> None:
    """Every version won exactly once, no gaps, and the stored history is exactly what was won."""
    won = sorted(v for versions in wins for v in versions)
    assert won == list(range(1, len(won) + 1)), "a version was won twice or a version is missing"
    with SqlCommitStorage(url) as storage:
        history = storage.history(key)
    assert [c.version for c in history] == won
    owner = {v: name for name, versions in zip(racers, wins) for v in versions}
    assert [c.author for c in history] == [owner[c.version] for c in history]
    assert all(c.value["by"] == c.author for c in history)


def test_threads_race_on_one_key_with_one_winner_per_version(sql_url):
    SqlCommitStorage(sql_url).start().close()
    racers = [f"thread-{i}" for i in range(8)]
    barrier = threading.Barrier(len(racers))
    with ThreadPoolExecutor(len(racers)) as pool:
        futures = [pool.submit(race_saves, sql_url, "hot", name, 15, barrier) for name in racers]
        wins = [future.result(timeout=120) for future in futures]
    assert len([w for w in wins if w]) >= 2, "the race had only one participant"
    check_race(sql_url, "hot", wins, racers)


def test_processes_race_on_one_key_with_one_winner_per_version(sql_url):
    # no create_all beforehand: the processes also race to create the schema
    context = multiprocessing.get_context("spawn")
    racers = [f"process-{i}" for i in range(4)]
    barrier = context.Barrier(len(racers))
    results = context.Queue()
    processes = [context.Process(target=race_saves, args=(sql_url, "hot", name, 15, barrier, results))
                 for name in racers]
    for process in processes:
        process.start()
    try:
        reported = dict(results.get(timeout=180) for _ in racers)
    finally:
        for process in processes:
            process.join(30)
    assert [process.exitcode for process in processes] == [0] * len(racers)
    wins = [reported[name] for name in racers]
    assert sum(len(w) for w in wins) >= 15
    check_race(sql_url, "hot", wins, racers)


# -- the writing connection of a file SQLite database -----------------------------------------------
def test_threads_sharing_one_sqlite_storage_race_with_one_winner_per_version(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    racers = [f"thread-{i}" for i in range(8)]
    barrier = threading.Barrier(len(racers))
    wins: dict[str, list[int]] = {name: [] for name in racers}
    with SqlCommitStorage(url) as shared:

        def race(name: str) -> None:
            barrier.wait()
            for _ in range(40):
                current = shared.get("hot")
                try:
                    version = (current.version if current else 0) + 1
                    shared.save(commit("hot", version, {"by": name}, author=name))
                    wins[name].append(version)
                except CommitConflict:
                    pass

        with ThreadPoolExecutor(len(racers)) as pool:
            list(pool.map(race, racers))
    check_race(url, "hot", [wins[name] for name in racers], racers)


def test_sqlite_saves_are_durable_and_visible_to_other_connections(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with SqlCommitStorage(url) as writer, SqlCommitStorage(url) as reader:
        writer.save(commit("foo", 1, {"a": 1}, comment="first"))
        writer.save(Commit.tombstone("foo", 2, author="sue", comment="gone"))
        assert [(c.version, c.empty, c.author) for c in reader.history("foo")] == [(1, False, "gian"),
                                                                                  (2, True, "sue")]
        assert reader.get("foo", 1).value == {"a": 1}
        with writer.engine.connect() as connection:
            # the writing connection has the engine's settings: WAL journal, synchronous=FULL
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        with writer._writer_lock:
            driver = writer._sqlite_writer._driver
            assert driver.execute("PRAGMA synchronous").fetchone()[0] == 2
            assert driver.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(CommitConflict) as caught:
            writer.save(commit("foo", 2))
        assert (caught.value.expected_version, caught.value.provided_version) == (3, 2)
    with SqlCommitStorage(url) as reopened:
        assert reopened.get("foo").version == 2 and reopened.get("foo").empty


def test_a_sqlite_error_in_a_save_rolls_back_and_is_a_sqlalchemy_error(tmp_path):
    from sqlalchemy.exc import DBAPIError

    url = f"sqlite:///{tmp_path / 'c.db'}"
    with SqlCommitStorage(url) as storage:
        storage.save(commit("foo", 1))
        with storage.engine.begin() as connection:
            # a trigger refusing inserts stands in for any database error during the transaction
            connection.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON commits "
                                       "BEGIN INSERT INTO missing_table VALUES (1); END")
        with pytest.raises(DBAPIError, match="missing_table"):
            storage.save(commit("foo", 2))
        with storage.engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER refuse")
        storage.save(commit("foo", 2))  # the writing connection is not left inside a transaction
        assert [c.version for c in storage.history("foo")] == [1, 2]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_saves_on_its_own_sqlite_connection(tmp_path):
    import os

    url = f"sqlite:///{tmp_path / 'c.db'}"
    with SqlCommitStorage(url) as storage:
        storage.save(commit("foo", 1))  # the parent's writing connection exists now
        pid = os.fork()
        if pid == 0:  # the child: save through the inherited storage object, then leave at once
            code = 1
            try:
                storage.save(commit("foo", 2, author="child"))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        storage.save(commit("foo", 3))  # the parent's connection still works
        assert [(c.version, c.author) for c in storage.history("foo")] == [(1, "gian"), (2, "child"), (3, "gian")]
