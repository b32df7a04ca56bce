"""The zdb client: a connection (``Client``) and the query proxy that turns Python syntax into requests.

::

    from workbench.zdb import client
    db, sockets = client("tcp://127.0.0.1:5559")
    db["l"] = list(range(10))
    odd_squares = [v * v for v in db["l"] if v % 2]   # one request for the iteration
    db["l"][4]._run()                                   # building a path sends nothing; _run reads

Named methods (``append``, ``pop``, ``keys``, ``get``...) run on the server and return their
result. Errors arrive as exceptions that are also the matching Python built-in (a missing key
raises ``ZdbKeyError``, which is a ``KeyError``).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import zmq

from workbench.errors import ZdbError
from workbench.zdb.cache import CacheOptions, ClientCache, register_client
from workbench.zdb.document import READ_METHODS
from workbench.zdb.errors import UnstorableValueError
from workbench.zdb.pipeline import Pipeline
from workbench.zdb.errors import ZDB_ERRORS, ZdbAuthenticationError, ZdbRemoteError, ZdbTimeout  # noqa: F401 - re-exported, older callers import them from here
from workbench.zdb.protocol import BLOB_CHUNK_BYTES, File, decode, encode, unstorable
from workbench.zdb.transport import (
    DEFAULT_URI,
    LOGIN_NEEDED,
    NO_LOGIN_THERE,
    REFUSED,
    CurveKeys,
    HandshakeWatch,
    login_client,
    recv_frames,
    secure_client,
    send_frames,
)


# plain ints: no enum work per request
_NOBLOCK, _SNDMORE, _RCVTIMEO = int(zmq.NOBLOCK), int(zmq.SNDMORE), int(zmq.RCVTIMEO)


class Client:
    """One client session with a zdb database: a write endpoint and optionally a read endpoint.

    ``read_your_writes=True`` makes reads sent to a replica wait until it has applied this
    client's last write. Reads are retried on a fresh socket after a timeout; writes are not (a
    write that timed out may have been applied) and raise ``ZdbTimeout``.

    ``user`` / ``password`` are presented in each connection's handshake (ZeroMQ's PLAIN): a
    server with a login lets nothing else through, and a wrong one raises
    ``ZdbAuthenticationError`` at once. Against a server that takes no login, the client
    connects without one.

    ``cache=True`` (or a ``CacheOptions``) keeps values read in memory, invalidated by the
    server's change stream (see ``workbench.zdb.cache`` for what that guarantees); off by default.
    """

    def __init__(self, write_uri: str = DEFAULT_URI, read_uri: str | None = None, timeout: float = 10.0,
                 retries: int = 2, read_your_writes: bool = False, server_key: str | None = None,
                 keys: CurveKeys | None = None, user: str | None = None, password: str | None = None,
                 relocate: Callable[[], str] | None = None, cache: bool | CacheOptions = False) -> None:
        self.write_uri = write_uri
        self.relocate = relocate  # asks where to go when the endpoint stops answering (a domain's TE)
        self.read_uri = read_uri
        self.timeout = timeout
        self.retries = retries
        self.read_your_writes = read_your_writes
        self.server_key = server_key
        self.keys = keys or (CurveKeys.generate() if server_key else None)
        self.client_id = f"c-{uuid.uuid4().hex}"  # names this client in statistics; grants nothing
        self.last_write_seq = 0
        self.context = zmq.Context()
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.RLock()
        self._sockets: dict[str, zmq.Socket | None] = {"write": None, "read": None}
        self._wait_ms: dict[str, int] = {}  # the receive timeout each socket has now
        self._locked = False
        self._lock_token: str | None = None  # the lock's secret, from the server's reply to lock
        self._renewer: threading.Thread | None = None
        self._renew_stop = threading.Event()
        self.lock_lost: str | None = None
        self._closed = False
        if user is not None and not password:
            # ZeroMQ's PLAIN cannot carry an empty password (the socket option is refused), and
            # no database user has one: say so, rather than fail half-way through a handshake.
            raise ZdbAuthenticationError("a database login needs a password", user=user, uri=write_uri)
        self._credentials = (user, password) if user is not None else None
        self._watches: dict[str, HandshakeWatch] = {}
        self._takes_no_login: set[str] = set()  # roles ("write", "read") whose server has no login
        # A client dropped without close() must not take the program down with it: collected in a
        # reference cycle, its sockets would be gone from the context's list before the context's
        # own finalizer ran, whose term() then waits forever for them. This closes them first.
        self._release = weakref.finalize(self, _release_sockets, self._watches, self._sockets, self.context)
        self.cache: ClientCache | None = None
        register_client(self)  # its acknowledged writes are what cached reads in this process wait for
        try:
            if self._credentials:
                self._login()
            if cache:
                self.cache = ClientCache(self, cache if isinstance(cache, CacheOptions) else CacheOptions())
                weakref.finalize(self, self.cache.close)
        except BaseException:
            # A refused login must not leave a half-built client for the garbage collector:
            # Context.__del__ -> term() would block on the still-open socket.
            self.close()
            raise

    def __repr__(self) -> str:
        read = f", reads from {self.read_uri}" if self.read_uri else ""
        return f"<zdb Client {self.write_uri}{read}{', closed' if self._closed else ''}>"

    # -- sockets --------------------------------------------------------------------------------
    def _socket(self, role: str) -> zmq.Socket:
        sock = self._sockets[role]
        if sock is None:
            if self._closed:
                raise ZdbError("client is closed")
            sock = self.context.socket(zmq.DEALER)
            sock.linger = 0
            try:
                # Queue only on live connections, so a request never waits in a pipe to reach a
                # restarted server after we gave up on it.
                sock.setsockopt(zmq.IMMEDIATE, 1)
                with_login = False
                if self.server_key:
                    secure_client(sock, self.server_key, self.keys)
                elif self._credentials and role not in self._takes_no_login:
                    login_client(sock, *self._credentials)
                    with_login = True
                self._watches[role] = HandshakeWatch(sock, with_login)
                sock.connect(self.write_uri if role == "write" else self.read_uri)
            except BaseException:
                # A socket the client does not hold yet would make the context's term() (at
                # close) wait for it forever.
                watch = self._watches.pop(role, None)
                if watch is not None:
                    watch.close()
                sock.close(linger=0)
                raise
            self._sockets[role] = sock
        return sock

    def _reset(self, role: str) -> None:
        watch = self._watches.pop(role, None)
        if watch is not None:
            watch.close()
        sock = self._sockets[role]
        if sock is not None:
            sock.close(linger=0)
        self._sockets[role] = None
        self._wait_ms.pop(role, None)

    # -- requests -------------------------------------------------------------------------------
    def request(self, kind: str, read: bool = False, data: bytes | None = None,
                timeout: float | None = None, **fields: Any) -> tuple[Any, bytes | None]:
        """Send one request and return (result, data frame); raise the server's error as an exception."""
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            # While locked, everything goes to the write endpoint (the lock lives there).
            role = "read" if read and self.read_uri and not self._locked else "write"
            message = {"kind": kind, "client": self.client_id, **fields}
            if self._lock_token is not None:
                message["lock_token"] = self._lock_token
            if read and role == "read" and self.read_your_writes and self.last_write_seq:
                message["after"] = self.last_write_seq
            attempts = 1 + (self.retries if read else 0)
            started = time.monotonic()
            for attempt in range(attempts):
                message["id"] = next(self._ids)
                reply, reply_data = self._exchange(role, message, data, timeout)
                if reply is not None:
                    break
                self._reset(role)
                if role == "write" and self.relocate is not None:
                    self._move()
                if self._credentials and attempt + 1 < attempts:
                    self._login_locked()
            else:
                uri = self.write_uri if role == "write" else self.read_uri
                what = "read" if read else f"{kind} (it may or may not have been applied)"
                # The time waited in all, over every attempt: what the user sat through.
                waited = round(time.monotonic() - started, 1)
                raise ZdbTimeout(f"no answer from zdb server for {what} in {waited:g}s", uri=uri,
                                 attempts=attempts)
        if reply.get("ok"):
            if not read:
                seq = reply.get("seq")
                if isinstance(seq, int) and seq > self.last_write_seq:
                    self.last_write_seq = seq
            return reply.get("result"), reply_data
        error = reply.get("error") or {}
        raise ZDB_ERRORS.error(error)

    def _move(self) -> None:
        """Ask where the database is served now (another TE when ours died)."""
        try:
            self.write_uri = self.relocate()  # type: ignore[misc]
        except ZdbError:
            pass  # nowhere else yet: retry where we were

    def _exchange(self, role: str, message: dict[str, Any], data: bytes | None,
                  timeout: float) -> tuple[dict[str, Any] | None, bytes | None]:
        sock = self._sockets[role] or self._socket(role)
        body = encode(message)
        try:  # DEALER: no delimiter frame needed
            if data is None:
                sock.send(body, _NOBLOCK)
            else:
                sock.send(body, _NOBLOCK | _SNDMORE)
                sock.send(data)
        except zmq.Again:  # no live connection yet: wait for one within the timeout
            if not self._wait_for_connection(role, sock, timeout):
                if role in self._takes_no_login and self._watches[role].with_login:
                    self._reset(role)  # connect again, this time without a login
                    return self._exchange(role, message, data, timeout)
                return None, None
            send_frames(sock, [body] if data is None else [body, data])
        deadline = time.monotonic() + timeout
        wait_ms = int(timeout * 1000) + 1
        while True:
            # The receive timeout is a socket option: set it only when it changes.
            if self._wait_ms.get(role) != wait_ms:
                sock.setsockopt(_RCVTIMEO, wait_ms)
                self._wait_ms[role] = wait_ms
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return None, None
            if frames[0] == b"" and len(frames) > 1:
                del frames[0]
            reply = decode(frames[0], limit=1 << 62)
            if reply.get("id") == message["id"]:
                return reply, frames[1] if len(frames) > 1 else None
            # A stale answer of an abandoned request: wait on for ours with the time left.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, None
            wait_ms = int(remaining * 1000) + 1

    def _wait_for_connection(self, role: str, sock: zmq.Socket, timeout: float) -> bool:
        """Wait until a connection passed its handshake; raise if the server refused it."""
        deadline = time.monotonic() + timeout
        watch = self._watches[role]
        while not sock.poll(50, zmq.POLLOUT):
            failure = watch.failure()
            if failure == REFUSED:
                raise ZdbAuthenticationError("the server does not allow this CURVE key" if self.server_key
                                             else "wrong database user or password", uri=self._uri(role))
            if failure == LOGIN_NEEDED:
                raise ZdbAuthenticationError("authentication required: log in with the database user "
                                             "(or the server's CURVE key)", uri=self._uri(role))
            if failure == NO_LOGIN_THERE:
                self._takes_no_login.add(role)
                return False
            if time.monotonic() >= deadline:
                return False
        return True

    @property
    def server_takes_no_login(self) -> bool:
        """Whether the write endpoint turned out to take no login (so we connect without one)."""
        return "write" in self._takes_no_login

    def _uri(self, role: str) -> str | None:
        return self.write_uri if role == "write" else self.read_uri

    def run(self, path: tuple[Any, ...], method: str | None = None, args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None, ops: list[list[Any]] | None = None) -> Any:
        """Run one op (or a list of write ops, atomically) and return its result."""
        if not ops:
            ops = [self.op(path, method, args, kwargs)]
        else:
            for op in ops:
                _check_sendable(op)
        read = len(ops) == 1 and ops[0][1] in _READ_NAMES
        result, _ = self.request("op", read=read, ops=ops)
        if self.cache is not None and not read:
            self.cache.wrote(ops)
        return result

    def op(self, path: tuple[Any, ...], method: str | None = None, args: tuple[Any, ...] = (),
           kwargs: dict[str, Any] | None = None) -> list[Any]:
        """The wire form of one op, checked as sendable (what ``run`` and pipelines send)."""
        # A proxy argument stands for its current value (read first), as in _plain.
        op = [list(path), method, [a._run() if isinstance(a, Proxy) else a for a in args] if args else [],
              {k: _plain(v) for k, v in kwargs.items()} if kwargs else {}]
        _check_sendable(op)
        return op

    def pipeline(self, raise_on_error: bool = True) -> Pipeline:
        """Queue ops and send them in one request (``with conn.pipeline() as p:``); see ``Pipeline``."""
        return Pipeline(self, raise_on_error)

    # -- database-wide operations ---------------------------------------------------------------
    def undo(self) -> None:
        self.request("undo")
        if self.cache is not None:
            self.cache.clear()  # what the undo changed is known from the stream; forget all at once

    def redo(self) -> None:
        self.request("redo")
        if self.cache is not None:
            self.cache.clear()

    def save(self, wait: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Checkpoint: snapshot (written by a forked child, off the request path) + journal rotation.

        With ``wait`` the answer comes once the snapshot is durable, and a failed one (a full
        disk) raises ArchiveError with its errno; the previous snapshot and the journal stay.
        """
        result, _ = self.request("save", wait=wait, timeout=timeout)
        return result

    def status(self, read: bool = False) -> dict[str, Any]:
        result, _ = self.request("status", read=read)
        return result

    def ping(self, timeout: float | None = None) -> bool:
        result, _ = self.request("ping", timeout=timeout)
        return result == "pong"

    def lock(self, lease: float = 10.0, wait: float = 30.0) -> None:
        """Take the database lock (waits up to ``wait`` s); a thread renews its lease until unlock."""
        with self._lock:
            if self._locked:
                raise ZdbError("this client already holds the lock")
            result, _ = self.request("lock", lease=lease, wait=wait, timeout=wait + self.timeout)
            self._lock_token = result.get("token") if isinstance(result, dict) else None
            self._locked = True
            self.lock_lost = None
            self._renew_stop.clear()
            self._renewer = threading.Thread(target=self._renew_loop, args=(lease,), daemon=True,
                                             name="zdb-lock-renewer")
            self._renewer.start()

    def unlock(self) -> None:
        # Stop the renewer before taking the client lock: it may be waiting for that lock.
        self._stop_renewer()
        with self._lock:
            self._locked = False
            try:
                self.request("unlock")
            finally:
                self._lock_token = None

    @contextlib.contextmanager
    def locked(self, lease: float = 10.0, wait: float = 30.0) -> Iterator["Client"]:
        self.lock(lease=lease, wait=wait)
        try:
            yield self
        finally:
            self.unlock()

    def _renew_loop(self, lease: float) -> None:
        while not self._renew_stop.wait(lease / 3):
            try:
                self.request("renew", lease=lease)
            except ZdbError as exc:
                self.lock_lost = str(exc)
                return

    def _stop_renewer(self) -> None:
        self._renew_stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(5)
        self._renewer = None

    def _login(self) -> None:
        with self._lock:
            self._login_locked()

    def _login_locked(self) -> None:
        # The handshake carries the login; this request makes it happen now, so a refused login
        # raises here rather than at the first read. No password travels in a message.
        self.request("login")
        if self.read_uri:
            self.request("login", read=True)

    # -- blobs ----------------------------------------------------------------------------------
    def put_file(self, content: bytes | BinaryIO | str | os.PathLike[str], name: str | None = None) -> File:
        """Upload content (bytes, a binary stream, or a local file path) in chunks; returns its File."""
        if isinstance(content, (str, os.PathLike)):
            name = name or Path(content).name
            with open(content, "rb") as stream:
                return self.put_file(stream, name)
        stream = io.BytesIO(content) if isinstance(content, (bytes, bytearray)) else content
        token = None
        while True:
            chunk = stream.read(BLOB_CHUNK_BYTES)
            final = len(chunk) < BLOB_CHUNK_BYTES
            result, _ = self.request("blob_put", data=chunk, upload=token, final=final, name=name or "blob")
            if final:
                return result
            token = result["upload"]

    def get_file(self, file: File, out: BinaryIO | None = None) -> bytes | None:
        """Download a blob; returns its bytes, or writes them to ``out`` and returns None."""
        buffer = out or io.BytesIO()
        offset = 0
        while True:
            result, chunk = self.request("blob_get", read=False, hash=file.hash, offset=offset,
                                         length=BLOB_CHUNK_BYTES)
            buffer.write(chunk or b"")
            offset += len(chunk or b"")
            if result["eof"]:
                break
        return None if out is not None else buffer.getvalue()

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        if self._locked:
            with contextlib.suppress(ZdbError):
                self.unlock()
        self._stop_renewer()
        if self.cache is not None:
            self.cache.close()
        with self._lock:
            self._closed = True
            self._release()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # seed compatibility: `db, sockets = client(); sockets["write"]`
    def __getitem__(self, role: str) -> zmq.Socket | None:
        return self._socket(role) if role == "write" or (role == "read" and self.read_uri) else None


# Which endpoint to send to: reads may go to a replica. The server still decides what writes.
_READ_NAMES = frozenset({None}).union(*READ_METHODS.values())


def _check_sendable(op: list[Any]) -> None:
    """Refuse, before sending, an op argument JSON would change (``{1: 2}``, a tuple, a set...)."""
    path, method, args, kwargs = op
    # the value of `db[...][key] = value` is met at path + [key]
    where = [*path, args[0]] if method == "__setitem__" and len(args) == 2 and isinstance(args[0], str) else path
    for index, value in enumerate((*args, *kwargs.values())):
        if (problem := unstorable(value, where if index == 1 else path, sending=True)) is not None:
            _, message, where, type_name = problem
            raise UnstorableValueError(message, path=where, type=type_name)


def _plain(value: Any) -> Any:
    """Values to send: a proxy stands for its current value (read first)."""
    if isinstance(value, Proxy):
        return value._run()
    return value


def _release_sockets(watches: dict[str, HandshakeWatch], sockets: dict[str, zmq.Socket | None],
                     context: zmq.Context) -> None:
    """Close a client's monitors and sockets (unsent requests dropped), then its context."""
    for watch in watches.values():
        watch.close()
    watches.clear()
    for role, sock in sockets.items():
        if sock is not None:
            sock.close(linger=0)
        sockets[role] = None
    context.term()


class Proxy:
    """A path into the database. Building one sends nothing; using it sends one request."""

    __slots__ = ("_client", "_path")

    def __init__(self, client: Client, path: tuple[Any, ...] = ()) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_path", path)

    # -- building paths and reading -------------------------------------------------------------
    def __getitem__(self, key: Any) -> "Proxy":
        return Proxy(self._client, (*self._path, key))

    def _run(self) -> Any:
        """Read the value at this path."""
        # What run(path) sends, without its general argument handling (the commonest request).
        cache = self._client.cache
        if cache is not None:
            return cache.read(self._client, self._path)
        return self._client.request("op", read=True, ops=[[list(self._path), None, [], {}]])[0]

    # -- writes through Python syntax -----------------------------------------------------------
    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, Proxy) and value._path == (*self._path, key) and value._client is self._client:
            return  # `db[k] += ...` assigns the proxy back onto itself: the call already ran
        self._client.run(self._path, "__setitem__", (key, value))

    def __delitem__(self, key: Any) -> None:
        self._client.run(self._path, "__delitem__", (key,))

    def __iadd__(self, other: Any) -> "Proxy":
        self._client.run(self._path, "extend", (other,))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("zdb paths are built with [], not attributes")

    # -- Python protocols -----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._client.run(self._path, "__len__"))

    def __contains__(self, item: Any) -> bool:
        return bool(self._client.run(self._path, "__contains__", (item,)))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._client.run(self._path, "__iter__"))

    def __eq__(self, other: object) -> bool:
        return self._run() == (other._run() if isinstance(other, Proxy) else other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # equality is by remote value

    def __bool__(self) -> bool:
        return bool(self._run())

    # -- remote method calls --------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Underscore names are never remote: IPython and friends probe _repr_html_ and the like.
        if name.startswith("_"):
            raise AttributeError(name)
        return _RemoteMethod(self, name)

    # database-wide operations, reachable from any path as in the seed (`db.undo()`)
    def undo(self) -> None:
        self._client.undo()

    def redo(self) -> None:
        self._client.redo()

    def save(self, wait: bool = False, timeout: float | None = None) -> dict[str, Any]:
        return self._client.save(wait=wait, timeout=timeout)

    def lock(self, lease: float = 10.0, wait: float = 30.0) -> None:
        self._client.lock(lease=lease, wait=wait)

    def unlock(self) -> None:
        self._client.unlock()

    def locked(self, lease: float = 10.0, wait: float = 30.0) -> contextlib.AbstractContextManager[Client]:
        return self._client.locked(lease=lease, wait=wait)

    def status(self) -> dict[str, Any]:
        return self._client.status()

    def pipeline(self, raise_on_error: bool = True) -> Pipeline:
        """``with db.pipeline() as p:`` queues ``p[...]`` writes, reads and calls for one request."""
        return self._client.pipeline(raise_on_error)

    # -- display --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<zdb {self._client.write_uri} db{''.join(f'[{k!r}]' for k in self._path)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.pretty(self._run())

    def _ipython_key_completions_(self) -> list[str]:
        try:
            value = self._client.run(self._path, "keys")
        except ZdbError:
            return []
        return [k for k in value if isinstance(k, str)]


class _RemoteMethod:
    """``db['l'].append`` before it is called."""

    __slots__ = ("proxy", "name")

    def __init__(self, proxy: Proxy, name: str) -> None:
        self.proxy, self.name = proxy, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.proxy._client.run(self.proxy._path, self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self.name} of {self.proxy!r}>"


def client(write_uri: str = DEFAULT_URI, read_uri: str | None = None, **options: Any) -> tuple[Proxy, Client]:
    """The seed's entry point: ``db, sockets = client(write_uri, read_uri)``.

    ``write_uri`` may also be ``zdb://user:password@broker-host:port/dbname``: a database run by a
    domain, reached through a TE the broker hands out (and handed out again if that TE dies).
    """
    if write_uri.startswith("zdb://"):
        write_uri, options = _domain_database(write_uri, options)
    connection = Client(write_uri, read_uri, **options)
    return Proxy(connection), connection


def connect(uri: str = DEFAULT_URI, **options: Any) -> Proxy:
    """The root proxy alone: ``db = connect("tcp://127.0.0.1:5559")`` or ``connect("zdb://dba:dba@host/teas")``."""
    return client(uri, **options)[0]


def resolve_domain_uri(uri: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """``zdb://user:pw@broker:port/db`` -> (a TE's endpoint, Client options that log in and relocate)."""
    return _domain_database(uri, options)


def _domain_database(uri: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from urllib.parse import unquote, urlsplit

    from workbench.zdb.locators import locate as locate_database

    parts = urlsplit(uri)
    database = parts.path.strip("/")
    if not parts.hostname or not database:
        raise ZdbError("a domain database URI is zdb://user:password@broker-host[:port]/dbname")
    broker = f"{parts.hostname}:{parts.port or 48004}"
    options = dict(options)
    if parts.username is not None:
        options.setdefault("user", unquote(parts.username))
        options.setdefault("password", unquote(parts.password or ""))
    options.setdefault("relocate", lambda: locate_database(broker, database))
    return locate_database(broker, database), options
