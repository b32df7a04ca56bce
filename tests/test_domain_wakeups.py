"""The supervisor's kernel wakeups against real files and processes: inotify on a log, pidfds on any process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from workbench.domain.wakeups import FileWrites, ProcessEnd

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and pidfds are Linux's")


@linux_only
def test_a_write_to_the_file_wakes_the_waiter(tmp_path):
    log = tmp_path / "te.log"
    log.write_text("")
    with FileWrites(log) as writes:
        assert writes.immediate
        assert writes.wait(0.01) is False  # nothing written: the timeout passes
        writer = threading.Timer(0.05, lambda: log.open("a").write("zdb te serving on tcp://127.0.0.1:1\n"))
        writer.start()
        assert writes.wait(30) is True
        writer.join()
        assert writes.wait(0.01) is False  # the notification was taken: no second wakeup for one write
    writes.close()  # idempotent


def test_without_a_watch_the_wait_is_the_timeout(tmp_path):
    writes = FileWrites(tmp_path / "missing.log")  # nothing to watch: it degrades to a sleep
    assert not writes.immediate and writes.wait(0.01) is False
    writes.close()


@linux_only
def test_the_end_of_a_child_wakes_the_waiter():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    with ProcessEnd(child.pid) as end:
        assert end.immediate
        assert end.wait(0.01) is False  # still running
        child.stdin.close()  # it ends
        assert end.wait(30) is True
        assert end.wait(0) is True  # and stays ended
    child.wait()


@linux_only
def test_the_end_of_a_process_that_is_not_our_child_wakes_the_waiter():
    # An agent adopts processes a previous run of it started: their parent is gone, not us.
    starter = subprocess.run(["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                             check=True)
    pid = int(starter.stdout)
    with ProcessEnd(pid) as end:
        assert end.immediate  # opened while it runs (0.3 s is plenty to get here)
        assert end.wait(30) is True
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # indeed not ours to wait for


def test_a_pid_that_is_gone_gives_no_wakeup_and_the_caller_checks():
    child = subprocess.Popen(["true"])
    child.wait()
    end = ProcessEnd(child.pid)  # reaped: nothing to open
    assert not end.immediate and end.wait(0.01) is False
    end.close()


@linux_only
def test_closed_watches_give_their_descriptors_back(tmp_path):
    log = tmp_path / "te.log"
    log.write_text("")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with FileWrites(log) as writes:
            assert writes.immediate
    deadline = time.monotonic() + 30  # the closes finish on the closer thread
    while len(os.listdir("/proc/self/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) <= before
