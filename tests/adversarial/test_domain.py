"""The domain broker attacked from the same host: floods of idle connections and logins, guesses, fuzzed XML.

The broker runs as its own process (``workbench domain agent --broker``), so its memory and
descriptors are measured from ``/proc`` while strangers hammer its port; after each attack a real
``Domain`` client must still connect and list the peers within the answer deadline.
"""

from __future__ import annotations

import resource
import socket
import ssl
import threading
import time

import pytest

from workbench.domain import Domain
from workbench.domain.protocol import FrameDecoder, Message, ProtocolError, encode_frame
from workbench.errors import AuthenticationError
from workbench.testing.adversarial import ProcessBounds, answers_within, fuzz_messages, fuzz_random, mutate
from workbench.testing.domain import AgentProcess

IDLE_CONNECTIONS = 1100
FUZZER_ADDRESS = "127.0.0.2"


@pytest.fixture
def broker(tmp_path, known_brokers):
    process = AgentProcess(tmp_path / "broker", None, broker=True).start()
    yield process
    process.stop()


def _client(broker: AgentProcess) -> list[str]:
    with Domain(broker.address, "domain", "bird", timeout=5.0) as session:
        return [str(peer) for peer in session.peers]


def _tls(broker: AgentProcess, source: str = "") -> ssl.SSLSocket:
    """A TLS connection from another loopback address: its failed logins throttle it, not the real client."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a stranger does not care whom it talks to
    raw = socket.create_connection(("127.0.0.1", broker.port), timeout=5.0,
                                   source_address=(source or FUZZER_ADDRESS, 0))
    return context.wrap_socket(raw)


def _reply(sock: ssl.SSLSocket, timeout: float = 5.0) -> Message | None:
    """The next whole message the broker sends, or None when it sends none within ``timeout`` or closes."""
    decoder = FrameDecoder()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return None
            for message in decoder.feed(chunk):
                return message
    except (OSError, ssl.SSLError, ProtocolError):
        return None
    return None


def test_a_thousand_idle_connections_do_not_lock_out_a_real_client(broker):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    before = ProcessBounds.of(broker.process.pid)
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", broker.port), timeout=5.0))
        peers = answers_within(lambda: _client(broker))
        assert peers == [f"localhost:{broker.port} [role=broker]"]
        # The broker holds no thread or descriptor per idle stranger beyond its bound.
        ProcessBounds.of(broker.process.pid).assert_within(before, rss_mib=64, fds=200)
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_strangers_are_closed_at_the_login_deadline(broker):
    stranger = socket.create_connection(("127.0.0.1", broker.port), timeout=15.0)
    try:
        started = time.monotonic()
        assert stranger.recv(1) == b""  # closed by the broker, not by us
        assert time.monotonic() - started < 10.0
    finally:
        stranger.close()


def test_concurrent_wrong_passwords_keep_the_broker_memory_bounded(broker):
    _client(broker)  # warm up: the first login's allocations are not the attack's
    before = ProcessBounds.of(broker.process.pid)
    answers: list[str] = []

    def guess(index: int) -> None:
        # Each from an address of its own, so no per-address backoff spares the broker a hash.
        with _tls(broker, source=f"127.0.1.{index + 1}") as sock:
            sock.sendall(encode_frame(Message.make("Connect", Role="client", User="domain",
                                                   Password=f"guess-{index}")))
            reply = _reply(sock, timeout=15.0)
            answers.append("none" if reply is None else reply.get("Code", reply.tag))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(48)]
    for thread in threads:
        thread.start()
    peak = before
    while any(thread.is_alive() for thread in threads):
        now = ProcessBounds.of(broker.process.pid)
        peak = now if now.rss_bytes > peak.rss_bytes else peak
        time.sleep(0.02)
    assert len(answers) == 48 and set(answers) <= {"authentication", "busy"}, answers
    peak.assert_within(before, rss_mib=96, fds=200)
    assert answers_within(lambda: _client(broker))


def test_repeated_wrong_passwords_are_throttled_and_the_right_one_works_after(broker):
    messages = []
    for index in range(8):
        with pytest.raises(AuthenticationError) as refused:
            Domain(broker.address, "domain", f"wrong-{index}", timeout=5.0)
        messages.append(str(refused.value))
    assert "wrong domain user or password" in messages[0]
    assert any("too many failed logins" in message for message in messages[5:]), messages
    # While throttled, even the right password is refused at once (a guess would be checked otherwise).
    with pytest.raises(AuthenticationError) as throttled:
        Domain(broker.address, "domain", "bird", timeout=5.0)
    retry_after = throttled.value.fields["retry_after"]
    assert 0 < retry_after <= 10
    time.sleep(retry_after + 0.1)
    assert answers_within(lambda: _client(broker))
    # A success forgets the failures: one more wrong password is a plain refusal again.
    with pytest.raises(AuthenticationError) as again:
        Domain(broker.address, "domain", "wrong-again", timeout=5.0)
    assert "wrong domain user or password" in str(again.value)


def test_fuzzed_xml_frames_before_and_after_login_leave_the_broker_serving(broker):
    rng = fuzz_random()
    budget = fuzz_messages()
    before = ProcessBounds.of(broker.process.pid)
    hello = encode_frame(Message.make("Connect", Role="client", User="domain", Password="bird"))
    requests = [encode_frame(Message.make("Request", Type=kind, Id="1")) for kind in
                ("StartProcess", "StopProcess", "QuiesceDatabase", "CreateDescription", "Nonsense")]
    requests.append(encode_frame(Message.make("Subscribe")))
    sent = 0
    logged_in = None
    while sent < budget:
        if sent % 2 == 0:  # before login: a mutated <Connect> (or <Locate>) on a fresh connection
            with _tls(broker) as sock:
                sock.sendall(mutate(rng.choice([hello, encode_frame(Message.make("Locate", Database="x"))]), rng))
                _reply(sock, timeout=0.02)
        else:  # after login: mutated requests on a logged-in session
            if logged_in is None:
                logged_in = _tls(broker)
                logged_in.sendall(hello)
                connected = _reply(logged_in)
                assert connected is not None and connected.tag == "Connected"
            try:
                logged_in.sendall(mutate(rng.choice(requests), rng))
                _reply(logged_in, timeout=0.05)
            except (OSError, ssl.SSLError):
                logged_in.close()  # the broker closed a session that sent garbage: a new one next time
                logged_in = None
        sent += 1
    if logged_in is not None:
        logged_in.close()
    assert answers_within(lambda: _client(broker)) == [f"localhost:{broker.port} [role=broker]"], \
        f"seed {rng.seed_value}"
    ProcessBounds.of(broker.process.pid).assert_within(before, rss_mib=64, fds=32)


def test_every_zdb_process_the_domain_starts_refuses_strangers(broker, tmp_path):
    from workbench.zdb.client import Client, Proxy

    given = [("--dba-user", "owner"), ("--dba-password", "owner-secret")]
    with Domain(broker.address, "domain", "bird", timeout=10.0) as session:
        peer = session.entry_peer
        sm = peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        te = peer.start_transaction_engine("teas", wait_seconds=30)  # no dba options: a derived login
        owned = peer.start_transaction_engine("teas", options=given, wait_seconds=30)
        assert sm.query()["role"] == "sm"  # a domain session is a member of its databases

        for process in (sm, te, owned):
            endpoint = f"tcp://127.0.0.1:{process.port}"
            for attempt in (lambda c: Proxy(c)["k"]._run(), lambda c: Proxy(c).__setitem__("k", 1),
                            lambda c: c.request("quiesce")):
                with Client(endpoint, timeout=1.5, retries=0) as stranger:
                    with pytest.raises(Exception):
                        attempt(stranger)
            cmdline = open(f"/proc/{process.pid}/cmdline", "rb").read()
            assert b"owner-secret" not in cmdline and session.dba_login("teas")[1].encode() not in cmdline

        user, password = session.dba_login("teas")
        with Client(f"tcp://127.0.0.1:{te.port}", timeout=5.0, user=user, password=password) as dba:
            Proxy(dba)["k"] = "derived"
        with Client(f"tcp://127.0.0.1:{owned.port}", timeout=5.0, user="owner", password="owner-secret") as dba:
            assert Proxy(dba)["k"]._run() == "derived"
        with pytest.raises(Exception):
            Client(f"tcp://127.0.0.1:{owned.port}", timeout=5.0, user=user, password=password)

        records = list((broker.state_dir / "processes").glob("*.json"))
        assert len(records) == 3
        for record in records:
            text = record.read_text()
            assert "password" not in text and "owner-secret" not in text and password not in text
        session.get_database("teas").shutdown()
