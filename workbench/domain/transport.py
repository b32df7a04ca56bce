"""Domain connections over TLS: identities, trust on first use, framed connections and a threaded server.

Every connection between agents, brokers and clients is TLS (1.2 or later) carrying the frames of
``workbench.domain.protocol``. A broker or agent presents a self-signed certificate
(``TlsIdentity``); a client verifies it either against a CA file (standard verification, hostname
included) or by pinning its fingerprint in a ``KnownBrokers`` file, trust on first use like
``~/.ssh/known_hosts``.

OpenSSL forbids using one TLS connection from two threads at once, yet a ``Connection`` is read by
one thread while others send on it. So its socket is non-blocking, every TLS call is made under a
per-connection lock and lasts only as long as the call itself, and waiting for the socket to
become readable or writable happens outside that lock.

::

    with TlsServer(TlsIdentity.load_or_create(state_dir), handler=serve_client).start() as server:
        with connect(server.address) as conn:
            reply = conn.request(Message.make("Request", Type="Peers"))
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import ipaddress
import logging
import math
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from workbench.domain.protocol import FrameDecoder, Message, ProtocolError, encode_frame
from workbench.errors import AuthenticationError, ConfigurationError, DomainError
from workbench.framing import Acceptor
from workbench.servers import Address, ServerLifecycle

log = logging.getLogger(__name__)

#: environment variable naming the known-brokers file
KNOWN_BROKERS_ENV = "WORKBENCH_KNOWN_BROKERS"
_CERT_FILE = "tls-cert.pem"
_KEY_FILE = "tls-key.pem"
_CERT_DAYS = 3650
_RECV_CHUNK = 65536
#: how long stop() waits for connection threads (handlers may be busy elsewhere)
_STOP_JOIN_SECONDS = 5.0


class TransportError(DomainError):
    """A connection failed: refused, unreachable, timed out, reset or closed (fields: host, port, address...)."""


class BrokerVerificationError(AuthenticationError):
    """The peer's certificate is not the one we trust (fields: address, expected, got).

    With pinning, ``expected`` and ``got`` are fingerprints; with a CA file, ``expected`` is the CA
    file and ``got`` what OpenSSL found wrong with the certificate.
    """


def fingerprint(cert_der: bytes) -> str:
    """``"sha256:"`` + the hex SHA-256 of a DER certificate, as stored in the known-brokers file.

    ::

        >>> fingerprint(b"not really a certificate")[:15]
        'sha256:d6182255'
    """
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()


@dataclass(frozen=True)
class TlsIdentity:
    """A certificate and its private key on disk, presented by servers.

    ::

        identity = TlsIdentity.load_or_create(Path("~/.workbench/agent").expanduser(), hostname="db1")
        print(identity.fingerprint)   # what a client will pin
    """

    cert_path: Path
    key_path: Path

    @classmethod
    def load_or_create(cls, directory: Path, hostname: str = "localhost") -> "TlsIdentity":
        """Reuse the identity in ``directory``, or make a self-signed one there.

        A new certificate is EC P-256, valid ten years, for ``hostname``, ``localhost`` and
        ``127.0.0.1``; the key file is readable by its owner only (mode 0600).
        """
        directory = Path(directory)
        identity = cls(directory / _CERT_FILE, directory / _KEY_FILE)
        if identity.cert_path.exists() and identity.key_path.exists():
            _warn_if_readable_by_others(identity.key_path)
            return identity
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = _self_signed(hostname)
        # Key first and cert last: the cert's presence is what marks the pair complete.
        _write_atomically(identity.key_path, key_pem, mode=0o600)
        _write_atomically(identity.cert_path, cert_pem, mode=0o644)
        log.info("created TLS identity %s for %s (%s)", directory, hostname, identity.fingerprint)
        return identity

    @property
    def fingerprint(self) -> str:
        """The fingerprint clients pin for this certificate."""
        return fingerprint(ssl.PEM_cert_to_DER_cert(self.cert_path.read_text()))


def _self_signed(hostname: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    names: list[x509.GeneralName] = []
    for entry in (hostname, "localhost", "127.0.0.1"):
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(entry))
        except ValueError:
            general = x509.DNSName(entry)
        if general not in names:
            names.append(general)
    now = datetime.datetime.now(datetime.timezone.utc)
    subject_key = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate clock skew between hosts
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Not a CA: it vouches for itself only, yet still works as the sole entry of a CA file.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(subject_key, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(subject_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode`` (never briefly world-readable), then rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _warn_if_readable_by_others(path: Path) -> None:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("TLS key %s is accessible by other users; chmod 600 it", path)


class KnownBrokers:
    """Pinned broker certificates, trust on first use, like ``~/.ssh/known_hosts``.

    One ``address fingerprint`` line per broker. An unknown address is remembered, a known one
    must present the same certificate again::

        known = KnownBrokers(Path("known_brokers"))
        known.check("db1:48004", "sha256:ab12...")   # first time: appended to the file
        known.check("db1:48004", "sha256:ff00...")   # BrokerVerificationError

    A broker that was re-keyed on purpose is trusted again by deleting its line.
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            configured = os.environ.get(KNOWN_BROKERS_ENV)
            path = Path(configured) if configured else Path.home() / ".workbench" / "known_brokers"
        self.path = Path(path)
        self._lock = threading.Lock()

    def check(self, address: str, fp: str) -> None:
        """Accept ``fp`` for ``address`` (remembering it if new), or raise BrokerVerificationError."""
        with self._lock:
            expected = self._entries().get(address)
            if expected is None:
                self._remember(address, fp)
                log.info("trusting broker %s on first use: %s (remembered in %s)", address, fp, self.path)
                return
            if expected != fp:
                raise BrokerVerificationError(
                    f"certificate of broker {address} does not match the one remembered in {self.path};"
                    f" if the broker was re-keyed on purpose, delete its line there",
                    address=address, expected=expected, got=fp)

    def _entries(self) -> dict[str, str]:
        # Read every time: other processes of the same user may have added brokers.
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        entries: dict[str, str] = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 2 and not fields[0].startswith("#"):
                entries.setdefault(fields[0], fields[1])  # the first line for an address wins
        return entries

    def _remember(self, address: str, fp: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path, "a") as file:  # append mode: concurrent writers do not clobber each other
            file.write(f"{address} {fp}\n")

    def __repr__(self) -> str:
        return f"KnownBrokers({str(self.path)!r})"


class Connection:
    """One framed TLS connection; send from any thread, receive from one.

    ::

        conn.send(Message.make("Request", Type="Peers"))
        while (message := conn.receive()) is not None:   # None: the peer closed cleanly
            handle(message)

    Made by ``connect()`` (client side) and handed to the ``TlsServer`` handler (server side).
    After a ProtocolError the stream cannot be resynchronized: every later ``receive`` raises it
    again, but ``send`` still works so an error reply can go out before ``close``.
    """

    def __init__(self, sock: ssl.SSLSocket, address: str, peer_fingerprint: str | None = None) -> None:
        self.address = address
        self.peer_fingerprint = peer_fingerprint
        self._sock = sock
        sock.setblocking(False)
        self._lock = threading.Lock()  # every TLS call and the open/closed state
        self._send_lock = threading.Lock()  # one frame at a time
        self._recv_lock = threading.Lock()  # one receiver at a time
        self._decoder = FrameDecoder()
        self._inbox: collections.deque[Message] = collections.deque()
        self._failure: DomainError | None = None  # ProtocolError or mid-message EOF, raised again and again
        self._eof = False
        self._closed = False
        self._waiters = 0  # threads polling the descriptor: it is closed by the last of them
        self._released = False
        self._on_authenticated: Callable[[], None] | None = None  # set by the TlsServer that accepted it

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer_host(self) -> str:
        """The peer's host (IP address on the server side), without the port."""
        return _split_address(self.address)[0] if ":" in self.address else self.address

    def mark_authenticated(self) -> None:
        """The peer proved who it is: the server's pre-authentication bounds no longer apply to it."""
        callback, self._on_authenticated = self._on_authenticated, None
        if callback is not None:
            callback()

    def send(self, message: Message, timeout: float | None = None) -> None:
        """Send one message whole; TransportError if the connection is closed or broken.

        With ``timeout``, a peer that takes no data for that long has its connection closed
        (TransportError "send timed out"): a frame half sent cannot be taken back, and a broker
        must not wait forever on a client that stopped reading.
        """
        self.send_all((message,), timeout)

    def send_all(self, messages: Iterable[Message], timeout: float | None = None) -> None:
        """Send several messages back to back, in order, as one write (like ``send`` otherwise).

        The events of one change (a process's status, its failure, its leaving) then travel in
        one TLS record and one TCP segment: the receiver wakes once for all of them, not once each.
        """
        # ProtocolError for a message too large, before any I/O
        self.send_frames(b"".join(encode_frame(message) for message in messages), timeout)

    def send_frames(self, frames: bytes, timeout: float | None = None) -> None:
        """Send frames made by ``protocol.encode_frame`` (so a broadcast encodes its events once for all)."""
        frame = memoryview(frames)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            self._give_up_sending(timeout)
        try:
            while frame:
                with self._lock:
                    if self._closed:
                        raise TransportError("connection closed", address=self.address)
                    try:
                        # Not advanced on WANT_*: OpenSSL wants the same buffer retried.
                        frame = frame[self._sock.send(frame):]
                        continue
                    except ssl.SSLWantWriteError:
                        want_write = True
                    except ssl.SSLWantReadError:
                        want_write = False
                    except (ssl.SSLError, OSError) as exc:
                        raise TransportError(f"send failed: {_describe(exc)}", address=self.address) from None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._give_up_sending(timeout)
                self._wait(want_write, remaining)
        finally:
            self._send_lock.release()

    def _give_up_sending(self, timeout: float | None) -> None:
        self.close()
        raise TransportError("send timed out: the peer takes no data", address=self.address, timeout=timeout)

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next message, or None once the peer has closed cleanly.

        ProtocolError for a bad frame; TransportError ``"timed out"`` when nothing whole arrived
        within ``timeout`` seconds, ``"closed mid-message"`` when the peer left in the middle of a
        frame, ``"connection closed"`` after ``close()``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._recv_lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise TransportError("timed out", address=self.address, timeout=timeout)
        try:
            while True:
                if self._closed:
                    raise TransportError("connection closed", address=self.address)
                if self._inbox:
                    return self._inbox.popleft()
                if self._failure is not None:
                    raise self._failure
                if self._eof:
                    return None
                data = self._read_some(deadline, timeout)
                if not data:
                    self._eof = True
                    if self._decoder.pending_bytes:
                        self._failure = TransportError("closed mid-message", address=self.address,
                                                       pending_bytes=self._decoder.pending_bytes)
                    continue
                try:
                    for message in self._decoder.feed(data):
                        self._inbox.append(message)
                except ProtocolError as exc:
                    self._failure = exc  # raised once the messages before the bad frame are taken
        finally:
            self._recv_lock.release()

    def request(self, message: Message, timeout: float = 10.0) -> Message:
        """Send ``message`` and return the next message received (for exchanges before a reader thread runs)."""
        self.send(message)
        reply = self.receive(timeout)
        if reply is None:
            raise TransportError("connection closed before a reply", address=self.address, request=message.tag)
        return reply

    def close(self) -> None:
        """Close the connection (idempotent); threads blocked in send or receive get TransportError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._sock.unwrap()  # sends close_notify; fails harmlessly without waiting for the peer's
            except (ssl.SSLError, OSError, ValueError):
                pass
            try:
                # socket.socket's shutdown, not SSLSocket's: wakes threads polling this descriptor.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass
            if self._waiters == 0:
                self._release()

    def _read_some(self, deadline: float | None, timeout: float | None) -> bytes:
        while True:
            with self._lock:
                if self._closed:
                    raise TransportError("connection closed", address=self.address)
                try:
                    return self._sock.recv(_RECV_CHUNK)
                except ssl.SSLWantReadError:
                    want_write = False
                except ssl.SSLWantWriteError:
                    want_write = True
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                except (ssl.SSLError, OSError) as exc:
                    raise TransportError(f"receive failed: {_describe(exc)}", address=self.address) from None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TransportError("timed out", address=self.address, timeout=timeout)
            self._wait(want_write, remaining)

    def _wait(self, write: bool, timeout: float | None) -> None:
        """Block until the socket is ready (or closed, or ``timeout`` passed), without holding the lock."""
        with self._lock:
            if self._closed:
                raise TransportError("connection closed", address=self.address)
            self._waiters += 1
            fd = self._sock.fileno()
        try:
            _wait_for_descriptor(fd, write, timeout)
        finally:
            with self._lock:
                self._waiters -= 1
                if self._closed and self._waiters == 0:
                    self._release()

    def _release(self) -> None:
        # Called under the lock once nobody polls the descriptor, so its number cannot be reused under a poller.
        if not self._released:
            self._released = True
            self._sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Connection {self.address} {state}>"


def _wait_for_descriptor(fd: int, write: bool, timeout: float | None) -> None:
    if hasattr(select, "poll"):  # select() cannot watch descriptors above FD_SETSIZE (1024)
        poller = select.poll()
        poller.register(fd, select.POLLOUT if write else select.POLLIN)
        poller.poll(None if timeout is None else math.ceil(timeout * 1000))
    else:
        select.select([] if write else [fd], [fd] if write else [], [], timeout)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")  # WRONG_VERSION_NUMBER -> wrong version number
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _split_address(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"not a host:port address: {address!r}", address=address)
    return host, int(port)


def _join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect(address: str, known_brokers: KnownBrokers | None = None, ca_file: str | None = None,
            timeout: float = 10.0) -> Connection:
    """Open a verified TLS connection to ``"host:port"``.

    With ``ca_file`` the server certificate must chain to it and match the host name; otherwise
    (or also, when ``known_brokers`` is given alongside) its fingerprint is pinned through
    ``known_brokers`` (default: ``KnownBrokers()``). Verification happens before anything is sent::

        with connect("db1:48004") as conn:
            reply = conn.request(Message.make("Request", Type="Peers"))

    TransportError (fields host, port) when the broker cannot be reached or the handshake fails,
    BrokerVerificationError when its certificate is not trusted.
    """
    host, port = _split_address(address)
    if ca_file is not None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # pinned below instead
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    pins = known_brokers if known_brokers is not None or ca_file is not None else KnownBrokers()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TransportError(f"cannot connect to {address}: {_describe(exc)}", host=host, port=port) from None
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise BrokerVerificationError(f"certificate of broker {address} is not trusted by {ca_file}",
                                      address=address, expected=ca_file, got=exc.verify_message) from None
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TransportError(f"TLS handshake with {address} failed: {_describe(exc)}", host=host, port=port) from None
    peer = fingerprint(sock.getpeercert(binary_form=True))
    if pins is not None:
        try:
            pins.check(address, peer)
        except BaseException:
            sock.close()
            raise
    return Connection(sock, address=address, peer_fingerprint=peer)


class TlsServer(ServerLifecycle):
    """Accepts TLS connections and runs ``handler(connection)`` for each in its own thread.

    ::

        def echo(conn: Connection) -> None:
            while (message := conn.receive()) is not None:
                conn.send(message)

        with TlsServer(identity, echo).start() as server:
            print("listening on", server.address)

    The handshake happens in the connection's thread under ``handshake_timeout``, so a slow or
    plaintext client holds up nobody else. When the handler returns or raises (logged), the
    connection is closed; a handler raising TransportError (peer gone) is logged at debug level,
    ProtocolError (peer misbehaving) as a warning, anything else with its traceback. Beyond
    ``max_connections`` live connections, new ones are closed at once.

    A connection is *unauthenticated* until its handler calls ``mark_authenticated()``. Those are
    bounded, so idle or slow strangers cannot take the threads real clients need: each must
    authenticate within ``login_timeout`` seconds of being accepted (TLS handshake included) or
    it is closed; one address holds at most ``max_unauthenticated_per_address`` of them and all
    addresses together ``max_unauthenticated``. A new connection beyond a bound closes the
    oldest unauthenticated one of that address (or of all), so a flood only ever displaces
    itself and a client that just arrived gets its turn.
    """

    def __init__(self, identity: TlsIdentity, handler: Callable[[Connection], None], host: str = "127.0.0.1",
                 port: int = 0, handshake_timeout: float = 10.0, max_connections: int = 1024,
                 login_timeout: float | None = None, max_unauthenticated: int = 128,
                 max_unauthenticated_per_address: int = 32) -> None:
        super().__init__()
        self.identity = identity
        self.login_timeout = login_timeout
        self.max_unauthenticated = max_unauthenticated
        self.max_unauthenticated_per_address = max_unauthenticated_per_address
        # accepted and not yet authenticated, oldest first: entry -> (peer host, deadline)
        self._unauthenticated: dict[_Unauthenticated, None] = {}
        self.handler = handler
        self.host = host
        self.port = port
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.num_tickets = 0  # no resumption: saves post-handshake writes a short-lived client never reads
        self._lock = threading.Lock()
        self._handshaking: set[ssl.SSLSocket] = set()
        self._connections: set[Connection] = set()
        self._acceptor: Acceptor | None = None

    @property
    def address(self) -> Address:
        """``"host:port"`` with the real port once started."""
        return Address.tcp(self.host, self.port)

    def _start(self) -> None:
        """Bind and start accepting; returns once listening."""
        if self._stopping.is_set():
            raise DomainError("this server was stopped; make a new one", address=self.address)
        if self._acceptor is not None:
            return
        try:
            self._context.load_cert_chain(str(self.identity.cert_path), str(self.identity.key_path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the TLS identity: {_describe(exc)}",
                                     cert_path=str(self.identity.cert_path),
                                     key_path=str(self.identity.key_path)) from None
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            listener = socket.create_server((self.host, self.port), family=family)  # SO_REUSEADDR on POSIX
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.address}: {_describe(exc)}",
                                 host=self.host, port=self.port) from None
        self.port = listener.getsockname()[1]
        # Wake at least this often to close the unauthenticated connections past their deadline.
        self._acceptor = Acceptor(listener, self._admit, name=f"tls-{self.address}",
                                  max_connections=self.max_connections, refuse=self._refuse,
                                  tick=None if self.login_timeout is None else 0.25,
                                  on_tick=self._expire_unauthenticated).start()
        log.info("TLS server listening on %s (%s)", self.address, self.identity.fingerprint)

    def _stop(self) -> None:
        """Stop accepting, close every live connection and join the threads."""
        if self._acceptor is not None:
            self._acceptor.stop()
        with self._lock:
            for sock in self._handshaking:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # aborts the handshake in progress
                except OSError:
                    pass
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        lingering = self._acceptor.join(_STOP_JOIN_SECONDS) if self._acceptor is not None else []
        if lingering:
            log.warning("TLS server %s: handlers still running after stop: %s", self.address, lingering)
        log.info("TLS server on %s stopped", self.address)

    def __repr__(self) -> str:
        return f"<TlsServer {self.address} {len(self._connections)} connections>"

    def _admit(self, sock: socket.socket, peer: tuple) -> Callable[[], None]:
        """On the accept thread: bound the unauthenticated connections, then serve this one."""
        entry = _Unauthenticated(sock, str(peer[0]), None if self.login_timeout is None
                                 else time.monotonic() + self.login_timeout)
        with self._lock:
            if self.login_timeout is not None:
                self._make_room_for(entry.host)
                self._unauthenticated[entry] = None
        return lambda: self._serve(sock, peer, entry)

    def _refuse(self, sock: socket.socket, peer: tuple) -> None:
        """On the accept thread, at the connection limit: a flood of strangers still displaces itself."""
        if self.login_timeout is not None:
            with self._lock:
                self._make_room_for(str(peer[0]))

    def _make_room_for(self, host: str) -> None:
        """Under the lock: close the oldest unauthenticated connections a new one from ``host`` would exceed."""
        same_host = [e for e in self._unauthenticated if e.host == host]
        if len(same_host) >= self.max_unauthenticated_per_address:
            self._drop_unauthenticated(same_host[0], "too many unauthenticated connections from its address")
        elif len(self._unauthenticated) >= self.max_unauthenticated:
            self._drop_unauthenticated(next(iter(self._unauthenticated)), "too many unauthenticated connections")

    def _expire_unauthenticated(self) -> None:
        now = time.monotonic()
        with self._lock:
            for entry in [e for e in self._unauthenticated if e.deadline is not None and e.deadline <= now]:
                self._drop_unauthenticated(entry, "no login within the deadline")

    def _drop_unauthenticated(self, entry: "_Unauthenticated", reason: str) -> None:
        """Under the lock: forget ``entry`` and cut its socket (its thread wakes and ends)."""
        self._unauthenticated.pop(entry, None)
        log.debug("TLS server %s: closing a connection from %s: %s", self.address, entry.host, reason)
        try:
            socket.socket.shutdown(entry.sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed already

    def _authenticated(self, entry: "_Unauthenticated") -> None:
        with self._lock:
            self._unauthenticated.pop(entry, None)

    def _serve(self, raw: socket.socket, peer: tuple, entry: "_Unauthenticated") -> None:
        address = _join_address(*peer[:2])
        try:
            connection = self._handshake(raw, address, entry)
            if connection is None:
                return
            try:
                self.handler(connection)
            except TransportError as exc:  # the peer went away or stalled: routine for a server
                log.debug("TLS server %s: connection from %s: %s", self.address, address, exc)
            except ProtocolError as exc:  # the peer's fault, not ours: no traceback
                log.warning("TLS server %s: %s sent something invalid: %s", self.address, address, exc)
            except Exception:
                log.exception("TLS server %s: handler failed on the connection from %s", self.address, address)
            finally:
                connection.close()
                with self._lock:
                    self._connections.discard(connection)
        finally:
            with self._lock:
                self._unauthenticated.pop(entry, None)

    def _handshake(self, raw: socket.socket, address: str, entry: "_Unauthenticated") -> Connection | None:
        try:
            raw.settimeout(self.handshake_timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self._context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS server %s: cannot set up %s: %s", self.address, address, _describe(exc))
            raw.close()
            return None
        with self._lock:
            dropped = self.login_timeout is not None and entry not in self._unauthenticated
            if self._stopping.is_set() or dropped:
                sock.close()
                return None
            self._handshaking.add(sock)
            entry.sock = sock  # the wrapped socket owns the descriptor now
        try:
            sock.do_handshake()
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.debug("TLS server %s: handshake with %s failed: %s", self.address, address, _describe(exc))
            with self._lock:
                self._handshaking.discard(sock)
            sock.close()
            return None
        with self._lock:
            self._handshaking.discard(sock)
            if self._stopping.is_set():
                sock.close()
                return None
            connection = Connection(sock, address=address)
            connection._on_authenticated = lambda: self._authenticated(entry)
            self._connections.add(connection)
        return connection


class _Unauthenticated:
    """An accepted connection that has not authenticated yet: its socket, peer host and deadline."""

    __slots__ = ("sock", "host", "deadline")

    def __init__(self, sock: socket.socket, host: str, deadline: float | None) -> None:
        self.sock, self.host, self.deadline = sock, host, deadline


__all__ = [
    "TransportError",
    "BrokerVerificationError",
    "fingerprint",
    "TlsIdentity",
    "KnownBrokers",
    "Connection",
    "connect",
    "TlsServer",
]
