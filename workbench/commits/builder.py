"""One call that wires storage, ZooKeeper keeper, mirror, auto-publisher and HTTP server together.

::

    rainer = create_rainer("sqlite:///diary.db", port=8080, prefix="/diary",
                           zookeeper="127.0.0.1:2181", zk_path="/rainer/diary").start()
    rainer.storage.save(Commit.from_value("foo", 1, {"hey": "what"}, author="me"))
    rainer.mirror["foo"].value     # once the watch fired: {'hey': 'what'}
    rainer.stop()

Without ``zookeeper`` it is storage + server only (``keeper``, ``mirror`` and ``publisher`` are None).
This is what ``workbench commits serve`` runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from workbench.commits.keeper import AutoPublisher, CommitKeeper, CommitMirror, keeper_publishing
from workbench.commits.model import JSON, Serialization, SerializationChooser
from workbench.commits.server import DEFAULT_MAX_BODY, CommitServer, WriteAuth, auth_from_spec
from workbench.commits.storage import CommitStorage, SqlCommitStorage
from workbench.errors import ConfigurationError, ServiceError
from workbench.servers import ServerLifecycle

if TYPE_CHECKING:
    from kazoo.client import KazooClient

log = logging.getLogger(__name__)

__all__ = ["Rainer", "create_rainer"]


class Rainer(ServerLifecycle):
    """A running (once started) set of commit services; build it with :func:`create_rainer`.

    Attributes: ``storage`` (the storage to save through: keeper-publishing when ZooKeeper is
    configured), ``underlying`` (the system of record), ``keeper``, ``mirror``, ``publisher``,
    ``server`` and ``url`` (the server's base URL, prefix included). ``start()``, ``stop()``,
    ``serve_forever()`` and ``with`` as every server has them.
    """

    def __init__(self, underlying: CommitStorage, server_options: dict[str, Any],
                 zookeeper: str | KazooClient | None, zk_path: str | None,
                 publish_period: float, publish_fuzz: float, heal: str = "exact") -> None:
        super().__init__()
        self.underlying = underlying
        self.storage: CommitStorage = underlying
        self._server_options = server_options
        self._zookeeper = zookeeper
        self._zk_path = zk_path
        self._publish_period = publish_period
        self._publish_fuzz = publish_fuzz
        self._heal = heal
        self.zk: KazooClient | None = None
        self._owns_zk = False
        self.keeper: CommitKeeper | None = None
        self.mirror: CommitMirror | None = None
        self.publisher: AutoPublisher | None = None
        self.server: CommitServer | None = None

    def __repr__(self) -> str:
        return f"<Rainer {self.server.url if self.server is not None else '(not started)'}>"

    @property
    def url(self) -> str:
        if self.server is None:
            raise ServiceError("not started", service="commits")
        return self.server.url

    def _start(self) -> None:
        """Start storage, ZooKeeper parts, then the server. Stops what started on failure."""
        try:
            self.underlying.start()
            if self._zookeeper is not None:
                self._start_zookeeper_parts()
            self.server = CommitServer(self.storage, mirror=self.mirror, **self._server_options).start()
        except BaseException:
            self._stop()
            raise

    def _start_zookeeper_parts(self) -> None:
        from kazoo.client import KazooClient

        assert self._zk_path is not None
        if isinstance(self._zookeeper, str):
            self.zk = KazooClient(hosts=self._zookeeper, timeout=15.0)
            self._owns_zk = True
            try:
                self.zk.start(timeout=15.0)
            except Exception as exc:
                raise ServiceError(f"cannot connect to ZooKeeper at {self._zookeeper}: {exc}",
                                   service="zookeeper", hosts=self._zookeeper) from exc
        else:
            self.zk = self._zookeeper
        self.keeper = CommitKeeper(self.zk, self._zk_path, self.underlying._serialization)
        self.storage = keeper_publishing(self.underlying, self.keeper)
        self.mirror = self.keeper.mirror()
        self.publisher = self.keeper.auto_publisher(self.underlying, self._publish_period,
                                                    self._publish_fuzz, heal=self._heal).start()

    def _stop(self) -> None:
        """Stop everything this object started, in reverse order (safe to run again)."""
        for part in (self.server, self.publisher, self.mirror):
            if part is not None:
                try:
                    part.stop() if isinstance(part, CommitServer) else part.close()
                except Exception:
                    log.warning("stopping %r failed", part, exc_info=True)
        self.server = self.publisher = self.mirror = None
        if self.zk is not None and self._owns_zk:
            try:
                self.zk.stop()
                self.zk.close()
            except Exception:
                log.warning("closing the ZooKeeper client failed", exc_info=True)
        self.zk = None
        if self.storage is not self.underlying:
            self.storage.close()  # closes the underlying storage too
        else:
            self.underlying.close()


def create_rainer(storage_url: str | CommitStorage = "sqlite://", port: int = 0, prefix: str = "",
                  zookeeper: str | KazooClient | None = None, zk_path: str | None = None,
                  auth: WriteAuth | str | None = None, publish_period: float = 30.0, publish_fuzz: float = 5.0,
                  address: str = "127.0.0.1", max_body: int = DEFAULT_MAX_BODY,
                  serialization: Serialization | SerializationChooser = JSON, access_log: bool = False,
                  heal: str = "exact") -> Rainer:
    """Build (not start) storage + keeper + mirror + auto-publisher + HTTP server.

    ``storage_url``: a SQLAlchemy URL (or a ready :class:`CommitStorage`). ``zookeeper``: a
    kazoo hosts string (or a started KazooClient, which stays the caller's) and ``zk_path`` the
    keeper's znode path; both or neither. ``auth``: a WriteAuth or ``"token:SECRET"`` /
    ``"basic:USER:PASSWORD"``. ``serialization`` validates POSTed payloads (JSON for every key by
    default; e.g. ``serialization_by_suffix``). ``access_log`` logs every request. ``heal``: how
the auto-publisher heals ZooKeeper (``"exact"``, or ``"forward"`` beside a JVM Rainer). Call
    ``start()`` on the result (or use it as a context manager).
    """
    if (zookeeper is None) != (zk_path is None):
        raise ConfigurationError("zookeeper and zk_path go together", zookeeper=zookeeper, zk_path=zk_path)
    if isinstance(storage_url, CommitStorage):
        underlying = storage_url
    else:
        underlying = SqlCommitStorage(storage_url, serialization=serialization)
    if isinstance(auth, str):
        auth = auth_from_spec(auth)
    options = {"port": port, "address": address, "prefix": prefix, "auth": auth, "max_body": max_body,
               "access_log": access_log}
    return Rainer(underlying, options, zookeeper, zk_path, publish_period, publish_fuzz, heal)
