"""Templates and descriptions: declared databases kept running by the brokers' reconciler."""

from __future__ import annotations

import json
import os
import signal

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
