"""Fixtures for inventory servers: one in-process on SQLite, or real server processes for failover tests.

``inventory_server`` is an in-process ``InventoryServer`` (no web port) on a fresh SQLite file,
``inventory_client`` an ``InventoryClient`` connected to it. ``InventoryServerProcess`` runs
``python -m workbench.inventory serve`` as its own process (its own process group, so ``kill9()``
is a crash) for tests with several servers on one database.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from workbench.testing.process import ServiceProcess


class InventoryServerProcess(ServiceProcess):
    """``python -m workbench.inventory serve --store URL --socket PATH --web-port W --server-id NAME ...``.

    The application socket is ``socket_path`` (default: ``app.sock`` in a new short temp dir). No web server
    unless ``web_port`` is given; ready once the application socket answers (and the web port,
    when there is one).
    """

    name = "inventory"
    start_timeout = 60.0

    def __init__(self, workdir: Path, store_url: str, server_id: str, *, master: bool = False,
                 heartbeat: float = 0.2, takeover_after: float = 2.0, web_port: int | None = None,
                 extra: Sequence[str] = (), socket_path: str | Path | None = None) -> None:
        self.name = f"inventory-{server_id}"
        super().__init__(workdir)
        self.store_url = store_url
        self.server_id = server_id
        self.master = master
        self.heartbeat = heartbeat
        self.takeover_after = takeover_after
        self.web_port = web_port
        self.extra = list(extra)
        # a socket path has at most 107 bytes: a test's deep temp dir may not fit, a short dir does
        self._socket_dir = None if socket_path else tempfile.mkdtemp(prefix="inv-")
        self.socket_path = str(socket_path or Path(self._socket_dir) / "app.sock")

    def command(self) -> Sequence[str]:
        argv = [sys.executable, "-m", "workbench.inventory", "serve", "--store", self.store_url,
                "--socket", self.socket_path, "--web-port", str(-1 if self.web_port is None else self.web_port), "--server-id", self.server_id,
                "--heartbeat", str(self.heartbeat), "--takeover-after", str(self.takeover_after),
                "--poll", "0.05", "-v", *self.extra]
        if self.master:
            argv += ["--master", self.store_url]
        return argv

    def is_ready(self) -> bool:
        from workbench.ports import port_open

        return self._socket_answers() and (self.web_port is None or port_open(self.host, self.web_port))

    def _socket_answers(self) -> bool:
        import socket

        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    @property
    def address(self) -> str:  # type: ignore[override]
        """The application socket's path (what ``InventoryClient`` and ``--server`` take)."""
        return self.socket_path

    def stop(self, timeout: float = 15.0) -> None:
        super().stop(timeout)
        if self._socket_dir is not None:  # made again by the server if it starts again
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def kill9(self) -> None:
        """SIGKILL the server's process group: no shutdown code runs, exactly like a crash."""
        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def inventory_server(tmp_path: Path) -> Iterator[object]:
    """An in-process primary ``InventoryServer`` on a SQLite file, application socket in a private dir."""
    from workbench.inventory.server import InventoryServer

    server = InventoryServer(f"sqlite:///{tmp_path}/inventory.db", web_port=None, heartbeat=0.2,
                             takeover_after=2.0, poll_interval=0.05, app_timeout=60.0,
                             workdir=str(tmp_path / "apps")).start()
    yield server
    server.stop()


@pytest.fixture
def inventory_client(inventory_server: object) -> Iterator[object]:
    """An ``InventoryClient`` connected to ``inventory_server``."""
    from workbench.inventory.client import InventoryClient

    with InventoryClient(inventory_server.address, timeout=60.0) as client:  # type: ignore[attr-defined]
        yield client


__all__ = ["InventoryServerProcess", "inventory_client", "inventory_server"]
