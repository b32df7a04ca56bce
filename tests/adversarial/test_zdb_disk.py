"""zdb against a full disk and descriptor exhaustion: real servers, a real tmpfs, real kernel limits.

Every test runs the storage manager as its own process (``python -m workbench.zdb serve``), attacks
it, kills it with SIGKILL and starts it again on the same archive, then checks that every
acknowledged write is there and that no refused write is visible. The tmpfs tests mount a small
filesystem (root only) and fill it with ``fill_disk``; the descriptor tests lower the server's
RLIMIT_NOFILE.
"""

from __future__ import annotations

import errno
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest

from workbench.errors import ZdbError
from workbench.testing.adversarial import ProcessBounds, answers_within, fill_disk, small_tmpfs
from workbench.testing.zdb import ZdbServerProcess
from workbench.zdb import Client, client
from workbench.zdb.protocol import File


class Servers:
    """Storage manager processes of one test; whatever is still running at the end is killed."""

    def __init__(self) -> None:
        self.started: list[ZdbServerProcess] = []

    def start(self, workdir: Path, archive: Path, nofile: int | None = None, port: int | None = None,
              fsync: str = "batch") -> ZdbServerProcess:
        """A storage manager process; ``nofile`` lowers its descriptor limit before any test traffic."""
        server = ZdbServerProcess(workdir, archive, fsync=fsync)
        if port is not None:
            server.port = port
        self.started.append(server)
        server.start()
        if nofile is not None:
            # The kernel limit a preexec_fn setrlimit would set, applied to the running server
            # before the attack (its baseline descriptors are already open).
            resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (nofile, nofile))
        return server

    def restart(self, server: ZdbServerProcess, workdir: Path) -> ZdbServerProcess:
        """kill -9 the server, then start a new one on the same archive and port."""
        server.kill9()
        return self.start(workdir, server.archive, port=server.port, fsync=server.fsync)

    def contents_then_stop(self, server: ZdbServerProcess) -> dict:
        """Everything ``server`` stores (read with a fresh client), then the server stopped."""
        try:
            db, connection = client(server.uri, timeout=10.0)
            try:
                return db._run()
            finally:
                connection.close()
        finally:
            server.stop()

    def kill_all(self) -> None:
        for server in self.started:
            server.kill9()


@pytest.fixture
def servers():
    made = Servers()
    yield made
    made.kill_all()


# -- full disk ----------------------------------------------------------------------------------
def test_full_disk_refuses_writes_invisibly_and_loses_no_acknowledged_write(tmp_path, servers, connect):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        server = servers.start(tmp_path / "proc", disk / "archive")
        db, connection = connect(server.uri, timeout=5.0)
        acknowledged: dict[str, int] = {}
        for n in range(20):
            db[f"before{n}"] = n
            acknowledged[f"before{n}"] = n
        filler = fill_disk(disk)
        # The journal's last page may still hold a record or two: those are acknowledged, and
        # every write from the first refusal on is refused.
        refused: list[str] = []
        for n in range(60):
            key = f"full{n}"
            try:
                db[key] = "x" * 200
            except ZdbError as exc:
                assert exc.fields.get("errno") == errno.ENOSPC, exc
                assert exc.fields.get("reason"), exc
                refused.append(key)
            else:
                assert not refused, f"{key} acknowledged after a refusal on a still full disk"
                acknowledged[key] = "x" * 200
        assert len(refused) >= 40
        # Refused writes are invisible, on the server that refused them...
        for key in refused:
            assert key not in db
        status = answers_within(connection.status)
        assert status["journal_error"] is None  # the journal was cut back: ready for appends
        assert status["refused_writes"] >= len(refused)
        # ...and service resumes once space returns, without a restart.
        filler.unlink()
        for n in range(100):
            db[f"after{n}"] = n
            acknowledged[f"after{n}"] = n
        connection.close()
        stored = servers.contents_then_stop(servers.restart(server, tmp_path / "proc2"))
        missing = sorted(set(acknowledged) - set(stored))
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"
        assert not set(refused) & set(stored), "a refused write became durable"
        assert {k: stored[k] for k in acknowledged} == acknowledged


def test_short_journal_write_is_detected_refused_and_cut_back(tmp_path, servers, connect):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        server = servers.start(tmp_path / "proc", disk / "archive")
        db, connection = connect(server.uri, timeout=5.0)
        acknowledged = {}
        for n in range(10):
            db[f"k{n}"] = n
            acknowledged[f"k{n}"] = n
        # Leave one page: a 40 KB record fits only in part (the write returns fewer bytes).
        filler = fill_disk(disk, leave_bytes=4096)
        with pytest.raises(ZdbError) as caught:
            db["big"] = "y" * 40_000
        assert caught.value.fields.get("errno") == errno.ENOSPC, caught.value
        assert "big" not in db
        filler.unlink()
        for n in range(50):
            db[f"later{n}"] = n
            acknowledged[f"later{n}"] = n
        connection.close()
        stored = servers.contents_then_stop(servers.restart(server, tmp_path / "proc2"))
        assert "big" not in stored
        missing = sorted(set(acknowledged) - set(stored))
        assert not missing, f"{len(missing)} acknowledged writes lost after a short write: {missing[:5]}"
        assert not list((disk / "archive").glob("journal-*.corrupt-*")), "recovery found a torn record"


def test_a_journal_that_cannot_be_cut_back_rolls_to_a_new_segment_and_loses_nothing(tmp_path, servers, connect):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        archive = disk / "archive"
        server = servers.start(tmp_path / "proc", archive)
        db, connection = connect(server.uri, timeout=5.0)
        acknowledged = {}
        for n in range(10):
            db[f"k{n}"] = n
            acknowledged[f"k{n}"] = n
        segment = sorted(archive.glob("journal-*.log"))[-1]
        filler = fill_disk(disk)
        # Append-only: a failed append can no longer be truncated away (ftruncate gets EPERM).
        subprocess.run(["chattr", "+a", str(segment)], check=True)
        try:
            refused = []
            for n in range(10):
                with pytest.raises(ZdbError) as caught:
                    db[f"r{n}"] = "x" * 5000  # more than a page: never fits
                assert caught.value.fields.get("errno") == errno.ENOSPC, caught.value
                refused.append(f"r{n}")
            status = connection.status()
            assert status["journal"] != segment.name, "the journal did not roll away from the torn segment"
            assert status["journal_error"] is None
            for key in refused:
                assert key not in db
            filler.unlink()
            for n in range(30):
                db[f"after{n}"] = n
                acknowledged[f"after{n}"] = n
            connection.close()
            server.kill9()
        finally:
            subprocess.run(["chattr", "-a", str(segment)], check=False)
        stored = servers.contents_then_stop(servers.start(tmp_path / "proc2", archive, port=server.port))
        missing = sorted(set(acknowledged) - set(stored))
        assert not missing, f"{len(missing)} acknowledged writes lost behind the torn segment: {missing[:5]}"
        assert not set(refused) & set(stored)


def test_a_journal_that_cannot_be_reopened_refuses_writes_says_why_and_recovers_by_itself(tmp_path, servers,
                                                                                          connect):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        archive = disk / "archive"
        server = servers.start(tmp_path / "proc", archive, nofile=64)
        db, connection = connect(server.uri, timeout=5.0)
        db["before"] = 1
        segment = sorted(archive.glob("journal-*.log"))[-1]
        filler = fill_disk(disk)
        subprocess.run(["chattr", "+a", str(segment)], check=True)  # a failed append cannot be cut back
        hogs: list[socket.socket] = []
        try:
            for _ in range(80):  # and no descriptor is left for a new segment
                hogs.append(socket.create_connection(("127.0.0.1", server.port)))
            refused = []
            for n in range(5):
                with pytest.raises(ZdbError) as caught:
                    db[f"r{n}"] = "x" * 5000
                assert caught.value.fields.get("errno") in (errno.ENOSPC, errno.EMFILE), caught.value
                refused.append(f"r{n}")
            assert caught.value.fields.get("errno") == errno.EMFILE  # the journal is broken: it says why
            status = answers_within(connection.status)
            assert status["journal_error"] and status["journal"] == segment.name
            for sock in hogs:
                sock.close()
            hogs.clear()
            filler.unlink()
            # Descriptors are back: the server's own retry rolls the journal, no write needed.
            deadline = time.monotonic() + 10
            while connection.status()["journal_error"] is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            status = connection.status()
            assert status["journal_error"] is None and status["journal"] != segment.name
            for key in refused:
                assert key not in db
            acknowledged = {"before": 1}
            for n in range(20):
                db[f"after{n}"] = n
                acknowledged[f"after{n}"] = n
            connection.close()
            server.kill9()
        finally:
            for sock in hogs:
                sock.close()
            subprocess.run(["chattr", "-a", str(segment)], check=False)
        stored = servers.contents_then_stop(servers.start(tmp_path / "proc2", archive, port=server.port))
        assert stored == acknowledged


def test_undo_and_redo_refused_on_a_full_disk_leave_the_history_as_it_was(tmp_path, servers, connect):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        server = servers.start(tmp_path / "proc", disk / "archive")
        db, connection = connect(server.uri, timeout=5.0)
        db["l"] = [1]
        db["l"].append(2)
        db["l"].append(3)
        db.undo()  # l == [1, 2], one redo step
        # A checkpoint starts an empty journal segment: its first record needs a page of its own.
        connection.save()
        while connection.status()["snapshot_seq"] != 4:
            time.sleep(0.02)
        filler = fill_disk(disk)
        with pytest.raises(ZdbError):
            db.undo()
        with pytest.raises(ZdbError):
            db.redo()
        assert db["l"]._run() == [1, 2]
        status = connection.status()
        assert (status["undo"], status["redo"]) == (2, 1)
        filler.unlink()
        db.redo()
        assert db["l"]._run() == [1, 2, 3]
        db.undo()
        db.undo()
        assert db["l"]._run() == [1]
        connection.close()
        assert servers.contents_then_stop(servers.restart(server, tmp_path / "proc2")) == {"l": [1]}


def test_checkpoint_on_a_full_disk_fails_cleanly_and_works_once_space_returns(tmp_path, servers, connect):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        archive = disk / "archive"
        server = servers.start(tmp_path / "proc", archive)
        db, connection = connect(server.uri, timeout=10.0)
        db["l"] = list(range(2000))
        first = connection.save(wait=True)
        assert first["snapshot_seq"] == 1
        db["after"] = 1
        filler = fill_disk(disk)
        with pytest.raises(ZdbError) as caught:
            connection.save(wait=True)
        assert caught.value.fields.get("errno") == errno.ENOSPC, caught.value
        assert (archive / "snapshot-000000000001.json").exists()  # the previous checkpoint is intact
        assert not list(archive.glob(".snapshot-*")), "a partial snapshot was left on the full disk"
        assert connection.status()["checkpoint_error"]
        assert db["after"]._run() == 1
        filler.unlink()
        db["more"] = 2
        done = connection.save(wait=True)
        assert done["snapshot_seq"] == 3
        assert connection.status()["checkpoint_error"] is None
        db["last"] = 3
        connection.close()
        stored = servers.contents_then_stop(servers.restart(server, tmp_path / "proc2"))
        assert stored == {"l": list(range(2000)), "after": 1, "more": 2, "last": 3}


# -- descriptor exhaustion ----------------------------------------------------------------------
def test_unfinished_uploads_are_bounded_and_hold_no_descriptors(tmp_path, servers, connect):
    server = servers.start(tmp_path / "proc", tmp_path / "archive", nofile=128)
    pid = server.process.pid
    clients = [Client(server.uri, timeout=5.0) for _ in range(10)]
    try:
        for connection in clients:
            connection.ping()
        before = ProcessBounds.of(pid)
        accepted: dict[str, int] = {}
        tokens: list[tuple[Client, str]] = []
        refused = 0
        for connection in clients:
            for _ in range(12):
                try:
                    result, _ = connection.request("blob_put", data=b"z" * 1000, upload=None, final=False,
                                                   name="part")
                except ZdbError as exc:
                    assert "upload" in str(exc), exc
                    assert exc.fields.get("limit"), exc
                    refused += 1
                else:
                    tokens.append((connection, result["upload"]))
                    accepted[connection.client_id] = accepted.get(connection.client_id, 0) + 1
        assert max(accepted.values()) <= 8
        assert sum(accepted.values()) <= 64
        assert refused == 120 - sum(accepted.values())
        ProcessBounds.of(pid).assert_within(before, rss_mib=64, fds=8)
        # New clients still get in, a complete upload still works, save() and writes work.
        fresh = [Client(server.uri, timeout=5.0) for _ in range(8)]
        try:
            for connection in fresh:
                assert answers_within(connection.ping)
            # Every slot is taken: a new upload is refused until an unfinished one ends.
            with pytest.raises(ZdbError, match="too many unfinished uploads"):
                fresh[0].put_file(b"content" * 100, name="whole.txt")
            owner, token = tokens.pop()
            finished, _ = owner.request("blob_put", data=b"end", upload=token, final=True, name="part")
            assert isinstance(finished, File) and owner.get_file(finished) == b"z" * 1000 + b"end"
            blob = fresh[0].put_file(b"content" * 100, name="whole.txt")
            assert fresh[0].get_file(blob) == b"content" * 100
            for n in range(20):
                fresh[n % 8].run((), "__setitem__", (f"k{n}", n))
            assert fresh[1].save(wait=True)["snapshot_seq"] == 20
            fresh[2].run((), "__setitem__", ("after_save", True))
            status = fresh[3].status()
            assert status["journal_error"] is None
            assert status["uploads"] == sum(accepted.values()) - 1
        finally:
            for connection in fresh:
                connection.close()
        ProcessBounds.of(pid).assert_within(before, rss_mib=64, fds=16)
    finally:
        for connection in clients:
            connection.close()
    stored = servers.contents_then_stop(servers.restart(server, tmp_path / "proc2"))
    assert stored == {**{f"k{n}": n for n in range(20)}, "after_save": True}


def test_journal_stays_open_and_writes_stay_durable_when_descriptors_run_out(tmp_path, servers, connect):
    server = servers.start(tmp_path / "proc", tmp_path / "archive", nofile=64)
    pid = server.process.pid
    connection = Client(server.uri, timeout=5.0)
    hogs: list[socket.socket] = []
    try:
        connection.run((), "__setitem__", ("before", 1))
        # Plain TCP connections each cost the server a descriptor: take every one it has left.
        for _ in range(80):
            hogs.append(socket.create_connection(("127.0.0.1", server.port)))
        answers_within(connection.ping)
        # ZeroMQ's I/O thread accepts them on its own time, after the ping may already be answered.
        deadline = time.monotonic() + 10
        while ProcessBounds.of(pid).fds < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ProcessBounds.of(pid).fds >= 60
        written, refused = {}, []
        with pytest.raises(ZdbError) as caught:
            connection.save(wait=True)  # a checkpoint needs a new journal segment: no descriptor for it
        assert caught.value.fields.get("errno") == errno.EMFILE, caught.value
        for n in range(10):
            try:
                connection.run((), "__setitem__", (f"w{n}", n))
            except ZdbError:
                refused.append(f"w{n}")
            else:
                written[f"w{n}"] = n
        status = connection.status()
        assert status["journal_error"] is None and status["journal"] == "journal-000000000001.log"
        keys = connection.run((), "keys")
        assert not set(refused) & set(keys), "a refused write is visible"
        for sock in hogs:
            sock.close()
        hogs.clear()
        for n in range(10):
            connection.run((), "__setitem__", (f"after{n}", n))
            written[f"after{n}"] = n
        # Descriptors came back: a checkpoint works again, without a restart.
        result = connection.save(wait=True)
        assert result["snapshot_seq"] == result["seq"]
        assert connection.status()["checkpoint_error"] is None
        connection.run((), "__setitem__", ("last", True))
        written["last"] = True
    finally:
        for sock in hogs:
            sock.close()
        connection.close()
    stored = servers.contents_then_stop(servers.restart(server, tmp_path / "proc2"))
    assert stored == {"before": 1, **written}
    assert not set(refused) & set(stored)
