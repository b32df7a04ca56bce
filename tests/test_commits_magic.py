"""The %commits magics and the live table, against real commits servers (and real ZooKeeper)."""

from __future__ import annotations

import pandas
import pytest
from IPython.core.error import UsageError

from workbench.commits.client import CommitClient, RainerClient
from workbench_jupyter import connections
from workbench_jupyter.commits import CommitDiff, CommitHistory, CommitsMagic
from workbench_jupyter.commits_dashboard import CommitsDashboard
from workbench.testing.commits_servers import ZK_PATH, rainer, rainer_zk  # noqa: F401


@pytest.fixture
def loaded(loaded):
    """The shared loaded shell, minus the variables these tests create."""
    yield loaded
    for name in ("url", "zk", "old", "history", "dash", "value"):
        loaded.user_ns.pop(name, None)


@pytest.fixture
def connected(loaded, rainer, capsys):
    """The extension loaded and connected by URL to a fresh server."""
    loaded.user_ns["url"] = rainer.url
    loaded.run_cell("%config CommitsMagic.author = 'nb'")
    loaded.run_cell("%commits connect {url}")
    capsys.readouterr()
    yield loaded
    loaded.run_cell("%config CommitsMagic.author = ''")


@pytest.fixture
def other(rainer):
    """Someone else, committing to the same server."""
    with CommitClient(rainer.url, author="other") as client:
        yield client


def value(shell, cell: str):
    return shell.run_cell(cell).result


def magics(shell) -> CommitsMagic:
    return next(c for c in shell.configurables if isinstance(c, CommitsMagic))


# -- connecting ---------------------------------------------------------------------------------------
def test_connect_by_url_registers_and_says_there_is_no_push(loaded, rainer, other, capsys):
    other.save("foo", {"hey": "what"})
    loaded.user_ns["url"] = rainer.url
    loaded.run_cell("%commits connect {url}")
    out = capsys.readouterr().out
    assert out.startswith(f"connected to {rainer.url} as 'commits': 1 key;")
    assert "no push channel" in out
    connection = connections.get("commits")
    assert (connection.kind, connection.target) == ("commits", rainer.url)
    assert connection.status() == "connected (refresh on demand)"
    assert value(loaded, "%workbench").connections == [("commits", "commits", rainer.url,
                                                       "connected (refresh on demand)")]
    loaded.run_cell("%commits disconnect")
    assert connections.get("commits") is None and connection.client.closed


def test_two_connections_and_the_connection_option(loaded, rainer, tmp_path, capsys):
    from workbench.testing.commits_servers import start_rainer

    second = start_rainer(tmp_path / "second")
    try:
        loaded.user_ns.update(url=rainer.url, second=second.url)
        loaded.run_cell("%commits connect {url} --name first")
        loaded.run_cell("%commits connect {second} --name second")
        loaded.run_cell("%%commits where -m here\n\"second\"\n")        # the last connected is current
        loaded.run_cell("%%commits where -m here -c first\n\"first\"\n")
        assert value(loaded, "%commits show where") == "second"
        assert value(loaded, "%commits -c first show where") == "first"
        loaded.run_cell("%commits value << --connection first show where")
        assert loaded.user_ns["value"] == "first"
        assert value(loaded, "%commits -c first").title == "first"
        assert completions(loaded, "%commits -c first show wh") == ["where"]
        with pytest.raises(UsageError, match="no commits connection named 'third'"):
            loaded.run_cell("%commits -c third show where")
        assert {c.name for c in connections} == {"first", "second"}
    finally:
        loaded.run_cell("%commits disconnect second")
        loaded.run_cell("%commits disconnect first")
        second.stop()


def test_connect_errors_are_short(loaded, rainer):
    with pytest.raises(UsageError, match="not connected"):
        loaded.run_cell("%commits show foo")
    with pytest.raises(UsageError, match="give the server's URL"):
        loaded.run_cell("%commits connect")
    with pytest.raises(UsageError, match="go together"):
        loaded.run_cell("%commits connect --zookeeper 127.0.0.1:1")
    url = rainer.url
    rainer.stop()
    loaded.user_ns["url"] = url
    with pytest.raises(UsageError, match="cannot connect: cannot reach the commits server") as caught:
        loaded.run_cell("%commits connect {url}")
    assert "\n" not in str(caught.value) and str(caught.value).count(url) == 1
    loaded.user_ns["url"] = "http://alice:s3cret@127.0.0.1:1/diary"
    with pytest.raises(UsageError) as hidden:
        loaded.run_cell("%commits connect {url}")
    assert "s3cret" not in str(hidden.value) and "http://127.0.0.1:1/diary" in str(hidden.value)
    assert connections.get("commits") is None


def test_an_unreachable_zookeeper_is_a_short_error(loaded, rainer):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loaded.user_ns["url"] = rainer.url
    loaded.run_cell("%config CommitsMagic.timeout = 1.0")
    try:
        with pytest.raises(UsageError, match=f"cannot reach ZooKeeper at 127.0.0.1:{port}"):
            loaded.run_cell(f"%commits connect {{url}} --zookeeper 127.0.0.1:{port} --zk-path /x")
    finally:
        loaded.run_cell("%config CommitsMagic.timeout = 10.0")
    assert connections.get("commits") is None and magics(loaded).sessions == {}


# -- reading and committing -------------------------------------------------------------------------------
def test_cell_commits_the_body_byte_for_byte_as_the_next_version(connected, rainer, capsys):
    connected.run_cell('%%commits limits -m "start"\n{"max": 10}\n')
    connected.run_cell('%%commits limits -m "more, with a comment kept"\n{\n  "max": 20\n}\n')
    assert capsys.readouterr().out == "committed limits version 1\ncommitted limits version 2\n"
    stored = rainer.underlying.get("limits")
    assert stored.payload == b'{\n  "max": 20\n}\n' and stored.author == "nb"
    assert stored.comment == "more, with a comment kept"
    assert value(connected, "%commits show limits") == {"max": 20}
    assert value(connected, "%commits show limits 1") == {"max": 10}
    connected.run_cell("%commits old << show limits 1")
    assert connected.user_ns["old"] == {"max": 10}


def test_a_conflict_is_one_clear_line_and_nothing_is_overwritten(connected, other):
    other.save("shared", [1])
    other.save("shared", [2])
    with pytest.raises(UsageError) as caught:
        connected.run_cell("%%commits shared -m mine --version 2\n[3]\n")
    message = str(caught.value)
    assert message == ("commits: conflict: 'shared' is at version 2, so the next version is 3, not 2; "
                       "someone committed first and nothing was overwritten")
    assert other["shared"] == [2]


def test_invalid_payload_and_missing_keys_are_usage_errors(connected):
    with pytest.raises(UsageError, match="invalid JSON"):
        connected.run_cell("%%commits bad -m oops\n{not json\n")
    with pytest.raises(UsageError, match="not found"):
        connected.run_cell("%commits show bad")
    with pytest.raises(UsageError, match="the following arguments are required: -m/--message"):
        connected.run_cell("%%commits bad\n[1]\n")
    with pytest.raises(UsageError, match="unknown command 'nope'"):
        connected.run_cell("%commits nope")
    with pytest.raises(UsageError, match="commits show: .*invalid int value"):
        connected.run_cell("%commits show foo one")


def test_log_is_a_dataframe_and_rendered_diffs(connected, other):
    other.save("cfg", {"a": 1}, comment="start")
    other.save("cfg", {"a": 2}, comment="bump")
    other.delete("cfg", comment="drop")
    history = value(connected, "%commits log cfg")
    assert isinstance(history, CommitHistory)
    frame = history.frame
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.index) == [1, 2, 3] and list(frame["comment"]) == ["start", "bump", "drop"]
    assert list(frame["empty"]) == [False, False, True] and list(frame["author"]) == ["other"] * 3
    assert history.diffs[2] == ["--- cfg 1\n", "+++ cfg 2\n", "@@ -1 +1 @@\n", '-{"a":1}\n', '+{"a":2}\n']
    rendered = history._repr_html_()
    assert "<table" in rendered and "Commit 3 (empty)" in rendered
    assert "<span style='color:#1a7f37'>+{&quot;a&quot;:2}</span>" in rendered
    assert rendered.index("Commit 3") < rendered.index("Commit 2") < rendered.index("Commit 1")
    connected.run_cell("%commits history << log cfg")
    assert connected.user_ns["history"].frame.shape == (3, 5)


def test_diff_revert_delete(connected, other, capsys):
    other.save("flags", {"dark": False})
    other.save("flags", {"dark": True})
    diff = value(connected, "%commits diff flags")
    assert isinstance(diff, CommitDiff) and str(diff).splitlines()[-2:] == ['-{"dark":false}', '+{"dark":true}']
    assert str(value(connected, "%commits diff flags 1 1")) == ""
    connected.run_cell("%commits revert flags 1 -m 'back to light'")
    connected.run_cell("%commits delete flags -m gone")
    out = capsys.readouterr().out
    assert "reverted flags to version 1: now version 3" in out and "deleted flags: version 4 is empty" in out
    assert other.get("flags", 3).comment == "back to light" and other.get("flags", 3).value == {"dark": False}
    assert value(connected, "%commits show flags") is None
    assert "flags version 4 is empty (deleted)" in capsys.readouterr().out


def test_config_options_reach_the_magic(loaded, rainer, other):
    other.save("conf.yaml", {"a": 1})
    loaded.user_ns["url"] = rainer.url
    loaded.run_cell("%config CommitsMagic.serialization = 'text'")
    loaded.run_cell("%config CommitsMagic.author = 'config-author'")
    loaded.run_cell("%config CommitsMagic.dashboard_max_rate = 3.0")
    loaded.run_cell("%config CommitsMagic.log_diffs = 1")
    try:
        loaded.run_cell("%commits connect {url}")
        assert value(loaded, "%commits show conf.yaml") == '{"a":1}'  # read as text
        loaded.run_cell("%%commits notes -m text\n[1]\n")
        assert other.get("notes").author == "config-author"
        assert value(loaded, "%commits").max_rate == 3.0
        loaded.run_cell("%%commits notes -m two\n[2]\n")
        assert value(loaded, "%commits log notes")._repr_html_().count("<pre class='commits-diff'>") == 1
        loaded.run_cell("%config CommitsMagic.author = 'later-author'")  # after connect counts too
        loaded.run_cell("%%commits notes -m three\n[3]\n")
        assert other.get("notes").author == "later-author"
        loaded.run_cell("%config CommitsMagic.serialization = 'xml'")  # refused (logged) by traitlets
        assert magics(loaded).serialization == "text"
    finally:
        for line in ("serialization = 'json'", "author = ''", "dashboard_max_rate = 10.0", "log_diffs = 20"):
            loaded.run_cell(f"%config CommitsMagic.{line}")


# -- completion --------------------------------------------------------------------------------------------
def test_tab_completion_offers_commands_and_keys(connected, other, capsys):
    other.save("alpha", 1)
    other.save("alps", 2)
    other.save("beta", 3)
    connected.run_cell("%commits refresh")
    assert "refreshed: 3 keys changed" in capsys.readouterr().out
    assert completions(connected, "%commits sh") == ["show"]
    assert completions(connected, "%commits show al") == ["alpha", "alps"]
    assert completions(connected, "%commits log b") == ["beta"]
    assert completions(connected, "%%commits al") == ["alpha", "alps"]


def completions(shell, line: str) -> list[str]:
    """What Tab offers at the end of ``line``."""
    from IPython.core.completer import provisionalcompleter

    with provisionalcompleter():
        return sorted(c.text for c in shell.Completer.completions(line, len(line)))


# -- the live table ----------------------------------------------------------------------------------------
def test_table_by_url_follows_own_commits_and_the_refresh_button(connected, other):
    other.save("first", {"n": 1}, comment="made elsewhere")
    connected.run_cell("%commits refresh")
    dash = value(connected, "%commits")
    assert isinstance(dash, CommitsDashboard) and dash.refresh_button is not None
    assert dash.flush() and dash.rows["first"].comment == "made elsewhere"
    assert "no push channel" in dash.header.value

    connected.run_cell("%%commits mine -m 'from here'\n[1]\n")
    assert dash.wait_for(lambda d: "mine" in d.rows)  # no refresh needed for our own commit
    assert dash.flush() and "from here" in dash.table.value

    other.save("first", {"n": 2}, comment="changed elsewhere")
    assert dash.flush() and dash.rows["first"].version == 1  # not pushed over HTTP
    dash.refresh_button.click()
    assert dash.wait_for(lambda d: d.rows["first"].version == 2)
    assert dash.flush() and "changed elsewhere" in dash.table.value

    other.delete("mine")
    connected.run_cell("%commits refresh")
    assert dash.wait_for(lambda d: "mine" not in d.rows)
    connected.run_cell("%commits disconnect")
    assert dash.closed


def test_table_through_zookeeper_shows_commits_made_anywhere(loaded, rainer_zk, capsys):
    loaded.user_ns.update(url=rainer_zk.url, zk=rainer_zk.zk_hosts)
    loaded.run_cell(f"%commits connect {{url}} --zookeeper {{zk}} --zk-path {ZK_PATH} --name live")
    assert "live: commits made anywhere show as they land" in capsys.readouterr().out
    assert connections.get("live").status() == "live (ZooKeeper)"
    assert value(loaded, "%commits status") == (f"live: {rainer_zk.url} + zookeeper {rainer_zk.zk_hosts}{ZK_PATH}: "
                                                "live (ZooKeeper), 0 keys")
    dash = value(loaded, "%commits")
    assert dash.flush() and dash.refresh_button is None and "live from ZooKeeper" in dash.header.value
    assert "0 keys" in dash.header.value and "no keys" in dash.table.value

    with RainerClient(rainer_zk.url) as elsewhere:  # another client, over HTTP
        elsewhere.post_commit({"key": "foo", "version": 1, "author": "gian", "comment": "rofl"}, '{"hey":"what"}')
    assert dash.wait_for(lambda d: "foo" in d.rows and d.rows["foo"].author == "gian")

    # straight into the server's storage (SQL first, then ZooKeeper), no HTTP at all
    from workbench.commits import Commit

    rainer_zk.storage.save(Commit.from_value("foo", 2, {"hey": "there"}, author="sue", comment="direct"))
    assert dash.wait_for(lambda d: d.rows["foo"].version == 2)
    assert dash.flush() and "direct" in dash.table.value and "sue" in dash.table.value

    rainer_zk.storage.save(Commit.tombstone("foo", 3, author="sue"))
    assert dash.wait_for(lambda d: "foo" not in d.rows)
    # the server answers head reads from its own mirror, which follows ZooKeeper on its own
    # session: the table's mirror having seen the tombstone does not mean the server's has yet
    rainer_zk.mirror.wait_for("foo", absent=True)
    assert value(loaded, "%commits log foo").frame.shape[0] == 3  # history through the URL
    loaded.run_cell("%commits disconnect live")
    assert dash.closed


def test_zookeeper_only_connection_reads_the_mirror_and_refuses_writes(loaded, rainer_zk, capsys):
    from workbench.commits import Commit

    rainer_zk.storage.save(Commit.from_value("foo", 1, {"hey": "what"}, author="gian"))
    rainer_zk.mirror.wait_for("foo", 1)
    loaded.user_ns["zk"] = rainer_zk.zk_hosts
    loaded.run_cell(f"%commits connect --zookeeper {{zk}} --zk-path {ZK_PATH}")
    assert "1 key;" in capsys.readouterr().out
    assert value(loaded, "%commits show foo") == {"hey": "what"}
    dash = value(loaded, "%commits")
    rainer_zk.storage.save(Commit.from_value("bar", 1, [1], author="gian"))
    assert dash.wait_for(lambda d: "bar" in d.rows)
    for line in ("%commits log foo", "%commits show foo 1", "%commits delete foo"):
        with pytest.raises(UsageError, match="follows ZooKeeper only; history and commits need the server's URL"):
            loaded.run_cell(line)
    with pytest.raises(UsageError, match="need the server's URL"):
        loaded.run_cell("%%commits foo -m no\n[1]\n")


def test_unloading_closes_connections_tables_and_completion(shell, rainer):
    shell.run_cell("%load_ext workbench")
    shell.user_ns["url"] = rainer.url
    try:
        shell.run_cell("%commits connect {url}")
        session = magics(shell).sessions["commits"]
        dash = shell.run_cell("%commits").result
    finally:
        shell.run_cell("%unload_ext workbench")
        connections.clear()
        shell.user_ns.pop("url", None)
    assert session.closed and dash.closed and session.view.closed
    assert "%commits" not in shell.strdispatchers["complete_command"].strs


# -- in a real browser --------------------------------------------------------------------------------------
def test_live_table_in_jupyterlab_shows_and_refreshes(jupyter_lab, lab_page, rainer, artifacts_dir):
    """The table renders in JupyterLab; a commit made elsewhere shows after pressing its Refresh button."""
    from workbench.testing.jupyter import WIDGET, run_notebook_in_lab, save_screenshot, write_notebook

    write_notebook(jupyter_lab.root_dir / "commits" / "table.ipynb", [
        f"%load_ext workbench\n%config CommitsMagic.author = 'browser'\n%commits connect {rainer.url}",
        '%%commits flags -m "from the notebook"\n{"dark_mode": false}\n',
        "%commits",
    ])
    run = run_notebook_in_lab(lab_page, jupyter_lab.url, "commits/table.ipynb", timeout=180)
    table = run.panel.locator(f"{WIDGET} table.commits-keys").first
    table.wait_for(state="visible", timeout=30_000)
    row = table.locator("tr", has_text="flags")
    assert row.locator("td").all_inner_texts()[:4] == ["flags", "1", "browser", "from the notebook"]

    with RainerClient(rainer.url) as elsewhere:
        elsewhere.post_commit({"key": "flags", "version": 2, "author": "elsewhere", "comment": "dark now"},
                              '{"dark_mode": true}')
    assert row.locator("td").nth(1).inner_text() == "1"  # no push over HTTP: unchanged until Refresh
    run.panel.locator(f"{WIDGET} button", has_text="Refresh").click()
    table.locator("tr", has_text="elsewhere").wait_for(state="visible", timeout=30_000)
    assert row.locator("td").all_inner_texts()[:4] == ["flags", "2", "elsewhere", "dark now"]
    save_screenshot(lab_page, artifacts_dir / "test_commits_live_table.png", target=table)
