"""Every server follows one lifecycle: bound when ``start()`` returns, an ``Address``, a ``with`` block,
``serve_forever()`` ending at ``stop()``, and ``stop()`` twice doing no harm."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web

from workbench.clusters.api import ClustersApi
from workbench.clusters.models import ClusterStore
from workbench.clusters.settings import Settings
from workbench.commits.storage import MemoryCommitStorage
from workbench.commits.server import CommitServer
from workbench.domain.agent import Agent
from workbench.domain.transport import TlsIdentity, TlsServer
from workbench.httpserver import HttpServer, ServerBindError
from workbench.inventory.inventory import Inventory
from workbench.inventory.server import InventoryServer
from workbench.inventory.transport import FrameServer
from workbench.inventory.web.server import WebServer
from workbench.servers import Address, ServerLifecycle, serve_until_signalled
from workbench.testing.services import traversable_tempdir
from workbench.zdb import StorageManager, TransactionEngine


class _Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("hello")


@pytest.fixture
def clusters_store(tmp_path: Path) -> Iterator[ClusterStore]:
    instances = traversable_tempdir("workbench-lifecycle-")
    settings = Settings(state_dir=str(tmp_path / "state"), instances_dir=str(instances), master_key="test-master")
    with ClusterStore(f"sqlite:///{tmp_path / 'clusters.db'}", settings) as store:
        yield store


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[StorageManager]:
    server = StorageManager(tmp_path / "primary", bind="tcp://127.0.0.1:0").start()
    yield server
    server.stop()


#: name -> a function of (tmp_path, request) making one server, not started
FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], Any]] = {
    "HttpServer": lambda tmp, request: HttpServer(tornado.web.Application([(r"/", _Hello)]), name="hello"),
    "CommitServer": lambda tmp, request: CommitServer(MemoryCommitStorage()),
    "ClustersApi": lambda tmp, request: ClustersApi(request.getfixturevalue("clusters_store")),
    "WebServer": lambda tmp, request: WebServer(Inventory("lifecycle")),
    "FrameServer": lambda tmp, request: FrameServer(tmp / "frames.sock", lambda message, caller: {"ok": True}),
    "InventoryServer": lambda tmp, request: InventoryServer(f"sqlite:///{tmp}/inventory.db", web_port=None,
                                                            workdir=str(tmp / "apps")),
    "TlsServer": lambda tmp, request: TlsServer(TlsIdentity.load_or_create(tmp / "tls"), lambda conn: None),
    "Agent": lambda tmp, request: Agent(port=0, state_dir=tmp / "broker", domain_password="bird", broker=True),
    "StorageManager": lambda tmp, request: StorageManager(tmp / "archive", bind="tcp://127.0.0.1:0"),
    "TransactionEngine": lambda tmp, request: TransactionEngine(request.getfixturevalue("primary").address,
                                                                bind="tcp://127.0.0.1:0"),
}


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Makes servers of one class (each in a directory of its own); every one is stopped after."""
    made: list[Any] = []

    def factory() -> Any:
        directory = tmp_path / str(len(made))
        directory.mkdir()
        server = FACTORIES[request.param](directory, request)
        made.append(server)
        return server

    yield factory
    for server in made:
        server.stop()


def dial(address: Address) -> None:
    """Open a connection to ``address`` and close it; OSError when nobody listens there."""
    if address.port is None:
        with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as sock:
            sock.settimeout(5)
            sock.connect(address.host)
    else:
        socket.create_connection((address.host, address.port), timeout=5).close()


def test_start_returns_bound_with_an_address(make: Callable[[], Any]) -> None:
    server = make()
    assert server.start() is server
    address = server.address
    assert type(address) is Address and isinstance(address, str)
    assert address.port is None or address.port > 0
    assert address.host and address.host in address and (address.port is None or str(address.port) in address)
    dial(address)  # right after start: no waiting for a thread to get there
    assert pickle.loads(pickle.dumps(address)) == address


def test_the_with_block_starts_and_stops(make: Callable[[], Any]) -> None:
    with make() as server:
        address = server.address
        dial(address)
    with pytest.raises(OSError):
        dial(address)


def test_serve_forever_returns_once_stopped_from_another_thread(make: Callable[[], Any]) -> None:
    server = make()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while True:  # serve_forever binds on its own thread: wait until it answers
        try:
            address = server.address  # some servers have none before they are bound
            if address and address.port != 0:
                dial(address)
                break
        except (OSError, AssertionError):
            pass
        assert time.monotonic() < deadline and thread.is_alive(), failures
        time.sleep(0.05)
    assert thread.is_alive()  # serving, not returned
    server.stop()
    thread.join(30)
    assert not thread.is_alive() and not failures
    with pytest.raises(OSError):
        dial(address)


def test_stop_twice_is_harmless(make: Callable[[], Any]) -> None:
    server = make().start()
    address = server.address
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        dial(address)


def test_an_address_is_the_text_clients_always_dialled() -> None:
    assert Address.tcp("127.0.0.1", 48004) == "127.0.0.1:48004"
    assert (Address.tcp("::1", 80), Address.tcp("::1", 80).host) == ("[::1]:80", "::1")
    zmq = Address.endpoint("tcp://127.0.0.1:5555")
    assert (zmq, zmq.host, zmq.port) == ("tcp://127.0.0.1:5555", "127.0.0.1", 5555)
    assert Address.endpoint("ipc:///tmp/zdb").port is None
    unix = Address.unix("/tmp/app.sock")
    assert (unix, unix.host, unix.port) == ("/tmp/app.sock", "/tmp/app.sock", None)
    assert f"connected to {Address.tcp('db1', 1)}" == "connected to db1:1"


def test_a_taken_port_is_a_bind_error_naming_it() -> None:
    with HttpServer(tornado.web.Application([(r"/", _Hello)]), name="first") as first:
        with pytest.raises(ServerBindError, match=rf"second cannot listen on 127.0.0.1:{first.port}") as caught:
            HttpServer(tornado.web.Application([(r"/", _Hello)]), port=first.port, name="second").start()
        assert (caught.value.fields["host"], caught.value.fields["port"]) == ("127.0.0.1", first.port)
        with pytest.raises(ServerBindError, match="already started"):
            first.start()


def test_serve_until_signalled_stops_at_sigterm_and_puts_the_handlers_back(make: Callable[[], Any]) -> None:
    server = make()
    before = signal.getsignal(signal.SIGTERM)
    announced: list[Address] = []

    def announce() -> None:  # called once bound, with the handlers in place
        announced.append(server.address)
        dial(server.address)
        os.kill(os.getpid(), signal.SIGTERM)

    serve_until_signalled(server, announce)
    assert len(announced) == 1 and signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(OSError):
        dial(announced[0])


class _SlowToStart(ServerLifecycle):
    """A server of nothing whose start takes a while: what the base does around its two hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.starting = threading.Event()

    def _start(self) -> None:
        self.starting.set()
        time.sleep(0.3)
        self.calls.append("start")

    def _stop(self) -> None:
        self.calls.append("stop")


def test_a_stop_racing_a_start_waits_for_it_then_stops_once() -> None:
    server = _SlowToStart()
    starter = threading.Thread(target=server.start)
    starter.start()
    assert server.starting.wait(5)
    stoppers = [threading.Thread(target=server.stop) for _ in range(3)]
    for thread in stoppers:
        thread.start()
    for thread in [starter, *stoppers]:
        thread.join(10)
    assert server.calls == ["start", "stop"]
    server.serve_forever()  # stopped: returns at once, starting nothing again
    assert server.calls == ["start", "stop"]
