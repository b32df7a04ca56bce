"""A client of an inventory web server: ``/data`` pages as Python values, ``/events`` as listener events.

::

    client = WebClient("http://127.0.0.1:8081")
    client.data("inventory/datasets", dataset="/Higgs/*")["datasets"]
    client.add_listener(lambda event: print(event.kind, event.args))   # object_updated(data)...
    client.close()

Events come from the server's ``/events`` stream, read on a thread of the client's own and
delivered through ``workbench.events`` like every other client's. When the stream breaks the
client emits ``disconnected(reason)``, reconnects with backoff, and emits ``reconnected()``
once live again (whatever changed in between was not seen: re-read what you show).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

from workbench.errors import InventoryError
from workbench.events import EventDispatcher, EventSource

log = logging.getLogger(__name__)

RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class WebClientError(InventoryError):
    """The server answered an error (fields: status, url) or could not be reached."""


class WebClient(EventSource):
    """``/data`` requests and the ``/events`` stream of one inventory web server."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebClientError("not an http(s):// address of an inventory web server", url=url)
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._events = EventDispatcher(f"inventory-web {self.url}")
        self._stream_thread: threading.Thread | None = None
        self._stream_connection: http.client.HTTPConnection | None = None
        self._subscribed = threading.Event()
        self._ever_subscribed = False
        self._closed = threading.Event()
        self._lock = threading.Lock()

    # -- requests ---------------------------------------------------------------------------------
    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request; unreachable servers raise ``WebClientError``."""
        connection = self._connection(self.timeout)
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.getheader("Content-Type", ""), reply.read()
        except (OSError, http.client.HTTPException) as exc:
            raise WebClientError(f"cannot reach the inventory web server: {exc}", url=self.url + path) from None
        finally:
            connection.close()

    def data(self, page: str, body: Any = None, **parameters: Any) -> Any:
        """The ``data`` of ``/data/<page>``: GET with ``parameters``, or POST of the JSON ``body``.

        It asks for ``format=workbench`` (this project's answers) unless ``format`` is given. An
        error envelope raises ``WebClientError`` with its message and status.
        """
        # this client reads this project's answers (Dynamo's are the server's default)
        parameters.setdefault("format", "workbench")
        query = urlencode({k: v for k, v in parameters.items() if v is not None}, doseq=True)
        path = f"/data/{page}" + (f"?{query}" if query else "")
        status, content_type, raw = self.request("POST" if body is not None else "GET", path, body)
        try:
            envelope = json.loads(raw)
        except ValueError:
            raise WebClientError(f"the server answered {status} without JSON", status=status, url=self.url + path) \
                from None
        if status != 200 or envelope.get("result") != "OK":
            raise WebClientError(str(envelope.get("message") or f"HTTP {status}"), status=status, url=self.url + path)
        return envelope.get("data")

    def connection_status(self) -> str:
        """'connected' when the server answers its stats, else why not."""
        try:
            self.data("inventory/stats")
        except WebClientError as exc:
            return f"no answer ({exc.message})"
        return "connected"

    # -- events -----------------------------------------------------------------------------------
    def add_listener(self, listener: Any, wait: float = 10.0) -> None:
        """Subscribe; the first listener opens the event stream, and this waits until it is live."""
        super().add_listener(listener)
        with self._lock:
            if self._stream_thread is None and not self._closed.is_set():
                self._stream_thread = threading.Thread(target=self._follow, daemon=True,
                                                       name=f"inventory-events-{self.port}")
                self._stream_thread.start()
        if not self._subscribed.wait(wait):
            raise WebClientError("the server's event stream did not open", url=self.url + "/events")

    def _follow(self) -> None:
        attempt = 0
        while not self._closed.is_set():
            try:
                self._stream()
                attempt = 0
                reason = "the server ended the stream"
            except (OSError, http.client.HTTPException, WebClientError) as exc:
                reason = str(exc)
            if self._closed.is_set():
                return
            self._subscribed.clear()
            self._events.emit("disconnected", reason)
            delay = RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)]
            attempt += 1
            if self._closed.wait(delay):
                return

    def _stream(self) -> None:
        connection = self._connection(None)
        self._stream_connection = connection
        try:
            connection.request("GET", "/events", headers={"Accept": "text/event-stream"})
            reply = connection.getresponse()
            if reply.status != 200:
                raise WebClientError(f"event stream refused: HTTP {reply.status}", status=reply.status)
            kind, data = "message", []
            first = True
            while not self._closed.is_set():
                raw = reply.readline()
                if not raw:
                    return
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith(":"):
                    if first:
                        first = False
                        if self._ever_subscribed:
                            self._events.emit("reconnected")
                        self._ever_subscribed = True
                        self._subscribed.set()
                    continue
                if line:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        kind = value
                    elif field == "data":
                        data.append(value)
                    continue
                if data:
                    try:
                        args = json.loads("\n".join(data))
                    except ValueError:
                        log.warning("%s: undecodable event %s", self.url, kind)
                    else:
                        self._events.emit(kind, *(args if isinstance(args, list) else [args]))
                kind, data = "message", []
        finally:
            self._stream_connection = None
            connection.close()

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop following events and close the dispatcher (listeners get ``closed()``). Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        connection = self._stream_connection
        if connection is not None and connection.sock is not None:
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in readline
            except OSError:
                pass
        if self._stream_thread is not None:
            self._stream_thread.join(5)
        self._events.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __enter__(self) -> "WebClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["WebClient", "WebClientError"]
