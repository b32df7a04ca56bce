"""zdb servers: the storage manager (primary) and transaction engines (replicas).

``StorageManager`` owns the archive directory and orders every write: it applies it, journals it,
answers, and publishes the record on its change stream. ``TransactionEngine`` holds the whole
document in memory, kept current by that stream (PUB/SUB with sequence numbers; a gap or a
restart is caught up through a ``sync`` request answered from the journal), serves reads itself,
and forwards everything else to the storage manager. Clients may talk to either.

Both are objects with ``start()`` (returns once bound; ``address`` is the real endpoint),
``stop()``, ``serve_forever()`` and context-manager use. Each runs one server thread that owns
its sockets and document, so no locking is needed inside.

A server given ``users`` (the dba login) makes every socket it binds, the requests and the change
stream, a PLAIN server whose handshake checks the login (ZeroMQ's ZAP), so a peer without it
never reaches the server thread; a server given CURVE keys checks them the same way. The lock is
owned by whoever holds its token, a secret sent only in the reply to ``lock``; the stream and
``sync`` carry only the token's SHA-256, which replicas compare and which grants nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import zmq

from workbench.errors import ConfigurationError, ZdbError
from workbench.servers import Address, ServerLifecycle
from workbench.zdb.archive import Archive, ArchiveError, BlobUpload, JournalError
from workbench.zdb.document import Change, Document, Op
from workbench.zdb.errors import LockError, QuiescedError
from workbench.zdb.protocol import (
    MAX_MESSAGE_BYTES,
    REQUEST_KINDS,
    BadRequest,
    OperationError,
    decode,
    encode,
    error_reply,
)
from workbench.zdb.transport import (
    DEFAULT_URI,
    NO_LOGIN_THERE,
    REFUSED,
    CurveKeys,
    CurveServer,
    HandshakeWatch,
    PlainLogin,
    bind,
    connectable,
    recv_frames,
    send_each,
    send_frames,
    split_request,
)

log = logging.getLogger(__name__)

#: records kept in memory for replicas catching up (older ones come from the journal)
RECENT_RECORDS = 10_000
HEARTBEAT_SECONDS = 0.5
DEFAULT_LEASE_SECONDS = 10.0
DEFAULT_WAIT_SECONDS = 30.0
BATCH = 512
# Plain ints: pyzmq's enum flags cost an enum operation per use on the hot path.
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
RECEIVE_TIMEOUT_MS = 50
#: how often a busy storage manager runs its housekeeping between requests
HOUSEKEEPING_SECONDS = 0.005
#: the requests a server answers: the protocol's, plus the operator's quiesce/unquiesce of a storage manager
SERVER_REQUEST_KINDS = REQUEST_KINDS | {"quiesce", "unquiesce"}
#: unfinished blob uploads a storage manager keeps, per client and in all, and how long one may idle
UPLOADS_PER_CLIENT = 8
UPLOADS_TOTAL = 64
UPLOAD_IDLE_SECONDS = 60.0
#: how often a storage manager whose journal is broken tries to repair it
JOURNAL_RETRY_SECONDS = 1.0
#: longest client id a request may carry (ids only name clients in statistics)
MAX_CLIENT_ID = 128
#: clients remembered for the status's client count (least recently seen forgotten first)
MAX_TRACKED_CLIENTS = 4096
#: a client unseen this long no longer counts, and is forgotten
CLIENT_SEEN_SECONDS = 60.0
#: replicas whose position a storage manager keeps for its status
MAX_TRACKED_REPLICAS = 256
#: requests a server holds at once (lock waiters, read-your-writes); more are refused
MAX_PENDING = 10_000
#: a connection that has not finished its handshake (the login) by then is dropped
HANDSHAKE_MS = 5000
#: largest message a subscriber may send the change stream (it sends only subscriptions)
MAX_SUBSCRIBER_MESSAGE = 64 * 1024


class _PrimaryTakesNoLogin(Exception):
    """Raised while a TE starts: its storage manager has no login, so it connects without one."""


@dataclass
class Pending:
    """A request held back (lock waiter or read-your-writes) until it can run or times out."""

    envelope: list[bytes]
    request: dict[str, Any]
    data: bytes | None
    deadline: float
    reason: str


@dataclass
class ServerStats:
    requests: int = 0
    reads: int = 0
    writes: int = 0
    errors: int = 0
    # client id -> last seen, least recently seen first; bounded in count, id length and age
    clients: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def seen(self, client: str, now: float) -> None:
        clients = self.clients
        if client in clients:
            clients.move_to_end(client)
        clients[client] = now
        if len(clients) > MAX_TRACKED_CLIENTS:
            clients.popitem(last=False)

    def forget_before(self, oldest: float) -> None:
        clients = self.clients
        while clients and next(iter(clients.values())) < oldest:
            clients.popitem(last=False)


def lock_digest(token: Any) -> str | None:
    """What the stream shows of a lock token: its SHA-256, which replicas compare and which grants nothing."""
    if not isinstance(token, str) or not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


class _ServerBase(ServerLifecycle):
    """What both roles share: the ROUTER loop, framing, stop control, lock state, waiting requests."""

    role = "server"
    seq = 0  # the last write this server has applied

    def __init__(self, bind_uri: str, curve: CurveKeys | None = None,
                 allowed_clients: list[str] | None = None, users: dict[str, str] | None = None) -> None:
        if users is not None and curve is not None:
            # One socket speaks one mechanism: PLAIN (the login) or CURVE (keys on an allow-list).
            raise ConfigurationError("a dba login and CURVE cannot be combined: with CURVE, the allow-list of "
                                     "client keys is the authentication")
        self.bind_uri = bind_uri
        self.users = dict(users) if users is not None else None
        self.curve_keys = curve
        self.allowed_clients = allowed_clients
        self.context = zmq.Context()
        self.address = Address("", "", None)  # the endpoint clients connect to, once bound
        self.stats = ServerStats()
        self.lock_holder: str | None = None
        self.pending: list[Pending] = []
        self._retrying: Pending | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._guard: CurveServer | PlainLogin | None = None  # checks every connection's handshake
        self._outbox: list[list[bytes]] = []
        self._control_uri = f"inproc://zdb-control-{id(self)}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address or self.bind_uri + ' (not started)'}>"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "_ServerBase":
        """Bind and start serving on a background thread; returns once ready."""
        self._thread = threading.Thread(target=self._thread_main, name=f"zdb-{self.role}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            error, self._start_error = self._start_error, None
            self._thread.join()
            raise error
        return self

    def serve_forever(self) -> None:
        """Start if needed and block until ``stop()`` (from another thread or a signal handler) has ended the loop."""
        if self._thread is None:
            self.start()
        self._stopped.wait()

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent; a start in progress is waited for)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._ready.wait(30)  # a stop() racing start() or serve_forever() stops what they open
        if not self._running.is_set():
            return
        self._running.clear()
        # Wake a loop that waits in poll(). A loop that polls the flag may see it cleared and
        # terminate the context before we send: then there is nobody left to wake.
        control = None
        try:
            control = self.context.socket(zmq.PAIR)
            control.connect(self._control_uri)
            control.send(b"stop", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        finally:
            if control is not None:
                control.close(linger=0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(30)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (True) or ``timeout`` passed (False)."""
        return self._stopped.wait(timeout)

    def _thread_main(self) -> None:
        try:
            self._open()
        except BaseException as exc:
            self._start_error = exc
            self._close_sockets()
            self._ready.set()
            return
        self._running.set()
        self._ready.set()
        try:
            self._loop()
        finally:
            try:
                self._close()
            finally:
                self._close_sockets()
                self._stopped.set()

    def _open_router(self) -> None:
        if self.curve_keys is not None:
            self._guard = CurveServer(self.context, self.curve_keys, self.allowed_clients)
        elif self.users is not None:
            self._guard = PlainLogin(self.context, self.users)
        self.router = self.context.socket(zmq.ROUTER)
        # Only authenticated peers (or anyone, on a server without a login) get this far.
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 4096)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.linger = 1000
        self.router.handshake_ivl = HANDSHAKE_MS
        self._secure(self.router)
        self.address = Address.endpoint(connectable(bind(self.router, self.bind_uri)))
        self.control = self.context.socket(zmq.PAIR)
        self.control.bind(self._control_uri)

    def _secure(self, socket: zmq.Socket) -> None:
        """Make a socket this server binds check the login (or CURVE key) of every peer."""
        if self._guard is not None:
            self._guard.secure(socket)

    def _close_sockets(self) -> None:
        for watch in getattr(self, "_watches", ()):
            watch.close()
        for name in ("router", "control", "publisher", "subscriber", "upstream"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=500)
        if self._guard is not None:
            self._guard.stop()
        self.context.term()

    # -- the loop -------------------------------------------------------------------------------
    def _poll_sockets(self) -> list[zmq.Socket]:
        return [self.router, self.control]

    def _loop(self) -> None:
        poller = zmq.Poller()
        for sock in self._poll_sockets():
            poller.register(sock, zmq.POLLIN)
        while self._running.is_set():
            ready = dict(poller.poll(self._poll_timeout_ms()))
            if self.control in ready:
                self.control.recv()
                break
            self._before_batch(ready)
            if self.router in ready:
                self._drain_router()
            self._after_batch()
            self._housekeeping()

    def _poll_timeout_ms(self) -> int:
        return 100

    def _drain_router(self, limit: int = BATCH) -> None:
        """Receive what is already queued.

        One look at the socket's events first (what a lone client's batch costs: its only
        request is in already), then non-blocking receives until zmq.Again. Asking the events
        before every request cost more than the one Again per batch once several clients queue
        requests together (profiled with 8 client processes: ~4 us per look, ~10 us per Again).
        """
        router, receive = self.router, self._receive
        if limit <= 0 or not router.get(_EVENTS) & _POLLIN:
            return
        for _ in range(limit):
            try:
                frames = recv_frames(router, _NOBLOCK)
            except zmq.Again:
                return
            receive(frames)

    def _before_batch(self, ready: dict[zmq.Socket, int]) -> None:
        """Read other sockets (the change stream, upstream replies) before client requests."""

    def _after_batch(self) -> None:
        """Make the batch durable, then send the replies it produced."""
        self._flush_outbox()

    def _flush_outbox(self) -> None:
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        for frames in outbox:
            try:
                send_frames(self.router, frames, _NOBLOCK)
            except zmq.ZMQError as exc:  # the client went away: nothing to deliver to
                log.debug("%s: reply dropped: %s", self.role, exc)

    def _ok(self, envelope: list[bytes], request: dict[str, Any], result: Any = None,
            data: bytes | None = None, **extra: Any) -> None:
        """A success reply, stamped with this server's current seq."""
        message = {"id": request.get("id"), "ok": True, "result": result, "seq": self.seq}
        if extra:
            message.update(extra)
        self.reply(envelope, message, data)

    def reply(self, envelope: list[bytes], message: dict[str, Any], data: bytes | None = None) -> None:
        try:
            body = encode(message)
        except (OperationError, TypeError, ValueError) as exc:
            body = encode(error_reply(message.get("id"), OperationError("ValueError", f"cannot encode reply: {exc}")))
        self._outbox.append([*envelope, body] if data is None else [*envelope, body, data])

    def _receive(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return  # not even an envelope and a body: nobody to answer
        if len(frames) == 2 and frames[1]:  # the common case: [identity, body] from a DEALER
            envelope, body, data = [frames[0]], frames[1], None
        else:
            envelope, body, data = split_request(frames)
        request_id = None
        try:
            request = decode(body)
            if not isinstance(request, dict):
                raise BadRequest("a request is a JSON object")
            request_id = request.get("id")
            kind = request.get("kind")
            if kind not in SERVER_REQUEST_KINDS:
                raise BadRequest(f"unknown request kind {kind!r}", kind=repr(kind)[:40])
            client = request.get("client")
            if client is not None and not isinstance(client, str):
                raise BadRequest("client must be a string")
            self.stats.requests += 1
            if client:
                if len(client) > MAX_CLIENT_ID:
                    raise BadRequest(f"client ids are at most {MAX_CLIENT_ID} characters")
                self.stats.seen(client, time.monotonic())
            self._dispatch(envelope, request, data)
        except Exception as exc:  # every failure becomes an error reply; the server stays up
            self.stats.errors += 1
            if not isinstance(exc, ZdbError):
                log.exception("%s: unexpected error on a request", self.role)
            self.reply(envelope, error_reply(request_id, exc))

    def _dispatch(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None) -> None:
        raise NotImplementedError

    # -- waiting requests -----------------------------------------------------------------------
    def hold(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None, reason: str) -> None:
        """Keep a request until it can run; it fails when its ``wait`` (seconds) runs out."""
        if self._retrying is not None:  # held again while being retried: keep its first deadline
            deadline = self._retrying.deadline
        else:
            wait = request.get("wait", DEFAULT_WAIT_SECONDS)
            if not isinstance(wait, (int, float)) or wait < 0:
                raise BadRequest("wait must be a non-negative number of seconds")
            deadline = time.monotonic() + wait
            if len(self.pending) >= MAX_PENDING:
                raise ZdbError("too many requests waiting: try again later", waiting=len(self.pending))
        self.pending.append(Pending(envelope, request, data, deadline, reason))

    def retry_pending(self) -> None:
        """Run held requests again, in arrival order (each may be held again)."""
        waiting, self.pending = self.pending, []
        for item in waiting:
            self._retrying = item
            try:
                self._dispatch(item.envelope, item.request, item.data)
            except Exception as exc:
                self.reply(item.envelope, error_reply(item.request.get("id"), exc))
            finally:
                self._retrying = None

    def _expire_pending(self) -> None:
        now = time.monotonic()
        expired = [p for p in self.pending if p.deadline <= now]
        if not expired:
            return
        self.pending = [p for p in self.pending if p.deadline > now]
        for item in expired:
            error = LockError(f"timed out waiting: {item.reason}", reason=item.reason)
            self.reply(item.envelope, error_reply(item.request.get("id"), error))

    def login(self, request: dict[str, Any]) -> dict[str, Any]:
        """What a ``login`` request gets: the handshake already checked the login, there is no session.

        Every connection that reaches the server thread has passed the handshake (or the server
        takes no login), so nothing in a request, and nothing a client could replay, is a session.
        """
        if self.users is None:
            return {"user": None}
        return {"user": next(iter(self.users)) if len(self.users) == 1 else None}

    def holds_lock(self, request: dict[str, Any]) -> bool:
        """Whether the request carries the token of the lock held now."""
        holder = self.lock_holder
        return holder is not None and lock_digest(request.get("lock_token")) == holder

    def blocked_by_lock(self, request: dict[str, Any]) -> bool:
        return (self.lock_holder is not None
                and request["kind"] not in ("ping", "status", "sync", "unlock", "renew", "login")
                and not self.holds_lock(request))

    def _housekeeping(self) -> None:
        self._expire_pending()
        self.stats.forget_before(time.monotonic() - CLIENT_SEEN_SECONDS)
        self._flush_outbox()

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Role-specific shutdown, on the server thread, before sockets close."""


class StorageManager(_ServerBase):
    """The primary: owns the archive directory, orders, journals and publishes every write.

    ::

        with StorageManager("/var/lib/zdb/teas", bind="tcp://127.0.0.1:0") as sm:
            db, sockets = client(sm.address)
            db["x"] = 3
    """

    role = "sm"

    def __init__(self, archive_dir: str | os.PathLike[str], bind: str = DEFAULT_URI,
                 publish_bind: str | None = None, fsync: str = "batch", history_limit: int = 1000,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, curve: CurveKeys | None = None,
                 allowed_clients: list[str] | None = None, users: dict[str, str] | None = None) -> None:
        super().__init__(bind, curve, allowed_clients, users)
        self.archive = Archive(archive_dir, fsync=fsync)
        self.publish_bind = publish_bind
        self.publish_address = ""
        self.document = Document(history_limit=history_limit)
        self.lease_seconds = lease_seconds
        self.seq = 0
        self.recent: deque[tuple[int, bytes]] = deque(maxlen=RECENT_RECORDS)
        self._unpublished: list[bytes] = []
        self._lock_expires = 0.0
        self._last_heartbeat = 0.0
        self._uploads: dict[str, BlobUpload] = {}
        self._save_waiters: list[tuple[list[bytes], dict[str, Any]]] = []  # save(wait=True) until durable
        self._journal_retry_at = 0.0
        self.replicas: dict[str, tuple[int, float]] = {}  # TE address -> (applied seq, last report)
        self.recovered_dropped = 0
        self._handlers: dict[str, Callable[[list[bytes], dict[str, Any], bytes | None], None]] = {
            "op": self._handle_op, "batch": self._handle_batch, "undo": self._handle_undo, "redo": self._handle_redo,
            "save": self._handle_save, "lock": self._handle_lock, "unlock": self._handle_unlock,
            "renew": self._handle_renew, "status": self._handle_status, "ping": self._handle_ping,
            "sync": self._handle_sync, "blob_put": self._handle_blob_put, "blob_get": self._handle_blob_get,
            "login": self._handle_login, "quiesce": self._handle_quiesce, "unquiesce": self._handle_unquiesce,
        }
        self.quiesced = False

    # -- opening and closing --------------------------------------------------------------------
    def _open(self) -> None:
        recovered = self.archive.open()
        try:
            self.document = Document(recovered.root, history_limit=self.document.history_limit)
            self.document.history_from_json(recovered.history)
            self.seq = recovered.seq
            for record in recovered.records:
                self._replay(record)
                self.seq = record["seq"]
                self.recent.append((record["seq"], encode(record)))
            self.recovered_dropped = recovered.dropped
            self._open_router()
            self.publisher = self.context.socket(zmq.PUB)
            self.publisher.linger = 0
            self.publisher.sndhwm = 100_000
            self.publisher.handshake_ivl = HANDSHAKE_MS
            self.publisher.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIBER_MESSAGE)
            # The stream shows every write: it checks the same login (or key) as the requests.
            self._secure(self.publisher)
            publish_bind = self.publish_bind or _sibling_endpoint(self.address)
            self.publish_address = connectable(bind(self.publisher, publish_bind))
        except BaseException:
            self.archive.close()
            raise
        log.info("zdb storage manager on %s (stream %s), seq %d, archive %s",
                 self.address, self.publish_address, self.seq, self.archive.path)

    def _replay(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "write":
            self.document.write([Op.from_json(o) for o in record["ops"]])
        elif kind == "undo":
            self.document.undo()
        elif kind == "redo":
            self.document.redo()
        else:
            raise ZdbError("unknown journal record kind", kind=kind, seq=record.get("seq"))

    def _close(self) -> None:
        for upload in self._uploads.values():
            upload.abort()
        self.archive.close()

    def _loop(self) -> None:
        # The SM reads one socket: a blocking receive with a short timeout costs fewer system
        # calls per request than a poller, and the timeout still runs housekeeping and notices
        # stop() (which clears _running before waking us) within RECEIVE_TIMEOUT_MS.
        # Housekeeping (lease and wait deadlines, heartbeats, checkpoint progress) runs when the
        # receive times out and otherwise every HOUSEKEEPING_SECONDS, not after every request.
        router, running = self.router, self._running
        router.rcvtimeo = RECEIVE_TIMEOUT_MS
        next_housekeeping = 0.0
        while running.is_set():
            try:
                frames = recv_frames(router)
            except zmq.Again:
                frames = None
            if frames is not None:
                self._receive(frames)
                self._drain_router(BATCH - 1)
            self._after_batch()
            if frames is None or time.monotonic() >= next_housekeeping:
                self._housekeeping()
                next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None) -> None:
        # (Cheap to skip while nobody holds the lock. The login was checked by the handshake.)
        if self.lock_holder is not None and self.blocked_by_lock(request):
            self.hold(envelope, request, data, "database locked by another client")
            return
        self._handlers[request["kind"]](envelope, request, data)

    def _handle_op(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None) -> None:
        raw_ops = request.get("ops")
        if not isinstance(raw_ops, list) or not raw_ops:
            raise BadRequest("ops must be a non-empty list")
        if len(raw_ops) == 1:
            path = _plain_read_path(raw_ops[0])
            if path is not None:  # the commonest request, `db[...]._run()`: one path walk, no Op
                result = self.document.resolve(path)
                self.stats.reads += 1
                self._ok(envelope, request, result)
                return
        ops = [Op.from_json(o) for o in raw_ops]
        if len(ops) == 1:
            is_read, result = self.document.try_read(ops[0])
            if is_read:
                self.stats.reads += 1
                self._ok(envelope, request, result)
                return
            self._refuse_if_quiesced("op")
            result, change = self.document.stage_write_one(ops[0], result)  # `result` is the node to change
            self._record(change)
            self.stats.writes += 1
            self._ok(envelope, request, result)
            return
        self._refuse_if_quiesced("op")
        if len(ops) > 1 and not all(self.document.is_write(op) for op in ops):
            raise BadRequest("a request with several ops may contain only writes")
        results, change = self.document.stage_write(ops)
        self._record(change)
        self.stats.writes += 1
        self._ok(envelope, request, results[0] if len(results) == 1 else results)

    def _handle_batch(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None) -> None:
        """A pipeline: each op on its own, in order; the writes share one journal append.

        An op that fails leaves its error in its slot and the next op runs (as redis-py's
        pipeline). A read sees the writes before it in the batch. The writes are journaled
        together once all ops ran; if that append is refused, every write of the batch is taken
        back and the whole request fails with the JournalError (nothing of it is visible).
        """
        raw_ops = request.get("ops")
        if not isinstance(raw_ops, list) or not raw_ops:
            raise BadRequest("ops must be a non-empty list")
        document = self.document
        slots: list[dict[str, Any]] = []
        staged: list[Change] = []
        bodies: list[bytes] = []
        for raw in raw_ops:
            try:
                path = _plain_read_path(raw)
                if path is not None:
                    slots.append({"result": document.resolve(path)})
                    continue
                op = Op.from_json(raw)
                is_read, result = document.try_read(op)
                if not is_read:
                    self._refuse_if_quiesced("batch")
                    result, change = document.stage_write_one(op, result)
                    # Encoded now: a later op of the batch may change the very value this one stored.
                    # `raw` is the op's wire form already (what Op.to_json would rebuild).
                    bodies.append(encode({"seq": self.seq + len(staged) + 1, "kind": "write", "ops": [raw]}))
                    staged.append(change)
                slots.append({"result": result})
            except Exception as exc:  # the op's own failure: reported in its slot
                if not isinstance(exc, ZdbError):
                    log.exception("%s: unexpected error on a pipelined op", self.role)
                slots.append({"error": error_reply(None, exc)["error"]})
        if staged:
            self._record_many(staged, bodies)
        self.stats.reads += len(raw_ops) - len(staged)
        self.stats.writes += len(staged)
        self._ok(envelope, request, slots)

    def _record_many(self, changes: list[Change], bodies: list[bytes]) -> None:
        """``_record`` for a batch's changes (records ``bodies``, seq each), written in one append."""
        seq = self.seq
        try:
            self.archive.append_many(bodies, seq + 1)
        except BaseException:
            for change in reversed(changes):  # later changes were staged on top of earlier ones
                self.document.revert(change)
            raise
        for index, (change, body) in enumerate(zip(changes, bodies), 1):
            self.document.commit(change)
            self.recent.append((seq + index, body))
            self._unpublished.append(body)
        self.seq = seq + len(changes)

    def _record(self, change: Change) -> None:
        """Journal a staged change, then commit it; a refused append reverts it (JournalError).

        Only a journaled change reaches the history, the seq, the replies and the change stream:
        a write the journal refused is invisible everywhere.
        """
        seq = self.seq + 1
        try:
            body = self.archive.append({"seq": seq, "kind": change.kind, "ops": [op.to_json() for op in change.ops]})
        except BaseException:
            self.document.revert(change)
            raise
        self.document.commit(change)
        self.seq = seq
        self.recent.append((seq, body))
        self._unpublished.append(body)

    def _refuse_if_quiesced(self, kind: str) -> None:
        if self.quiesced:
            raise QuiescedError("the database is quiesced: writes are refused until it is unquiesced (reads go on)",
                                kind=kind)

    def _handle_quiesce(self, envelope, request, data) -> None:
        """Refuse every change from now on (reads go on), e.g. for a consistent copy of the archive."""
        self.archive.sync()
        self.quiesced = True
        log.info("zdb storage manager %s quiesced at seq %d", self.address, self.seq)
        self._publish_heartbeat()
        self._ok(envelope, request, {"quiesced": True, "seq": self.seq})

    def _handle_unquiesce(self, envelope, request, data) -> None:
        self.quiesced = False
        log.info("zdb storage manager %s unquiesced", self.address)
        self._publish_heartbeat()
        self._ok(envelope, request, {"quiesced": False, "seq": self.seq})

    def _handle_undo(self, envelope, request, data) -> None:
        self._refuse_if_quiesced("undo")
        self._record(self.document.stage_move("undo"))
        self._ok(envelope, request)

    def _handle_redo(self, envelope, request, data) -> None:
        self._refuse_if_quiesced("redo")
        self._record(self.document.stage_move("redo"))
        self._ok(envelope, request)

    def _handle_save(self, envelope, request, data) -> None:
        """Start a checkpoint; with ``wait`` answer once its snapshot is durable (or has failed)."""
        wait = request.get("wait", False)
        if not isinstance(wait, bool):
            raise BadRequest("wait must be true or false")
        self.archive.sync()
        # ArchiveError (no descriptor for a new segment, no fork) leaves journal and snapshots as
        # they were. While an earlier checkpoint runs, a waiting save is answered when it ends.
        started = self.archive.checkpoint(self.snapshot(), self.seq)
        if wait:
            self._save_waiters.append((envelope, request))
            return
        self._ok(envelope, request, {"seq": self.seq, "started": started,
                                     "snapshot_seq": self.archive.snapshot_seq})

    def _answer_save_waiters(self) -> None:
        if not self._save_waiters or self.archive.checkpoint_running:
            return
        waiters, self._save_waiters = self._save_waiters, []
        failure = self.archive.checkpoint_error
        for envelope, request in waiters:
            if failure is not None:
                error = ArchiveError("the checkpoint failed; the previous snapshot and the journal are kept",
                                     **failure)
                self.reply(envelope, error_reply(request.get("id"), error))
            else:
                self._ok(envelope, request, {"seq": self.archive.snapshot_seq, "started": True,
                                             "snapshot_seq": self.archive.snapshot_seq})

    def snapshot(self) -> dict[str, Any]:
        """The live state to checkpoint (the forked child sees it frozen; no copy is made)."""
        return {"format": 1, "seq": self.seq, "root": self.document.root,
                "history": self.document.history_to_json()}

    def _handle_lock(self, envelope, request, data) -> None:
        if self.holds_lock(request):
            raise LockError("you already hold the lock", client=request.get("client"))
        lease = _lease(request, self.lease_seconds)
        # The token goes only to the locker, in this reply; everyone else sees only its digest.
        token = secrets.token_urlsafe(32)
        self.lock_holder = lock_digest(token)
        self._lock_expires = time.monotonic() + lease
        self._publish_heartbeat()
        self._ok(envelope, request, {"locked": True, "lease": lease, "token": token})

    def _handle_unlock(self, envelope, request, data) -> None:
        if not self.holds_lock(request):
            raise LockError("unlock of a lock you do not hold", client=request.get("client"))
        self._release_lock()
        self._ok(envelope, request, {"locked": False})

    def _handle_renew(self, envelope, request, data) -> None:
        if not self.holds_lock(request):
            raise LockError("the lock is not yours to renew (expired?)", client=request.get("client"))
        lease = _lease(request, self.lease_seconds)
        self._lock_expires = time.monotonic() + lease
        self._ok(envelope, request, {"locked": True, "lease": lease})

    def _release_lock(self) -> None:
        self.lock_holder = None
        self._publish_heartbeat()
        self.retry_pending()

    def _handle_status(self, envelope, request, data) -> None:
        self._ok(envelope, request, self.status())

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "role": self.role, "address": self.address, "publish": self.publish_address,
            "seq": self.seq, "snapshot_seq": self.archive.snapshot_seq,
            "checkpoint_running": self.archive.checkpoint_running,
            "keys": len(self.document.root), "undo": len(self.document.undo_stack),
            "redo": len(self.document.redo_stack), "locked": self.lock_holder is not None,
            "quiesced": self.quiesced,
            "clients": sum(1 for seen in self.stats.clients.values() if now - seen < 60),
            "requests": self.stats.requests, "reads": self.stats.reads, "writes": self.stats.writes,
            "errors": self.stats.errors, "fsync": self.archive.fsync_mode, "archive": str(self.archive.path),
            "journal": self.archive.segment_name, "journal_error": self.archive.journal_error,
            "refused_writes": self.archive.refused, "checkpoint_error": self.archive.checkpoint_error,
            "recovered_dropped": self.recovered_dropped, "uploads": len(self._uploads),
            "replicas": {address: {"seq": seq, "lag": max(0, self.seq - seq)}
                         for address, (seq, seen) in self.replicas.items() if now - seen < 5 * HEARTBEAT_SECONDS},
        }

    def _handle_ping(self, envelope, request, data) -> None:
        replica, seq = request.get("replica"), request.get("seq")
        if isinstance(replica, str) and isinstance(seq, int):
            self._track_replica(replica[:200], seq)  # a TE reporting its position
        self._ok(envelope, request, "pong")

    def _track_replica(self, replica: str, seq: int) -> None:
        now = time.monotonic()
        if replica not in self.replicas and len(self.replicas) >= MAX_TRACKED_REPLICAS:
            # Full: forget replicas that stopped reporting; with none stale, this one is not kept.
            stale = [name for name, (_, seen) in self.replicas.items() if now - seen >= 5 * HEARTBEAT_SECONDS]
            for name in stale:
                del self.replicas[name]
            if not stale:
                return
        self.replicas[replica] = (seq, now)

    def _handle_sync(self, envelope, request, data) -> None:
        since = request.get("since")
        if since is not None and (not isinstance(since, int) or since < 0):
            raise BadRequest("since must be a sequence number")
        records = self._records_since(since) if since is not None else None
        if records is None:
            self._ok(envelope, request, {"snapshot": {"seq": self.seq, "root": self.document.root},
                                         "lock": self.lock_holder}, publish=self.publish_address)
            return
        # Records are sent as their journal bodies: no re-encoding per replica.
        self._ok(envelope, request, {"records": len(records), "lock": self.lock_holder},
                 b"\n".join(records), publish=self.publish_address)

    def _records_since(self, since: int) -> list[bytes] | None:
        """Bodies of records after ``since``, from memory or the journal; None if a snapshot is needed."""
        if since >= self.seq:
            return []
        if self.recent and self.recent[0][0] <= since + 1:
            return [body for seq, body in self.recent if seq > since]
        if since >= self.archive.snapshot_seq:
            return [encode(record) for record in self.archive.records_since(since)]
        return None

    def _handle_blob_put(self, envelope, request, data) -> None:
        if data is None:
            raise BadRequest("blob_put needs a data frame")
        self._refuse_if_quiesced("blob_put")
        final = request.get("final")
        name = request.get("name") or "blob"
        if final and not isinstance(name, str):
            raise BadRequest("name must be a string")
        token = request.get("upload")
        owner = request.get("client")
        if token is None:
            self._check_upload_limits(owner)
            upload = self.archive.new_upload(owner)
            self._uploads[upload.token] = upload
        else:
            upload = self._uploads.get(token)
            if upload is None or upload.owner != owner:
                raise BadRequest("unknown or expired upload", upload=str(token)[:40])
        try:
            upload.write(data)
            if final:
                del self._uploads[upload.token]
                stored = upload.finish(os.path.basename(name))
        except OSError as exc:  # a full disk, no descriptor: nothing of the upload is kept
            self._uploads.pop(upload.token, None)
            upload.abort()
            raise ZdbError("the upload could not be stored and is dropped", errno=exc.errno,
                           reason=exc.strerror or str(exc)) from None
        if final:
            self._ok(envelope, request, stored)
        else:
            self._ok(envelope, request, {"upload": upload.token, "size": upload.size})

    def _check_upload_limits(self, owner: str | None) -> None:
        """Refuse a new upload beyond UPLOADS_PER_CLIENT unfinished ones per client or UPLOADS_TOTAL in all."""
        if len(self._uploads) >= UPLOADS_TOTAL:
            raise ZdbError("too many unfinished uploads on this server: finish or wait for one",
                           limit=UPLOADS_TOTAL, idle_seconds=UPLOAD_IDLE_SECONDS)
        if sum(1 for upload in self._uploads.values() if upload.owner == owner) >= UPLOADS_PER_CLIENT:
            raise ZdbError("too many unfinished uploads of this client: finish one first",
                           limit=UPLOADS_PER_CLIENT, idle_seconds=UPLOAD_IDLE_SECONDS)

    def _handle_blob_get(self, envelope, request, data) -> None:
        digest, offset, length = request.get("hash"), request.get("offset", 0), request.get("length", 1 << 20)
        if not isinstance(digest, str) or not isinstance(offset, int) or not isinstance(length, int) \
                or offset < 0 or not 0 < length <= MAX_MESSAGE_BYTES:
            raise BadRequest("blob_get needs hash, offset >= 0 and 0 < length <= the message limit")
        path = self.archive.blob_path(digest)
        try:
            with open(path, "rb") as stream:
                stream.seek(offset)
                chunk = stream.read(length)
                size = os.fstat(stream.fileno()).st_size
        except FileNotFoundError:
            raise OperationError("FileNotFoundError", "no blob with that hash", hash=digest) from None
        self._ok(envelope, request, {"size": size, "eof": offset + len(chunk) >= size}, chunk)

    def _handle_login(self, envelope, request, data) -> None:
        self._ok(envelope, request, self.login(request))

    # -- after each batch: durability first, then replies and the change stream -----------------
    def _after_batch(self) -> None:
        try:
            self.archive.sync()
        except OSError as exc:
            # The records are in the page cache (they survive a kill -9), not known to be on disk.
            log.error("fsync of the journal failed: %s", exc)
        self._flush_outbox()
        if self._unpublished:  # a pipelined batch publishes a record per write: no wrapper per send
            unpublished, self._unpublished = self._unpublished, []
            send_each(self.publisher, unpublished)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.lock_holder is not None and now >= self._lock_expires:
            log.warning("lock %s... expired (lease not renewed)", self.lock_holder[:12])
            self._release_lock()
        if now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            self._publish_heartbeat()
        self.archive.poll_checkpoint()
        self._answer_save_waiters()
        if self.archive.journal_error is not None and now >= self._journal_retry_at:
            self._journal_retry_at = now + JOURNAL_RETRY_SECONDS
            try:
                self.archive.repair(self.seq + 1)
            except JournalError:
                pass  # still broken: writes stay refused, status says why
        for token, upload in list(self._uploads.items()):
            if now - upload.touched > UPLOAD_IDLE_SECONDS:  # an abandoned upload
                upload.abort()
                del self._uploads[token]
        super()._housekeeping()

    def _publish_heartbeat(self) -> None:
        """The heartbeat: current seq and lock holder (what replicas need) plus a status summary."""
        status = self.status()
        self.publisher.send(encode({"heartbeat": self.seq, "lock": self.lock_holder, "status": status}))


class TransactionEngine(_ServerBase):
    """A replica: the whole document in memory, current through the SM's change stream.

    Reads are served here; writes, undo/redo, save, locks and blobs are forwarded to the storage
    manager, and the reply goes back to the client once this engine has applied that write
    (so a client reading here right after writing here sees its write).

    It logs in to a storage manager that requires a login (for forwarding and for its
    subscription) as ``primary_user`` / ``primary_password``, by default its own dba login when
    it has exactly one user.
    """

    role = "te"

    def __init__(self, primary: str, bind: str = "tcp://127.0.0.1:5561", curve: CurveKeys | None = None,
                 allowed_clients: list[str] | None = None, primary_key: str | None = None,
                 client_keys: CurveKeys | None = None, sync_timeout: float = 30.0,
                 users: dict[str, str] | None = None, primary_user: str | None = None,
                 primary_password: str | None = None) -> None:
        super().__init__(bind, curve, allowed_clients, users)
        if primary_user is None and users is not None and len(users) == 1:
            primary_user, primary_password = next(iter(users.items()))
        self.primary_login = (primary_user, primary_password or "") if primary_user is not None else None
        self.primary = primary
        self.primary_key = primary_key
        self.client_keys = client_keys
        self.sync_timeout = sync_timeout
        self.document = Document(history_limit=0)
        self.seq = 0
        self.primary_seq = 0
        self.publish_address = ""
        self._forwarded: dict[int, tuple[list[bytes], dict[str, Any]]] = {}
        self._forward_ids = iter(range(1, 1 << 62))
        self._sync_in_flight: int | None = None
        self._buffered: list[dict[str, Any]] = []
        self._last_stream = time.monotonic()
        self._last_report = 0.0
        self._resync_at = 0.0

    def _open(self) -> None:
        self._open_upstream()
        # The first sync both fetches the snapshot and tells us where the stream is published.
        try:
            reply, _ = self._request_upstream({"kind": "sync", "since": None}, timeout=self.sync_timeout)
        except _PrimaryTakesNoLogin:
            # A storage manager without a login of its own: follow it without one.
            log.warning("te: the storage manager %s takes no login; following it without one", self.primary)
            for watch in self._watches:
                watch.close()
            self.upstream.close(linger=0)
            self.subscriber.close(linger=0)
            self.primary_login = None
            self._open_upstream()
            reply, _ = self._request_upstream({"kind": "sync", "since": None}, timeout=self.sync_timeout)
        for watch in self._watches:  # the handshake passed: nothing more to learn from it
            watch.close()
        self._watches = []
        self.publish_address = reply["publish"]
        self.subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        self.subscriber.connect(self.publish_address)
        self._load_snapshot(reply["result"])
        self._open_router()
        log.info("zdb transaction engine on %s following %s at seq %d", self.address, self.primary, self.seq)

    def _open_upstream(self) -> None:
        """The DEALER that forwards to the SM and the SUB that follows its stream, with our login or key."""
        from workbench.zdb.transport import login_client, secure_client

        self.upstream = self.context.socket(zmq.DEALER)
        self.upstream.linger = 0
        self.subscriber = self.context.socket(zmq.SUB)
        self.subscriber.linger = 0
        self.subscriber.rcvhwm = 100_000
        if self.primary_key:
            keys = self.client_keys or CurveKeys.generate()
            secure_client(self.upstream, self.primary_key, keys)
            secure_client(self.subscriber, self.primary_key, keys)
        elif self.primary_login is not None:
            for sock in (self.upstream, self.subscriber):
                login_client(sock, *self.primary_login)
        # Read while starting: a refused login is told as such, not as a timeout.
        self._watches = [HandshakeWatch(self.upstream, with_login=self.primary_login is not None)]
        self.upstream.connect(self.primary)

    def _request_upstream(self, message: dict[str, Any], timeout: float) -> tuple[dict[str, Any], bytes | None]:
        """A blocking request to the SM (only while starting, before serving)."""
        message = {**message, "id": 0, "client": f"te-{id(self):x}"}
        self.upstream.send(encode(message))
        deadline = time.monotonic() + timeout
        while not self.upstream.poll(100):
            failure = self._watches[0].failure()
            if failure == NO_LOGIN_THERE and not self.primary_key:
                raise _PrimaryTakesNoLogin()
            if failure is not None:
                raise ZdbError("the storage manager refused this engine's connection: "
                               + ("wrong database user or password" if failure == REFUSED
                                  else "it requires a login or CURVE key (give the engine one)"),
                               primary=self.primary)
            if time.monotonic() >= deadline:
                raise ZdbError("storage manager did not answer", primary=self.primary, timeout=timeout)
        frames = self.upstream.recv_multipart()
        reply = decode(frames[0])
        if not reply.get("ok"):
            raise ZdbError("storage manager refused to sync", primary=self.primary, error=reply.get("error"))
        return reply, frames[1] if len(frames) > 1 else None

    def _load_snapshot(self, result: dict[str, Any]) -> None:
        snapshot = result["snapshot"]
        self.document = Document(snapshot["root"], history_limit=0)
        self.seq = self.primary_seq = snapshot["seq"]
        self.lock_holder = result.get("lock")

    def _poll_sockets(self) -> list[zmq.Socket]:
        return [self.router, self.control, self.subscriber, self.upstream]

    def _before_batch(self, ready: dict[zmq.Socket, int]) -> None:
        if self.subscriber in ready:
            for _ in range(BATCH * 4):
                try:
                    body = self.subscriber.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_stream(body)
        if self.upstream in ready:
            for _ in range(BATCH):
                try:
                    frames = self.upstream.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_upstream(frames)

    # -- the change stream ----------------------------------------------------------------------
    def _on_stream(self, body: bytes) -> None:
        self._last_stream = time.monotonic()
        try:
            message = decode(body, limit=1 << 62)
        except BadRequest:
            log.error("te: undecodable record on the change stream; resyncing")
            self._request_sync()
            return
        if "heartbeat" in message:
            self.primary_seq = max(self.primary_seq, message["heartbeat"])
            if message["heartbeat"] < self.seq:
                log.warning("te: primary is behind us (restarted without its journal?): full resync")
                self._request_sync(full=True)
            elif message["heartbeat"] > self.seq:
                self._request_sync()
            self._set_lock(message.get("lock"))
            return
        self._apply_record(message)

    def _apply_record(self, record: dict[str, Any]) -> None:
        seq = record["seq"]
        self.primary_seq = max(self.primary_seq, seq)
        if seq <= self.seq:
            return  # already applied (e.g. delivered both by the stream and by a sync)
        if seq != self.seq + 1:
            self._request_sync()  # a gap: catch up from the journal
            return
        ops = [Op.from_json(o) for o in record["ops"]]
        self.document.apply(ops)
        self.seq = seq
        self._release_waiters()

    def _request_sync(self, full: bool = False) -> None:
        now = time.monotonic()
        if self._sync_in_flight is not None and now < self._resync_at:
            return
        forward_id = next(self._forward_ids)
        self._sync_in_flight = forward_id
        self._resync_at = now + 2.0
        self.upstream.send(encode({"id": forward_id, "kind": "sync", "since": None if full else self.seq,
                                   "client": f"te-{id(self):x}"}))

    def _on_upstream(self, frames: list[bytes]) -> None:
        try:
            reply = decode(frames[0], limit=1 << 62)
        except BadRequest:
            log.error("te: undecodable reply from the storage manager")
            return
        forward_id = reply.get("id")
        if forward_id == self._sync_in_flight:
            self._sync_in_flight = None
            if reply.get("ok"):
                result = reply["result"]
                if "snapshot" in result:
                    self._load_snapshot(result)
                elif len(frames) > 1 and frames[1]:
                    for line in frames[1].split(b"\n"):
                        self._apply_record(decode(line, limit=1 << 62))
                self._set_lock(result.get("lock"))
                self._release_waiters()
            return
        target = self._forwarded.pop(forward_id, None)
        if target is None:
            return
        envelope, original = target
        reply["id"] = original.get("id")
        data = frames[1] if len(frames) > 1 else None
        seq = reply.get("seq", 0)
        if reply.get("ok") and isinstance(seq, int) and seq > self.seq and original.get("kind") in ("op", "batch", "undo", "redo"):
            # Answer once the write is applied here too: read-your-writes on this engine.
            self.pending.append(Pending(envelope, {"kind": "_reply", "after": seq, "reply": reply, "data": data},
                                        None, time.monotonic() + self.sync_timeout, "replica catching up"))
            return
        self.reply(envelope, reply, data)

    def _set_lock(self, holder: str | None) -> None:
        if holder != self.lock_holder:
            self.lock_holder = holder
            if holder is None:
                self.retry_pending()

    def _release_waiters(self) -> None:
        if any(p.request.get("after", 0) <= self.seq for p in self.pending):
            self.retry_pending()

    # -- client requests ------------------------------------------------------------------------
    def _dispatch(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None) -> None:
        kind = request["kind"]
        if kind == "_reply":  # a forwarded write's answer waiting for this engine to catch up
            if request["after"] > self.seq:
                deadline = self._retrying.deadline if self._retrying else time.monotonic() + self.sync_timeout
                self.pending.append(Pending(envelope, request, None, deadline, "replica catching up"))
            else:
                self.reply(envelope, request["reply"], request["data"])
            return
        if kind == "status":
            self._ok(envelope, request, self.status())
            return
        if kind == "ping":
            self._ok(envelope, request, "pong")
            return
        if kind == "login":  # this engine's own handshake checked it: nothing to forward
            self._ok(envelope, request, self.login(request))
            return
        op = self._single_read(request) if kind == "op" else None
        if op is not None:
            if self.blocked_by_lock(request):
                self.hold(envelope, request, data, "database locked by another client")
                return
            after = request.get("after", 0)
            if not isinstance(after, int):
                raise BadRequest("after must be a sequence number")
            if after > self.seq:
                self.hold(envelope, request, data, f"replica at seq {self.seq} waiting for {after}")
                if after > self.primary_seq:
                    self._request_sync()
                return
            self.stats.reads += 1
            self._ok(envelope, request, self.document.read(op))
            return
        if kind == "sync":
            raise BadRequest("replicas of replicas are not supported: sync from the storage manager")
        self._forward(envelope, request, data)

    def _single_read(self, request: dict[str, Any]) -> Op | None:
        """The op of a one-op read request (served here), or None (forwarded to the SM)."""
        ops = request.get("ops")
        if not isinstance(ops, list) or len(ops) != 1:
            return None
        op = Op.from_json(ops[0])
        return None if self.document.is_write(op) else op

    def _forward(self, envelope: list[bytes], request: dict[str, Any], data: bytes | None) -> None:
        forward_id = next(self._forward_ids)
        self._forwarded[forward_id] = (envelope, request)
        message = encode({**request, "id": forward_id})
        self.upstream.send_multipart([message] if data is None else [message, data])
        self.stats.writes += 1

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "address": self.address, "primary": self.primary,
                "publish": self.publish_address, "seq": self.seq,
                "primary_seq": self.primary_seq, "lag": max(0, self.primary_seq - self.seq),
                "keys": len(self.document.root), "locked": self.lock_holder is not None,
                "requests": self.stats.requests, "reads": self.stats.reads, "forwarded": self.stats.writes,
                "errors": self.stats.errors, "waiting": len(self.pending)}

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_stream > 5 * HEARTBEAT_SECONDS:
            self._request_sync()  # no heartbeat for a while: maybe the primary restarted
            self._last_stream = now
        if now - self._last_report >= HEARTBEAT_SECONDS:
            # Tell the SM where we are, so its status (and dashboards) can show replica lag.
            self._last_report = now
            self.upstream.send(encode({"id": 0, "kind": "ping", "client": f"te-{id(self):x}",
                                       "replica": self.address, "seq": self.seq}))
        super()._housekeeping()


def _plain_read_path(raw: Any) -> list[Any] | None:
    """The path of a well-formed op that reads a value itself (method null), else None."""
    if type(raw) is list and len(raw) == 4 and raw[1] is None:
        path, _, args, kwargs = raw
        if type(path) is list and type(args) is list and type(kwargs) is dict:
            return path
    return None


def _lease(request: dict[str, Any], default: float) -> float:
    lease = request.get("lease", default)
    if not isinstance(lease, (int, float)) or not 0 < lease <= 3600:
        raise BadRequest("lease must be between 0 and 3600 seconds")
    return float(lease)


def _sibling_endpoint(address: str) -> str:
    """Where to publish the change stream by default: same host, any free port."""
    if address.startswith("tcp://"):
        host = address[len("tcp://"):].rsplit(":", 1)[0]
        return f"tcp://{host}:0"
    if address.startswith("ipc://"):
        return address + ".stream"
    return f"inproc://zdb-stream-{os.getpid()}-{id(address)}"


def open_server(path: str | Path, **options: Any) -> StorageManager:
    """Start a storage manager in-process on ``path`` (defaults: loopback, a free port)."""
    options.setdefault("bind", "tcp://127.0.0.1:0")
    return StorageManager(path, **options).start()
