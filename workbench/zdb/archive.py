"""The storage manager's archive directory: write-ahead journal, snapshots, recovery and blobs.

Layout of an archive directory::

    snapshot-000000000042.json    the document, its undo history and the seq it includes
    journal-000000000043.log      records 43... one per line: "<crc32 hex> <json>\\n"
    blobs/ab/abcdef...            blob content under its SHA-256

A write is appended to the journal before it is acknowledged, so it survives ``kill -9`` (the
page cache keeps it); ``fsync`` decides power-loss durability: ``always`` (fsync before every
reply), ``batch`` (the server fsyncs once per batch of requests: group commit) or ``never``.

``checkpoint`` costs O(1) on the request path: it starts a new journal segment and forks; the
child process writes the snapshot from its copy-on-write view of memory, fsyncs it and renames it
into place while the parent goes on serving. Only once the snapshot is durable are the journal
segments it covers deleted, so a crash at any moment leaves a recoverable archive.

Recovery loads the newest snapshot and replays later journal records in order. A torn or
corrupt record (bad checksum, bad JSON, no newline) ends the replay with a logged warning; the
damaged tail is kept beside the journal as ``*.corrupt`` for inspection, never silently reused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from workbench.errors import ZdbError
from workbench.zdb.protocol import File, decode, encode

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "batch", "never")
_SNAPSHOT = re.compile(r"^snapshot-(\d{12})\.json$")
_JOURNAL = re.compile(r"^journal-(\d{12})\.log$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class ArchiveError(ZdbError):
    """The archive directory cannot be used (locked by another server, unreadable snapshot...)."""


@dataclass
class Recovered:
    """What recovery found: the snapshot's content and the records to replay after it."""

    seq: int = 0
    root: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # torn/corrupt records found at the end of the journal


def parse_record(line: bytes) -> dict[str, Any] | None:
    """A journal line -> record, or None if it is torn or corrupt."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = decode(body, limit=1 << 62)
    except (ValueError, ZdbError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("seq"), int) else None


class Archive:
    """An SM's directory. Single writer: a second server on the same directory is refused."""

    def __init__(self, path: str | os.PathLike[str], fsync: str = "batch") -> None:
        if fsync not in FSYNC_MODES:
            raise ArchiveError(f"fsync must be one of {', '.join(FSYNC_MODES)}", fsync=fsync)
        self.path = Path(path)
        self.fsync_mode = fsync
        self.blob_dir = self.path / "blobs"
        self._journal: Any = None
        self._journal_start = 0
        self._dirty = False
        self._dir_dirty = False
        self._lock_fd: int | None = None
        self._checkpoint_pid: int | None = None
        self._checkpoint_seq = 0
        self.snapshot_seq = 0
        self.last_checkpoint_seconds: float | None = None

    # -- opening ----------------------------------------------------------------------------------
    def open(self) -> Recovered:
        """Lock the directory, recover its content, and open a journal segment for appends."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        (self.blob_dir / "tmp").mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ArchiveError("archive is in use by another server", path=str(self.path)) from None
        recovered = self.recover()
        self.snapshot_seq = recovered.seq
        last = recovered.records[-1]["seq"] if recovered.records else recovered.seq
        self._open_segment(last + 1)
        return recovered

    def recover(self) -> Recovered:
        snapshots = sorted((int(m.group(1)), p) for p in self.path.iterdir() if (m := _SNAPSHOT.match(p.name)))
        recovered = Recovered()
        if snapshots:
            seq, snapshot_path = snapshots[-1]
            try:
                data = decode(snapshot_path.read_bytes(), limit=1 << 62)
            except ZdbError as exc:
                raise ArchiveError("snapshot is unreadable", path=str(snapshot_path), reason=str(exc)) from None
            recovered.seq, recovered.root, recovered.history = seq, data["root"], data.get("history", {})
        expected = recovered.seq + 1
        for start, segment in self._segments():
            with open(segment, "rb") as stream:
                offset = 0
                for line in stream:
                    record = parse_record(line)
                    if record is None:
                        recovered.dropped += self._quarantine_tail(segment, offset)
                        return recovered
                    offset += len(line)
                    if record["seq"] < expected:
                        continue  # covered by the snapshot
                    if record["seq"] != expected:
                        log.warning("journal %s jumps from seq %d to %d; stopping replay there",
                                    segment, expected - 1, record["seq"])
                        recovered.dropped += self._quarantine_tail(segment, offset - len(line))
                        return recovered
                    recovered.records.append(record)
                    expected += 1
        return recovered

    def _quarantine_tail(self, segment: Path, offset: int) -> int:
        """Move the bytes from ``offset`` on aside and truncate the segment there."""
        with open(segment, "rb") as stream:
            stream.seek(offset)
            tail = stream.read()
        if not tail:
            return 0
        aside = segment.with_name(f"{segment.name}.corrupt-{int(time.time())}-{secrets.token_hex(2)}")
        aside.write_bytes(tail)
        os.truncate(segment, offset)
        count = tail.count(b"\n") + (0 if tail.endswith(b"\n") else 1)
        log.warning("journal %s: dropped %d torn or corrupt record(s) at byte %d (kept in %s)",
                    segment.name, count, offset, aside.name)
        # Later segments would leave a hole in the sequence: set them aside too.
        for start, later in self._segments():
            if later.name > segment.name:
                later.rename(later.with_name(later.name + aside.name[len(segment.name):]))
        return count

    def _segments(self) -> list[tuple[int, Path]]:
        return sorted((int(m.group(1)), p) for p in self.path.iterdir() if (m := _JOURNAL.match(p.name)))

    def _open_segment(self, start: int) -> None:
        if self._journal is not None:
            self._journal.close()
        self._journal_start = start
        self._journal = open(self.path / f"journal-{start:012d}.log", "ab", buffering=0)
        # The new segment's directory entry must be durable before records in it are
        # acknowledged: sync() does it then, so a checkpoint does not pay for it.
        self._dir_dirty = True

    # -- appending --------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> bytes:
        """Write a record to the journal (to the OS at once: it survives a kill -9 from here on).

        Returns the record's JSON body, which the server publishes as is.
        """
        body = encode(record)
        self._journal.write(b"%08x " % zlib.crc32(body) + body + b"\n")
        self._dirty = True
        if self.fsync_mode == "always":
            self.sync()
        return body

    def sync(self) -> None:
        """fsync what was appended (a no-op under ``never`` or when nothing is pending)."""
        if self._dirty and self.fsync_mode != "never":
            if self._dir_dirty:
                _fsync_dir(self.path)
                self._dir_dirty = False
            os.fsync(self._journal.fileno())
        self._dirty = False

    def records_since(self, seq: int) -> Iterator[dict[str, Any]]:
        """Journal records after ``seq`` (for replicas catching up); stops at the first bad record."""
        for start, segment in self._segments():
            with open(segment, "rb") as stream:
                for line in stream:
                    record = parse_record(line)
                    if record is None:
                        return
                    if record["seq"] > seq:
                        yield record

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint(self, snapshot: dict[str, Any], seq: int) -> bool:
        """Start writing a snapshot of everything up to ``seq``; False if one is still running.

        ``snapshot`` must be the live objects (not a copy): the forked child sees them frozen.
        """
        self.poll_checkpoint()
        if self._checkpoint_pid is not None:
            return False
        self.sync()
        self._open_segment(seq + 1)
        began = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child: write, fsync, rename, exit; never return into the server
            status = 1
            try:
                _write_snapshot(self.path, snapshot, seq)
                status = 0
            finally:
                os._exit(status)
        self._checkpoint_pid, self._checkpoint_seq = pid, seq
        self._checkpoint_began = began
        return True

    def poll_checkpoint(self, wait: bool = False) -> int | None:
        """Reap a finished snapshot child and prune what it covers; returns its seq when done."""
        if self._checkpoint_pid is None:
            return None
        pid, status = os.waitpid(self._checkpoint_pid, 0 if wait else os.WNOHANG)
        if pid == 0:
            return None
        self._checkpoint_pid = None
        if os.waitstatus_to_exitcode(status) != 0:
            log.error("snapshot at seq %d failed (exit status %s); journal kept", self._checkpoint_seq, status)
            return None
        self.last_checkpoint_seconds = time.monotonic() - self._checkpoint_began
        self.snapshot_seq = self._checkpoint_seq
        self._prune(self._checkpoint_seq)
        return self._checkpoint_seq

    @property
    def checkpoint_running(self) -> bool:
        return self._checkpoint_pid is not None

    def _prune(self, seq: int) -> None:
        """Delete snapshots older than ``seq`` and journal segments it covers.

        Every checkpoint opens a segment at ``seq + 1``, so a segment starting at or before
        ``seq`` holds only records the snapshot includes.
        """
        for snapshot in self.path.iterdir():
            match = _SNAPSHOT.match(snapshot.name)
            if match and int(match.group(1)) < seq:
                snapshot.unlink(missing_ok=True)
        for start, segment in self._segments():
            if start <= seq:
                segment.unlink(missing_ok=True)

    def write_snapshot_now(self, snapshot: dict[str, Any], seq: int) -> None:
        """Synchronous checkpoint (used at clean shutdown, when no fork is wanted)."""
        self.poll_checkpoint(wait=True)
        self.sync()
        _write_snapshot(self.path, snapshot, seq)
        self.snapshot_seq = seq
        self._open_segment(seq + 1)
        self._prune(seq)

    # -- blobs ------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not _HASH.match(digest):
            raise ZdbError("a blob is named by its SHA-256 hex digest", hash=digest[:80])
        return self.blob_dir / digest[:2] / digest

    def new_upload(self) -> "BlobUpload":
        return BlobUpload(self)

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        import fcntl

        self.poll_checkpoint(wait=True)
        if self._journal is not None:
            self.sync()
            self._journal.close()
            self._journal = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


class BlobUpload:
    """A blob being received in chunks: hashed as it arrives, moved under its hash when complete."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.token = secrets.token_hex(16)
        self.tmp_path = archive.blob_dir / "tmp" / self.token
        self._stream = open(self.tmp_path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.touched = time.monotonic()

    def write(self, chunk: bytes) -> None:
        self._stream.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        self.touched = time.monotonic()

    def finish(self, name: str) -> File:
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        digest = self._hash.hexdigest()
        final = self.archive.blob_path(digest)
        final.parent.mkdir(exist_ok=True)
        os.replace(self.tmp_path, final)
        return File(digest, name, self.size)

    def abort(self) -> None:
        self._stream.close()
        self.tmp_path.unlink(missing_ok=True)


def _write_snapshot(directory: Path, snapshot: dict[str, Any], seq: int) -> None:
    final = directory / f"snapshot-{seq:012d}.json"
    tmp = directory / f".snapshot-{seq:012d}.tmp"
    with open(tmp, "wb") as stream:
        stream.write(encode(snapshot))
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
