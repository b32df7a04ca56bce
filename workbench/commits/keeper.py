"""ZooKeeper views of the latest commits, in Rainer's layout: on-demand reads, live mirrors, publishing, healing.

:class:`CommitKeeper` keeps the head commit of each key as Rainer's JVM ``CommitKeeper`` does, so
both can share one ZooKeeper path: the znode ``<path>/data/<key>`` (the raw key as its name) holds
Rainer's ``Commit.serialize`` bytes (:func:`encode_znode`), and the auto-publishers of both elect
one leader under ``<path>/election`` (Curator's ``LeaderSelector`` protocol). It keeps no history:
that is the storage's job.

* ``get(key)``, ``heads()``, ``keys()``: synchronous ZooKeeper reads.
* ``save(commit)``: version-guarded writes (compare-and-set on the znode version); an older or
  equal version is refused (returns False); a tombstone deletes the znode; a corrupt znode is
  replaced by a newly saved commit of its key, as Rainer's ``save`` does.
* ``mirror()``: a :class:`CommitMirror`, a live read-only mapping key -> Commit, complete when
  returned, kept current through watches and resynchronized after reconnects and session
  expiry; listeners get ``commit_updated(commit)`` and ``commit_removed(key, previous)``.
* :func:`keeper_publishing` wraps a storage so that saves go to SQL first, then ZooKeeper.
* :class:`AutoPublisher` (``keeper.auto_publisher(storage, period, fuzz)``): among all servers,
  JVM ones included, the one elected leader periodically makes ZooKeeper equal to the storage's
  heads, healing lost publishes and out-of-band edits or deletions. Healing never deletes nor
  overwrites a znode it cannot parse, nor one with children.
* ``migrate_legacy_layout()`` moves commits written in the earlier layout (``<path>/<URL-quoted
  key>`` holding JSON with ``payload_base64``) into Rainer's; the leading publisher runs it.

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
import functools
import json
import logging
import queue
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping
from urllib.parse import unquote

from workbench.commits.model import (
    JSON,
    Commit,
    CommitMetadata,
    InvalidCommit,
    Serialization,
    SerializationChooser,
    check_key,
    format_mtime,
)
from workbench.commits.storage import CommitStorage
from workbench.errors import CommitsError
from workbench.events import EventDispatcher, EventSource

if TYPE_CHECKING:
    from kazoo.client import KazooClient
    from kazoo.protocol.states import ZnodeStat
    from kazoo.recipe.lock import Lock

log = logging.getLogger(__name__)

__all__ = ["CommitKeeper", "CommitMirror", "KeeperPublishingStorage", "AutoPublisher", "auto_publisher",
           "keeper_publishing", "curator_mutex", "zookeeper_accepts",
           "encode_znode", "decode_znode"]

#: the children of a keeper's path, as Rainer names them
DATA_NODE = "data"
ELECTION_NODE = "election"


# -- znode format (Rainer's Commit.serialize / deserializeOrThrow) ------------------------------------
#: Rainer's header is ``Jackson.bytes(meta.asMap)``; ``asMap`` is a six-entry Scala ``Map``, that is
#: a ``HashMap``, which Jackson writes in the map's iteration (hash-trie) order: this one.
_HEADER_FIELDS = ("author", "empty", "key", "version", "mtime", "comment")
_JACKSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _jackson_string(text: str) -> str:
    """``text`` as a JSON string the way Jackson writes one: non-ASCII as is, the short escapes,
    other control characters as ``\\u00XX`` (upper-case hex)."""
    return '"' + "".join(_JACKSON_ESCAPES.get(ch) or (f"\\u{ord(ch):04X}" if ch < " " else ch)
                         for ch in text) + '"'


def encode_znode(commit: Commit) -> bytes:
    """Rainer's serialization of ``commit``: ``<header length>\\n<header JSON>\\n<payload>\\n``.

    The header is compact JSON with every field (``empty`` too), in Rainer's order; a tombstone's
    payload is empty (Rainer never writes one to ZooKeeper, and neither does the keeper)::

        >>> from datetime import datetime, timezone
        >>> data = encode_znode(Commit.from_bytes("foo", 1, b"[1]", "gian", "rofl",
        ...                                       mtime=datetime(2014, 2, 11, tzinfo=timezone.utc)))
        >>> length, header, payload, end = data.split(b"\\n")
        >>> length, payload, end, len(header)
        (b'107', b'[1]', b'', 107)
        >>> header.split(b",")  # doctest: +NORMALIZE_WHITESPACE
        [b'{"author":"gian"', b'"empty":false', b'"key":"foo"', b'"version":1',
         b'"mtime":"2014-02-11T00:00:00.000Z"', b'"comment":"rofl"}']
    """
    meta = commit.meta
    fields = {"author": _jackson_string(meta.author), "empty": "true" if meta.empty else "false",
              "key": _jackson_string(meta.key), "version": str(meta.version),
              "mtime": _jackson_string(format_mtime(meta.mtime)), "comment": _jackson_string(meta.comment)}
    header = ("{" + ",".join(f'"{name}":{fields[name]}' for name in _HEADER_FIELDS) + "}").encode("utf-8")
    return b"%d\n%s\n%s\n" % (len(header), header, commit.payload or b"")


def decode_znode(data: bytes, serialization: Serialization = JSON) -> Commit:
    """Read Rainer's serialization (a tombstone too); raises InvalidCommit when it is not one.

    Stricter than Rainer's reader, which skips the separators unread: a znode without them is
    refused rather than read with a byte of its payload lost.
    """
    newline = data.find(b"\n")
    digits = data[:newline] if newline > 0 else b""
    if not digits.isdigit():
        raise InvalidCommit("not a commit znode: no header length", reason="format")
    start = newline + 1
    end = start + int(digits)
    if len(data) < end + 2 or data[end:end + 1] != b"\n" or not data.endswith(b"\n"):
        raise InvalidCommit("not a commit znode: truncated", reason="format")
    try:
        document = json.loads(data[start:end].decode("utf-8"))
        if not isinstance(document, dict):
            raise TypeError(f"header is a {type(document).__name__}")
        meta = CommitMetadata.from_json(document)
    except InvalidCommit:
        raise
    except Exception as exc:  # any garbage written out of band
        raise InvalidCommit("corrupt commit znode header", reason=repr(exc)) from None
    return Commit(meta, None if meta.empty else data[end + 1:-1], serialization)


def _decode_legacy_znode(data: bytes, serialization: Serialization) -> Commit:
    """Read a znode of the earlier layout (metadata JSON plus ``payload_base64``)."""
    try:
        document = json.loads(data.decode("utf-8"))
        meta = CommitMetadata.from_json(document)
        payload = base64.b64decode(document["payload_base64"], validate=True)
    except InvalidCommit:
        raise
    except Exception as exc:
        raise InvalidCommit("not a commit znode of the earlier layout", reason=repr(exc)) from None
    if meta.empty:
        raise InvalidCommit("the earlier layout never held a tombstone", key=meta.key, version=meta.version)
    return Commit(meta, payload, serialization)


def _is_key(name: str) -> bool:
    """Whether a child of the data node can be a commit's key (others are nobody's commits)."""
    try:
        check_key(name)
    except InvalidCommit:
        return False
    return True


def zookeeper_accepts(key: str) -> bool:
    """Whether ZooKeeper takes ``key`` as a znode name, which Rainer's layout makes it.

    ZooKeeper refuses (in UTF-16, as Java sees names) control characters, surrogates (so every
    character beyond U+FFFF, emoji among them), the private-use area U+E000-U+F8FF and
    U+FFF0-U+FFFF. Commits of such keys stay in the storage only, as with a JVM Rainer.
    """
    return _is_key(key) and not any(ch > "\uffef" or "\ud800" <= ch <= "\uf8ff" for ch in key)


def _trimmed(data: bytes, limit: int = 200) -> str:
    return repr(data[:limit]) + (" ..." if len(data) > limit else "")


def _connection_errors() -> tuple[type[BaseException], ...]:
    from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, SessionExpiredError

    return ConnectionLoss, SessionExpiredError, ConnectionClosedError


# -- election (Curator's LeaderSelector) ------------------------------------------------------------------
@functools.cache
def _curator_mutex_class() -> type[Lock]:
    from kazoo.recipe.lock import Lock

    class CuratorMutex(Lock):
        """kazoo's Lock with its contenders named as Curator's ``InterProcessMutex`` names them.

        Curator ranks every child of the lock path by what follows the last ``lock-`` in its name,
        and creates its own as protected ephemeral-sequential nodes ``_c_<uuid>-lock-<sequence>``;
        kazoo ranks the children matching ``_NODE_NAME`` followed by ten digits. Named alike, both
        agree on who holds the lock (kazoo's own ``<hex>__lock__`` nodes would rank after every
        Curator node in Curator's eyes, whatever their sequence).
        """

        _NODE_NAME = "-lock-"
        _EXCLUDE_NAMES = ["-lock-"]

        def __init__(self, client: KazooClient, path: str, identifier: str | None = None) -> None:
            super().__init__(client, path, identifier)
            self.prefix = f"_c_{uuid.uuid4()}{self._NODE_NAME}"
            self.create_path = f"{self.path}/{self.prefix}"

    return CuratorMutex


def curator_mutex(client: KazooClient, path: str, identifier: str | None = None) -> Lock:
    """A kazoo Lock at ``path`` that contends alongside Curator's ``InterProcessMutex`` (and so its
    ``LeaderSelector``, as a JVM Rainer's auto-publisher uses it): ``with curator_mutex(zk, p):``.

    ``identifier`` is the node's data, what Curator reads as a participant's id.
    """
    return _curator_mutex_class()(client, path, identifier)


#: how the auto-publisher heals: "exact" makes ZooKeeper equal to the storage (deleting what it
#: lacks, rolling back what is newer); "forward" only adds, as Rainer's publisher does
HEAL_MODES = ("exact", "forward")


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

    @property
    def data_path(self) -> str:
        """The parent of the key znodes, ``<path>/data``."""
        return f"{self.path}/{DATA_NODE}"

    @property
    def election_path(self) -> str:
        """Where auto-publishers elect their leader, ``<path>/election``."""
        return f"{self.path}/{ELECTION_NODE}"

    def node_path(self, key: str) -> str:
        """The znode of ``key``: ``<path>/data/<key>``."""
        return f"{self.data_path}/{check_key(key)}"

    # -- reads -------------------------------------------------------------------------------------
    def _fetch(self, node: str) -> tuple[bytes | None, ZnodeStat | None]:
        """A znode's data and stat, or (None, None) when there is no such znode."""
        from kazoo.exceptions import NoNodeError

        try:
            return self.zk.get(node)
        except NoNodeError:
            return None, None

    def _parse(self, key: str, data: bytes) -> Commit | None:
        """The commit (a tombstone too) a znode of ``key`` holds; None when it holds no commit of
        ``key`` (garbage, or another key's header: Rainer refuses those as well)."""
        try:
            commit = decode_znode(data, self.serialization_for(key))
        except InvalidCommit as exc:
            log.warning("znode %s holds no commit: %s; data = %s", self.node_path(key), exc, _trimmed(data))
            return None
        if commit.key != key:
            log.warning("znode %s holds a commit of another key, %r", self.node_path(key), commit.key)
            return None
        return commit

    def _head(self, key: str, data: bytes) -> Commit | None:
        """The head a znode shows views: its commit unless unreadable or a tombstone."""
        commit = self._parse(key, data)
        return None if commit is None or commit.empty else commit

    def get(self, key: str) -> Commit | None:
        """The latest commit of ``key`` in ZooKeeper (None when absent or corrupt)."""
        data, _stat = self._fetch(self.node_path(key))
        return None if data is None else self._head(key, data)

    def keys(self) -> list[str]:
        """Every key with a znode (readable or not), sorted."""
        from kazoo.exceptions import NoNodeError

        try:
            names = self.zk.get_children(self.data_path)
        except NoNodeError:
            return []
        return sorted(name for name in names if _is_key(name))

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
        deletes the znode; a corrupt znode is replaced (as Rainer's ``CommitKeeper.save`` does:
        this is a new commit of that very key; healing, which only repeats, never does).
        """
        from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

        node = self.node_path(commit.key)
        if not zookeeper_accepts(commit.key):
            log.warning("not publishing %r: ZooKeeper refuses its key as a znode name", commit)
            return False
        if self._save_over_known(node, commit):
            return True
        while True:
            data, stat = self._fetch(node)
            current = None if data is None else self._parse(commit.key, data)
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
                    if current is None:
                        log.warning("replacing the corrupt znode %s by %r", node, commit)
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

    def reconcile(self, key: str, source: Callable[[], Commit | None], heal: str = "exact") -> bool:
        """Make the znode of ``key`` equal to ``source()`` (the system of record's head), once.

        ``heal="forward"`` heals as Rainer's own publisher does: a head missing from ZooKeeper
        or older there is written, nothing else; a znode of a key the storage lacks, a newer
        version and a tombstone's znode stay. That is the mode for sharing a path with a JVM
        Rainer on a database of its own, whose commits ours does not hold.

        The znode is read *before* ``source`` is asked, and written only if it has not changed
        since (compare-and-set), so a publish that races with this one is never undone. A znode
        that holds no commit of ``key`` is never touched: it may be someone's data this keeper
        does not understand. Nor is one with children deleted. Returns True when ZooKeeper
        changed. Used by :class:`AutoPublisher` to heal.
        """
        from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

        node = self.node_path(key)
        if not zookeeper_accepts(key):
            return False  # never in ZooKeeper (save warned when it was committed)
        data, stat = self._fetch(node)
        current = None if data is None else self._parse(key, data)
        if data is not None and current is None:
            return False  # _parse said why
        wanted = source()
        if wanted is not None and wanted.empty:
            wanted = None
        if heal == "forward" and (wanted is None or (current is not None and current.version >= wanted.version)):
            return False
        try:
            if wanted is None:
                if stat is None:
                    return False
                self.zk.delete(node, version=stat.version)
            elif stat is None:
                self.zk.create(node, encode_znode(wanted), makepath=True)
            elif current == wanted:
                return False
            else:
                self.zk.set(node, encode_znode(wanted), version=stat.version)
        except (BadVersionError, NodeExistsError, NoNodeError):
            return False  # changed under us: the next round looks again
        except NotEmptyError:
            # its children are somebody's data, and a recursive delete would take them along
            log.warning("not removing %s, which the storage does not have (or has deleted): it has children", node)
            return False
        return True

    def migrate_legacy_layout(self) -> int:
        """Move the commits of the earlier layout into Rainer's, once; returns how many were written.

        The earlier layout kept each key at ``<path>/<URL-quoted key>`` as JSON metadata with a
        ``payload_base64``. Each such znode is saved to ``<path>/data/<key>`` (unless that already
        has the version or a newer one), then removed (compare-and-set: a znode changed meanwhile
        stays for the next run); a legacy key named ``data`` or ``election``, whose znode is now
        Rainer's parent node, has its data cleared instead. Anything else under ``path`` is left
        as it is, and so are the znodes of keys ZooKeeper cannot name raw (:func:`zookeeper_accepts`).
        The leading :class:`AutoPublisher` runs this before its first round.
        """
        from kazoo.exceptions import BadVersionError, KazooException, NoNodeError, NotEmptyError

        try:
            names = self.zk.get_children(self.path)
        except NoNodeError:
            return 0
        moved = 0
        for name in names:
            node = f"{self.path}/{name}"
            data, stat = self._fetch(node)
            key = unquote(name)
            if not data or not _is_key(key):
                continue  # Rainer's own parents (empty), or not a key at all
            try:
                commit = _decode_legacy_znode(data, self.serialization_for(key))
            except InvalidCommit:
                continue  # not ours to move: leave it
            if commit.key != key:
                continue
            if not zookeeper_accepts(key):
                log.info("keeping earlier-layout znode %s: Rainer's layout cannot name its key", node)
                continue
            try:
                moved += self.save(commit)
                if name in (DATA_NODE, ELECTION_NODE):
                    self.zk.set(node, b"", version=stat.version)
                else:
                    self.zk.delete(node, version=stat.version)
            except (BadVersionError, NoNodeError, NotEmptyError):
                log.info("earlier-layout znode %s changed while it was migrated; next time then", node)
            except _connection_errors():
                raise
            except KazooException:
                log.warning("cannot migrate earlier-layout znode %s", node, exc_info=True)
        if moved:
            log.info("migrated %d commits of %s into Rainer's layout", moved, self.path)
        return moved

    # -- views -------------------------------------------------------------------------------------
    def mirror(self, timeout: float = 30.0) -> CommitMirror:
        """A live mapping of every commit in ZooKeeper, complete when this returns.

        Close it with ``close()`` (or use it as a context manager) when done.
        """
        return CommitMirror(self).start(timeout)

    def auto_publisher(self, storage: CommitStorage, period: float = 30.0, fuzz: float = 5.0,
                       election_path: str | None = None, identifier: str | None = None,
                       heal: str = "exact") -> AutoPublisher:
        """An (unstarted) :class:`AutoPublisher` healing this keeper from ``storage``."""
        return AutoPublisher(storage, self, period, fuzz, election_path, identifier, heal)


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
        self.keeper.zk.ensure_path(self.keeper.data_path)
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

        Returns the snapshot that satisfied it; raises TimeoutError saying what is there instead,
        at once for a key ZooKeeper cannot name (:func:`zookeeper_accepts`): it never comes.
        """
        deadline = time.monotonic() + (timeout if absent or zookeeper_accepts(key) else 0.0)

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
            if name in known:
                self._read_node(name)

    def _read_children(self) -> list[str]:
        """Re-arm the children watch; drop vanished keys; read new ones. Returns all names."""
        from kazoo.exceptions import NoNodeError

        zk = self.keeper.zk
        parent = self.keeper.data_path
        try:
            names = zk.get_children(parent, watch=self._on_children)
        except NoNodeError:
            # the whole path was removed: watch for it to come back
            if zk.exists(parent, watch=self._on_children) is not None:
                return self._read_children()
            names = []
        names = [name for name in names if _is_key(name)]
        present = set(names)
        for key in [key for key in self._snapshot if key not in present]:
            self._apply(key, None)
        for name in names:
            if name not in self._snapshot:
                self._read_node(name)
        return names

    def _read_node(self, name: str) -> None:
        from kazoo.exceptions import NoNodeError

        if not _is_key(name):
            return
        try:
            data, _stat = self.keeper.zk.get(self.keeper.node_path(name), watch=self._on_data)
        except NoNodeError:
            self._apply(name, None)
            return
        self._apply(name, self.keeper._head(name, data))

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
                   election_path: str | None = None, identifier: str | None = None,
                   heal: str = "exact") -> AutoPublisher:
    """An (unstarted) :class:`AutoPublisher` that heals ``keeper`` from ``storage``; ``start()`` it.

    Give it the system of record (not the keeper-publishing wrapper).
    """
    return AutoPublisher(storage, keeper, period, fuzz, election_path, identifier, heal)


def keeper_publishing(storage: CommitStorage, keeper: CommitKeeper) -> KeeperPublishingStorage:
    """Wrap ``storage`` so every save is published to ``keeper`` after it is stored.

    Send every write through the returned storage; ``storage`` stays the system of record.
    """
    return KeeperPublishingStorage(storage, keeper)


# -- auto publisher ---------------------------------------------------------------------------------------
class AutoPublisher(EventSource):
    """Leader-elected periodic healer: ZooKeeper's view is made equal to the storage's heads.

    Every server of a cluster may run one, a JVM Rainer's ``autoPublisher`` too: they contend
    for a :func:`curator_mutex` at ``election_path`` (by default ``<keeper path>/election``, where
    Rainer's ``LeaderSelector`` contends), which picks the one that publishes. The leader first
    migrates the earlier layout (:meth:`CommitKeeper.migrate_legacy_layout`), then, every
    ``period`` seconds plus up to ``fuzz`` random seconds, pushes each head missing or different
    in ZooKeeper, deletes znodes of tombstoned keys and removes znodes of keys the storage does
    not know (the storage is the system of record). It leaves alone a znode it cannot parse and
    one with children; a key that fails does not stop the round. With ``heal="forward"`` it only
    adds what ZooKeeper lacks or holds older, as Rainer's publisher does (see
    :meth:`CommitKeeper.reconcile`). Leadership ends as soon as the
    connection is suspended or lost, so two publishers never act as leader at once.

    Listeners get ``leader_elected(identifier)``, ``leadership_lost(identifier)`` and
    ``published(count)`` after each round.
    """

    def __init__(self, storage: CommitStorage, keeper: CommitKeeper, period: float = 30.0, fuzz: float = 5.0,
                 election_path: str | None = None, identifier: str | None = None, heal: str = "exact") -> None:
        if period <= 0 or fuzz < 0:
            raise CommitsError("period must be > 0 and fuzz >= 0", period=period, fuzz=fuzz)
        if heal not in HEAL_MODES:
            raise CommitsError("heal is exact or forward", heal=heal)
        self.heal = heal
        self.storage = storage
        self.keeper = keeper
        self.period = period
        self.fuzz = fuzz
        self.election_path = election_path or keeper.election_path
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
        from kazoo.exceptions import KazooException

        changed = 0
        keys = set(self.storage.heads()) | set(self.keeper.keys())
        for key in sorted(keys):
            if self._stop.is_set() or (while_leading and not self._leading.is_set()):
                break
            try:
                if self.keeper.reconcile(key, lambda key=key: self.storage.get(key), self.heal):
                    changed += 1
            except _connection_errors():
                raise  # every other key would fail too: the round ends, the next one retries
            except KazooException:
                # e.g. a key whose name ZooKeeper refuses: the keys after it are healed still
                log.warning("publisher %s: cannot heal %r", self.identifier, key, exc_info=True)
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
        from kazoo.exceptions import CancelledError

        while not self._stop.is_set():
            try:
                self._election = curator_mutex(self.keeper.zk, self.election_path, self.identifier)
                with self._election:
                    self._lead()
            except CancelledError:
                pass  # closed while waiting for the leadership
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
            try:
                self.keeper.migrate_legacy_layout()
            except Exception:
                log.warning("publisher %s: migrating the earlier layout failed", self.identifier, exc_info=True)
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
