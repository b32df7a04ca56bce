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

A failed or short append (ENOSPC, EIO...) refuses its write with a ``JournalError`` naming the
errno, and cuts the segment back to the end of its last whole record, so the journal never holds
a torn record in front of later ones; appends resume as soon as the cause goes away. Should the
cut itself fail, the journal is marked broken (writes are refused, ``status()`` says why) and the
next append or the server's housekeeping rolls to a new segment. A new segment is opened before
the old one is closed: running out of descriptors never leaves the journal closed.

Recovery loads the newest snapshot and replays later journal records in order. A torn or
corrupt record (bad checksum, bad JSON, no newline) ends the replay with a logged warning; the
damaged tail is kept beside the journal as ``*.corrupt`` for inspection, never silently reused.
The one exception is the torn tail of a segment that the next segment carries on from (the
segment a broken journal rolled to): that tail is set aside and replay goes on.
"""

from __future__ import annotations

import errno
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
from workbench.zdb.errors import ArchiveError, JournalError
from workbench.zdb.protocol import File, decode, encode

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "batch", "never")
_SNAPSHOT = re.compile(r"^snapshot-(\d{12})\.json$")
_JOURNAL = re.compile(r"^journal-(\d{12})\.log$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def _os_fields(exc: OSError) -> dict[str, Any]:
    code = exc.errno or errno.EIO
    return {"errno": code, "error": errno.errorcode.get(code, str(code)), "reason": exc.strerror or str(exc)}


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
        self._journal: int | None = None  # descriptor of the segment appends go to
        self._journal_start = 0
        self._journal_size = 0  # where its last whole record ends
        self.journal_error: str | None = None  # why appends are refused until a repair works
        self.refused = 0  # appends refused since the server started
        self.checkpoint_error: dict[str, Any] | None = None  # why the last checkpoint failed
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
        segments = self._segments()
        for index, (start, segment) in enumerate(segments):
            with open(segment, "rb") as stream:
                offset = 0
                for line in stream:
                    record = parse_record(line)
                    if record is None:
                        if index + 1 < len(segments) and segments[index + 1][0] == expected:
                            # A torn tail the journal rolled away from: the next segment goes on.
                            recovered.dropped += self._quarantine_tail(segment, offset, later=False)
                            break
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

    def _quarantine_tail(self, segment: Path, offset: int, later: bool = True) -> int:
        """Move the bytes from ``offset`` on aside and truncate the segment there (and, with
        ``later``, set the segments after it aside too)."""
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
        for start, following in self._segments() if later else ():
            if following.name > segment.name:
                following.rename(following.with_name(following.name + aside.name[len(segment.name):]))
        return count

    def _segments(self) -> list[tuple[int, Path]]:
        return sorted((int(m.group(1)), p) for p in self.path.iterdir() if (m := _JOURNAL.match(p.name)))

    def _open_segment(self, start: int) -> None:
        """Make ``journal-<start>.log`` the segment appends go to.

        The new one is opened before the old one is closed: on EMFILE (or anything else) the
        journal in use stays open and ArchiveError says why.
        """
        path = self.path / f"journal-{start:012d}.log"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise ArchiveError("cannot open a new journal segment", segment=path.name, **_os_fields(exc)) from None
        if self._journal is not None:
            os.close(self._journal)
        self._journal, self._journal_start, self._journal_size = fd, start, size
        # The new segment's directory entry must be durable before records in it are
        # acknowledged: sync() does it then, so a checkpoint does not pay for it.
        self._dir_dirty = True

    # -- appending --------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> bytes:
        """Write a record to the journal (to the OS at once: it survives a kill -9 from here on).

        Returns the record's JSON body, which the server publishes as is. Raises JournalError
        when the record did not reach the journal whole; the journal then holds exactly the
        records before it, and the caller must not apply the write.
        """
        body = encode(record)
        self._write(b"%08x " % zlib.crc32(body) + body + b"\n", record.get("seq"), 1)
        return body

    def append_many(self, bodies: list[bytes], first_seq: int) -> None:
        """Write several encoded records (seqs ``first_seq``...) in one system call: a batch's writes.

        All or none: on a failure the segment is cut back to where it was before the call and
        JournalError names ``first_seq``; the caller must apply none of them.
        """
        self._write(b"".join(b"%08x " % zlib.crc32(body) + body + b"\n" for body in bodies), first_seq, len(bodies))

    def _write(self, line: bytes, first: Any, count: int) -> None:
        """Append whole lines to the segment, or cut it back and raise JournalError."""
        if self.journal_error is not None:
            self.repair(first)
        fd = self._journal
        try:
            written = os.write(fd, line)
            while written < len(line):  # a short write: the rest fails (ENOSPC) or goes on
                more = os.write(fd, memoryview(line)[written:])
                if more <= 0:
                    raise OSError(errno.EIO, "the journal accepted no more bytes")
                written += more
            if self.fsync_mode == "always":
                self._fsync()
        except OSError as exc:
            self.refused += count
            self._cut_back()
            log.error("journal %s: append of seq %s failed (%s); write refused",
                      self.segment_name, first, exc)
            raise JournalError("the write could not be journaled and is refused", seq=first,
                               **_os_fields(exc)) from None
        self._journal_size += len(line)
        self._dirty = self.fsync_mode != "always"

    def _cut_back(self) -> None:
        """Truncate the segment to its last whole record (what a failed append left is torn)."""
        try:
            os.ftruncate(self._journal, self._journal_size)  # type: ignore[arg-type]
        except OSError as exc:
            self.journal_error = f"cannot cut a failed append back: {exc}"
            log.error("journal %s: %s; writes are refused until it is repaired", self.segment_name,
                      self.journal_error)

    def repair(self, next_seq: int) -> None:
        """Make a broken journal usable again: cut it back, else roll to a segment from ``next_seq``.

        Raises JournalError while neither works (the server retries in its housekeeping).
        """
        if self.journal_error is None:
            return
        try:
            if self._journal is None:
                raise OSError(errno.EBADF, "no journal segment is open")
            os.ftruncate(self._journal, self._journal_size)
        except OSError:
            try:
                self._open_segment(next_seq)  # recovery sets the old segment's torn tail aside
            except ArchiveError as exc:
                self.journal_error = f"cannot open a new journal segment: {exc.fields.get('reason')}"
                raise JournalError("the journal is not writable: the write is refused",
                                   reason=self.journal_error, **{k: v for k, v in exc.fields.items()
                                                                 if k in ("errno", "error")}) from None
        log.info("journal %s repaired; appends resume", self.segment_name)
        self.journal_error = None

    @property
    def segment_name(self) -> str:
        """The journal segment appends go to."""
        return f"journal-{self._journal_start:012d}.log"

    def sync(self) -> None:
        """fsync what was appended (a no-op under ``never`` or when nothing is pending)."""
        if self._dirty and self.fsync_mode != "never":
            self._fsync()
        self._dirty = False

    def _fsync(self) -> None:
        if self._dir_dirty:
            _fsync_dir(self.path)
            self._dir_dirty = False
        os.fsync(self._journal)  # type: ignore[arg-type]

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
        self._open_segment(seq + 1)  # ArchiveError (e.g. EMFILE) leaves the journal as it was
        began = time.monotonic()
        try:
            pid = os.fork()
        except OSError as exc:
            raise ArchiveError("cannot start a checkpoint", **_os_fields(exc)) from None
        if pid == 0:  # child: write, fsync, rename, exit; never return into the server
            status = 1
            try:
                _write_snapshot(self.path, snapshot, seq)
                status = 0
            except OSError as exc:  # the exit status carries the errno (e.g. ENOSPC) to the parent
                status = exc.errno if exc.errno and 0 < exc.errno < 256 else 1
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
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            reason = os.strerror(code) if code > 1 else f"the snapshot writer exited with status {code}"
            self.checkpoint_error = {"seq": self._checkpoint_seq, "errno": code if code > 1 else None,
                                     "error": errno.errorcode.get(code) if code > 1 else None, "reason": reason}
            log.error("snapshot at seq %d failed (%s); the previous snapshot and the journal are kept",
                      self._checkpoint_seq, reason)
            return None
        self.checkpoint_error = None
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

    def new_upload(self, owner: str | None = None) -> "BlobUpload":
        return BlobUpload(self, owner)

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        import fcntl

        self.poll_checkpoint(wait=True)
        if self._journal is not None:
            try:
                self.sync()
            finally:
                os.close(self._journal)
                self._journal = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


class BlobUpload:
    """A blob being received in chunks: hashed as it arrives, moved under its hash when complete.

    No descriptor is held between chunks (each is appended by open/write/close), so idle uploads
    cost a file and a hash state, not a slot in the server's descriptor table.
    """

    def __init__(self, archive: Archive, owner: str | None = None) -> None:
        self.archive = archive
        self.owner = owner
        self.token = secrets.token_hex(16)
        self.tmp_path = archive.blob_dir / "tmp" / self.token
        self._hash = hashlib.sha256()
        self.size = 0
        self.touched = time.monotonic()

    def write(self, chunk: bytes) -> None:
        with open(self.tmp_path, "ab") as stream:
            stream.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        self.touched = time.monotonic()

    def finish(self, name: str) -> File:
        with open(self.tmp_path, "ab") as stream:
            os.fsync(stream.fileno())
        digest = self._hash.hexdigest()
        final = self.archive.blob_path(digest)
        final.parent.mkdir(exist_ok=True)
        os.replace(self.tmp_path, final)
        return File(digest, name, self.size)

    def abort(self) -> None:
        self.tmp_path.unlink(missing_ok=True)


def _write_snapshot(directory: Path, snapshot: dict[str, Any], seq: int) -> None:
    final = directory / f"snapshot-{seq:012d}.json"
    tmp = directory / f".snapshot-{seq:012d}.tmp"
    try:
        with open(tmp, "wb") as stream:
            stream.write(encode(snapshot))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a partial snapshot must not keep holding a full disk
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
