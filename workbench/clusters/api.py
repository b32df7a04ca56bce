"""The HTTP API of workbench.clusters (tornado): datastores, clusters, nodes and backups as JSON."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from workbench.clusters.errors import ClustersError


class BackgroundHttpServer:
    """A tornado application served on its own thread and event loop.

    ``start()`` returns once the socket is bound (port 0 picks a free one: see ``port`` / ``url``);
    ``stop()`` closes the listener and open connections, then the loop. A context manager.
    """

    def __init__(self, application: tornado.web.Application, host: str = "127.0.0.1", port: int = 0,
                 name: str = "http") -> None:
        self.application = application
        self.host = host
        self.port = port
        self.name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: tornado.httpserver.HTTPServer | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        if self._server is None:
            raise ClustersError(f"{self.name} is not started", server=self.name)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BackgroundHttpServer:
        if self._thread is not None:
            raise ClustersError(f"{self.name} is already started", server=self.name)
        # Bind here, on the caller's thread, so a taken port is the caller's exception.
        try:
            sockets = tornado.netutil.bind_sockets(self.port, self.host, family=socket.AF_UNSPEC)
        except OSError as exc:
            raise ClustersError(f"{self.name} cannot listen on {self.host}:{self.port}: {exc.strerror}",
                                server=self.name, host=self.host, port=self.port) from None
        self.port = sockets[0].getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = tornado.httpserver.HTTPServer(self.application)
            self._server.add_sockets(sockets)
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, close connections, end the loop; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or self._stopped.is_set():
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.stop()
            await self._server.close_all_connections()
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        thread.join(timeout)

    def serve_forever(self) -> None:
        """Start if needed, then block until ``stop()`` is called from another thread."""
        if self._thread is None:
            self.start()
        self._stopped.wait()

    def __enter__(self) -> BackgroundHttpServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
