"""Faults of a domain: a killed and restarted agent, a killed storage manager, quiesce, a re-keyed broker."""

from __future__ import annotations

import os
import signal
import time

import pytest

from workbench.domain import Agent, Database, Domain
from workbench.domain.transport import BrokerVerificationError
from workbench.errors import DomainError
from workbench.zdb import QuiescedError
from workbench.events import EventRecorder
from workbench.testing.domain import AgentProcess, domain  # noqa: F401 - a fixture

DBA = [("--dba-user", "dba"), ("--dba-password", "dba")]


def test_a_restarted_agent_adopts_what_still_runs_and_reports_what_died(broker, domain, tmp_path):
    heard = EventRecorder()
    domain.add_listener(heard)
    agent = AgentProcess(tmp_path / "agent", broker.address).start()
    started = []
    try:
        peer = heard.wait_for("peer_joined", lambda e: e.args[0].id == agent.peer_id).args[0]
        sm = peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        started.append(sm)
        survivor = peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
        started.append(survivor)
        casualty = peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
        started.append(casualty)
        agent.kill()  # kill -9 of the agent alone: its processes run on in sessions of their own
        heard.wait_for("peer_left", lambda e: e.args[0] is peer, timeout=20)
        os.kill(casualty.pid, signal.SIGKILL)  # dies while nobody watches
        mark = heard.events[-1].seq
        agent.start()  # same port, same state dir
        heard.wait_for("peer_joined", lambda e: e.seq > mark and e.args[0].id == agent.peer_id, timeout=20)
        assert domain.find_peer(agent.peer_id) is peer  # the same Peer object as before it left
        for process in (sm, survivor):  # reported right after the join
            heard.wait_for("process_joined", lambda e, pid=process.pid: e.seq > mark and e.args[0].pid == pid)
        adopted = sorted((p.pid, p.status) for p in peer.get_local_processes("teas"))
        assert adopted == sorted([(sm.pid, "RUNNING"), (survivor.pid, "RUNNING")])
        # An adopted TE that dies is still noticed, though its exit code is out of reach.
        new_survivor = next(p for p in peer.get_local_processes() if p.pid == survivor.pid)
        os.kill(survivor.pid, signal.SIGKILL)
        failed = heard.wait_for("process_failed", lambda e: e.seq > mark and "exit code unknown" in e.args[1],
                                timeout=20)
        assert failed.args[0] is peer
        heard.wait_for("process_left", lambda e: e.args[0] is new_survivor)
        # An adopted SM is still under control: it stops when asked, and its data is intact.
        new_sm = next(p for p in peer.get_local_processes() if p.pid == sm.pid)
        assert new_sm.query()["role"] == "sm"
        new_sm.shutdown()
        heard.wait_for("process_left", lambda e: e.args[0] is new_sm and e.args[0].status == "EXITED")
        assert not list((agent.state_dir / "processes").glob("*.json"))  # no records of ended processes left
    finally:
        agent.stop()
        for process in started:  # whatever the agent did not stop: do not leave it behind
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_quiesce_refuses_writes_with_a_clear_error_and_reads_go_on(broker, domain, tmp_path):
    from workbench.zdb import connect

    heard = EventRecorder()
    domain.add_listener(heard)
    peer = domain.entry_peer
    sm = peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
    db = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=2.0, retries=3)
    db["tea"] = ["assam"]
    database = domain.get_database("teas")
    database.quiesce()
    assert database.status == "QUIESCED" and sm.status == "QUIESCED"
    heard.wait_for("process_status_changed", lambda e: e.args[0] is sm and e.args[1] == "QUIESCED")
    with pytest.raises(Exception, match="quiesced: writes are refused") as refused:
        db["tea"] += ["darjeeling"]
    assert type(refused.value) is QuiescedError
    assert db["tea"]._run() == ["assam"]  # reads go on
    assert sm.query()["quiesced"] is True
    database.unquiesce()
    assert database.status == "RUNNING"
    quiesced_at = heard.wait_for("process_status_changed", lambda e: e.args[1] == "QUIESCED").seq
    heard.wait_for("process_status_changed", lambda e: e.args[0] is sm and e.args[1] == "RUNNING"
                   and e.seq > quiesced_at)
    db["tea"] += ["darjeeling"]
    assert db["tea"]._run() == ["assam", "darjeeling"]
    db._client.close()
    with pytest.raises(DomainError, match="no running storage manager"):
        Database(domain, "coffee").quiesce()


def test_a_killed_sm_restarted_on_its_archive_loses_nothing(broker, domain, tmp_path):
    from workbench.zdb import connect

    heard = EventRecorder()
    domain.add_listener(heard)
    peer = domain.entry_peer
    archive = str(tmp_path / "teas")
    sm = peer.start_storage_manager("teas", archive, True, wait_seconds=30)
    te = peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
    db = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=2.0, retries=3)
    for i in range(50):
        db[f"k{i}"] = i  # each one acknowledged: journaled before the answer
    db._client.close()
    os.kill(sm.pid, signal.SIGKILL)
    failed = heard.wait_for("process_failed", lambda e: "code -9" in e.args[1], timeout=20)
    assert failed.args[0] is peer
    heard.wait_for("process_left", lambda e: e.args[0] is sm)
    te.shutdown()  # it followed the dead SM's endpoint
    te.wait_for_left(15)
    with pytest.raises(Exception, match="archive is not empty"):
        peer.start_storage_manager("teas", archive, True)  # initialize=True would wipe it: refused
    peer.start_storage_manager("teas", archive, False, wait_seconds=30)
    peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
    again = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=2.0, retries=3)
    assert {key: again[key]._run() for key in (f"k{i}" for i in range(50))} == {f"k{i}": i for i in range(50)}
    again._client.close()


def test_a_changed_broker_certificate_is_refused(tmp_path, known_brokers):
    with Agent(port=0, state_dir=tmp_path / "first", domain_password="bird", broker=True) as first:
        port = first.port
        Domain(first.address, "domain", "bird").disconnect()  # trusted on first use
    with Agent(port=port, state_dir=tmp_path / "impostor", domain_password="bird", broker=True) as impostor:
        with pytest.raises(BrokerVerificationError, match="does not match") as refused:
            Domain(impostor.address, "domain", "bird")
        assert refused.value.fields["got"] != refused.value.fields["expected"]
        assert impostor.state.subscribers == []  # it was told nothing, not even the credentials


def test_a_stopped_agent_starts_nothing_more(tmp_path):
    """A start that arrives while an agent stops (a reconciler's, say) is refused, not orphaned."""
    from workbench.domain.supervisor import ProcessStartError, ProcessSupervisor

    supervisor = ProcessSupervisor("localhost:1", "localhost", tmp_path, lambda record: None)
    supervisor.stop_all()
    with pytest.raises(ProcessStartError, match="this agent is stopping"):
        supervisor.start("teas", "SM", archive=str(tmp_path / "teas"), initialize=True)
    assert supervisor.records == {}


def test_a_frozen_agent_leaves_after_the_heartbeat_timeout_and_rejoins_with_what_runs(broker, domain, tmp_path):
    """An agent cut off without a closed socket (SIGSTOP: as a lost network looks) is noticed by heartbeats."""
    heard = EventRecorder()
    domain.add_listener(heard)
    agent = AgentProcess(tmp_path / "agent", broker.address).start()
    te = None
    try:
        peer = heard.wait_for("peer_joined", lambda e: e.args[0].id == agent.peer_id, timeout=20).args[0]
        domain.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        te = peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
        os.kill(agent.process.pid, signal.SIGSTOP)  # alive, its socket open, but silent
        heard.wait_for("peer_left", lambda e: e.args[0] is peer, timeout=30)
        heard.wait_for("process_left", lambda e: e.args[0] is te)
        assert domain.find_peer(agent.peer_id) is None and te not in domain.processes
        mark = heard.events[-1].seq
        os.kill(agent.process.pid, signal.SIGCONT)  # back: it reconnects and reports its TE, still running
        heard.wait_for("peer_joined", lambda e: e.seq > mark and e.args[0] is peer, timeout=30)
        back = heard.wait_for("process_joined", lambda e: e.seq > mark and e.args[0].pid == te.pid).args[0]
        assert back.status == "RUNNING" and peer.get_local_processes("teas") == [back]
    finally:
        if agent.running:
            os.kill(agent.process.pid, signal.SIGCONT)
        agent.stop()
        if te is not None:
            try:
                os.kill(te.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_process_keeps_its_log_in_the_agent_state_dir_and_its_exit_code(broker, domain, tmp_path):
    peer = domain.entry_peer
    sm = peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    te = peer.start_transaction_engine("teas", options=DBA, wait_seconds=30)
    for process, name in ((te, f"teas-te-{te.port}.log"), (sm, f"teas-sm-{sm.port}.log")):
        log = broker.state_dir / "processes" / name  # its stdout and stderr
        said = f"zdb {process.type.lower()} serving on tcp://127.0.0.1:{process.port}"
        deadline = time.monotonic() + 15  # it may answer on its port a moment before it says so
        while said not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert said in log.read_text()
    os.kill(te.pid, signal.SIGKILL)
    assert te.wait_for_left(15)
    assert te.status == "FAILED" and te.exit_code == -9 and "exited with code -9" in te.reason
    sm.shutdown()
    assert sm.wait_for_left(15)
    assert sm.status == "EXITED" and sm.exit_code == 0 and sm.reason == ""
