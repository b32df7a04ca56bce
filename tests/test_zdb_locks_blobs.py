"""zdb locks (waiting, timeouts, leases of dead clients) and blobs (content in, content out)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from workbench.zdb import ZdbRemoteError
from workbench.zdb.protocol import File
from workbench.zdb.server import lock_digest


def test_other_clients_wait_while_the_lock_is_held(sm, connect):
    holder, _ = connect(sm.address)
    other, _ = connect(sm.address)
    holder["x"] = 0
    holder.lock()
    seen = []
    reader = threading.Thread(target=lambda: seen.append(other["x"]._run()))
    reader.start()
    time.sleep(0.3)
    assert seen == []  # neither reads nor writes of others run under the lock
    holder["x"] = holder["x"]._run() + 1
    holder.unlock()
    reader.join(5)
    assert seen == [1]


def test_with_locked_increments_are_serializable(sm, connect):
    db, _ = connect(sm.address)
    db["n"] = 0

    def bump(times):
        mine, connection = connect(sm.address)
        for _ in range(times):
            with mine.locked():
                mine["n"] = mine["n"]._run() + 1

    threads = [threading.Thread(target=bump, args=(15,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert db["n"]._run() == 60


def test_waiting_for_a_lock_times_out_with_a_clear_error(sm, connect):
    holder, _ = connect(sm.address)
    other, other_connection = connect(sm.address)
    holder.lock()
    with pytest.raises(ZdbRemoteError, match="timed out waiting"):
        other_connection.request("op", read=True, ops=[[[], None, [], {}]], wait=0.3)
    with pytest.raises(ZdbRemoteError, match="timed out waiting"):
        other.lock(wait=0.3)
    holder.unlock()


def test_unlocking_a_lock_you_do_not_hold_is_an_error(sm, connect):
    db, connection = connect(sm.address)
    with pytest.raises(ZdbRemoteError, match="do not hold"):
        connection.request("unlock")
    holder, _ = connect(sm.address)
    holder.lock()
    with pytest.raises(ZdbRemoteError, match="do not hold"):
        connection.request("unlock")
    holder.unlock()


def test_the_lease_is_renewed_while_the_holder_lives(sm, connect):
    holder, holder_connection = connect(sm.address)
    holder.lock(lease=1.2)
    time.sleep(3.0)  # several leases long: the renewer (every lease/3) keeps it
    # The server keeps (and shows) only the digest of the lock's token, which only the holder has.
    assert sm.lock_holder == lock_digest(holder_connection._lock_token) is not None
    holder.unlock()
    assert sm.lock_holder is None


def test_a_dead_clients_lock_expires(sm, connect):
    code = ("from workbench.zdb import client; import os, sys\n"
            f"db, s = client({sm.address!r}, timeout=5)\n"
            "db.lock(lease=1.0)\nprint('locked', flush=True)\nos.kill(os.getpid(), 9)\n")
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert dead.stdout.strip() == "locked" and dead.returncode == -9
    assert sm.lock_holder is not None
    db, _ = connect(sm.address)
    began = time.monotonic()
    db["after"] = "expiry"  # waits for the lease to run out, then proceeds
    assert time.monotonic() - began < 5
    assert sm.lock_holder is None


def test_blobs_round_trip_by_content_in_chunks(sm, connect, tmp_path):
    db, connection = connect(sm.address)
    content = os.urandom(2 * 1024 * 1024 + 12345)  # three chunks
    file = connection.put_file(content, name="../../etc/passwd")
    assert isinstance(file, File) and file.size == len(content)
    assert file.hash == hashlib.sha256(content).hexdigest()
    assert file.name == "passwd"  # a name, never a path on the server
    db["files"] = {"dump": file}
    stored = db["files"]["dump"]._run()
    assert stored == file
    assert connection.get_file(stored) == content
    assert (sm.archive.blob_dir / file.hash[:2] / file.hash).read_bytes() == content
    local = tmp_path / "report.txt"
    local.write_text("hello blob")
    small = connection.put_file(local)
    assert small.name == "report.txt" and connection.get_file(small) == b"hello blob"


def test_blobs_cannot_name_server_paths(sm, connect):
    db, connection = connect(sm.address)
    for bad in ("../../etc/passwd", "/etc/passwd", "a" * 63, "A" * 64):
        with pytest.raises(ZdbRemoteError):
            connection.get_file(File(bad, "x", 1))
    with pytest.raises(FileNotFoundError):
        connection.get_file(File("0" * 64, "x", 1))
