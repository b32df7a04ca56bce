"""A broker under bad clients: wrong passwords, hostile XML, torn messages, connection storms."""

from __future__ import annotations

import socket
import ssl
import struct
import time

import pytest

from workbench.domain import Domain
from workbench.domain.protocol import Message
from workbench.domain.transport import connect


def raw_tls(broker) -> ssl.SSLSocket:
    """A TLS connection that sends whatever bytes a test wants (no framing, no checks)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, port = broker.address.split(":")
    return context.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=5))


def hung_up(conn: ssl.SSLSocket, timeout: float = 5.0) -> bool:
    """True when the peer closes the connection (whatever it sent before) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if conn.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ssl.SSLError, ConnectionError):
            return True
    return False


def still_serves(broker) -> None:
    with Domain(broker.address, "domain", "bird") as d:
        assert [str(p) for p in d.peers] == [f"localhost:{broker.port} [role=broker]"]


def test_wrong_password_gets_an_error_then_a_closed_connection_and_no_state(broker):
    conn = connect(broker.address)
    reply = conn.request(Message.make("Connect", Role="client", User="domain", Password="crow"))
    assert reply.tag == "Error" and reply.get("Code") == "authentication"
    assert reply.get("Message") == "wrong domain user or password"
    assert reply.children == []  # nothing about the domain
    assert conn.receive(timeout=5) is None  # and the broker hung up
    conn.close()
    still_serves(broker)


def test_requests_before_authenticating_are_refused(broker):
    conn = connect(broker.address)
    reply = conn.request(Message.make("Subscribe"))
    assert reply.tag == "Error" and "Connect" in reply.get("Message")
    assert conn.receive(timeout=5) is None
    conn.close()


@pytest.mark.parametrize("payload", [
    b'<!DOCTYPE r [<!ENTITY a "a"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><Connect User="&b;"/>',
    b"<Connect",
    b"\x00\x01\x02 not xml",
])
def test_hostile_or_malformed_xml_closes_only_that_connection(broker, payload):
    with raw_tls(broker) as conn:
        conn.sendall(struct.pack(">I", len(payload)) + payload)
        assert hung_up(conn)  # the broker drops this client...
        still_serves(broker)  # ...and only this one


def test_oversized_frame_and_torn_message_leave_the_broker_up(broker):
    with raw_tls(broker) as big, raw_tls(broker) as torn:
        big.sendall(struct.pack(">I", 1 << 30))
        torn.sendall(struct.pack(">I", 100) + b"<Connect Role=")
        torn.close()
        still_serves(broker)
        assert hung_up(big)  # a frame announced as 1 GiB is refused, not buffered


def test_plaintext_client_does_not_disturb_the_broker(broker):
    host, port = broker.address.split(":")
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        still_serves(broker)


def test_a_storm_of_sessions_leaves_no_subscribers_behind(broker):
    baseline = len(broker.state.subscribers)
    for _ in range(100):
        Domain(broker.address, "domain", "bird").disconnect()
    deadline = time.monotonic() + 10
    while len(broker.state.subscribers) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(broker.state.subscribers) == baseline
    assert list(broker.state.peers) == [broker.address]
    still_serves(broker)


def test_a_thousand_rapid_connects_leave_the_broker_up_and_consistent(broker, tmp_path):
    """TCP and TLS connects that close at once, with a subscribed session that must go on hearing events."""
    import threading

    from workbench.events import EventRecorder

    heard = EventRecorder()
    before = len(broker.state.subscribers)
    with Domain(broker.address, "domain", "bird", heard) as watcher:

        def churn(count: int) -> None:
            for i in range(count):
                if i % 4:
                    socket.create_connection(("127.0.0.1", broker.port)).close()
                else:
                    connect(broker.address).close()

        churn(600)
        workers = [threading.Thread(target=churn, args=(100,)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert not any(worker.is_alive() for worker in workers)
        # The session made before the storm still works and still hears what happens.
        sm = watcher.entry_peer.start_storage_manager("teas", str(tmp_path / "teas"), True, wait_seconds=30)
        heard.wait_for("process_status_changed", lambda e: e.args[0] is sm and e.args[1] == "RUNNING")
        sm.shutdown()
        heard.wait_for("process_left", lambda e: e.args[0] is sm)
        # The watcher heard events, so it is subscribed; the storm left no subscriber behind.
        assert len(broker.state.subscribers) == before + 1 and list(broker.state.peers) == [broker.address]
        assert broker.state.processes == {}
    still_serves(broker)


def test_domain_credentials_are_kept_as_a_salted_slow_hash(tmp_path):
    import json

    from workbench.domain.agent import Credentials

    first, second = Credentials.create("domain", "bird"), Credentials.create("domain", "bird")
    assert first.salt != second.salt and first.digest != second.digest  # salted: equal passwords, unequal hashes
    assert first.verify("domain", "bird") and second.verify("domain", "bird")
    assert not first.verify("domain", "crow") and not first.verify("root", "bird") and not first.verify(None, None)
    first.save(tmp_path / "credentials.json")
    stored = json.loads((tmp_path / "credentials.json").read_text())
    assert set(stored) == {"user", "salt", "scrypt"} and "bird" not in json.dumps(stored)
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0  # readable by its owner only
