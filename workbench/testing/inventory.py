"""Fixtures for inventory servers: one in-process on SQLite, or real server processes for failover tests.

``inventory_server`` is an in-process ``InventoryServer`` (no web port) on a fresh SQLite file,
``inventory_client`` an ``InventoryClient`` connected to it. ``InventoryServerProcess`` runs
``python -m workbench.inventory serve`` as its own process (its own process group, so ``kill9()``
is a crash) for tests with several servers on one database.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from workbench.testing.process import ServiceProcess


class InventoryServerProcess(ServiceProcess):
    """``python -m workbench.inventory serve --store URL --port P --web-port W --server-id NAME ...``.

    No web server unless ``web_port`` is given; ready once the application port answers (and the
    web port, when there is one).
    """

    name = "inventory"
    start_timeout = 60.0

    def __init__(self, workdir: Path, store_url: str, server_id: str, *, master: bool = False,
                 heartbeat: float = 0.2, takeover_after: float = 2.0, web_port: int | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.name = f"inventory-{server_id}"
        super().__init__(workdir)
        self.store_url = store_url
        self.server_id = server_id
        self.master = master
        self.heartbeat = heartbeat
        self.takeover_after = takeover_after
        self.web_port = web_port
        self.extra = list(extra)

    def command(self) -> Sequence[str]:
        argv = [sys.executable, "-m", "workbench.inventory", "serve", "--store", self.store_url,
                "--port", str(self.port), "--web-port", str(-1 if self.web_port is None else self.web_port), "--server-id", self.server_id,
                "--heartbeat", str(self.heartbeat), "--takeover-after", str(self.takeover_after),
                "--poll", "0.05", "-v", *self.extra]
        if self.master:
            argv += ["--master", self.store_url]
        return argv

    def is_ready(self) -> bool:
        from workbench.ports import port_open

        return super().is_ready() and (self.web_port is None or port_open(self.host, self.web_port))

    def kill9(self) -> None:
        """SIGKILL the server's process group: no shutdown code runs, exactly like a crash."""
        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.fixture
def inventory_server(tmp_path: Path) -> Iterator[object]:
    """An in-process primary ``InventoryServer`` on a SQLite file, application port on a free port."""
    from workbench.inventory.server import InventoryServer

    server = InventoryServer(f"sqlite:///{tmp_path}/inventory.db", port=0, web_port=None, heartbeat=0.2,
                             takeover_after=2.0, poll_interval=0.05, app_timeout=60.0,
                             workdir=str(tmp_path / "apps")).start()
    yield server
    server.stop()


@pytest.fixture
def inventory_client(inventory_server: object) -> Iterator[object]:
    """An ``InventoryClient`` connected to ``inventory_server``."""
    from workbench.inventory.client import InventoryClient

    host, port = inventory_server.address  # type: ignore[attr-defined]
    with InventoryClient(f"{host}:{port}", timeout=60.0) as client:
        yield client


__all__ = ["InventoryServerProcess", "inventory_client", "inventory_server"]
