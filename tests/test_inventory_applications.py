"""Applications: read-only copies, atomic write-back on exit 0, authorizations, output, timeouts, one writer."""

from __future__ import annotations

import os
import pwd
import socket
import struct
import textwrap
import threading

import pytest
from sqlalchemy import select

from workbench.inventory import Change
from workbench.inventory.access import AccessDenied, Caller
from workbench.inventory.applications import ApplicationRefused, script_checksum
from workbench.inventory.client import InventoryClient
from workbench.inventory.protocol import ProtocolError, encode_frame
from workbench.inventory.store import applications_table, state_table
from workbench.testing.adversarial import ProcessBounds
from workbench.testing.inventory import inventory_client, inventory_server  # noqa: F401

#: the seed's application: the inventory through an import, update() with a clone, delete() by identifier
SEED_APPLICATION = textwrap.dedent('''
    from workbench.inventory.executable import inventory
    from workbench.inventory.executable import read_only
    from workbench.inventory.dataformat import Dataset, Block, Site, Group, DatasetReplica, BlockReplica

    site = Site("T2_US_MIT", host="mit.edu", storage_type="disk")
    inventory.update(site)                                  # adds a clone of the object
    dataset = Dataset("/Seed/Run2024-v1/AOD", status="valid", data_type="data")
    inventory.update(dataset)
    inventory.update(Block("b1", dataset, size=100, num_files=0))
    inventory.update(DatasetReplica(dataset, site))
    inventory.update(BlockReplica(Block("b1", dataset), site, size=100))
    inventory.update(Dataset("/Seed/Run2024-v1/AOD", status="production"))   # same identifier: attributes copied
    inventory.delete(Dataset("/Old/Run2023-v1/AOD"))        # not an object of the inventory: found by name
    if not read_only:
        print("changes will be kept")
    print(len(inventory.datasets), inventory.datasets["/Seed/Run2024-v1/AOD"].status.value)
''')


def seed_old_dataset(server) -> None:
    server.apply_changes([Change("update", {"kind": "Dataset", "name": "/Old/Run2023-v1/AOD"})], title="setup")


def test_seed_application_read_only_changes_only_its_copy(inventory_server, inventory_client):
    seed_old_dataset(inventory_server)
    before = inventory_server.inventory.checksum()
    result = inventory_client.exec_script(SEED_APPLICATION, name="seed.py")
    assert result["status"] == "done" and result["exit_code"] == 0
    assert result["stdout"] == "1 production\n"  # its copy: /Old deleted, /Seed added
    assert result["applied"] is None
    assert inventory_server.inventory.checksum() == before
    assert set(inventory_server.inventory.datasets) == {"/Old/Run2023-v1/AOD"}


def test_seed_application_read_write_applies_changes_in_order(inventory_server, inventory_client):
    seed_old_dataset(inventory_server)
    inventory_client.authorize(SEED_APPLICATION, title="seed", user="alice")
    result = inventory_client.exec_script(SEED_APPLICATION, name="seed.py", write=True, title="seed", user="alice")
    assert result["status"] == "done"
    assert result["stdout"] == "changes will be kept\n1 production\n"
    assert result["applied"]["changes"] == result["changes"] == 7
    inv = inventory_server.inventory
    assert set(inv.datasets) == {"/Seed/Run2024-v1/AOD"}
    assert inv.datasets["/Seed/Run2024-v1/AOD"].status.value == "production"
    assert inv.sites["T2_US_MIT"].block_replicas and inv.sites["T2_US_MIT"].host == "mit.edu"
    assert inventory_server.store.version()["checksum"] == inv.checksum()


@pytest.mark.parametrize("ending, status, exit_code", [
    ("raise RuntimeError('half way')", "failed", 1),
    ("import sys; sys.exit(3)", "failed", 3),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed", None),
    ("import time; time.sleep(60)", "timeout", None),
])
def test_a_write_application_that_does_not_exit_0_applies_nothing(inventory_server, inventory_client, ending,
                                                                   status, exit_code):
    script = ("from workbench.inventory.executable import inventory\n"
              "from workbench.inventory.dataformat import Dataset\n"
              "for i in range(50):\n"
              "    inventory.update(Dataset(f'/Partial/{i}/AOD'))\n"
              "print('before the end', flush=True)\n" + ending + "\n")
    inventory_client.authorize(script, title="partial", user="bob")
    before = inventory_server.store.version()
    result = inventory_client.exec_script(script, name="partial.py", write=True, title="partial", user="bob",
                                          timeout=4)
    assert (result["status"], result["exit_code"]) == (status, exit_code)
    assert "before the end" in result["stdout"]
    assert result["applied"] is None
    assert inventory_server.store.version() == before
    assert not inventory_server.inventory.datasets
    if status == "failed" and exit_code == 1:
        assert "RuntimeError: half way" in result["stderr"] and "applications.py" not in result["stderr"]


def test_authorization_follows_the_script_content(inventory_server, inventory_client):
    script = "from workbench.inventory.executable import inventory\nfrom workbench.inventory.dataformat import Site\n" \
             "inventory.update(Site('T1_DE_KIT'))\n"
    with pytest.raises(ApplicationRefused) as info:
        inventory_client.exec_script(script, name="kit.py", write=True, title="kit", user="carol")
    assert info.value.reason == "not-authorized" and info.value.title == "kit"
    entry = inventory_client.authorize(script, title="kit", user="carol")
    assert entry["checksum"] == script_checksum(script)
    assert inventory_client.exec_script(script, name="kit.py", write=True, title="kit", user="carol")["status"] == "done"
    changed = script + "inventory.update(Site('T1_IT_CNAF'))\n"
    with pytest.raises(ApplicationRefused) as info:
        inventory_client.exec_script(changed, name="kit.py", write=True, title="kit", user="carol")
    assert info.value.reason == "checksum" and info.value.authorized_checksum == script_checksum(script)
    assert "T1_IT_CNAF" not in inventory_server.inventory.sites
    # another user's authorization does not count
    with pytest.raises(ApplicationRefused):
        inventory_client.exec_script(script, name="kit.py", write=True, title="kit", user="mallory")
    inventory_client.authorize(changed, title="kit", user="carol")
    assert inventory_client.exec_script(changed, name="kit.py", write=True, title="kit", user="carol")["status"] == "done"
    assert "T1_IT_CNAF" in inventory_server.inventory.sites
    assert [(a["title"], a["user"]) for a in inventory_client.authorizations()] == [("kit", "carol")]
    assert inventory_client.revoke("kit", "carol") is True
    assert inventory_client.revoke("kit", "carol") is False
    with pytest.raises(ApplicationRefused):
        inventory_client.exec_script(changed, name="kit.py", write=True, title="kit", user="carol")
    # read-only runs need no authorization
    assert inventory_client.exec_script(changed, name="kit.py", user="mallory")["status"] == "done"


def test_one_writer_at_a_time_and_the_second_sees_the_first(inventory_server, inventory_client):
    first = ("import time\nfrom workbench.inventory.executable import inventory\n"
             "from workbench.inventory.dataformat import Dataset\n"
             "inventory.update(Dataset('/First/A/AOD'))\ntime.sleep(1.5)\n")
    second = ("from workbench.inventory.executable import inventory\n"
              "from workbench.inventory.dataformat import Dataset\n"
              "print('/First/A/AOD' in inventory.datasets)\ninventory.update(Dataset('/Second/A/AOD'))\n")
    for title, script in (("first", first), ("second", second)):
        inventory_client.authorize(script, title=title, user="dave")
    results: dict[str, dict] = {}
    def run_first() -> None:
        with InventoryClient(inventory_server.address, timeout=60) as other:
            results["first"] = other.exec_script(first, name="first.py", write=True, title="first", user="dave")

    thread = threading.Thread(target=run_first)
    thread.start()
    # wait until the first writer holds the slot, then start the second
    with inventory_server.store.engine.connect() as conn:
        import time
        deadline = time.monotonic() + 20
        while conn.execute(select(state_table.c.writer)).scalar() is None:
            assert time.monotonic() < deadline, "the first writer never took the slot"
            time.sleep(0.02)
            conn.rollback()
    results["second"] = inventory_client.exec_script(second, name="second.py", write=True, title="second", user="dave")
    thread.join(30)
    assert results["first"]["status"] == results["second"]["status"] == "done"
    assert results["second"]["stdout"] == "True\n"
    assert set(inventory_server.inventory.datasets) == {"/First/A/AOD", "/Second/A/AOD"}
    with inventory_server.store.engine.connect() as conn:
        rows = conn.execute(select(applications_table.c.title, applications_table.c.status)
                            .order_by(applications_table.c.id)).all()
    assert [tuple(r) for r in rows] == [("first", "done"), ("second", "done")]


def test_a_script_with_a_syntax_error_fails_cleanly(inventory_client):
    result = inventory_client.exec_script("def broken(:\n", name="broken.py")
    assert result["status"] == "failed" and "SyntaxError" in result["stderr"]


def test_malformed_requests_get_structured_errors(inventory_server, inventory_client):
    with pytest.raises(ProtocolError) as info:
        inventory_client.request({"op": "drop_everything"})
    assert info.value.reason == "op"
    with pytest.raises(ProtocolError) as info:
        inventory_client.request({"op": "exec", "script": "print(1)"})
    assert info.value.reason == "fields" and "args" in info.value.missing
    with pytest.raises(ProtocolError) as info:
        inventory_client.request({"op": "exec", "script": "", "name": "x", "args": "not a list", "write": False,
                                  "title": "x", "user": "u"})
    assert info.value.field == "args"
    for garbage in (struct.pack(">I", 5) + b"{nope", struct.pack(">I", 2**31) + b"x", encode_frame([1, 2])[:0]
                    + struct.pack(">I", 2) + b"[]"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            raw.connect(inventory_server.address)
            raw.sendall(garbage)
            header = raw.recv(4)
            assert len(header) == 4
            body = b""
            while len(body) < struct.unpack(">I", header)[0]:
                body += raw.recv(65536)
            assert b'"ok":false' in body and b"ProtocolError" in body
    # the server still answers well-formed requests
    assert inventory_client.status()["status"] == "online"
    assert inventory_server.inventory.datasets == {}  # nothing was created by the garbage


def test_the_child_holds_none_of_the_servers_sockets(inventory_client):
    script = ("import os\n"
              "targets = set()\n"
              "for fd in os.listdir('/proc/self/fd'):\n"
              "    try:\n"
              "        if int(fd) > 2:\n"
              "            targets.add(os.readlink(f'/proc/self/fd/{fd}'))\n"
              "    except FileNotFoundError:\n"
              "        pass  # the listing's own descriptor\n"
              "print(sorted(targets))\n")
    result = inventory_client.exec_script(script, name="fds.py")
    assert result["status"] == "done"
    assert result["stdout"] in ("['/dev/null']\n", "[]\n"), result["stdout"]


# -- who calls: the caller's uid from the socket, admins, timeouts --------------------------------------
def test_requests_act_as_the_caller_by_default(inventory_server, inventory_client):
    me = pwd.getpwuid(os.getuid()).pw_name
    granted = inventory_client.authorize("print('mine')", title="mine")
    assert granted["user"] == me
    result = inventory_client.exec_script("print('mine')", write=True, title="mine")
    assert result["status"] == "done"
    with inventory_server.store.engine.connect() as conn:
        assert conn.execute(select(applications_table.c.user)).scalars().all() == [me]
    assert inventory_client.revoke("mine") is True


def test_only_admins_authorize_and_a_user_acts_under_its_own_name(inventory_server):
    # the handler as a caller with another uid would reach it (the kernel reports the uid)
    somebody = Caller(uid=4242, gid=4242, pid=1, name="somebody")
    with pytest.raises(AccessDenied) as refused:
        inventory_server.handle({"op": "status"}, somebody)
    assert refused.value.reason == "not-a-user"
    inventory_server.policy.users.add(4242)  # as `serve --user 4242` does
    try:
        assert inventory_server.handle({"op": "status"}, somebody)["ok"] is True
        for message in ({"op": "authorize", "script": "x", "title": "t"}, {"op": "revoke", "title": "t"}):
            with pytest.raises(AccessDenied) as refused:
                inventory_server.handle(message, somebody)
            assert refused.value.reason == "not-an-admin"
        with pytest.raises(AccessDenied) as refused:
            inventory_server.handle({"op": "exec", "script": "print(1)", "name": "a", "args": [], "write": False,
                                 "title": "a", "user": "root"}, somebody)
        assert refused.value.reason == "impersonation"
        with pytest.raises(ApplicationRefused) as refused:
            inventory_server.handle({"op": "exec", "script": "print(1)", "name": "a", "args": [], "write": True,
                                 "title": "a"}, somebody)
        assert refused.value.user == "somebody" and "not authorized" in refused.value.message
    finally:
        inventory_server.policy.users.discard(4242)
    # an admin may name the user it authorizes for
    assert inventory_server.handle({"op": "authorize", "script": "x", "title": "t", "user": "somebody"})["user"] == "somebody"


@pytest.mark.parametrize("timeout", [-1, 0, True, "5", [], 10**10, 10**400])
def test_timeouts_are_positive_finite_numbers_in_range(inventory_client, timeout):
    with pytest.raises(ProtocolError) as refused:
        inventory_client.request({"op": "exec", "script": "print(1)", "name": "a", "args": [], "write": False,
                                  "title": "a", "timeout": timeout})
    assert refused.value.field == "timeout"


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_at_decode(inventory_server, timeout):
    with InventoryClient(inventory_server.address, timeout=30) as client:  # the connection ends after it
        with pytest.raises(ProtocolError) as refused:
            client.request({"op": "exec", "script": "print(1)", "name": "a", "args": [], "write": False,
                            "title": "a", "timeout": timeout})
    assert refused.value.reason == "json"
    assert ProcessBounds.of(os.getpid()).zombies == 0
