"""Stops what a temporary stack started once the process that owned it is gone without stopping it.

``use_stack()`` starts an embedded stack inside a notebook's kernel and stops it at exit (``atexit``).
A kernel killed outright (``SIGKILL``: nbval, a kernel manager's "now") runs no exit handler, and
the storage manager and transaction engines its agent started live on: they run in sessions of their
own, so that an agent restarted on the same state adopts them. Nobody restarts a temporary stack, so
a watchdog process, in a session of its own too, waits for the owner and then stops every process
whose command line names the stack's directory (each of them does), and removes that directory::

    WORKBENCH_WATCHDOG='[OWNER_PID, "STATE_DIR", "STACK_FILE"]' python -m workbench.stack_watchdog
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

#: how often the watchdog looks at its owner, seconds
POLL_SECONDS = 1.0
#: how long stopped processes get to exit on SIGTERM before SIGKILL
GRACE_SECONDS = 10.0


def processes_mentioning(text: str) -> dict[int, str]:
    """Live (not zombie) processes other than this one whose command line mentions ``text``: pid -> cmdline."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            # The state letter follows the parenthesised name, which may itself hold spaces.
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_processes_of(state_dir: Path) -> None:
    """SIGTERM every process naming ``state_dir`` (SIGKILL after the grace time); remove the directory."""
    mention = str(state_dir)
    for pid in processes_mentioning(mention):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + GRACE_SECONDS
    while processes_mentioning(mention) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in processes_mentioning(mention):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(state_dir, ignore_errors=True)


def watch(owner: int, state_dir: Path, stack_file: Path) -> None:
    """Return when the stack stopped (its stack file is gone); stop its processes if the owner died first."""
    while stack_file.exists():
        if not pid_alive(owner):
            stop_processes_of(state_dir)
            return
        time.sleep(POLL_SECONDS)


def start_watchdog(state_dir: Path, stack_file: Path) -> subprocess.Popen[bytes]:
    """A watchdog of this process over the stack in ``state_dir``; it outlives a kill of this process group."""
    # The paths go in the environment, not the command line: a watchdog must not count as a process
    # of the stack for whoever checks that stopping it left none (see processes_mentioning).
    env = {**os.environ, "WORKBENCH_WATCHDOG": json.dumps([os.getpid(), str(state_dir), str(stack_file)])}
    return subprocess.Popen([sys.executable, "-m", "workbench.stack_watchdog"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def main() -> int:
    owner, state_dir, stack_file = json.loads(os.environ["WORKBENCH_WATCHDOG"])
    watch(int(owner), Path(state_dir), Path(stack_file))
    return 0


__all__ = ["pid_alive", "processes_mentioning", "start_watchdog", "stop_processes_of", "watch"]

if __name__ == "__main__":
    sys.exit(main())
