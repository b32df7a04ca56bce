"""zdb: a ZeroMQ document database of nested lists and dicts queried with Python syntax.

::

    from workbench.zdb import client
    db, sockets = client("tcp://127.0.0.1:5559")
    db["x"] = 3
    db["x"]._run()       # 3

Servers: ``StorageManager`` (the primary, owning an archive directory) and
``TransactionEngine`` (an in-memory replica fed by the primary's change stream).
"""

from workbench.zdb.client import (
    Client,
    Proxy,
    ZdbAuthenticationError,
    ZdbRemoteError,
    ZdbTimeout,
    client,
    connect,
    resolve_domain_uri,
)
from workbench.zdb.errors import (
    ArchiveError,
    BadRequest,
    JournalError,
    LockError,
    QuiescedError,
    UndoError,
    UnstorableValueError,
    ZdbAttributeError,
    ZdbFileNotFoundError,
    ZdbIndexError,
    ZdbKeyError,
    ZdbTypeError,
    ZdbValueError,
)
from workbench.zdb.monitor import ZdbMonitor
from workbench.zdb.pipeline import Pipeline
from workbench.zdb.protocol import File
from workbench.zdb.server import StorageManager, TransactionEngine, open_server

__all__ = ["ArchiveError", "BadRequest", "Client", "File", "JournalError", "LockError", "Pipeline", "Proxy", "QuiescedError",
           "StorageManager", "TransactionEngine", "UndoError", "UnstorableValueError",
           "ZdbAttributeError", "ZdbAuthenticationError",
           "ZdbFileNotFoundError", "ZdbIndexError", "ZdbKeyError", "ZdbMonitor", "ZdbRemoteError", "ZdbTimeout",
           "ZdbTypeError", "ZdbValueError", "client", "connect", "open_server", "resolve_domain_uri"]
