"""The inventory attacked from the same host: strangers on the application socket, fuzzed frames, bad numbers,
a full disk under the store, and a block whose totals once kept a server from starting."""

from __future__ import annotations

import inspect
import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select, update

from workbench.inventory import Change
from workbench.inventory.client import InventoryClient
from workbench.inventory.server import InventoryServer
from workbench.inventory.store import Store, applications_table, authorizations_table, blocks_table
from workbench.testing.adversarial import (ProcessBounds, answers_within, fuzz_messages, fuzz_random, mutate,
                                           small_tmpfs)
from workbench.testing.inventory import InventoryServerProcess

#: the system's own interpreter: a stranger cannot read the test's virtualenv under /root
STRANGER_PYTHON = "/usr/bin/python3"

#: what a stranger's process runs: send each JSON text as one frame on its own connection, print each reply
STRANGER_CLIENT = textwrap.dedent('''
    import json, socket, struct, sys
    address, texts = sys.argv[1], json.loads(sys.argv[2])
    for text in texts:
        if address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = address
        else:
            host, port = address.rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = (host, int(port))
        sock.settimeout(30)
        try:
            sock.connect(target)
        except OSError as exc:
            print(json.dumps({"ok": False, "error": {"kind": "connect", "message": str(exc)}}), flush=True)
            continue
        body = text.encode()
        try:
            sock.sendall(struct.pack(">I", len(body)) + body)
        except OSError:
            pass
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.close()
        print(data[4:].decode() if len(data) >= 4 else json.dumps({"ok": False, "error": {"kind": "closed"}}),
              flush=True)
''')


# -- helpers ---------------------------------------------------------------------------------------
def address_of(server: Any) -> str:
    """The application port as a client names it (a socket path; ``host:port`` on a TCP server)."""
    address = server.address
    return address if isinstance(address, str) else "%s:%s" % address


def start_server(store_url: str, socket_dir: Path, **options: Any) -> InventoryServer:
    """An in-process server whose socket every local user can reach (the directory is 0755)."""
    if "socket_path" in inspect.signature(InventoryServer).parameters:
        options["socket_path"] = str(socket_dir / "app.sock")
    else:  # a server of the TCP application port
        options = {key: value for key, value in options.items() if key not in ("users", "admins")}
        options["port"] = 0
    return InventoryServer(store_url, web_port=None, heartbeat=0.2, takeover_after=2.0, **options).start()


_SHORT_DIRS: list[Path] = []


def short_dir(mode: int = 0o755) -> Path:
    """A directory with a short path (a socket path has at most 107 bytes), reachable by every user."""
    path = Path(tempfile.mkdtemp(prefix="inv-adv-"))
    path.chmod(mode)
    _SHORT_DIRS.append(path)
    return path


@pytest.fixture(autouse=True)
def _remove_short_dirs() -> Iterator[None]:
    yield
    while _SHORT_DIRS:
        shutil.rmtree(_SHORT_DIRS.pop(), ignore_errors=True)


def exec_text(script: str, **fields: Any) -> str:
    message = {"op": "exec", "script": script, "name": "a.py", "args": [], "write": False, "title": "a.py",
               **fields}
    return json.dumps(message)


def as_stranger(stranger: pwd.struct_passwd, address: str, texts: list[str]) -> list[dict[str, Any]]:
    """Send each text as one frame from a process of ``stranger``'s uid; the replies, decoded."""
    completed = subprocess.run(
        ["setpriv", f"--reuid={stranger.pw_uid}", f"--regid={stranger.pw_gid}", "--init-groups",
         STRANGER_PYTHON, "-c", STRANGER_CLIENT, address, json.dumps(texts)],
        capture_output=True, text=True, timeout=120, cwd="/")
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines()]


@pytest.fixture(scope="module")
def stranger() -> Iterator[pwd.struct_passwd]:
    """A real local user who is not the server's (made with useradd, removed after)."""
    name = f"wbadv{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


# -- strangers ----------------------------------------------------------------------------------------
def test_a_stranger_cannot_exec_authorize_or_revoke(tmp_path, stranger):
    socket_dir = short_dir()
    server = start_server(f"sqlite:///{tmp_path}/inv.db", socket_dir)
    try:
        with InventoryClient(address_of(server), timeout=30) as admin:
            admin.authorize("print('mine')", title="mine")
            granted = admin.authorizations()
        secret = tmp_path / "secret"
        secret.write_text("the server's secret")
        secret.chmod(0o600)
        attempts = [
            exec_text(f"print(open({str(secret)!r}).read())", user=stranger.pw_name),
            exec_text("print(1)", write=True, title="mine", user="root"),
            json.dumps({"op": "authorize", "script": "print(2)", "title": "self-service", "user": stranger.pw_name}),
            json.dumps({"op": "authorize", "script": "print(2)", "title": "self-service"}),
            json.dumps({"op": "revoke", "title": "mine", "user": "root"}),
            json.dumps({"op": "revoke", "title": "mine"}),
            json.dumps({"op": "authorizations"}),
        ]
        replies = as_stranger(stranger, address_of(server), attempts)
        assert len(replies) == len(attempts)
        for attempt, reply in zip(attempts, replies):
            assert reply["ok"] is False, f"a stranger got an answer to {attempt}: {reply}"
            assert reply["error"]["kind"] == "AccessDenied", reply
            assert "the server's secret" not in json.dumps(reply)
        with InventoryClient(address_of(server), timeout=30) as admin:
            assert admin.authorizations() == granted
            assert answers_within(lambda: admin.exec_script("print('still here')"))["stdout"] == "still here\n"
        with server.store.engine.connect() as conn:
            ran = conn.execute(select(applications_table.c.user)).scalars().all()
        assert ran == ["root"]  # the admin's check above, nothing of the stranger's
    finally:
        server.stop()


def test_a_user_runs_applications_as_itself_and_cannot_write_unauthorized(tmp_path, stranger):
    socket_dir = short_dir()
    server = start_server(f"sqlite:///{tmp_path}/inv.db", socket_dir, users=[stranger.pw_name])
    try:
        secret = tmp_path / "secret"
        secret.write_text("root only")
        secret.chmod(0o600)
        tmp_path.chmod(0o755)
        whoami = ("import os\nprint(os.getuid(), os.getgid(), sorted(os.getgroups()))\n"
                  f"try:\n    open({str(secret)!r}).read()\n    print('read the secret')\n"
                  "except PermissionError:\n    print('refused')\n")
        writer = ("from workbench.inventory.executable import inventory\n"
                  "from workbench.inventory.dataformat import Dataset\n"
                  "inventory.update(Dataset('/Stranger/A/AOD'))\n")
        replies = as_stranger(stranger, address_of(server), [
            exec_text(whoami),
            json.dumps({"op": "authorize", "script": writer, "title": "w"}),
            exec_text(writer, write=True, title="w"),
            exec_text(writer, write=True, title="w", user="root"),
        ])
        ran, authorize, unauthorized, impersonated = replies
        assert ran["ok"], ran
        assert ran["stdout"].split("\n")[:2] == [f"{stranger.pw_uid} {stranger.pw_gid} [{stranger.pw_gid}]",
                                                  "refused"]
        assert authorize["error"]["kind"] == "AccessDenied" and "admin" in authorize["error"]["message"]
        assert unauthorized["error"]["kind"] == "ApplicationRefused"
        assert "not authorized" in unauthorized["error"]["message"]
        assert unauthorized["error"]["fields"]["user"] == stranger.pw_name
        assert impersonated["error"]["kind"] == "AccessDenied"
        assert "/Stranger/A/AOD" not in server.inventory.datasets
        # an admin authorizes it for that user; then the user's write goes through, as the user
        with InventoryClient(address_of(server), timeout=30) as admin:
            admin.authorize(writer, title="w", user=stranger.pw_name)
        (applied,) = as_stranger(stranger, address_of(server), [exec_text(writer, write=True, title="w")])
        assert applied["ok"] and applied["applied"]["changes"] == 1, applied
        assert "/Stranger/A/AOD" in server.inventory.datasets
        with server.store.engine.connect() as conn:
            users = conn.execute(select(applications_table.c.user).where(applications_table.c.status == "done")
                                 ).scalars().all()
        assert users == [stranger.pw_name, stranger.pw_name]
        assert ProcessBounds.of(os.getpid()).zombies == 0
    finally:
        server.stop()


def test_a_server_not_run_as_root_serves_only_its_own_user(tmp_path, stranger):
    # A server run by the stranger's uid: root (an admin) gets the server's uid, less than it has;
    # a third user (nobody) is refused, since the server cannot become it.
    warm = start_server(f"sqlite:///{tmp_path}/warm.db", short_dir())
    with InventoryClient(address_of(warm), timeout=30) as client:  # loads every module a server uses
        client.exec_script("print(1)")
    warm.stop()
    shared = short_dir(0o777)
    socket_path = str(shared / "app.sock")
    ready_read, ready_write = os.pipe()
    stop_read, stop_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the server's process
        status = 1
        try:
            os.close(ready_read)
            os.close(stop_write)
            os.setgroups([])
            os.setgid(stranger.pw_gid)
            os.setuid(stranger.pw_uid)
            server = InventoryServer(f"sqlite:///{shared}/inv.db", socket_path=socket_path, web_port=None,
                                     workdir=str(shared / "apps")).start()
            os.write(ready_write, b"1")
            os.read(stop_read, 1)
            server.stop()
            status = 0
        finally:
            os._exit(status)
    os.close(ready_write)
    os.close(stop_read)
    try:
        assert os.read(ready_read, 1) == b"1", "the server did not start"
        with InventoryClient(socket_path, timeout=30) as root_client:
            result = root_client.exec_script("import os\nprint(os.getuid())\n")
        assert result["stdout"] == f"{stranger.pw_uid}\n"
        nobody = pwd.getpwnam("nobody")
        replies = as_stranger(nobody, socket_path, [exec_text("print(1)"),
                                                    json.dumps({"op": "authorize", "script": "x", "title": "t"}),
                                                    json.dumps({"op": "revoke", "title": "t"})])
        assert [reply["error"]["kind"] for reply in replies] == ["AccessDenied"] * 3, replies
    finally:
        os.close(stop_write)
        _, status = os.waitpid(pid, 0)
        os.close(ready_read)
        subprocess.run(["rm", "-rf", str(shared)], check=False)
    assert os.waitstatus_to_exitcode(status) == 0


SQUATTER = textwrap.dedent('''
    import os, socket, sys
    path, log = sys.argv[1], sys.argv[2]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o666)
    server.listen(8)
    print("listening", flush=True)
    while True:
        conn, _ = server.accept()
        conn.settimeout(5)
        received = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
        with open(log, "ab") as out:
            out.write(received)
        conn.close()
''')


def test_the_default_socket_squatted_by_a_stranger_gets_no_script(tmp_path, stranger):
    from workbench.inventory.protocol import DEFAULT_SOCKET

    assert not Path(DEFAULT_SOCKET).exists(), "something already listens on the default socket"
    heard = short_dir(0o777) / "heard"
    heard.touch()
    heard.chmod(0o666)
    squatter = subprocess.Popen(["setpriv", f"--reuid={stranger.pw_uid}", f"--regid={stranger.pw_gid}",
                                 "--init-groups", STRANGER_PYTHON, "-c", SQUATTER, DEFAULT_SOCKET, str(heard)],
                                stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert squatter.stdout.readline().strip() == "listening"
        script = tmp_path / "secret_report.py"
        script.write_text("print('the secret algorithm')\n")
        result = _workbench("exec", str(script))  # no --server: the default socket
        assert result.returncode == 1 and "not trusted" in result.stderr, result.stderr
        with pytest.raises(Exception) as refused:  # noqa: PT011 - TransportError
            InventoryClient(timeout=5)
        assert getattr(refused.value, "reason", None) == "untrusted-server"
        time.sleep(0.2)  # what the squatter may have read is in its log by now
        assert b"secret algorithm" not in heard.read_bytes() and heard.read_bytes() == b""
    finally:
        squatter.kill()
        squatter.wait(10)
        Path(DEFAULT_SOCKET).unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(heard.parent)], check=False)


# -- fuzzing ------------------------------------------------------------------------------------------
VALID_MESSAGES = [
    {"op": "status"},
    {"op": "servers"},
    {"op": "authorizations"},
    {"op": "exec", "script": "print(1)", "name": "f.py", "args": ["a"], "write": False, "title": "f", "timeout": 5},
    {"op": "exec", "script": "print(2)", "name": "f.py", "args": [], "write": True, "title": "f"},
    {"op": "authorize", "script": "print(3)", "title": "f"},
    {"op": "revoke", "title": "f"},
]


def _raw_exchange(address: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, close our side, read what comes back until the server hangs up."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
    finally:
        sock.close()


@pytest.fixture
def server_process(tmp_path) -> Iterator[InventoryServerProcess]:
    process = InventoryServerProcess(tmp_path / "server", f"sqlite:///{tmp_path}/inv.db", "adversary",
                                     extra=["--app-timeout", "10"])
    process.start()
    yield process
    process.stop()


def test_fuzzed_frames_leave_the_server_answering_and_bounded(server_process):
    rng = fuzz_random()
    address = server_process.address
    with InventoryClient(address, timeout=30) as client:
        client.exec_script("print('warm')")  # the first fork and imports are not growth
    before = ProcessBounds.of(server_process.process.pid)
    frames = []
    for message in VALID_MESSAGES:
        body = json.dumps(message).encode()
        frames.append(struct.pack(">I", len(body)) + body)
    budget = fuzz_messages()
    for _ in range(budget):
        data = mutate(rng.choice(frames), rng)
        try:
            _raw_exchange(address, data)
        except socket.timeout:
            pytest.fail(f"the server neither answered nor hung up (seed {rng.seed_value}): {data[:80]!r}")
    with InventoryClient(address, timeout=30) as client:
        result = answers_within(lambda: client.exec_script("print('after the fuzz')"))
    assert result["stdout"] == "after the fuzz\n"
    # a moment for the threads of the last connections to end
    deadline = time.monotonic() + 5
    while ProcessBounds.of(server_process.process.pid).fds - before.fds > 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    ProcessBounds.of(server_process.process.pid).assert_within(before, rss_mib=64, fds=8, children=0)


FLOOD = textwrap.dedent('''
    import socket, sys, time
    held = []
    for _ in range(int(sys.argv[2])):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(sys.argv[1])
        held.append(sock)
    print("held", len(held), flush=True)
    time.sleep(120)
''')


def test_a_flood_of_idle_connections_by_one_user_does_not_lock_out_the_others(tmp_path, stranger):
    socket_path = short_dir() / "app.sock"
    process = InventoryServerProcess(tmp_path / "server", f"sqlite:///{tmp_path}/inv.db", "flooded",
                                     socket_path=socket_path, extra=["--user", stranger.pw_name])
    process.start()
    flood = None
    try:
        threads_before = len(os.listdir(f"/proc/{process.process.pid}/task"))
        flood = subprocess.Popen(["setpriv", f"--reuid={stranger.pw_uid}", f"--regid={stranger.pw_gid}",
                                  "--init-groups", STRANGER_PYTHON, "-c", FLOOD, str(socket_path), "200"],
                                 stdout=subprocess.PIPE, text=True, cwd="/")
        assert flood.stdout.readline().split() == ["held", "200"]
        time.sleep(0.5)
        # the flood holds at most its own bound of threads; the others' requests answer meanwhile
        threads = len(os.listdir(f"/proc/{process.process.pid}/task"))
        assert threads - threads_before <= 32 + 2, threads - threads_before
        with InventoryClient(str(socket_path), timeout=30) as client:
            assert answers_within(lambda: client.status())["status"] == "online"
            assert answers_within(lambda: client.exec_script("print(1)"))["stdout"] == "1\n"
    finally:
        if flood is not None:
            flood.kill()
            flood.wait(10)
        process.stop()


# -- numbers ------------------------------------------------------------------------------------------
BAD_TIMEOUTS = ["NaN", "Infinity", "-Infinity", "1e999", "-1", "0", "1" + "0" * 400, '"5"', "true", "[]", "{}",
                "1e-400"]


def test_non_finite_and_out_of_range_timeouts_are_refused_and_no_child_is_left(server_process):
    address = server_process.address
    for value in BAD_TIMEOUTS:
        text = exec_text("print(1)")[:-1] + f', "timeout": {value}}}'
        body = text.encode()
        reply = _raw_exchange(address, struct.pack(">I", len(body)) + body)
        answer = json.loads(reply[4:])
        assert answer["ok"] is False and answer["error"]["kind"] == "ProtocolError", (value, answer)
    with InventoryClient(address, timeout=30) as client:
        slow = client.exec_script("import time\ntime.sleep(30)\n", timeout=0.5)
        assert slow["status"] == "timeout"
        assert client.exec_script("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")["status"] == "killed"
        assert answers_within(lambda: client.exec_script("print('fine')"))["stdout"] == "fine\n"
    bounds = ProcessBounds.of(server_process.process.pid)
    assert (bounds.children, bounds.zombies) == (0, 0)


# -- a full disk ------------------------------------------------------------------------------------------
def dataset_batch(name: str, files: int) -> list[Change]:
    """A dataset with one block of ``files`` files of 1 byte (block totals declared: ``files`` / ``files``)."""
    changes = [Change("update", {"kind": "Dataset", "name": name, "status": "valid"}),
               Change("update", {"kind": "Block", "name": "b0", "dataset": name, "size": files, "num_files": files})]
    changes += [Change("update", {"kind": "File", "lfn": f"/store{name}/{i:06d}.root", "block": "b0", "dataset": name,
                                  "size": 1}) for i in range(files)]
    return changes


def datasets_batch(prefix: str, count: int) -> list[Change]:
    return [Change("update", {"kind": "Dataset", "name": f"{prefix}{i:06d}/A/AOD", "status": "valid",
                              "software_version": "CMSSW_" + "x" * 200}) for i in range(count)]


FILL_THEN_WRITE = textwrap.dedent('''
    import sys
    from pathlib import Path
    from workbench.testing.adversarial import fill_disk
    from workbench.inventory.executable import inventory
    from workbench.inventory.dataformat import Dataset
    fill_disk(Path(sys.argv[1]))  # the disk fills while the application holds the write slot
    for i in range(3000):
        inventory.update(Dataset(f"/Full{i:05d}/A/AOD", software_version="CMSSW_" + "x" * 200))
''')


def test_a_full_disk_does_not_wedge_the_write_slot(tmp_path):
    with small_tmpfs(tmp_path / "disk", size="4m") as disk:
        url = f"sqlite:///{disk}/inv.db"
        server = start_server(url, short_dir(), writer_wait=3.0)
        try:
            server.apply_changes(datasets_batch("/Before", 1), title="before")
            with InventoryClient(address_of(server), timeout=60) as client:
                client.authorize(FILL_THEN_WRITE, title="fill", user="root")
                with pytest.raises(Exception) as refused:  # noqa: PT011 - the store's error on a full disk
                    client.exec_script(FILL_THEN_WRITE, args=[str(disk)], write=True, title="fill", user="root")
                assert "full" in str(refused.value)
            for filler in disk.glob(".filler-*"):
                filler.unlink()
            # space is back: the next writes get the slot at once
            answers_within(lambda: server.apply_changes(datasets_batch("/After", 1), title="after"))
            again_script = ("from workbench.inventory.executable import inventory\n"
                            "from workbench.inventory.dataformat import Dataset\n"
                            "inventory.update(Dataset('/Again/A/AOD'))\n")
            with InventoryClient(address_of(server), timeout=30) as client:
                client.authorize(again_script, title="again", user="root")
                second = answers_within(lambda: client.exec_script(again_script, write=True, title="again",
                                                                   user="root"))
            assert second["applied"]["changes"] == 1
            assert {"/Before000000/A/AOD", "/After000000/A/AOD", "/Again/A/AOD"} == set(server.inventory.datasets)
        finally:
            server.stop()
        # acknowledged writes are there after a restart, refused ones are not
        again = start_server(url, short_dir())
        try:
            assert {"/Before000000/A/AOD", "/After000000/A/AOD", "/Again/A/AOD"} == set(again.inventory.datasets)
        finally:
            again.stop()


# -- block totals -------------------------------------------------------------------------------------------
BLOCK_AND_FILE = textwrap.dedent('''
    from workbench.inventory.executable import inventory
    from workbench.inventory.dataformat import Dataset, Block, File
    d = inventory.update(Dataset("/Counted/A/AOD"))
    b = inventory.update(Block("b1", d, size=10, num_files=1))
    inventory.update(File("/store/counted/f1.root", b, size=10))
''')
SHOW_BLOCK = ("from workbench.inventory.executable import inventory\n"
              "b = inventory.datasets['/Counted/A/AOD'].blocks['b1']\nprint(b.num_files, b.size, len(b.files))\n")


def test_block_totals_round_trip_through_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path}/inv.db"
    process = InventoryServerProcess(tmp_path / "server", url, "counting")
    process.start()
    try:
        with InventoryClient(process.address, timeout=30) as client:
            client.authorize(BLOCK_AND_FILE, title="count")
            assert client.exec_script(BLOCK_AND_FILE, write=True, title="count")["status"] == "done"
            assert client.exec_script(SHOW_BLOCK)["stdout"] == "1 10 1\n"
        process.stop()
        process.start()  # a server starts on what it wrote
        with InventoryClient(process.address, timeout=30) as client:
            assert client.exec_script(SHOW_BLOCK)["stdout"] == "1 10 1\n"
    finally:
        process.stop()


def test_a_store_whose_blocks_do_not_add_up_still_serves_and_check_repairs_it(tmp_path):
    url = f"sqlite:///{tmp_path}/inv.db"
    store = Store(url)
    store.apply_and_write(_empty_inventory(), dataset_batch("/Odd/A/AOD", 3))
    with store.engine.begin() as conn:  # totals as an older server wrote them: twice the files
        conn.execute(update(blocks_table).values(num_files=6, size=6))
    store.close()
    process = InventoryServerProcess(tmp_path / "server", url, "odd")
    process.start()
    try:
        with InventoryClient(process.address, timeout=30) as client:
            shown = client.exec_script("from workbench.inventory.executable import inventory\n"
                                       "print(inventory.datasets['/Odd/A/AOD'].blocks['b0'].num_files)\n")
        assert shown["stdout"] == "6\n"
    finally:
        process.stop()
    assert "do not add up" in process.log_tail(200)
    checked = _workbench("check", "--store", url)
    assert checked.returncode == 1 and "/Odd/A/AOD#b0: declares 6 files / 6 bytes, its files: 3 / 3" in checked.stdout
    repaired = _workbench("check", "--repair", "--store", url)
    assert repaired.returncode == 0 and "repaired" in repaired.stdout
    again = _workbench("check", "--store", url)
    assert again.returncode == 0 and "every block adds up" in again.stdout
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(select(blocks_table.c.num_files, blocks_table.c.size)).one() == (3, 3)
        with store.engine.connect() as conn:
            assert conn.execute(select(authorizations_table)).all() == []
    finally:
        store.close()


def _empty_inventory() -> Any:
    from workbench.inventory import Inventory

    inventory = Inventory("seed")
    inventory.emit_events = False
    return inventory


def _workbench(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench", "inventory", *argv], capture_output=True, text=True,
                          timeout=120)


# -- the web port ---------------------------------------------------------------------------------------
WEB_REQUESTS = [
    "/data/inventory/datasets?dataset=/Sample*",
    "/data/inventory/dataset?name=/Sample1/Run2024-v1/AOD",
    "/data/inventory/sites",
    "/data/inventory/groups",
    "/data/inventory/replicas?site=T2_CH_CERN",
    "/data/inventory/stats",
    "/web/inventory/datasets?dataset=/Sample*&limit=3",
    "/web/inventory/dataset?name=/Sample0/Run2024-v1/AOD",
    "/web/inventory/sites",
    "/data/inventory/inject",
]


def _http_get(port: int, target: bytes, timeout: float = 5.0) -> bytes:
    """One raw HTTP request (the target sent as given, however broken); the status line back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received.split(b"\r\n", 1)[0]


def test_fuzzed_web_paths_and_queries_get_client_errors_not_crashes(tmp_path):
    from workbench.ports import free_port
    from workbench.testing.inventory_web import build_sample_inventory

    url = f"sqlite:///{tmp_path}/web.db"
    journal: list[Change] = []
    sample = _empty_inventory()
    sample.add_sink(lambda change, writes: journal.append(change))
    build_sample_inventory(sample)
    store = Store(url)
    store.apply_and_write(_empty_inventory(), journal)
    store.close()
    web_port = free_port()
    process = InventoryServerProcess(tmp_path / "server", url, "web", web_port=web_port)
    process.start()
    try:
        assert _http_get(web_port, WEB_REQUESTS[0].encode()).startswith(b"HTTP/1.1 200")
        before = ProcessBounds.of(process.process.pid)
        rng = fuzz_random()
        server_errors = []
        for _ in range(fuzz_messages()):
            target = mutate(rng.choice(WEB_REQUESTS).encode(), rng)
            # what a client can put on a request line at all: no spaces or line breaks
            target = b"/" + target.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"").lstrip(b"/")
            try:
                status = _http_get(web_port, target)
            except socket.timeout:
                pytest.fail(f"the web port hung on {target!r} (seed {rng.seed_value})")
            if status.startswith(b"HTTP/1.1 5"):
                server_errors.append((target, status))
        assert server_errors == [], f"5xx answers (seed {rng.seed_value}): {server_errors[:5]}"
        answers_within(lambda: _http_get(web_port, b"/data/inventory/stats"))
        with InventoryClient(process.address, timeout=30) as client:
            answers_within(lambda: client.status())
        ProcessBounds.of(process.process.pid).assert_within(before, rss_mib=64, fds=16, children=0)
    finally:
        process.stop()
