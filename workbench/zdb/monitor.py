"""Live events of a zdb database: follows the storage manager's change stream, for dashboards.

::

    monitor = ZdbMonitor("tcp://127.0.0.1:5559")
    monitor.add_listener(listener)   # record_applied(record), server_status(status), closed()
    ...
    monitor.close()

``record_applied`` gets each write as ``{"seq", "kind", "ops"}`` in order; ``server_status``
gets the SM's status about twice a second (keys, clients, seq, snapshot seq, replicas and lag).
"""

from __future__ import annotations

import threading
from typing import Any

import zmq

from workbench.errors import ZdbError
from workbench.events import EventDispatcher, EventSource
from workbench.zdb.client import Client
from workbench.zdb.protocol import decode


class ZdbMonitor(EventSource):
    """Subscribes to a storage manager's change stream and emits what it sees as events."""

    def __init__(self, uri: str, primary_options: dict[str, Any] | None = None, **client_options: Any) -> None:
        """``primary_options``: the Client options for the storage manager behind a transaction
        engine (e.g. the CURVE member keys of a domain's database), when they are not the engine's."""
        self.uri = uri
        self._client = Client(uri, **client_options)
        self._stream_credentials = self._credentials_of(self._client, client_options)
        try:
            self.status: dict[str, Any] = self._client.status()
        except BaseException:
            self._client.close()
            raise
        # A transaction engine names its storage manager's stream too, but that stream checks the
        # SM's credentials (a domain database's member keys), which the engine's may not be.
        own_stream = None if self.status.get("primary") else self.status.get("publish")
        self.publish_address = own_stream or self._primary_publish_address(client_options, primary_options)
        self._last_seq: int = self.status["seq"]
        self._events = EventDispatcher(f"zdb {uri}")
        self._stop = threading.Event()
        self._context = zmq.Context()
        self._subscriber = self._context.socket(zmq.SUB)
        self._subscriber.linger = 0
        # The stream checks the same login (or CURVE key) as the requests of its server.
        server_key, keys, login = self._stream_credentials
        if server_key:
            from workbench.zdb.transport import secure_client

            secure_client(self._subscriber, server_key, keys)
        elif login is not None:
            from workbench.zdb.transport import login_client

            login_client(self._subscriber, *login)
        self._subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        self._subscriber.connect(self.publish_address)
        self._thread = threading.Thread(target=self._follow, name=f"zdb-monitor-{uri}", daemon=True)
        self._thread.start()

    def _primary_publish_address(self, client_options: dict[str, Any],
                                 primary_options: dict[str, Any] | None) -> str:
        """A transaction engine publishes nothing itself: follow the stream of its storage manager."""
        primary = self.status.get("primary")
        if not primary:
            self._client.close()
            raise ZdbError("this server publishes no change stream", uri=self.uri)
        # The engine's own options reach its SM unless told otherwise (e.g. a domain database's
        # CURVE member keys); a client with a login connects without one to an SM that takes none.
        options = {"timeout": client_options.get("timeout", 10.0), **primary_options} \
            if primary_options is not None else client_options
        try:
            with Client(primary, **options) as primary_client:
                address = primary_client.status()["publish"]
                self._stream_credentials = self._credentials_of(primary_client, options)
                return address
        except ZdbError:
            pass
        self._client.close()
        raise ZdbError("cannot reach the storage manager behind this engine", uri=self.uri, primary=primary)

    @staticmethod
    def _credentials_of(client: Client, options: dict[str, Any]) -> tuple[str | None, Any, tuple[str, str] | None]:
        """What a subscriber to ``client``'s server gives: its CURVE keys, or the dba login it needs."""
        user = options.get("user")
        login = None if user is None or client.server_takes_no_login else (user, options.get("password") or "")
        return client.server_key, client.keys, login

    def initial_events(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [("server_status", (dict(self.status),))]

    def _follow(self) -> None:
        while not self._stop.is_set():
            if not self._subscriber.poll(200):
                continue
            try:
                message = decode(self._subscriber.recv(), limit=1 << 62)
            except Exception:  # noqa: BLE001 - a bad frame must not end monitoring
                continue
            if "heartbeat" in message:
                self._catch_up(message["heartbeat"])
                if isinstance(message.get("status"), dict):
                    self.status = message["status"]
                    self._events.emit("server_status", dict(self.status))
            else:
                self._catch_up(message["seq"] - 1)
                self._record(message)
        self._subscriber.close()
        self._context.term()

    def _record(self, record: dict[str, Any]) -> None:
        if record["seq"] > self._last_seq:
            self._last_seq = record["seq"]
            self._events.emit("record_applied", record)

    def _catch_up(self, seq: int) -> None:
        """Fetch records we missed (the stream's first messages, or a gap) up to ``seq``."""
        if seq <= self._last_seq:
            return
        try:
            result, data = self._client.request("sync", since=self._last_seq)
        except Exception:  # noqa: BLE001 - try again at the next heartbeat
            return
        if "snapshot" in result:  # too far behind for records: start over from here
            self._last_seq = result["snapshot"]["seq"]
            return
        for line in (data or b"").split(b"\n"):
            if line:
                self._record(decode(line, limit=1 << 62))

    def close(self) -> None:
        """Stop following, deliver ``closed()`` to listeners, close the connection. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self._events.close()
        self._client.close()

    def __enter__(self) -> "ZdbMonitor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
