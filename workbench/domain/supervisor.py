"""An agent's process supervisor: runs zdb storage managers and transaction engines as OS processes.

Each process gets a free port, its own log file under the agent's state dir and a watcher thread
that reports its status changes: STARTING, then RUNNING once its zdb endpoint answers, then
EXITED (asked to stop, or exit code 0) or FAILED (with the exit code and the log's last lines).
The watcher blocks until something happens rather than looking on an interval: a write to the
log (inotify) sends it to try the port, the end of the process wakes it from waitpid() (or from
a pidfd, for an adopted process that is not our child).

Processes run in sessions of their own, so they outlive an agent that is killed. Each has a
record file (``processes/<pid>.json``: its record and command line) while it runs; an agent
started again on the same state dir *adopts* the processes whose pid still runs that very
command line (``recover()``), and reports the others as gone.

No process answers a stranger (see ``workbench.domain.keys``): a storage manager speaks CURVE
to its database's member key alone, on its request and change-stream sockets; a transaction
engine or standby requires a dba login, the one its options give or else the database's
derived one. Secrets never reach a command line or a record file: a dba password goes to
the process through its environment, CURVE secret keys through certificate files (0600, under
``keys/``), and a given dba login is kept for health checks in ``processes/<pid>.secret`` (0600).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.domain.errors import NoSuchProcessError, ProcessStartError
from workbench.domain.keys import DatabaseKeys
from workbench.domain.model import EXITED, FAILED, QUIESCED, RUNNING, SM, STARTING, TE, ProcessRecord
from workbench.domain.wakeups import FileWrites, ProcessEnd
from workbench.errors import DomainError
from workbench.ports import free_port, port_open
from workbench.zdb.environment import DBA_PASSWORD_VARIABLE

log = logging.getLogger(__name__)

#: options a caller may pass through to zdb processes, per type (anything else is refused)
ALLOWED_OPTIONS = {SM: frozenset({"--dba-user", "--dba-password", "--fsync", "--history"}),
                   TE: frozenset({"--dba-user", "--dba-password"})}
START_TIMEOUT = 30.0
#: how often an adopted process (not our child: no wait()) is checked for life
ADOPTED_POLL_SECONDS = 0.2


class ProcessSupervisor:
    """Starts, watches and stops this peer's database processes; reports every change to ``on_change``."""

    def __init__(self, peer_id: str, hostname: str, state_dir: Path,
                 on_change: Callable[[ProcessRecord], None], bind_host: str = "127.0.0.1",
                 keys: DatabaseKeys | None = None) -> None:
        self.peer_id = peer_id
        self.hostname = hostname
        self.bind_host = bind_host
        # Without the domain's keys (a supervisor of its own), random ones: strangers are refused all the same.
        self.keys = keys if keys is not None else DatabaseKeys(secrets.token_urlsafe(32))
        self.log_dir = Path(state_dir) / "processes"
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.key_dir = Path(state_dir) / "keys"
        self.on_change = on_change
        self.records: dict[str, ProcessRecord] = {}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping: set[str] = set()
        self._credentials: dict[str, list[str] | None] = {}  # the dba user and password a process was given
        self._lock = threading.Lock()
        self._closed = False  # set by stop_all: a start arriving later would outlive the agent

    def start(self, database: str, process_type: str, archive: str | None = None, initialize: bool | None = False,
              primary: str | None = None, options: Sequence[tuple[str, str]] = (),
              standby: bool = False) -> ProcessRecord:
        """Spawn a process and return its record (STARTING); watching goes on in a thread.

        ``initialize=None`` creates the archive when it is empty and reuses it otherwise. A
        ``standby`` SM keeps a current copy of the data by following ``primary`` (no archive).
        """
        if self._closed:
            raise ProcessStartError("this agent is stopping", database=database, type=process_type)
        if process_type not in (SM, TE):
            raise ProcessStartError("process type is SM or TE", type=process_type)
        if not database or not database.replace("-", "").replace("_", "").isalnum():
            raise ProcessStartError("database names are letters, digits, - and _", database=database)
        allowed = ALLOWED_OPTIONS[TE if standby else process_type]  # a standby runs as a zdb replica
        for name, _ in options:
            if name not in allowed:
                raise ProcessStartError(f"option {name} is not allowed for a {process_type}", option=name)
        serves_as_replica = process_type == TE or standby
        credentials = _dba_credentials(options)
        if bool(dict(options).get("--dba-user")) != bool(dict(options).get("--dba-password")):
            raise ProcessStartError("--dba-user and --dba-password go together", database=database)
        if serves_as_replica and credentials is None:
            # An engine serves the database's data: without a login of its own it gets the
            # database's derived one, which only holders of the domain password can compute.
            credentials = list(self.keys.dba(database))
        extra: list[str] = []
        environment = dict(os.environ)
        environment.pop(DBA_PASSWORD_VARIABLE, None)
        if credentials is not None:
            extra.append(f"--dba-user={credentials[0]}")  # one word, so a value starting with "-" stays a value
            # Through the environment: a command line is visible to every user through ps.
            environment[DBA_PASSWORD_VARIABLE] = credentials[1]
        for name, value in options:
            if name not in ("--dba-user", "--dba-password"):
                extra.append(f"{name}={value}")
        extra += self._curve_arguments(database, serves_as_replica)
        port = free_port(self.bind_host)
        bind = f"tcp://{self.bind_host}:{port}"
        if process_type == SM and not standby:
            if not archive:
                raise ProcessStartError("a storage manager needs an archive directory", database=database)
            path = Path(archive)
            has_content = path.exists() and any(path.iterdir())
            if initialize is None:
                initialize = not has_content
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
            # A session of its own: the process outlives a killed agent, which adopts it again.
            popen = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=environment)
        record = ProcessRecord(id=f"{self.peer_id}/{popen.pid}", peer=self.peer_id, database=database,
                               type=process_type, hostname=self.hostname, port=port, pid=popen.pid,
                               status=STARTING, archive=str(archive or "") if not standby else "", standby=standby,
                               primary=(primary or "") if (process_type == TE or standby) else "")
        with self._lock:
            closed_meanwhile = self._closed
            if not closed_meanwhile:
                self.records[record.id] = record
                self._popen[record.id] = popen
                self._credentials[record.id] = credentials
        if closed_meanwhile:  # stop_all ran while it was spawning: it would never stop this one
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise ProcessStartError("this agent is stopping", database=database, type=process_type)
        self._write_record_file(record, command, log_path)
        self.on_change(record.copy())
        threading.Thread(target=self._watch, args=(record.id, log_path), daemon=True,
                         name=f"watch-{record.id}").start()
        return record.copy()

    # -- record files and adoption ----------------------------------------------------------------
    def _record_path(self, pid: int) -> Path:
        return self.log_dir / f"{pid}.json"

    def _secret_path(self, pid: int) -> Path:
        return self.log_dir / f"{pid}.secret"

    def _write_record_file(self, record: ProcessRecord, command: list[str], log_path: Path) -> None:
        data = {"record": asdict(record), "command": command, "log": str(log_path)}
        _write_private(self._record_path(record.pid), json.dumps(data))
        credentials = self._credentials.get(record.id)
        if credentials is not None:
            # Apart from the record: the login an adopted process is health-checked and quiesced with.
            _write_private(self._secret_path(record.pid), json.dumps(credentials))

    def _read_credentials(self, pid: int) -> list[str] | None:
        try:
            credentials = json.loads(self._secret_path(pid).read_text())
        except (OSError, ValueError):
            return None
        return [str(part) for part in credentials] if isinstance(credentials, list) and len(credentials) == 2 else None

    def _forget_files(self, pid: int) -> None:
        self._record_path(pid).unlink(missing_ok=True)
        self._secret_path(pid).unlink(missing_ok=True)

    def _curve_arguments(self, database: str, serves_as_replica: bool) -> list[str]:
        """The CURVE flags of a process of ``database``: a member of it (replica) or its storage manager.

        The certificate files are written from the derived keys (0600, in 0700 directories), so
        they always match the domain password the agent runs with; each side gets only the
        secret half it uses.
        """
        sm_keys, member_keys = self.keys.storage_manager(database), self.keys.member(database)
        if serves_as_replica:
            directory = _private_directory(self.key_dir / database / "member")
            _write_certificate(directory / "storage-manager.key", sm_keys.public)
            _write_certificate(directory / "member.key_secret", member_keys.public, member_keys.secret)
            return [f"--server-key={directory / 'storage-manager.key'}",
                    f"--client-cert={directory / 'member.key_secret'}"]
        directory = _private_directory(self.key_dir / database / "storage-manager")
        allowed = _private_directory(directory / "allowed")
        _write_certificate(directory / "storage-manager.key_secret", sm_keys.public, sm_keys.secret)
        _write_certificate(allowed / "member.key", member_keys.public)
        return [f"--curve-cert={directory / 'storage-manager.key_secret'}", f"--allow-keys={allowed}"]

    def recover(self) -> list[ProcessRecord]:
        """Adopt the processes a previous run of this agent started that still run; forget the others.

        A record file counts only if its pid runs the very command line it started (a pid reused
        by another program is not ours). Returns the final records of the processes found dead.
        """
        gone: list[ProcessRecord] = []
        for path in sorted(self.log_dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                record = ProcessRecord(**data["record"])
                command = [str(part) for part in data["command"]]
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("ignoring unreadable process record %s: %s", path, exc)
                path.unlink(missing_ok=True)
                if path.stem.isdigit():
                    self._secret_path(int(path.stem)).unlink(missing_ok=True)
                continue
            # Our id may have changed with the host name or port; the process is the same.
            record.id, record.peer, record.hostname = f"{self.peer_id}/{record.pid}", self.peer_id, self.hostname
            credentials = self._read_credentials(record.pid)
            if not _runs(record.pid, command):
                self._forget_files(record.pid)
                record.status, record.reason = FAILED, "exited while its agent was down"
                gone.append(record)
                continue
            record.status = RUNNING if port_open(self.bind_host, record.port) else STARTING
            if record.type == SM and not record.standby:
                record.status = self._queried_status(record, credentials) or record.status
            with self._lock:
                self.records[record.id] = record
                self._credentials[record.id] = credentials
            self._write_record_file(record, command, Path(data.get("log", "")))
            log.info("adopted %s %s of %s (pid %d)", record.type, record.id, record.database, record.pid)
            threading.Thread(target=self._watch_adopted, args=(record.id, command), daemon=True,
                             name=f"watch-{record.id}").start()
        return gone

    def _queried_status(self, record: ProcessRecord, credentials: Any) -> str | None:
        """RUNNING or QUIESCED as the storage manager itself says (None when it does not answer)."""
        try:
            status = self._zdb_request(record, credentials, "status")
        except Exception as exc:  # noqa: BLE001 - any failure only means "ask again later"
            log.debug("status of adopted %s: %s", record.id, exc)
            return None
        return QUIESCED if status.get("quiesced") else RUNNING

    def _watch_adopted(self, process_id: str, command: list[str]) -> None:
        record = self.records[process_id]
        # Not our child, so no wait(): a pidfd wakes us when it ends (opened before the check
        # below, it is on the very process that check saw). Without pidfds, look on an interval.
        with ProcessEnd(record.pid) as end:
            while _runs(record.pid, command):
                if record.status == STARTING:
                    if port_open(self.bind_host, record.port):
                        self._set(process_id, status=RUNNING)
                    end.wait(ADOPTED_POLL_SECONDS)
                else:
                    end.wait(None if end.immediate else ADOPTED_POLL_SECONDS)
        # Not our child: its exit code went to whoever reaped it.
        if process_id in self._stopping:
            self._set(process_id, status=EXITED)
        else:
            self._set(process_id, status=FAILED, reason="exited (exit code unknown: adopted after an agent restart)")

    def _watch(self, process_id: str, log_path: Path) -> None:
        popen = self._popen[process_id]
        record = self.records[process_id]
        deadline = time.monotonic() + START_TIMEOUT
        # A zdb process logs "... serving on ..." once bound: each write to its log wakes us to
        # try its port at once. The interval catches an early death (and is all, without inotify).
        with FileWrites(log_path) as writes:
            while popen.poll() is None and record.status == STARTING:
                if port_open(self.bind_host, record.port):
                    self._set(process_id, status=RUNNING)
                    break
                if time.monotonic() > deadline:
                    self._set(process_id, reason=f"did not answer within {START_TIMEOUT:.0f}s")
                    os.killpg(popen.pid, signal.SIGKILL)
                    break
                writes.wait(0.01)
        code = popen.wait()  # blocks in waitpid(): the death of a child wakes us at once
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
            if record.status in (EXITED, FAILED):
                return  # final: nothing changes a process that has ended
            for name, value in changes.items():
                setattr(record, name, value)
            snapshot = record.copy()
            if snapshot.status in (EXITED, FAILED):
                self._forget_files(snapshot.pid)
        self.on_change(snapshot)

    def _alive(self, process_id: str) -> bool:
        popen = self._popen.get(process_id)
        if popen is not None:
            return popen.poll() is None
        record = self.records.get(process_id)
        return record is not None and record.status not in (EXITED, FAILED)

    def stop(self, process_id: str, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown: the SM syncs its journal) or SIGKILL with ``kill``."""
        record = self.records.get(process_id)
        if record is None:
            raise NoSuchProcessError("no such process on this peer", process=process_id, peer=self.peer_id)
        self._stopping.add(process_id)
        if self._alive(process_id):
            try:
                os.killpg(record.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass  # it ended on its own meanwhile; its watcher reports it

    def wait_stopped(self, process_id: str, timeout: float = 15.0) -> bool:
        popen = self._popen.get(process_id)
        if popen is None:  # adopted: its watcher notices the end
            deadline = time.monotonic() + timeout
            while self._alive(process_id):
                if time.monotonic() > deadline:
                    return False
                time.sleep(ADOPTED_POLL_SECONDS)
            return True
        try:
            popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def quiesce(self, process_id: str, quiesced: bool) -> ProcessRecord:
        """Ask a storage manager to refuse writes (``quiesced``) or take them again; its status follows."""
        record = self.records.get(process_id)
        if record is None:
            raise NoSuchProcessError("no such process on this peer", process=process_id, peer=self.peer_id)
        if record.type != SM or record.standby:
            raise DomainError("only a database's storage manager is quiesced", process=process_id)
        try:
            self._zdb_request(record, self._credentials.get(process_id), "quiesce" if quiesced else "unquiesce")
        except Exception as exc:  # noqa: BLE001 - reported to the caller with the reason
            raise DomainError(f"the storage manager did not {'quiesce' if quiesced else 'unquiesce'}: {exc}",
                              process=process_id) from None
        self._set(process_id, status=QUIESCED if quiesced else RUNNING)
        return self.records[process_id].copy()

    def _zdb_request(self, record: ProcessRecord, credentials: Any, kind: str) -> dict[str, Any]:
        from workbench.zdb.client import Client

        user, password = credentials if credentials else (None, None)
        server = self.keys.storage_manager(record.database)
        with Client(record.endpoint, timeout=5.0, retries=0, user=user, password=password,
                    server_key=server.public, keys=self.keys.member(record.database)) as connection:
            result, _ = connection.request(kind)
        return result

    def stop_all(self, timeout: float = 15.0) -> None:
        """Stop every process: TEs first (their clients move on), then SMs; refuse new starts."""
        with self._lock:
            self._closed = True
        for process_type in (TE, SM):
            ids = [pid for pid, r in self.records.items() if r.type == process_type and self._alive(pid)]
            for process_id in ids:
                self.stop(process_id)
            for process_id in ids:
                if not self.wait_stopped(process_id, timeout):
                    self.stop(process_id, kill=True)
                    self.wait_stopped(process_id, timeout)

    def running(self) -> list[ProcessRecord]:
        with self._lock:
            return [r.copy() for r in self.records.values() if r.status in (STARTING, RUNNING)]


def _dba_credentials(options: Sequence[tuple[str, str]]) -> list[str] | None:
    given = dict(options)
    return [str(given["--dba-user"]), str(given["--dba-password"])] \
        if given.get("--dba-user") and given.get("--dba-password") else None


def _private_directory(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for part in (path, *list(path.parents)[:2]):  # keys/, keys/<database>/ and this one
        if part.name and part.exists() and part.stat().st_uid == os.getuid():
            os.chmod(part, 0o700)
    return path


def _write_certificate(path: Path, public: str, secret: str | None = None) -> None:
    """A ZeroMQ certificate file, replaced atomically: a process starting meanwhile reads a whole one."""
    lines = ["metadata", "curve", f'    public-key = "{public}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret}"')
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    _write_private(temporary, "\n".join(lines) + "\n")
    os.replace(temporary, path)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created so: never briefly readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of the same name may have had another mode
    with os.fdopen(fd, "w") as stream:
        stream.write(text)


def _runs(pid: int, command: list[str]) -> bool:
    """Whether ``pid`` is a live (not zombie) process running exactly ``command``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            running = cmdline.read().split(b"\0")[:-1]
    except (OSError, IndexError):
        return False
    return state != b"Z" and [part.decode(errors="replace") for part in running] == command


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
