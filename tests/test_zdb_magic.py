"""The %zdb magics and the zdb dashboard, against real in-process storage managers and replicas."""

from __future__ import annotations

import pandas
import pytest
from IPython.core.error import UsageError

from workbench.zdb import StorageManager
from workbench.zdb.client import Proxy
from workbench.zdb.monitor import ZdbMonitor
from workbench_jupyter import connections
from workbench_jupyter.zdb import ZdbStatus, parse_address, redact
from workbench_jupyter.zdb_dashboard import ZdbDashboard, describe_op

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def loaded(loaded):
    """The shared loaded shell, minus the variables these tests create."""
    yield loaded
    for name in ("db", "address", "result", "total", "people"):
        loaded.user_ns.pop(name, None)


@pytest.fixture
def zdb(loaded, sm, capsys):
    """The extension loaded and connected to a fresh storage manager as `db`."""
    loaded.user_ns["address"] = sm.address
    loaded.run_cell("%config Zdb.timeout = 5.0")
    loaded.run_cell("%zdb connect {address}")
    capsys.readouterr()
    return loaded


def value(shell, cell: str):
    return shell.run_cell(cell).result


# -- connecting ---------------------------------------------------------------------------------
def test_connect_binds_db_registers_a_live_connection_and_confirms(loaded, sm, capsys):
    loaded.user_ns["address"] = sm.address
    loaded.run_cell("%zdb connect {address}")
    out = capsys.readouterr().out
    assert out.startswith(f"connected to {sm.address} as 'zdb': 0 keys, seq 0")
    assert isinstance(loaded.user_ns["db"], Proxy)
    connection = connections.get("zdb")
    assert (connection.kind, connection.target, connection.status()) == ("zdb", sm.address, "connected")
    assert callable(connection.client.add_listener) and callable(connection.client.remove_listener)
    assert value(loaded, "%workbench").connections == [("zdb", "zdb", sm.address, "connected")]


def test_connect_twice_under_one_name_replaces_and_disconnect_forgets(loaded, sm, capsys):
    loaded.user_ns["address"] = sm.address
    loaded.run_cell("%zdb connect {address}")
    first = connections.get("zdb").client
    loaded.run_cell("%zdb connect {address}")
    assert first.closed and connections.get("zdb").client is not first
    loaded.run_cell("%zdb disconnect")
    assert "disconnected 'zdb'" in capsys.readouterr().out
    assert connections.get("zdb") is None and "db" not in loaded.user_ns
    with pytest.raises(UsageError, match="not connected"):
        loaded.run_cell("%zdb db['x']")


def test_two_named_connections_and_connection_option(loaded, sm, tmp_path):
    other = StorageManager(tmp_path / "other", bind="tcp://127.0.0.1:0").start()
    try:
        loaded.user_ns.update(address=sm.address, other=other.address)
        loaded.run_cell("%zdb connect {address} --name main")
        loaded.run_cell("%zdb db['where'] = 'main'")
        loaded.run_cell("%zdb connect {other} --name other")
        loaded.run_cell("%zdb db['where'] = 'other'")       # the last connected is current
        assert value(loaded, "%zdb -c main db['where']") == "main"
        assert value(loaded, "%zdb --connection=other db['where']") == "other"
        assert loaded.user_ns["db"]._client is connections.get("other").client.client  # -c is for one query
        assert {c.name for c in connections} == {"main", "other"}
    finally:
        loaded.run_cell("%zdb disconnect other")
        other.stop()


def test_read_your_writes_through_a_replica(loaded, sm, te, capsys):
    loaded.user_ns.update(address=sm.address, replica=te.address)
    loaded.run_cell("%zdb connect {address} {replica} --read-your-writes")
    assert f"(reads: {te.address})" in capsys.readouterr().out
    for n in range(20):
        loaded.run_cell(f"%zdb db['n'] = {n}")
        assert value(loaded, "%zdb db['n']") == n  # read on the replica, after our write


def test_config_options_reach_the_magic(loaded, sm):
    loaded.run_cell("%config Zdb.variable = 'teas'")
    loaded.run_cell("%config Zdb.dashboard_max_rate = 4.0")
    loaded.run_cell("%config Zdb.recent_writes = 2")
    try:
        loaded.user_ns["address"] = sm.address
        loaded.run_cell("%zdb connect {address}")
        assert isinstance(loaded.user_ns["teas"], Proxy) and "db" not in loaded.user_ns
        loaded.run_cell("%zdb teas['x'] = 1")
        assert value(loaded, "%zdb teas['x']") == 1
        dash = value(loaded, "%zdb dashboard")
        assert dash.max_rate == 4.0 and dash.recent.maxlen == 2
    finally:
        loaded.run_cell("%config Zdb.variable = 'db'")
        loaded.run_cell("%config Zdb.dashboard_max_rate = 10.0")
        loaded.run_cell("%config Zdb.recent_writes = 8")
        loaded.user_ns.pop("teas", None)


# -- queries ------------------------------------------------------------------------------------
def test_the_seed_session_through_the_magic(zdb, capsys):
    zdb.run_cell("%zdb db['x'] = 3")
    assert value(zdb, "%zdb db['x']") == 3
    zdb.run_cell("%zdb db['l'] = list(range(10))")
    zdb.run_cell("%zdb db['l'][4] = ['a', 'b', 'c']")
    assert value(zdb, "%zdb db['l'][4]") == ["a", "b", "c"]
    zdb.run_cell("%zdb undo")
    assert value(zdb, "%zdb db['l'][4]") == 4
    zdb.run_cell("%zdb redo")
    assert value(zdb, "%zdb db['l'][4][1]") == "b"
    out = capsys.readouterr().out
    assert "undo done (seq 4)\n" in out and "redo done (seq 5)\n" in out
    assert value(zdb, "%zdb [v * v for v in db['l'] if isinstance(v, int) and v % 2]") == [1, 9, 25, 49, 81]
    assert value(zdb, "%zdb db['l'].append(10)") is None  # a statement-like call: no output
    assert value(zdb, "%zdb len(db['l'])") == 11
    assert value(zdb, "%zdb 'x' in db") is True


def test_queries_see_user_variables_and_cells_return_their_last_expression(zdb):
    zdb.run_cell("%zdb db['l'] = list(range(10))")
    zdb.user_ns["i"] = 7
    assert value(zdb, "%zdb db['l'][i]") == 7
    cell = "%%zdb\ntotal = 0\nfor v in db['l']:\n    total += v\ntotal\n"
    assert value(zdb, cell) == 45
    assert zdb.user_ns["total"] == 45  # cells run in the user namespace, like IPython
    assert value(zdb, "%%zdb\ndb['y'] = {'a': [1, 2]}\n") is None  # no final expression
    assert value(zdb, "%%zdb\n    db['y']['a']\n") == [1, 2]   # an indented cell is dedented


def test_capture_with_double_angle(zdb):
    zdb.run_cell("%zdb db['l'] = list(range(5))")
    assert value(zdb, "%zdb result << db['l']") is None
    assert zdb.user_ns["result"] == [0, 1, 2, 3, 4]
    assert value(zdb, "%%zdb total <<\nsum(v for v in db['l'])") is None
    assert zdb.user_ns["total"] == 10
    zdb.run_cell("%zdb result << status")  # commands can be captured too
    assert isinstance(zdb.user_ns["result"], ZdbStatus)


def test_lists_of_dicts_become_dataframes_on_request(zdb):
    zdb.run_cell("%zdb db['people'] = [{'name': 'ada', 'age': 36}, {'name': 'alan', 'age': 41}]")
    assert isinstance(value(zdb, "%zdb db['people']"), list)
    frame = value(zdb, "%zdb --df db['people']")
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == ["name", "age"] and frame["age"].tolist() == [36, 41]
    zdb.run_cell("%zdb --df people << db['people']")
    assert isinstance(zdb.user_ns["people"], pandas.DataFrame)
    zdb.run_cell("%config Zdb.dataframe = True")
    try:
        assert isinstance(value(zdb, "%zdb db['people']"), pandas.DataFrame)
        assert value(zdb, "%zdb db['people'][0]") == {"name": "ada", "age": 36}  # not a list of dicts
        zdb.run_cell("%zdb db['nums'] = [1, 2]")
        assert value(zdb, "%zdb db['nums']") == [1, 2]
    finally:
        zdb.run_cell("%config Zdb.dataframe = False")


# -- commands -----------------------------------------------------------------------------------
def test_save_and_status(zdb, capsys):
    zdb.run_cell("%zdb db['x'] = 1")
    zdb.run_cell("%zdb save")
    assert capsys.readouterr().out == "saved: journal synced at seq 1, checkpoint started\n"
    status = value(zdb, "%zdb status")
    assert isinstance(status, ZdbStatus)
    assert (status["seq"], status["keys"], status["role"], status["locked"]) == (1, 1, "sm", False)
    assert "seq                1" in repr(status) and "<th>keys</th><td>1</td>" in status._repr_html_()


def test_lock_and_unlock(zdb, sm, capsys, connect):
    zdb.run_cell("%zdb lock --lease 2")
    assert value(zdb, "%zdb status")["locked"] is True
    zdb.run_cell("%zdb db['x'] = 1")  # the holder writes as usual
    _, other = connect(sm.address)
    with pytest.raises(Exception, match="locked by another client"):
        other.lock(wait=0.3)
    zdb.run_cell("%zdb unlock")
    assert value(zdb, "%zdb status")["locked"] is False
    out = capsys.readouterr().out
    assert f"locked {sm.address}" in out and f"unlocked {sm.address}" in out
    with pytest.raises(UsageError, match=r"zdb: LockError: unlock of a lock you do not hold"):
        zdb.run_cell("%zdb unlock")


def test_lock_held_elsewhere_is_a_short_error(zdb, sm, connect):
    _, other = connect(sm.address)
    other.lock()
    try:
        with pytest.raises(UsageError, match=r"^zdb: LockError: timed out waiting"):
            zdb.run_cell("%zdb lock --wait 0.3")
    finally:
        other.unlock()


# -- errors -------------------------------------------------------------------------------------
def test_errors_are_short_usage_errors(loaded, zdb):
    cases = {
        "%zdb db['nope']": r"^zdb: KeyError: 'nope'",
        "%zdb db['l'][99]": r"^zdb: IndexError: list index out of range",
        "%zdb db[": r"^zdb: SyntaxError: '\[' was never closed \(line 1\)",
        "%zdb undefined_name + 1": r"^zdb: NameError: name 'undefined_name' is not defined",
        "%zdb undo now": r"^zdb: undo takes no arguments",
        "%zdb lock --lease": r"^zdb lock: argument --lease: expected one argument",
        "%zdb -c elsewhere db": r"^zdb: no zdb connection named 'elsewhere'",
        "%zdb": r"^usage: %zdb connect URI",
        "%%zdb db\ndb['x']": r"the %%zdb line takes options",
        "%zdb connect": r"^zdb connect: the following arguments are required: uri",
        "%zdb connect http://example.org": r"^zdb: not a zdb address",
        "%zdb connect tcp://127.0.0.1:1 --read-your-writes": r"needs a READ_URI",
        "%zdb disconnect nothing": r"no zdb connection named 'nothing'",
    }
    with pytest.raises(UsageError, match=r"^zdb: UndoError: nothing to undo$"):
        zdb.run_cell("%zdb undo")  # a fresh database
    zdb.run_cell("%zdb db['x'] = 3")
    zdb.run_cell("%zdb db['l'] = [1]")
    cases["%zdb db['x'].append(1)"] = r"^zdb: TypeError: int is not a container"
    for cell, pattern in cases.items():
        with pytest.raises(UsageError, match=pattern):
            zdb.run_cell(cell)


def test_not_connected_and_unreachable_server(loaded):
    with pytest.raises(UsageError, match=r"^zdb: not connected \(%zdb connect URI first\)"):
        loaded.run_cell("%zdb db['x']")
    with pytest.raises(UsageError, match="not connected"):
        loaded.run_cell("%zdb undo")
    loaded.run_cell("%config Zdb.timeout = 0.3")
    try:
        with pytest.raises(UsageError, match=r"^zdb: no answer from tcp://127.0.0.1:9 within 0.3s"):
            loaded.run_cell("%zdb connect tcp://127.0.0.1:9")
    finally:
        loaded.run_cell("%config Zdb.timeout = 10.0")
    assert connections.get("zdb") is None


def test_a_name_taken_by_another_kind_of_connection_is_refused(zdb):
    from workbench_jupyter import Connection

    connections.add(Connection("prod", "domain", "localhost:48004"))
    with pytest.raises(UsageError, match="'prod' is already a domain connection"):
        zdb.run_cell("%zdb connect tcp://127.0.0.1:1 --name prod")


# -- credentials --------------------------------------------------------------------------------
def test_parse_address():
    address = parse_address("zdb://alice:p%40ss@db1:5559/teas")
    assert (address.endpoint, address.user, address.password) == ("tcp://db1:5559", "alice", "p@ss")
    assert address.shown == "zdb://alice@db1:5559/teas" and "p@ss" not in repr(address)
    assert address.database == "teas"  # a path names a database of the domain whose broker is db1:5559
    assert parse_address("zdb://alice:pw@db1:5559").database is None  # no path: a zdb server itself
    assert parse_address("tcp://127.0.0.1:5559").endpoint == "tcp://127.0.0.1:5559"
    assert parse_address("tcp://bob:x/y@h:1").password == "x/y"
    assert parse_address("ipc:///tmp/zdb.sock").endpoint == "ipc:///tmp/zdb.sock"
    with pytest.raises(UsageError, match="needs a user"):
        parse_address("zdb://:pw@h:1")
    with pytest.raises(UsageError) as info:
        parse_address("http://u:topsecret@h:1")
    assert "topsecret" not in str(info.value)
    assert redact("to zdb://u:pw@h:1 and tcp://v:w@h:2 or extra", ("extra",)) == \
        "to zdb://u:***@h:1 and tcp://v:***@h:2 or ***"


@pytest.fixture
def secured(tmp_path):
    server = StorageManager(tmp_path / "secured", bind="tcp://127.0.0.1:0", users={"alice": PASSWORD}).start()
    yield server
    server.stop()


def test_the_password_is_never_shown(loaded, secured, capsys):
    host_port = secured.address.removeprefix("tcp://")
    loaded.user_ns["uri"] = f"zdb://alice:{PASSWORD}@{host_port}"
    shown = []
    loaded.run_cell("%zdb connect {uri}")
    loaded.run_cell("%zdb db['x'] = [1, 2]")
    shown.append(repr(value(loaded, "%zdb db['x']")))
    shown.append(repr(loaded.user_ns["db"]))
    shown.append(repr(loaded.user_ns["db"]["x"]))
    status = value(loaded, "%workbench")
    shown += [repr(status), status._repr_html_()]
    zdb_status = value(loaded, "%zdb status")
    shown += [repr(zdb_status), zdb_status._repr_html_()]
    dash = value(loaded, "%zdb dashboard")
    assert dash.flush()
    assert dash.sizes == {"x": 2}  # the dashboard's reader logged in too
    shown += [dash.header.value, str(dash._repr_mimebundle_())]
    for bad in ["%zdb db['nope']", "%zdb connect {uri} --nmae x", "%zdb connect {uri} extra words",
                f"%zdb connect zdb://alice:wrong-{PASSWORD}@{host_port}",
                f"%zdb connect zdb://alice:{PASSWORD}@{host_port} tcp://bob:{PASSWORD}@{host_port}"]:
        with pytest.raises(UsageError) as info:
            loaded.run_cell(bad)
        shown.append(str(info.value))
    shown.append(capsys.readouterr().out)
    assert f"zdb://alice@{host_port}" in shown[-1]
    assert any("wrong database user or password" in text for text in shown)
    for text in shown:
        assert PASSWORD not in text, text
    assert connections.get("zdb").target == f"zdb://alice@{host_port}"


def test_a_wrong_password_is_a_usage_error(loaded, secured):
    host_port = secured.address.removeprefix("tcp://")
    with pytest.raises(UsageError, match=r"^zdb: cannot connect to zdb://alice@.*wrong database user"):
        loaded.run_cell(f"%zdb connect zdb://alice:nope@{host_port}")
    assert connections.get("zdb") is None


def test_a_user_without_a_password_is_asked_for_it_masked(loaded, secured, capsys):
    host_port = secured.address.removeprefix("tcp://")
    prompts: list[str] = []
    magic = loaded.magics_manager.registry["Zdb"]
    magic.password_prompt = lambda prompt: prompts.append(prompt) or PASSWORD
    loaded.run_cell(f"%zdb connect zdb://alice@{host_port}")
    assert prompts == [f"password of alice on zdb://alice@{host_port}: "]
    loaded.run_cell("%zdb db['shift'] = {'on_call': 'ops'}")
    assert value(loaded, "%zdb db['shift']") == {"on_call": "ops"}
    assert PASSWORD not in capsys.readouterr().out + repr(connections.get("zdb"))
    loaded.run_cell("%zdb disconnect")
    magic.password_prompt = lambda prompt: ""
    with pytest.raises(UsageError, match="^zdb: no password given$"):
        loaded.run_cell(f"%zdb connect zdb://alice@{host_port}")
    assert connections.get("zdb") is None


# -- the dashboard ------------------------------------------------------------------------------
def test_describe_op():
    assert describe_op([["l"], "__setitem__", [4, ["a", "b", "c"]], {}]) == "db['l'][4] = ['a', 'b', 'c']"
    assert describe_op([[], "__delitem__", ["x"], {}]) == "del db['x']"
    assert describe_op([["l"], "sort", [], {"reverse": True}]) == "db['l'].sort(reverse=True)"
    assert describe_op([["l"], "extend", [list(range(100))], {}]).endswith("…")


def test_dashboard_follows_real_writes(zdb, sm):
    zdb.run_cell("%zdb db['x'] = 3")
    zdb.run_cell("%zdb db['l'] = list(range(10))")
    dash = value(zdb, "%zdb dashboard")
    assert isinstance(dash, ZdbDashboard)
    assert dash.flush()
    # state from before the dashboard: read once (keys + one len per key)
    assert dash.sizes == {"x": None, "l": 10} and dash.seq == 2
    assert "<td>&#x27;l&#x27;</td><td>10</td>" in dash.keys_table.value
    assert "<td>&#x27;x&#x27;</td><td>—</td>" in dash.keys_table.value
    assert "no writes seen yet" in dash.writes_table.value

    zdb.run_cell("%zdb db['l'][4] = ['a', 'b', 'c']")
    zdb.run_cell("%zdb db['l'].append(10)")
    zdb.run_cell("%zdb db['d'] = {'k': 1, 'j': 2}")
    zdb.run_cell("%zdb del db['x']")
    assert dash.flush()
    assert dash.sizes == {"l": 11, "d": 2}
    assert dash.seq == 6 and dash.header.value.startswith(f"<b>{sm.address}</b>: seq 6")
    assert [seq for seq, _, _ in dash.recent] == [6, 5, 4, 3]
    assert "db[&#x27;l&#x27;].append(10)" in dash.writes_table.value
    assert "del db[&#x27;x&#x27;]" in dash.writes_table.value

    zdb.run_cell("%zdb undo")  # undone writes show as what the undo applied
    assert dash.flush()
    assert dash.recent[0][:2] == (7, "undo") and dash.sizes == {"l": 11, "d": 2, "x": None}

    zdb.run_cell("%zdb db.update({'x': [1, 2, 3], 'e': []})")  # a root update: every size re-read
    assert dash.flush()
    assert dash.sizes == {"l": 11, "d": 2, "x": 3, "e": 0}

    zdb.run_cell("%zdb save")
    assert dash.wait_for(lambda d: d.status.get("snapshot_seq") == 8)  # arrives with a heartbeat
    assert dash.flush() and "snapshot 8" in dash.header.value
    assert dash.wait_for(lambda d: d.status.get("writes", 0) >= 6 and d.status.get("clients", 0) >= 2)
    assert dash.flush() and "writes " in dash.counters.value


def test_dashboard_coalesces_a_burst_into_few_reads(zdb):
    zdb.run_cell("%zdb db['l'] = []")
    dash = value(zdb, "%zdb dashboard")
    assert dash.flush()
    zdb.run_cell("%%zdb\nfor n in range(300):\n    db['l'].append(n)")
    assert dash.flush()
    assert dash.sizes == {"l": 300}
    assert dash.render_count < 100  # far fewer renders (and len reads) than writes


def test_dashboard_shows_replica_lag(zdb, te):
    dash = value(zdb, "%zdb dashboard")
    zdb.run_cell("%zdb db['x'] = 1")
    assert dash.wait_for(lambda d: d.replicas.get(te.address, {}).get("seq") == 1)
    assert dash.replicas[te.address]["lag"] == 0
    assert dash.flush() and f"<td>{te.address}</td><td>1</td><td>0</td>" in dash.replicas_table.value


def test_dashboard_waits_out_a_lock_instead_of_blocking(zdb, sm, connect):
    db, other = connect(sm.address)
    db["l"] = [1]
    dash = value(zdb, "%zdb dashboard")
    assert dash.flush() and dash.sizes == {"l": 1}
    other.lock()
    try:
        db["l"].append(2)
        # The lock's heartbeat comes before the append's record: the dashboard knows not to read.
        assert dash.wait_for(lambda d: d.status.get("locked") is True and d.seq == 2
                             and "(stale)" in d.keys_table.value)
        assert dash.sizes == {"l": 1} and dash.size_error is None
    finally:
        other.unlock()
    assert dash.wait_for(lambda d: d.sizes == {"l": 2})


def test_dashboard_over_a_bare_monitor(sm, connect):
    db, _ = connect(sm.address)
    db["a"] = [1, 2]
    with ZdbMonitor(sm.address) as monitor:
        dash = ZdbDashboard(monitor, title="bare", max_rate=20)
        try:
            assert dash.flush() and dash.sizes == {"a": 2}
            db["a"].append(3)
            assert dash.flush() and dash.sizes == {"a": 3}
            assert dash._repr_mimebundle_()["text/plain"] == "ZdbDashboard(bare)"
        finally:
            dash.close()
        assert dash.reader._closed  # the reader it made itself is closed with it


def test_workbench_events_feed_works_on_a_zdb_connection(zdb):
    from workbench.events import EventRecorder

    feed = value(zdb, "%workbench events zdb")
    recorder = EventRecorder()
    connections.get("zdb").client.add_listener(recorder)
    zdb.run_cell("%zdb db['x'] = 1")
    recorder.wait_for("record_applied")
    assert feed.flush()
    assert feed.counts["record_applied"] == 1 and feed.counts["server_status"] >= 1


# -- unloading ----------------------------------------------------------------------------------
def test_unload_closes_connections_and_dashboards(shell, sm):
    shell.run_cell("%load_ext workbench")
    shell.run_cell("%load_ext workbench")  # loading twice is harmless
    shell.user_ns["address"] = sm.address
    shell.run_cell("%zdb connect {address}")
    dash = value(shell, "%zdb dashboard")
    feed = value(shell, "%workbench events zdb")
    session = connections.get("zdb").client
    assert sum(type(c).__name__ == "Zdb" for c in shell.configurables) == 1
    shell.run_cell("%unload_ext workbench")
    assert dash.closed and feed.closed and session.closed
    assert session.client._closed and session._monitor._stop.is_set()
    assert dash.reader._closed
    assert connections.get("zdb") is None and "db" not in shell.user_ns
    assert all("zdb" not in shell.magics_manager.magics[kind] for kind in ("line", "cell"))
    assert not any(type(c).__name__ == "Zdb" for c in shell.configurables)
    with pytest.raises(UsageError):
        shell.run_cell("%zdb status")
    shell.run_cell("%load_ext workbench")  # and back
    shell.run_cell("%zdb connect {address}")
    assert value(shell, "%zdb db.keys()") == []
    shell.run_cell("%unload_ext workbench")
    shell.user_ns.pop("address", None)
