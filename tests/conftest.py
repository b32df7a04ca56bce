"""Fixtures shared by the tests: in-process zdb servers on free loopback ports, clients closed after."""

from __future__ import annotations

import pytest

from workbench.zdb import Client, StorageManager, TransactionEngine, client


@pytest.fixture
def sm(tmp_path):
    server = StorageManager(tmp_path / "archive", bind="tcp://127.0.0.1:0", lease_seconds=2.0).start()
    yield server
    server.stop()


@pytest.fixture
def te(sm):
    replica = TransactionEngine(sm.address, bind="tcp://127.0.0.1:0").start()
    yield replica
    replica.stop()


@pytest.fixture
def connect():
    """connect(write_uri, read_uri=None, **options) -> (db, Client); every client is closed after."""
    made: list[Client] = []

    def make(*args, **options):
        db, connection = client(*args, **{"timeout": 5.0, **options})
        made.append(connection)
        return db, connection

    yield make
    for connection in made:
        connection.close()
