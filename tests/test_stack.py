"""`workbench up` / `workbench status`: the embedded stack as a user runs it, in a child process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from workbench.testing.jupyter import wait_for_lab_status
from workbench.testing.process import processes_mentioning, wait_until_gone
from workbench.testing.stack import ALL_PORTS_FREE, WORKBENCH, RunningStack, ignoring_sigint
from workbench.zdb import client


@pytest.fixture
def state_dir(tmp_path, known_brokers):
    directory = tmp_path / "stack"
    yield directory
    # Whatever a test did, leave no process of this stack behind.
    for pid in processes_mentioning(str(directory)):
        os.kill(pid, signal.SIGKILL)


def test_up_serves_the_demo_database_reports_status_and_stops_without_orphans(state_dir):
    stack = RunningStack(state_dir)
    try:
        text = "".join(stack.output)
        assert "zdb://dba:PASSWORD@" in text and "credentials.json" in text
        secrets = json.loads((state_dir / "credentials.json").read_text())
        assert stat.S_IMODE((state_dir / "credentials.json").stat().st_mode) == 0o600
        assert secrets["domain"]["password"] not in text and secrets["zdb"]["password"] not in text

        status = subprocess.run(WORKBENCH + ["status", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "domain.broker" in status.stdout and "NOT ANSWERING" not in status.stdout

        db, connection = client(stack.uri())
        db["morning"] = {"checked": ["domain", "zdb"]}
        assert db["morning"]["checked"]._run() == ["domain", "zdb"]
        connection.close()
        assert processes_mentioning(str(state_dir / "zdb" / "demo")), "the SM should run under the state dir"

        endpoints = json.loads((state_dir / "stack.json").read_text())["endpoints"]
        with urllib.request.urlopen(endpoints["commits"]["url"] + "/", timeout=10) as reply:
            assert reply.status == 200 and isinstance(json.load(reply), (list, dict))
        with urllib.request.urlopen(endpoints["inventory"]["web"] + "/data/inventory/stats", timeout=10) as reply:
            assert json.load(reply)["result"] == "OK"
        request = urllib.request.Request(endpoints["clusters"]["url"] + "/api/datastores",
                                         headers={"Authorization": f"Token {secrets['clusters']['token']}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(endpoints["clusters"]["url"] + "/api/datastores", timeout=10)
        assert refused.value.code == 401
    finally:
        code = stack.stop()
    assert code == 0, "".join(stack.output)
    assert "stopped" in stack.output[-1]
    assert wait_until_gone(str(state_dir), 10) == {}
    assert not (state_dir / "stack.json").exists()

    status = subprocess.run(WORKBENCH + ["status", "--state-dir", str(state_dir)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "no workbench stack runs" in status.stdout


def test_kill_int_stops_a_stack_a_shell_started_in_the_background(state_dir):
    # `workbench up &` from a script inherits SIGINT ignored; `kill -INT` must still stop everything.
    stack = RunningStack(state_dir, ignore_sigint=True)
    code = stack.stop()
    assert code == 0, "".join(stack.output)
    assert "stopped" in stack.output[-1]
    assert wait_until_gone(str(state_dir), 10) == {}
    assert not (state_dir / "stack.json").exists()


def test_kill_int_during_start_stops_what_had_started(state_dir):
    # Interrupted while the components come up: those already running (and the one half-way) stop.
    stack = RunningStack(state_dir, until="starting", ignore_sigint=True)
    deadline = time.monotonic() + 60
    while not processes_mentioning(str(state_dir / "zdb" / "demo")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(str(state_dir / "zdb" / "demo")), "the SM should be starting"
    code = stack.stop()
    assert code != 0 and "ready" not in "".join(stack.output), "".join(stack.output)
    assert wait_until_gone(str(state_dir), 10) == {}
    assert not (state_dir / "stack.json").exists()


def test_a_restarted_stack_keeps_its_credentials_and_data(state_dir):
    first = RunningStack(state_dir)
    try:
        db, connection = client(first.uri())
        db["kept"] = 42
        connection.close()
        password = json.loads((state_dir / "credentials.json").read_text())["zdb"]["password"]
    finally:
        assert first.stop() == 0
    second = RunningStack(state_dir)
    try:
        assert json.loads((state_dir / "credentials.json").read_text())["zdb"]["password"] == password
        db, connection = client(second.uri())
        assert db["kept"]._run() == 42
        connection.close()
    finally:
        assert second.stop() == 0


def test_status_names_the_database_processes_that_are_gone(state_dir):
    from workbench.domain import Domain

    stack = RunningStack(state_dir)
    try:
        endpoints, secrets = stack.endpoints, stack.secrets
        status = subprocess.run(WORKBENCH + ["status", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout
        assert "zdb.SM " in status.stdout and "zdb.TE " in status.stdout
        domain = Domain(endpoints["domain"]["broker"], secrets["domain"]["user"], secrets["domain"]["password"])
        try:
            domain.get_database(endpoints["zdb"]["database"]).shutdown()
        finally:
            domain.disconnect()
        status = subprocess.run(WORKBENCH + ["status", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 1, status.stdout
        dead = [line for line in status.stdout.splitlines() if "NOT ANSWERING" in line]
        assert sorted(line.split()[0] for line in dead) == ["zdb.SM", "zdb.TE"], status.stdout
        assert not any("domain." in line for line in dead)
    finally:
        assert stack.stop() == 0


def test_a_second_stack_on_the_same_state_dir_is_refused(state_dir):
    first = RunningStack(state_dir)
    try:
        second = subprocess.run(WORKBENCH + ["up", "--state-dir", str(state_dir), *ALL_PORTS_FREE],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "a stack already runs on this state directory" in second.stderr
    finally:
        assert first.stop() == 0


def test_workbench_magic_shows_the_stack_named_by_the_environment(state_dir, loaded, monkeypatch):
    from workbench.stack import EmbeddedStack

    with EmbeddedStack(state_dir, domain_port=0, commits_port=0, inventory_web_port=0,
                       clusters_port=0) as stack:
        monkeypatch.setenv("WORKBENCH_STACK", str(stack.stack_file))
        status = loaded.run_cell("%workbench").result
        text, page = repr(status), status._repr_html_()
        broker = stack.endpoints()["domain"]["broker"]
        assert "domain broker" in text and broker in text and "answering" in text
        assert "zdb TE" in text and "zdb SM" in text
        assert broker in page
        secrets = json.loads((state_dir / "credentials.json").read_text())
        assert secrets["zdb"]["password"] not in text + page
    # Stopped: the same environment no longer shows a stack.
    assert "stack:" not in repr(loaded.run_cell("%workbench").result)


def test_the_magics_find_a_stack_workbench_up_runs_on_the_default_state_dir(state_dir, loaded, monkeypatch):
    # A user ran `workbench up` in a terminal, then opened a plain notebook: no WORKBENCH_STACK.
    monkeypatch.setenv("WORKBENCH_STATE_DIR", str(state_dir))
    stack = RunningStack(state_dir)
    try:
        status = loaded.run_cell("%workbench").result
        text = repr(status)
        assert stack.endpoints["domain"]["broker"] in text and "zdb SM" in text, text
        board = loaded.run_cell("%workbench dashboard")
        assert board.error_in_exec is None, board.error_in_exec
        dashboard = board.result
        assert [part.problem for part in dashboard.parts] == [""] * 5
        assert dashboard.flush(30)
        demo = [p for p in dashboard.part("domain").processes.values() if p["database"] == "demo"]
        assert sorted(str(p["pid"]) for p in demo) == sorted(
            str(p["pid"]) for p in stack.endpoints["zdb"]["processes"])
    finally:
        loaded.run_cell("%unload_ext workbench")
        loaded.run_cell("%load_ext workbench")
        assert stack.stop() == 0
    assert "stack:" not in repr(loaded.run_cell("%workbench").result)


def _widget_texts(widget) -> str:
    """Every string value in a widget tree (what the front end would be sent)."""
    texts = [str(getattr(widget, "value", "") or "")]
    for child in getattr(widget, "children", ()):
        texts.append(_widget_texts(child))
    return "\n".join(texts)


def test_workbench_dashboard_combines_every_subsystem_and_follows_the_domain(state_dir, loaded, monkeypatch):
    from workbench.domain import Domain
    from workbench.stack import EmbeddedStack
    from workbench.testing.commits import wait_until

    with EmbeddedStack(state_dir, domain_port=0, commits_port=0, inventory_web_port=0,
                       clusters_port=0) as stack:
        monkeypatch.setenv("WORKBENCH_STACK", str(stack.stack_file))
        dashboard = loaded.run_cell("%workbench dashboard").result
        try:
            titles = [part.title for part in dashboard.parts]
            assert titles == ["domain", "zdb", "commits", "inventory", "clusters"]
            assert [part.problem for part in dashboard.parts] == [""] * 5
            domain_view = dashboard.part("domain")
            assert dashboard.flush(30)
            assert len([p for p in domain_view.processes.values() if p["database"] == "demo"]) == 2

            # A TE started and killed from outside the notebook appears, then leaves, on its own.
            creds = stack.credentials
            outside = Domain(stack.endpoints()["domain"]["broker"], creds["domain"]["user"],
                             creds["domain"]["password"])
            try:
                agent = outside.get_peer(stack.endpoints()["domain"]["agent"])
                te = agent.start_transaction_engine("demo", wait_seconds=60)
                wait_until(lambda: any(p["pid"] == te.pid for p in domain_view.processes.values()), 30)
                assert dashboard.flush(30)
                assert str(te.pid) in domain_view.processes_table.value
                te.kill()
                wait_until(lambda: all(p["pid"] != te.pid for p in domain_view.processes.values()), 30)
                assert dashboard.flush(30)
                assert str(te.pid) not in domain_view.processes_table.value
            finally:
                outside.disconnect()
            shown = _widget_texts(dashboard.widget)
            for values in creds.values():
                for kind, secret in values.items():
                    if kind in ("password", "token"):
                        assert secret not in shown
        finally:
            dashboard.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_lab_runs_the_stack_points_jupyter_at_it_and_stops_both(state_dir, tmp_path, stop_signal):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    env = {**os.environ, **{name: str(tmp_path / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}}
    lab = subprocess.Popen(WORKBENCH + ["lab", "--state-dir", str(state_dir), "--notebook-dir", str(notebooks),
                                        "--port", "0", *ALL_PORTS_FREE],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True, preexec_fn=ignoring_sigint)
    output: list[str] = []
    try:
        while not (output and output[-1].startswith("  http://")):
            line = lab.stdout.readline()
            assert line, "workbench lab ended early:\n" + "".join(output)
            output.append(line)
        text = "".join(output)
        secrets = json.loads((state_dir / "credentials.json").read_text())
        assert "zdb://dba:PASSWORD@" in text and secrets["zdb"]["password"] not in text
        url = output[-1].strip()
        base, token = url.split("/lab?token=")
        assert "started" in wait_for_lab_status(base, token, lab)
        # Nothing asks about Jupyter news or updates over the notebooks: the Lab's defaults say never.
        request = urllib.request.Request(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification",
                                         headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            properties = json.load(reply)["schema"]["properties"]
        assert properties["fetchNews"]["default"] == "false" and properties["checkForUpdates"]["default"] is False
        # Kernels inherit the Lab's environment: it names the stack this command started.
        children = Path(f"/proc/{lab.pid}/task/{lab.pid}/children").read_text().split()
        environments = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in children]
        wanted = f"WORKBENCH_STACK={state_dir.resolve() / 'stack.json'}".encode()
        assert any(wanted in environ for environ in environments)
        status = subprocess.run(WORKBENCH + ["status", "--state-dir", str(state_dir)],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "NOT ANSWERING" not in status.stdout, status.stdout
    finally:
        # As a service manager (SIGTERM) or `kill -INT` stops it: the Lab first, then the stack. It
        # started with SIGINT ignored, as from a shell's `&`, which must not make it deaf to that.
        lab.send_signal(stop_signal)
        rest, _ = lab.communicate(timeout=90)
        output.append(rest)
    assert "stopping the stack" in output[-1], "".join(output)
    assert wait_until_gone(str(state_dir), 10) == {} and wait_until_gone(str(notebooks), 10) == {}
    assert not (state_dir / "stack.json").exists()


def test_the_sql_url_comes_from_the_environment_and_a_password_in_the_flag_warns(monkeypatch, capsys):
    import argparse

    from workbench.stack import add_arguments, from_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.setenv("WORKBENCH_SQL_URL", "postgresql+psycopg://dba:secret@127.0.0.1/wb")
    stack = from_arguments(parser.parse_args([]))
    assert {component.sql_url for component in stack.components if hasattr(component, "sql_url")} == \
        {"postgresql+psycopg://dba:secret@127.0.0.1/wb"}
    assert "warning" not in capsys.readouterr().err
    stack = from_arguments(parser.parse_args(["--sql", "mysql+pymysql://root:pw@127.0.0.1/wb"]))
    assert {component.sql_url for component in stack.components if hasattr(component, "sql_url")} == \
        {"mysql+pymysql://root:pw@127.0.0.1/wb"}
    assert "--sql holds a password" in capsys.readouterr().err
