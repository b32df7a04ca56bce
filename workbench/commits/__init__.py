"""commits: versioned key/value documents with SQL history, ZooKeeper views and Rainer's HTTP API.

::

    from workbench.commits import Commit, SqlCommitStorage
    storage = SqlCommitStorage("sqlite:///commits.db").start()
    storage.save(Commit.from_value("foo", 1, {"hey": "what"}, author="gian", comment="rofl"))
    storage.get("foo").value      # {'hey': 'what'}

Parts: ``model`` (Commit, serializations), ``storage`` (memory and SQL), ``keeper`` (ZooKeeper
views, mirror, publishing, auto-publisher), ``server`` (HTTP API), ``builder`` (all of it wired).
"""

from workbench.commits.builder import Rainer, create_rainer
from workbench.commits.keeper import (
    AutoPublisher,
    CommitKeeper,
    CommitMirror,
    KeeperPublishingStorage,
    auto_publisher,
    keeper_publishing,
)
from workbench.commits.model import (
    JSON,
    RAW,
    TEXT,
    YAML,
    Commit,
    CommitConflict,
    CommitMetadata,
    InvalidCommit,
    Serialization,
    serialization_by_suffix,
)
from workbench.commits.payloads import PROPERTIES, payload_serialization
from workbench.commits.server import BasicAuth, CommitServer, TokenAuth, WriteAuth, auth_from_spec
from workbench.commits.storage import CommitStorage, MemoryCommitStorage, SqlCommitStorage

__all__ = [
    "AutoPublisher",
    "BasicAuth",
    "Commit",
    "CommitConflict",
    "CommitKeeper",
    "CommitMetadata",
    "CommitMirror",
    "CommitServer",
    "CommitStorage",
    "InvalidCommit",
    "JSON",
    "KeeperPublishingStorage",
    "MemoryCommitStorage",
    "PROPERTIES",
    "RAW",
    "Rainer",
    "Serialization",
    "SqlCommitStorage",
    "TEXT",
    "TokenAuth",
    "WriteAuth",
    "YAML",
    "auth_from_spec",
    "auto_publisher",
    "create_rainer",
    "keeper_publishing",
    "payload_serialization",
    "serialization_by_suffix",
]

# The client side of the HTTP API: pyrainer's RainerClient, the pythonic CommitClient and a
# CommitStorage over HTTP, with their errors.
from workbench.commits.client import (  # noqa: E402 - the client names come last, after the server side
    CommitBadRequest,
    CommitClient,
    CommitNotFound,
    CommitServerUnreachable,
    CommitsHttpError,
    CommitUnauthorized,
    HeadsView,
    HttpCommitConflict,
    HttpCommitStorage,
    RainerClient,
    RainerCommit,
    payload_text,
    unified_diff,
)
from workbench.commits.model import format_mtime  # noqa: E402

__all__ += [
    "CommitBadRequest",
    "CommitClient",
    "CommitNotFound",
    "CommitServerUnreachable",
    "CommitUnauthorized",
    "CommitsHttpError",
    "HeadsView",
    "HttpCommitConflict",
    "HttpCommitStorage",
    "RainerClient",
    "RainerCommit",
    "format_mtime",
    "payload_text",
    "unified_diff",
]
