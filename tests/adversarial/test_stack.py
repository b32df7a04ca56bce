"""The stack `workbench up` runs, attacked as a stranger on the same host: every door needs its credentials.

A stranger sees the stack's ports (printed, in ``stack.json``, in ``ps``) but not ``credentials.json``
(0600). Each test connects to a port without credentials and is refused, then with them and is served;
and no secret shows in a command line (``/proc/<pid>/cmdline``) or a process record file.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import zmq

from workbench.domain.keys import DatabaseKeys
from workbench.errors import ZdbError
from workbench.testing.adversarial import answers_within
from workbench.testing.process import processes_mentioning
from workbench.testing.stack import RunningStack
from workbench.zdb.client import Client, Proxy

#: how long a stranger's request may go unanswered before it counts as refused (CURVE drops it unanswered)
STRANGER_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("attacked") / "stack"
    os.environ.setdefault("WORKBENCH_KNOWN_BROKERS", str(state_dir.parent / "known_brokers"))
    running = RunningStack(state_dir)
    yield running
    running.stop()
    for pid in processes_mentioning(str(state_dir)):
        os.kill(pid, signal.SIGKILL)


def _process(stack: RunningStack, kind: str) -> dict:
    return next(p for p in stack.endpoints["zdb"]["processes"] if p["type"] == kind)


def _stranger_attempts(endpoint: str, **credentials) -> list[str]:
    """What a client with ``credentials`` (none: a stranger) got done: the names of the attempts that worked."""
    done = []
    attempts = {
        "read": lambda c: Proxy(c)["secret"]._run(),
        "write": lambda c: Proxy(c).__setitem__("planted", "by a stranger"),
        "keys": lambda c: list(Proxy(c).keys()),
        "status": lambda c: c.status(),
        "quiesce": lambda c: c.request("quiesce"),
        "unquiesce": lambda c: c.request("unquiesce"),
    }
    for name, attempt in attempts.items():
        try:
            with Client(endpoint, timeout=STRANGER_TIMEOUT, retries=0, **credentials) as connection:
                attempt(connection)
        except ZdbError:
            continue
        done.append(name)
    return done


def test_the_storage_manager_refuses_strangers_on_every_socket(stack):
    sm = _process(stack, "SM")
    endpoint = f"tcp://{sm['address'].replace('localhost', '127.0.0.1')}"
    db, connection = _writer(stack)
    db["secret"] = "only for the dba"
    connection.close()

    assert _stranger_attempts(endpoint) == []
    # Knowing the dba login of the TE is not enough either: the SM speaks only to the database's members.
    assert _stranger_attempts(endpoint, user="dba", password=stack.secrets["zdb"]["password"]) == []
    # Nor is a CURVE key of one's own.
    assert _stranger_attempts(endpoint, server_key=_keys(stack).storage_manager("demo").public) == []

    member = {"server_key": _keys(stack).storage_manager("demo").public, "keys": _keys(stack).member("demo")}
    with Client(endpoint, timeout=5.0, retries=0, **member) as trusted:
        status = answers_within(trusted.status)
        assert Proxy(trusted)["secret"]._run() == "only for the dba"
        publish = status["publish"]

    # The change stream: a stranger subscribed to it hears nothing while writes go on.
    context = zmq.Context.instance()
    listener = context.socket(zmq.SUB)
    listener.linger = 0
    listener.setsockopt(zmq.SUBSCRIBE, b"")
    listener.connect(publish)
    try:
        db, connection = _writer(stack)
        for index in range(20):
            db[f"streamed-{index}"] = "private"
        connection.close()
        assert listener.poll(2000) == 0, "a stranger received the change stream"
    finally:
        listener.close()


def test_the_transaction_engine_refuses_strangers_and_serves_the_dba(stack):
    te = _process(stack, "TE")
    endpoint = f"tcp://{te['address'].replace('localhost', '127.0.0.1')}"
    stranger = _stranger_attempts(endpoint)
    assert stranger == [], stranger  # not even status: the handshake is the login
    assert _stranger_attempts(endpoint, user="dba", password="wrong") == []  # the login itself is refused
    with Client(endpoint, timeout=5.0, retries=0, user="dba", password=stack.secrets["zdb"]["password"]) as dba:
        Proxy(dba)["by-the-dba"] = 1
        assert answers_within(lambda: Proxy(dba)["by-the-dba"]._run()) == 1


def test_the_commits_server_refuses_anonymous_writes_and_takes_the_token(stack):
    url = stack.endpoints["commits"]["url"]

    def post(key: str, token: str | None) -> int:
        headers = {"X-Rainer-Author": "stranger", "Content-Type": "application/octet-stream"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(f"{url}/{key}/1", data=b'{"planted": true}', headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("planted", None) in (401, 403)
    assert post("planted", "not-the-token") in (401, 403)
    token = stack.secrets["commits"]["token"]
    assert post("by-the-owner", token) in (200, 201)
    with urllib.request.urlopen(f"{url}/by-the-owner", timeout=10) as reply:
        assert json.load(reply) == {"planted": True}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}/planted", timeout=10)
    assert missing.value.code == 404


def test_no_secret_shows_in_a_command_line_or_a_process_record(stack):
    secrets = [value for values in stack.secrets.values() for kind, value in values.items()
               if kind in ("password", "token")]
    assert len(secrets) >= 4
    started = processes_mentioning(str(stack.state_dir)) | {stack.process.pid: ""}
    assert len(started) >= 3, "the stack, its SM and its TE"
    for pid in started:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for secret in secrets:
            assert secret not in cmdline, f"pid {pid} shows a secret on its command line"
        assert "--dba-password" not in cmdline and "token:" not in cmdline
    records = list(stack.state_dir.glob("domain/*/processes/*.json"))
    assert len(records) >= 2
    for record in records:
        text = record.read_text()
        assert "password" not in text.lower()
        for secret in secrets:
            assert secret not in text


def _keys(stack: RunningStack) -> DatabaseKeys:
    return DatabaseKeys(stack.secrets["domain"]["password"])


def _writer(stack: RunningStack):
    from workbench.zdb import client

    return client(stack.uri(), timeout=10.0)
