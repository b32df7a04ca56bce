"""The domain: the seed's examples as written, events, process control, agents joining and dying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.domain import Agent, Domain
from workbench.domain.supervisor import NoSuchProcessError
from workbench.errors import AuthenticationError, DomainError
from workbench.events import EventRecorder
from workbench.testing.domain import AgentProcess, domain  # noqa: F401 - a fixture




def test_view_the_domain(broker, domain, capsys):
    d = domain
    for peer in d.peers:
        print(str(peer))
    assert capsys.readouterr().out == f"localhost:{broker.port} [role=broker]\n"
    assert d.getPeers() == d.peers and d.getDatabases() == d.databases == []
    assert d.entry_peer.is_broker and d.entry_peer is d.peers[0]


def test_start_some_processes_as_the_seed_does(domain, tmp_path, capsys):
    d = domain
    broker = d.entry_peer
    # start the SM, initializing a new archive directory
    broker.start_storage_manager('teas', str(tmp_path / 'teas-data'), True)

    # start the TE with an initial user 'dba' (password is 'dba')
    dbaOptions = [('--dba-user', 'dba'), ('--dba-password', 'dba')]
    te = broker.start_transaction_engine('teas', options=dbaOptions)  # as written: no waiting in between
    te.wait_for_status("RUNNING", 30)
    for db in d.databases:
        print(str(db))
        for p in db.processes:
            print(str(p))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "teas"
    shapes = sorted(line.split(" (")[1] for line in lines[1:])
    assert shapes == ["SM)", "TE)"]
    assert str(te) == f"localhost:{te.port} [pid={te.pid}] (TE)"
    assert d.get_database("teas").status == "RUNNING"
    # The database really works: a zdb client reaches the TE with the dba credentials...
    from workbench.zdb import ZdbRemoteError, client

    db, connection = client(te.endpoint, user="dba", password="dba", timeout=5.0)
    db["tea"] = ["assam", "darjeeling"]
    assert db["tea"]._run() == ["assam", "darjeeling"]
    connection.close()
    # ...and wrong ones are refused.
    with pytest.raises(ZdbRemoteError, match="wrong database user"):
        client(te.endpoint, user="dba", password="tea", timeout=5.0)
    assert te.query(user="dba", password="dba")["seq"] >= 1


def test_listener_hears_what_runs_then_changes(broker, tmp_path):
    class ProcessListener:
        def __init__(self):
            self.lines = []

        def process_joined(self, p):
            self.lines.append(("joined", str(p)))

        def process_left(self, p):
            self.lines.append(("left", str(p)))

    first = Domain(broker.address, "domain", "bird")
    sm = first.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    first.disconnect()
    listener = ProcessListener()
    recorder = EventRecorder()
    d = Domain(broker.address, "domain", "bird", listener)
    d.add_listener(recorder)
    try:
        recorder.wait_for("process_joined")
        assert listener.lines[0] == ("joined", str(sm))  # what already ran, first
        assert recorder.kinds()[:3] == ["peer_joined", "database_joined", "process_joined"]
        te = d.entry_peer.start_transaction_engine("teas", wait_seconds=30)
        recorder.wait_for("process_status_changed", lambda e: e.args[0] is te and e.args[1] == "RUNNING")
        assert ("joined", str(te)) in listener.lines
        same = [e.args[0] for e in recorder.events if e.kind in ("process_joined", "process_status_changed")
                and e.args[0].pid == te.pid]
        assert all(p is te for p in same)  # one object per process, in events and listings
        assert te in d.get_database("teas").transaction_engines
        d.get_database("teas").shutdown()
        recorder.wait_for("database_left")
        kinds = [e.kind for e in recorder.events]
        left = [e.args[0] for e in recorder.events if e.kind == "process_left"]
        assert [p.is_transactional for p in left] == [True, False]  # TEs first, then the SM
        assert kinds.index("database_left") > kinds.index("process_left")
        assert d.databases == []
    finally:
        d.disconnect()
    assert recorder.kinds()[-1] == "closed" and recorder.kinds().count("closed") == 1


def test_wrong_password_is_an_authentication_error(broker):
    with pytest.raises(AuthenticationError, match="wrong domain user or password"):
        Domain(broker.address, "domain", "crow")
    with pytest.raises(AuthenticationError):
        Domain(broker.address, "root", "bird")


def test_a_failed_start_raises_with_the_reason(domain, tmp_path):
    with pytest.raises(DomainError, match="archive does not exist"):
        domain.entry_peer.start_storage_manager("teas", str(tmp_path / "nowhere"), False)
    with pytest.raises(DomainError, match="no running storage manager"):
        domain.entry_peer.start_transaction_engine("teas")
    with pytest.raises(DomainError, match="not allowed"):
        domain.entry_peer.start_storage_manager("teas", str(tmp_path / "x"), True, options=[("--evil", "1")])


def test_a_killed_te_is_failed_and_left(domain, tmp_path):
    recorder = EventRecorder()
    domain.add_listener(recorder)
    peer = domain.entry_peer
    peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    te = peer.start_transaction_engine("teas", wait_seconds=30)
    os.kill(te.pid, signal.SIGKILL)
    failed = recorder.wait_for("process_failed", timeout=15)
    assert failed.args[0] is peer and "code -9" in failed.args[1]
    recorder.wait_for("process_left", lambda e: e.args[0] is te)
    assert te not in peer.get_local_processes()


def test_stopping_a_process_that_left_is_a_no_such_process_error(domain, tmp_path):
    peer = domain.entry_peer
    peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    te = peer.start_transaction_engine("teas", wait_seconds=30)
    os.kill(te.pid, signal.SIGKILL)
    assert te.wait_for_left(15)
    with pytest.raises(NoSuchProcessError, match="no such process"):
        te.shutdown()
    assert isinstance(NoSuchProcessError("x"), DomainError)


def test_a_database_shut_down_right_after_a_te_dies_stops_without_error(broker, tmp_path):
    # The broker has forgotten the dead TE while this client still lists it (its process_left
    # on the way): the shutdown must not fail on it. Started the moment the broker forgets it,
    # and repeated, so that window is hit.
    with Domain(broker.address, "domain", "bird") as d:
        peer = d.entry_peer
        for round_ in range(3):
            peer.start_storage_manager("teas", str(tmp_path / f"teas{round_}"), True, wait_seconds=30)
            te = peer.start_transaction_engine("teas", wait_seconds=30)
            database = d.get_database("teas")
            os.kill(te.pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while te.id in broker.state.processes and time.monotonic() < deadline:
                time.sleep(0.0002)
            database.shutdown()
            assert te.wait_for_left(15)
            assert d.get_database("teas") is None or not d.get_database("teas").processes


def test_an_agent_joins_runs_a_te_and_its_death_is_noticed(broker, domain, tmp_path):
    recorder = EventRecorder()
    domain.add_listener(recorder)
    agent = AgentProcess(tmp_path / "agent", broker.address, tags={"zone": "b"}).start()
    try:
        joined = recorder.wait_for("peer_joined", lambda e: not e.args[0].is_broker, timeout=20).args[0]
        assert joined.tags == {"zone": "b"} and str(joined) == f"localhost:{agent.port} [role=agent]"
        domain.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        te = joined.start_transaction_engine("teas", wait_seconds=30)
        assert te.peer is joined and joined.get_local_processes() == [te]
        os.killpg(agent.process.pid, signal.SIGKILL)  # the agent and its processes die
        recorder.wait_for("peer_left", lambda e: e.args[0] is joined, timeout=20)
        recorder.wait_for("process_left", lambda e: e.args[0] is te)
        assert domain.find_peer(joined.id) is None
    finally:
        agent.stop()
        # Its TE ran in a session of its own and outlives the agent: do not leave it behind.
        for process in list(recorder.events):
            if process.kind == "process_joined" and process.args[0].is_transactional:
                try:
                    os.kill(process.args[0].pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_clients_reach_a_domain_database_by_uri_and_move_when_a_te_dies(broker, domain, tmp_path):
    from workbench.zdb import ZdbRemoteError, connect

    peer = domain.entry_peer
    peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    dba = [("--dba-user", "dba"), ("--dba-password", "dba")]
    first = peer.start_transaction_engine("teas", options=dba, wait_seconds=30)
    second = peer.start_transaction_engine("teas", options=dba, wait_seconds=30)
    uri = f"zdb://dba:dba@{broker.address}/teas"
    db = connect(uri, timeout=1.0, retries=5)
    other = connect(uri, timeout=1.0, retries=5)
    served = {db._client.write_uri, other._client.write_uri}
    assert served == {first.endpoint, second.endpoint}  # the broker balances across TEs
    db["teas"] = ["assam"]
    deadline = time.monotonic() + 10
    while "teas" not in other and time.monotonic() < deadline:  # the other TE applies it shortly
        time.sleep(0.02)
    assert other["teas"]._run() == ["assam"]  # several TEs serve the same data
    victim = next(te for te in (first, second) if te.endpoint == db._client.write_uri)
    victim.kill()
    victim.wait_for_left(15)
    assert db["teas"]._run() == ["assam"]  # moved to the surviving TE
    assert db._client.write_uri != victim.endpoint
    with pytest.raises(ZdbRemoteError, match="wrong database user"):
        connect(f"zdb://dba:tea@{broker.address}/teas", timeout=2.0)
    with pytest.raises(DomainError, match="no running transaction engine"):
        connect(f"zdb://dba:dba@{broker.address}/coffee", timeout=2.0)
    db._client.close()
    other._client.close()


def test_an_agent_rejoins_a_restarted_broker_with_what_it_still_runs(tmp_path, known_brokers):
    broker = Agent(port=0, state_dir=tmp_path / "broker", domain_password="bird", broker=True).start()
    port = broker.port
    agent = Agent(port=0, state_dir=tmp_path / "agent", domain_password="bird", peer=broker.address).start()
    try:
        with Domain(broker.address, "domain", "bird") as d:
            peer = d.find_peer(agent.address)
            sm = peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
            te = peer.start_transaction_engine("teas", wait_seconds=30)
            running = sorted((sm.pid, te.pid))
        broker.stop()
        broker = Agent(port=port, state_dir=tmp_path / "broker", domain_password="bird", broker=True).start()
        deadline = time.monotonic() + 20
        while agent.address not in broker.state.peers and time.monotonic() < deadline:
            time.sleep(0.1)
        with Domain(broker.address, "domain", "bird") as d:
            peer = d.find_peer(agent.address)
            assert peer is not None, "the agent did not rejoin"
            assert sorted(p.pid for p in peer.get_local_processes("teas")) == running
            assert {p.status for p in d.get_database("teas").processes} == {"RUNNING"}
    finally:
        agent.stop()
        broker.stop()


def test_the_rest_of_the_entity_api(broker, tmp_path):
    heard = EventRecorder()
    d = Domain(broker.address, "domain", "bird", heard)
    peer = d.get_peer(broker.address)
    assert peer is d.entry_peer and d.get_peer("nowhere:1") is None
    assert d.find_peer("localhost", broker.port) is peer and d.find_peer("localhost", 1) is None
    assert peer.connect_str == broker.address and peer.address == "localhost" and peer.is_broker
    sm = peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=0)  # 0: no limit
    assert sm.status == "RUNNING"
    te = peer.start_transaction_engine("teas")  # None: returns at once
    assert te.status in ("STARTING", "RUNNING") and te.wait_for_status("RUNNING", 30) is te
    assert te.peer is peer and te.database is d.get_database("teas") and te.is_transactional
    assert not sm.is_transactional and te.address == "localhost" and te.database_name == "teas"
    assert d.processes == d.get_database("teas").processes and set(d.processes) == {sm, te}
    d.shutdown()  # every database (TEs first), then the session
    assert d.closed and heard.kinds()[-1] == "closed"
    left = [e.args[0] for e in heard.events if e.kind == "process_left"]
    assert left == [te, sm] and heard.kinds().index("database_left") > heard.kinds().index("process_left")
    with Domain(broker.address, "domain", "bird") as again:
        assert again.databases == [] and again.processes == []


def test_a_listener_that_raises_does_not_break_the_session(domain, tmp_path):
    class Broken:
        def process_joined(self, process):
            raise RuntimeError("a listener's own bug")

    heard = EventRecorder()
    domain.add_listener(Broken())
    domain.add_listener(heard)
    sm = domain.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    heard.wait_for("process_status_changed", lambda e: e.args[0] is sm and e.args[1] == "RUNNING")
    sm.shutdown()
    heard.wait_for("process_left", lambda e: e.args[0] is sm)
    assert not domain.closed and domain.get_database("teas") is None


def test_the_agent_command_takes_a_domain_user_and_a_hostname(tmp_path, known_brokers):
    class NamedBroker(AgentProcess):
        def command(self):
            return [*super().command(), "--domain-user", "admin", "--hostname", "db1.example"]

    broker = NamedBroker(tmp_path / "broker", None, broker=True).start()
    try:
        with Domain(broker.address, "admin", "bird") as d:
            assert str(d.entry_peer) == f"db1.example:{broker.port} [role=broker]"
            assert d.entry_peer.hostname == "db1.example"
        with pytest.raises(AuthenticationError):
            Domain(broker.address, "domain", "bird")  # the default user is not this domain's user
        stored = (broker.state_dir / "domain-credentials.json").read_text()
        assert '"admin"' in stored and "bird" not in stored  # a salted hash, never the password
    finally:
        broker.stop()


def test_the_agent_command_reads_the_password_from_the_environment_off_its_command_line(tmp_path, known_brokers):
    broker = AgentProcess(tmp_path / "broker", None, broker=True).start()  # the password in its environment
    try:
        assert "bird" not in Path(f"/proc/{broker.process.pid}/cmdline").read_text()
        with Domain(broker.address, "domain", "bird") as d:
            assert d.entry_peer.is_broker
    finally:
        broker.stop()
    without = subprocess.run([sys.executable, "-m", "workbench", "domain", "agent", "--state-dir",
                              str(tmp_path / "none"), "--port", "0"], capture_output=True, text=True,
                             timeout=60, env={k: v for k, v in os.environ.items() if k != "WORKBENCH_DOMAIN_PASSWORD"})
    assert without.returncode != 0 and "--domain-password or $WORKBENCH_DOMAIN_PASSWORD" in without.stderr


def test_the_seed_connects_with_a_host_alone_on_the_default_port(tmp_path, known_brokers):
    from workbench.ports import port_open

    if port_open("127.0.0.1", 48004):
        # Something else of this machine holds the port (an embedded stack, say): the client
        # must still dial it, and be refused there (it is no broker of this test's domain).
        with pytest.raises(DomainError, match="localhost:48004"):
            Domain('localhost', 'domain', 'bird').disconnect()
        return
    with Agent(state_dir=tmp_path / "broker", domain_password="bird", broker=True) as broker:
        assert broker.port == 48004
        d = Domain('localhost', 'domain', 'bird')  # as the seed writes it
        try:
            assert [str(peer) for peer in d.peers] == ["localhost:48004 [role=broker]"]
        finally:
            d.disconnect()


def test_tes_on_two_peers_serve_the_same_data_and_a_client_moves_across_peers(broker, domain, tmp_path):
    from workbench.zdb import connect

    agent = Agent(port=0, state_dir=tmp_path / "agent", domain_password="bird", peer=broker.address).start()
    clients = []
    try:
        dba = [("--dba-user", "dba"), ("--dba-password", "dba")]
        domain.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        here = domain.entry_peer.start_transaction_engine("teas", options=dba, wait_seconds=30)
        there = domain.find_peer(agent.address).start_transaction_engine("teas", options=dba, wait_seconds=30)
        assert here.peer is not there.peer
        uri = f"zdb://dba:dba@{broker.address}/teas"
        clients = [connect(uri, timeout=1.0, retries=5) for _ in range(2)]
        first, second = clients
        assert {c._client.write_uri for c in clients} == {here.endpoint, there.endpoint}  # one on each peer
        first["pot"] = ["sencha"]
        deadline = time.monotonic() + 10
        while "pot" not in second and time.monotonic() < deadline:
            time.sleep(0.02)
        assert second["pot"]._run() == ["sencha"]  # written through one peer's TE, read through the other's
        victim = here if first._client.write_uri == here.endpoint else there
        survivor = there if victim is here else here
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait_for_left(15)
        assert first["pot"]._run() == ["sencha"]  # a read moves to the TE on the other peer
        assert first._client.write_uri == survivor.endpoint
        first["pot"] += ["gyokuro"]
        assert second["pot"]._run() == ["sencha", "gyokuro"]
    finally:
        for c in clients:
            c._client.close()
        agent.stop()
