"""A tornado application served on a daemon thread of its own: the base of every workbench HTTP server.

The commits server, the clusters API, the inventory's web server and the test stand-ins all
serve through one ``HttpServer``::

    http = HttpServer(application, "127.0.0.1", 0, name="clusters-api").start()   # bound on return
    http.address, http.url          # '127.0.0.1:50123', 'http://127.0.0.1:50123'
    http.stop()                     # listener closed, open connections closed, loop ended

The socket is bound on the caller's thread, so a port already taken is the caller's error
(``bind_error``, a ``ServerBindError`` unless the owner names its own subsystem's class).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from workbench.errors import WorkbenchError
from workbench.servers import Address, ServerLifecycle

#: seconds ``stop()`` waits for the loop's thread to end
STOP_JOIN_SECONDS = 10.0


class ServerBindError(WorkbenchError):
    """A server could not listen on its address (fields: server, host, port)."""


#: makes the error of a failed bind from its message and fields (server, host, port)
BindErrorFactory = Callable[..., WorkbenchError]


class HttpServer(ServerLifecycle):
    """Serves ``application`` on ``host:port`` (0: a free port) from a daemon thread's event loop.

    ``ssl_context`` serves HTTPS; ``options`` go to tornado's ``HTTPServer`` (``max_body_size``,
    ``idle_connection_timeout``...); ``before_close`` is awaited on the loop when stopping, after
    the listener is closed and before the open connections are (to end long-lived responses
    cleanly). ``start()`` twice is a ``bind_error`` naming the server; ``stop()`` is idempotent.
    """

    def __init__(self, application: tornado.web.Application, host: str = "127.0.0.1", port: int = 0, *,
                 name: str = "http", ssl_context: ssl.SSLContext | None = None,
                 bind_error: BindErrorFactory = ServerBindError,
                 before_close: Callable[[], Awaitable[None]] | None = None, **options: Any) -> None:
        super().__init__()
        self.application = application
        self.host = host
        self.port = port
        self.name = name
        self.ssl_context = ssl_context
        self.bind_error = bind_error
        self.before_close = before_close
        self.options = options
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._loop_ended = threading.Event()

    @property
    def address(self) -> Address:
        """``host:port`` with the real port once started."""
        return Address.tcp(self.host, self.port)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """``http(s)://host:port`` (the real port once started)."""
        return f"{self.scheme}://{self.address}"

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _start(self) -> None:
        """Bind, then serve on a daemon thread; returns once the socket listens."""
        if self._thread is not None:
            raise self.bind_error(f"{self.name} is already started", server=self.name, host=self.host,
                                  port=self.port)
        try:
            sockets = tornado.netutil.bind_sockets(self.port, self.host, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise self.bind_error(f"{self.name} cannot listen on {self.address}: {exc.strerror or exc}",
                                  server=self.name, host=self.host, port=self.port) from None
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(sockets, ready, failure), name=self.name,
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise self.bind_error(f"{self.name} failed to start: {failure[0]}", server=self.name, host=self.host,
                                  port=self.port) from failure[0]

    def _run(self, sockets: list[socket.socket], ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = tornado.httpserver.HTTPServer(self.application, ssl_options=self.ssl_context,
                                                         **self.options)
            self._server.add_sockets(sockets)
        except BaseException as exc:  # reported by start()
            failure.append(exc)
            for sock in sockets:
                sock.close()
            loop.close()
            self._loop_ended.set()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop_ended.set()

    def _stop(self) -> None:
        """Stop listening, close the open connections, end the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._loop_ended.is_set():
            return

        async def shutdown() -> None:
            try:
                assert self._server is not None
                self._server.stop()
                if self.before_close is not None:
                    await self.before_close()
                await self._server.close_all_connections()
            finally:
                loop.stop()

        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        except RuntimeError:  # the loop closed meanwhile: a concurrent stop() got there first
            return
        if thread is not threading.current_thread():
            thread.join(STOP_JOIN_SECONDS)


__all__ = ["HttpServer", "ServerBindError"]
