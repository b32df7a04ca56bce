"""Several brokers: the domain replicated between them, commands routed across, a broker that dies."""

from __future__ import annotations

import os
import signal
import time

import pytest

from workbench.domain import Agent, Domain
from workbench.events import EventRecorder
from workbench.testing.domain import AgentProcess


def wait_until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def second_broker(broker, tmp_path):
    """Broker B, linked to the conftest broker (A) with --peer."""
    b = Agent(port=0, state_dir=tmp_path / "broker-b", domain_password="bird", broker=True,
              peer=broker.address).start()
    yield b
    b.stop()


@pytest.fixture
def agents(broker, second_broker, tmp_path):
    """Agent a1 (zone a) attached to broker A, agent b1 (zone b) attached to broker B."""
    a1 = Agent(port=0, state_dir=tmp_path / "a1", domain_password="bird", peer=broker.address,
               tags={"zone": "a"}).start()
    b1 = Agent(port=0, state_dir=tmp_path / "b1", domain_password="bird", peer=second_broker.address,
               tags={"zone": "b"}).start()
    yield a1, b1
    b1.stop()
    a1.stop()


def test_a_client_of_either_broker_sees_the_whole_domain_and_hears_every_event(broker, second_broker, agents,
                                                                                 tmp_path):
    a1, b1 = agents
    on_a = Domain(broker.address, "domain", "bird")
    heard_on_b = EventRecorder()
    on_b = Domain(second_broker.address, "domain", "bird", heard_on_b)
    try:
        everyone = {broker.address, second_broker.address, a1.address, b1.address}
        for d in (on_a, on_b):
            wait_until(lambda d=d: {p.id for p in d.peers} == everyone, what="all four peers")
        assert on_b.find_peer(a1.address).tags == {"zone": "a"}  # host tags travel too
        assert str(on_b.find_peer(broker.address)) == f"{broker.address} [role=broker]"
        assert on_b.entry_peer.id == second_broker.address and on_b.entry_peer.is_broker
        # Started through A on an agent of A: a listener on B hears it.
        sm = on_a.find_peer(a1.address).start_storage_manager("teas", str(tmp_path / "teas"), True,
                                                               wait_seconds=30)
        joined = heard_on_b.wait_for("process_joined", lambda e: e.args[0].pid == sm.pid).args[0]
        kinds = heard_on_b.kinds()
        assert kinds.index("database_joined") < kinds.index("process_joined")
        # Started through A on an agent of B: the command goes across to broker B.
        dba = [("--dba-user", "dba"), ("--dba-password", "dba")]
        te = on_a.find_peer(b1.address).start_transaction_engine("teas", options=dba, wait_seconds=30)
        assert te.peer.id == b1.address and te.pid in {r.pid for r in b1.supervisor.running()}
        heard_on_b.wait_for("process_status_changed", lambda e: e.args[0].pid == te.pid and e.args[1] == "RUNNING")
        database = on_b.get_database("teas")
        assert sorted(str(p) for p in database.processes) == sorted([str(sm), str(te)])
        assert joined is on_b.get_database("teas").storage_managers[0]  # one object per process
        # Database clients find the TE through either broker.
        from workbench.zdb import connect

        through_b = connect(f"zdb://dba:dba@{second_broker.address}/teas", timeout=2.0, retries=5)
        through_b["tea"] = "assam"
        through_a = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=2.0, retries=5)
        assert through_a["tea"]._run() == "assam"
        through_a._client.close()
        through_b._client.close()
        # Shut down through B: B routes the SM's stop to A; every client hears the end.
        database.shutdown()
        heard_on_b.wait_for("database_left")
        wait_until(lambda: on_a.databases == [], what="database_left at A")
        left = [e.args[0] for e in heard_on_b.events if e.kind == "process_left"]
        assert [p.is_transactional for p in left] == [True, False]
    finally:
        on_a.disconnect()
        on_b.disconnect()


@pytest.fixture
def broker_process(broker, tmp_path):
    """Broker B as a real process linked to A, agent b1 attached to B, and a session with A hearing it all."""
    heard = EventRecorder()
    d = Domain(broker.address, "domain", "bird", heard)
    b = AgentProcess(tmp_path / "broker-b", broker.address, broker=True).start()
    agent = None
    try:
        heard.wait_for("peer_joined", lambda e: e.args[0].id == b.peer_id)
        agent = Agent(port=0, state_dir=tmp_path / "b1", domain_password="bird", peer=b.peer_id).start()
        heard.wait_for("peer_joined", lambda e: e.args[0].id == agent.address)
        wait_until(lambda: broker.address in agent._link.brokers, what="the agent to learn of broker A")
        yield d, heard, b, agent
    finally:
        if b.running:
            os.kill(b.process.pid, signal.SIGCONT)
        d.disconnect()
        if agent is not None:
            agent.stop()
        b.stop()


def test_a_killed_broker_leaves_and_its_agents_fail_over(broker, broker_process, tmp_path):
    d, heard, b, agent = broker_process
    joined = d.find_peer(agent.address)
    d.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    te = joined.start_transaction_engine("teas", wait_seconds=30)  # routed A -> B -> agent
    os.killpg(b.process.pid, signal.SIGKILL)
    left = heard.wait_for("peer_left", lambda e: e.args[0].id == b.peer_id, timeout=20).args[0]
    assert left.is_broker and d.find_peer(b.peer_id) is None
    # The agent fails over to A and rejoins with its TE still running.
    wait_until(lambda: agent.address in broker.state.links, what="the agent to rejoin through A")
    wait_until(lambda: any(p.pid == te.pid and p.status == "RUNNING" for p in d.get_database("teas").processes),
               what="the TE to be reported again")
    assert d.find_peer(agent.address).get_local_processes("teas")[0].pid == te.pid
    # Commands reach it through A now.
    d.find_peer(agent.address).get_local_processes("teas")[0].shutdown()
    heard.wait_for("process_left", lambda e: e.args[0].pid == te.pid and e.args[0].status == "EXITED")


def test_a_frozen_broker_leaves_after_the_heartbeat_timeout(broker, broker_process):
    d, heard, b, agent = broker_process
    os.kill(b.process.pid, signal.SIGSTOP)  # alive but silent: only the heartbeats tell
    frozen_at = time.monotonic()
    heard.wait_for("peer_left", lambda e: e.args[0].id == b.peer_id, timeout=30)
    assert time.monotonic() - frozen_at >= 3.0  # it took the heartbeat timeout, not a closed socket
    wait_until(lambda: agent.address in broker.state.links, timeout=30, what="the agent to fail over to A")
    assert d.find_peer(agent.address) is not None


def test_the_acting_broker_heals_a_description_on_an_agent_of_another_broker(broker, second_broker, agents,
                                                                              tmp_path):
    a1, b1 = agents
    heard = EventRecorder()
    d = Domain(second_broker.address, "domain", "bird", heard)
    try:
        wait_until(lambda: len(d.peers) == 4, what="four peers")
        d.create_description("teas", "Multi Host", {"TE_COUNT": 3}, archive_dir=str(tmp_path / "teas"))
        description = d.start_description("teas", wait_seconds=60)
        engines = description.database.transaction_engines
        assert len({te.peer.id for te in engines}) == 3  # distinct peers
        acting = min(broker.address, second_broker.address)
        # A TE on a peer attached to the broker that does not act: healing crosses brokers.
        victim = next(te for te in engines if broker.state.owner[te.peer.id] != acting)
        mark = heard.events[-1].seq
        os.kill(victim.pid, signal.SIGKILL)
        heard.wait_for("process_left", lambda e: e.args[0] is victim)
        action = heard.wait_for("reconciler_action", lambda e: e.seq > mark and e.args[1] == "started", timeout=30)
        assert action.args[0] is description and "transaction engine" in action.args[2]
        heard.wait_for("process_status_changed", lambda e: e.seq > mark and e.args[0].is_transactional
                       and e.args[1] == "RUNNING", timeout=30)
        assert len(description.database.transaction_engines) == 3
        description.wait_for_status("RUNNING", 30)
        # Both brokers hold the same copy of the description.
        wait_until(lambda: broker.state.descriptions.get("teas") == second_broker.state.descriptions.get("teas"),
                   what="both brokers to hold the same copy")
        assert broker.state.descriptions.get("teas").status == "RUNNING"
        d.stop_description("teas")
        heard.wait_for("database_left", timeout=30)
        assert description.status == "STOPPED"
    finally:
        d.disconnect()


def test_descriptions_survive_the_acting_broker(broker, tmp_path):
    b = AgentProcess(tmp_path / "broker-b", broker.address, broker=True).start()
    agent = None
    try:
        wait_until(lambda: b.peer_id in broker.state.brokers, what="broker B to link")
        agent = Agent(port=0, state_dir=tmp_path / "x", domain_password="bird", peer=broker.address).start()
        wait_until(lambda: b.peer_id in agent._link.brokers, what="the agent to learn of broker B")
        b_acts = b.peer_id < broker.address
        survivor = broker.address if b_acts else b.peer_id
        heard = EventRecorder()
        d = Domain(survivor, "domain", "bird", heard)
        wait_until(lambda: d.find_peer(agent.address) is not None, what="the agent at the surviving broker")
        description = d.create_description("teas", "Single Host", {"HOST": agent.address})
        d.start_description("teas", wait_seconds=60)
        assert {p.peer.id for p in description.processes} == {agent.address}
        if b_acts:
            os.killpg(b.process.pid, signal.SIGKILL)
        else:
            broker.stop()  # its agent fails over to broker B
        heard.wait_for("peer_left", lambda e: e.args[0].is_broker, timeout=20)
        wait_until(lambda: d.find_peer(agent.address) is not None and len(description.processes) == 2,
                   what="the description's processes at the surviving broker")
        te = description.database.transaction_engines[0]
        mark = heard.events[-1].seq
        os.kill(te.pid, signal.SIGKILL)
        action = heard.wait_for("reconciler_action", lambda e: e.seq > mark and e.args[1] == "started", timeout=30)
        assert action.args[0] is description and agent.address in action.args[2]
        heard.wait_for("process_status_changed", lambda e: e.seq > mark and e.args[0].is_transactional
                       and e.args[1] == "RUNNING", timeout=30)
        d.stop_description("teas")
        assert description.processes == []
        d.disconnect()
    finally:
        if agent is not None:
            agent.stop()
        b.stop()



def test_three_brokers_learn_of_each_other_and_link_in_a_full_mesh(broker, second_broker, tmp_path):
    third = Agent(port=0, state_dir=tmp_path / "broker-c", domain_password="bird", broker=True,
                  peer=broker.address).start()
    agent = Agent(port=0, state_dir=tmp_path / "b1", domain_password="bird", peer=second_broker.address).start()
    try:
        everyone = {broker.address, second_broker.address, third.address}
        for b in (broker, second_broker, third):
            wait_until(lambda b=b: set(b.state.brokers) == everyone - {b.address}, what=f"{b.address} linked to all")
        with Domain(third.address, "domain", "bird") as d:
            wait_until(lambda: d.find_peer(agent.address) is not None, what="B's agent seen through C")
            process = d.find_peer(agent.address).start_storage_manager("teas", str(tmp_path / "teas"), True,
                                                                        wait_seconds=30)  # C -> B -> agent
            assert process.pid in {r.pid for r in agent.supervisor.running()}
            process.shutdown()
            assert process.wait_for_left(15)
    finally:
        agent.stop()
        third.stop()
