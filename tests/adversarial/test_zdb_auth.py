"""zdb attacked from the same host: strangers on every socket, replayed stream values, bombs and floods.

A storage manager and a transaction engine with a dba login are attacked the way a local process
without the password would: raw ZeroMQ sockets on the request port and the change stream,
values replayed from whatever the stream shows, 16 MB bracket bombs, thousands of pings with
big client ids and mutated request frames. Every stranger is refused, nothing seen on the stream
grants a session or the lock, and a well-formed request still answers within 2 s afterwards.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any, Iterator

import pytest
import zmq

from workbench.errors import ZdbError
from workbench.testing.adversarial import ProcessBounds, answers_within, fuzz_messages, fuzz_random, mutate
from workbench.zdb import StorageManager, TransactionEngine, client
from workbench.zdb.protocol import MAX_MESSAGE_BYTES

DBA, PASSWORD = "dba", "adversarial-s3cret"
USERS = {DBA: PASSWORD}
BOMB = b"[" * (MAX_MESSAGE_BYTES // 2 - 16) + b"]" * (MAX_MESSAGE_BYTES // 2 - 16)
#: a bomb whose brackets sit inside a string: nesting 1, but a per-character scan still walks it all
STRING_BOMB = b'{"kind": "ping", "id": 1, "x": "' + b"[" * (MAX_MESSAGE_BYTES - 64) + b'"}'


# -- raw sockets, as an attacker has them ------------------------------------------------------
class RawPeer:
    """A DEALER or SUB socket that sends whatever it is given (PLAIN credentials if given)."""

    def __init__(self, address: str, kind: int = zmq.DEALER, user: str | None = None,
                 password: str | None = None) -> None:
        self.refused = False
        self.context = zmq.Context()
        self.socket = self.context.socket(kind)
        self.socket.linger = 0
        self.socket.sndhwm = self.socket.rcvhwm = 0  # an attacker queues everything
        if user is not None:
            self.socket.plain_username = user.encode()
            self.socket.plain_password = (password or "").encode()
        if kind == zmq.SUB:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(address)

    def send(self, body: bytes | dict[str, Any], *more: bytes) -> bool:
        """Queue a message; False when the socket will not take it (no connection was let in)."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        # A handshake refused once is refused again: wait for a connection only the first time.
        if not self.socket.poll(50 if self.refused else 500, zmq.POLLOUT):
            self.refused = True
            return False
        try:
            self.socket.send_multipart([body, *more], zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def ask(self, body: bytes | dict[str, Any], timeout: float = 1.0) -> dict[str, Any] | None:
        """Send one request; its decoded reply, or None when nothing answered."""
        if not self.send(body):
            return None
        return self.reply(timeout)

    def reply(self, timeout: float = 1.0) -> dict[str, Any] | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        return json.loads(self.socket.recv_multipart()[-1])

    def drain(self, quiet: float = 1.0, limit: int = 100_000) -> int:
        """Receive until nothing arrives for ``quiet`` seconds; how many messages came."""
        count = 0
        while count < limit and self.socket.poll(int(quiet * 1000)):
            self.socket.recv_multipart()
            count += 1
        return count

    def listen(self, seconds: float) -> list[dict[str, Any]]:
        """What a subscriber receives in ``seconds``."""
        seen, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(left * 1000) + 1):
                seen.append(json.loads(self.socket.recv()))
        return seen

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


@pytest.fixture
def peers() -> Iterator[Any]:
    made: list[RawPeer] = []

    def make(*args: Any, **options: Any) -> RawPeer:
        made.append(RawPeer(*args, **options))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def guarded_sm(tmp_path):
    server = StorageManager(tmp_path / "sm", bind="tcp://127.0.0.1:0", users=USERS, lease_seconds=30.0).start()
    yield server
    server.stop()


@pytest.fixture
def guarded_te(guarded_sm):
    engine = TransactionEngine(guarded_sm.address, bind="tcp://127.0.0.1:0", users=USERS).start()
    yield engine
    engine.stop()


def refused(reply: dict[str, Any] | None) -> bool:
    """A stranger's request is refused: no answer at all (the handshake failed) or an error."""
    return reply is None or reply.get("ok") is False


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


# -- every socket needs the login --------------------------------------------------------------
def test_an_anonymous_subscriber_receives_nothing_from_a_guarded_storage_manager(guarded_sm, peers, connect):
    stranger = peers(guarded_sm.publish_address, zmq.SUB)
    db, _ = connect(guarded_sm.address, user=DBA, password=PASSWORD)
    time.sleep(0.3)  # let a subscription that was accepted take effect
    for index in range(5):
        db[f"secret-{index}"] = "only for the dba"
    seen = stranger.listen(1.5)  # three heartbeats' worth
    assert seen == [], f"an unauthenticated subscriber received {len(seen)} messages, e.g. {seen[:1]}"


def test_a_subscriber_with_the_login_follows_the_stream(guarded_sm, peers, connect):
    follower = peers(guarded_sm.publish_address, zmq.SUB, user=DBA, password=PASSWORD)
    wrong = peers(guarded_sm.publish_address, zmq.SUB, user=DBA, password="guess")
    db, _ = connect(guarded_sm.address, user=DBA, password=PASSWORD)
    time.sleep(0.3)
    db["k"] = "v"
    seen = follower.listen(1.2)
    assert any(m.get("seq") == 1 and m.get("kind") == "write" for m in seen), seen
    assert any("heartbeat" in m for m in seen)
    assert wrong.listen(0.3) == []


@pytest.mark.parametrize("target", ["sm", "te"])
def test_anonymous_reads_writes_and_quiesce_are_refused(target, guarded_sm, request, peers, connect):
    server = guarded_sm if target == "sm" else request.getfixturevalue("guarded_te")
    db, _ = connect(server.address, user=DBA, password=PASSWORD)
    db["secret"] = "s"
    before = dict(guarded_sm.document.root)
    requests = [
        {"id": 1, "kind": "op", "client": "c-x", "ops": [[["secret"], None, [], {}]]},
        {"id": 2, "kind": "op", "client": "c-x", "ops": [[[], "__setitem__", ["x", 1], {}]]},
        {"id": 3, "kind": "quiesce", "client": "c-x"},
        {"id": 4, "kind": "unquiesce", "client": "c-x"},
        {"id": 5, "kind": "sync", "client": "c-x", "since": None},
        {"id": 6, "kind": "status", "client": "c-x"},
        {"id": 7, "kind": "lock", "client": "c-x", "lease": 60},
        {"id": 8, "kind": "save", "client": "c-x"},
        {"id": 9, "kind": "undo", "client": "c-x"},
    ]
    for guess in (None, "wrong", PASSWORD.upper()):
        stranger = peers(server.address) if guess is None else peers(server.address, user=DBA, password=guess)
        for request in requests:
            reply = stranger.ask(request, timeout=0.3)
            assert refused(reply), (guess, request, reply)
    assert guarded_sm.document.root == before
    assert not guarded_sm.quiesced and guarded_sm.lock_holder is None
    with pytest.raises(ZdbError) as info:
        connect(server.address, user=DBA, password="wrong", timeout=5.0)
    assert "wrong database user or password" in str(info.value)
    anonymous, _ = connect(server.address, timeout=5.0, retries=0)
    started = time.monotonic()
    with pytest.raises(ZdbError) as info:
        anonymous["secret"]._run()
    assert "log in" in str(info.value) or "authentication" in str(info.value)
    assert time.monotonic() - started < 5.0  # told, not left to time out
    assert db["secret"]._run() == "s"


def test_a_transaction_engine_logs_in_to_its_storage_manager(guarded_sm, guarded_te, connect):
    writer, _ = connect(guarded_te.address, user=DBA, password=PASSWORD)
    writer["via-te"] = [1, 2]  # forwarded to the SM with the TE's login
    writer["via-te"].append(3)
    assert writer["via-te"]._run() == [1, 2, 3]
    direct, _ = connect(guarded_sm.address, user=DBA, password=PASSWORD)
    direct["direct"] = "x"  # reaches the TE by its authenticated subscription
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "direct" not in guarded_te.document.root:
        time.sleep(0.02)
    assert guarded_te.document.root.get("direct") == "x"


# -- nothing broadcast grants anything -----------------------------------------------------------
def _stream_as_seen(server: StorageManager, peers: Any, seconds: float) -> list[dict[str, Any]]:
    """Everything the change stream shows: anonymously if it lets us, else with the login (a leak)."""
    seen = peers(server.publish_address, zmq.SUB).listen(seconds)
    return seen or peers(server.publish_address, zmq.SUB, user=DBA, password=PASSWORD).listen(seconds)


@pytest.mark.parametrize("target", ["sm", "te"])
def test_nothing_on_the_stream_or_heartbeat_grants_a_session_or_the_lock(target, guarded_sm, request,
                                                                         peers, connect):
    server = guarded_sm if target == "sm" else request.getfixturevalue("guarded_te")
    holder, holder_connection = connect(server.address, user=DBA, password=PASSWORD)
    holder["secret"] = "s"
    holder.lock(lease=30)
    holder["under-lock"] = 1
    seen = _stream_as_seen(guarded_sm, peers, 1.2)
    assert any("heartbeat" in m for m in seen)
    candidates = sorted({s for m in seen for s in strings_in(m) if len(s) >= 8})[:60]
    assert candidates
    before = dict(guarded_sm.document.root)
    stranger = peers(server.address)
    for value in candidates:
        for request in (
            {"id": 1, "kind": "op", "client": value, "lock_token": value, "ops": [[["secret"], None, [], {}]]},
            {"id": 2, "kind": "op", "client": value, "lock_token": value,
             "ops": [[[], "__setitem__", ["stolen", value], {}]]},
            {"id": 3, "kind": "unlock", "client": value, "lock_token": value},
            {"id": 4, "kind": "renew", "client": value, "lock_token": value, "lease": 3600},
        ):
            reply = stranger.ask(request, timeout=0.2)
            assert refused(reply), (value, request, reply)
    # Another holder of the dba password replaying what the stream shows does not get the lock either.
    other = peers(server.address, user=DBA, password=PASSWORD)
    for value in candidates:
        for request in (
            {"id": 5, "kind": "op", "client": value, "lock_token": value, "wait": 0,
             "ops": [[[], "__setitem__", ["stolen", value], {}]]},
            {"id": 6, "kind": "unlock", "client": value, "lock_token": value},
            {"id": 7, "kind": "renew", "client": value, "lock_token": value, "lease": 3600},
        ):
            reply = other.ask(request, timeout=2.0)
            assert refused(reply), (value, request, reply)
    assert guarded_sm.document.root == before
    assert guarded_sm.lock_holder is not None
    holder.unlock()
    assert guarded_sm.lock_holder is None


def test_the_client_id_is_no_session_key(guarded_sm, peers, connect):
    db, connection = connect(guarded_sm.address, user=DBA, password=PASSWORD)
    db["secret"] = "s"
    stranger = peers(guarded_sm.address)
    reply = stranger.ask({"id": 1, "kind": "op", "client": connection.client_id,
                          "ops": [[["secret"], None, [], {}]]}, timeout=0.5)
    assert refused(reply), reply


# -- bombs and floods ------------------------------------------------------------------------------
def _ping(address: str) -> bool:
    with client(address, user=DBA, password=PASSWORD, timeout=10.0)[1] as connection:
        return answers_within(connection.ping)


def test_bracket_bombs_before_and_after_login_leave_the_server_answering(guarded_sm, peers, connect):
    _, connection = connect(guarded_sm.address, user=DBA, password=PASSWORD, timeout=30.0)
    assert connection.ping()
    # One stranger per bomb: the server's fair queueing does not put the ping after only one of them.
    for index in range(10):
        peers(guarded_sm.address).send(BOMB if index % 2 else STRING_BOMB)
    time.sleep(1.0)  # the bombs are delivered (or refused) before the ping
    assert answers_within(connection.ping)
    insider = peers(guarded_sm.address, user=DBA, password=PASSWORD)
    for _ in range(5):
        insider.send(BOMB)
        insider.send(STRING_BOMB)
    time.sleep(1.0)
    assert answers_within(connection.ping)
    replies = [insider.reply(5.0) for _ in range(10)]
    assert all(r is not None for r in replies)
    deep = [r for r in replies if r["ok"] is False]
    assert len(deep) == 5 and all("nested deeper" in r["error"]["message"] for r in deep)


@pytest.fixture
def sm_process(tmp_path, monkeypatch):
    from workbench.testing.zdb import ZdbServerProcess

    monkeypatch.setenv("WORKBENCH_ZDB_DBA_PASSWORD", PASSWORD)
    server = ZdbServerProcess(tmp_path / "proc", tmp_path / "archive", extra=["--dba-user", DBA]).start()
    yield server
    server.stop()


@pytest.fixture
def te_process(sm_process, tmp_path):
    from workbench.testing.zdb import ZdbReplicaProcess

    class GuardedReplica(ZdbReplicaProcess):
        def command(self):  # the dba login on its own port, and the same one to its SM
            return [*super().command(), "--dba-user", DBA]

    engine = GuardedReplica(tmp_path / "te", sm_process.uri).start()
    yield engine
    engine.stop()


def _zmtp_plain_hello(user: str, password: str) -> bytes:
    """A ZMTP 3.0 client greeting for PLAIN followed by its HELLO command (what a handshake sends first)."""
    greeting = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"PLAIN".ljust(20, b"\0") + b"\0" + b"\0" * 31
    body = b"\x05HELLO" + bytes([len(user)]) + user.encode() + bytes([len(password)]) + password.encode()
    return greeting + b"\x04" + bytes([len(body)]) + body


def _warm(uri: str) -> None:
    with client(uri, user=DBA, password=PASSWORD, timeout=10.0)[1] as connection:
        for index in range(200):
            connection.request("ping", client=f"warm-{index}")
            connection.run((), "__setitem__", ("warm", index))


def test_thousands_of_pings_with_big_client_ids_keep_memory_bounded(sm_process, peers):
    _warm(sm_process.uri)
    before = ProcessBounds.of(sm_process.process.pid)
    login = {"user": DBA, "password": PASSWORD}
    # Strangers' ids, insiders' oversized ids, then insiders' ids of the largest size kept.
    for credentials, id_length in (({}, 10_000), (login, 10_000), (login, 120)):
        flood = peers(sm_process.uri, **credentials)
        for index in range(5000):
            flood.send({"id": index, "kind": "ping", "client": f"{index:05d}".ljust(id_length, "x")})
        flood.drain(quiet=1.5)
    assert _ping(sm_process.uri)
    ProcessBounds.of(sm_process.process.pid).assert_within(before, rss_mib=20, fds=16)
    with client(sm_process.uri, **login, timeout=10.0)[1] as connection:
        assert connection.status()["clients"] <= 4096 + 1  # the tracked clients are capped


@pytest.mark.parametrize("target", ["sm", "te"])
def test_fuzzed_request_frames_before_and_after_login(target, request, peers):
    server = request.getfixturevalue("sm_process" if target == "sm" else "te_process")
    rng = fuzz_random()
    seeds = [json.dumps(m).encode() for m in (
        {"id": 1, "kind": "op", "client": "c-1", "ops": [[[], "__setitem__", ["k", {"a": [1, 2]}], {}]]},
        {"id": 2, "kind": "op", "client": "c-1", "ops": [[["k", "a"], None, [], {}]]},
        {"id": 3, "kind": "lock", "client": "c-1", "lease": 0.5},
        {"id": 4, "kind": "unlock", "client": "c-1", "lock_token": "t"},
        {"id": 5, "kind": "sync", "client": "c-1", "since": 0},
        {"id": 6, "kind": "login", "client": "c-1", "user": DBA, "password": "guess"},
        {"id": 7, "kind": "status"}, {"id": 8, "kind": "ping", "client": "c-1"},
        {"id": 9, "kind": "quiesce"}, {"id": 10, "kind": "unquiesce"},
    )]
    _warm(server.uri)
    before = ProcessBounds.of(server.process.pid)
    budget = fuzz_messages()
    # Before login, a stranger's only input is the handshake itself: mutated ZMTP greetings and
    # PLAIN HELLOs (with right and wrong passwords) on raw TCP connections.
    host, port = server.uri.removeprefix("tcp://").rsplit(":", 1)
    for _ in range(budget // 2):
        handshake = mutate(_zmtp_plain_hello(DBA, rng.choice([PASSWORD, "guess", ""])), rng)
        with socket.create_connection((host, int(port)), timeout=2.0) as stranger:
            stranger.settimeout(0.02)
            with contextlib.suppress(OSError):
                stranger.sendall(handshake)
                stranger.recv(4096)
    assert server.process.poll() is None, f"seed {rng.seed_value}: the server died"
    assert _ping(server.uri), f"seed {rng.seed_value}"
    # After login: mutated request frames from a connection that passed the handshake.
    fuzzer = peers(server.uri, user=DBA, password=PASSWORD)
    for _ in range(budget // 2):
        body = mutate(rng.choice(seeds), rng)
        frames = [body] if rng.random() < 0.8 else [body, rng.randbytes(rng.randrange(64))]
        assert fuzzer.send(*frames)
    fuzzer.drain(quiet=1.0)
    assert server.process.poll() is None, f"seed {rng.seed_value}: the server died"
    assert _ping(server.uri), f"seed {rng.seed_value}"
    with client(server.uri, user=DBA, password=PASSWORD, timeout=10.0)[1] as connection:
        # (A fuzzed lock or quiesce with the login may hold now: status answers regardless.)
        assert answers_within(connection.status)["role"] == target
    ProcessBounds.of(server.process.pid).assert_within(before, rss_mib=64, fds=16)


def test_a_flood_of_wrong_logins_gets_nothing_and_leaves_the_server_answering(guarded_sm, peers, connect):
    _, connection = connect(guarded_sm.address, user=DBA, password=PASSWORD)
    requests_before = connection.status()["requests"]
    # 50 guessers, each retrying its handshake every 100 ms (ZeroMQ's reconnect): ~1,000 wrong logins.
    guessers = [peers(guarded_sm.address, user=DBA, password=f"guess-{index}") for index in range(50)]
    guessers += [peers(guarded_sm.publish_address, zmq.SUB, user=f"user-{index}", password=PASSWORD)
                 for index in range(10)]
    time.sleep(2.0)
    assert answers_within(connection.ping)
    assert all(not g.socket.poll(0) for g in guessers)  # not one message reached a guesser
    status = answers_within(connection.status)
    assert status["requests"] - requests_before <= 3  # only our own ping and status got to the server thread
