"""zdb over ZeroMQ: endpoints, request framing, and who may connect (a dba login or CURVE keys).

Servers use a ROUTER socket, so one server thread serves many clients and can hold some requests
(lock waiters, read-your-writes) while answering others. A request is ``[envelope..., json]`` or
``[envelope..., json, data]`` where ``data`` is raw blob content; REQ clients add an empty
delimiter frame, DEALER clients may omit it: both are accepted.

Authentication is ZeroMQ's own, checked by a ZAP handler (``zmq.auth``) during the handshake of
every connection, on the request socket and the change stream alike: ``PlainLogin`` takes the
dba user and password (ZeroMQ's PLAIN mechanism), ``CurveServer`` a CURVE key on an allow-list.
A peer that fails the handshake never delivers a message, so the server thread spends nothing on
it. ``HandshakeWatch`` tells a client why its handshake failed instead of leaving it to time out.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import zmq
from zmq.auth.thread import ThreadAuthenticator

try:  # the compiled socket's send: the pure-Python wrapper pyzmq puts over it only adds checks
    from zmq.backend.cython._zmq import Socket as _CompiledSocket
    _send = _CompiledSocket.send
except ImportError:  # another backend (CFFI): its sugar send is the way in
    _send = zmq.Socket.send

from workbench.errors import ConfigurationError

DEFAULT_URI = "tcp://127.0.0.1:5559"

# Plain ints: pyzmq's enum flags cost an enum operation per use on the request path.
_SNDMORE = int(zmq.SNDMORE)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    """One whole multipart message as bytes.

    Same result as ``recv_multipart``, cheaper per request: the frames' ``more`` flag is read
    from each frame instead of by a getsockopt call per frame (pyzmq's recv_multipart).
    """
    frame = sock.recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame.bytes)
    return frames


def send_frames(sock: zmq.Socket, frames: list[bytes], flags: int = 0) -> None:
    """``send_multipart`` without its per-call type checks and flag arithmetic.

    Frames are bytes and no routing id or group is given, so the compiled send is called
    directly: the wrapper's checks for those cost a Python call per frame on the reply path.
    """
    last = len(frames) - 1
    more = flags | _SNDMORE
    for index, frame in enumerate(frames):
        _send(sock, frame, flags if index == last else more)


def send_each(sock: zmq.Socket, messages: list[bytes]) -> None:
    """Send each of ``messages`` as a one-frame message (a batch's records on the change stream)."""
    for message in messages:
        _send(sock, message, 0)


def bind(socket: zmq.Socket, uri: str) -> str:
    """Bind ``uri`` (port 0 or ``*`` picks a free port) and return the real endpoint."""
    wildcard = re.sub(r"^(tcp://[^:]+):0$", r"\1:*", uri)
    try:
        socket.bind(wildcard)
    except zmq.ZMQError as exc:
        raise ConfigurationError(f"cannot bind {uri}: {exc.strerror}", uri=uri) from None
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)


def connectable(endpoint: str) -> str:
    """An endpoint a client can connect to (a server bound to 0.0.0.0 is reached on loopback)."""
    return endpoint.replace("tcp://0.0.0.0:", "tcp://127.0.0.1:").replace("tcp://*:", "tcp://127.0.0.1:")


def split_request(frames: list[bytes]) -> tuple[list[bytes], bytes, bytes | None]:
    """ROUTER frames -> (envelope to reply to, JSON body, optional data frame)."""
    envelope = [frames[0]]
    rest = frames[1:]
    if rest and rest[0] == b"":  # REQ-style delimiter
        envelope.append(b"")
        rest = rest[1:]
    if not rest:
        return envelope, b"", None
    return envelope, rest[0], (rest[1] if len(rest) > 1 else None)


@dataclass(frozen=True)
class CurveKeys:
    """A CURVE key pair (Z85 text). ``CurveKeys.generate()`` makes a new one."""

    public: str
    secret: str

    @classmethod
    def generate(cls) -> "CurveKeys":
        public, secret = zmq.curve_keypair()
        return cls(public.decode(), secret.decode())

    @classmethod
    def load(cls, path: str) -> "CurveKeys":
        """Read a ZeroMQ certificate file (``NAME.key_secret`` as written by ``save``)."""
        import zmq.auth

        public, secret = zmq.auth.load_certificate(path)
        if secret is None:
            raise ConfigurationError("this certificate holds no secret key", path=str(path))
        return cls(public.decode(), secret.decode())

    def save(self, directory: str, name: str) -> tuple[str, str]:
        """Write ``NAME.key`` (public, to hand out) and ``NAME.key_secret`` (keep private)."""
        import os

        os.makedirs(directory, exist_ok=True)
        public_path = os.path.join(directory, f"{name}.key")
        secret_path = os.path.join(directory, f"{name}.key_secret")
        for path, with_secret in ((public_path, False), (secret_path, True)):
            lines = ["metadata", "curve", f'    public-key = "{self.public}"']
            if with_secret:
                lines.append(f'    secret-key = "{self.secret}"')
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if with_secret else 0o644)
            with os.fdopen(fd, "w") as stream:
                stream.write("\n".join(lines) + "\n")
        return public_path, secret_path


def load_public_key(path: str) -> str:
    """The public key of a certificate file (either half of a pair)."""
    import zmq.auth

    public, _ = zmq.auth.load_certificate(path)
    return public.decode()


def load_public_keys(directory: str) -> list[str]:
    """Every public key in a directory of ``*.key`` certificate files (a client allow-list)."""
    import glob
    import os

    return [load_public_key(path) for path in sorted(glob.glob(os.path.join(directory, "*.key")))]


class CurveAllowList:
    """ZAP handler: lets in only clients whose CURVE public key is listed."""

    def __init__(self, public_keys: Iterable[str]) -> None:
        self.allowed = {key.encode() if isinstance(key, str) else key for key in public_keys}

    def callback(self, domain: str, key: bytes) -> bool:
        import zmq.utils.z85

        return zmq.utils.z85.encode(key) in self.allowed or key in self.allowed


class CurveServer:
    """Makes server sockets CURVE servers and runs the authenticator that checks client keys."""

    def __init__(self, context: zmq.Context, keys: CurveKeys, allowed_clients: Iterable[str] | None) -> None:
        self.keys = keys
        self.authenticator = ThreadAuthenticator(context)
        self.authenticator.start()
        if allowed_clients is None:
            self.authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        else:
            self.authenticator.configure_curve_callback(domain="*",
                                                        credentials_provider=CurveAllowList(allowed_clients))

    def secure(self, socket: zmq.Socket) -> None:
        socket.curve_server = True
        socket.curve_secretkey = self.keys.secret.encode()
        socket.curve_publickey = self.keys.public.encode()

    def stop(self) -> None:
        self.authenticator.stop()


def secure_client(socket: zmq.Socket, server_public: str, keys: CurveKeys) -> None:
    """Make a client socket talk CURVE to a server whose public key is ``server_public``."""
    socket.curve_serverkey = server_public.encode()
    socket.curve_publickey = keys.public.encode()
    socket.curve_secretkey = keys.secret.encode()


class _DbaAuthenticator(ThreadAuthenticator):
    """ZAP handler for PLAIN: the dba users and passwords, compared in constant time."""

    def __init__(self, context: zmq.Context, users: Mapping[str, str]) -> None:
        super().__init__(context)
        self.users = {user: password.encode() for user, password in users.items()}

    def _authenticate_plain(self, domain: str, username: str, password: str) -> tuple[bool, bytes]:
        expected = self.users.get(username)
        # Compare even for an unknown user, so the time taken does not tell which users exist.
        matches = hmac.compare_digest(expected or b"\0" * 32, password.encode())
        if expected is not None and matches:
            return True, b"OK"
        return False, b"wrong database user or password"


class PlainLogin:
    """Makes server sockets PLAIN servers: the handshake itself is the dba login.

    ZeroMQ's ZAP handler runs on its own thread and checks each connection's user and password
    before the connection may deliver anything; messages of an accepted connection carry the
    user as their ``User-Id``. (PLAIN does not encrypt: beyond loopback use CURVE.)
    """

    def __init__(self, context: zmq.Context, users: Mapping[str, str]) -> None:
        if not users or any(not isinstance(p, str) or not p for p in users.values()):
            raise ConfigurationError("a dba login needs a user and a non-empty password")
        self.authenticator = _DbaAuthenticator(context, users)
        self.authenticator.start()

    def secure(self, socket: zmq.Socket) -> None:
        socket.plain_server = True
        socket.zap_domain = b"zdb"

    def stop(self) -> None:
        self.authenticator.stop()


def login_client(socket: zmq.Socket, user: str, password: str) -> None:
    """Make a client socket (DEALER or SUB) present the dba login in its handshake."""
    socket.plain_username = user.encode()
    socket.plain_password = password.encode()


#: why a handshake failed, as ``HandshakeWatch.failure()`` reports it
REFUSED, NO_LOGIN_THERE, LOGIN_NEEDED = "refused", "no-login-there", "login-needed"


class HandshakeWatch:
    """Follows a client socket's handshakes through a ZeroMQ socket monitor.

    Read only when a request cannot be sent or is not answered, so it costs nothing per request.
    """

    def __init__(self, socket: zmq.Socket, with_login: bool) -> None:
        self.socket = socket
        self.with_login = with_login
        self.monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                 | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                 | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                                 | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.last: str | None = None

    def failure(self, wait_ms: int = 0) -> str | None:
        """The last handshake failure seen (waiting up to ``wait_ms`` for news), or None."""
        from zmq.utils.monitor import parse_monitor_message

        while self.monitor.poll(wait_ms):
            wait_ms = 0
            event = parse_monitor_message(self.monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.last = None
            elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.last = REFUSED
            elif (event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  or event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
                # We offered a login and the server takes none, or the other way round. libzmq
                # says so as a mechanism mismatch or, when the peer hangs up before the reason is
                # read, with no detail; a wrong login is told apart (FAILED_AUTH, above).
                self.last = NO_LOGIN_THERE if self.with_login else LOGIN_NEEDED
        return self.last

    def close(self) -> None:
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
