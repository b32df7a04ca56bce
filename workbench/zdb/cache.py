"""A zdb client cache of values read, kept true by the storage manager's change stream (ZEO's design).

A client made with ``cache=True`` (or ``cache=CacheOptions(...)``) subscribes to the change stream
its servers follow (the storage manager's PUB socket, with the client's own login or CURVE key)
and answers ``db[...]._run()`` of a path it has read before from memory. Why such a read is true:

* **Invalidation.** Every journal record names the paths it changed; the follower thread drops
  every cached path under or above each of them (writing ``db["a"]`` drops ``db["a"]["b"]`` and
  ``db`` itself; writing ``db["a"]["b"]`` drops ``db["a"]``). A list item written by index drops
  the whole list (``l[-1]`` and ``l[4]`` may be one item).
* **Waiting for the stream up to a seq.** A cached answer is given only once the stream has
  delivered every record up to the highest seq that any client of this process has been told by
  one of these servers (its writes' replies) and that the heartbeats announced. So a write
  acknowledged to this client, or to any other client in the process, is invalidated here before
  a later read returns. The wait is bounded (``CacheOptions.wait``): past it, the cache is dropped.
* **Reads racing writes.** A value read while a record touching its path arrives is not kept.
* **Gaps.** A record whose seq is not the next one, a heartbeat behind us (a restarted server), a
  disconnect, or no message for ``max_silence`` seconds (heartbeats come every 0.5 s) drops the
  whole cache; until the next heartbeat every read goes to the server.
* **Locks.** A client holding the database lock reads through (and keeps nothing).

What this does not give: a write acknowledged to *another process* is seen by cached reads here
once its record has crossed the stream (normally well under a millisecond after the writer's
reply, bounded by ``max_silence``); ``ClientCache.sync()`` (ZEO's ``server_sync``) makes one round
trip to learn the server's seq so that later reads wait for it. Only plain value reads of paths
of string and integer keys are cached; method calls (``keys()``, ``len()``, iteration) go to the
server. Values are copied out of the cache, so mutating a result changes nothing cached.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import zmq

from workbench.errors import ConfigurationError
from workbench.zdb.protocol import BadRequest, decode, encode
from workbench.zdb.transport import login_client, secure_client

if TYPE_CHECKING:  # the client module imports this one
    from workbench.zdb.client import Client

log = logging.getLogger(__name__)

Path = tuple[Any, ...]

#: every client of this process, so a cache can wait for writes other clients were told about
_CLIENTS: "weakref.WeakSet[Client]" = weakref.WeakSet()
_IMMUTABLE = (str, int, float, bool, type(None))
#: methods whose first argument is the key of the one child they change
_KEYED_WRITES = frozenset({"__setitem__", "__delitem__"})


def register_client(client: "Client") -> None:
    """Count a client's acknowledged writes in the seq that cached reads of this process wait for."""
    _CLIENTS.add(client)


@dataclass(frozen=True)
class CacheOptions:
    """How much a client cache holds and how long it trusts a quiet stream.

    ``entries`` / ``bytes``: bounds (least recently used dropped first; ``bytes`` counts each
    value's JSON size). ``max_silence``: seconds without any stream message (heartbeats come
    every 0.5 s) after which the whole cache is dropped. ``wait``: longest a cached read waits for
    the stream to reach the seq it must have seen; past it the cache is dropped and the read goes
    to the server.
    """

    entries: int = 10_000
    bytes: int = 64 * 1024 * 1024
    max_silence: float = 2.0
    wait: float = 1.0

    def __post_init__(self) -> None:
        if self.entries < 1 or self.bytes < 1 or self.max_silence <= 0 or self.wait < 0:
            raise ConfigurationError("cache bounds must be positive", entries=self.entries, bytes=self.bytes,
                                     max_silence=self.max_silence, wait=self.wait)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    drops: int = 0  # whole-cache drops (gaps, silence, disconnects, waits run out)
    invalidations: int = 0  # entries dropped by records
    waits_expired: int = 0  # cached reads that gave up waiting for the stream


class _Entry:
    __slots__ = ("value", "body", "seq", "size")

    def __init__(self, value: Any, body: bytes | None, seq: int, size: int) -> None:
        self.value, self.body, self.seq, self.size = value, body, seq, size


class _Read:
    """A read in flight: spoiled when a record touching its path arrives before its value is kept."""

    __slots__ = ("key", "spoiled")

    def __init__(self, key: Path) -> None:
        self.key, self.spoiled = key, False


class ClientCache:
    """Values read by one client, invalidated by the change stream (one follower thread).

    Made by ``Client(..., cache=...)``; reached as ``client.cache``. ``stats`` counts hits and
    misses; ``live`` says whether the stream is followed right now (else reads go to the server).
    """

    def __repr__(self) -> str:
        return f"<ClientCache {'live' if getattr(self, 'live', False) else 'not live'}, {getattr(self, 'stats', None)}>"

    def __init__(self, client: "Client", options: CacheOptions) -> None:
        self.options = options
        self.stats = CacheStats()
        status = client.status()
        publish = status.get("publish")
        if not isinstance(publish, str) or not publish:
            raise ConfigurationError("this server tells no change stream to follow", uri=client.write_uri)
        self.publish_address = publish
        # The endpoints whose write acknowledgements this cache must have seen on the stream.
        primary = status.get("primary") or status.get("address")
        self.servers = frozenset(u for u in (client.write_uri, client.read_uri, primary) if u)
        self._cond = threading.Condition(threading.Lock())
        self._entries: OrderedDict[Path, _Entry] = OrderedDict()
        self._under: dict[Path, set[Path]] = {}  # proper prefix -> cached paths below it
        self._bytes = 0
        self._reads: list[_Read] = []
        # Acknowledgements from before the server restarted behind us (a lost journal): their seqs
        # belong to a history that is gone, so they are not waited for.
        self._before_restart: "weakref.WeakKeyDictionary[Client, int]" = weakref.WeakKeyDictionary()
        self.live = False
        self.last_seq = 0  # the last record applied from the stream
        self._expected = 0  # the highest seq heartbeats announced
        self._last_message = time.monotonic()
        self._stop = threading.Event()
        self._context = zmq.Context()  # its own: the client's context may be ended without us
        credentials = getattr(client, "_credentials", None)
        self._socket_options = (client.server_key, client.keys, credentials)
        self._thread = threading.Thread(target=self._follow, name="zdb-cache-stream", daemon=True)
        self._thread.start()

    # -- reads ----------------------------------------------------------------------------------
    def read(self, client: "Client", path: Path) -> Any:
        """The value at ``path``: from memory when that is known to be true, else from the server."""
        if client._locked or not all(type(k) is str or type(k) is int for k in path):
            return _read_through(client, path)
        cond = self._cond
        with cond:
            entry = self._entries.get(path) if self.live else None
            if entry is not None:
                need = self._need()
                if self.last_seq < need and not cond.wait_for(lambda: self.last_seq >= need or not self.live,
                                                              self.options.wait):
                    self._drop("the stream did not reach a seq this process was told about")
                    self.stats.waits_expired += 1
                    self.last_seq = need  # what we keep from now on was read at or after it
                entry = self._entries.get(path) if self.live else None
            if entry is not None:
                self._entries.move_to_end(path)
                self.stats.hits += 1
                return entry.value if entry.body is None else decode(entry.body, limit=1 << 62)
            self.stats.misses += 1
            pending = _Read(path) if self.live else None
            if pending is not None:
                self._reads.append(pending)
            seq_at_send = self.last_seq
            # A replica answers only once it has applied what this process was told of and what
            # our stream has delivered ("after"): a value older than the stream's last record,
            # read from a lagging engine, would otherwise be kept with nothing left to drop it.
            # (A storage manager is never behind its own stream and ignores it.)
            after = max(self._need(), seq_at_send)
        try:
            value = _read_through(client, path, after)
        except BaseException:
            if pending is not None:
                with cond:
                    self._reads.remove(pending)
            raise
        if pending is not None:
            with cond:  # one section: a record arriving now either spoils the read or finds the entry
                self._reads.remove(pending)
                if self.live and not pending.spoiled:
                    self._keep(path, value, seq_at_send)
        return value

    def wrote(self, ops: Iterable[list[Any]]) -> None:
        """This client's write was acknowledged: forget what it changed before the write returns."""
        with self._cond:
            for op in ops:
                self._invalidate(_changed_path(op), seq=None)

    def clear(self) -> None:
        with self._cond:
            self._drop("cleared")

    def sync(self, client: "Client") -> None:
        """One round trip (ZEO's server_sync): later cached reads wait for the stream to reach the server's seq."""
        status = client.status()
        # A transaction engine also tells the storage manager's seq it has heard of.
        seq = max(status.get("seq", 0), status.get("primary_seq", 0))
        with self._cond:
            self._expected = max(self._expected, seq)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _need(self) -> int:
        """The seq the stream must have reached before a cached value may be returned."""
        need = self._expected
        before_restart = self._before_restart
        for other in list(_CLIENTS):
            seq = other.last_write_seq
            if seq > need and other.write_uri in self.servers and before_restart.get(other) != seq:
                need = seq
        return need

    def _keep(self, path: Path, value: Any, seq: int) -> None:
        body = encode(value)
        size = len(body) + 64  # 64: the entry's own bookkeeping, roughly
        if size > self.options.bytes:
            return
        self._forget(path)
        self._entries[path] = _Entry(value, None if isinstance(value, _IMMUTABLE) else body, seq, size)
        self._bytes += size
        for depth in range(len(path)):
            self._under.setdefault(path[:depth], set()).add(path)
        while len(self._entries) > self.options.entries or self._bytes > self.options.bytes:
            self._forget(next(iter(self._entries)))

    def _forget(self, path: Path) -> None:
        entry = self._entries.pop(path, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for depth in range(len(path)):
            below = self._under.get(path[:depth])
            if below is not None:
                below.discard(path)
                if not below:
                    del self._under[path[:depth]]

    def _invalidate(self, changed: Path, seq: int | None) -> None:
        """Drop cached paths above and below ``changed`` (unless read after record ``seq``)."""
        victims = [changed[:depth] for depth in range(len(changed) + 1) if changed[:depth] in self._entries]
        victims.extend(self._under.get(changed, ()))
        for path in victims:
            entry = self._entries.get(path)
            if entry is not None and (seq is None or entry.seq < seq):
                self._forget(path)
                self.stats.invalidations += 1
        for pending in self._reads:
            if _overlap(pending.key, changed):
                pending.spoiled = True

    def _drop(self, reason: str) -> None:
        if self._entries:
            log.info("zdb cache dropped (%s)", reason)
        self._entries.clear()
        self._under.clear()
        self._bytes = 0
        self.stats.drops += 1
        for pending in self._reads:
            pending.spoiled = True

    # -- the stream -----------------------------------------------------------------------------
    def _follow(self) -> None:
        server_key, keys, credentials = self._socket_options
        sock = self._context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 100_000
        if server_key:
            secure_client(sock, server_key, keys)
        elif credentials:
            login_client(sock, *credentials)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.publish_address)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if monitor in ready:
                    monitor.recv_multipart()
                    self._lose("disconnected from the change stream")
                if sock in ready:
                    for _ in range(4096):
                        try:
                            body = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_message(body)
                if self.live and time.monotonic() - self._last_message > self.options.max_silence:
                    self._lose(f"no stream message for {self.options.max_silence:g}s")
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            self._context.term()

    def _on_message(self, body: bytes) -> None:
        try:
            message = decode(body, limit=1 << 62)
        except BadRequest:
            self._lose("an undecodable stream message")
            return
        with self._cond:
            self._last_message = time.monotonic()
            heartbeat = message.get("heartbeat")
            if heartbeat is not None:
                if heartbeat < self.last_seq:
                    self._new_history(heartbeat)
                elif not self.live:
                    # The first message we see: records from here on are all delivered to us.
                    self.live, self.last_seq, self._expected = True, heartbeat, heartbeat
                else:
                    self._expected = max(self._expected, heartbeat)
            else:
                seq = message.get("seq")
                if not isinstance(seq, int):
                    return
                if self.live and seq == self.last_seq + 1:
                    for op in message.get("ops") or ():
                        self._invalidate(_changed_path(op), seq)
                elif seq <= self.last_seq and not self.live:
                    self._new_history(seq)
                else:
                    # A gap (or a first record): what we hold may have missed a change.
                    if self.live:
                        self._drop(f"gap in the stream: record {seq} after {self.last_seq}")
                    self.live = True
                    if seq < self._expected:
                        self._expected = seq
                self.last_seq = seq
            self._cond.notify_all()

    def _new_history(self, seq: int) -> None:
        """The server is behind what we followed: restarted without its journal (or a new archive)."""
        self._drop("the server is behind the stream (restarted?)")
        self.live = True
        self.last_seq = self._expected = seq
        for other in list(_CLIENTS):
            if other.last_write_seq > seq:
                self._before_restart[other] = other.last_write_seq

    def _lose(self, reason: str) -> None:
        with self._cond:
            self._drop(reason)
            self.live = False
            self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)


def _read_through(client: "Client", path: Path, after: int = 0) -> Any:
    if after:
        return client.request("op", read=True, ops=[[list(path), None, [], {}]], after=after)[0]
    return client.request("op", read=True, ops=[[list(path), None, [], {}]])[0]


def _changed_path(op: Any) -> Path:
    """The path a journaled op changed, widened to the nearest dict path (the root drops everything).

    A dict key written by name is that child. A list is named whole: ``l[-1]`` and ``l[4]`` may
    be one item, and an insert moves every index, so nothing below a list index is trusted.
    """
    try:
        path, method, args, _ = op
    except (TypeError, ValueError):
        return ()
    if not isinstance(path, list):
        return ()
    if method in _KEYED_WRITES and args and isinstance(args[0], str):
        path = [*path, args[0]]
    for depth, key in enumerate(path):
        if type(key) is not str:  # a list index or a slice: the list itself changed
            return tuple(path[:depth])
    return tuple(path)


def _overlap(a: Path, b: Path) -> bool:
    """Whether one path is a prefix of the other (a write at one changes the value at the other)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]
