"""Fixtures shared by the tests: an IPython testing shell, in-process zdb servers, clients closed after."""

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


@pytest.fixture(scope="module")
def shell():
    """An IPython shell whose run_cell raises what the cell raised."""
    from workbench_jupyter.testing import TestingShell

    return TestingShell.instance()


@pytest.fixture
def loaded(shell):
    """The shell with the workbench extension loaded, unloaded (and connections cleared) after."""
    from workbench_jupyter import connections

    shell.run_cell("%load_ext workbench")
    yield shell
    shell.run_cell("%unload_ext workbench")
    connections.clear()


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory, monkeypatch):
    """No test finds (or starts) the stack of the user running the tests: the default state dir is a temp one."""
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(tmp_path_factory.mktemp("default-state")))
    monkeypatch.delenv("WORKBENCH_STACK", raising=False)


@pytest.fixture
def known_brokers(tmp_path, monkeypatch):
    """Trust-on-first-use pins of domain brokers go to a per-test file, never the user's."""
    monkeypatch.setenv("WORKBENCH_KNOWN_BROKERS", str(tmp_path / "known_brokers"))


@pytest.fixture
def broker(tmp_path, known_brokers):
    """An in-process domain broker (user domain, password bird) on a free loopback port."""
    from workbench.domain import Agent

    agent = Agent(port=0, state_dir=tmp_path / "broker", domain_user="domain", domain_password="bird",
                  broker=True).start()
    yield agent
    agent.stop()
