"""Agents and brokers: the server side of the domain.

Every host runs an agent, which starts and supervises that host's database processes. A broker
is an agent that also holds the domain's state (peers, processes, descriptions; see ``broker``),
accepts management clients, agents and other brokers over TLS, checks the domain credentials,
routes commands to the agent that must run them, and streams every change to subscribed clients.

An agent joins through a broker (``peer=``), sends heartbeats, and reports what it runs; a broker
that hears nothing from an agent for ``HEARTBEAT_TIMEOUT`` seconds declares it (and its processes)
gone. An agent that loses its broker reconnects, to another broker it has heard of if its own
does not answer, and rejoins with the processes still running. An agent started again on the same
state dir adopts the processes it had started that still run (``ProcessSupervisor.recover``).
A broker started with ``peer=`` links to that broker and replicates the domain with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from workbench.domain.broker import HEARTBEAT_SECONDS, HEARTBEAT_TIMEOUT, DomainState
from workbench.domain.keys import DatabaseKeys
from workbench.domain.errors import LoginBusy, LoginThrottled
from workbench.domain.logins import LoginThrottle, PasswordHasher
from workbench.domain.model import PeerRecord, ProcessRecord
from workbench.domain.protocol import DEFAULT_PORT, Message, ProtocolError
from workbench.domain.requests import (
    AUTO,
    QuiesceProcess,
    StartProcess,
    StopProcess,
    error_reply,
    ok_reply,
    parse_request,
    reply_error,
)
from workbench.domain.supervisor import ProcessSupervisor
from workbench.domain.transport import (
    Connection,
    KnownBrokers,
    TlsIdentity,
    TlsServer,
    TransportError,
    connect,
)
from workbench.errors import AuthenticationError, ConfigurationError, DomainError
from workbench.servers import Address, ServerLifecycle

log = logging.getLogger(__name__)

#: a password longer than this is cut before hashing (scrypt's cost must not grow with what a stranger sends)
MAX_PASSWORD_LENGTH = 1024
#: how long a connection may take from its first byte to a verified login (TLS handshake included)
LOGIN_SECONDS = 5.0


class Credentials:
    """The domain user and a salted scrypt hash of its password, kept in the state dir (never the password)."""

    def __init__(self, user: str, salt: bytes, digest: bytes) -> None:
        self.user, self.salt, self.digest = user, salt, digest

    @staticmethod
    def _hash(password: str, salt: bytes) -> bytes:
        return hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)

    @classmethod
    def create(cls, user: str, password: str) -> "Credentials":
        salt = secrets.token_bytes(16)
        return cls(user, salt, cls._hash(password, salt))

    def verify(self, user: str | None, password: str | None) -> bool:
        # Hash even for a wrong user, so timing does not tell which part was wrong.
        candidate = self._hash((password or "")[:MAX_PASSWORD_LENGTH], self.salt)
        return hmac.compare_digest(candidate, self.digest) and hmac.compare_digest((user or "").encode(),
                                                                                   self.user.encode())

    def save(self, path: Path) -> None:
        data = {"user": self.user, "salt": self.salt.hex(), "scrypt": self.digest.hex()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            json.dump(data, stream)


class Agent(ServerLifecycle):
    """An agent (``broker=False``) or a broker (``broker=True``) of a domain.

    ::

        with Agent(port=0, state_dir=tmp, domain_user="domain", domain_password="bird", broker=True) as broker:
            d = Domain(broker.address, "domain", "bird")
    """

    def __init__(self, port: int = DEFAULT_PORT, state_dir: str | os.PathLike[str] = "~/.workbench/agent",
                 domain_user: str = "domain", domain_password: str = "", broker: bool = False,
                 peer: str | None = None, hostname: str = "localhost", host: str = "127.0.0.1",
                 tags: dict[str, str] | None = None) -> None:
        if not domain_password:
            raise ConfigurationError("a domain password is required")
        super().__init__()
        if not broker and not peer:
            raise ConfigurationError("an agent that is not a broker needs --peer (a broker to join)")
        self.state_dir = Path(state_dir).expanduser()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.host = host
        self.hostname = hostname
        self.is_broker = broker
        self.broker_address = peer
        self.tags = dict(tags or {})
        self.credentials = Credentials.create(domain_user, domain_password)
        self.credentials.save(self.state_dir / "domain-credentials.json")
        self.password = domain_password  # an agent presents it to its broker, a broker to its peer brokers
        self.address = Address("", "", None)  # host:port once started
        self.server: TlsServer | None = None
        self.supervisor: ProcessSupervisor | None = None
        self.state: DomainState | None = None
        self.hasher = PasswordHasher()
        self.throttle = LoginThrottle()
        self._link: BrokerLink | None = None

    def __repr__(self) -> str:
        where = self.address or f"{self.hostname}:{self.port} (not started)"
        return f"<Agent {where}{', broker' if self.is_broker else ''}>"

    # -- lifecycle (start(), stop() and serve_forever() are ServerLifecycle's) ------------------
    def _start(self) -> None:
        identity = TlsIdentity.load_or_create(self.state_dir / "tls", self.hostname)
        self.server = TlsServer(identity, self._handle_connection, host=self.host, port=self.port,
                                login_timeout=LOGIN_SECONDS)
        self.server.start()
        self.port = self.server.port
        self.address = Address.tcp(self.hostname, self.port)
        self.supervisor = ProcessSupervisor(self.address, self.hostname, self.state_dir, self._process_changed,
                                            bind_host=self.host, keys=DatabaseKeys(self.password))
        me = PeerRecord(self.address, self.hostname, self.port, "broker" if self.is_broker else "agent", self.tags)
        self.supervisor.recover()  # before joining: the join reports what still runs
        if self.is_broker:
            self.state = DomainState(me, self)
            for record in self.supervisor.running():
                self.state.update_process(record)
            self.state.start([self.broker_address] if self.broker_address else [])
        elif self.broker_address:
            self._link = BrokerLink(self, me)
            self._link.start()
        log.info("%s %s started (state in %s)", "broker" if self.is_broker else "agent", self.address, self.state_dir)

    def _stop(self) -> None:
        """Stop the processes this peer runs, leave the domain, close every connection."""
        if self.state is not None:
            self.state.reconciler.stop()  # first: it must not start again what we are stopping
        if self.supervisor is not None:
            self.supervisor.stop_all()
        if self._link is not None:
            self._link.stop()
        if self.state is not None:
            self.state.stop()
        if self.server is not None:
            self.server.stop()

    # -- local processes ------------------------------------------------------------------------
    def _process_changed(self, record: ProcessRecord) -> None:
        if self.state is not None:
            self.state.update_process(record)
        if self._link is not None:
            self._link.report(record)

    def run_command(self, command: Message) -> Message:
        """Execute a command on this peer (from our broker, or from ourselves as a broker)."""
        handlers = {StartProcess.TYPE: self._start_process, StopProcess.TYPE: self._stop_process,
                    QuiesceProcess.TYPE: self._quiesce_process}
        try:
            handler = handlers.get(command.get("Type", ""))
            if handler is None:
                raise DomainError("unknown command", type=command.get("Type"))
            return handler(parse_request(command))
        except DomainError as exc:
            return error_reply(exc)

    def _start_process(self, request: StartProcess) -> Message:
        initialize = None if request.initialize == AUTO else request.initialize is True
        # A description's SM without an archive dir keeps its archive in this agent's state dir.
        archive = request.archive or (str(self.state_dir / "archives" / request.database)
                                      if initialize is None else None)
        record = self._require_supervisor().start(
            request.database, request.process_type, archive=archive, initialize=initialize,
            primary=request.primary, standby=request.standby, options=list(request.options))
        return ok_reply(record.to_message())

    def _stop_process(self, request: StopProcess) -> Message:
        self._require_supervisor().stop(request.process, kill=request.kill is True)
        return ok_reply()

    def _quiesce_process(self, request: QuiesceProcess) -> Message:
        return ok_reply(self._require_supervisor().quiesce(request.process, request.quiesced).to_message())

    def _require_supervisor(self) -> ProcessSupervisor:
        assert self.supervisor is not None  # commands arrive only once start() has made it
        return self.supervisor

    # -- connections (brokers only accept clients and agents) -----------------------------------
    def _login(self, conn: Connection, hello: Message) -> bool:
        """Check a <Connect>'s credentials, within the hashing and per-address bounds; answer a refusal."""
        address = conn.peer_host
        wait = self.throttle.wait_needed(address)
        if wait > 0:
            refusal = LoginThrottled(f"too many failed logins from {address}; retry in {wait:.1f} s",
                                     retry_after=round(wait, 2))
            conn.send(error_reply(refusal, tag="Error", Code="throttled"))
            return False
        try:
            verified = self.hasher.check(lambda: self.credentials.verify(hello.get("User"), hello.get("Password")))
        except LoginBusy as exc:
            conn.send(error_reply(exc, tag="Error", Code="busy"))
            return False
        if not verified:
            self.throttle.failed(address)
            conn.send(error_reply(AuthenticationError("wrong domain user or password"), tag="Error",
                                  Code="authentication"))
            return False
        self.throttle.succeeded(address)
        conn.mark_authenticated()
        return True

    def _handle_connection(self, conn: Connection) -> None:
        hello = conn.receive(timeout=LOGIN_SECONDS)  # the server closes it at its login deadline anyway
        if hello is None:
            return
        if hello.tag == "Locate" and self.state is not None:
            # Database clients ask for a TE without domain credentials (as SQL clients ask a
            # broker): they only learn an endpoint, and the TE checks their database user.
            conn.send(self.state.handlers.locate(hello.require("Database")))
            return
        if hello.tag != "Connect":
            conn.send(error_reply(ProtocolError("expected <Connect>"), tag="Error", Code="protocol"))
            return
        if not self._login(conn, hello):
            return
        if self.state is None:
            conn.send(error_reply(DomainError("this agent is not a broker"), tag="Error", Code="not-a-broker"))
            return
        role = hello.get("Role", "client")
        conn.send(Message.make("Connected", Broker=self.address))
        if role == "agent":
            self.state.serve_agent(conn)
        elif role == "broker":
            self.state.serve_broker(conn, dialed=False)
        else:
            self.state.serve_client(conn)


class BrokerLink:
    """An agent's connection to its broker: join, heartbeats, commands, reconnects."""

    def __init__(self, agent: Agent, me: PeerRecord) -> None:
        self.agent = agent
        self.me = me
        self.conn: Connection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"broker-link-{me.id}", daemon=True)
        self.known_brokers = KnownBrokers(agent.state_dir / "known_brokers")
        self.joined = threading.Event()
        # Brokers to try, ours first; the others are learned from <Brokers> and used when ours is gone.
        self.brokers: list[str] = [agent.broker_address] if agent.broker_address else []
        self.current = self.brokers[0] if self.brokers else ""

    def start(self) -> None:
        self._thread.start()
        if not self.joined.wait(15.0):
            raise DomainError("could not join the domain through the broker", broker=self.agent.broker_address)

    def stop(self) -> None:
        self._stop.set()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(10)

    def report(self, record: ProcessRecord) -> None:
        conn = self.conn
        if conn is not None:
            try:
                conn.send(Message.make("ProcessUpdate", record.to_message()))
            except (TransportError, OSError):
                pass  # the rejoin after reconnecting reports the current state

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._session()
                backoff = 0.2
            except AuthenticationError as exc:
                log.error("broker refused this agent: %s", exc)
                return
            except (TransportError, ProtocolError, OSError) as exc:
                if self._stop.is_set():
                    return  # stop() closed the connection under the session: not a fault
                log.warning("link to broker %s: %s; reconnecting", self.current, exc)
                self._next_broker()
            self.conn = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _next_broker(self) -> None:
        if len(self.brokers) > 1:
            self.current = self.brokers[(self.brokers.index(self.current) + 1) % len(self.brokers)] \
                if self.current in self.brokers else self.brokers[0]

    def _session(self) -> None:
        conn = connect(self.current, known_brokers=self.known_brokers, timeout=5.0)
        self.conn = conn
        try:
            reply = conn.request(Message.make("Connect", Role="agent", User=self.agent.credentials.user,
                                              Password=self.agent.password))
            if reply.tag != "Connected":
                refused = reply_error(reply, broker=self.current)
                if isinstance(refused, (LoginThrottled, LoginBusy)):  # passing: try again later
                    raise TransportError(refused.message, address=self.current)
                raise AuthenticationError(refused.message if refused else "refused", broker=self.current)
            running = self.agent.supervisor.running() if self.agent.supervisor else []
            conn.send(Message.make("Join", self.me.to_message(), *(r.to_message() for r in running)))
            self.joined.set()
            beat = threading.Thread(target=self._heartbeat, args=(conn,), daemon=True)
            beat.start()
            while not self._stop.is_set():
                # The broker beats every second: silence past the timeout means it is frozen or cut off.
                command = conn.receive(timeout=HEARTBEAT_TIMEOUT)
                if command is None:
                    return
                if command.tag == "Command":
                    threading.Thread(target=self._execute, args=(conn, command), daemon=True).start()
                elif command.tag == "Brokers":
                    learned = [b.require("Address") for b in command.find("Broker")]
                    self.brokers = [self.current, *(b for b in learned if b != self.current)]
        finally:
            conn.close()

    def _execute(self, conn: Connection, command: Message) -> None:
        response = self.agent.run_command(command)
        response.attrs["Id"] = command.require("Id")
        try:
            conn.send(response)
        except (TransportError, OSError):
            pass

    def _heartbeat(self, conn: Connection) -> None:
        while not self._stop.is_set() and not conn.closed:
            try:
                conn.send(Message.make("Heartbeat", Time=f"{time.time():.3f}"))
            except (TransportError, OSError):
                return
            self._stop.wait(HEARTBEAT_SECONDS)
