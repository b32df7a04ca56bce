"""pytest fixtures for the commits clients: real commits servers on SQLite, with or without ZooKeeper.

Import them into a test module::

    from workbench.testing.commits_servers import rainer, rainer_zk  # noqa: F401

* ``rainer``: a :class:`~workbench.commits.builder.Rainer` on a SQLite file in the test's temp
  dir, HTTP on a free loopback port under ``/diary``; no ZooKeeper. Stopped after the test.
* ``rainer_zk``: the same with a keeper in the test's own ZooKeeper chroot (``rainer_zk.zk_hosts``
  and ``rainer_zk.zk_path`` say where), a mirror and an auto-publisher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from workbench.commits.builder import Rainer, create_rainer

#: the path prefix the test servers serve under, as in the seed's examples
PREFIX = "/diary"
#: the keeper's znode path inside each test's chroot
ZK_PATH = "/rainer/diary"


def start_rainer(directory: Path, zookeeper: str | None = None, **options: object) -> Rainer:
    """A started Rainer on ``directory/commits.db`` (and ZooKeeper ``zookeeper`` at ZK_PATH if given)."""
    directory.mkdir(parents=True, exist_ok=True)
    options = {"port": 0, "prefix": PREFIX, **options}
    rainer = create_rainer(f"sqlite:///{directory / 'commits.db'}", zookeeper=zookeeper,
                           zk_path=ZK_PATH if zookeeper else None, **options)
    return rainer.start()


@pytest.fixture
def rainer(tmp_path: Path) -> Iterator[Rainer]:
    """A commits server on SQLite under /diary, no ZooKeeper."""
    server = start_rainer(tmp_path / "rainer")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rainer_zk(tmp_path: Path, zookeeper_chroot: str) -> Iterator[Rainer]:
    """A commits server on SQLite publishing to ZooKeeper (this test's chroot, path ZK_PATH)."""
    server = start_rainer(tmp_path / "rainer-zk", zookeeper=zookeeper_chroot)
    server.zk_hosts = zookeeper_chroot  # type: ignore[attr-defined] - where a mirror client connects
    server.zk_path = ZK_PATH  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
