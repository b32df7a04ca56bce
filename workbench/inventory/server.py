"""The inventory server: RAM image, application port, web server, and primary/secondary roles.

::

    server = InventoryServer("sqlite:///inventory.db", web_port=None).start()
    server.address              # the application port: a Unix socket's path (a private one here)
    server.apply_changes([...]) # how applications and web modules change the image
    server.stop()

Every server holds its own RAM image loaded from the shared database. One server is the
*primary*: it alone writes, applying each batch of changes to its image and to the database in
one transaction that also appends the changes to ``inv_changes``. *Secondary* servers follow that
table in order (no ports between servers: every ``poll_interval``, 0.05 s by default, one
single-row read of ``inv_state``, then the new changes in bulk), report their status (starting, online, updating,
out-of-sync) in ``inv_servers``, and reload the whole image when they find a gap. Every server
beats its row in ``inv_servers``; when the primary's beat stops for ``takeover_after`` seconds a
secondary takes the role with a compare-and-set on ``inv_state`` and catches up before writing.
A batch interrupted by a crash was never committed, so no server ever sees half of it.

The application port is a Unix socket: every request comes with the caller's uid from the
kernel, and ``access.AccessPolicy`` decides what it may do (admins authorize and revoke; an
application runs with its caller's uid, never more).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import insert, select, update

from workbench.errors import InventoryError
from workbench.inventory import applications
from workbench.inventory.applications import ApplicationRefused, ApplicationRunner
from workbench.inventory.inventory import Change, Inventory
from workbench.inventory.access import AccessPolicy, Caller
from workbench.inventory.protocol import ProtocolError, check_request
from workbench.inventory.store import NotPrimaryError, Store, WriterBusyError, applications_table, servers_table, state_table
from workbench.inventory.transport import FrameServer
from workbench.servers import Address, ServerLifecycle

log = logging.getLogger(__name__)

DEFAULT_WEB_PORT = 8081
STARTING, ONLINE, UPDATING, OUT_OF_SYNC, STOPPED = "starting", "online", "updating", "out-of-sync", "stopped"


#: the store's seq, the primary's id and its row's beat and status (NULL when it has no row)
_STATE_QUERY = (select(state_table.c.seq, state_table.c.master_id, servers_table.c.beat, servers_table.c.status)
                .select_from(state_table.outerjoin(servers_table, servers_table.c.id == state_table.c.master_id))
                .where(state_table.c.id == 1))


class InventoryServer(ServerLifecycle):
    """One inventory server process's worth of state and threads.

    ``store_url`` is the shared database; ``master_url`` (secondaries) names the primary's database
    and defaults to ``store_url``. A secondary whose ``store_url`` differs keeps a copy of the image
    there (rewritten at each load, then written through change by change) while it is a secondary. A server started without ``master_url`` becomes the primary unless
    a live primary exists; with it, it starts as a secondary. ``web_port=None`` runs no web server;
    ``web_factory(inventory, port, apply)`` builds the web server (default: the package's
    ``WebServer`` on ``host``).

    ``socket_path`` is the application port (default: a new socket in a private temporary
    directory, reachable by this uid and root alone). ``admins`` (user names or uids) may
    authorize and revoke besides this process's uid and root; ``users`` may run applications
    (``"*"``: every local user), each as itself.
    """

    def __init__(self, store_url: str, *, host: str = "127.0.0.1", socket_path: str | None = None,
                 admins: tuple[str, ...] | list[str] = (), users: tuple[str, ...] | list[str] = (),
                 web_port: int | None = DEFAULT_WEB_PORT, master_url: str | None = None,
                 server_id: str | None = None, heartbeat: float = 1.0, takeover_after: float = 10.0,
                 poll_interval: float = 0.05, app_timeout: float = applications.DEFAULT_TIMEOUT,
                 writer_wait: float = 30.0, lazy_files: bool = False, workdir: str | None = None,
                 keep_changes: int = 100000, prune_every: float = 60.0,
                 web_factory: Callable[[Inventory, int, Callable[..., Any]], Any] | None = None) -> None:
        super().__init__()
        self.secondary_requested = master_url is not None
        # The shared database carries the change log, roles and heartbeats; a secondary given its
        # own --store keeps a full copy there too (a backup of the primary's database).
        self.store = Store(master_url or store_url)
        self.local_store = Store(store_url) if master_url is not None and master_url != store_url else None
        self.host = host
        self.requested_socket = socket_path
        self.policy = AccessPolicy(admins, users)
        self._private_dir: str | None = None
        self.web_port_requested = web_port
        self.server_id = server_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.heartbeat = heartbeat
        self.takeover_after = takeover_after
        self.poll_interval = poll_interval
        self.app_timeout = app_timeout
        self.writer_wait = writer_wait
        self.lazy_files = lazy_files and not self.secondary_requested
        self.web_factory = web_factory
        self.keep_changes = keep_changes
        self.prune_every = prune_every
        self.inventory = Inventory(f"inventory-{self.server_id}")
        self.inventory.loaded = False
        self.runner = ApplicationRunner(self.inventory, self.store, workdir, app_timeout)
        self.role = "secondary"
        self.status = STARTING
        self.applied_seq = 0
        self.frames: FrameServer | None = None
        self.web: Any = None
        self._sync_thread: threading.Thread | None = None
        self._writer = threading.Lock()
        self._state_lock = threading.RLock()
        self._beat = 0
        self._seen: tuple[Any, Any] | None = None
        self._seen_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<InventoryServer {self.server_id}: {self.role}, {self.status}>"

    # -- lifecycle (start(), stop() and serve_forever() are ServerLifecycle's) ----------------------
    def _start(self) -> None:
        """Load the image, take a role, open the ports; returns once everything answers."""
        self._beat_row()
        self._reload()
        if not self.secondary_requested:
            self._claim_primary_at_start()
        path = self.requested_socket
        if path is None:
            self._private_dir = tempfile.mkdtemp(prefix="workbench-inventory-")
            path = os.path.join(self._private_dir, "app.sock")
        self.frames = FrameServer(path, self.handle, on_connect=self.policy.check_connect).start()
        if self.web_port_requested is not None:
            self._start_web()
        self.status = ONLINE
        self._beat_row()
        self._sync_thread = threading.Thread(target=self._sync_loop, name=f"inventory-sync-{self.server_id}",
                                             daemon=True)
        self._sync_thread.start()
        log.info("inventory server %s online as %s on %s", self.server_id, self.role, self.address)

    def _start_web(self) -> None:
        assert self.web_port_requested is not None
        if self.web_factory is not None:
            web = self.web_factory(self.inventory, self.web_port_requested, self.apply_changes)
        else:
            try:
                from workbench.inventory.web.server import WebServer
            except ImportError:  # the web part is optional
                log.warning("workbench.inventory.web is not available: no web server")
                return
            web = WebServer(self.inventory, port=self.web_port_requested, address=self.host, apply=self.apply_changes)
        # Writes from web modules go through apply_changes: the primary's one write slot and its store.
        self.web = web.start()

    @property
    def address(self) -> Address:
        """The application port: its socket's path."""
        assert self.frames is not None, "not started"
        return self.frames.address

    @property
    def web_url(self) -> str | None:
        return None if self.web is None else self.web.url

    def _stop(self) -> None:
        """Stop threads and ports; a primary gives up its role so a secondary takes over at once."""
        if self._sync_thread is not None:
            self._sync_thread.join(10)
        self.runner.kill_all()
        if self.web is not None:
            self.web.stop()
        if self.frames is not None:
            self.frames.stop()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
        try:
            with self.store.engine.begin() as conn:
                conn.execute(update(state_table).where((state_table.c.id == 1)
                                                       & (state_table.c.master_id == self.server_id))
                             .values(master_id=None))
                self.status = STOPPED
                conn.execute(update(servers_table).where(servers_table.c.id == self.server_id)
                             .values(status=STOPPED, updated=time.time()))
        except Exception:  # noqa: BLE001 - the database may be gone already; nothing to clean then
            log.warning("could not record the stop of %s", self.server_id, exc_info=True)
        self.inventory.close()
        self.store.close()
        if self.local_store is not None:
            self.local_store.close()

    # -- roles ----------------------------------------------------------------------------------------
    def _read_state(self) -> tuple[int, str | None, int | None]:
        """(last seq, primary id, primary's beat or None when it has no live row)."""
        # One round trip: secondaries ask this at every poll, and the benchmark's status queries too.
        with self.store.engine.connect() as conn:
            seq, master, beat, status = conn.execute(_STATE_QUERY).one()
        return seq, master, None if beat is None or status == STOPPED else beat

    def _claim_primary_at_start(self) -> None:
        _, master, beat = self._read_state()
        if master is not None and beat is not None and master != self.server_id:
            # another primary may be alive: watch its beat for a while before taking over
            deadline = time.monotonic() + self.takeover_after
            while time.monotonic() < deadline:
                time.sleep(self.heartbeat / 2)
                _, now_master, now_beat = self._read_state()
                if (now_master, now_beat) != (master, beat):
                    log.info("primary %s is alive: %s starts as a secondary", now_master, self.server_id)
                    return
        self._take_over(master)

    def _take_over(self, old_master: str | None) -> bool:
        with self.store.engine.begin() as conn:
            condition = (state_table.c.master_id == old_master) if old_master is not None \
                else state_table.c.master_id.is_(None)
            won = conn.execute(update(state_table).where((state_table.c.id == 1) & condition)
                               .values(master_id=self.server_id, writer=None, writer_server=None)).rowcount == 1
        if not won:
            return False
        # Nothing new can be committed now (we are the primary): apply what we have not seen yet.
        self._follow()
        with self._state_lock:
            self.role = "primary"
        if self.local_store is not None:
            log.warning("%s: as the primary it writes the shared database; its local copy stays at seq %s",
                        self.server_id, self.applied_seq)
        log.info("%s is the primary now (was %s)", self.server_id, old_master)
        self.inventory.emit("role_changed", {"server": self.server_id, "role": "primary", "previous": old_master})
        self._beat_row()
        return True

    # -- the sync thread ----------------------------------------------------------------------------------
    def _sync_loop(self) -> None:
        next_beat = 0.0
        next_prune = time.monotonic() + self.prune_every
        while not self._stopping.wait(self.poll_interval):
            try:
                now = time.monotonic()
                if now >= next_beat:
                    self._beat_row()
                    next_beat = now + self.heartbeat
                self._sync_once()
                if self.role == "primary" and now >= next_prune:
                    # a secondary further behind than this reloads the whole image instead
                    self.store.prune_changes(self.keep_changes)
                    next_prune = now + self.prune_every
            except Exception:  # noqa: BLE001 - a database hiccup must not end the thread
                log.warning("%s: sync failed; retrying", self.server_id, exc_info=True)

    def _sync_once(self) -> None:
        seq, master, beat = self._read_state()
        if self.role == "primary":
            if master != self.server_id:
                log.warning("%s lost the primary role to %s", self.server_id, master)
                with self._state_lock:
                    self.role = "secondary"
                self.inventory.emit("role_changed", {"server": self.server_id, "role": "secondary",
                                                     "previous": self.server_id})
            return
        if seq != self.applied_seq:
            self._follow(seq)
        now = time.monotonic()
        if (master, beat) != self._seen:
            self._seen, self._seen_at = (master, beat), now
        elif master is None or beat is None or now - self._seen_at >= self.takeover_after:
            if self._take_over(master):
                self._seen = None

    def _beat_row(self) -> None:
        self._beat += 1
        values = {"host": self.host, "app_port": 0, "app_socket": self.frames.address if self.frames else None,
                  "web_port": self.web.port if self.web is not None else None, "status": self.status,
                  "role": self.role, "applied_seq": self.applied_seq, "beat": self._beat, "updated": time.time()}
        with self.store.engine.begin() as conn:
            if conn.execute(update(servers_table).where(servers_table.c.id == self.server_id)
                            .values(**values)).rowcount == 0:
                conn.execute(insert(servers_table).values(id=self.server_id, **values))

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.inventory.emit("status_changed", {"server": self.server_id, "status": status})
            try:
                self._beat_row()
            except Exception:  # noqa: BLE001 - the next beat reports it
                log.debug("status beat failed", exc_info=True)

    def _follow(self, store_seq: int | None = None) -> None:
        """Apply committed changes after ``applied_seq`` in order; reload on a gap or an error.

        ``store_seq`` is the store's seq read just before: changes missing below it mean the log
        was pruned past us.
        """
        rows = self.store.changes_since(self.applied_seq)
        first = rows[0][0] if rows else None
        if (first is not None and first != self.applied_seq + 1) or \
                (first is None and store_seq is not None and store_seq > self.applied_seq):
            log.warning("%s: change log starts at %s, expected %s: reloading", self.server_id, first,
                        self.applied_seq + 1)
            self._reload(out_of_sync=True)
            return
        if not rows:
            return
        self._set_status(UPDATING)
        try:
            batch: list[Change] = []
            for index, (seq, batch_id, change) in enumerate(rows):
                batch.append(change)
                if index + 1 == len(rows) or rows[index + 1][1] != batch_id:
                    with self.inventory.lock:
                        if self.local_store is not None:
                            self.local_store.apply_and_write(self.inventory, batch)
                        else:
                            self.inventory.apply_all(batch)
                        self.applied_seq = seq
                    self.inventory.emit("changes_applied", {"seq": seq, "batch": batch_id, "changes": len(batch)})
                    batch = []
        except Exception:  # noqa: BLE001 - whatever went wrong, a reload makes the image right again
            log.warning("%s: could not apply the change log: reloading", self.server_id, exc_info=True)
            self._reload(out_of_sync=True)
            return
        self._set_status(ONLINE)

    def _reload(self, out_of_sync: bool = False) -> None:
        if out_of_sync:
            self._set_status(OUT_OF_SYNC)
        with self.inventory.lock:
            self.applied_seq = self.store.load(self.inventory, lazy_files=self.lazy_files)
            if self.local_store is not None and self.role == "secondary":
                self.local_store.replace_image(self.inventory, self.applied_seq)
            self.inventory.loaded = True
        self.inventory.emit("inventory_loaded", {"seq": self.applied_seq, **self.inventory.summary()})
        if out_of_sync:
            self._set_status(ONLINE)

    # -- writing --------------------------------------------------------------------------------------
    @contextmanager
    def write_slot(self, writer: str) -> Iterator[None]:
        """Hold the one write slot of all servers (in this process and in ``inv_state``).

        The slot's row names the server holding it. Whoever holds this process's lock is its only
        writer, so a row still naming this server is a hold whose release failed (the database
        refused the release, e.g. on a full disk): it is taken over, never waited for.
        """
        waited_since = time.monotonic()
        if not self._writer.acquire(timeout=self.writer_wait):
            raise WriterBusyError("another writer is running on this server", writer=writer, waited=self.writer_wait)
        try:
            while True:
                with self.store.engine.begin() as conn:
                    taken = conn.execute(update(state_table).where(
                        (state_table.c.id == 1)
                        & (state_table.c.writer.is_(None) | (state_table.c.writer_server == self.server_id))
                        & (state_table.c.master_id == self.server_id))
                        .values(writer=writer[:256], writer_server=self.server_id)).rowcount == 1
                if taken:
                    break
                _, master, _ = self._read_state()
                if master != self.server_id:
                    raise self._not_primary(master)
                if time.monotonic() - waited_since > self.writer_wait:
                    raise WriterBusyError("another writer holds the write slot", writer=writer,
                                          waited=self.writer_wait)
                time.sleep(0.1)
            try:
                yield
            finally:
                try:
                    with self.store.engine.begin() as conn:
                        conn.execute(update(state_table).where((state_table.c.id == 1)
                                                               & (state_table.c.writer_server == self.server_id))
                                     .values(writer=None, writer_server=None))
                except Exception:  # noqa: BLE001 - the next write of this server takes the row over
                    log.warning("%s: could not release the write slot in the store; the next write takes it "
                                "over", self.server_id, exc_info=True)
        finally:
            self._writer.release()

    def _not_primary(self, master: str | None) -> NotPrimaryError:
        address = None
        if master is not None:
            with self.store.engine.connect() as conn:
                row = conn.execute(select(servers_table.c.app_socket)
                                   .where(servers_table.c.id == master)).first()
            if row is not None and row.app_socket:
                address = row.app_socket
        return NotPrimaryError("this server is a secondary; writes go to the primary", server=self.server_id,
                               primary=master, primary_address=address)

    def apply_changes(self, changes: list[Change], title: str = "", user: str = "",
                      app_id: int | None = None) -> dict[str, Any]:
        """Apply ``changes`` atomically on the primary (write slot held); returns what was applied.

        The signature is the web server's ``apply`` hook, so web write modules go this way too.
        """
        if self.role != "primary":
            _, master, _ = self._read_state()
            raise self._not_primary(master)
        with self.write_slot(f"{title or 'changes'} ({user or 'anonymous'})"):
            return self._apply_locked(changes, title, app_id)

    def _apply_locked(self, changes: list[Change], title: str, app_id: int | None) -> dict[str, Any]:
        if app_id is not None:
            self._record_application(app_id, status="applying", changes=len(changes))
        before = self.applied_seq
        try:
            seq = self.store.apply_and_write(self.inventory, changes, master_id=self.server_id)
        except Exception:
            # The image may hold part of the batch the store refused: reload it from the store.
            self._reload(out_of_sync=True)
            raise
        self.applied_seq = seq
        self.inventory.emit("changes_applied", {"seq": seq, "changes": len(changes), "title": title})
        return {"changes": len(changes), "changed": seq - before, "seq": seq}

    # -- applications -----------------------------------------------------------------------------------
    def _record_application(self, app_id: int | None = None, **values: Any) -> int:
        with self.store.engine.begin() as conn:
            if app_id is None:
                result = conn.execute(insert(applications_table).values(server=self.server_id, started=time.time(),
                                                                        changes=0, **values))
                return int(result.inserted_primary_key[0])
            conn.execute(update(applications_table).where(applications_table.c.id == app_id).values(**values))
            return app_id

    def run_application(self, script: str, name: str, args: list[str], write: bool, title: str, user: str,
                        timeout: float | None = None, run_as: Caller | None = None) -> dict[str, Any]:
        """Run a script as an application (see ``applications``); returns the result as JSON.

        ``run_as`` is the caller the child becomes (None: this process's own identity).
        """
        checksum = applications.script_checksum(script)
        if write:
            if self.role != "primary":
                _, master, _ = self._read_state()
                raise self._not_primary(master)
            checksum = applications.check_authorized(self.store, script, title, user)
        limit = self.app_timeout if timeout is None else min(float(timeout), self.app_timeout)
        app_id = self._record_application(title=title[:128], user=user[:128], checksum=checksum, write=write,
                                          status="running")
        if not write:
            result = self.runner.run(script, name, args, write=False, timeout=limit, run_as=run_as)
            self._record_application(app_id, status=result.status, exit_code=result.exit_code, finished=time.time())
            return {**result.to_json(), "applied": None, "id": app_id}
        # One writer at a time, for the whole run: the child's copy must be the image it changes.
        with self.write_slot(f"{title} ({user})"):
            result = self.runner.run(script, name, args, write=True, timeout=limit, run_as=run_as)
            applied = None
            if result.status == "done" and result.changes:
                try:
                    applied = self._apply_locked(result.changes, title, app_id)
                except Exception as exc:
                    self._record_application(app_id, status="rejected", exit_code=result.exit_code,
                                             finished=time.time())
                    raise InventoryError("the application's changes were rejected; nothing was applied",
                                         title=title, reason=str(exc)) from exc
            self._record_application(app_id, status=result.status, exit_code=result.exit_code,
                                     changes=len(result.changes), finished=time.time())
        return {**result.to_json(), "applied": applied, "id": app_id}

    # -- status ---------------------------------------------------------------------------------------
    def status_info(self, checksum: bool = False) -> dict[str, Any]:
        """This server: id, role, status, applied seq and the store's seq (and the image checksum)."""
        seq, master, _ = self._read_state()
        info = {"id": self.server_id, "role": self.role, "status": self.status, "applied_seq": self.applied_seq,
                "store_seq": seq, "primary": master, "address": self.address,
                "web_url": self.web_url, "summary": self.inventory.summary()}
        if checksum:
            info["checksum"] = self.inventory.checksum()
        return info

    def servers(self) -> list[dict[str, Any]]:
        """Every server's row in ``inv_servers``."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(servers_table).order_by(servers_table.c.id)).all()
        return [dict(row._mapping) for row in rows]

    # -- the application port ----------------------------------------------------------------------------
    def handle(self, message: dict[str, Any], caller: Caller | None = None) -> dict[str, Any]:
        """Answer one request of the application port (see ``protocol.REQUESTS``) from ``caller``.

        ``caller`` None is this process itself (an in-process call): an admin.
        """
        caller = caller or Caller.of_uid(os.getuid(), os.getgid(), os.getpid())
        self.policy.check_connect(caller)
        op = check_request(message)
        if op == "status":
            return {"ok": True, **self.status_info(checksum=bool(message.get("checksum")))}
        if op == "servers":
            return {"ok": True, "servers": self.servers()}
        if op == "authorizations":
            return {"ok": True, "authorizations": applications.authorizations(self.store)}
        _optional_string(message, "user")
        if op == "authorize":
            _strings(message, "script", "title")
            self.policy.check_admin(caller, "authorize applications")
            user = self.policy.label(caller, message.get("user"), "authorize")
            return {"ok": True, **applications.authorize(self.store, message["script"], message["title"], user)}
        if op == "revoke":
            _strings(message, "title")
            self.policy.check_admin(caller, "revoke authorizations")
            user = self.policy.label(caller, message.get("user"), "revoke")
            return {"ok": True, "revoked": applications.revoke(self.store, message["title"], user)}
        _strings(message, "script", "name", "title")
        args = message["args"]
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise ProtocolError("args must be a list of strings", reason="fields", field="args")
        if not isinstance(message["write"], bool):
            raise ProtocolError("write must be true or false", reason="fields", field="write")
        timeout = message.get("timeout")
        if timeout is not None:
            timeout = _seconds(timeout, "timeout")
        user = self.policy.label(caller, message.get("user"), "run applications")
        run_as = self.policy.run_as(caller)
        return {"ok": True, **self.run_application(message["script"], message["name"], args, message["write"],
                                                   message["title"], user, timeout, run_as=run_as)}


#: the longest timeout a request may ask for (the server's own --app-timeout caps it further)
MAX_TIMEOUT_SECONDS = 366 * 24 * 3600.0


def _seconds(value: Any, name: str) -> float:
    """A positive, finite number of seconds up to ``MAX_TIMEOUT_SECONDS``; ``ProtocolError`` otherwise."""
    # bool is an int to Python, and NaN / inf pass a "> 0" test: check each case by name
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not math.isfinite(value)) or not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise ProtocolError(f"{name} must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS:g}]",
                            reason="fields", field=name)
    return float(value)


def _optional_string(message: dict[str, Any], name: str) -> None:
    value = message.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ProtocolError(f"{name} must be a non-empty string when given", reason="fields", field=name)


def _strings(message: dict[str, Any], *names: str) -> None:
    for name in names:
        value = message[name]
        if not isinstance(value, str) or (name != "script" and not value):
            raise ProtocolError(f"{name} must be a non-empty string", reason="fields", field=name)


__all__ = ["ApplicationRefused", "DEFAULT_WEB_PORT", "InventoryServer", "WriterBusyError"]
