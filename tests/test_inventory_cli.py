"""``workbench inventory serve|exec|exec-auth|status`` as a user runs them, against a real server process."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from workbench.ports import free_port
from workbench.testing.inventory import InventoryServerProcess

REPORT = '''
import sys
from workbench.inventory.executable import inventory, read_only
print("datasets:", len(inventory.datasets), "read_only:", read_only, "args:", sys.argv[1:])
'''

ADD_SITE = '''
import sys
from workbench.inventory.executable import inventory, read_only
from workbench.inventory.dataformat import Dataset, Site
inventory.update(Site(sys.argv[1], storage_type="disk"))
inventory.update(Dataset("/Cli/Run2024-v1/AOD", status="valid"))
print("read_only:", read_only)
'''


@pytest.fixture
def served(tmp_path):
    web_port = free_port()
    process = InventoryServerProcess(tmp_path / "server", f"sqlite:///{tmp_path}/cli.db", "cli", web_port=web_port)
    process.start()
    yield process
    process.stop()


def workbench(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench", "inventory", *argv], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_exec_exec_auth_and_status_from_the_command_line(served, tmp_path):
    server = served.address  # the application socket's path
    report, add_site = tmp_path / "report.py", tmp_path / "add_site.py"
    report.write_text(REPORT)
    add_site.write_text(ADD_SITE)

    done = workbench("exec", "--server", server, str(report), "one", "--top", "5", "--", "--write")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "datasets: 0 read_only: True args: ['one', '--top', '5', '--write']\n"

    refused = workbench("exec", "--server", server, "--write", "--title", "sites", "--user", "alice", str(add_site),
                        "T2_CLI")
    assert refused.returncode == 1 and "not authorized" in refused.stderr and "exec-auth" in refused.stderr

    authorized = workbench("exec-auth", str(add_site), "--title", "sites", "--user", "alice", "--server", server)
    assert authorized.returncode == 0 and "authorized sites for alice: sha256 " in authorized.stdout
    listed = workbench("exec-auth", "--list", "--server", server)
    assert listed.stdout.split("\t")[:2] == ["sites", "alice"]

    # the options may follow the script, as in `exec SCRIPT --write --title T --server PATH ARGS`
    applied = workbench("exec", str(add_site), "--write", "--title", "sites", "--user", "alice", "--server", server,
                        "T2_CLI")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == "read_only: False\n" and "2 change(s) applied" in applied.stderr

    # read-only run of a writing script: its changes stay in its copy
    python_m = subprocess.run([sys.executable, "-m", "workbench.inventory", "exec", "--server", server, str(add_site),
                               "T2_NOT_KEPT"], capture_output=True, text=True, timeout=120)
    assert python_m.returncode == 0 and python_m.stdout == "read_only: True\n"

    status = json.loads(workbench("status", "--server", server, "--checksum").stdout)
    assert status["role"] == "primary" and status["status"] == "online" and status["applied_seq"] == 2
    assert status["summary"]["sites"] == 1 and len(status["checksum"]) == 64

    # the web port serves the same image
    with urllib.request.urlopen(f"http://127.0.0.1:{served.web_port}/data/inventory/datasets?dataset=/Cli/*", timeout=30) as answer:
        envelope = json.load(answer)
    assert envelope["result"] == "OK" and "/Cli/Run2024-v1/AOD" in json.dumps(envelope["data"])

    revoked = workbench("exec-auth", "--revoke", "--title", "sites", "--user", "alice", "--server", server)
    assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked"
    again = workbench("exec", "--server", server, "--write", "--title", "sites", "--user", "alice", str(add_site), "X")
    assert again.returncode == 1


def test_failures_reach_the_caller(served, tmp_path):
    server = served.address
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nprint('partial output')\nprint('bad news', file=sys.stderr)\nsys.exit(4)\n")
    result = workbench("exec", "--server", server, str(failing))
    assert result.returncode == 4
    assert result.stdout == "partial output\n" and "bad news" in result.stderr and "exit code 4" in result.stderr
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(120)\n")
    result = workbench("exec", "--server", server, "--timeout", "1", str(slow))
    assert result.returncode == 1 and "timeout" in result.stderr
    missing = workbench("exec", "--server", server, str(tmp_path / "nope.py"))
    assert missing.returncode == 1 and "cannot read the script" in missing.stderr


def test_unreachable_servers_and_bad_stores_are_clear_errors(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("print(1)\n")
    result = workbench("exec", "--server", str(tmp_path / "nobody-listens.sock"), str(script))
    assert result.returncode == 1 and "cannot connect to the inventory server" in result.stderr
    # the application port is a Unix socket now: a HOST:PORT says so
    result = workbench("exec", "--server", f"127.0.0.1:{free_port()}", str(script))
    assert result.returncode == 1 and "Unix socket" in result.stderr and "HOST:PORT" in result.stderr
    result = workbench("serve", "--store", "nosuchdialect://x", "--socket", str(tmp_path / "s.sock"),
                       "--web-port", "-1")
    assert result.returncode == 1 and "cannot open the store" in result.stderr


def test_exec_reaches_the_default_socket_with_no_extra_typing(tmp_path):
    from workbench.inventory.protocol import DEFAULT_SOCKET

    assert not Path(DEFAULT_SOCKET).exists(), "a server already listens on the default socket"
    process = InventoryServerProcess(tmp_path / "server", f"sqlite:///{tmp_path}/default.db", "default",
                                     socket_path=DEFAULT_SOCKET)
    process.start()
    try:
        report = tmp_path / "report.py"
        report.write_text(REPORT)
        done = workbench("exec", str(report))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("datasets: 0 read_only: True")
        status = json.loads(workbench("status").stdout)
        assert status["address"] == DEFAULT_SOCKET
    finally:
        process.stop()
    assert not Path(DEFAULT_SOCKET).exists()  # the server removes its socket when it stops


def test_the_store_url_comes_from_the_environment_and_a_password_on_the_command_line_warns(tmp_path):
    import os

    store = f"sqlite:///{tmp_path / 'inv.db'}"
    environment = {**os.environ, "WORKBENCH_INVENTORY_STORE": store}
    result = subprocess.run([sys.executable, "-m", "workbench", "inventory", "check"], capture_output=True,
                            text=True, timeout=120, env=environment)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "inv.db").exists()
    assert "warning" not in result.stderr
    # without either, a clear error naming both ways
    bare = {k: v for k, v in os.environ.items() if k != "WORKBENCH_INVENTORY_STORE"}
    result = subprocess.run([sys.executable, "-m", "workbench", "inventory", "check"], capture_output=True,
                            text=True, timeout=120, env=bare)
    assert result.returncode != 0 and "--store URL or $WORKBENCH_INVENTORY_STORE" in result.stderr
    # a password on the command line still works for a URL without a server, but warns
    result = workbench("check", "--store", f"sqlite://user:secret@/{tmp_path / 'inv.db'}")
    assert "--store holds a password" in result.stderr and "WORKBENCH_INVENTORY_STORE" in result.stderr
