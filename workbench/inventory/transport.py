"""Framed JSON over a Unix socket: a threaded server that knows each caller's uid, and a blocking connection.

The kernel reports who connected (``SO_PEERCRED``: pid, uid, gid); the server hands that
``Caller`` to its handler with every request, and to ``on_connect`` first, which may refuse the
connection (its error is the one reply) before a byte of the caller's is read::

    with FrameServer("/tmp/app.sock", handler=lambda message, caller: {"ok": True}).start() as server:
        with Connection(server.address) as conn:
            conn.request({"op": "status"})

Connections are bounded per uid, so one user's idle connections cannot lock the others out.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import struct
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from workbench.errors import InventoryError
from workbench.framing import Acceptor
from workbench.inventory.access import Caller
from workbench.inventory.errors import TransportError
from workbench.inventory.protocol import FrameDecoder, ProtocolError, encode_frame, error_reply
from workbench.servers import Address, ServerLifecycle

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Caller], dict[str, Any]]
ConnectCheck = Callable[[Caller], None]
_PEERCRED = struct.Struct("3i")
#: connections one uid may hold open at once (each is a thread of the server)
MAX_CONNECTIONS_PER_UID = 32
#: connections the kernel queues before the server accepts them
LISTEN_BACKLOG = 5


def peer_caller(sock: socket.socket) -> Caller:
    """The process at the other end of a connected Unix socket, as the kernel reports it."""
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Caller.of_uid(uid, gid, pid)


class _CallerSession:
    """One accepted connection: who is calling (``SO_PEERCRED``), then its requests, one reply each."""

    def __init__(self, server: FrameServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    def run(self) -> None:
        try:
            self._handle()
        finally:
            try:
                self.sock.shutdown(socket.SHUT_WR)  # our last reply goes out before the close
            except OSError:
                pass
            self.sock.close()

    def _handle(self) -> None:
        sock = self.sock
        sock.setblocking(True)
        try:
            caller = peer_caller(sock)
        except OSError:
            return
        if not self.server.enter(caller):
            self._send(error_reply(TransportError("too many connections of this user", uid=caller.uid,
                                                  reason="connections")))
            return
        try:
            if self.server.on_connect is not None:
                try:
                    self.server.on_connect(caller)
                except InventoryError as exc:
                    self._send(error_reply(exc))
                    return
            self._serve(sock, caller)
        finally:
            self.server.leave(caller)

    def _serve(self, sock: socket.socket, caller: Caller) -> None:
        decoder = FrameDecoder()
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
                    reply = self.server.handler(message, caller)
                except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
                    if not isinstance(exc, InventoryError):
                        log.exception("request %r failed", message.get("op"))
                    reply = error_reply(exc)
                if not self._send(reply):
                    return

    def _send(self, reply: dict[str, Any]) -> bool:
        try:
            self.sock.sendall(encode_frame(reply))
            return True
        except (OSError, ProtocolError) as exc:
            log.debug("cannot answer: %s", exc)
            return False


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise TransportError("the socket path exists and is not a socket", address=str(path), reason="bind")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(str(path))
    except OSError:
        if info.st_uid not in (os.getuid(), 0) and os.getuid() != 0:
            raise TransportError("a stale socket of another user is in the way", address=str(path),
                                 owner=info.st_uid, reason="bind") from None
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise TransportError("another server listens on this socket", address=str(path), reason="in-use")


class FrameServer(ServerLifecycle):
    """Serves framed JSON requests on a Unix socket at ``path``; ``handler(message, caller) -> reply``.

    The socket file is made connectable by every local user (mode 0666): who may do what is
    the handler's decision, from the uid the kernel reports, so a refused caller gets a clear
    error instead of a bare permission failure. ``stop()`` removes the file; connections open
    then finish on their own threads.
    """

    def __init__(self, path: str | os.PathLike[str], handler: Handler, on_connect: ConnectCheck | None = None,
                 mode: int = 0o666) -> None:
        super().__init__()
        self.path = Path(path)
        self.handler = handler
        self.on_connect = on_connect
        self.mode = mode
        self._acceptor: Acceptor | None = None
        self._inode = -1
        self._open: Counter[int] = Counter()
        self._open_lock = threading.Lock()

    def _start(self) -> None:
        """Bind the socket and accept on a background thread; returns once listening."""
        if self._acceptor is not None:
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale_socket(self.path)
            listener.bind(str(self.path))
            listener.listen(LISTEN_BACKLOG)
            os.chmod(self.path, self.mode)
            self._inode = self.path.lstat().st_ino
        except OSError as exc:
            listener.close()
            raise TransportError(f"cannot listen: {exc}", address=str(self.path), reason="bind") from exc
        except BaseException:
            listener.close()
            raise
        self._acceptor = Acceptor(listener, self._admit, name="inventory-app-port").start()

    def _admit(self, sock: socket.socket, peer: object) -> Callable[[], None]:
        return _CallerSession(self, sock).run

    def enter(self, caller: Caller) -> bool:
        """Count a connection of ``caller``'s uid; False when that uid holds its limit already."""
        with self._open_lock:
            if self._open[caller.uid] >= MAX_CONNECTIONS_PER_UID:
                return False
            self._open[caller.uid] += 1
            return True

    def leave(self, caller: Caller) -> None:
        with self._open_lock:
            self._open[caller.uid] -= 1
            if self._open[caller.uid] <= 0:
                del self._open[caller.uid]

    @property
    def address(self) -> Address:
        """The socket's path."""
        assert self._acceptor is not None, "not started"
        return Address.unix(str(self.path))

    def _stop(self) -> None:
        """Stop accepting and remove the socket file."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.stop()
            try:
                # only our own file: a server started since on the same path keeps its socket
                if self.path.lstat().st_ino == self._inode:
                    self.path.unlink()
            except OSError:
                pass


class Connection:
    """A blocking client connection to a socket path: ``request(message)`` sends one frame, waits for the reply.

    With ``trusted_uids`` the server must run as one of them (its uid from ``SO_PEERCRED``):
    anyone may bind a path in a shared directory first, and a script sent there is disclosed.
    """

    def __init__(self, path: str, timeout: float | None = 30.0, trusted_uids: set[int] | None = None) -> None:
        self.address = path
        self.label = path
        self.timeout = timeout
        self._decoder = FrameDecoder()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise TransportError(f"cannot connect to the inventory server: {exc}", address=path,
                                 reason="connect") from exc
        if trusted_uids is not None:
            server = peer_caller(self._sock)
            if server.uid not in trusted_uids:
                self._sock.close()
                raise TransportError(f"the server on {path} runs as {server.name}, neither root nor you: not "
                                     "trusted (name its socket with --server to use it anyway)", address=path,
                                     server_uid=server.uid, reason="untrusted-server")

    def request(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        with self._lock:
            try:
                self._sock.settimeout(timeout if timeout is not None else self.timeout)
                try:
                    self._sock.sendall(encode_frame(message))
                except OSError:
                    # the server may have refused us at connect and hung up: its one reply explains why
                    pass
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


__all__ = ["Connection", "FrameServer", "MAX_CONNECTIONS_PER_UID", "TransportError", "peer_caller"]
