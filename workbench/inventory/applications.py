"""Applications: scripts run in a forked child against a copy of the image, and their authorizations.

::

    runner = ApplicationRunner(inventory, store, workdir)
    result = runner.run(script_text, "report.py", args=["--top", "5"], write=False, timeout=60)
    result.status, result.exit_code, result.stdout, result.changes

The child is forked while the image's lock is held, so it starts from one consistent state and
shares the parent's memory copy-on-write (no reload, no serialization of the image). Its stdout
and stderr go to files the parent reads afterwards. A read-write child writes its journal of
changes to a file only after the script ended with exit code 0; the parent reads that file only
when the child's exit status is 0, so an exception, a non-zero exit, a signal or a timeout (the
parent kills the child's whole process group) leaves nothing to apply.

A child runs with its caller's identity: given ``run_as`` (a root server serving another user)
it takes that user's groups, gid and uid before the script's first line, after opening the
files it reports through; it never runs with more than its caller has.

Every child is reaped, whatever happens to the request that started it.

Writing applications must be authorized: ``authorize`` stores the SHA-256 of the script under a
(title, user); a run with ``write`` is refused unless the stored checksum equals the script's.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import pwd
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select as sql_select, update

from workbench.inventory import dynamo, executable
from workbench.inventory.access import Caller
from workbench.inventory.dataformat import DataFormatError
from workbench.inventory.errors import ApplicationRefused
from workbench.inventory.inventory import Change, Inventory
from workbench.inventory.store import Store, authorizations_table

#: bytes of stdout / stderr returned to the caller (the end is kept)
OUTPUT_LIMIT = 1024 * 1024
DEFAULT_TIMEOUT = 3600.0


def script_checksum(script: str | bytes) -> str:
    """SHA-256 (hex) of a script's content, the key of its authorization."""
    data = script.encode() if isinstance(script, str) else script
    return hashlib.sha256(data).hexdigest()


# -- authorizations ----------------------------------------------------------------------------------
def authorize(store: Store, script: str, title: str, user: str) -> dict[str, Any]:
    """Authorize ``script`` to write as (title, user); replaces an earlier authorization of the pair."""
    _check_label(title, "title")
    _check_label(user, "user")
    checksum = script_checksum(script)
    with store.engine.begin() as conn:
        conn.execute(delete(authorizations_table).where((authorizations_table.c.title == title)
                                                        & (authorizations_table.c.user == user)))
        conn.execute(insert(authorizations_table).values(title=title, user=user, checksum=checksum,
                                                         authorized=time.time()))
    return {"title": title, "user": user, "checksum": checksum}


def revoke(store: Store, title: str, user: str) -> bool:
    """Remove the authorization of (title, user); False when there was none."""
    with store.engine.begin() as conn:
        return conn.execute(delete(authorizations_table).where((authorizations_table.c.title == title)
                                                               & (authorizations_table.c.user == user))).rowcount > 0


def authorizations(store: Store) -> list[dict[str, Any]]:
    """Every authorization, by title then user."""
    with store.engine.connect() as conn:
        rows = conn.execute(sql_select(authorizations_table).order_by(authorizations_table.c.title,
                                                                      authorizations_table.c.user)).all()
    return [{"title": r.title, "user": r.user, "checksum": r.checksum, "authorized": r.authorized} for r in rows]


def check_authorized(store: Store, script: str, title: str, user: str) -> str:
    """The script's checksum if (title, user) is authorized for exactly this content, else ``ApplicationRefused``."""
    checksum = script_checksum(script)
    with store.engine.connect() as conn:
        stored = conn.execute(sql_select(authorizations_table.c.checksum).where(
            (authorizations_table.c.title == title) & (authorizations_table.c.user == user))).scalar()
    if stored is None:
        raise ApplicationRefused(f"this application is not authorized to write as {user!r}: an admin of the server "
                                 "authorizes it with exec-auth",
                                 title=title, user=user, checksum=checksum, reason="not-authorized")
    if stored != checksum:
        raise ApplicationRefused("the script changed since it was authorized: an admin of the server authorizes "
                                 "it again with exec-auth",
                                 title=title, user=user, checksum=checksum, authorized_checksum=stored,
                                 reason="checksum")
    return checksum


def _check_label(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ApplicationRefused(f"{name} must be a non-empty string of at most 128 characters", reason=name,
                                 **{name: value})


# -- running ---------------------------------------------------------------------------------------------
@dataclass
class ApplicationResult:
    """How a run ended: ``status`` is done (exit 0), failed (non-zero exit), killed (signal) or timeout."""

    status: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0
    signal: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr,
                "changes": len(self.changes), "seconds": round(self.seconds, 3), "signal": self.signal}


class ApplicationRunner:
    """Runs scripts in forked children of this process against ``inventory``.

    ``store`` (optional) lets a child load block files lazily through its own connections.
    """

    def __init__(self, inventory: Inventory, store: Store | None = None, workdir: str | Path | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.inventory = inventory
        self.store = store
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir())
        self.timeout = timeout
        self._children: dict[int, float] = {}
        self._lock = threading.Lock()

    def run(self, script: str, name: str = "<application>", args: list[str] | tuple[str, ...] = (),
            write: bool = False, timeout: float | None = None, run_as: Caller | None = None) -> ApplicationResult:
        """Run ``script`` to its end (or until ``timeout`` seconds, then kill it), as ``run_as`` if given."""
        if not isinstance(script, str) or not isinstance(name, str) or \
                not all(isinstance(arg, str) for arg in args):
            raise ApplicationRefused("script, name and args must be strings", reason="arguments")
        try:
            code = compile(script, name, "exec")
        except (SyntaxError, ValueError) as exc:
            return ApplicationResult("failed", 1, "", f"{type(exc).__name__}: {exc}\n")
        limit = self.timeout if timeout is None else timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="app-", dir=self.workdir) as tmp:
            paths = {name_: os.path.join(tmp, name_) for name_ in ("stdout", "stderr", "changes")}
            began = time.monotonic()
            # looked up before the fork: the password and group databases are not safe to read in a
            # child forked from a threaded process (a lock another thread held stays held there)
            identity = _Identity.of(run_as) if run_as is not None else None
            with self.inventory.lock:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child, which never returns
                    self._child(code, name, list(args), write, paths, identity)
            with self._lock:
                self._children[pid] = began
            try:
                status, timed_out = self._wait(pid, limit)
            except BaseException:
                # whatever stopped the wait, the child is killed and reaped: no zombie, no orphan
                self._kill(pid)
                _reap(pid)
                raise
            finally:
                with self._lock:
                    self._children.pop(pid, None)
            seconds = time.monotonic() - began
            stdout, stderr = _tail(paths["stdout"]), _tail(paths["stderr"])
            if timed_out:
                return ApplicationResult("timeout", None, stdout, stderr + f"\nkilled after {limit:g}s\n",
                                         seconds=seconds, signal=signal.SIGKILL)
            if os.WIFSIGNALED(status):
                return ApplicationResult("killed", None, stdout, stderr, seconds=seconds,
                                         signal=os.WTERMSIG(status))
            exit_code = os.WEXITSTATUS(status)
            if exit_code != 0:
                return ApplicationResult("failed", exit_code, stdout, stderr, seconds=seconds)
            changes: list[Change] = []
            if write:
                with open(paths["changes"], encoding="utf-8") as journal:
                    items = json.load(journal)  # one document: one parse in C, not one per change
                if not isinstance(items, list):
                    raise DataFormatError("the change journal is not a list", kind=None, field="changes",
                                          value=type(items).__name__)
                changes = [Change.from_json(item) for item in items]
            return ApplicationResult("done", 0, stdout, stderr, changes, seconds)

    def _wait(self, pid: int, limit: float) -> tuple[int, bool]:
        deadline = time.monotonic() + limit
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return status, False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill(pid)
                    return os.waitpid(pid, 0)[1], True
                if pidfd is not None:
                    select.select([pidfd], [], [], remaining)
                else:
                    time.sleep(min(0.05, remaining))
        finally:
            if pidfd is not None:
                os.close(pidfd)

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)  # the child leads its own group: take its children too
        except ProcessLookupError:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        """Kill every running child (server shutdown)."""
        with self._lock:
            pids = list(self._children)
        for pid in pids:
            self._kill(pid)

    def _child(self, code: Any, name: str, args: list[str], write: bool, paths: dict[str, str],
               identity: _Identity | None = None) -> None:
        status = 1
        try:
            os.setsid()
            for fd, path in ((1, paths["stdout"]), (2, paths["stderr"])):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(target, fd)
                os.close(target)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            _release_inherited_descriptors()
            # opened before the identity changes: the dropped child cannot create files in our temp dir
            changes_fd = os.open(paths["changes"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if write else -1
            if identity is not None:
                identity.become()
            _die_with_parent()  # after _become: a change of uid clears the parent-death signal
            sys.stdin = open(0, closefd=False)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            inventory = self.inventory
            # The copy belongs to this process alone: a fresh lock, no listeners, no write-through.
            inventory.lock = threading.RLock()
            inventory.emit_events = False
            inventory._sinks = []
            journal: list[Change] = []
            if write:
                inventory.add_sink(lambda change, writes: journal.append(change))
            if self.store is not None:
                self.store.after_fork()
            executable.inventory = inventory
            executable.read_only = not write
            executable.authorized = write
            dynamo.install()  # Dynamo's applications import dynamo.dataformat and dynamo.core.executable
            sys.argv = [name, *args]
            namespace = {"__name__": "__main__", "__file__": name, "__builtins__": builtins}
            try:
                exec(code, namespace)  # noqa: S102 - running the user's application is the point
                status = 0
            except SystemExit as exc:
                if exc.code is None:
                    status = 0
                elif isinstance(exc.code, int):
                    status = exc.code & 0xFF
                else:
                    print(exc.code, file=sys.stderr)
                    status = 1
            except BaseException as exc:  # noqa: BLE001 - any failure of the script is a non-zero exit
                # the traceback starts in the script: the runner's own frame is of no use to its author
                traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
                status = 1
            if status == 0 and write:
                with open(changes_fd, "w", encoding="utf-8") as out:
                    out.write(json.dumps([change.to_json() for change in journal], separators=(",", ":")))
        except BaseException:  # noqa: BLE001 - the child must never return into the server's code
            try:
                traceback.print_exc()
            except BaseException:  # noqa: BLE001
                pass
            status = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # noqa: BLE001
                pass
            os._exit(status)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class _Identity:
    """Who a child becomes: uid, gid, supplementary groups, login name and home (None: no account)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str | None

    @classmethod
    def of(cls, caller: Caller) -> _Identity:
        try:
            home: str | None = pwd.getpwuid(caller.uid).pw_dir
        except KeyError:
            home = None
        return cls(caller.uid, caller.gid, tuple(caller.groups()), caller.name, home)

    def become(self) -> None:
        """Take these groups, gid and uid for good (in the child; it exits unless all three took)."""
        os.setgroups(list(self.groups))
        os.setgid(self.gid)
        os.setuid(self.uid)
        if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (self.uid, self.uid, self.gid, self.gid):
            os._exit(1)
        if self.home is None:  # no account: no home of the server's either
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = self.home
        os.environ["USER"] = os.environ["LOGNAME"] = self.name


def _release_inherited_descriptors() -> None:
    """Point every inherited descriptor above 2 at /dev/null.

    The child must not keep the server's listening sockets or database connections alive (a
    restarted server could not bind its port). The numbers stay taken, so closing a stale
    Python object later cannot close a file the script opened.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2 and fd != null:
                try:
                    os.dup2(null, fd)
                except OSError:
                    pass  # the descriptor of the listing itself, already closed
    except OSError:
        pass  # no /proc: keep what was inherited
    finally:
        os.close(null)


def _die_with_parent() -> None:
    """Ask Linux to kill this child if the server dies: an orphan's changes would never be applied."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the request took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _tail(path: str, limit: int = OUTPUT_LIMIT) -> str:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - limit))
            data = stream.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text if size <= limit else f"[... {size - limit} bytes cut ...]\n" + text


__all__ = ["ApplicationRefused", "ApplicationResult", "ApplicationRunner", "authorizations", "authorize",
           "check_authorized", "revoke", "script_checksum"]
