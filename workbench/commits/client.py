"""Clients of a commits server's HTTP API: pyrainer's ``RainerClient``, ``CommitClient``, ``HttpCommitStorage``.

Three faces over one :class:`~workbench.commits.http_transport.HttpTransport`:

* :class:`RainerClient` speaks pyrainer's dialect (dicts of metadata, payload bytes), so scripts
  written for ``pyrainer.http.RainerClient`` run with the import line changed::

      client = RainerClient("http://localhost:8080/diary")
      commits = client.list_full()
      hey = client.get_commit("hey")
      print("Commit version %s = %s" % (hey.meta["version"], hey.value))
      client.post_commit({"key": "hey", "version": 2, "author": "sue", "comment": "rofl"}, "new value")

  It fixes pyrainer's faults: keys are URL-encoded (spaces, ``%``, ``?``, unicode), and
  ``list_full(all=True)`` returns tombstones (with ``value`` None) instead of failing on them.

* :class:`HttpCommitStorage` is a :class:`~workbench.commits.storage.CommitStorage` whose commits
  live on a remote server: code written against a storage (``get``, ``heads``, ``history``,
  ``save`` raising ``CommitConflict``) works unchanged across the network.

* :class:`CommitClient` is the pythonic one: values instead of bytes, the next version worked
  out for you, ``history``, ``diff`` and ``revert``::

      with CommitClient("http://localhost:8080/diary", author="me") as commits:
          commits.save("feature-flags", {"dark_mode": True}, comment="turn it on")
          commits["feature-flags"]                      # {'dark_mode': True}
          print(commits.diff("feature-flags"))          # what the last commit changed
          commits.revert("feature-flags", 1)            # version 1's payload as a new version

Errors are ``CommitsError`` subclasses with structured fields (see ``http_transport``): a missing
key is :class:`CommitNotFound`, a stale version :class:`HttpCommitConflict` (also a
``CommitConflict``), a dead server :class:`CommitServerUnreachable`.
"""

from __future__ import annotations

import base64
import difflib
import getpass
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from workbench.commits.http_transport import (
    DEFAULT_TIMEOUT,
    CommitBadRequest,
    CommitNotFound,
    CommitServerUnreachable,
    CommitsHttpError,
    CommitUnauthorized,
    HttpCommitConflict,
    HttpTransport,
    encode_key,
)
from workbench.commits.model import (
    JSON,
    Commit,
    CommitMetadata,
    InvalidCommit,
    Serialization,
    SerializationChooser,
    format_mtime,
)
from workbench.commits.storage import CommitStorage
from workbench.errors import CommitsError
from workbench.events import EventDispatcher, EventSource

#: what ``list`` and ``list_full`` add to a metadata object in the list response
_PAYLOAD_FIELDS = ("payload_base64", "payload_utf8")


def default_author() -> str:
    """The login name of this process's user (``os.getlogin`` fails without a terminal)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- pyrainer's client ----------------------------------------------------------------------------
@dataclass
class RainerCommit:
    """pyrainer's commit: ``meta`` (the metadata dict the server sent) and ``value`` (bytes, or None
    for an empty commit)."""

    meta: dict[str, Any]
    value: bytes | None = field(default=None, repr=False)

    @property
    def empty(self) -> bool:
        return bool(self.meta.get("empty", False))

    # The seed's example reads ``commits[key].version``: the metadata is also attributes.
    @property
    def key(self) -> str:
        return str(self.meta.get("key", ""))

    @property
    def version(self) -> int:
        return int(self.meta["version"])

    @property
    def author(self) -> str:
        return str(self.meta.get("author", ""))

    @property
    def comment(self) -> str:
        return str(self.meta.get("comment", ""))

    @property
    def mtime(self) -> str:
        return str(self.meta.get("mtime", ""))


class RainerClient:
    """pyrainer's ``RainerClient``: the HTTP API as dicts and bytes.

    ::

        client = RainerClient("http://localhost:8080/diary")
        client.list()                        # {"foo": {"key": "foo", "version": 1, ...}, ...}
        client.get_value("foo")              # b'{"hey":"what"}'
        client.get_metadata("foo", 1)        # {"author": "gian", "version": 1, ...}

    ``token`` is sent as a bearer token and credentials in the URL as basic auth, for servers
    that require authentication on writes. Every method raises a ``CommitsError`` on failure.
    """

    def __init__(self, base_uri: str, *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None,
                 transport: HttpTransport | None = None) -> None:
        if not base_uri and transport is None:
            raise ValueError("base_uri is required")
        self.transport = transport or HttpTransport(base_uri, timeout=timeout, token=token)

    def __repr__(self) -> str:
        return f"<RainerClient {self.base_uri}>"

    @property
    def base_uri(self) -> str:
        """The server's base URL, without credentials."""
        return self.transport.base_url

    def commit_uri(self, key: str, version: int | None = None) -> str:
        """The URL of a key (its latest version) or of one version of it."""
        return self.base_uri + commit_path(key, version)

    # -- reads ------------------------------------------------------------------------------------
    def list(self, all: bool = False) -> dict[str, dict[str, Any]]:  # noqa: A002 - pyrainer's name
        """Key -> metadata of the latest commit of every key (with ``all``, tombstones too)."""
        return self.transport.request("GET", "/", query=_list_query(all)).json()

    def list_full(self, all: bool = False) -> dict[str, RainerCommit]:  # noqa: A002
        """Key -> :class:`RainerCommit` of the latest commits, payloads included, in one request.

        With ``all`` the tombstones are there too, their ``value`` None.
        """
        listing = self.transport.request("GET", "/", query=_list_query(all, payload=True)).json()
        return {key: RainerCommit(*_split_listed(meta)) for key, meta in listing.items()}

    def get_commit(self, key: str, version: int | None = None) -> RainerCommit:
        """Metadata and value of a key at ``version`` (the latest when None)."""
        meta = self.get_metadata(key, version)
        if meta.get("empty", False):
            return RainerCommit(meta, None)
        # Ask for the version the metadata named: a commit landing in between must not mix in.
        return RainerCommit(meta, self.get_value(key, int(meta["version"])))

    def get_value(self, key: str, version: int | None = None) -> bytes:
        """The payload bytes of a key at ``version`` (the latest when None)."""
        return self.transport.request("GET", commit_path(key, version)).body

    def get_metadata(self, key: str, version: int | None = None) -> dict[str, Any]:
        """The metadata dict of a key at ``version`` (the latest when None)."""
        return self.transport.request("GET", commit_path(key, version) + "/meta").json()

    # -- writes ------------------------------------------------------------------------------------
    def post_commit(self, metadata: Mapping[str, Any], value: str | bytes | None) -> dict[str, Any]:
        """Save a commit: ``metadata`` has key, version, author, and optionally comment, empty, mtime.

        ``value`` is ``str`` (sent as UTF-8) or ``bytes``. Returns the metadata the server stored.
        A stale version raises :class:`HttpCommitConflict`.
        """
        for required in ("key", "version", "author"):
            if metadata.get(required) in (None, ""):
                raise InvalidCommit(f"post_commit needs metadata[{required!r}]", reason=required)
        payload = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
        headers = {"Content-Type": "application/octet-stream",
                   **commit_header_fields(str(metadata["author"]), str(metadata.get("comment") or ""))}
        if _truthy(metadata.get("empty", False)):
            headers["X-Rainer-Empty"] = "true"
            payload = b""
        mtime = metadata.get("mtime")
        if mtime:
            headers["X-Rainer-Modified-Time"] = format_mtime(mtime) if isinstance(mtime, datetime) else str(mtime)
        try:
            version = int(metadata["version"])
        except (TypeError, ValueError):
            raise InvalidCommit("metadata['version'] must be an integer", version=metadata["version"],
                                reason="version") from None
        path = commit_path(str(metadata["key"]), version)
        return self.transport.request("POST", path, body=payload, headers=headers).json()

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections. Idempotent."""
        self.transport.close()

    def __enter__(self) -> RainerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def commit_path(key: str, version: int | None = None) -> str:
    """``/KEY`` or ``/KEY/VERSION`` with the key URL-encoded as one path segment."""
    if version is None:
        return "/" + encode_key(key)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidCommit("version must be an integer", key=key, version=version)
    return f"/{encode_key(key)}/{version}"


#: printable ASCII but "%": what an X-Rainer-* header value may carry literally
_HEADER_LITERAL = "".join(map(chr, range(0x20, 0x7F))).replace("%", "")
#: the request header saying that X-Rainer-* values are percent-encoded (a workbench server's extension)
HEADER_ENCODING = "X-Rainer-Header-Encoding"


def header_text(text: str) -> str:
    """``text`` percent-encoded as UTF-8 for anything but printable ASCII (and ``%`` itself): the
    form of X-Rainer-* values sent with ``X-Rainer-Header-Encoding: percent``."""
    return quote(text, safe=_HEADER_LITERAL)


def commit_header_fields(author: str, comment: str) -> dict[str, str]:
    """The author and comment headers of a POST.

    A Rainer server stores header values verbatim, so they go as they are, non-ASCII as raw
    UTF-8 (``http.client`` writes a ``str`` as ISO-8859-1, hence the re-spelling). A value with a
    control character (a multi-line comment) cannot travel in a header at all: then both go
    percent-encoded, with ``X-Rainer-Header-Encoding: percent``, which a workbench server decodes.
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in author + comment):
        return {HEADER_ENCODING: "percent", "X-Rainer-Author": header_text(author),
                "X-Rainer-Comment": header_text(comment)}
    return {"X-Rainer-Author": _raw_utf8(author), "X-Rainer-Comment": _raw_utf8(comment)}


def _raw_utf8(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def _truthy(flag: Any) -> bool:
    return flag is True or str(flag).lower() in ("true", "yes", "1")


def _list_query(all_keys: bool, payload: bool = False) -> dict[str, str]:
    query = {}
    if payload:
        query["payload_base64"] = "yes"
    if all_keys:
        query["all"] = "yes"
    return query


def _split_listed(listed: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """A list entry -> (metadata without payload fields, payload bytes or None for a tombstone)."""
    meta = {name: value for name, value in listed.items() if name not in _PAYLOAD_FIELDS}
    if "payload_base64" in listed:
        return meta, base64.b64decode(listed["payload_base64"])
    if "payload_utf8" in listed:
        return meta, str(listed["payload_utf8"]).encode("utf-8")
    return meta, None


# -- a storage over HTTP ------------------------------------------------------------------------------
class HttpCommitStorage(CommitStorage):
    """A :class:`CommitStorage` on a remote commits server: reads and saves are HTTP requests.

    ::

        storage = HttpCommitStorage("http://localhost:8080/diary")
        storage.save(Commit.from_value("foo", 2, {"hey": "there"}, author="me"))
        storage.get("foo", 1).value          # {'hey': 'what'}

    The server is the system of record, so the version check is its own: a stale save raises
    :class:`HttpCommitConflict`, a ``CommitConflict``. ``history`` reads every version one by one
    (the API has no history call). Payloads are read with ``serialization`` (JSON by default, as
    the server's storage; give the server's own choice, e.g. ``serialization_by_suffix``).
    """

    blocking = True

    def __init__(self, url: str, *, serialization: Serialization | SerializationChooser = JSON,
                 timeout: float = DEFAULT_TIMEOUT, token: str | None = None,
                 transport: HttpTransport | None = None) -> None:
        super().__init__(serialization)
        self.transport = transport or HttpTransport(url, timeout=timeout, token=token)
        self.rainer = RainerClient(self.transport.base_url, transport=self.transport)

    def __repr__(self) -> str:
        return f"<HttpCommitStorage {self.url}>"

    @property
    def url(self) -> str:
        return self.transport.base_url

    def close(self) -> None:
        self.transport.close()
        super().close()

    # -- CommitStorage ------------------------------------------------------------------------------
    def _head(self, key: str) -> Commit | None:
        return self._fetch(key, None)

    def _get(self, key: str, version: int) -> Commit | None:
        return self._fetch(key, version)

    def _heads(self) -> dict[str, Commit]:
        listing = self.rainer.list_full(all=True)
        return {key: self.commit_of(listed.meta, listed.value) for key, listed in listing.items()}

    def _history(self, key: str) -> list[Commit]:
        head = self._head(key)
        if head is None:
            return []
        older = [self._fetch(key, version) for version in range(1, head.version)]
        return [commit for commit in older if commit is not None] + [head]

    def _insert(self, commit: Commit) -> None:
        meta = commit.meta
        self.rainer.post_commit({"key": meta.key, "version": meta.version, "author": meta.author,
                                 "comment": meta.comment, "empty": meta.empty, "mtime": meta.mtime},
                                commit.payload)

    # -- helpers --------------------------------------------------------------------------------------
    def _fetch(self, key: str, version: int | None) -> Commit | None:
        try:
            listed = self.rainer.get_commit(key, version)
        except CommitNotFound:
            return None
        return self.commit_of(listed.meta, listed.value)

    def commit_of(self, meta: Mapping[str, Any], payload: bytes | None) -> Commit:
        """A ``Commit`` from the server's metadata dict and payload (read with this key's serialization)."""
        metadata = CommitMetadata.from_json(dict(meta))
        return Commit(metadata, None if metadata.empty else (payload or b""),
                      self.serialization_for(metadata.key))


# -- the pythonic client ------------------------------------------------------------------------------
_MISSING: Any = object()


class CommitClient:
    """Values, versions and history of a remote commits server, the Python way.

    ::

        commits = CommitClient("http://localhost:8080/diary", author="me")
        commits.save("limits", {"max": 10}, comment="start")     # version 1
        commits.save("limits", {"max": 20}, comment="more")      # version 2 (worked out)
        commits["limits"]                                         # {'max': 20}
        [c.version for c in commits.history("limits")]            # [1, 2]
        print(commits.diff("limits"))                             # version 1 -> 2, unified
        commits.revert("limits", 1)                               # version 3 == version 1's payload
        commits.delete("limits")                                  # a tombstone (version 4)

    ``save`` without ``version`` posts the head's version + 1, so a commit that lands in between
    is never overwritten: the save raises :class:`HttpCommitConflict` instead.
    """

    def __init__(self, url: str, *, author: str | None = None,
                 serialization: Serialization | SerializationChooser = JSON,
                 timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        self.storage = HttpCommitStorage(url, serialization=serialization, timeout=timeout, token=token)
        self.rainer = self.storage.rainer
        self.author = author or default_author()
        # Views follow this client's own saves, applied before save() returns.
        self._views: list[HeadsView] = []

    @property
    def url(self) -> str:
        return self.storage.url

    # -- reads ----------------------------------------------------------------------------------------
    def keys(self, all: bool = False) -> list[str]:  # noqa: A002 - as in list(all=...)
        """Keys whose latest commit is not a tombstone (``all``: every key), sorted."""
        return sorted(self.rainer.list(all))

    def heads(self, all: bool = False) -> dict[str, Commit]:  # noqa: A002
        """Key -> latest commit, in one request (``all``: tombstones included)."""
        return self.storage.heads() if all else self.storage.heads_non_empty()

    def get(self, key: str, version: int | None = None) -> Commit:
        """The commit of ``key`` at ``version`` (latest when None); :class:`CommitNotFound` if absent."""
        commit = self.storage.get(key, version)
        if commit is None:
            where = f"{key!r} version {version}" if version is not None else repr(key)
            raise CommitNotFound(f"no commit {where}", status=404, body="Key not found", method="GET",
                                 url=self.rainer.commit_uri(key, version))
        return commit

    def value(self, key: str, version: int | None = None, default: Any = _MISSING) -> Any:
        """The deserialized value of ``key`` (``default`` if given and the key is absent or deleted)."""
        try:
            commit = self.get(key, version)
        except CommitNotFound:
            if default is _MISSING:
                raise
            return default
        if commit.empty and default is not _MISSING:
            return default
        return commit.value

    def __getitem__(self, key: str) -> Any:
        try:
            commit = self.get(key)
        except CommitNotFound:
            raise KeyError(key) from None
        if commit.empty:
            raise KeyError(key)
        return commit.value

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        commit = self.storage.get(key)
        return commit is not None and not commit.empty

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def history(self, key: str) -> list[Commit]:
        """Every commit of ``key``, oldest first (empty list for a key that never existed)."""
        return self.storage.history(key)

    def head_version(self, key: str) -> int:
        """The latest version of ``key`` (tombstones count), 0 for a key never committed."""
        try:
            return int(self.rainer.get_metadata(key)["version"])
        except CommitNotFound:
            return 0

    # -- writes -----------------------------------------------------------------------------------------
    def save(self, key: str, value: Any = None, *, payload: bytes | str | None = None, comment: str = "",
             version: int | None = None, author: str | None = None) -> Commit:
        """Commit ``value`` (serialized for ``key``) or the exact ``payload`` as the next version.

        ``version`` (default: the head's + 1) is the version to create. Returns the stored commit.
        """
        version = self.head_version(key) + 1 if version is None else version
        serialization = self.storage.serialization_for(key)
        author = author or self.author
        if payload is not None:
            data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
            commit = Commit.from_bytes(key, version, data, author, comment, serialization=serialization)
        else:
            commit = Commit.from_value(key, version, value, author, comment, serialization=serialization)
        return self._save(commit)

    def delete(self, key: str, comment: str = "", author: str | None = None) -> Commit:
        """Commit a tombstone: the key reads as absent; its history stays."""
        version = self.head_version(key)
        if version == 0:
            raise CommitNotFound(f"no commit {key!r} to delete", status=404, body="Key not found",
                                 method="GET", url=self.rainer.commit_uri(key))
        return self._save(Commit.tombstone(key, version + 1, author or self.author, comment))

    def revert(self, key: str, version: int, comment: str | None = None, author: str | None = None) -> Commit:
        """Commit ``version``'s payload (or its emptiness) again as the newest version.

        As the seed does it: history only grows, the reverted-to commit is copied forward.
        """
        old = self.get(key, version)
        head = self.head_version(key)
        comment = f"Revert {key} to version {version}" if comment is None else comment
        author = author or self.author
        if old.empty:
            return self._save(Commit.tombstone(key, head + 1, author, comment))
        return self._save(old.with_version(head + 1, author=author, comment=comment))

    def _save(self, commit: Commit) -> Commit:
        saved = self.storage.save(commit)
        for view in list(self._views):
            view.apply(saved)
        return saved

    # -- views ------------------------------------------------------------------------------------------
    def heads_view(self) -> HeadsView:
        """A live-ish :class:`HeadsView` of this server's heads: read now, then updated by every
        save through this client and by ``refresh()``. Close it when done."""
        return HeadsView(self).refresh_now()

    # -- diffs ------------------------------------------------------------------------------------------
    def diff(self, key: str, old: int | None = None, new: int | None = None, context: int = 3) -> str:
        """A unified diff of two versions' payloads (default: the one before ``new`` -> ``new``,
        ``new`` defaulting to the head); empty text when they are equal."""
        new_commit = self.get(key, new)
        old_version = new_commit.version - 1 if old is None else old
        old_commit = self.get(key, old_version) if old_version >= 1 else None
        return "".join(unified_diff(old_commit, new_commit, key=key, context=context))

    # -- lifecycle --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections. Idempotent."""
        self.storage.close()

    def __enter__(self) -> CommitClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CommitClient({self.url!r}, author={self.author!r})"


class HeadsView(EventSource, Mapping[str, Commit]):
    """The latest non-empty commit of every key, as a :class:`CommitClient` last saw them.

    The HTTP API has no push channel, so this view changes only when told: ``refresh()`` reads
    every head again (one request) and every save through its client (``save``, ``delete``,
    ``revert``) is applied as it returns. It has the shape of a keeper's ``CommitMirror`` (a
    read-only mapping; listeners get ``commit_updated(commit)`` and ``commit_removed(key,
    previous)``, a new one first gets ``commit_updated`` for every key), so a dashboard shows
    either. For changes made anywhere in the cluster as they happen, use a mirror on ZooKeeper.

    ::

        view = commits.heads_view()
        view.add_listener(lambda event: print(event.kind, event.args))
        commits.save("foo", {"a": 1})    # -> commit_updated(<Commit foo@...>)
        view.refresh()                   # picks up what others committed meanwhile
    """

    def __init__(self, client: CommitClient) -> None:
        self.client = client
        self._snapshot: dict[str, Commit] = {}
        self._lock = threading.Lock()
        self._events = EventDispatcher(f"commits-heads-{client.url}")
        self._closed = False
        self.refreshes = 0
        client._views.append(self)

    # -- Mapping -----------------------------------------------------------------------------------
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

    # -- updates -----------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Read every head from the server; returns how many keys changed (events were emitted)."""
        heads = self.client.storage.heads_non_empty()
        changed = 0
        with self._lock:
            self.refreshes += 1
            for key in [key for key in self._snapshot if key not in heads]:
                changed += self._apply_locked(key, None)
            for key, commit in heads.items():
                changed += self._apply_locked(key, commit)
        return changed

    def refresh_now(self) -> HeadsView:
        """``refresh()`` and return self (for chaining at construction)."""
        self.refresh()
        return self

    def apply(self, commit: Commit) -> bool:
        """Take ``commit`` as known to be stored; ignored when the view already has a newer version."""
        with self._lock:
            current = self._snapshot.get(commit.key)
            if current is not None and current.version >= commit.version:
                return False
            return bool(self._apply_locked(commit.key, None if commit.empty else commit))

    def _apply_locked(self, key: str, commit: Commit | None) -> int:
        previous = self._snapshot.get(key)
        if previous == commit:
            return 0
        snapshot = dict(self._snapshot)
        if commit is None:
            snapshot.pop(key, None)
        else:
            snapshot[key] = commit
        self._snapshot = snapshot
        if commit is None:
            self._events.emit("commit_removed", key, previous)
        else:
            self._events.emit("commit_updated", commit)
        return 1

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop following the client; ``closed()`` reaches listeners. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.client._views = [view for view in self.client._views if view is not self]
        self._events.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> HeadsView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def payload_text(payload: bytes | None) -> str:
    """A payload as text for diffs and display (tombstones are empty, bad UTF-8 is replaced)."""
    return "" if payload is None else payload.decode("utf-8", "replace")


def unified_diff(old: Commit | None, new: Commit, key: str | None = None, context: int = 3) -> list[str]:
    """The lines of a unified diff from ``old`` (None: nothing) to ``new``, named ``KEY VERSION``."""
    key = key or new.key
    return diff_lines(payload_text(old.payload) if old is not None else "", payload_text(new.payload),
                      f"{key} {old.version if old is not None else 0}", f"{key} {new.version}", context)


def diff_lines(old_text: str, new_text: str, old_name: str, new_name: str, context: int = 3) -> list[str]:
    """A unified diff of two texts. Every line ends in a newline, also when a text's last line
    has none, so the diff prints as it reads."""
    return list(difflib.unified_diff(_lines(old_text), _lines(new_text), old_name, new_name, n=context))


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


__all__ = [
    "CommitBadRequest",
    "CommitClient",
    "CommitNotFound",
    "CommitServerUnreachable",
    "CommitUnauthorized",
    "CommitsError",
    "CommitsHttpError",
    "HttpCommitConflict",
    "HttpCommitStorage",
    "HeadsView",
    "RainerClient",
    "RainerCommit",
    "HEADER_ENCODING",
    "commit_header_fields",
    "commit_path",
    "default_author",
    "header_text",
    "diff_lines",
    "payload_text",
    "unified_diff",
]
