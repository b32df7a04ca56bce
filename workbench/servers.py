"""What every workbench server shares: the ``Address`` it reports and the lifecycle it follows.

Every server (domain agents and brokers, zdb storage managers and transaction engines, the
commits and clusters HTTP servers, the inventory's application port and web server) is an
object with one lifecycle::

    with Server(..., port=0) as server:   # start(): returns once bound
        dial(server.address)              # an Address: the text a client dials, with host and port
    # stop() ran: the port is closed; stop() again does nothing

``serve_forever()`` starts the server if needed and blocks until ``stop()`` is called from
another thread (or a signal handler). ``ServerLifecycle`` holds that shape once: a server
implements ``_start()`` and ``_stop()``; ``serve_until_signalled(server)`` is what a ``serve``
command runs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

S = TypeVar("S", bound="ServerLifecycle")


class Address(str):
    """Where a server listens: the very string a client dials, with its ``host`` and ``port``.

    A ``str``, so it compares, prints, formats and travels (JSON, ZeroMQ endpoints) as the text
    each subsystem always used: ``"127.0.0.1:48004"`` for a TCP server, ``"tcp://127.0.0.1:5555"``
    for a ZeroMQ one, a path for a Unix socket (``port`` None there)::

        >>> address = Address.tcp("::1", 8080)
        >>> address, address.host, address.port
        ('[::1]:8080', '::1', 8080)
    """

    host: str
    port: int | None

    def __new__(cls, text: str, host: str, port: int | None) -> Address:
        address = super().__new__(cls, text)
        address.host, address.port = host, port
        return address

    @classmethod
    def tcp(cls, host: str, port: int) -> Address:
        """``host:port`` (an IPv6 host in brackets)."""
        return cls(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", host, port)

    @classmethod
    def endpoint(cls, uri: str) -> Address:
        """A ZeroMQ endpoint (``tcp://host:port``) as it is, host and port read from it."""
        rest = uri.partition("://")[2]
        host, _, port = rest.rpartition(":")
        if not port.isdigit():  # ipc:// or inproc://: a name, no port
            return cls(uri, rest, None)
        return cls(uri, host[1:-1] if host.startswith("[") and host.endswith("]") else host, int(port))

    @classmethod
    def unix(cls, path: str) -> Address:
        """A Unix socket's path (the host is the path, there is no port)."""
        return cls(path, path, None)

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickles with its host and port
        return str(self), self.host, self.port


class ServerLifecycle:
    """The lifecycle of a server: ``start()``, an idempotent ``stop()``, ``serve_forever()``, ``with``.

    A subclass implements ``_start()`` (bind and serve; return once bound) and ``_stop()`` (close
    what ``_start()`` opened; it runs at most once). The base owns the rest: ``start()`` and
    ``stop()`` take turns under one lock, so a ``stop()`` racing a ``start()`` waits for it and
    then stops what it opened; ``stop()`` sets ``_stopping`` (loops of the server poll it), runs
    ``_stop()`` once and then sets ``_stopped``, so a second ``stop()`` does nothing and returns
    once the first has finished. ``serve_forever()`` starts the server unless it was started or
    stopped and returns once ``stop()`` has finished.

    A subclass whose ``_start()`` accepts a server already stopped (rather than raising) has
    started again: it may be stopped again.
    """

    def __init__(self) -> None:
        # reentrant: a stop() reached from within start() or stop() (a failed start cleaning up,
        # a second signal) must not deadlock
        self._lifecycle = threading.RLock()
        self._stopping = threading.Event()  # stop() has begun
        self._stopped = threading.Event()  # stop() has finished
        self._started = False

    def _start(self) -> None:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def _stop(self) -> None:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def start(self: S) -> S:
        """Bind and serve; returns once bound."""
        with self._lifecycle:
            self._start()
            self._started = True
            if self._stopped.is_set():  # started again after a stop: the next stop() stops it
                self._stopping.clear()
                self._stopped.clear()
        return self

    def stop(self) -> None:
        """Stop serving and release what the server holds. Idempotent."""
        with self._lifecycle:
            if self._stopping.is_set():
                return
            self._stopping.set()
            try:
                self._stop()
            finally:
                self._stopped.set()

    def serve_forever(self) -> None:
        """Start if needed and block until ``stop()`` has run (from another thread or a signal)."""
        with self._lifecycle:
            if not self._started and not self._stopping.is_set():
                self.start()
        self._stopped.wait()

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_until_signalled(server: Any, announce: Callable[[], None] | None = None) -> None:
    """Start ``server``, call ``announce()``, and serve until SIGINT or SIGTERM has stopped it.

    What every ``serve`` command runs (on the main thread: only it may set signal handlers).
    ``server`` has ``start()``, an idempotent ``stop()`` and a ``serve_forever()`` that returns
    once stopped. The handlers stop the server on a thread of their own: a signal handler runs
    on the main thread wherever it is, maybe inside ``start()`` or a first ``stop()``, and the
    stopping thread waits its turn instead. The previous handlers are back on return.
    """
    server.start()

    def on_signal(signum: int, frame: object) -> None:
        threading.Thread(target=server.stop, name=f"stop-on-signal-{signum}").start()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if announce is not None:
            announce()
        server.serve_forever()
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["Address", "ServerLifecycle", "serve_until_signalled"]
