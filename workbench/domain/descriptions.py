"""A broker's descriptions: declared databases, persisted in its state dir and merged across brokers.

Every broker holds every description. A change made at one broker gets the next version and that
broker's id as origin, and travels to the others, which keep whichever copy is newer (the higher
``(version, origin)``), so all brokers settle on the same copy whatever order changes arrive in.
Deleting leaves a tombstone that wins over older copies. The file is rewritten atomically on
every change and read back when the broker starts, so descriptions survive a broker restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict
from pathlib import Path

from workbench.domain.model import DescriptionRecord
from workbench.domain.templates import DescriptionError, find_template

log = logging.getLogger(__name__)


class DescriptionStore:
    """Descriptions by name (tombstones included), saved to ``path`` after every accepted change."""

    def __init__(self, path: Path, origin: str) -> None:
        self.path = Path(path)
        self.origin = origin
        self._records: dict[str, DescriptionRecord] = {}
        self._lock = threading.RLock()
        self._load()

    # -- reading --------------------------------------------------------------------------------
    def get(self, name: str) -> DescriptionRecord:
        """The live description called ``name``; DescriptionError when there is none."""
        with self._lock:
            record = self._records.get(name)
            if record is None or record.deleted:
                raise DescriptionError(f"no description named {name!r}", description=name)
            return record.copy()

    def live(self) -> list[DescriptionRecord]:
        with self._lock:
            return [r.copy() for r in self._records.values() if not r.deleted]

    def everything(self) -> list[DescriptionRecord]:
        """Every record, tombstones too (what a broker sends another)."""
        with self._lock:
            return [r.copy() for r in self._records.values()]

    # -- changing -------------------------------------------------------------------------------
    def create(self, record: DescriptionRecord) -> DescriptionRecord:
        """Add a new description after checking its template, variables and name."""
        template = find_template(record.template)
        template.resolve(record.variables)
        if not record.name or not record.name.replace("-", "").replace("_", "").isalnum():
            raise DescriptionError("description names are database names: letters, digits, - and _",
                                   description=record.name)
        with self._lock:
            existing = self._records.get(record.name)
            if existing is not None and not existing.deleted:
                raise DescriptionError(f"a description named {record.name!r} exists already",
                                       description=record.name)
            record.version = existing.version if existing is not None else 0
            record.started, record.deleted = False, False
            return self.write(record)

    def write(self, record: DescriptionRecord) -> DescriptionRecord:
        """Store a local change: the next version, stamped with this broker as origin."""
        with self._lock:
            current = self._records.get(record.name)
            record = record.copy()
            record.version = max(record.version, current.version if current else 0) + 1
            record.origin = self.origin
            self._records[record.name] = record
            self._save()
            return record.copy()

    def change(self, name: str, **fields: object) -> DescriptionRecord:
        """Change fields of a live description (a local change)."""
        with self._lock:
            record = self.get(name)
            for key, value in fields.items():
                setattr(record, key, value)
            return self.write(record)

    def merge(self, record: DescriptionRecord) -> bool:
        """Take a copy from another broker if it is newer than ours; True when it was taken."""
        with self._lock:
            if not record.newer_than(self._records.get(record.name)):
                return False
            self._records[record.name] = record.copy()
            self._save()
            return True

    # -- the file -------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            rows = json.loads(self.path.read_text())
            self._records = {row["name"]: DescriptionRecord(**row) for row in rows}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # Keep the unreadable file for inspection instead of overwriting it with nothing.
            broken = self.path.with_suffix(".unreadable")
            os.replace(self.path, broken)
            log.error("descriptions file %s is unreadable (%s); moved to %s", self.path, exc, broken)

    def _save(self) -> None:
        data = json.dumps([asdict(r) for r in self._records.values()], indent=1)
        temporary = self.path.with_suffix(".tmp")
        # The file holds dba passwords: readable by the broker's user only.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)
