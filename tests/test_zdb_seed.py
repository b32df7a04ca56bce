"""Every example of the pyzdb seed, with only the import line changed (and Python 3's list(range(10)))."""

from __future__ import annotations

import io
import subprocess
import sys
import time

from workbench.zdb.shell import run_shell


def test_sample_session(sm, connect):
    db, sockets = connect(sm.address)
    assert db._run() == {}
    assert db.__setitem__("x", 3) is None
    assert db["x"]._run() == 3
    db["l"] = list(range(10))
    assert db._run() == {"x": 3, "l": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    db["l"][4] = ["a", "b", "c"]
    assert db.undo() is None
    assert db._run() == {"x": 3, "l": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    db.undo()
    db.redo()
    db.redo()
    assert db._run() == {"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c"], 5, 6, 7, 8, 9]}
    assert [v for v in db["l"][4]] == ["a", "b", "c"]
    assert [k for k in db] == ["x", "l"]
    db["l"][4].append("d")
    db.save()
    assert db["l"][4]._run() == ["a", "b", "c", "d"]


def test_sample_session_survives_a_server_restart_without_restarting_the_client(tmp_path, connect):
    from workbench.zdb import StorageManager

    archive = tmp_path / "restart"
    first = StorageManager(archive, bind="tcp://127.0.0.1:0").start()
    address = first.address
    db, _ = connect(address)
    db["x"] = 3
    db.save()
    first.stop()
    second = StorageManager(archive, bind=address).start()
    try:
        assert db["x"]._run() == 3  # same client, new server process state
        db["x"] = 4
        assert db["x"]._run() == 4
    finally:
        second.stop()


def test_application_example(sm, connect):
    db, socket = connect(sm.address)
    db["x"] = 3
    x = db["x"]._run()
    db["l"] = list(range(10))
    odd_squares = [v * v for v in db["l"] if v % 2]
    db.save()
    assert x == 3 and odd_squares == [1, 9, 25, 49, 81]


def test_lock_example(sm, connect):
    db, socket = connect(sm.address)
    db["x"] = 1
    db.lock()
    x = db["x"]._run()
    db["x"] = x + 1
    db.unlock()
    assert db["x"]._run() == 2
    db["x"] = db["x"]._run() + 1
    assert db["x"]._run() == 3


def test_multiple_read_only_servers_example(sm, te, connect):
    db, sockets = connect(sm.address, te.address)
    db["x"] = 3
    db.save()
    db["x"] = 4
    db.save()
    # A replica may serve a slightly older version (the seed's caveat)...
    assert db["x"]._run() in (3, 4)
    # ...unless the client asks for read-your-writes.
    db_ryw, _ = connect(sm.address, te.address, read_your_writes=True)
    for n in range(20):
        db_ryw["x"] = n
        assert db_ryw["x"]._run() == n
    assert te.status()["reads"] >= 20  # the reads really went to the replica


def test_shell_runs_lines_and_prints_values(sm):
    script = "db['x'] = 3\ndb['x']\ndb['l'] = list(range(10))\n[v*v for v in db['l'] if v % 2]\ndb['nope']\nlen(db['l'])\n"
    out = io.StringIO()
    run_shell(sm.address, stdin=io.StringIO(script), stdout=out, timeout=5.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "None" and lines[1] == "3" and lines[3] == "[1, 9, 25, 49, 81]"
    assert any("ZdbKeyError" in line for line in lines)
    assert lines[-1] == "10"


def test_shell_command_line(sm):
    result = subprocess.run([sys.executable, "-m", "workbench", "zdb", "shell", sm.address],
                            input="db['k'] = {'a': [1, 2]}\ndb['k']['a']\n", capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None", "[1, 2]"]


def test_shell_errors_are_one_line_like_the_magic(sm):
    script = "db['nope']\ndb['x'] = 3\ndb['x'].append(1)\n1/0\ndb['x']\n"
    result = subprocess.run([sys.executable, "-m", "workbench", "zdb", "shell", sm.address], input=script,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Traceback" not in result.stdout + result.stderr
    assert lines[0].startswith("ZdbKeyError: ") and "nope" in lines[0]
    assert lines[1] == "None" and lines[2].startswith("ZdbTypeError: ")
    assert lines[3:] == ["ZeroDivisionError: division by zero", "3"]
