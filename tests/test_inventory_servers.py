"""Horizontal scaling: secondaries follow the primary through SQL tables, take over, reload when out of sync."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from typing import Any, Callable

import pytest
from sqlalchemy import func, select

from workbench.events import EventRecorder
from workbench.inventory import Change
from workbench.inventory.client import InventoryClient
from workbench.inventory.server import InventoryServer
from workbench.inventory.store import Store, applications_table, files_table, state_table
from workbench.inventory.transport import TransportError
from workbench.testing.inventory import InventoryServerProcess


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (TransportError, OSError) as exc:  # a server may be between roles or starting
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")


def dataset_changes(name: str, blocks: int, files: int) -> list[Change]:
    changes = [Change("update", {"kind": "Dataset", "name": name, "status": "valid"})]
    for b in range(blocks):
        changes.append(Change("update", {"kind": "Block", "name": f"b{b}", "dataset": name}))
        for f in range(files):
            changes.append(Change("update", {"kind": "File", "lfn": f"{name}/{b}/{f}.root", "block": f"b{b}",
                                             "dataset": name, "size": 1000 + f}))
    return changes


WRITER = '''
import sys
from workbench.inventory.executable import inventory
from workbench.inventory.dataformat import Dataset, Block, File
name, blocks, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dataset = Dataset(name, status="valid")
inventory.update(dataset)
for b in range(blocks):
    block = Block(f"b{b}", dataset)
    inventory.update(block)
    for f in range(files):
        inventory.update(File(f"/store/{name.strip('/')}/{b}/{f:05d}.root", block, size=1000 + f))
print("recorded", blocks * files, "files")
'''


# -- in-process, on one SQLite file ---------------------------------------------------------------------
def test_a_secondary_follows_the_primary_in_order(tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    options = dict(web_port=None, heartbeat=0.2, takeover_after=30.0, poll_interval=0.05)
    with InventoryServer(url, **options) as primary, \
            InventoryServer(url, master_url=url, **{**options, "web_port": 0}) as secondary:
        assert (primary.role, secondary.role) == ("primary", "secondary")
        recorder = EventRecorder()
        secondary.inventory.add_listener(recorder)
        primary.apply_changes(dataset_changes("/Follow/A/AOD", 3, 4), title="load")
        primary.apply_changes([Change("delete", {"kind": "Block", "name": "b1", "dataset": "/Follow/A/AOD"})])
        wait_until(lambda: secondary.applied_seq == primary.applied_seq, "the secondary to catch up")
        assert secondary.inventory.checksum() == primary.inventory.checksum() == primary.store.version()["checksum"]
        assert sorted(secondary.inventory.datasets["/Follow/A/AOD"].blocks) == ["b0", "b2"]
        # the secondary's web port answers from its own image
        with urllib.request.urlopen(f"{secondary.web_url}/data/inventory/datasets?dataset=/Follow/*", timeout=30) as answer:
            assert "/Follow/A/AOD" in json.dumps(json.load(answer)["data"])
        recorder.wait_for("object_deleted")
        kinds = [e.args[0]["kind"] for e in recorder.events if e.kind in ("object_updated", "object_deleted")]
        assert kinds == ["Dataset"] + (["Block"] + ["File"] * 4) * 3 + ["Block"]
        statuses = [e.args[0]["status"] for e in recorder.events if e.kind == "status_changed"]
        assert "updating" in statuses and statuses[-1] == "online"
        # a write sent to the secondary reaches the primary; the secondary then follows it
        script = "from workbench.inventory.executable import inventory\nfrom workbench.inventory.dataformat import Site\n" \
                 "inventory.update(Site('T2_Redirected'))\n"
        with InventoryClient(secondary.address) as client:
            client.authorize(script, title="redirect", user="erin")
            result = client.exec_script(script, name="r.py", write=True, title="redirect", user="erin")
            assert result["applied"]["changes"] == 1
            assert "T2_Redirected" in primary.inventory.sites
            wait_until(lambda: "T2_Redirected" in secondary.inventory.sites, "the redirected write on the secondary")
            servers = {row["id"]: row for row in client.servers()}
        assert {servers[primary.server_id]["role"], servers[secondary.server_id]["role"]} == {"primary", "secondary"}


def test_a_stopped_primary_hands_over_to_a_secondary(tmp_path):
    url = f"sqlite:///{tmp_path}/handover.db"
    options = dict(web_port=None, heartbeat=0.2, takeover_after=30.0, poll_interval=0.05)
    primary = InventoryServer(url, **options).start()
    with InventoryServer(url, master_url=url, **options) as secondary:
        primary.apply_changes(dataset_changes("/Handover/A/AOD", 1, 2))
        primary.stop()
        # a graceful stop frees the role at once: no need to wait for the heartbeat timeout
        wait_until(lambda: secondary.role == "primary", "the secondary to take over", timeout=10)
        secondary.apply_changes([Change("update", {"kind": "Site", "name": "T2_After"})])
        assert secondary.store.version()["checksum"] == secondary.inventory.checksum()
        assert "/Handover/A/AOD" in secondary.inventory.datasets


# -- real processes on MariaDB ----------------------------------------------------------------------------
def client_of(process: InventoryServerProcess) -> InventoryClient:
    return InventoryClient(process.address, timeout=120)


def status_of(process: InventoryServerProcess, checksum: bool = False) -> dict[str, Any]:
    with client_of(process) as client:
        return client.status(checksum=checksum)


def test_three_servers_survive_kill_9_of_the_primary_while_it_applies(mariadb_url, tmp_path):
    store = Store(mariadb_url)
    servers = {name: InventoryServerProcess(tmp_path / name, mariadb_url, name, master=name != "a")
               for name in ("a", "b", "c")}
    try:
        servers["a"].start()
        wait_until(lambda: status_of(servers["a"])["role"] == "primary", "a to be the primary")
        servers["b"].start()
        servers["c"].start()
        for name in "bc":
            wait_until(lambda: status_of(servers[name])["status"] == "online", f"{name} online")
            assert status_of(servers[name])["role"] == "secondary"
        with client_of(servers["a"]) as client:
            client.authorize(WRITER, title="writer", user="ops")
            first = client.exec_script(WRITER, name="writer.py", args=["/Before/Kill/AOD", "5", "20"], write=True,
                                       title="writer", user="ops")
        assert first["applied"]["changes"] == 1 + 5 + 100
        for name in "bc":
            wait_until(lambda: status_of(servers[name])["applied_seq"] == first["applied"]["seq"], f"{name} follows")

        # A large batch: kill -9 the primary while it applies it (its application row says "applying").
        outcome: dict[str, Any] = {}

        def run_big_batch() -> None:
            try:
                with client_of(servers["a"]) as other:
                    outcome["result"] = other.exec_script(WRITER, name="writer.py", args=["/Killed/During/AOD", "60", "100"],
                                                          write=True, title="writer", user="ops")
            except Exception as exc:  # noqa: BLE001 - the connection dies with the server
                outcome["error"] = exc

        runner = threading.Thread(target=run_big_batch)
        runner.start()

        def applying() -> bool:
            with store.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(applications_table).where(
                    applications_table.c.status == "applying")).scalar_one() > 0

        wait_until(applying, "the primary to start applying the big batch", timeout=120)
        servers["a"].kill9()
        runner.join(60)
        assert isinstance(outcome.get("error"), TransportError), outcome

        # one secondary takes over; every server ends at the store's version
        def new_primary() -> str | None:
            with store.engine.connect() as conn:
                master = conn.execute(select(state_table.c.master_id)).scalar()
            return master if master in ("b", "c") else None

        winner = wait_until(new_primary, "a secondary to take over", timeout=60)
        version = store.version()
        for name in "bc":
            wait_until(lambda: status_of(servers[name])["applied_seq"] == version["seq"]
                       and status_of(servers[name])["status"] == "online", f"{name} at the store's version")
            status = status_of(servers[name], checksum=True)
            assert status["checksum"] == version["checksum"], name
        # the killed batch is all or nothing (it was being applied: nothing of it was committed)
        with store.engine.connect() as conn:
            killed_files = conn.execute(select(func.count()).select_from(files_table).where(
                files_table.c.lfn.like("/store/Killed/%"))).scalar_one()
        assert killed_files == 0
        assert version["seq"] == first["applied"]["seq"]

        # the new primary writes; the other secondary follows it
        loser = "c" if winner == "b" else "b"
        with client_of(servers[loser]) as client:  # sent to the secondary, redirected to the primary
            after = client.exec_script(WRITER, name="writer.py", args=["/After/Kill/AOD", "2", "10"], write=True,
                                       title="writer", user="ops")
        assert after["applied"]["changes"] == 1 + 2 + 20
        wait_until(lambda: status_of(servers[loser])["applied_seq"] == after["applied"]["seq"], "the follower")
        final = store.version()
        assert {status_of(servers[name], checksum=True)["checksum"] for name in "bc"} == {final["checksum"]}
    finally:
        for process in servers.values():
            process.stop()
        store.close()


def test_a_secondary_that_falls_out_of_sync_reloads(mariadb_url, tmp_path):
    store = Store(mariadb_url)
    primary = InventoryServerProcess(tmp_path / "p", mariadb_url, "p")
    secondary = InventoryServerProcess(tmp_path / "s", mariadb_url, "s", master=True,
                                       takeover_after=600.0)
    try:
        primary.start()
        wait_until(lambda: status_of(primary)["role"] == "primary", "the primary")
        secondary.start()
        with client_of(primary) as client:
            client.authorize(WRITER, title="writer", user="ops")
            client.exec_script(WRITER, name="w.py", args=["/One/A/AOD", "1", "5"], write=True, title="writer",
                               user="ops")
        wait_until(lambda: status_of(secondary)["applied_seq"] == store.seq(), "the secondary to follow")
        # freeze the secondary, let the primary move on, and drop the change log it would need
        os.killpg(secondary.process.pid, signal.SIGSTOP)
        try:
            with client_of(primary) as client:
                client.exec_script(WRITER, name="w.py", args=["/Two/A/AOD", "2", "5"], write=True, title="writer",
                                   user="ops")
            assert store.prune_changes(keep=0) > 0
        finally:
            os.killpg(secondary.process.pid, signal.SIGCONT)
        wait_until(lambda: status_of(secondary)["applied_seq"] == store.seq()
                   and status_of(secondary)["status"] == "online", "the secondary to reload")
        assert status_of(secondary, checksum=True)["checksum"] == store.version()["checksum"]
        log_text = secondary.log_path.read_text()
        assert "reloading" in log_text
    finally:
        secondary.stop()
        primary.stop()
        store.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_two_servers_on_postgresql(backend, postgres_url, tmp_path):
    primary = InventoryServerProcess(tmp_path / "p", postgres_url, "pg-p")
    secondary = InventoryServerProcess(tmp_path / "s", postgres_url, "pg-s", master=True)
    store = Store(postgres_url)
    try:
        primary.start()
        wait_until(lambda: status_of(primary)["role"] == "primary", "the primary")
        secondary.start()
        with client_of(secondary) as client:
            client.authorize(WRITER, title="writer", user="ops")
            result = client.exec_script(WRITER, name="w.py", args=["/Pg/A/AOD", "3", "7"], write=True,
                                        title="writer", user="ops")
        assert result["applied"]["changes"] == 1 + 3 + 21
        wait_until(lambda: status_of(secondary)["applied_seq"] == result["applied"]["seq"], "the secondary")
        assert status_of(secondary, checksum=True)["checksum"] == status_of(primary, checksum=True)["checksum"] \
            == store.version()["checksum"]
    finally:
        secondary.stop()
        primary.stop()
        store.close()


def test_a_secondary_with_its_own_store_keeps_a_copy(tmp_path):
    shared, local = f"sqlite:///{tmp_path}/shared.db", f"sqlite:///{tmp_path}/local.db"
    options = dict(web_port=None, heartbeat=0.2, takeover_after=30.0, poll_interval=0.05)
    with InventoryServer(shared, **options) as primary:
        primary.apply_changes(dataset_changes("/Before/A/AOD", 2, 3))
        with InventoryServer(local, master_url=shared, **options) as secondary:
            copy = Store(local)
            assert copy.version() == primary.store.version()  # copied at load
            primary.apply_changes(dataset_changes("/After/A/AOD", 1, 4))
            primary.apply_changes([Change("delete", {"kind": "Dataset", "name": "/Before/A/AOD"})])
            wait_until(lambda: secondary.applied_seq == primary.applied_seq, "the secondary")
            assert copy.version() == primary.store.version()  # then written through change by change
            assert secondary.status_info()["store_seq"] == primary.applied_seq
            copy.close()


def test_a_crashed_server_takes_its_running_applications_with_it(tmp_path):
    server = InventoryServerProcess(tmp_path / "crash", f"sqlite:///{tmp_path}/crash.db", "crash")
    pid_file = tmp_path / "app.pid"
    script = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n"
    try:
        server.start()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with client_of(server) as client:
                    outcome["result"] = client.exec_script(script, name="sleeper.py")
            except TransportError as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=run)
        runner.start()
        pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), "the application to start"))
        server.kill9()
        runner.join(30)
        assert "error" in outcome

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a zombie waiting for its (re)parent counts as gone
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(") ", 1)[1].startswith("Z")

        wait_until(gone, "the orphaned application to be killed", timeout=30)
    finally:
        server.stop()
