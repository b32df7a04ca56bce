"""The %domain magic and the domain dashboard, against a real in-process broker and agent running zdb processes."""

from __future__ import annotations

import os
import signal

import pandas
import pytest
from IPython.core.completer import provisionalcompleter
from IPython.core.error import UsageError

from workbench.domain import Agent, Domain, Process
from workbench.events import EventRecorder
from workbench.zdb import connect as zdb_connect
from workbench_jupyter import connections
from workbench_jupyter.domain_dashboard import DomainDashboard

PASSWORD = "Tr0ub4dor-domain"
DBA_PASSWORD = "dba-Secr3t"


@pytest.fixture
def domain_broker(tmp_path, known_brokers):
    """A broker whose domain password is PASSWORD (so tests can search outputs for it)."""
    agent = Agent(port=0, state_dir=tmp_path / "broker", domain_user="domain", domain_password=PASSWORD,
                  broker=True).start()
    yield agent
    agent.stop()


@pytest.fixture
def domain_agent(tmp_path, domain_broker):
    """An agent (not a broker) joined to the broker: a second peer to run processes on."""
    agent = Agent(port=0, state_dir=tmp_path / "agent", domain_user="domain", domain_password=PASSWORD,
                  peer=domain_broker.address).start()
    yield agent
    agent.stop()


@pytest.fixture
def loaded(loaded):
    """The shared loaded shell, minus the variables these tests create."""
    yield loaded
    for name in ("domain", "address", "procs", "te", "sm", "pw", "peers"):
        loaded.user_ns.pop(name, None)


@pytest.fixture
def magic(loaded):
    return loaded.magics_manager.registry["DomainMagic"]


@pytest.fixture
def dm(loaded, magic, domain_broker, domain_agent, capsys):
    """The extension loaded and connected (password in a variable) to the broker of a two-peer domain."""
    loaded.user_ns.update(address=domain_broker.address, pw=PASSWORD)
    loaded.run_cell("%domain connect {address} domain:{pw}")
    capsys.readouterr()
    return loaded


@pytest.fixture
def outside(domain_broker):
    """A Domain client of its own: changes made 'from outside the magic'."""
    d = Domain(domain_broker.address, "domain", PASSWORD)
    yield d
    d.disconnect()


def start_teas(shell, tmp_path, te_peer: str | None = None) -> tuple[Process, Process]:
    shell.user_ns["archive"] = str(tmp_path / "teas")
    shell.user_ns["dba_pw"] = DBA_PASSWORD
    sm = shell.run_cell("%domain start sm teas --archive {archive} --init").result
    peer = f" --peer {te_peer}" if te_peer else ""
    te = shell.run_cell("%domain start te teas --dba dba:{dba_pw}" + peer).result
    return sm, te


# -- connecting ---------------------------------------------------------------------------------
def test_connect_binds_the_domain_and_registers_a_live_connection(loaded, domain_broker, domain_agent, capsys):
    loaded.user_ns.update(address=domain_broker.address, pw=PASSWORD)
    loaded.run_cell("%domain connect {address} domain:{pw}")
    out = capsys.readouterr().out
    assert out.startswith(f"connected to {domain_broker.address} as domain ('domain'): 2 peers, 0 databases")
    domain = loaded.user_ns["domain"]
    assert isinstance(domain, Domain) and domain.entry_peer.id == domain_broker.address
    connection = connections.get("domain")
    assert (connection.kind, connection.target, connection.status()) == \
        ("domain", f"domain@{domain_broker.address}", "connected")
    assert loaded.run_cell("%workbench").result.connections == \
        [("domain", "domain", f"domain@{domain_broker.address}", "connected")]
    loaded.run_cell("%domain disconnect")
    assert "disconnected 'domain'" in capsys.readouterr().out
    assert connections.get("domain") is None and "domain" not in loaded.user_ns
    assert domain.closed
    with pytest.raises(UsageError, match="^domain: not connected"):
        loaded.run_cell("%domain processes")


def test_the_password_is_prompted_and_never_appears_in_any_output(loaded, magic, domain_broker, domain_agent,
                                                                   capsys, tmp_path):
    prompts: list[str] = []
    magic.password_prompt = lambda prompt: prompts.append(prompt) or PASSWORD
    loaded.run_cell(f"%config DomainMagic.default_broker = '{domain_broker.address}'")
    loaded.run_cell("%domain connect")
    assert prompts == [f"password of domain on {domain_broker.address}: "]
    sm, te = start_teas(loaded, tmp_path)
    dash = loaded.run_cell("%domain").result
    assert dash.flush()
    seen = [capsys.readouterr(), repr(loaded.user_ns["domain"]), repr(connections.get("domain")),
            repr(loaded.run_cell("%workbench").result), loaded.run_cell("%workbench").result._repr_html_(),
            loaded.run_cell("%domain processes").result.to_string(), str(sm), str(te), dash.header.value,
            dash.processes_table.value, dash.log_view.value, repr(dash._repr_mimebundle_())]
    with pytest.raises(UsageError) as refused:
        loaded.run_cell("%domain start sm teas --archive /nonexistent/teas")
    seen.append(str(refused.value))
    seen += [str(v) for v in loaded.history_manager.output_hist.values()]
    seen += [repr(session) for session in magic.sessions.values()]
    text = "\n".join(map(str, seen))
    assert "teas" in text and "RUNNING" in text  # what was searched is the real output
    assert [item for item in seen if PASSWORD in str(item) or DBA_PASSWORD in str(item)] == []


def test_a_wrong_password_is_a_short_usage_error_and_leaves_nothing(loaded, domain_broker, capsys):
    loaded.user_ns.update(address=domain_broker.address, pw="not-" + PASSWORD)
    with pytest.raises(UsageError) as refused:
        loaded.run_cell("%domain connect {address} domain:{pw}")
    message = str(refused.value)
    assert message == f"domain: wrong domain user or password for domain@{domain_broker.address}"
    assert PASSWORD not in message and "\n" not in message
    assert connections.get("domain") is None and "domain" not in loaded.user_ns
    assert capsys.readouterr().out == ""


def test_a_password_typed_in_the_wrong_place_is_not_echoed(dm):
    dm.user_ns.update(dba_pw=DBA_PASSWORD)
    # Errors that quote what was typed: argparse's invalid value, an unknown process.
    for line, error in [("%domain start te teas --dba dba:{dba_pw} --wait dba:{dba_pw}",
                         "^domain start: argument --wait: invalid float value: 'dba:\\*\\*\\*'$"),
                        ("%domain stop domain:{pw}", "^domain: no process 'domain:\\*\\*\\*'")]:
        with pytest.raises(UsageError, match=error) as refused:
            dm.run_cell(line)
        assert PASSWORD not in str(refused.value) and DBA_PASSWORD not in str(refused.value)


def test_a_front_end_that_cannot_prompt_gets_a_short_usage_error(loaded, magic, domain_broker):
    def cannot_prompt(prompt):
        raise EOFError

    magic.password_prompt = cannot_prompt
    loaded.user_ns["address"] = domain_broker.address
    with pytest.raises(UsageError, match="cannot ask for one; write USER:{password}"):
        loaded.run_cell("%domain connect {address} domain")


def test_connect_checks_the_port_before_asking_for_the_password(loaded, magic):
    from workbench.ports import free_port

    prompts: list[str] = []
    magic.password_prompt = lambda prompt: prompts.append(prompt) or PASSWORD
    port = free_port()
    with pytest.raises(UsageError, match=f"^domain: cannot connect to 127.0.0.1:{port}: nothing answers there ") as refused:
        loaded.run_cell(f"%domain connect 127.0.0.1:{port}")
    assert str(refused.value).count(f"127.0.0.1:{port}") == 1  # the address is said once
    assert prompts == [] and connections.get("domain") is None


def test_zdb_connect_to_a_domain_database_asks_the_dba_password(dm, domain_broker, tmp_path, capsys):
    start_teas(dm, tmp_path)
    zdb = dm.magics_manager.registry["Zdb"]
    prompts: list[str] = []
    zdb.password_prompt = lambda prompt: prompts.append(prompt) or DBA_PASSWORD
    uri = f"zdb://dba@{domain_broker.address}/teas"
    dm.run_cell(f"%zdb connect {uri}")  # as the README shows it: no password in the URI
    assert prompts == [f"password of dba on {uri}: "]
    dm.run_cell('%zdb db["shift"] = {"on_call": "ops"}')
    assert dm.run_cell('%zdb db["shift"]').result == {"on_call": "ops"}
    assert DBA_PASSWORD not in capsys.readouterr().out + repr(connections.get("zdb"))
    dm.run_cell("%zdb disconnect")
    dm.user_ns.pop("db", None)


@pytest.mark.parametrize("line, error", [
    ("%domain connect 127.0.0.1:1 domain:pw-unused", "^domain: cannot connect to 127.0.0.1:1: "),
    ("%domain connect somehost:notaport domain:x", "^domain: the broker is HOST\\[:PORT\\]"),
    ("%domain frobnicate", "^domain: unknown command 'frobnicate'"),
    ("%domain processes", "^domain: not connected"),
    ("%domain connect a b c", "^domain connect: "),
])
def test_bad_lines_are_short_usage_errors(loaded, line, error):
    with pytest.raises(UsageError, match=error) as refused:
        loaded.run_cell(line)
    assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)


# -- processes ----------------------------------------------------------------------------------
def test_start_list_capture_stop_and_shut_down(dm, domain_broker, domain_agent, tmp_path, capsys):
    sm, te = start_teas(dm, tmp_path, te_peer=domain_agent.address)
    assert (sm.status, te.status) == ("RUNNING", "RUNNING")
    assert str(te) == f"localhost:{te.port} [pid={te.pid}] (TE)" and te.peer.id == domain_agent.address

    db = zdb_connect(f"zdb://dba:{DBA_PASSWORD}@{domain_broker.address}/teas")
    db["teas"] = ["sencha", "assam"]
    assert db["teas"][1]._run() == "assam"

    frame = dm.run_cell("%domain processes").result
    assert isinstance(frame, pandas.DataFrame)
    assert sorted(zip(frame["type"], frame["pid"], frame["status"])) == [("SM", sm.pid, "RUNNING"),
                                                                         ("TE", te.pid, "RUNNING")]
    dm.run_cell("%domain procs << processes teas")
    assert dm.user_ns["procs"].equals(frame)
    peers = dm.run_cell("%domain peers").result
    assert sorted(zip(peers["peer"], peers["role"])) == sorted([(domain_broker.address, "broker"),
                                                                (domain_agent.address, "agent")])
    databases = dm.run_cell("%domain databases").result
    assert databases.to_dict("records") == [{"database": "teas", "storage_managers": 1,
                                             "transaction_engines": 1, "status": "RUNNING"}]
    capsys.readouterr()

    dm.run_cell(f"%domain stop localhost:{te.port}")
    assert capsys.readouterr().out == f"stopped {te}\n"
    assert te.wait_for_left(0) and [p.pid for p in dm.user_ns["domain"].get_database("teas").processes] == [sm.pid]
    dm.run_cell("%domain shutdown teas")
    assert capsys.readouterr().out == "shut down teas: 1 of 1 processes stopped\n"
    assert dm.run_cell("%domain processes").result.empty
    assert list(dm.run_cell("%domain databases").result.columns) == \
        ["database", "storage_managers", "transaction_engines", "status"]


def test_process_errors_are_short_usage_errors(dm, tmp_path):
    cases = [
        ("%domain start sm teas", "^domain start: a storage manager needs --archive"),
        ("%domain start te teas", "^domain start: no running storage manager for this database"),
        ("%domain start sm teas --archive /nonexistent-dir/teas", "^domain start: archive does not exist"),
        ("%domain start te teas --peer nowhere:1", "^domain start: no peer 'nowhere:1'"),
        ("%domain start db teas", "^domain start: .*invalid choice"),
        ("%domain stop 4242424", "^domain: no process '4242424'"),
        ("%domain shutdown nothing", "^domain shutdown: no database 'nothing'"),
        ("%domain peers extra", "^domain: peers takes no arguments"),
        (f"%domain start sm x --archive {tmp_path} --init --dba dba:{DBA_PASSWORD}", "^domain start: --dba is for"),
    ]
    for line, error in cases:
        with pytest.raises(UsageError, match=error) as refused:
            dm.run_cell(line)
        assert "\n" not in str(refused.value) and DBA_PASSWORD not in str(refused.value), line


def test_a_failed_start_says_why(dm, tmp_path):
    archive = tmp_path / "full"
    archive.mkdir()
    (archive / "something").write_text("not an archive")
    dm.user_ns["archive"] = str(archive)
    with pytest.raises(UsageError, match="^domain start: archive is not empty"):
        dm.run_cell("%domain start sm teas --archive {archive} --init")
    assert dm.run_cell("%domain processes").result.empty


def test_config_options_reach_the_commands(dm, tmp_path, capsys):
    dm.run_cell("%config DomainMagic.wait_seconds = None")
    dm.user_ns["archive"] = str(tmp_path / "teas")
    sm = dm.run_cell("%domain start sm teas --archive {archive} --init").result
    assert sm.status == "STARTING"  # returned as soon as it was spawned
    assert sm.wait_for_status("RUNNING", 30) is sm
    dm.run_cell("%config DomainMagic.wait_seconds = 30.0")
    capsys.readouterr()
    dm.run_cell(f"%domain stop {sm.pid} --kill")
    assert capsys.readouterr().out == f"killed {sm}\n"


def completed_lines(shell, line: str) -> set[str]:
    """The lines a user can complete ``line`` to (as a front end would apply the completions)."""
    with provisionalcompleter():
        return {line[:c.start] + c.text for c in shell.Completer.completions(line, len(line))}


def test_tab_completion_offers_processes_databases_and_peers(dm, domain_broker, domain_agent, tmp_path):
    # IPython adds Jedi's Python completions to a magic's own; ours must all be there.
    sm, te = start_teas(dm, tmp_path)
    assert completed_lines(dm, "%domain stop ") >= {f"%domain stop {x}" for x in (
        sm.pid, te.pid, f"localhost:{sm.port}", f"localhost:{te.port}")}
    stop_lines = completed_lines(dm, "%domain stop localhost:")
    assert stop_lines >= {f"%domain stop localhost:{sm.port}", f"%domain stop localhost:{te.port}"}
    assert "%domain stop localhost:teas" not in stop_lines
    assert "%domain shutdown teas" in completed_lines(dm, "%domain shutdown t")
    assert completed_lines(dm, "%domain st") >= {"%domain start", "%domain stop"}
    peer_lines = completed_lines(dm, "%domain start te teas --peer ")
    assert peer_lines >= {f"%domain start te teas --peer {a}" for a in (domain_broker.address, domain_agent.address)}


# -- the dashboard ------------------------------------------------------------------------------
def test_dashboard_follows_a_te_started_and_killed_from_outside(dm, outside, domain_agent, tmp_path):
    dash = dm.run_cell("%domain").result
    assert isinstance(dash, DomainDashboard)
    assert dash.wait_for(lambda d: set(d.peers) == {p.id for p in outside.peers})
    assert not dash.processes and not dash.databases

    agent_peer = outside.get_peer(domain_agent.address)
    sm = outside.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
    te = agent_peer.start_transaction_engine("teas", wait_seconds=30)
    assert dash.wait_for(lambda d: d.processes.get(te.id, {}).get("status") == "RUNNING"
                         and d.processes.get(sm.id, {}).get("status") == "RUNNING", 30)
    assert dash.processes[te.id]["peer"] == domain_agent.address
    assert dash.databases["teas"] == {"database": "teas", "storage_managers": 1, "transaction_engines": 1,
                                      "status": "RUNNING"}
    assert dash.flush()
    assert str(te) in dash.processes_table.value and "RUNNING" in dash.databases_table.value
    assert f"process_joined {te}" in dash.log_view.value

    os.kill(te.pid, signal.SIGKILL)
    assert dash.wait_for(lambda d: te.id not in d.processes, 30)
    assert list(dash.processes) == [sm.id]
    assert dash.databases["teas"]["transaction_engines"] == 0
    assert any(line.split(" ", 2)[1] == "process_failed" for line in dash.log)
    assert dash.flush()
    assert str(te) not in dash.processes_table.value and f"process_left {te}" in dash.log_view.value


def test_dashboard_buttons_stop_start_and_shut_down(dm, domain_agent, tmp_path):
    sm, te = start_teas(dm, tmp_path)
    dash = dm.run_cell("%domain").result
    assert dash.wait_for(lambda d: len(d.processes) == 2) and dash.flush()
    assert {value for _, value in dash.process_picker.options} == {sm.id, te.id}

    dash.process_picker.value = te.id
    dash.stop_button.click()
    assert dash.wait_for(lambda d: te.id not in d.processes, 30)
    assert dash.wait_for(lambda d: any(f"action stop {te}: done" in line for line in d.log))

    assert dash.flush()
    dash.database_picker.value = "teas"
    dash.peer_picker.value = domain_agent.address
    dash.start_te_button.click()  # with the dba options `%domain start te --dba` gave
    assert dash.wait_for(lambda d: any(p["type"] == "TE" and p["status"] == "RUNNING"
                                       and p["peer"] == domain_agent.address for p in d.processes.values()), 30)
    db = zdb_connect(f"zdb://dba:{DBA_PASSWORD}@{dm.user_ns['domain'].broker_addr}/teas")
    db["ok"] = 1
    assert db["ok"]._run() == 1

    dash.shutdown_button.click()
    assert dash.wait_for(lambda d: not d.processes and not d.databases, 60)
    assert dash.wait_for(lambda d: any("action shut down teas: done" in line for line in d.log), 30)


def test_dashboard_buttons_without_a_choice_say_so(dm):
    dash = dm.run_cell("%domain").result
    assert dash.flush()
    assert dash.stop_process() is None and dash.shutdown_database() is None
    assert dash.start_transaction_engine() is None
    assert dash.start_description() is None and dash.stop_description() is None
    notes = [line.split(" ", 2)[2] for line in dash.log if " action " in line]
    assert notes == ["stop description: choose a description first", "start description: choose a description first",
                     "start TE: choose a database and a peer first", "shut down: choose a database first",
                     "stop: choose a running process first"]


def test_a_failed_action_is_logged_not_raised(dm, domain_broker):
    dash = dm.run_cell("%domain").result
    assert dash.wait_for(lambda d: domain_broker.address in d.peers)
    thread = dash.start_transaction_engine("nosuchdb", peer_id=domain_broker.address)
    thread.join(30)
    assert [line.split(" ", 2)[2] for line in list(dash.log)[:2]] == [
        f"start TE of nosuchdb on {domain_broker.address} failed: no running storage manager for this database",
        f"start TE of nosuchdb on {domain_broker.address} requested"]


def test_unload_closes_sessions_and_dashboards(loaded, magic, domain_broker):
    loaded.user_ns.update(address=domain_broker.address, pw=PASSWORD)
    loaded.run_cell("%domain connect {address} domain:{pw}")
    recorder = EventRecorder()
    dash = loaded.run_cell("%domain").result
    session = magic.sessions["domain"]
    session.add_listener(recorder)
    loaded.run_cell("%unload_ext workbench")
    try:
        assert dash.closed and session.closed and session.connection_status() == "closed"
        assert recorder.wait_for("closed")
        assert not any("%domain" in chain for chain in loaded.strdispatchers["complete_command"].strs)
    finally:
        loaded.run_cell("%load_ext workbench")


def test_the_dashboard_hears_when_the_broker_goes_away(loaded, tmp_path, known_brokers):
    broker = Agent(port=0, state_dir=tmp_path / "short-lived", domain_user="domain", domain_password=PASSWORD,
                   broker=True).start()
    loaded.user_ns.update(address=broker.address, pw=PASSWORD)
    loaded.run_cell("%domain connect {address} domain:{pw}")
    dash = loaded.run_cell("%domain").result
    broker.stop()
    assert dash.wait_for(lambda d: d.closed_by_source, 30)
    assert connections.get("domain").status() == "closed"
    with pytest.raises(UsageError, match="is closed; connect again"):
        loaded.run_cell("%domain processes")


def test_descriptions_and_the_reconciler_show_on_the_dashboard(dm, outside, tmp_path):
    templates = dm.run_cell("%domain templates").result
    assert list(templates["template"]) == [t.name for t in outside.templates] and "Single Host" in list(
        templates["template"])
    dash = dm.run_cell("%domain").result
    outside.create_description("chai", "Single Host", dba_user="dba", dba_password=DBA_PASSWORD,
                               archive_dir=str(tmp_path / "chai"))
    assert dash.wait_for(lambda d: d.descriptions.get("chai", {}).get("status") == "STOPPED")
    assert dash.flush() and [value for _, value in dash.description_picker.options] == ["chai"]
    dash.start_description_button.click()  # the picker chose the only description
    assert dash.wait_for(lambda d: d.descriptions["chai"]["status"] == "RUNNING"
                         and d.databases.get("chai", {}).get("status") == "RUNNING", 30)
    assert dash.descriptions["chai"] == {"description": "chai", "template": "Single Host", "status": "RUNNING",
                                         "started": True, "variables": ""}
    frame = dm.run_cell("%domain descriptions").result
    assert frame.to_dict("records") == [dash.descriptions["chai"]]

    te = outside.get_database("chai").transaction_engines[0]
    os.kill(te.pid, signal.SIGKILL)
    assert dash.wait_for(lambda d: te.id not in d.processes and any(
        p["database"] == "chai" and p["type"] == "TE" and p["status"] == "RUNNING" for p in d.processes.values()), 60)
    assert any(" reconciler_action chai: start transaction engine" in line for line in dash.log)
    assert dash.flush() and "chai" in dash.descriptions_table.value

    dash.description_picker.value = "chai"
    dash.stop_description_button.click()
    assert dash.wait_for(lambda d: "chai" not in d.databases and not d.descriptions["chai"]["started"], 60)
    assert dash.wait_for(lambda d: any("action stop description chai: done" in line for line in d.log))
    outside.delete_description("chai")
    assert dash.wait_for(lambda d: not d.descriptions)
    assert dm.run_cell("%domain descriptions").result.empty


def test_description_commands_declare_start_stop_and_delete(dm, tmp_path, capsys):
    dm.user_ns.update(archive=str(tmp_path / "oolong"), dba_pw=DBA_PASSWORD)
    created = dm.run_cell('%domain description create oolong "Multi Host" --var TE_COUNT=2 '
                          '--dba dba:{dba_pw} --archive-dir {archive}').result
    assert str(created) == "oolong [template=Multi Host] (STOPPED)" and created.variables == {"TE_COUNT": "2"}
    assert "%domain description start oolong" in completed_lines(dm, "%domain description start o")
    updated = dm.run_cell("%domain description update oolong --var TE_COUNT=1").result
    assert updated is created and created.variables == {"TE_COUNT": "1"}
    started = dm.run_cell("%domain description start oolong --wait 60").result
    assert started is created and created.status == "RUNNING"
    assert sorted(dm.run_cell("%domain processes oolong").result["type"]) == ["SM", "TE"]
    db = zdb_connect(f"zdb://dba:{DBA_PASSWORD}@{dm.user_ns['domain'].broker_addr}/oolong")
    db["leaves"] = 3
    assert db["leaves"]._run() == 3
    running = dm.user_ns["domain"].get_database("oolong").processes
    assert dm.run_cell("%domain description stop oolong").result.started is False
    assert len(running) == 2 and all(p.wait_for_left(30) for p in running)
    capsys.readouterr()
    dm.run_cell("%domain description delete oolong")
    assert capsys.readouterr().out == "deleted description oolong\n"
    assert dm.run_cell("%domain descriptions").result.empty


@pytest.mark.parametrize("line, error", [
    ("%domain description create chai", "^domain description: create NAME TEMPLATE"),
    ("%domain description create chai Huge", "^domain description create: no template named 'Huge'"),
    ("%domain description create chai 'Multi Host' --var TE_COUNT", "^domain description: variables are NAME=VALUE"),
    ("%domain description start nothing", "^domain description start: no description named 'nothing'"),
    ("%domain description start chai --dba dba", "^domain description: a template name, --dba"),
    ("%domain description frob chai", "^domain description: .*invalid choice"),
])
def test_description_errors_are_short_usage_errors(dm, line, error):
    with pytest.raises(UsageError, match=error) as refused:
        dm.run_cell(line)
    assert "\n" not in str(refused.value)
    assert dm.run_cell("%domain descriptions").result.empty


def test_a_shutdown_always_waits_for_each_group():
    from workbench_jupyter.domain_dashboard import shutdown_wait

    assert (shutdown_wait(None), shutdown_wait(0), shutdown_wait(0.0), shutdown_wait(5.0)) == (30.0, 86400.0,
                                                                                            86400.0, 5.0)
