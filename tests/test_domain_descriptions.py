"""Templates and descriptions: declared databases kept running by the brokers' reconciler."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from workbench.domain import Agent, DescriptionError, Domain
from workbench.events import EventRecorder
from workbench.testing.domain import domain  # noqa: F401 - a fixture




def test_templates_are_built_in(domain):
    names = [t.name for t in domain.templates]
    assert names == ["Single Host", "Minimally Redundant", "Multi Host"]
    multi = domain.templates[2]
    assert "TE_COUNT" in multi.summary and multi.requirements
    assert [s.name for s in multi.slots(multi.resolve({"TE_COUNT": 3}))] == ["sm1", "te1", "te2", "te3"]
    # 2 SMs + N TEs on distinct peers
    redundant = domain.templates[1]
    slots = redundant.slots(redundant.resolve({"TE_COUNT": 3}))
    assert [(s.name, s.standby) for s in slots] == [("sm1", False), ("sm2", True), ("te1", False),
                                                    ("te2", False), ("te3", False)]
    assert redundant.peers_needed(redundant.resolve({"TE_COUNT": 3})) == 3
    assert len(redundant.slots(redundant.resolve({}))) == 4 and redundant.peers_needed(redundant.resolve({})) == 2


def test_bad_templates_and_variables_are_clear_errors_and_change_nothing(domain, broker):
    with pytest.raises(DescriptionError, match="no template named 'Huge'") as info:
        domain.create_description("teas", "Huge")
    assert "Single Host" in info.value.fields["known"]
    with pytest.raises(DescriptionError, match="TE_COUNT must be a whole number"):
        domain.create_description("teas", "Multi Host", {"TE_COUNT": "many"})
    with pytest.raises(DescriptionError, match="has no variable COLOR"):
        domain.create_description("teas", "Multi Host", {"COLOR": "green"})
    with pytest.raises(DescriptionError, match="database names"):
        domain.create_description("te as", "Single Host")
    assert domain.descriptions == [] and broker.state.descriptions.live() == []
    domain.create_description("teas", "Multi Host", {"TE_COUNT": 2})
    with pytest.raises(DescriptionError, match="exists already"):
        domain.create_description("teas", "Single Host")
    with pytest.raises(DescriptionError, match="TE_COUNT must be"):
        domain.update_description("teas", variables={"TE_COUNT": 0})
    assert domain.get_description("teas").variables == {"TE_COUNT": "2"}
    with pytest.raises(DescriptionError, match="needs 2 peers; the domain has 1"):
        domain.start_description("teas")
    assert domain.get_description("teas").status == "STOPPED"
    domain.create_description("coffee", "Single Host", {"HOST": "nowhere:1"})
    with pytest.raises(DescriptionError, match="HOST 'nowhere:1' is no peer of the domain"):
        domain.start_description("coffee")
    assert domain.get_description("coffee").status == "STOPPED" and domain.databases == []
    domain.delete_description("coffee")
    with pytest.raises(DescriptionError, match="no description named 'coffee'"):
        domain.get_description("coffee")
    with pytest.raises(DescriptionError, match="no description named 'coffee'"):
        domain.start_description("coffee")


def test_a_started_description_heals_a_killed_te_and_stops(broker, domain, tmp_path):
    from workbench.zdb import connect

    recorder = EventRecorder()
    domain.add_listener(recorder)
    description = domain.create_description("teas", "Single Host", dba_user="dba", dba_password="dba",
                                             archive_dir=str(tmp_path / "teas"))
    assert description is domain.get_description("teas") and description in domain.descriptions
    assert str(description) == "teas [template=Single Host] (STOPPED)"
    domain.start_description("teas", wait_seconds=60)
    assert description.status == "RUNNING"
    assert sorted(p.type for p in description.processes) == ["SM", "TE"]
    assert all(p.peer is domain.entry_peer for p in description.processes)
    assert (tmp_path / "teas").is_dir()  # the archive went where the description says
    db = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=1.0, retries=5)
    db["tea"] = ["assam"]
    te = description.database.transaction_engines[0]
    os.kill(te.pid, signal.SIGKILL)
    recorder.wait_for("process_left", lambda e: e.args[0] is te, timeout=20)
    healed = recorder.wait_for("process_joined", lambda e: e.args[0].is_transactional and e.args[0] is not te,
                               timeout=30).args[0]
    healed.wait_for_status("RUNNING", 30)
    actions = [e.args[1:] for e in recorder.events if e.kind == "reconciler_action" and e.args[0] is description]
    assert ("start", f"transaction engine te1 on {domain.entry_peer.id}") in actions
    assert db["tea"]._run() == ["assam"]  # the client moved to the new TE and the data is all there
    db["tea"] += ["darjeeling"]
    description.wait_for_status("RUNNING", 30)
    changed = [e for e in recorder.events if e.kind == "description_changed"]
    assert changed and all(e.args[0] is description for e in changed)
    domain.stop_description("teas")
    recorder.wait_for("database_left", timeout=30)
    assert description.status == "STOPPED" and description.processes == [] and domain.databases == []
    db._client.close()
    # Started again, it reuses its archive: nothing was lost.
    domain.start_description("teas", wait_seconds=60)
    again = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=1.0, retries=5)
    assert again["tea"]._run() == ["assam", "darjeeling"]
    again._client.close()
    domain.stop_description("teas")
    domain.delete_description("teas")
    assert domain.descriptions == []
    with pytest.raises(DescriptionError):
        domain.get_description("teas")


def test_descriptions_persist_in_the_broker_state_dir(tmp_path, known_brokers):
    state_dir = tmp_path / "broker"
    with Agent(port=0, state_dir=state_dir, domain_password="bird", broker=True) as broker:
        with Domain(broker.address, "domain", "bird") as d:
            d.create_description("teas", "Multi Host", {"TE_COUNT": 3}, dba_password="secret")
            with pytest.raises(DescriptionError, match="needs 3 peers; the domain has 1"):
                d.start_description("teas")
    saved = state_dir / "descriptions.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"  # it holds the dba password
    assert json.loads(saved.read_text())[0]["variables"] == {"TE_COUNT": "3"}
    with Agent(port=0, state_dir=state_dir, domain_password="bird", broker=True) as broker:
        with Domain(broker.address, "domain", "bird") as d:
            description = d.get_description("teas")
            assert (description.template.name, description.variables) == ("Multi Host", {"TE_COUNT": "3"})
            assert description._record.dba_password == ""  # never sent to clients
            d.delete_description("teas")
    assert json.loads(saved.read_text())[0]["deleted"] is True


def test_a_killed_sm_comes_back_on_its_archive_and_its_tes_are_replaced(broker, domain, tmp_path):
    from workbench.zdb import connect

    heard = EventRecorder()
    domain.add_listener(heard)
    description = domain.create_description("teas", "Single Host", archive_dir=str(tmp_path / "teas"))
    domain.start_description("teas", wait_seconds=60)
    db = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=2.0, retries=10)
    for i in range(20):
        db[f"k{i}"] = i
    sm = description.database.storage_managers[0]
    old_te = description.database.transaction_engines[0]
    mark = heard.events[-1].seq
    os.kill(sm.pid, signal.SIGKILL)
    heard.wait_for("process_left", lambda e: e.args[0] is sm, timeout=20)
    heard.wait_for("reconciler_action", lambda e: e.seq > mark and e.args[1] == "replace", timeout=30)
    heard.wait_for("process_left", lambda e: e.args[0] is old_te, timeout=30)
    new_te = heard.wait_for("process_status_changed", lambda e: e.seq > mark and e.args[0].is_transactional
                            and e.args[1] == "RUNNING", timeout=30).args[0]
    new_sm = description.database.storage_managers[0]
    assert new_sm is not sm and new_sm.archive == sm.archive and new_sm.peer is sm.peer
    assert new_te is not old_te
    assert {f"k{i}": db[f"k{i}"]._run() for i in range(20)} == {f"k{i}": i for i in range(20)}  # nothing lost
    db["after"] = True
    db._client.close()
    domain.stop_description("teas")


def test_minimally_redundant_puts_2_sms_and_n_tes_each_on_distinct_peers(broker, domain, tmp_path):
    agent = Agent(port=0, state_dir=tmp_path / "agent", domain_password="bird", peer=broker.address).start()
    second = Agent(port=0, state_dir=tmp_path / "second", domain_password="bird", peer=broker.address).start()
    try:
        description = domain.create_description("teas", "Minimally Redundant", {"TE_COUNT": 3})
        domain.start_description("teas", wait_seconds=60)
        managers = description.database.storage_managers
        engines = description.database.transaction_engines
        assert len(managers) == 2 and len(engines) == 3
        assert len({p.peer.id for p in managers}) == 2
        assert {p.peer.id for p in engines} == {broker.address, agent.address, second.address}
        primary = next(p for p in managers if not p.is_standby)
        standby = next(p for p in managers if p.is_standby)
        assert primary.archive.endswith("archives/teas") and standby.archive == ""
        assert description.placements == {"sm1": primary.peer.id}  # the archive's owner
        # The standby holds a current copy of the data.
        from workbench.zdb import connect

        db = connect(f"zdb://dba:dba@{broker.address}/teas", timeout=2.0, retries=5)
        db["tea"] = "assam"
        seq = primary.query()["seq"]
        deadline = time.monotonic() + 10
        while standby.query()["seq"] < seq and time.monotonic() < deadline:
            time.sleep(0.05)
        assert standby.query()["seq"] >= seq
        db._client.close()
        domain.stop_description("teas")
        assert description.processes == []
    finally:
        second.stop()
        agent.stop()


def test_a_started_description_follows_its_updates(broker, domain, tmp_path):
    agent = Agent(port=0, state_dir=tmp_path / "agent", domain_password="bird", peer=broker.address).start()
    heard = EventRecorder()
    domain.add_listener(heard)
    try:
        description = domain.create_description("teas", "Multi Host", {"TE_COUNT": 1})
        domain.start_description("teas", wait_seconds=60)
        assert len(description.database.transaction_engines) == 1
        domain.update_description("teas", variables={"TE_COUNT": 2})
        heard.wait_for("process_status_changed", lambda e: e.args[0].is_transactional and e.args[1] == "RUNNING"
                       and len(description.database.transaction_engines) == 2, timeout=30)
        assert len({te.peer.id for te in description.database.transaction_engines}) == 2
        domain.update_description("teas", variables={"TE_COUNT": 1})
        heard.wait_for("reconciler_action", lambda e: e.args[1] == "stop", timeout=30)
        description.wait_for_status("RUNNING", 30)
        deadline = time.monotonic() + 15
        while len(description.database.transaction_engines) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(description.database.transaction_engines) == 1
        with pytest.raises(DescriptionError, match="is started: stop it before deleting it"):
            domain.delete_description("teas")
        domain.stop_description("teas")
        domain.delete_description("teas")
    finally:
        agent.stop()
