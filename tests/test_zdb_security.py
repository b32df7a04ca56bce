"""zdb security: CURVE encryption with a client allow-list, and the database user's login."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workbench.zdb import StorageManager, TransactionEngine, ZdbAuthenticationError, ZdbRemoteError, client
from workbench.zdb.transport import CurveKeys, load_public_keys


@pytest.fixture
def curve_sm(tmp_path):
    server_keys, allowed = CurveKeys.generate(), CurveKeys.generate()
    server = StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0", curve=server_keys,
                            allowed_clients=[allowed.public]).start()
    yield server, server_keys, allowed
    server.stop()


def test_curve_lets_in_only_listed_client_keys(curve_sm, connect):
    server, server_keys, allowed = curve_sm
    db, _ = connect(server.address, server_key=server_keys.public, keys=allowed)
    db["secret"] = "visible to listed clients"
    assert db["secret"]._run() == "visible to listed clients"
    # Refused in the handshake, and told so (not left to time out).
    stranger, _ = connect(server.address, server_key=server_keys.public, keys=CurveKeys.generate(),
                          timeout=5.0, retries=0)
    with pytest.raises(ZdbAuthenticationError, match="does not allow this CURVE key"):
        stranger["secret"]._run()
    plain, _ = connect(server.address, timeout=5.0, retries=0)
    with pytest.raises(ZdbAuthenticationError, match="authentication required"):
        plain["secret"]._run()
    assert server.document.root == {"secret": "visible to listed clients"}


def test_curve_replica_follows_a_curve_primary(curve_sm, connect):
    server, server_keys, allowed = curve_sm
    te_keys = CurveKeys.generate()
    replica = TransactionEngine(server.address, bind="tcp://127.0.0.1:0", primary_key=server_keys.public,
                                client_keys=allowed, curve=te_keys, allowed_clients=[allowed.public]).start()
    try:
        reader, _ = connect(replica.address, server_key=te_keys.public, keys=allowed)
        writer, _ = connect(server.address, server_key=server_keys.public, keys=allowed)
        writer["k"] = 1
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "k" not in reader:
            time.sleep(0.02)
        assert reader["k"]._run() == 1
    finally:
        replica.stop()


def test_key_files_round_trip(tmp_path):
    keys = CurveKeys.generate()
    public_path, secret_path = keys.save(str(tmp_path / "keys"), "alice")
    assert CurveKeys.load(secret_path) == keys
    assert load_public_keys(str(tmp_path / "keys")) == [keys.public]
    assert oct((tmp_path / "keys" / "alice.key_secret").stat().st_mode & 0o777) == "0o600"


def test_database_user_must_log_in(tmp_path, connect):
    server = StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0", users={"dba": "s3cret"}).start()
    try:
        anonymous, _ = connect(server.address)
        with pytest.raises(ZdbRemoteError, match="authentication required"):
            anonymous["x"] = 1
        with pytest.raises(ZdbRemoteError, match="wrong database user or password"):
            connect(server.address, user="dba", password="wrong")
        with pytest.raises(ZdbRemoteError, match="wrong database user or password"):
            connect(server.address, user="root", password="s3cret")
        db, connection = connect(server.address, user="dba", password="s3cret")
        db["x"] = 1
        assert db["x"]._run() == 1
        assert server.document.root == {"x": 1}
    finally:
        server.stop()


def test_an_empty_password_is_refused_at_once_and_leaves_nothing_open(tmp_path):
    import threading

    from workbench.zdb.client import Client
    from workbench.zdb.errors import ZdbAuthenticationError

    server = StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0", users={"dba": "s3cret"}).start()
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            Client(server.address, user="dba", password="", timeout=5.0, retries=0)
        except BaseException as exc:  # noqa: BLE001 - the test reads what it was
            outcome.append(exc)

    try:
        # It used to hang for good: the refused socket option left a socket the context waited for.
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(15)
        assert not thread.is_alive(), "a client with an empty password hung"
        assert len(outcome) == 1 and isinstance(outcome[0], ZdbAuthenticationError), outcome
        assert "needs a password" in str(outcome[0]) and outcome[0].user == "dba"
    finally:
        server.stop()


def test_cli_serves_with_curve_and_shell_connects(tmp_path):
    from workbench.testing.zdb import ZdbServerProcess

    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    for name, where in (("server", keys), ("alice", keys)):
        subprocess.run([sys.executable, "-m", "workbench", "zdb", "keygen", str(where), name], check=True,
                       capture_output=True)
    allowed.mkdir()
    (allowed / "alice.key").write_text((keys / "alice.key").read_text())
    server = ZdbServerProcess(tmp_path / "proc", tmp_path / "archive",
                              extra=["--curve-cert", str(keys / "server.key_secret"), "--allow-keys", str(allowed)])
    server.start()
    try:
        shell = [sys.executable, "-m", "workbench", "zdb", "shell", server.uri, "--server-key", str(keys / "server.key")]
        ok = subprocess.run([*shell, "--client-cert", str(keys / "alice.key_secret")], input="db['x'] = 7\ndb['x']\n",
                            capture_output=True, text=True, timeout=60)
        assert ok.stdout.splitlines() == ["None", "7"], ok.stderr
    finally:
        server.stop()


def test_a_replica_checks_its_own_database_users(sm, connect):
    replica = TransactionEngine(sm.address, bind="tcp://127.0.0.1:0", users={"dba": "dba"}).start()
    try:
        anonymous, _ = connect(replica.address)
        with pytest.raises(ZdbRemoteError, match="authentication required"):
            anonymous._run()
        with pytest.raises(ZdbRemoteError, match="wrong database user or password"):
            connect(replica.address, user="dba", password="nope")
        db, _ = connect(replica.address, user="dba", password="dba")
        db["k"] = "via replica"  # forwarded to the SM, which has no users of its own
        assert db["k"]._run() == "via replica"
    finally:
        replica.stop()


def test_the_dba_password_can_come_from_the_environment_and_stays_off_the_command_line(
        tmp_path, monkeypatch, connect):
    from workbench.testing.process import processes_mentioning
    from workbench.testing.zdb import ZdbServerProcess

    monkeypatch.setenv("WORKBENCH_ZDB_DBA_PASSWORD", "from-env-s3cret")
    server = ZdbServerProcess(tmp_path, tmp_path / "archive", extra=["--dba-user", "dba"]).start()
    try:
        with pytest.raises(ZdbRemoteError, match="wrong database user or password"):
            connect(server.uri, user="dba", password="wrong")
        db, _ = connect(server.uri, user="dba", password="from-env-s3cret")
        db["x"] = 1
        assert db["x"]._run() == 1
        command_lines = processes_mentioning(str(tmp_path / "archive"))
        assert command_lines and not any("from-env-s3cret" in line for line in command_lines.values())
    finally:
        server.stop()


def test_a_login_and_curve_cannot_share_a_socket(tmp_path):
    from workbench.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot be combined"):
        StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0", users={"dba": "pw"}, curve=CurveKeys.generate())


def test_a_client_with_a_login_reaches_a_server_without_one(sm, connect):
    db, connection = connect(sm.address, user="dba", password="anything")
    db["x"] = 1
    assert db["x"]._run() == 1 and sm.document.root == {"x": 1}


def test_an_engine_with_a_wrong_login_for_its_storage_manager_is_told_so(tmp_path):
    from workbench.errors import ZdbError

    sm = StorageManager(tmp_path / "a", bind="tcp://127.0.0.1:0", users={"dba": "right"}).start()
    try:
        with pytest.raises(ZdbError, match="refused this engine's connection: wrong database user or password"):
            TransactionEngine(sm.address, bind="tcp://127.0.0.1:0", users={"dba": "wrong"}, sync_timeout=10).start()
        with pytest.raises(ZdbError, match="requires a login"):
            TransactionEngine(sm.address, bind="tcp://127.0.0.1:0", sync_timeout=10).start()
        engine = TransactionEngine(sm.address, bind="tcp://127.0.0.1:0", users={"te-user": "te-pw"},
                                   primary_user="dba", primary_password="right").start()
        try:
            db, connection = client(engine.address, user="te-user", password="te-pw", timeout=5.0)
            db["k"] = "through the engine's own login"
            assert sm.document.root == {"k": "through the engine's own login"}
            connection.close()
        finally:
            engine.stop()
    finally:
        sm.stop()


def test_one_client_reaches_a_write_endpoint_without_a_login_and_a_read_endpoint_with_one(sm, connect):
    replica = TransactionEngine(sm.address, bind="tcp://127.0.0.1:0", users={"dba": "pw"}).start()
    try:
        db, connection = connect(sm.address, replica.address, user="dba", password="pw", read_your_writes=True)
        db["k"] = "written on the open SM"
        assert db["k"]._run() == "written on the open SM"  # read on the engine, with the login
        assert connection.server_takes_no_login
    finally:
        replica.stop()
