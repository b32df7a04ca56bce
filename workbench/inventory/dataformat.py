"""The data format of the inventory: datasets, blocks, files, sites, groups, partitions and replicas.

Objects come in two states. *Unlinked* objects are what applications build and hand to
``Inventory.update`` / ``Inventory.delete``: their references (a block's dataset, a replica's site)
are objects that only need to carry the right identifier. *Linked* objects live in an
``Inventory`` and point at each other (a dataset knows its blocks and replicas, a site its
replicas and partitions).

Identifiers, as the inventory resolves them::

    Dataset, File, Group, Site, Partition   name  (File: lfn)
    Block                                   name + dataset
    SitePartition                           site + partition
    DatasetReplica                          dataset + site
    BlockReplica                            block + site

Every object turns into a JSON-able dict with ``to_dict()`` and back with ``from_dict()``; the
dict names its ``kind`` and refers to other objects by identifier, never by Python expression::

    >>> ds = Dataset("/Higgs/Run2024-v1/AOD", status=DatasetStatus.VALID, data_type=DataType.DATA)
    >>> block = Block("b0001", ds, size=2_000_000, num_files=1)
    >>> File("/store/data/Higgs/AOD/f1.root", block, size=2_000_000, adler32="0a1b2c3d").to_dict()["block"]
    'b0001'

Files dominate the count of objects (millions), so ``File`` keeps its state in three slots: the
block, an interned directory string shared by every file in it, and one ``bytes`` holding size,
checksums and the base name.
"""

from __future__ import annotations

import enum
import fnmatch
import re
import struct
import sys
from typing import Any, ClassVar, Iterator

from workbench.inventory.errors import DataFormatError


# -- enums ----------------------------------------------------------------------------------------
class DatasetStatus(enum.Enum):
    """Life cycle of a dataset."""

    UNKNOWN = "unknown"
    PRODUCTION = "production"
    VALID = "valid"
    INVALID = "invalid"
    DEPRECATED = "deprecated"
    DELETED = "deleted"
    IGNORED = "ignored"


class DataType(enum.Enum):
    """What a dataset holds."""

    UNKNOWN = "unknown"
    DATA = "data"
    MC = "mc"
    RAW = "raw"
    ALIGN = "align"
    CALIB = "calib"
    COSMIC = "cosmic"
    TEST = "test"


class SiteStatus(enum.Enum):
    """Whether a site takes part in operations."""

    UNKNOWN = "unknown"
    READY = "ready"
    WAITROOM = "waitroom"
    MORGUE = "morgue"


class StorageType(enum.Enum):
    """The kind of storage a site offers."""

    UNKNOWN = "unknown"
    DISK = "disk"
    MSS = "mss"  # tape behind a disk buffer
    BUFFER = "buffer"


class OwnershipLevel(enum.Enum):
    """Whether a group owns whole dataset replicas or single block replicas."""

    DATASET = "dataset"
    BLOCK = "block"


def _enum(cls: type[enum.Enum], value: Any, kind: str, field: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        allowed = [member.value for member in cls]
        raise DataFormatError(f"{field} must be one of {allowed}", kind=kind, field=field, value=value) from None


def _int(value: Any, kind: str, field: str, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(f"{field} must be an integer", kind=kind, field=field, value=value)
    if minimum is not None and value < minimum:
        raise DataFormatError(f"{field} must be >= {minimum}", kind=kind, field=field, value=value)
    return value


def _bool(value: Any, kind: str, field: str) -> bool:
    if not isinstance(value, bool):
        raise DataFormatError(f"{field} must be true or false", kind=kind, field=field, value=value)
    return value


def _name(value: Any, kind: str, field: str = "name") -> str:
    if not isinstance(value, str) or not value or len(value) > 512:
        raise DataFormatError(f"{field} must be a non-empty string of at most 512 characters",
                              kind=kind, field=field, value=value)
    return value


def _optional_str(value: Any, kind: str, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DataFormatError(f"{field} must be a string or null", kind=kind, field=field, value=value)
    return value


class _DynamoCodes:
    """Dynamo's ``status_name`` / ``status_val`` pairs for one enum: names, members, or Dynamo's 1-based codes.

    Dynamo's objects hold small integers (``Dataset.STAT_VALID == 6``) and scripts translate with
    ``Dataset.status_name(dataset.status)``; here objects hold enum members, and both spellings
    translate: a member or a code to its name, a name or a code to the member. Like Dynamo's, a
    value that is none of these comes back as given.
    """

    def __init__(self, cls: type[enum.Enum], order: tuple[str, ...]) -> None:
        self.cls = cls
        self.order = order

    def member(self, arg: Any) -> Any:
        if isinstance(arg, self.cls):
            return arg
        if isinstance(arg, int) and not isinstance(arg, bool) and 1 <= arg <= len(self.order):
            return self.cls(self.order[arg - 1])
        try:
            return self.cls(str(arg).lower())
        except ValueError:
            return arg

    def name(self, arg: Any) -> Any:
        member = self.member(arg)
        return member.value if isinstance(member, self.cls) else arg

    def constants(self, prefix: str) -> dict[str, enum.Enum]:
        """``{PREFIX_NAME: member}``, Dynamo's class constants (``STAT_VALID``, ``TYPE_DISK``)."""
        return {f"{prefix}{member.name}": member for member in self.cls}

    def methods(self, field: str) -> dict[str, staticmethod]:
        """``{field_name: ..., field_val: ...}`` as static methods, the names Dynamo's classes define."""
        return {f"{field}_name": staticmethod(self.name), f"{field}_val": staticmethod(self.member)}


# Dynamo's code order (its ``_statuses`` / ``_storage_types`` lists); data types have no fixed list
# there (each installation customizes it), so their codes follow the enum's order.
_DATASET_STATUS = _DynamoCodes(DatasetStatus, ("unknown", "deleted", "deprecated", "invalid", "production",
                                               "valid", "ignored"))
_DATA_TYPE = _DynamoCodes(DataType, tuple(member.value for member in DataType))
_SITE_STATUS = _DynamoCodes(SiteStatus, ("ready", "waitroom", "morgue", "unknown"))
_STORAGE_TYPE = _DynamoCodes(StorageType, ("disk", "mss", "buffer", "unknown"))


def _with_dynamo_codes(*codes: tuple[_DynamoCodes, str, str]) -> Any:
    """A class decorator adding each (codes, field, constant prefix)'s methods and constants."""

    def decorate(cls: type) -> type:
        for table, field, prefix in codes:
            for name, value in {**table.methods(field), **table.constants(prefix)}.items():
                setattr(cls, name, value)
        return cls

    return decorate


# -- the common machinery ---------------------------------------------------------------------------
class InventoryObject:
    """Base of every inventory object.

    Subclasses declare ``KIND`` (the name in serialized dicts), ``ATTRS`` (the plain attributes
    ``update`` copies) and implement ``key()`` (the identifier as a tuple of names).
    """

    __slots__ = ()
    KIND: ClassVar[str] = ""
    ATTRS: ClassVar[tuple[str, ...]] = ()

    def key(self) -> tuple[Any, ...]:
        """The identifier of this object as a tuple of names (see the module docstring)."""
        raise NotImplementedError

    def key_dict(self) -> dict[str, Any]:
        """The identifier as the JSON-able dict ``delete`` changes carry."""
        raise NotImplementedError

    def attr_dict(self) -> dict[str, Any]:
        """The plain attributes as JSON-able values (enums by value)."""
        result = {}
        for attr in self.ATTRS:
            value = getattr(self, attr)
            result[attr] = value.value if isinstance(value, enum.Enum) else value
        return result

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., <identifier fields>, <attributes>}``: JSON-able, read back by ``from_dict``."""
        return {"kind": self.KIND, **self.key_dict(), **self.attr_dict()}

    def copy_from(self, other: InventoryObject) -> bool:
        """Copy ``other``'s attributes into this object; True when any value changed."""
        changed = False
        for attr in self.ATTRS:
            value = getattr(other, attr)
            if getattr(self, attr) != value:
                setattr(self, attr, value)
                changed = True
        return changed

    def same_attrs(self, other: InventoryObject) -> bool:
        return all(getattr(self, attr) == getattr(other, attr) for attr in self.ATTRS)

    def __repr__(self) -> str:
        key = ", ".join(repr(part) for part in self.key())
        return f"{type(self).__name__}({key})"


# -- datasets, blocks, files ------------------------------------------------------------------------
@_with_dynamo_codes((_DATASET_STATUS, "status", "STAT_"), (_DATA_TYPE, "data_type", "TYPE_"))
class Dataset(InventoryObject):
    """A named collection of blocks (identifier: name).

    Linked datasets have ``blocks`` (name -> Block) and ``replicas`` (site name -> DatasetReplica).
    """

    __slots__ = ("name", "status", "data_type", "software_version", "last_update", "is_open",
                 "blocks", "replicas")
    KIND = "Dataset"
    ATTRS = ("status", "data_type", "software_version", "last_update", "is_open")

    def __init__(self, name: str, status: DatasetStatus | str = DatasetStatus.UNKNOWN,
                 data_type: DataType | str = DataType.UNKNOWN, software_version: str | None = None,
                 last_update: int = 0, is_open: bool = True) -> None:
        self.name = _name(name, self.KIND)
        self.status = _enum(DatasetStatus, status, self.KIND, "status")
        self.data_type = _enum(DataType, data_type, self.KIND, "data_type")
        self.software_version = _optional_str(software_version, self.KIND, "software_version")
        self.last_update = _int(last_update, self.KIND, "last_update")
        self.is_open = _bool(is_open, self.KIND, "is_open")
        self.blocks: dict[str, Block] = {}
        self.replicas: dict[str, DatasetReplica] = {}

    def key(self) -> tuple[str]:
        return (self.name,)

    def key_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    @property
    def size(self) -> int:
        """Total bytes of the dataset's blocks."""
        return sum(block.size for block in self.blocks.values())

    @property
    def num_files(self) -> int:
        return sum(block.num_files for block in self.blocks.values())

    def find_block(self, name: str) -> Block | None:
        return self.blocks.get(name)

    def find_replica(self, site: Site | str) -> DatasetReplica | None:
        return self.replicas.get(site if isinstance(site, str) else site.name)


class Block(InventoryObject):
    """A unit of data transfer inside a dataset (identifier: name + dataset).

    ``size`` and ``num_files`` are the block's declared totals, set by Block updates only: adding,
    changing or deleting a file leaves them as they are (Dynamo's rule). ``Store.check`` lists
    blocks whose files do not add up to them and ``--repair`` sets them to the files' sums.
    Linked blocks have ``replicas`` (site name -> BlockReplica) and ``files``.
    """

    __slots__ = ("name", "dataset", "size", "num_files", "is_open", "last_update", "replicas", "_files")
    KIND = "Block"
    ATTRS = ("size", "num_files", "is_open", "last_update")

    def __init__(self, name: str, dataset: Dataset, size: int = 0, num_files: int = 0,
                 is_open: bool = False, last_update: int = 0) -> None:
        self.name = _name(name, self.KIND)
        if not isinstance(dataset, Dataset):
            raise DataFormatError("a block's dataset must be a Dataset", kind=self.KIND, field="dataset",
                                  value=dataset)
        self.dataset = dataset
        self.size = _int(size, self.KIND, "size")
        self.num_files = _int(num_files, self.KIND, "num_files")
        self.is_open = _bool(is_open, self.KIND, "is_open")
        self.last_update = _int(last_update, self.KIND, "last_update")
        self.replicas: dict[str, BlockReplica] = {}
        # A FileLoader until the files are known: a store may load them only when first asked for.
        self._files: list[File] | FileLoader = []

    def key(self) -> tuple[str, str]:
        return (self.dataset.name, self.name)

    def key_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dataset": self.dataset.name}

    def full_name(self) -> str:
        """``dataset#block``, the conventional way to name a block in one string (a method, as Dynamo's)."""
        return f"{self.dataset.name}#{self.name}"

    def real_name(self) -> str:
        """The block's own name (Dynamo's spelling: its blocks may store a packed form of it)."""
        return self.name

    @property
    def files(self) -> list[File]:
        """The block's files (loaded on first access when the store loaded the inventory lazily)."""
        files = self._files
        if isinstance(files, FileLoader):
            files = self._files = files.load(self)
        return files  # type: ignore[return-value]

    @property
    def files_loaded(self) -> bool:
        return not isinstance(self._files, FileLoader)

    def find_file(self, lfn: str) -> File | None:
        cut = lfn.rfind("/") + 1
        directory, base = lfn[:cut], lfn[cut:].encode()
        for file in self.files:
            # compare the stored parts, not a rebuilt lfn (blocks hold many files); endswith is a cheap filter
            if file._packed.endswith(base) and file._base() == base and file._directory == directory:
                return file
        return None

    def find_replica(self, site: Site | str) -> BlockReplica | None:
        return self.replicas.get(site if isinstance(site, str) else site.name)


class FileLoader:
    """Stands in for a block's file list until first access; ``load(block)`` returns the files."""

    __slots__ = ()

    def load(self, block: Block) -> list[File]:
        raise NotImplementedError


#: directory strings shared by the files under them (one copy per directory in RAM)
_DIRECTORIES: dict[str, str] = {}
_FILE_HEADER = struct.Struct("<QIB")  # size, adler32, flags
_HAS_ADLER32 = 1
_HAS_MD5 = 2


class File(InventoryObject):
    """A file of a block (identifier: lfn, found through its block).

    ``size`` in bytes, ``adler32`` (8 hex digits) and ``md5`` (32 hex digits) checksums, either
    may be None. Kept compact: about 150 bytes for a file with a 40-character base name.
    """

    __slots__ = ("block", "_directory", "_packed")
    KIND = "File"
    ATTRS = ("size", "adler32", "md5")

    def __init__(self, lfn: str, block: Block, size: int = 0, adler32: str | None = None,
                 md5: str | None = None) -> None:
        lfn = _name(lfn, self.KIND, "lfn")
        if not isinstance(block, Block):
            raise DataFormatError("a file's block must be a Block", kind=self.KIND, field="block", value=block)
        self.block = block
        # The directory keeps its trailing slash, so directory + base is the lfn exactly.
        cut = lfn.rfind("/") + 1
        directory, base = lfn[:cut], lfn[cut:]
        self._directory = _DIRECTORIES.setdefault(directory, sys.intern(directory))
        self._packed = self._pack(_int(size, self.KIND, "size"), adler32, md5, base.encode())

    @classmethod
    def trusted(cls, lfn: str, block: Block, size: int, adler32: str | None, md5: str | None) -> File:
        """Build a file from values already checked (rows of the store): no validation, for load speed."""
        file = cls.__new__(cls)
        file.block = block
        cut = lfn.rfind("/") + 1
        directory = lfn[:cut]
        file._directory = _DIRECTORIES.get(directory) or _DIRECTORIES.setdefault(directory, sys.intern(directory))
        flags = 0
        if adler32 is not None:
            flags = _HAS_ADLER32
        digest = b""
        if md5 is not None:
            digest = bytes.fromhex(md5)
            flags |= _HAS_MD5
        file._packed = (_FILE_HEADER.pack(size, int(adler32, 16) if adler32 is not None else 0, flags)
                        + digest + lfn[cut:].encode())
        return file

    @classmethod
    def _pack(cls, size: int, adler32: str | None, md5: str | None, base: bytes) -> bytes:
        flags = 0
        adler = 0
        if adler32 is not None:
            if not isinstance(adler32, str) or not re.fullmatch(r"[0-9a-fA-F]{1,8}", adler32):
                raise DataFormatError("adler32 must be up to 8 hex digits", kind=cls.KIND, field="adler32",
                                      value=adler32)
            adler = int(adler32, 16)
            flags |= _HAS_ADLER32
        digest = b""
        if md5 is not None:
            if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
                raise DataFormatError("md5 must be 32 hex digits", kind=cls.KIND, field="md5", value=md5)
            digest = bytes.fromhex(md5)
            flags |= _HAS_MD5
        if size >= 1 << 64:
            raise DataFormatError("size too large", kind=cls.KIND, field="size", value=size)
        return _FILE_HEADER.pack(size, adler, flags) + digest + base

    def _unpack(self) -> tuple[int, str | None, str | None, bytes]:
        size, adler, flags = _FILE_HEADER.unpack_from(self._packed)
        offset = _FILE_HEADER.size
        md5 = None
        if flags & _HAS_MD5:
            md5 = self._packed[offset:offset + 16].hex()
            offset += 16
        adler32 = f"{adler:08x}" if flags & _HAS_ADLER32 else None
        return size, adler32, md5, self._packed[offset:]

    def _base(self) -> bytes:
        packed = self._packed
        return packed[_FILE_HEADER.size + (16 if packed[12] & _HAS_MD5 else 0):]

    @property
    def lfn(self) -> str:
        """The logical file name."""
        return self._directory + self._unpack()[3].decode()

    @property
    def size(self) -> int:
        return _FILE_HEADER.unpack_from(self._packed)[0]

    @size.setter
    def size(self, value: int) -> None:
        _, adler32, md5, base = self._unpack()
        self._packed = self._pack(_int(value, self.KIND, "size"), adler32, md5, base)

    @property
    def adler32(self) -> str | None:
        return self._unpack()[1]

    @adler32.setter
    def adler32(self, value: str | None) -> None:
        size, _, md5, base = self._unpack()
        self._packed = self._pack(size, value, md5, base)

    @property
    def md5(self) -> str | None:
        return self._unpack()[2]

    @md5.setter
    def md5(self, value: str | None) -> None:
        size, adler32, _, base = self._unpack()
        self._packed = self._pack(size, adler32, value, base)

    def copy_from(self, other: InventoryObject) -> bool:
        assert isinstance(other, File)
        if self._packed == other._packed:
            return False
        self._packed = other._packed
        return True

    def key(self) -> tuple[str, str, str]:
        return (self.block.dataset.name, self.block.name, self.lfn)

    def key_dict(self) -> dict[str, Any]:
        return {"lfn": self.lfn, "block": self.block.name, "dataset": self.block.dataset.name}


# -- sites, groups, partitions ----------------------------------------------------------------------
@_with_dynamo_codes((_SITE_STATUS, "status", "STAT_"), (_STORAGE_TYPE, "storage_type", "TYPE_"))
class Site(InventoryObject):
    """A storage site (identifier: name).

    ``filename_mapping`` maps a protocol to ordered rules ``[lfn_pattern, pfn_template]``: the
    first pattern (a regular expression matching the whole lfn) wins, and the template may use
    its groups (``\\1``)::

        >>> site = Site("T2_CH_CERN", filename_mapping={"root": [["/store/(.*)", "root://eos.cern.ch//eos/\\\\1"]]})
        >>> site.to_pfn("/store/data/f.root", "root")
        'root://eos.cern.ch//eos/data/f.root'

    Linked sites have ``dataset_replicas`` (dataset name -> DatasetReplica), ``block_replicas``
    (a set of BlockReplica) and ``partitions`` (a ``SitePartitions``: Partition -> SitePartition,
    as Dynamo keys it; a partition's name finds the entry too).

    ``Site.status_name(site.status)``, ``Site.storage_type_name(...)``, ``Site.STAT_READY``,
    ``Site.TYPE_DISK`` and the ``*_val`` translations are Dynamo's (``Dataset`` has the same for
    ``status`` and ``data_type``).
    """

    __slots__ = ("name", "host", "storage_type", "backend", "status", "filename_mapping",
                 "dataset_replicas", "block_replicas", "partitions")
    KIND = "Site"
    ATTRS = ("host", "storage_type", "backend", "status", "filename_mapping")

    def __init__(self, name: str, host: str = "", storage_type: StorageType | str = StorageType.DISK,
                 backend: str = "", status: SiteStatus | str = SiteStatus.READY,
                 filename_mapping: dict[str, list[list[str]]] | None = None) -> None:
        self.name = _name(name, self.KIND)
        self.host = _optional_str(host, self.KIND, "host") or ""
        self.storage_type = _enum(StorageType, storage_type, self.KIND, "storage_type")
        self.backend = _optional_str(backend, self.KIND, "backend") or ""
        self.status = _enum(SiteStatus, status, self.KIND, "status")
        self.filename_mapping = self._check_mapping(filename_mapping or {})
        self.dataset_replicas: dict[str, DatasetReplica] = {}
        self.block_replicas: set[BlockReplica] = set()
        self.partitions: SitePartitions = SitePartitions()

    @classmethod
    def _check_mapping(cls, mapping: Any) -> dict[str, list[list[str]]]:
        if not isinstance(mapping, dict):
            raise DataFormatError("filename_mapping must map protocol -> rules", kind=cls.KIND,
                                  field="filename_mapping", value=mapping)
        checked: dict[str, list[list[str]]] = {}
        for protocol, rules in mapping.items():
            if not isinstance(protocol, str) or not isinstance(rules, (list, tuple)):
                raise DataFormatError("filename_mapping must map protocol -> rules", kind=cls.KIND,
                                      field="filename_mapping", value=mapping)
            checked[protocol] = []
            for rule in rules:
                if (not isinstance(rule, (list, tuple)) or len(rule) != 2
                        or not all(isinstance(part, str) for part in rule)):
                    raise DataFormatError("a mapping rule is [lfn_pattern, pfn_template]", kind=cls.KIND,
                                          field="filename_mapping", value=rule)
                try:
                    re.compile(rule[0])
                except re.error as exc:
                    raise DataFormatError(f"bad lfn pattern: {exc}", kind=cls.KIND, field="filename_mapping",
                                          value=rule[0]) from None
                checked[protocol].append([rule[0], rule[1]])
        return checked

    def key(self) -> tuple[str]:
        return (self.name,)

    def key_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def to_pfn(self, lfn: str, protocol: str) -> str | None:
        """The physical file name of ``lfn`` for ``protocol``, or None when no rule matches."""
        for pattern, template in self.filename_mapping.get(protocol, []):
            match = re.fullmatch(pattern, lfn)
            if match:
                return match.expand(template)
        return None

    def find_dataset_replica(self, dataset: Dataset | str) -> DatasetReplica | None:
        return self.dataset_replicas.get(dataset if isinstance(dataset, str) else dataset.name)

    def find_block_replica(self, block: Block) -> BlockReplica | None:
        return block.replicas.get(self.name)

    def usage(self) -> int:
        """Bytes held at this site (all block replicas)."""
        return sum(replica.size for replica in self.block_replicas)


class Group(InventoryObject):
    """A group owning replicas (identifier: name). The null group has name None and owns orphans."""

    __slots__ = ("name", "olevel")
    KIND = "Group"
    ATTRS = ("olevel",)

    def __init__(self, name: str | None, olevel: OwnershipLevel | str = OwnershipLevel.BLOCK) -> None:
        self.name = None if name is None else _name(name, self.KIND)
        self.olevel = _enum(OwnershipLevel, olevel, self.KIND, "olevel")

    def key(self) -> tuple[str | None]:
        return (self.name,)

    def key_dict(self) -> dict[str, Any]:
        return {"name": self.name}


_CLAUSE = re.compile(r"\s*(\w+)\s*(==|!=|\bin\b|\bnot in\b|\bmatches\b)\s*(.+?)\s*$")
_CONDITION_FIELDS = ("group", "dataset", "block", "site", "data_type", "custodial")


class Condition:
    """A partition's condition: clauses over a block replica joined by ``and``, parsed, never evaluated.

    Clauses: ``FIELD == VALUE``, ``FIELD != VALUE``, ``FIELD in [A, B]``, ``FIELD not in [A, B]``,
    ``FIELD matches GLOB``; fields: group, dataset, block, site, data_type, custodial (true/false)::

        >>> Condition("group in [AnalysisOps, DataOps] and dataset matches /*/*/AOD*").text
        'group in [AnalysisOps, DataOps] and dataset matches /*/*/AOD*'
    """

    __slots__ = ("text", "clauses")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise DataFormatError("a condition is a string", kind="Partition", field="condition", value=text)
        self.text = text
        self.clauses: list[tuple[str, str, Any]] = []
        for part in re.split(r"\s+and\s+", text.strip()):
            match = _CLAUSE.match(part)
            if not match or match.group(1) not in _CONDITION_FIELDS:
                raise DataFormatError(f"cannot parse condition clause {part!r} (fields: {', '.join(_CONDITION_FIELDS)})",
                                      kind="Partition", field="condition", value=text)
            field, op, value = match.group(1), match.group(2), match.group(3)
            if op in ("in", "not in"):
                if not (value.startswith("[") and value.endswith("]")):
                    raise DataFormatError(f"'{op}' needs a [list]", kind="Partition", field="condition", value=text)
                value = frozenset(item.strip() for item in value[1:-1].split(",") if item.strip())
            self.clauses.append((field, op, value))

    @staticmethod
    def _field(replica: BlockReplica, field: str) -> str:
        if field == "group":
            return "None" if replica.group.name is None else replica.group.name
        if field == "dataset":
            return replica.block.dataset.name
        if field == "block":
            return replica.block.name
        if field == "site":
            return replica.site.name
        if field == "data_type":
            return replica.block.dataset.data_type.value
        return "true" if replica.is_custodial else "false"

    def matches(self, replica: BlockReplica) -> bool:
        """True when every clause holds for ``replica``."""
        for field, op, value in self.clauses:
            actual = self._field(replica, field)
            if op == "==":
                ok = actual == value
            elif op == "!=":
                ok = actual != value
            elif op == "in":
                ok = actual in value
            elif op == "not in":
                ok = actual not in value
            else:
                ok = fnmatch.fnmatchcase(actual, value)
            if not ok:
                return False
        return True


class Partition(InventoryObject):
    """A named subset of block replicas, defined by a condition or as a union of subpartitions.

    A partition with neither holds every replica. ``Partition("AnalysisOps", condition="group == AnalysisOps")``;
    ``Partition("Physics", subpartitions=["AnalysisOps", "DataOps"])``.
    """

    __slots__ = ("name", "condition", "subpartitions", "_parsed", "_inventory_partitions")
    KIND = "Partition"
    ATTRS = ("condition", "subpartitions")

    def __init__(self, name: str, condition: str | None = None, subpartitions: list[str] | tuple[str, ...] = ()) -> None:
        self.name = _name(name, self.KIND)
        if condition is not None and subpartitions:
            raise DataFormatError("a partition has a condition or subpartitions, not both", kind=self.KIND,
                                  field="condition", value=condition)
        self.condition = condition
        self._parsed = Condition(condition) if condition is not None else None
        if not isinstance(subpartitions, (list, tuple)) or not all(isinstance(s, str) for s in subpartitions):
            raise DataFormatError("subpartitions is a list of partition names", kind=self.KIND,
                                  field="subpartitions", value=subpartitions)
        self.subpartitions = list(subpartitions)
        # the inventory's partitions dict, so a linked composite partition finds its members
        self._inventory_partitions: dict[str, Partition] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "condition":
            object.__setattr__(self, "_parsed", Condition(value) if value is not None else None)
        object.__setattr__(self, name, value)

    def key(self) -> tuple[str]:
        return (self.name,)

    def key_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def contains(self, replica: BlockReplica, _seen: frozenset[str] = frozenset()) -> bool:
        """True when ``replica`` belongs to this partition."""
        if self._parsed is not None:
            return self._parsed.matches(replica)
        if not self.subpartitions:
            return True
        partitions = self._inventory_partitions or {}
        seen = _seen | {self.name}
        return any(partitions[name].contains(replica, seen) for name in self.subpartitions
                   if name in partitions and name not in seen)


class SitePartitions(dict):  # type: ignore[type-arg]
    """A site's partitions: ``{Partition: SitePartition}``, keyed by the inventory's Partition objects.

    Dynamo's applications look up ``site.partitions[partition]`` with the inventory's partition and
    iterate ``site.partitions.items()`` as (Partition, SitePartition) pairs; this project's code
    looks up by name. Both keys reach the same entry, and so does any Partition object with the
    entry's name (an unlinked clone). Setting an entry keys it by its value's partition.
    """

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        super().__init__()
        self._by_name: dict[str, Partition] = {}

    def _key(self, key: Any) -> Any:
        if isinstance(key, Partition):
            return self._by_name.get(key.name, key)
        return self._by_name.get(key, key) if isinstance(key, str) else key

    def __getitem__(self, key: Any) -> SitePartition:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: Any) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._key(key), default)

    def __setitem__(self, key: Any, value: SitePartition) -> None:
        if not isinstance(value, SitePartition) or \
                (key.name if isinstance(key, Partition) else key) != value.partition.name:
            raise DataFormatError("a site's partitions map each partition to its SitePartition", kind="Site",
                                  field="partitions", value=key)
        previous = self._by_name.get(value.partition.name)
        if previous is not None and previous is not value.partition:
            super().__delitem__(previous)  # the partition was replaced: one entry per name
        self._by_name[value.partition.name] = value.partition
        super().__setitem__(value.partition, value)

    def __delitem__(self, key: Any) -> None:
        partition = self._key(key)
        super().__delitem__(partition)
        self._by_name.pop(partition.name, None)

    def pop(self, key: Any, *default: Any) -> Any:
        partition = self._key(key)
        if not super().__contains__(partition):
            if default:
                return default[0]
            raise KeyError(key)
        value = super().pop(partition)
        self._by_name.pop(partition.name, None)
        return value

    def clear(self) -> None:
        super().clear()
        self._by_name.clear()

    def names(self) -> list[str]:
        """The partitions' names, sorted."""
        return sorted(self._by_name)


class SitePartition(InventoryObject):
    """A partition at a site, with a quota in bytes (None: unlimited); identifier: site + partition."""

    __slots__ = ("site", "partition", "quota")
    KIND = "SitePartition"
    ATTRS = ("quota",)

    def __init__(self, site: Site, partition: Partition, quota: int | None = None) -> None:
        if not isinstance(site, Site) or not isinstance(partition, Partition):
            raise DataFormatError("a site partition needs a Site and a Partition", kind=self.KIND,
                                  field="site", value=site)
        self.site = site
        self.partition = partition
        self.quota = None if quota is None else _int(quota, self.KIND, "quota")

    def key(self) -> tuple[str, str]:
        return (self.site.name, self.partition.name)

    def key_dict(self) -> dict[str, Any]:
        return {"site": self.site.name, "partition": self.partition.name}

    def replicas(self) -> Iterator[BlockReplica]:
        """The block replicas at the site that belong to the partition."""
        return (replica for replica in self.site.block_replicas if self.partition.contains(replica))

    def occupancy(self) -> int:
        """Bytes the partition holds at the site."""
        return sum(replica.size for replica in self.replicas())

    def occupancy_fraction(self) -> float | None:
        """occupancy / quota, None when the quota is unlimited (and infinity for a zero quota in use)."""
        if self.quota is None:
            return None
        used = self.occupancy()
        if self.quota == 0:
            return 0.0 if used == 0 else float("inf")
        return used / self.quota


# -- replicas -------------------------------------------------------------------------------------
class DatasetReplica(InventoryObject):
    """A dataset at a site (identifier: dataset + site); its block replicas are those of the dataset's blocks there."""

    __slots__ = ("dataset", "site", "growing", "group")
    KIND = "DatasetReplica"
    ATTRS = ("growing", "group")

    def __init__(self, dataset: Dataset, site: Site, growing: bool = True, group: Group | None = None) -> None:
        if not isinstance(dataset, Dataset) or not isinstance(site, Site):
            raise DataFormatError("a dataset replica needs a Dataset and a Site", kind=self.KIND,
                                  field="dataset", value=dataset)
        self.dataset = dataset
        self.site = site
        self.growing = _bool(growing, self.KIND, "growing")
        self.group = group if group is not None else Group(None)

    def key(self) -> tuple[str, str]:
        return (self.dataset.name, self.site.name)

    def key_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset.name, "site": self.site.name}

    def attr_dict(self) -> dict[str, Any]:
        return {"growing": self.growing, "group": self.group.name}

    def same_attrs(self, other: InventoryObject) -> bool:
        assert isinstance(other, DatasetReplica)
        return self.growing == other.growing and self.group.name == other.group.name

    @property
    def block_replicas(self) -> list[BlockReplica]:
        return [replica for block in self.dataset.blocks.values()
                if (replica := block.replicas.get(self.site.name)) is not None]

    @property
    def size(self) -> int:
        return sum(replica.size for replica in self.block_replicas)

    def is_complete(self) -> bool:
        """True when every block of the dataset is fully at the site."""
        blocks = self.dataset.blocks.values()
        return all((r := block.replicas.get(self.site.name)) is not None and r.is_complete() for block in blocks)


class BlockReplica(InventoryObject):
    """A block at a site (identifier: block + site), owned by a group; ``size`` is the bytes present."""

    __slots__ = ("block", "site", "group", "is_custodial", "size", "last_update")
    KIND = "BlockReplica"
    ATTRS = ("group", "is_custodial", "size", "last_update")

    def __init__(self, block: Block, site: Site, group: Group | None = None, is_custodial: bool = False,
                 size: int | None = None, last_update: int = 0) -> None:
        if not isinstance(block, Block) or not isinstance(site, Site):
            raise DataFormatError("a block replica needs a Block and a Site", kind=self.KIND, field="block",
                                  value=block)
        self.block = block
        self.site = site
        self.group = group if group is not None else Group(None)
        self.is_custodial = _bool(is_custodial, self.KIND, "is_custodial")
        self.size = block.size if size is None else _int(size, self.KIND, "size")
        self.last_update = _int(last_update, self.KIND, "last_update")

    def key(self) -> tuple[str, str, str]:
        return (self.block.dataset.name, self.block.name, self.site.name)

    def key_dict(self) -> dict[str, Any]:
        return {"dataset": self.block.dataset.name, "block": self.block.name, "site": self.site.name}

    def attr_dict(self) -> dict[str, Any]:
        return {"group": self.group.name, "is_custodial": self.is_custodial, "size": self.size,
                "last_update": self.last_update}

    def same_attrs(self, other: InventoryObject) -> bool:
        assert isinstance(other, BlockReplica)
        return (self.group.name == other.group.name and self.is_custodial == other.is_custodial
                and self.size == other.size and self.last_update == other.last_update)

    def is_complete(self) -> bool:
        return self.size == self.block.size


# -- serialization ----------------------------------------------------------------------------------
KINDS: dict[str, type[InventoryObject]] = {cls.KIND: cls for cls in (
    Dataset, Block, File, Site, Group, Partition, SitePartition, DatasetReplica, BlockReplica)}

_FIELDS: dict[str, tuple[str, ...]] = {
    "Dataset": ("name", *Dataset.ATTRS),
    "Block": ("name", "dataset", *Block.ATTRS),
    "File": ("lfn", "block", "dataset", *File.ATTRS),
    "Site": ("name", *Site.ATTRS),
    "Group": ("name", *Group.ATTRS),
    "Partition": ("name", *Partition.ATTRS),
    "SitePartition": ("site", "partition", *SitePartition.ATTRS),
    "DatasetReplica": ("dataset", "site", *DatasetReplica.ATTRS),
    "BlockReplica": ("dataset", "block", "site", *BlockReplica.ATTRS),
}


def _stub_block(name: str, dataset_name: str) -> Block:
    """A block that only carries its identifier (a reference inside a serialized file): built without checks."""
    dataset = Dataset.__new__(Dataset)
    dataset.name = dataset_name
    block = Block.__new__(Block)
    block.name, block.dataset = name, dataset
    return block


def from_dict(data: Any, *, key_only: bool = False) -> InventoryObject:
    """Build an unlinked object from its ``to_dict()`` form (references become identifier stubs).

    With ``key_only`` only the identifier fields are needed (what a ``delete`` carries). Unknown
    kinds, unknown fields and wrongly typed values raise ``DataFormatError``.
    """
    if not isinstance(data, dict):
        raise DataFormatError("an object is a dict with a kind", kind=None, field="kind", value=data)
    kind = data.get("kind")
    if kind not in KINDS:
        raise DataFormatError(f"unknown kind (one of {sorted(KINDS)})", kind=kind, field="kind", value=kind)
    unknown = set(data) - {"kind", *_FIELDS[kind]}
    if unknown:
        raise DataFormatError(f"unknown fields {sorted(unknown)}", kind=kind, field=sorted(unknown)[0],
                              value=data[sorted(unknown)[0]])
    fields = {name: value for name, value in data.items() if name != "kind"}

    def need(name: str) -> Any:
        if name not in fields:
            raise DataFormatError(f"missing field {name!r}", kind=kind, field=name, value=None)
        return fields.pop(name)

    def attrs(cls: type[InventoryObject]) -> dict[str, Any]:
        return {} if key_only else {name: fields[name] for name in cls.ATTRS if name in fields}

    try:
        if kind == "Dataset":
            return Dataset(need("name"), **attrs(Dataset))
        if kind == "Block":
            return Block(need("name"), Dataset(need("dataset")), **attrs(Block))
        if kind == "File":
            lfn, block, dataset = need("lfn"), need("block"), need("dataset")
            return File(lfn, _stub_block(_name(block, kind, "block"), _name(dataset, kind, "dataset")), **attrs(File))
        if kind == "Site":
            return Site(need("name"), **attrs(Site))
        if kind == "Group":
            return Group(need("name"), **attrs(Group))
        if kind == "Partition":
            return Partition(need("name"), **attrs(Partition))
        if kind == "SitePartition":
            return SitePartition(Site(need("site")), Partition(need("partition")), **attrs(SitePartition))
        values = attrs(DatasetReplica if kind == "DatasetReplica" else BlockReplica)
        if "group" in values:
            values["group"] = Group(values["group"])
        if kind == "DatasetReplica":
            return DatasetReplica(Dataset(need("dataset")), Site(need("site")), **values)
        dataset, block, site = Dataset(need("dataset")), need("block"), Site(need("site"))
        return BlockReplica(Block(block, dataset), site, **values)
    except TypeError as exc:  # e.g. a None where a dict or string is needed
        raise DataFormatError(f"malformed {kind}: {exc}", kind=kind, field=None, value=None) from None


__all__ = [
    "Block", "BlockReplica", "Condition", "DataFormatError", "DataType", "Dataset", "DatasetReplica",
    "DatasetStatus", "File", "Group", "InventoryObject", "KINDS", "OwnershipLevel", "Partition", "Site",
    "SitePartition", "SitePartitions", "SiteStatus", "StorageType", "FileLoader", "from_dict",
]
