"""Length-prefixed frames and the thread-per-connection accept loop of the socket servers.

The domain's TLS port (XML bodies) and the inventory's application port (JSON bodies) frame
their messages alike: a 4-byte big-endian length, then that many bytes. ``FrameSplitter`` cuts
a byte stream into bodies and refuses a length beyond its limit before buffering a byte of the
body, so a peer cannot make a server allocate what it announces; each wire format decodes the
bodies and names the error::

    splitter = FrameSplitter(limit=1024, too_large=lambda size, limit: ValueError(size))
    list(splitter.bodies(frame(b"hello") + frame(b"")))    # [b'hello', b'']

``Acceptor`` accepts on a listening socket from a thread of its own and runs every admitted
connection on a daemon thread of its own, at most ``max_connections`` at once (beyond that, a
new connection is closed at once, before any of it is read).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: the length prefix of every frame
LENGTH = struct.Struct(">I")


def frame(body: bytes) -> bytes:
    """``body`` with its length prefix (the caller has checked the size against its own limit)."""
    return LENGTH.pack(len(body)) + body


class FrameSplitter:
    """Feeds on a byte stream and yields each whole frame's body; ``too_large(size, limit)`` is raised
    for a length over ``limit``, as soon as the length is read."""

    def __init__(self, limit: int, too_large: Callable[[int, int], Exception]) -> None:
        self.limit = limit
        self.too_large = too_large
        self._buffer = bytearray()

    def bodies(self, data: bytes) -> Iterator[bytes]:
        self._buffer += data
        while len(self._buffer) >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self._buffer)
            if length > self.limit:
                # Refuse before buffering the body: the sender may be trying to exhaust memory.
                raise self.too_large(length, self.limit)
            if len(self._buffer) < LENGTH.size + length:
                return
            body = bytes(self._buffer[LENGTH.size:LENGTH.size + length])
            del self._buffer[:LENGTH.size + length]
            yield body

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole frame (non-zero at EOF: a torn frame)."""
        return len(self._buffer)


#: called on the accept thread for a new connection: what to run on its own thread, or None
#: when the connection was refused (and closed) instead
Admit = Callable[[socket.socket, Any], Callable[[], None] | None]
#: called on the accept thread for a connection refused at the limit, before it is closed
Refuse = Callable[[socket.socket, Any], None]


def peer_label(peer: Any) -> str:
    """``host:port`` of a TCP peer (IPv6 in brackets), the path (often empty) of a Unix one."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return peer.decode(errors="replace") if isinstance(peer, bytes) else str(peer)


class Acceptor:
    """Accepts on ``listener`` (bound and listening) and runs ``admit(sock, peer)``'s work on a thread each.

    A connection beyond ``max_connections`` live ones is not admitted: ``refuse(sock, peer)`` sees
    it (to make room for the next one), then it is closed. ``tick`` seconds (None: never) bound how long the loop sleeps between calls of ``on_tick``,
    which expires what must not wait for the next connection. ``stop()`` ends the loop and closes
    the listener; the connections' threads are the owner's to end (``join``).
    """

    def __init__(self, listener: socket.socket, admit: Admit, *, name: str, max_connections: int | None = None,
                 refuse: Refuse | None = None, tick: float | None = None,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.listener = listener
        self.admit = admit
        self.name = name
        self.max_connections = max_connections
        self.refuse = refuse
        self.tick = tick
        self.on_tick = on_tick
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._wakeup = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._closed = False
        listener.setblocking(False)

    @property
    def connections(self) -> int:
        """Connections whose thread still runs."""
        with self._lock:
            return len(self._threads)

    def start(self) -> Acceptor:
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close the listener (idempotent; new connections are refused after it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._wakeup[1].send(b"x")
            thread.join()
        self.listener.close()
        for end in self._wakeup:
            end.close()

    def join(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for the connections' threads; the names of those still running."""
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]

    def _loop(self) -> None:
        listener, wakeup = self.listener, self._wakeup[0]
        # poll(), not select(): the listener's descriptor may be above FD_SETSIZE in a busy process.
        poller = select.poll() if hasattr(select, "poll") else None
        if poller is not None:
            poller.register(listener, select.POLLIN)
            poller.register(wakeup, select.POLLIN)
        while True:
            if poller is not None:
                ready = {fd for fd, _ in poller.poll(None if self.tick is None else int(self.tick * 1000))}
                woken = wakeup.fileno() in ready
            else:
                ready_list = select.select([listener, wakeup], [], [], self.tick)[0]
                woken = wakeup in ready_list
                ready = {listener.fileno()} if listener in ready_list else set()
            if woken:
                return
            if self.on_tick is not None:
                self.on_tick()
            if listener.fileno() not in ready:
                continue
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                # Typically out of descriptors: back off instead of spinning, the backlog waits.
                log.warning("%s: accept failed: %s", self.name, exc.strerror or exc)
                time.sleep(0.1)
                continue
            self._admit(sock, peer)

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        # Only this thread adds threads: the count cannot grow between the check and the start.
        with self._lock:
            full = self.max_connections is not None and len(self._threads) >= self.max_connections
        if full:
            if self.refuse is not None:
                self.refuse(sock, peer)
            log.warning("%s: at its limit of %d connections, refusing %s", self.name, self.max_connections,
                        peer_label(peer))
            sock.close()
            return
        work = self.admit(sock, peer)
        if work is None:
            return
        thread = threading.Thread(target=self._run, args=(work,), daemon=True,
                                  name=f"{self.name}-conn-{peer_label(peer)}")
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())


__all__ = ["Acceptor", "FrameSplitter", "LENGTH", "frame", "peer_label"]
