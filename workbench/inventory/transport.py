"""Framed JSON over TCP: a threaded server calling a handler per request, and a blocking connection.

::

    with FrameServer(("127.0.0.1", 0), handler=lambda message: {"ok": True}).start() as server:
        with Connection(server.address) as conn:
            conn.request({"op": "status"})
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Any, Callable

from workbench.errors import InventoryError
from workbench.inventory.protocol import FrameDecoder, ProtocolError, encode_frame, error_reply

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class TransportError(InventoryError):
    """A connection failed: refused, closed or timed out (fields: address, reason)."""


class _RequestHandler(socketserver.BaseRequestHandler):
    server: _ThreadingServer

    def handle(self) -> None:
        decoder = FrameDecoder()
        sock: socket.socket = self.request
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                messages = decoder.feed(data)
            except ProtocolError as exc:
                # the stream cannot be resynchronized: answer once, then hang up
                self._send(error_reply(exc))
                return
            for message in messages:
                try:
                    reply = self.server.handler(message)
                except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
                    if not isinstance(exc, InventoryError):
                        log.exception("request %r failed", message.get("op"))
                    reply = error_reply(exc)
                if not self._send(reply):
                    return

    def _send(self, reply: dict[str, Any]) -> bool:
        try:
            self.request.sendall(encode_frame(reply))
            return True
        except (OSError, ProtocolError) as exc:
            log.debug("cannot answer: %s", exc)
            return False


class _ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        self.handler = handler
        super().__init__(address, _RequestHandler)


class FrameServer:
    """Serves framed JSON requests on a TCP address; ``handler(message) -> reply`` runs per request."""

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        self.requested = address
        self.handler = handler
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FrameServer:
        try:
            self._server = _ThreadingServer(self.requested, self.handler)
        except OSError as exc:
            raise TransportError(f"cannot listen: {exc}", address=f"{self.requested[0]}:{self.requested[1]}",
                                 reason="bind") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="inventory-app-port", daemon=True)
        self._thread.start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FrameServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Connection:
    """A blocking client connection: ``request(message)`` sends one frame and waits for the reply."""

    def __init__(self, address: tuple[str, int], timeout: float | None = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._decoder = FrameDecoder()
        self._lock = threading.Lock()
        label = f"{address[0]}:{address[1]}"
        try:
            self._sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise TransportError(f"cannot connect to the inventory server: {exc}", address=label,
                                 reason="connect") from exc
        self.label = label

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        with self._lock:
            try:
                self._sock.settimeout(timeout if timeout is not None else self.timeout)
                self._sock.sendall(encode_frame(message))
                while True:
                    data = self._sock.recv(65536)
                    if not data:
                        raise TransportError("the server closed the connection", address=self.label,
                                             reason="closed")
                    replies = self._decoder.feed(data)
                    if replies:
                        return replies[0]
            except socket.timeout as exc:
                raise TransportError("no answer from the inventory server in time", address=self.label,
                                     reason="timeout") from exc
            except OSError as exc:
                raise TransportError(f"connection to the inventory server failed: {exc}", address=self.label,
                                     reason="reset") from exc

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = ["Connection", "FrameServer", "TransportError"]
