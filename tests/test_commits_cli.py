"""``python -m workbench.commits``: pyrainer-style sessions run as real processes against a real server.

``edit`` runs with ``EDITOR`` set to a small Python script that changes the file, and the
confirmation is answered on stdin, as a person at a terminal would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from workbench.commits.cli import prepare_commit, split_prepared
from workbench.commits.client import RainerClient
from workbench.commits.model import InvalidCommit
from workbench.testing.commits_servers import ZK_PATH, rainer  # noqa: F401

RED, GREEN, YELLOW, RESET = "\033[31m", "\033[32m", "\033[33m", "\033[0m"


def run_cli(*args: str, url: str | None = None, stdin: str = "", env: dict[str, str] | None = None,
            module: str = "workbench.commits", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", module, *(["--url", url] if url else []), *args]
    environment = {name: value for name, value in os.environ.items() if name != "WORKBENCH_COMMITS_URL"}
    environment.update({"NO_COLOR": "1", **(env or {})})
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=environment, timeout=timeout)


@pytest.fixture
def client(rainer):
    with RainerClient(rainer.url) as made:
        yield made


@pytest.fixture
def seeded(client):
    """The keys of the seed's `list` example: foo at version 1, hey at version 6."""
    client.post_commit({"key": "foo", "version": 1, "author": "gian", "comment": "rofl"}, '{"hey":"what"}')
    for version in range(1, 7):
        value = '{"hey":"whatsit"}' if version == 6 else f'{{"hey":{version}}}'
        client.post_commit({"key": "hey", "version": version, "author": "gian", "comment": f"v{version}"}, value)
    return client


@pytest.fixture
def editor(tmp_path):
    """editor(body) -> an EDITOR value running `body` with `path` (the file) and `text` (its content);
    whatever `text` holds at the end is written back."""

    def make(body: str, name: str = "editor.py") -> str:
        script = tmp_path / name
        script.write_text("import sys\npath = sys.argv[-1]\ntext = open(path).read()\n"
                          + textwrap.dedent(body) + "\nopen(path, 'w').write(text)\n")
        return f"{sys.executable} {script}"

    return make


@pytest.fixture
def edit_env(tmp_path):
    """Environment for edit sessions: the editor's temp files go to a directory of the test's own."""
    temp = tmp_path / "edits"
    temp.mkdir()

    def environment(editor_command: str) -> tuple[dict[str, str], Path]:
        return {"EDITOR": editor_command, "VISUAL": "", "TMPDIR": str(temp)}, temp

    return environment


# -- the seed's examples -------------------------------------------------------------------------------
def test_list_prints_what_the_seed_shows(rainer, seeded):
    result = run_cli("list", url=rainer.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"foo\t1\t{rainer.url}/foo/1\nhey\t6\t{rainer.url}/hey/6\n"
    # the tab stops line up as in the seed: "foo     1       http://..."
    assert result.stdout.splitlines()[0].expandtabs().startswith("foo     1       http://")


def test_list_all_shows_deleted_keys(rainer, seeded):
    seeded.post_commit({"key": "foo", "version": 2, "author": "gian", "comment": "", "empty": True}, "")
    assert run_cli("list", url=rainer.url).stdout == f"hey\t6\t{rainer.url}/hey/6\n"
    assert run_cli("list", "-A", url=rainer.url).stdout == (
        f"foo\t2\t{rainer.url}/foo/2\t(empty)\nhey\t6\t{rainer.url}/hey/6\n")


def test_show_prints_the_value_as_in_the_seed(rainer, seeded):
    result = run_cli("show", "hey", url=rainer.url)
    assert (result.returncode, result.stdout) == (0, '{"hey":"whatsit"}\n')
    assert run_cli("show", "hey", "2", url=rainer.url).stdout == '{"hey":2}\n'


def test_url_from_the_environment_and_after_the_command(rainer, seeded):
    assert run_cli("show", "foo", env={"WORKBENCH_COMMITS_URL": rainer.url}).stdout == '{"hey":"what"}\n'
    assert run_cli("show", "foo", "--url", rainer.url).stdout == '{"hey":"what"}\n'
    via_workbench = run_cli("commits", "--url", rainer.url, "list", module="workbench")
    assert via_workbench.returncode == 0 and via_workbench.stdout.startswith("foo\t1\t")


# -- prepare / commit / commit-value -----------------------------------------------------------------
def test_prepare_then_commit_round_trip(rainer, seeded):
    prepared = run_cli("prepare", "foo", "--author", "sue", url=rainer.url)
    assert prepared.stdout == "author: sue\ncomment: ''\nversion: 2\n---\n{\"hey\":\"what\"}"
    edited = prepared.stdout.replace("comment: ''", "comment: by hand").replace('"what"', '"now"')
    result = run_cli("commit", "foo", url=rainer.url, stdin=edited)
    assert result.returncode == 0, result.stderr
    assert '"version": 2' in result.stdout and '"comment": "by hand"' in result.stdout
    assert seeded.get_value("foo") == b'{"hey":"now"}'
    assert seeded.get_metadata("foo")["author"] == "sue"


def test_commit_value_reads_stdin_and_takes_the_next_version(rainer, seeded):
    result = run_cli("commit-value", "hey", "-m", "from a script", "--author", "bot", url=rainer.url,
                     stdin='{"hey": "piped"}\n')
    assert result.returncode == 0, result.stderr
    meta = seeded.get_metadata("hey")
    assert (meta["version"], meta["comment"], meta["author"]) == (7, "from a script", "bot")
    assert seeded.get_value("hey") == b'{"hey": "piped"}\n'  # exactly the bytes given
    assert run_cli("commit-value", "new", "-m", "first", url=rainer.url, stdin="[1]").returncode == 0
    assert seeded.get_metadata("new")["version"] == 1


def test_a_stale_version_exits_1_with_the_conflict(rainer, seeded):
    result = run_cli("commit-value", "hey", "3", "-m", "late", url=rainer.url, stdin="[1]")
    assert result.returncode == 1 and result.stdout == ""
    assert "conflict on key 'hey': the next version is 7, not 3" in result.stderr
    assert seeded.get_metadata("hey")["version"] == 6


def test_prepared_commit_format():
    prepared = prepare_commit({"version": 3, "author": "me", "comment": "x"}, b"a: 1\n---\nb: 2\n")
    meta, payload = split_prepared(prepared)
    assert meta == {"version": 3, "author": "me", "comment": "x"}
    assert payload == b"a: 1\n---\nb: 2\n"  # a multi-document payload keeps its own separators
    with pytest.raises(InvalidCommit):
        split_prepared(b"version: 3\nno separator")
    with pytest.raises(InvalidCommit):
        split_prepared(b"version: three\n---\nx")
    with pytest.raises(InvalidCommit):
        split_prepared(b"- a list\n---\nx")


# -- edit ------------------------------------------------------------------------------------------------
def test_edit_shows_a_coloured_diff_asks_and_commits(rainer, seeded, editor, edit_env):
    env, temp = edit_env(editor("""
        text = text.replace("comment: ''", "comment: bigger").replace('"whatsit"', '"whatsit",\\n "more": 1')
    """))
    result = run_cli("edit", "hey", "--color", "always", url=rainer.url, stdin="yes\n", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{RED}-{{\"hey\":\"whatsit\"}}{RESET}" in out
    assert f"{GREEN}+{{\"hey\":\"whatsit\",{RESET}" in out and f"{GREEN}+ \"more\": 1}}{RESET}" in out
    assert f"Commit to {rainer.url}/hey (yes/no)? " in out
    assert seeded.get_value("hey") == b'{"hey":"whatsit",\n "more": 1}'  # the edited bytes, as typed
    meta = seeded.get_metadata("hey")
    assert (meta["version"], meta["comment"]) == (7, "bigger")
    assert list(temp.iterdir()) == []  # committed: the temp file is gone


def test_edit_answered_no_keeps_the_work(rainer, seeded, editor, edit_env):
    env, temp = edit_env(editor("text = text.replace('whatsit', 'changed')"))
    result = run_cli("edit", "hey", url=rainer.url, stdin="no\n", env=env)
    assert result.returncode == 0
    assert "OK, not committing." in result.stdout
    kept = Path(result.stdout.split("Your work is saved in: ", 1)[1].strip())
    assert kept.parent == temp and b'"changed"' in kept.read_bytes()
    assert seeded.get_metadata("hey")["version"] == 6
    assert "\033[" not in result.stdout  # not a terminal: no colours


def test_edit_insists_on_yes_or_no(rainer, seeded, editor, edit_env):
    env, _ = edit_env(editor("text = text.replace('whatsit', 'sure')"))
    result = run_cli("edit", "hey", url=rainer.url, stdin="y\nmaybe\nyes\n", env=env)
    assert result.returncode == 0
    assert result.stdout.count("Please type 'yes' or 'no': ") == 2
    assert seeded.get_value("hey") == b'{"hey":"sure"}'


def test_edit_without_change_does_not_commit_and_exits_1(rainer, seeded, editor, edit_env):
    env, temp = edit_env(editor("pass"))
    result = run_cli("edit", "hey", url=rainer.url, stdin="", env=env)
    assert result.returncode == 1 and "No change, not committing." in result.stdout
    assert seeded.get_metadata("hey")["version"] == 6


def test_edit_creates_a_missing_key(rainer, client, editor, edit_env):
    env, _ = edit_env(editor("text = text + '{\"created\": true}'"))
    result = run_cli("edit", "brand-new", url=rainer.url, stdin="yes\n", env=env)
    assert result.returncode == 0, result.stderr
    assert client.get_value("brand-new") == b'{"created": true}'
    assert client.get_metadata("brand-new")["version"] == 1


def test_edit_with_a_failing_editor_exits_1_and_keeps_the_work(rainer, seeded, editor, edit_env):
    env, temp = edit_env(editor("sys.exit(3)"))
    result = run_cli("edit", "hey", url=rainer.url, env=env)
    assert result.returncode == 1
    assert "the editor exited with code 3" in result.stderr
    assert "Your work is saved in: " in result.stderr and len(list(temp.iterdir())) == 1


def test_edit_refused_by_the_server_exits_1_and_keeps_the_work(rainer, seeded, editor, edit_env):
    env, temp = edit_env(editor("text = text.replace('{\"hey\":\"whatsit\"}', '{broken json')"))
    result = run_cli("edit", "hey", url=rainer.url, stdin="yes\n", env=env)
    assert result.returncode == 1
    assert "400 Bad Request" in result.stderr and "invalid JSON" in result.stderr
    kept = list(temp.iterdir())
    assert len(kept) == 1 and b"{broken json" in kept[0].read_bytes()
    assert seeded.get_metadata("hey")["version"] == 6


def test_edit_loses_to_a_commit_made_meanwhile_without_clobbering_it(rainer, seeded, editor, edit_env):
    # While "the person" edits, someone else commits version 7; the edit must not overwrite it.
    env, temp = edit_env(editor(f"""
        from workbench.commits.client import RainerClient
        RainerClient({rainer.url!r}).post_commit(
            {{"key": "hey", "version": 7, "author": "other", "comment": "meanwhile"}}, '{{"hey":"other"}}')
        text = text.replace('whatsit', 'mine')
    """))
    result = run_cli("edit", "hey", url=rainer.url, stdin="yes\n", env=env)
    assert result.returncode == 1
    assert "conflict on key 'hey': the next version is 8, not 7" in result.stderr
    assert seeded.get_value("hey") == b'{"hey":"other"}'
    assert len(list(temp.iterdir())) == 1


def test_edit_header_that_is_not_yaml_exits_1(rainer, seeded, editor, edit_env):
    env, _ = edit_env(editor("text = text.replace('version: 7', 'version: [7')"))
    result = run_cli("edit", "hey", url=rainer.url, stdin="yes\n", env=env)
    assert result.returncode == 1 and "not YAML" in result.stderr


# -- uncommit and log ------------------------------------------------------------------------------------
def test_uncommit_asks_then_commits_a_tombstone(rainer, seeded):
    declined = run_cli("uncommit", "foo", url=rainer.url, stdin="no\n")
    assert declined.returncode == 0 and "OK, not committing." in declined.stdout
    assert "-{\"hey\":\"what\"}" in declined.stdout
    result = run_cli("uncommit", "foo", url=rainer.url, stdin="yes\n")
    assert result.returncode == 0, result.stderr
    meta = seeded.get_metadata("foo")
    assert meta["version"] == 2 and meta["empty"] is True
    shown = run_cli("show", "foo", url=rainer.url)
    assert shown.returncode == 0 and shown.stdout == "" and "is empty (deleted)" in shown.stderr


def test_uncommit_yes_flag_does_not_ask(rainer, seeded):
    result = run_cli("uncommit", "hey", "-y", url=rainer.url)
    assert result.returncode == 0 and "(yes/no)" not in result.stdout
    assert seeded.get_metadata("hey")["empty"] is True and seeded.get_metadata("hey")["version"] == 7
    again = run_cli("uncommit", "hey", "-y", url=rainer.url)
    assert again.returncode == 0 and "already empty, not committing" in again.stdout
    assert seeded.get_metadata("hey")["version"] == 7


def test_uncommit_of_a_version_that_is_no_longer_the_head_is_a_conflict(rainer, seeded):
    result = run_cli("uncommit", "hey", "5", "-y", url=rainer.url)
    assert result.returncode == 1 and "conflict on key 'hey': the next version is 7, not 6" in result.stderr
    # "empty" is always there now, false here, as in Rainer's metadata (it used to be left out)
    assert seeded.get_metadata("hey")["version"] == 6 and seeded.get_metadata("hey")["empty"] is False


def test_log_shows_the_history_as_diffs_newest_first(rainer, client):
    client.post_commit({"key": "cfg", "version": 1, "author": "ann", "comment": "start"}, '{"a":1}')
    client.post_commit({"key": "cfg", "version": 2, "author": "bob", "comment": "two lines\nof why"}, '{"a":2}')
    client.post_commit({"key": "cfg", "version": 3, "author": "cy", "comment": "drop", "empty": True}, "")
    result = run_cli("log", "cfg", "--color", "always", url=rainer.url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    positions = [out.index(f"{YELLOW}Commit {n}") for n in (3, 2, 1)]
    assert positions == sorted(positions)
    assert f"{YELLOW}Commit 3 (empty){RESET}" in out and "Author: cy" in out
    assert "  two lines\n  of why\n" in out
    assert f"{RED}-{{\"a\":1}}{RESET}\n{GREEN}+{{\"a\":2}}{RESET}" in out
    assert "--- cfg 0" in out and f"{GREEN}+{{\"a\":1}}{RESET}" in out
    assert out.rstrip().endswith("End of Log")
    older = run_cli("log", "cfg", "1", url=rainer.url).stdout
    assert "Commit 2" not in older and "Commit 1" in older


def test_log_into_a_pipe_its_reader_closed_exits_quietly_with_141(rainer, client):
    # `workbench commits log big | head -1`: 40 versions of 8 kB each make far more output than a pipe
    # holds, so the log is still writing when its reader goes away.
    for version in range(1, 41):
        client.post_commit({"key": "big", "version": version, "author": "ann", "comment": ""},
                           json.dumps([f"line {n} of version {version}" for n in range(400)], indent=1))
    environment = {name: value for name, value in os.environ.items() if name != "WORKBENCH_COMMITS_URL"}
    process = subprocess.Popen([sys.executable, "-m", "workbench", "commits", "log", "big", "--url", rainer.url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**environment, "NO_COLOR": "1"})
    try:
        first = process.stdout.readline()
        process.stdout.close()
        errors = process.stderr.read().decode()
        status = process.wait(timeout=60)
    finally:
        process.kill()
    assert first == b"Commit 40\n"
    assert (status, errors) == (141, "")


# -- errors ---------------------------------------------------------------------------------------------
def test_http_errors_print_one_line_and_exit_1(rainer, seeded):
    missing = run_cli("show", "nope", url=rainer.url)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().endswith("Key not found") and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert run_cli("log", "nope", url=rainer.url).returncode == 1
    assert run_cli("show", "hey", "99", url=rainer.url).returncode == 1


def test_no_server_and_no_url_exit_1(rainer):
    url = rainer.url
    rainer.stop()
    gone = run_cli("list", url=url)
    assert gone.returncode == 1 and "cannot reach the commits server" in gone.stderr
    assert "Traceback" not in gone.stderr
    no_url = run_cli("list")
    assert no_url.returncode == 1 and "--url is required" in no_url.stderr


# -- serve --------------------------------------------------------------------------------------------
class ServeProcess:
    """``python -m workbench.commits serve ...`` as a child; ``url`` once it says it is serving."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "workbench.commits", "serve", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, **(env or {})})
        killer = threading.Timer(60, self.process.kill)  # never hang the suite on a child that hangs
        killer.start()
        try:
            line = self.process.stdout.readline()
        finally:
            killer.cancel()
        if not line.startswith("commits serving on "):
            self.process.kill()
            raise AssertionError(f"serve did not start: {line!r} {self.process.stderr.read()}")
        self.url = line.split()[-1]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
            self.log = self.process.stderr.read()
            return code
        finally:
            self.process.stdout.close()
            self.process.stderr.close()


def test_serve_runs_the_seed_session_and_stops_on_sigterm(tmp_path):
    server = ServeProcess("--storage", f"sqlite:///{tmp_path / 'served.db'}", "--port", "0",
                          "--prefix", "/diary", "--access-log")
    try:
        assert server.url.endswith("/diary")
        client = RainerClient(server.url)
        stored = client.post_commit({"key": "foo", "version": 1, "author": "gian", "comment": "rofl"},
                                    '{"hey":"what"}')
        assert stored["version"] == 1 and client.get_value("foo", 1) == b'{"hey":"what"}'
        assert run_cli("list", url=server.url).stdout == f"foo\t1\t{server.url}/foo/1\n"
        client.close()
    finally:
        assert server.stop() == 0
    assert "200 POST /diary/foo/1" in server.log  # --access-log: every request is logged
    # the commits outlive the server: a new one on the same file serves them
    again = ServeProcess("--storage", f"sqlite:///{tmp_path / 'served.db'}", "--port", "0")
    try:
        assert RainerClient(again.url).get_value("foo") == b'{"hey":"what"}'
    finally:
        again.stop()


def test_serve_with_zookeeper_publishes_heads(tmp_path, zookeeper_chroot, zookeeper_client):
    server = ServeProcess("--storage", f"sqlite:///{tmp_path / 'zk.db'}", "--port", "0",
                          "--zookeeper", zookeeper_chroot, "--zk-path", ZK_PATH)
    try:
        RainerClient(server.url).post_commit({"key": "foo", "version": 1, "author": "gian"}, "[1]")
        published = threading.Event()

        def watch(children: list[str]) -> bool:
            if "foo" in children:
                published.set()
                return False
            return True

        zookeeper_client.ensure_path(ZK_PATH + "/data")  # Rainer's layout: <zkPath>/data/<key>
        zookeeper_client.ChildrenWatch(ZK_PATH + "/data", watch)
        assert published.wait(20)
    finally:
        assert server.stop() == 0


def test_serve_flags_are_checked(tmp_path):
    result = run_cli("serve", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--zookeeper", "127.0.0.1:1")
    assert result.returncode == 1 and "--zookeeper and --zk-path go together" in result.stderr


# -- the seed's wrapper script, and sessions on MariaDB and PostgreSQL --------------------------------
def test_a_wrapper_script_as_the_seed_suggests(rainer, seeded, tmp_path):
    script = tmp_path / "diary"
    script.write_text(f'#!/bin/sh -e\nexec {sys.executable} -m workbench.commits --url "{rainer.url}" "$@"\n')
    script.chmod(0o755)
    environment = {name: value for name, value in os.environ.items() if name != "WORKBENCH_COMMITS_URL"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], input=stdin, capture_output=True, text=True,
                              env={**environment, "NO_COLOR": "1"}, timeout=60)

    assert run("list").stdout == f"foo\t1\t{rainer.url}/foo/1\nhey\t6\t{rainer.url}/hey/6\n"
    assert run("show", "hey").stdout == '{"hey":"whatsit"}\n'
    assert run("commit-value", "hey", "-m", "scripted", stdin='{"hey":"scripted"}').returncode == 0
    assert seeded.get_value("hey") == b'{"hey":"scripted"}'
    missing = run("show", "nope")  # sh -e passes the exit status on
    assert missing.returncode == 1 and "Key not found" in missing.stderr


@pytest.fixture(params=["mariadb", "postgres"])
def served_sql(request, tmp_path):
    """``workbench commits serve`` on an empty MariaDB or PostgreSQL database."""
    server = ServeProcess("--storage", request.getfixturevalue(f"{request.param}_url"), "--port", "0",
                          "--prefix", "/diary")
    try:
        yield server
    finally:
        server.stop()


def test_client_and_cli_sessions_on_mariadb_and_postgres(served_sql, editor, edit_env):
    url = served_sql.url
    with RainerClient(url) as client:
        client.post_commit({"key": "foo", "version": 1, "author": "gian", "comment": "rofl"}, '{"hey":"what"}')
        for version in range(1, 7):
            value = '{"hey":"whatsit"}' if version == 6 else f'{{"hey":{version}}}'
            client.post_commit({"key": "hey", "version": version, "author": "gian", "comment": f"v{version}"},
                               value)
        assert run_cli("list", url=url).stdout == f"foo\t1\t{url}/foo/1\nhey\t6\t{url}/hey/6\n"
        assert run_cli("show", "hey", url=url).stdout == '{"hey":"whatsit"}\n'
        env, _ = edit_env(editor("text = text.replace('whatsit', 'edited')"))
        edited = run_cli("edit", "hey", url=url, env=env, stdin="yes\n")
        assert edited.returncode == 0, edited.stderr
        assert client.get_value("hey") == b'{"hey":"edited"}'
        assert client.get_metadata("hey")["version"] == 7
        stale = run_cli("commit-value", "hey", "3", "-m", "late", url=url, stdin="[1]")
        assert stale.returncode == 1 and "the next version is 8, not 3" in stale.stderr
        assert run_cli("uncommit", "foo", "-y", url=url).returncode == 0
        assert run_cli("list", url=url).stdout == f"hey\t7\t{url}/hey/7\n"
        full = client.list_full(all=True)
        assert full["foo"].meta["empty"] is True and full["hey"].meta["version"] == 7
        log = run_cli("log", "hey", url=url)
        assert log.returncode == 0 and "Commit 7" in log.stdout and "Commit 1" in log.stdout
