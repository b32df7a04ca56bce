"""What every workbench server shares: the ``Address`` it reports and the lifecycle it follows.

Every server (domain agents and brokers, zdb storage managers and transaction engines, the
commits and clusters HTTP servers, the inventory's application port and web server) is an
object with one lifecycle::

    with Server(..., port=0) as server:   # start(): returns once bound
        dial(server.address)              # an Address: the text a client dials, with host and port
    # stop() ran: the port is closed; stop() again does nothing

``serve_forever()`` starts the server if needed and blocks until ``stop()`` is called from
another thread (or a signal handler).
"""

from __future__ import annotations

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
    """The context manager of a server with ``start()`` (returning self) and an idempotent ``stop()``."""

    def start(self: S) -> S:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


__all__ = ["Address", "ServerLifecycle"]
