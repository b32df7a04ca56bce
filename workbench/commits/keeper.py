"""ZooKeeper views of the latest commits: on-demand reads, live mirrors, publishing and healing.

:class:`CommitKeeper` keeps the head commit of each key in one znode below ``path`` (the znode
name is the URL-quoted key; the data a small JSON document with metadata and the base64 payload).
It keeps no history: that is the storage's job.

* ``get(key)``, ``heads()``, ``keys()``: synchronous ZooKeeper reads.
* ``save(commit)``: version-guarded writes (compare-and-set on the znode version); an older or
  equal version is refused (returns False); a tombstone deletes the znode; a corrupt znode is
  overwritten.
* ``mirror()``: a :class:`CommitMirror`, a live read-only mapping key -> Commit, complete when
  returned, kept current through watches and resynchronized after reconnects and session
  expiry; listeners get ``commit_updated(commit)`` and ``commit_removed(key, previous)``.
* :func:`keeper_publishing` wraps a storage so that saves go to SQL first, then ZooKeeper.
* :class:`AutoPublisher` (``keeper.auto_publisher(storage, period, fuzz)``): among all servers,
  the one elected leader (kazoo ``Election``) periodically makes ZooKeeper equal to the storage's
  heads, healing lost publishes and out-of-band edits or deletions.

::

    keeper = CommitKeeper(zk, "/rainer/diary")
    storage = keeper_publishing(SqlCommitStorage(url).start(), keeper)
    publisher = keeper.auto_publisher(storage.underlying, period=30, fuzz=5).start()
    mirror = keeper.mirror()
    storage.save(Commit.from_value("foo", 1, {"hey": "what"}, author="gian"))
    mirror.wait_for("foo", 1)["foo"].value  # {'hey': 'what'}
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping
from urllib.parse import quote, unquote

from workbench.commits.model import (
    JSON,
    Commit,
    CommitMetadata,
    InvalidCommit,
    Serialization,
    SerializationChooser,
    check_key,
)
from workbench.commits.storage import CommitStorage
from workbench.errors import CommitsError
from workbench.events import EventDispatcher, EventSource

if TYPE_CHECKING:
    from kazoo.client import KazooClient
    from kazoo.protocol.states import ZnodeStat

log = logging.getLogger(__name__)

__all__ = ["CommitKeeper", "CommitMirror", "KeeperPublishingStorage", "AutoPublisher", "auto_publisher",
           "keeper_publishing",
           "encode_znode", "decode_znode"]


# -- znode format -----------------------------------------------------------------------------------
def encode_znode(commit: Commit) -> bytes:
    """The znode data of a (non-empty) commit: its metadata JSON plus ``payload_base64``."""
    document = commit.meta.to_json()
    document["payload_base64"] = base64.b64encode(commit.payload or b"").decode("ascii")
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_znode(data: bytes, serialization: Serialization = JSON) -> Commit:
    """Read znode data written by :func:`encode_znode`; raises InvalidCommit when corrupt."""
    try:
        document = json.loads(data.decode("utf-8"))
        meta = CommitMetadata.from_json(document)
        payload = base64.b64decode(document["payload_base64"], validate=True)
    except InvalidCommit:
        raise
    except Exception as exc:  # any garbage written out of band
        raise InvalidCommit("corrupt commit znode", reason=repr(exc)) from None
    if meta.empty:
        raise InvalidCommit("a znode never holds a tombstone", key=meta.key, version=meta.version)
    return Commit(meta, payload, serialization)


def _node_name(key: str) -> str:
    return quote(check_key(key), safe="")


def _key_of(name: str) -> str:
    return unquote(name)


class CommitKeeper:
    """The latest commit of each key, in ZooKeeper below ``path``, through a started kazoo client.

    ``serialization`` (one for all keys, or a function of the key) reads payloads back.
    """

    def __init__(self, zk: KazooClient, path: str,
                 serialization: Serialization | SerializationChooser = JSON) -> None:
        if not path.startswith("/") or path == "/" or path.endswith("/"):
            raise CommitsError("keeper path must be an absolute znode path like /rainer/diary", path=path)
        self.zk = zk
        self.path = path
        self._serialization = serialization
        # key -> (znode version, commit version) as this keeper last wrote or read them
        self._known: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"<CommitKeeper {self.path}>"

    def serialization_for(self, key: str) -> Serialization:
        chosen = self._serialization
        return chosen if isinstance(chosen, Serialization) else chosen(key)

    def node_path(self, key: str) -> str:
        """The znode of ``key``."""
        return f"{self.path}/{_node_name(key)}"

    # -- reads -------------------------------------------------------------------------------------
    def _decode(self, key: str, data: bytes) -> Commit | None:
        try:
            commit = decode_znode(data, self.serialization_for(key))
        except InvalidCommit as exc:
            log.warning("ignoring corrupt znode %s: %s", self.node_path(key), exc)
            return None
        return commit if commit.key == key else None

    def _read(self, key: str) -> tuple[Commit | None, ZnodeStat | None]:
        from kazoo.exceptions import NoNodeError

        try:
            data, stat = self.zk.get(self.node_path(key))
        except NoNodeError:
            return None, None
        return self._decode(key, data), stat

    def get(self, key: str) -> Commit | None:
        """The latest commit of ``key`` in ZooKeeper (None when absent or corrupt)."""
        return self._read(key)[0]

    def keys(self) -> list[str]:
        """Every key with a znode, sorted."""
        from kazoo.exceptions import NoNodeError

        try:
            names = self.zk.get_children(self.path)
        except NoNodeError:
            return []
        return sorted(_key_of(name) for name in names)

    def heads(self) -> dict[str, Commit]:
        """Every readable commit in ZooKeeper, by key (corrupt znodes are left out)."""
        found = {}
        for key in self.keys():
            commit = self.get(key)
            if commit is not None:
                found[key] = commit
        return found

    # -- writes ------------------------------------------------------------------------------------
    def save(self, commit: Commit) -> bool:
        """Publish ``commit`` unless ZooKeeper already has this version or a newer one.

        Returns True when ZooKeeper changed. Writes are compare-and-set on the znode's version,
        so concurrent publishers never overwrite a newer commit with an older one. A tombstone
        deletes the znode; a corrupt znode is overwritten.
        """
        from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

        node = self.node_path(commit.key)
        if self._save_over_known(node, commit):
            return True
        while True:
            current, stat = self._read(commit.key)
            if current is not None and current.version >= commit.version:
                self._known[commit.key] = (stat.version, current.version)
                return False
            try:
                if stat is None:
                    if commit.empty:
                        return False
                    self.zk.create(node, encode_znode(commit), makepath=True)
                    self._known[commit.key] = (0, commit.version)
                elif commit.empty:
                    self.zk.delete(node, version=stat.version)
                    self._known.pop(commit.key, None)
                else:
                    written = self.zk.set(node, encode_znode(commit), version=stat.version)
                    self._known[commit.key] = (written.version, commit.version)
                return True
            except (BadVersionError, NodeExistsError, NoNodeError):
                continue  # someone else wrote in between: look again

    def _save_over_known(self, node: str, commit: Commit) -> bool:
        """Write without reading first when this keeper wrote or read the znode last.

        The compare-and-set on the znode version proves nobody changed it since, so its commit
        version is the one remembered: one round trip instead of two for a publishing server.
        """
        from kazoo.exceptions import BadVersionError, NoNodeError

        known = self._known.get(commit.key)
        if known is None or commit.version <= known[1]:
            return False
        try:
            if commit.empty:
                self.zk.delete(node, version=known[0])
                self._known.pop(commit.key, None)
            else:
                written = self.zk.set(node, encode_znode(commit), version=known[0])
                self._known[commit.key] = (written.version, commit.version)
        except (BadVersionError, NoNodeError):
            self._known.pop(commit.key, None)
            return False
        return True

    def reconcile(self, key: str, source: Callable[[], Commit | None]) -> bool:
        """Make the znode of ``key`` equal to ``source()`` (the system of record's head), once.

        The znode is read *before* ``source`` is asked, and written only if it has not changed
        since (compare-and-set), so a publish that races with this one is never undone. Returns
        True when ZooKeeper changed. Used by :class:`AutoPublisher` to heal.
        """
        from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

        node = self.node_path(key)
        try:
            data, stat = self.zk.get(node)
        except NoNodeError:
            data, stat = None, None
        wanted = source()
        if wanted is not None and wanted.empty:
            wanted = None
        if wanted is None and stat is None:
            return False
        if wanted is not None and data is not None and self._decode(key, data) == wanted:
            return False
        try:
            if wanted is None:
                self.zk.delete(node, version=stat.version)
            elif stat is None:
                self.zk.create(node, encode_znode(wanted), makepath=True)
            else:
                self.zk.set(node, encode_znode(wanted), version=stat.version)
        except (BadVersionError, NodeExistsError, NoNodeError):
            return False  # changed under us: the next round looks again
        return True

    # -- views -------------------------------------------------------------------------------------
    def mirror(self, timeout: float = 30.0) -> CommitMirror:
        """A live mapping of every commit in ZooKeeper, complete when this returns.

        Close it with ``close()`` (or use it as a context manager) when done.
        """
        return CommitMirror(self).start(timeout)

    def auto_publisher(self, storage: CommitStorage, period: float = 30.0, fuzz: float = 5.0,
                       election_path: str | None = None, identifier: str | None = None) -> AutoPublisher:
        """An (unstarted) :class:`AutoPublisher` healing this keeper from ``storage``."""
        return AutoPublisher(storage, self, period, fuzz, election_path, identifier)


# -- mirror -------------------------------------------------------------------------------------------
class CommitMirror(EventSource, Mapping[str, Commit]):
    """A read-only, live ``{key: Commit}`` of a keeper's znodes.

    Reading it never touches the network: it is a snapshot replaced as watches fire (``value``
    gives the current snapshot as a dict nobody else changes). Watches are handled on one worker
    thread; after a reconnect or a session expiry the whole view is read again, so it is correct
    afterwards even if notifications were lost.

    Listeners (``add_listener``) receive ``commit_updated(commit)`` and
    ``commit_removed(key, previous)``; a new listener first receives ``commit_updated`` for every
    commit already present.
    """

    def __init__(self, keeper: CommitKeeper) -> None:
        self.keeper = keeper
        self._snapshot: dict[str, Commit] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._events = EventDispatcher(f"commits-mirror-{keeper.path}")
        self._thread: threading.Thread | None = None
        self._closed = False
        self._resyncs = 0

    # -- Mapping -------------------------------------------------------------------------------------
    @property
    def value(self) -> dict[str, Commit]:
        """The current snapshot (a new dict object each time anything changed)."""
        return self._snapshot

    def __getitem__(self, key: str) -> Commit:
        return self._snapshot[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot)

    def __len__(self) -> int:
        return len(self._snapshot)

    def initial_events(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("commit_updated", (commit,)) for commit in self._snapshot.values()]

    @property
    def resyncs(self) -> int:
        """How many full reads happened (1 at start, +1 per reconnect or session expiry)."""
        return self._resyncs

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> CommitMirror:
        """Read everything, arm the watches, start following changes; returns self."""
        self.keeper.zk.ensure_path(self.keeper.path)
        self._resync()  # on the caller's thread: the first value is complete
        self.keeper.zk.add_listener(self._on_state)
        self._thread = threading.Thread(target=self._work, name=f"commits-mirror-{self.keeper.path}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop following ZooKeeper; ``closed()`` reaches listeners. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.keeper.zk.remove_listener(self._on_state)
        self._tasks.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._events.close()
        with self._changed:
            self._changed.notify_all()

    def __enter__(self) -> CommitMirror:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wait_for(self, key: str, version: int | None = None, timeout: float = 10.0,
                 absent: bool = False) -> dict[str, Commit]:
        """Block until ``key`` is at ``version`` (any version when None; gone with ``absent``).

        Returns the snapshot that satisfied it; raises TimeoutError saying what is there instead.
        """
        deadline = time.monotonic() + timeout

        def satisfied() -> bool:
            commit = self._snapshot.get(key)
            if absent:
                return commit is None
            return commit is not None and (version is None or commit.version == version)

        with self._changed:
            while not satisfied():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise TimeoutError(f"mirror: {key} not {'absent' if absent else version}; "
                                       f"has {self._snapshot.get(key)!r}")
                self._changed.wait(remaining)
            return self._snapshot

    # -- watches (kazoo threads: only queue work) --------------------------------------------------
    def _on_children(self, _event: Any) -> None:
        self._tasks.put(("children",))

    def _on_data(self, event: Any) -> None:
        if event is None or not event.path:
            return  # a session event, not a node's: the state listener queues a resync
        self._tasks.put(("node", event.path.rsplit("/", 1)[-1]))

    def _on_state(self, state: str) -> None:
        # After a reconnect (same session: watches are re-set by kazoo) or a new session (all
        # watches gone): read everything again either way, since events may have been missed.
        if state == "CONNECTED":
            self._tasks.put(("resync",))

    # -- worker ------------------------------------------------------------------------------------
    def _work(self) -> None:
        from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, SessionExpiredError

        while True:
            task = self._tasks.get()
            if task is None or self._closed:
                return
            try:
                if task[0] == "resync":
                    self._resync()
                elif task[0] == "children":
                    self._read_children()
                else:
                    self._read_node(task[1])
            except (ConnectionLoss, SessionExpiredError, ConnectionClosedError):
                pass  # the state listener queues a resync once connected again
            except Exception:
                log.exception("mirror of %s: handling %r failed", self.keeper.path, task)

    def _resync(self) -> None:
        self._resyncs += 1
        known = set(self._snapshot)
        for name in self._read_children():
            # keys new to the snapshot were just read by _read_children: read the others once
            if _key_of(name) in known:
                self._read_node(name)

    def _read_children(self) -> list[str]:
        """Re-arm the children watch; drop vanished keys; read new ones. Returns all names."""
        from kazoo.exceptions import NoNodeError

        zk = self.keeper.zk
        try:
            names = zk.get_children(self.keeper.path, watch=self._on_children)
        except NoNodeError:
            # the whole path was removed: watch for it to come back
            if zk.exists(self.keeper.path, watch=self._on_children) is not None:
                return self._read_children()
            names = []
        present = {_key_of(name) for name in names}
        for key in [key for key in self._snapshot if key not in present]:
            self._apply(key, None)
        for name in names:
            if _key_of(name) not in self._snapshot:
                self._read_node(name)
        return names

    def _read_node(self, name: str) -> None:
        from kazoo.exceptions import NoNodeError

        key = _key_of(name)
        try:
            data, _stat = self.keeper.zk.get(f"{self.keeper.path}/{name}", watch=self._on_data)
        except NoNodeError:
            self._apply(key, None)
            return
        self._apply(key, self.keeper._decode(key, data))

    def _apply(self, key: str, commit: Commit | None) -> None:
        with self._changed:
            previous = self._snapshot.get(key)
            if previous == commit:
                return
            snapshot = dict(self._snapshot)
            if commit is None:
                del snapshot[key]
            else:
                snapshot[key] = commit
            self._snapshot = snapshot
            self._changed.notify_all()
        if commit is None:
            self._events.emit("commit_removed", key, previous)
        else:
            self._events.emit("commit_updated", commit)


# -- storage that publishes -----------------------------------------------------------------------------
class KeeperPublishingStorage(CommitStorage):
    """A storage whose saves go to ``underlying`` (the system of record) first, then to ZooKeeper.

    Reads go to ``underlying``. A ZooKeeper failure after the SQL save is logged, not raised:
    the commit is stored, and the auto-publisher pushes it later.
    """

    def __init__(self, underlying: CommitStorage, keeper: CommitKeeper) -> None:
        super().__init__(underlying._serialization)
        self.underlying = underlying
        self.keeper = keeper
        self.blocking = True

    def __repr__(self) -> str:
        return f"<KeeperPublishingStorage {self.underlying!r} publishing to {self.keeper.path}>"

    def start(self) -> KeeperPublishingStorage:
        self.underlying.start()
        return self

    def close(self) -> None:
        super().close()
        self.underlying.close()

    def _head(self, key: str) -> Commit | None:
        return self.underlying.get(key)

    def _get(self, key: str, version: int) -> Commit | None:
        return self.underlying.get(key, version)

    def _heads(self) -> dict[str, Commit]:
        return self.underlying.heads()

    def _history(self, key: str) -> list[Commit]:
        return self.underlying.history(key)

    def _insert(self, commit: Commit) -> None:
        # Stored (durably) in the system of record first, its post-save hooks run; its event
        # (which wakes its dispatcher thread) waits until ZooKeeper has the commit, so little
        # stands between the SQL commit and the znode write every other server is waiting for.
        self.underlying._store(commit)
        try:
            self._publish(commit)
        finally:
            self.underlying._announce(commit)

    def _publish(self, commit: Commit) -> None:
        from kazoo.exceptions import KazooException

        if not self.keeper.zk.connected:
            # kazoo would queue the request until ZooKeeper is back, holding this save hostage
            log.warning("stored %r while ZooKeeper is unreachable; the auto-publisher will publish it", commit)
            return
        try:
            self.keeper.save(commit)
        except (KazooException, OSError):
            log.warning("stored %r but could not publish it to ZooKeeper; the auto-publisher will",
                        commit, exc_info=True)


def auto_publisher(storage: CommitStorage, keeper: CommitKeeper, period: float = 30.0, fuzz: float = 5.0,
                   election_path: str | None = None, identifier: str | None = None) -> AutoPublisher:
    """An (unstarted) :class:`AutoPublisher` that heals ``keeper`` from ``storage``; ``start()`` it.

    Give it the system of record (not the keeper-publishing wrapper).
    """
    return AutoPublisher(storage, keeper, period, fuzz, election_path, identifier)


def keeper_publishing(storage: CommitStorage, keeper: CommitKeeper) -> KeeperPublishingStorage:
    """Wrap ``storage`` so every save is published to ``keeper`` after it is stored.

    Send every write through the returned storage; ``storage`` stays the system of record.
    """
    return KeeperPublishingStorage(storage, keeper)


# -- auto publisher ---------------------------------------------------------------------------------------
class AutoPublisher(EventSource):
    """Leader-elected periodic healer: ZooKeeper's view is made equal to the storage's heads.

    Every server of a cluster may run one; kazoo's ``Election`` (at ``election_path``, by default
    ``<keeper path>-publisher``) picks the one that publishes. The leader, every ``period``
    seconds plus up to ``fuzz`` random seconds, pushes each head missing or different in
    ZooKeeper, deletes znodes of tombstoned keys and removes znodes of keys the storage does not
    know (the storage is the system of record). Leadership ends as soon as the connection is
    suspended or lost, so two publishers never act as leader at once.

    Listeners get ``leader_elected(identifier)``, ``leadership_lost(identifier)`` and
    ``published(count)`` after each round.
    """

    def __init__(self, storage: CommitStorage, keeper: CommitKeeper, period: float = 30.0, fuzz: float = 5.0,
                 election_path: str | None = None, identifier: str | None = None) -> None:
        if period <= 0 or fuzz < 0:
            raise CommitsError("period must be > 0 and fuzz >= 0", period=period, fuzz=fuzz)
        self.storage = storage
        self.keeper = keeper
        self.period = period
        self.fuzz = fuzz
        self.election_path = election_path or f"{keeper.path}-publisher"
        self.identifier = identifier or f"publisher-{uuid.uuid4().hex[:8]}"
        self.rounds = 0
        self._events = EventDispatcher(f"commits-publisher-{self.identifier}")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._leading = threading.Event()
        self._thread: threading.Thread | None = None
        self._election: Any = None

    @property
    def is_leader(self) -> bool:
        """True while this publisher holds the leadership and its session is connected."""
        return self._leading.is_set()

    def start(self) -> AutoPublisher:
        """Join the election on a background thread; returns self."""
        self.keeper.zk.add_listener(self._on_state)
        self._thread = threading.Thread(target=self._run, name=f"commits-publisher-{self.identifier}",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Leave the election and stop; idempotent."""
        self._stop.set()
        self._wake.set()
        self.keeper.zk.remove_listener(self._on_state)
        if self._election is not None:
            try:
                self._election.cancel()
            except Exception:
                log.debug("cancelling the election failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)
        self._events.close()

    stop = close

    def __enter__(self) -> AutoPublisher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def publish_now(self, *, while_leading: bool = False) -> int:
        """One healing round (tests and admin tools call it directly); returns znodes changed.

        With ``while_leading`` the round stops as soon as leadership is lost.
        """
        changed = 0
        keys = set(self.storage.heads()) | set(self.keeper.keys())
        for key in sorted(keys):
            if self._stop.is_set() or (while_leading and not self._leading.is_set()):
                break
            if self.keeper.reconcile(key, lambda key=key: self.storage.get(key)):
                changed += 1
        self.rounds += 1
        self._events.emit("published", changed)
        return changed

    # -- internals -----------------------------------------------------------------------------------
    def _on_state(self, state: str) -> None:
        if state in ("SUSPENDED", "LOST"):
            # Without a live session our election node may already be gone and another
            # publisher elected: stop acting as leader right now.
            self._leading.clear()
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._election = self.keeper.zk.Election(self.election_path, self.identifier)
                self._election.run(self._lead)
            except Exception:
                if not self._stop.is_set():
                    log.info("publisher %s: election interrupted; rejoining", self.identifier, exc_info=True)
                    self._stop.wait(0.5)

    def _lead(self) -> None:
        from kazoo.protocol.states import KazooState

        if self._stop.is_set() or self.keeper.zk.state != KazooState.CONNECTED:
            return
        self._wake.clear()
        self._leading.set()
        self._events.emit("leader_elected", self.identifier)
        try:
            while not self._stop.is_set() and self._leading.is_set():
                try:
                    self.publish_now(while_leading=True)
                except Exception:
                    log.warning("publisher %s: healing round failed", self.identifier, exc_info=True)
                self._wake.wait(self.period + random.uniform(0, self.fuzz))
                self._wake.clear()
        finally:
            self._leading.clear()
            self._events.emit("leadership_lost", self.identifier)
