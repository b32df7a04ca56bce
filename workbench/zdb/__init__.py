"""zdb: a ZeroMQ document database of nested lists and dicts queried with Python syntax.

::

    from workbench.zdb import client
    db, sockets = client("tcp://127.0.0.1:5559")
    db["x"] = 3
    db["x"]._run()       # 3

Servers: ``StorageManager`` (the primary, owning an archive directory) and
``TransactionEngine`` (an in-memory replica fed by the primary's change stream).

``client(uri, cache=True)`` adds a client cache (``workbench.zdb.cache``): repeated value reads are
answered from memory, invalidated by the change stream. Off by default, because it can surprise:
a write acknowledged to another *process* is seen once its record has crossed the stream (a write
acknowledged to any client of this process is seen at once); ``client.cache.sync(client)`` makes
one round trip to wait for the server's seq. Only ``db[...]._run()`` is cached, not ``len``,
``keys()`` or iteration; a lock holder reads through; the subscription uses the client's own
login or CURVE key, so a server that refuses it leaves every read going to the server.
"""

from workbench.zdb.cache import CacheOptions, ClientCache
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

__all__ = ["ArchiveError", "BadRequest", "CacheOptions", "Client", "ClientCache", "File", "JournalError", "LockError",
           "Pipeline", "Proxy", "QuiescedError",
           "StorageManager", "TransactionEngine", "UndoError", "UnstorableValueError",
           "ZdbAttributeError", "ZdbAuthenticationError",
           "ZdbFileNotFoundError", "ZdbIndexError", "ZdbKeyError", "ZdbMonitor", "ZdbRemoteError", "ZdbTimeout",
           "ZdbTypeError", "ZdbValueError", "client", "connect", "open_server", "resolve_domain_uri"]
