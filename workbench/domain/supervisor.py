"""An agent's process supervisor: runs zdb storage managers and transaction engines as OS processes.

Each process gets a free port, its own log file under the agent's state dir and a watcher thread
that reports its status changes: STARTING, then RUNNING once its zdb endpoint answers, then
EXITED (asked to stop, or exit code 0) or FAILED (with the exit code and the log's last lines).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from workbench.domain.model import EXITED, FAILED, RUNNING, SM, STARTING, TE, ProcessRecord
from workbench.errors import DomainError
from workbench.ports import free_port, port_open

log = logging.getLogger(__name__)

#: options a caller may pass through to zdb processes, per type (anything else is refused)
ALLOWED_OPTIONS = {SM: frozenset({"--dba-user", "--dba-password", "--fsync", "--history"}),
                   TE: frozenset({"--dba-user", "--dba-password"})}
START_TIMEOUT = 30.0


class ProcessStartError(DomainError):
    """A database process could not be started (bad options, archive problems, early exit)."""


class ProcessSupervisor:
    """Starts, watches and stops this peer's database processes; reports every change to ``on_change``."""

    def __init__(self, peer_id: str, hostname: str, state_dir: Path,
                 on_change: Callable[[ProcessRecord], None], bind_host: str = "127.0.0.1") -> None:
        self.peer_id = peer_id
        self.hostname = hostname
        self.bind_host = bind_host
        self.log_dir = Path(state_dir) / "processes"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.on_change = on_change
        self.records: dict[str, ProcessRecord] = {}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()

    def start(self, database: str, process_type: str, archive: str | None = None, initialize: bool = False,
              primary: str | None = None, options: Sequence[tuple[str, str]] = ()) -> ProcessRecord:
        """Spawn a process and return its record (STARTING); watching goes on in a thread."""
        if process_type not in (SM, TE):
            raise ProcessStartError("process type is SM or TE", type=process_type)
        if not database or not database.replace("-", "").replace("_", "").isalnum():
            raise ProcessStartError("database names are letters, digits, - and _", database=database)
        extra: list[str] = []
        for name, value in options:
            if name not in ALLOWED_OPTIONS[process_type]:
                raise ProcessStartError(f"option {name} is not allowed for a {process_type}", option=name)
            extra += [name, str(value)]
        port = free_port(self.bind_host)
        bind = f"tcp://{self.bind_host}:{port}"
        if process_type == SM:
            if not archive:
                raise ProcessStartError("a storage manager needs an archive directory", database=database)
            path = Path(archive)
            has_content = path.exists() and any(path.iterdir())
            if initialize and has_content:
                raise ProcessStartError("archive is not empty; start with initialize=False to reuse it",
                                        archive=archive)
            if not initialize and not has_content:
                raise ProcessStartError("archive does not exist; start with initialize=True to create it",
                                        archive=archive)
            command = [sys.executable, "-m", "workbench.zdb", "serve", str(path), "--bind", bind, *extra]
        else:
            if not primary:
                raise ProcessStartError("no running storage manager for this database", database=database)
            command = [sys.executable, "-m", "workbench.zdb", "replica", "--primary", primary, "--bind", bind, *extra]
        log_path = self.log_dir / f"{database}-{process_type.lower()}-{port}.log"
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        record = ProcessRecord(id=f"{self.peer_id}/{popen.pid}", peer=self.peer_id, database=database,
                               type=process_type, hostname=self.hostname, port=port, pid=popen.pid,
                               status=STARTING, archive=str(archive or ""))
        with self._lock:
            self.records[record.id] = record
            self._popen[record.id] = popen
        self.on_change(record.copy())
        threading.Thread(target=self._watch, args=(record.id, log_path), daemon=True,
                         name=f"watch-{record.id}").start()
        return record.copy()

    def _watch(self, process_id: str, log_path: Path) -> None:
        popen = self._popen[process_id]
        record = self.records[process_id]
        deadline = time.monotonic() + START_TIMEOUT
        while popen.poll() is None and record.status == STARTING:
            if port_open(self.bind_host, record.port):
                self._set(process_id, status=RUNNING)
                break
            if time.monotonic() > deadline:
                self._set(process_id, reason=f"did not answer within {START_TIMEOUT:.0f}s")
                os.killpg(popen.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        code = popen.wait()
        requested = process_id in self._stopping
        tail = _tail(log_path)
        if requested or code == 0:
            self._set(process_id, status=EXITED, exit_code=code)
        else:
            reason = record.reason or f"exited with code {code}"
            self._set(process_id, status=FAILED, exit_code=code, reason=f"{reason}: {tail}" if tail else reason)

    def _set(self, process_id: str, **changes: object) -> None:
        with self._lock:
            record = self.records[process_id]
            for name, value in changes.items():
                setattr(record, name, value)
            snapshot = record.copy()
        self.on_change(snapshot)

    def stop(self, process_id: str, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown: the SM syncs its journal) or SIGKILL with ``kill``."""
        popen = self._popen.get(process_id)
        if popen is None:
            raise DomainError("no such process on this peer", process=process_id, peer=self.peer_id)
        self._stopping.add(process_id)
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL if kill else signal.SIGTERM)

    def wait_stopped(self, process_id: str, timeout: float = 15.0) -> bool:
        popen = self._popen.get(process_id)
        if popen is None:
            return True
        try:
            popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop_all(self, timeout: float = 15.0) -> None:
        """Stop every process: TEs first (their clients move on), then SMs."""
        for process_type in (TE, SM):
            ids = [pid for pid, r in self.records.items() if r.type == process_type and self._popen[pid].poll() is None]
            for process_id in ids:
                self.stop(process_id)
            for process_id in ids:
                if not self.wait_stopped(process_id, timeout):
                    self.stop(process_id, kill=True)
                    self.wait_stopped(process_id, timeout)

    def running(self) -> list[ProcessRecord]:
        with self._lock:
            return [r.copy() for r in self.records.values() if r.status in (STARTING, RUNNING)]


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
