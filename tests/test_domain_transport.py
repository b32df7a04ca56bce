"""Domain TLS transport over real loopback sockets: round trips, pinning, CA checks, hostile and flaky peers."""

from __future__ import annotations

import queue
import socket
import ssl
import stat
import struct
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from workbench.domain.protocol import MAX_FRAME_BYTES, FrameDecoder, Message, ProtocolError, encode_frame
from workbench.domain.transport import (
    KNOWN_BROKERS_ENV,
    BrokerVerificationError,
    Connection,
    KnownBrokers,
    TlsIdentity,
    TlsServer,
    TransportError,
    connect,
    fingerprint,
)
from workbench.errors import AuthenticationError, ConfigurationError, DomainError


def echo(conn: Connection) -> None:
    while (message := conn.receive()) is not None:
        conn.send(message)


class Recorder:
    """An echo handler that reports how each connection ended: (messages received, error or None)."""

    def __init__(self) -> None:
        self.outcomes: queue.Queue[tuple[list[Message], DomainError | None]] = queue.Queue()

    def __call__(self, conn: Connection) -> None:
        received: list[Message] = []
        try:
            while (message := conn.receive()) is not None:
                received.append(message)
                conn.send(message)
        except DomainError as exc:
            if isinstance(exc, ProtocolError):
                conn.send(Message.make("Error", Text=exc.message))  # the stream is lost, sending is not
            self.outcomes.put((received, exc))
        else:
            self.outcomes.put((received, None))

    def next(self) -> tuple[list[Message], DomainError | None]:
        return self.outcomes.get(timeout=5)


@pytest.fixture
def identity(tmp_path):
    return TlsIdentity.load_or_create(tmp_path / "broker")


@pytest.fixture
def known(tmp_path):
    return KnownBrokers(tmp_path / "known_brokers")


@pytest.fixture
def serve(identity):
    """serve(handler=echo, **TlsServer options) -> a started server, stopped after the test."""
    servers: list[TlsServer] = []

    def start(handler=echo, **options) -> TlsServer:
        server = TlsServer(options.pop("identity", identity), handler, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def raw_tls(server: TlsServer) -> ssl.SSLSocket:
    """A TLS socket to the server with no framing, for sending what Connection never would."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=5),
                               server_hostname="127.0.0.1")


def round_trip(server: TlsServer, known: KnownBrokers) -> None:
    with connect(server.address, known) as conn:
        assert conn.request(Message.make("Ping", N=1), timeout=5) == Message("Ping", {"N": "1"})


def test_echo_round_trips(serve, identity, known):
    server = serve()
    assert server.address == f"127.0.0.1:{server.port}" and server.port > 0
    with connect(server.address, known) as conn:
        assert conn.peer_fingerprint == identity.fingerprint and conn.address == server.address
        request = Message.make("Request", Message.make("Option", Name="--dba-user", Value="<d&ba>"),
                               Type="StartProcess", Database="teas")
        assert conn.request(request) == request
        for i in range(50):
            conn.send(Message.make("Event", Seq=i))
        assert [conn.receive(timeout=5).get("Seq") for _ in range(50)] == [str(i) for i in range(50)]
    assert conn.closed
    conn.close()  # idempotent
    with pytest.raises(TransportError, match="connection closed"):
        conn.send(Message.make("Ping"))


def test_concurrent_senders_and_a_reader_share_one_connection(serve, known):
    server = serve()
    big = "x" * 1_000_000
    with connect(server.address, known) as conn:
        received: list[Message] = []

        def read() -> None:
            time.sleep(0.3)  # start late: socket buffers fill, so both ends' sends must wait for writability
            received.extend(conn.receive(timeout=10) for _ in range(4 * 25))

        reader = threading.Thread(target=read)
        reader.start()

        def send(sender: int) -> None:
            for i in range(25):
                conn.send(Message.make("Event", Sender=sender, Seq=i, Data=big if i % 5 == 0 else "small"))

        senders = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for thread in senders:
            thread.start()
        for thread in senders + [reader]:
            thread.join(20)
    assert len(received) == 100
    for sender in map(str, range(4)):
        mine = [m for m in received if m.get("Sender") == sender]
        assert [m.get("Seq") for m in mine] == [str(i) for i in range(25)]  # each sender's order is kept
        assert all(m.get("Data") == (big if int(m.get("Seq")) % 5 == 0 else "small") for m in mine)


def test_identity_files_are_reused_and_the_key_is_private(tmp_path):
    first = TlsIdentity.load_or_create(tmp_path / "agent", hostname="db1.example")
    again = TlsIdentity.load_or_create(tmp_path / "agent", hostname="other")
    assert again == first and again.fingerprint == first.fingerprint
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(first.cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["db1.example", "localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert first.fingerprint == fingerprint(cert.public_bytes(Encoding.DER))
    assert TlsIdentity.load_or_create(tmp_path / "other").fingerprint != first.fingerprint
    assert not list((tmp_path / "agent").glob(".*tmp"))


def test_known_brokers_file(tmp_path, monkeypatch):
    path = tmp_path / "dir" / "known_brokers"
    known = KnownBrokers(path)
    known.check("db1:48004", "sha256:aa")
    known.check("db1:48004", "sha256:aa")
    known.check("db2:48004", "sha256:bb")
    assert path.read_text() == "db1:48004 sha256:aa\ndb2:48004 sha256:bb\n"
    with pytest.raises(BrokerVerificationError) as caught:
        KnownBrokers(path).check("db2:48004", "sha256:cc")
    assert (caught.value.address, caught.value.expected, caught.value.got) == ("db2:48004", "sha256:bb", "sha256:cc")
    assert isinstance(caught.value, AuthenticationError) and str(path) in str(caught.value)
    monkeypatch.setenv(KNOWN_BROKERS_ENV, str(tmp_path / "from-env"))
    assert KnownBrokers().path == tmp_path / "from-env"


def test_trust_on_first_use_then_refuse_a_new_certificate(serve, identity, known, tmp_path):
    server = serve()
    round_trip(server, known)
    assert known.path.read_text() == f"{server.address} {identity.fingerprint}\n"
    round_trip(server, known)
    port = server.port
    server.stop()

    impostor = TlsIdentity.load_or_create(tmp_path / "impostor")
    recorder = Recorder()
    serve(recorder, identity=impostor, port=port)  # same address, new certificate
    with pytest.raises(BrokerVerificationError) as caught:
        connect(f"127.0.0.1:{port}", known)
    assert caught.value.fields == {"address": f"127.0.0.1:{port}", "expected": identity.fingerprint,
                                   "got": impostor.fingerprint}
    assert recorder.next() == ([], None)  # the impostor was told nothing
    assert known.path.read_text() == f"{server.address} {identity.fingerprint}\n"


def test_default_known_brokers_come_from_the_environment(serve, identity, tmp_path, monkeypatch):
    monkeypatch.setenv(KNOWN_BROKERS_ENV, str(tmp_path / "env_known"))
    server = serve()
    with connect(server.address) as conn:
        assert conn.request(Message.make("Ping")).tag == "Ping"
    assert (tmp_path / "env_known").read_text() == f"{server.address} {identity.fingerprint}\n"


def test_ca_file_verification(serve, identity, tmp_path, monkeypatch):
    monkeypatch.setenv(KNOWN_BROKERS_ENV, str(tmp_path / "must_stay_absent"))
    server = serve()
    for host in ("localhost", "127.0.0.1"):  # the certificate names both
        with connect(f"{host}:{server.port}", ca_file=str(identity.cert_path)) as conn:
            assert conn.request(Message.make("Ping")).tag == "Ping"
    other = TlsIdentity.load_or_create(tmp_path / "other")
    with pytest.raises(BrokerVerificationError) as caught:
        connect(server.address, ca_file=str(other.cert_path))
    assert caught.value.address == server.address and caught.value.expected == str(other.cert_path)
    assert not (tmp_path / "must_stay_absent").exists()


def test_plaintext_clients_do_not_disturb_others(serve, known):
    server = serve()
    silent = socket.create_connection(("127.0.0.1", server.port))  # never speaks: stuck in its handshake
    noisy = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    noisy.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4)
    try:
        while noisy.recv(4096):
            pass  # an alert at most, then the server closes it
    except ConnectionResetError:
        pass
    started = time.monotonic()
    round_trip(server, known)
    assert time.monotonic() - started < 2
    silent.close()
    noisy.close()
    round_trip(server, known)


def test_slow_handshakes_time_out(serve):
    server = serve(handshake_timeout=0.3)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    started = time.monotonic()
    assert silent.recv(1) == b""  # dropped by the server
    assert 0.2 < time.monotonic() - started < 3
    silent.close()


def test_half_a_frame_then_disconnect(serve, known):
    recorder = Recorder()
    server = serve(recorder)
    frame = encode_frame(Message.make("Request", Type="Peers"))
    with raw_tls(server) as sock:
        sock.sendall(frame[:-5])
    received, error = recorder.next()
    assert received == [] and isinstance(error, TransportError) and error.message == "closed mid-message"
    round_trip(server, known)  # the server is still up
    assert recorder.next() == ([Message("Ping", {"N": "1"})], None)


def test_oversized_frame_length_is_a_protocol_error_at_the_receiver(serve):
    recorder = Recorder()
    server = serve(recorder)
    with raw_tls(server) as sock:
        sock.sendall(encode_frame(Message.make("Ping")) + struct.pack(">I", MAX_FRAME_BYTES + 1) + b"<Huge")
        decoder = FrameDecoder()
        replies: list[Message] = []
        while len(replies) < 2:
            replies.extend(decoder.feed(sock.recv(65536)))
    received, error = recorder.next()
    assert [m.tag for m in received] == ["Ping"] and isinstance(error, ProtocolError)
    assert error.message == "frame too large" and error.size == MAX_FRAME_BYTES + 1
    assert [m.tag for m in replies] == ["Ping", "Error"] and replies[1].get("Text") == "frame too large"


def test_receive_timeout_leaves_the_connection_usable(serve, known):
    server = serve()
    with connect(server.address, known) as conn:
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            conn.receive(timeout=0.2)
        assert 0.15 < time.monotonic() - started < 2
        assert conn.request(Message.make("Ping")).tag == "Ping"


def test_connecting_to_a_closed_port(known):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError) as caught:
        connect(f"127.0.0.1:{port}", known, timeout=2)
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
    assert not known.path.exists()
    with pytest.raises(ConfigurationError, match="host:port"):
        connect("no-port", known)


def test_close_wakes_a_blocked_receiver_and_stop_closes_live_connections(serve, known):
    server = serve()
    conn = connect(server.address, known)
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def wait() -> None:
        try:
            outcome.put(conn.receive())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.put(exc)

    threading.Thread(target=wait).start()
    time.sleep(0.1)
    conn.close()
    error = outcome.get(timeout=2)
    assert isinstance(error, TransportError) and error.message == "connection closed"

    conn = connect(server.address, known)
    conn.request(Message.make("Ping"))  # the handler is now blocked in receive()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert conn.receive(timeout=2) is None  # the server closed it cleanly
    conn.close()
    with pytest.raises(TransportError):
        connect(server.address, known, timeout=2)


def test_a_raising_handler_is_logged_and_its_connection_closed(serve, known, caplog):
    def broken(conn: Connection) -> None:
        conn.receive()
        raise RuntimeError("handler bug")

    server = serve(broken)
    with connect(server.address, known) as conn:
        conn.send(Message.make("Ping"))
        assert conn.receive(timeout=5) is None
    assert any("handler failed" in r.message and r.exc_info for r in caplog.records)


def test_connections_beyond_the_limit_are_refused(serve, known):
    server = serve(max_connections=2)
    held = [connect(server.address, known) for _ in range(2)]
    for conn in held:
        conn.request(Message.make("Ping"))
    with pytest.raises(TransportError, match="handshake"):
        connect(server.address, known, timeout=2)
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:  # the freed slot is released once its handler thread ends
        try:
            round_trip(server, known)
            break
        except TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    held.pop().close()


def test_a_thousand_rapid_connects_leave_no_threads_behind(identity, known):
    baseline = threading.active_count()
    server = TlsServer(identity, echo).start()

    def churn(count: int) -> None:
        for i in range(count):
            if i % 4:
                socket.create_connection(("127.0.0.1", server.port)).close()
            else:
                connect(server.address, known).close()

    churn(800)
    workers = [threading.Thread(target=churn, args=(50,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    with connect(server.address, known) as conn:
        assert conn.request(Message.make("Ping")).tag == "Ping"
        # the churned connections' threads end on their own, not only at stop(): accept + this one remain
        deadline = time.monotonic() + 5
        while threading.active_count() > baseline + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= baseline + 2
    server.stop()
    assert threading.active_count() <= baseline + 1  # slack for a thread of someone else's still exiting


def test_a_peer_that_stops_reading_is_dropped_after_the_send_timeout(serve, known):
    outcome: queue.Queue = queue.Queue()

    def flood(conn: Connection) -> None:
        big = Message.make("Blob", Data="x" * 200_000)
        started = time.monotonic()
        try:
            while True:
                conn.send(big, timeout=0.5)
        except TransportError as exc:
            outcome.put((exc, time.monotonic() - started, conn.closed))

    server = serve(flood)
    with connect(server.address, known):  # connected, and never reads
        error, elapsed, closed = outcome.get(timeout=20)
    assert "send timed out" in error.message and closed
    assert elapsed < 15  # the sender was freed, not blocked for good


def test_send_all_puts_several_messages_in_one_record_in_order(serve, known):
    def burst(conn: Connection) -> None:
        while (message := conn.receive()) is not None:
            conn.send_all([Message.make("Event", Seq=i, Type=message.tag) for i in range(3)])

    server = serve(burst)
    sock = raw_tls(server)
    try:
        sock.sendall(encode_frame(Message.make("Go")))
        data = sock.recv(65536)  # one read returns one whole TLS record
        assert [(m.get("Seq"), m.get("Type")) for m in FrameDecoder().feed(data)] == [
            ("0", "Go"), ("1", "Go"), ("2", "Go")]
    finally:
        sock.close()
    with connect(server.address, known) as conn:
        conn.send_frames(encode_frame(Message.make("Big", Text="y" * 100_000)))  # beyond one record
        assert [conn.receive(timeout=5).get("Seq") for _ in range(3)] == ["0", "1", "2"]
