"""How commands reach an instance's host: a ``Connection`` interface, over SSH (paramiko) or local.

Commands are argument lists joined with ``shlex`` quoting, so a name or setting can never inject
shell syntax; a deliberate shell script (the ``perform`` task) goes through ``run_shell``, which
hands it to ``sh -c`` as one quoted argument. The configured command prefix (``"sudo "``, or the
seed's ``"sudo /usr/sbin/vzctl exec %(local_id)s "``) is put before every command, with the
instance's fields shell-quoted into it::

    with LocalConnection() as conn:
        conn.run(["echo", "it's; $(not run)"]).stdout     # "it's; $(not run)\\n"

    with SshConnection("10.0.0.5", user="root", key=pkey, known_hosts="~/.workbench/clusters/known_hosts",
                       trusted_host_key="ssh-ed25519 AAAA...") as conn:
        conn.run(["redis-cli", "-p", "6379", "ping"])
        conn.upload("dump.rdb", "/srv/i1/data/dump.rdb")

SSH refuses a host whose key is neither in the known_hosts file nor vouched for by the provider
(``trusted_host_key``, which is then recorded in known_hosts); a changed key is always refused.
"""

from __future__ import annotations

import base64
import logging
import os
import select
import shlex
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from workbench.clusters.errors import CommandError, ConnectionFailed, UnknownHostKeyError

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

#: called with each line of output as it arrives (perform streams into notebook cells this way)
OutputCallback = Callable[[str], None]


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the exact command line sent, its exit status and output."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Self if the command succeeded, else ``CommandError`` with the command and stderr tail."""
        if self.exit_status != 0:
            tail = (self.stderr.strip() or self.stdout.strip())[-2000:]
            # the message keeps the last lines (the cause is usually there); the field keeps more
            short = "\n".join(tail.splitlines()[-3:])[-600:]
            raise CommandError(f"command failed with exit status {self.exit_status} on {self.host}: {short}",
                               command=self.command, exit_status=self.exit_status, stderr=tail, host=self.host)
        return self


def format_prefix(prefix: str, fields: Mapping[str, Any] | None = None) -> str:
    """The command prefix with ``%(field)s`` references replaced by shell-quoted instance fields."""
    if not prefix:
        return ""
    quoted = {k: shlex.quote(str(v)) for k, v in (fields or {}).items()}
    try:
        return prefix % quoted
    except (KeyError, ValueError, TypeError) as exc:
        raise CommandError(f"command prefix {prefix!r} refers to an unknown field: {exc}",
                           command=prefix, exit_status=-1, stderr="", host="") from None


class Connection:
    """Runs commands and moves files on one host; subclasses implement ``_execute``, ``upload``, ``download``.

    ``prefix`` is the already-formatted command prefix (see :func:`format_prefix`); ``timeout`` the
    default seconds a command may take.
    """

    host = "localhost"

    def __init__(self, prefix: str = "", timeout: float = 600.0) -> None:
        self.prefix = prefix
        self.timeout = timeout

    # -- building commands --------------------------------------------------------------------
    def command_line(self, argv: Sequence[str], *, prefix: bool = True) -> str:
        """``argv`` joined with shell quoting, after the prefix: the exact text sent to the shell."""
        if isinstance(argv, str):
            raise TypeError("argv must be a list of arguments; use run_shell() for a shell script")
        line = shlex.join(str(a) for a in argv)
        return (self.prefix + line) if prefix else line

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = None,
            input: str | bytes | None = None, on_output: OutputCallback | None = None,
            prefix: bool = True) -> CommandResult:
        """Run one command given as an argument list (each argument quoted); raise on failure if ``check``."""
        result = self._execute(self.command_line(argv, prefix=prefix), timeout or self.timeout, input, on_output)
        return result.check() if check else result

    def run_shell(self, script: str, *, check: bool = True, timeout: float | None = None,
                  input: str | bytes | None = None, on_output: OutputCallback | None = None) -> CommandResult:
        """Run a shell script on purpose (``perform``): ``sh -c <script>`` after the prefix."""
        return self.run(["sh", "-c", script], check=check, timeout=timeout, input=input, on_output=on_output)

    def _execute(self, command: str, timeout: float, input: str | bytes | None,
                 on_output: OutputCallback | None) -> CommandResult:
        raise NotImplementedError

    # -- files ----------------------------------------------------------------------------------
    def upload(self, local: str | os.PathLike[str], remote: str, mode: int | None = None) -> None:
        raise NotImplementedError

    def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        raise NotImplementedError

    def remove(self, remote: str) -> None:
        """Remove the file ``remote`` if it is there."""
        self.run(["rm", "-f", remote])

    def write_file(self, remote: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write ``content`` to ``remote`` (through a temp file uploaded in one piece)."""
        import tempfile

        data = content.encode() if isinstance(content, str) else content
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(data)
        try:
            self.upload(handle.name, remote, mode)
        finally:
            os.unlink(handle.name)

    def close(self) -> None:
        """Release the connection (idempotent)."""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _feed_lines(buffer: bytearray, chunk: bytes, on_output: OutputCallback | None, final: bool = False) -> None:
    """Pass every complete line of ``buffer + chunk`` to ``on_output`` (the rest too when ``final``)."""
    if on_output is None:
        return
    buffer.extend(chunk)
    while (newline := buffer.find(b"\n")) >= 0:
        on_output(buffer[:newline].decode(errors="replace"))
        del buffer[:newline + 1]
    if final and buffer:
        on_output(buffer.decode(errors="replace"))
        buffer.clear()


class LocalConnection(Connection):
    """Commands run by ``/bin/sh -c`` on this machine; files are copied (the local provider's connection)."""

    host = "localhost"

    def _execute(self, command: str, timeout: float, input: str | bytes | None,
                 on_output: OutputCallback | None) -> CommandResult:
        data = input.encode() if isinstance(input, str) else input
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE if data else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        if data:
            assert process.stdin is not None
            process.stdin.write(data)
            process.stdin.close()
        out, err = bytearray(), bytearray()
        pending = bytearray()
        deadline = time.monotonic() + timeout
        streams = {process.stdout: out, process.stderr: err}
        open_streams = [s for s in streams if s is not None]
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.killpg(process.pid, 9)
                process.wait()
                raise CommandError(f"command timed out after {timeout:.0f}s on {self.host}", command=command,
                                   exit_status=-1, stderr=err.decode(errors="replace")[-2000:], host=self.host)
            ready, _, _ = select.select(open_streams, [], [], min(remaining, 1.0))
            for stream in ready:
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    open_streams.remove(stream)
                    continue
                streams[stream].extend(chunk)
                if stream is process.stdout:
                    _feed_lines(pending, chunk, on_output)
        _feed_lines(pending, b"", on_output, final=True)
        status = process.wait()
        return CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"), self.host)

    def upload(self, local: str | os.PathLike[str], remote: str, mode: int | None = None) -> None:
        shutil.copyfile(local, remote)
        if mode is not None:
            os.chmod(remote, mode)

    def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        shutil.copyfile(remote, local)

    def remove(self, remote: str) -> None:
        Path(remote).unlink(missing_ok=True)


def parse_host_key(line: str) -> paramiko.PKey:
    """A paramiko public key from ``"ssh-ed25519 AAAA... [comment]"`` (a known_hosts/.pub line)."""
    import paramiko

    parts = line.split()
    if len(parts) < 2:
        raise UnknownHostKeyError(f"not a public key line: {line!r}", host="", port=0)
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


class SshConnection(Connection):
    """Commands and SFTP over one SSH session (paramiko), key authentication only.

    ``key`` is a paramiko ``PKey`` (a cluster ``Key`` decrypts to one) or ``key_filename`` a key
    file. The host key must be in ``known_hosts`` or be ``trusted_host_key`` (what the provider
    vouches for; it is then saved to ``known_hosts``); anything else raises ``UnknownHostKeyError``.
    A dropped session is reopened on the next command.
    """

    def __init__(self, host: str, port: int = 22, user: str = "root", *, key: paramiko.PKey | None = None,
                 key_filename: str | None = None, known_hosts: str | os.PathLike[str] | None = None,
                 trusted_host_key: str | None = None, prefix: str = "", timeout: float = 600.0,
                 connect_timeout: float = 15.0, connect_attempts: int = 3) -> None:
        super().__init__(prefix, timeout)
        if key is None and not key_filename:
            raise ConnectionFailed("an SSH key (key or key_filename) is required: only key authentication is used",
                                   host=host, port=port)
        self.host, self.port, self.user = host, port, user
        self.key, self.key_filename = key, key_filename
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else None
        self.trusted_host_key = trusted_host_key
        self.connect_timeout = connect_timeout
        self.connect_attempts = max(1, connect_attempts)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()

    @property
    def host_key_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    # -- session ----------------------------------------------------------------------------------
    def connect(self) -> SshConnection:
        """Open the session now (it is otherwise opened by the first command)."""
        self._ensure_client()
        return self

    def _ensure_client(self) -> paramiko.SSHClient:
        with self._lock:
            client = self._client
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                log.info("ssh %s@%s: session dropped, reconnecting", self.user, self.host_key_name)
                self._drop()
            last: Exception | None = None
            for attempt in range(self.connect_attempts):
                try:
                    self._client = self._open()
                    return self._client
                except UnknownHostKeyError:
                    raise  # never worth retrying, and must never be papered over
                except ConnectionFailed as exc:
                    last = exc
                    time.sleep(min(0.2 * 2 ** attempt, 2.0))
            assert last is not None
            raise last

    def _open(self) -> paramiko.SSHClient:
        import paramiko

        client = paramiko.SSHClient()
        if self.known_hosts is not None and self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        vouched = None
        if self.trusted_host_key:
            vouched = parse_host_key(self.trusted_host_key)
            known = client.get_host_keys().lookup(self.host_key_name)
            if known is not None and vouched.get_name() in known and known[vouched.get_name()] != vouched:
                client.close()
                raise UnknownHostKeyError(
                    f"host key of {self.host_key_name} in {self.known_hosts} differs from the one the provider "
                    f"vouches for: refusing to connect", host=self.host, port=self.port)
            client.get_host_keys().add(self.host_key_name, vouched.get_name(), vouched)
        # an unknown or changed key fails the connection: nothing is ever accepted silently
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, self.port, self.user, pkey=self.key, key_filename=self.key_filename,
                           look_for_keys=False, allow_agent=False, timeout=self.connect_timeout,
                           banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise UnknownHostKeyError(f"host key of {self.host_key_name} changed: refusing to connect",
                                      host=self.host, port=self.port, reason=str(exc)) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise UnknownHostKeyError(f"unknown host key for {self.host_key_name}: not in known_hosts and "
                                          f"not vouched for by the provider", host=self.host, port=self.port) from None
            raise ConnectionFailed(f"ssh to {self.user}@{self.host_key_name} failed: {exc}", host=self.host,
                                   port=self.port, reason=str(exc)) from None
        except (OSError, socket.timeout) as exc:
            client.close()
            raise ConnectionFailed(f"cannot reach {self.host_key_name}: {exc}", host=self.host, port=self.port,
                                   reason=str(exc)) from None
        if vouched is not None and self.known_hosts is not None:
            self._remember_host_key(vouched)
        return client

    def _remember_host_key(self, key: paramiko.PKey) -> None:
        import paramiko

        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        entries = paramiko.HostKeys()
        if self.known_hosts.exists():
            entries.load(str(self.known_hosts))
        existing = entries.lookup(self.host_key_name)
        if existing is None or existing.get(key.get_name()) != key:
            entries.add(self.host_key_name, key.get_name(), key)
            entries.save(str(self.known_hosts))

    def _drop(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # already broken: closing is best effort
                pass
        if self._client is not None:
            self._client.close()
        self._client, self._sftp = None, None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- commands -------------------------------------------------------------------------------
    def _execute(self, command: str, timeout: float, input: str | bytes | None,
                 on_output: OutputCallback | None) -> CommandResult:
        import paramiko

        client = self._ensure_client()
        try:
            channel = client.get_transport().open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, AttributeError):
            # the session died between the check and the command: reopen once
            with self._lock:
                self._drop()
            client = self._ensure_client()
            channel = client.get_transport().open_session(timeout=self.connect_timeout)
        with channel:
            channel.exec_command(command)
            if input is not None:
                channel.sendall(input.encode() if isinstance(input, str) else input)
            channel.shutdown_write()
            out, err, pending = bytearray(), bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    channel.close()
                    raise CommandError(f"command timed out after {timeout:.0f}s on {self.host}", command=command,
                                       exit_status=-1, stderr=err.decode(errors="replace")[-2000:], host=self.host)
                progressed = False
                while channel.recv_ready():
                    chunk = channel.recv(65536)
                    out.extend(chunk)
                    _feed_lines(pending, chunk, on_output)
                    progressed = True
                while channel.recv_stderr_ready():
                    err.extend(channel.recv_stderr(65536))
                    progressed = True
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if not progressed:
                    select.select([channel], [], [], 0.5)
            status = channel.recv_exit_status()
        _feed_lines(pending, b"", on_output, final=True)
        return CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"), self.host)

    # -- files ----------------------------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            client = self._ensure_client()
            if self._sftp is None:
                self._sftp = client.open_sftp()
            return self._sftp

    def upload(self, local: str | os.PathLike[str], remote: str, mode: int | None = None) -> None:
        # one SFTP channel per session, used by one thread at a time
        with self._lock:
            sftp = self._sftp_client()
            sftp.put(str(local), remote)
            if mode is not None:
                sftp.chmod(remote, mode)

    def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        with self._lock:
            self._sftp_client().get(remote, str(local))

    def remove(self, remote: str) -> None:
        # over SFTP: no login shell on the host for it; through the prefix when the login user may not
        try:
            with self._lock:
                self._sftp_client().remove(remote)
        except FileNotFoundError:
            pass
        except OSError:
            super().remove(remote)

    @property
    def session_key(self) -> tuple[Any, ...]:
        """What identifies the SSH session: connections with equal keys can share one."""
        key_id = self.key.get_fingerprint() if self.key is not None else None
        return (self.host, self.port, self.user, self.key_filename, key_id, str(self.known_hosts),
                self.trusted_host_key)


class SharedConnection(Connection):
    """A view of another connection with its own prefix; closing it leaves the session open.

    The task runner keeps one SSH session per host and hands out these views, so the steps of a
    task (and parallel tasks on one host) do not each pay for a key exchange.
    """

    def __init__(self, session: Connection, prefix: str = "", timeout: float | None = None) -> None:
        super().__init__(prefix, timeout or session.timeout)
        self.session = session
        self.host = session.host

    def _execute(self, command: str, timeout: float, input: str | bytes | None,
                 on_output: OutputCallback | None) -> CommandResult:
        return self.session._execute(command, timeout, input, on_output)

    def upload(self, local: str | os.PathLike[str], remote: str, mode: int | None = None) -> None:
        self.session.upload(local, remote, mode)

    def download(self, remote: str, local: str | os.PathLike[str]) -> None:
        self.session.download(remote, local)

    def remove(self, remote: str) -> None:
        self.session.remove(remote)


class SessionPool:
    """Keeps one SSH session per (host, port, user, key...) and hands out ``SharedConnection`` views.

    ``share(conn)`` returns a view of the pooled session equal to ``conn`` (``conn`` itself becomes
    the pooled one the first time); local connections are returned as they are. ``close()`` ends
    every session.
    """

    def __init__(self) -> None:
        self._sessions: dict[tuple[Any, ...], SshConnection] = {}
        self._lock = threading.Lock()

    def share(self, conn: Connection, tag: str = "") -> Connection:
        """A view of the pooled session equal to ``conn``; a different ``tag`` gets its own session
        (e.g. one per pool entry, so entries on one sshd still work in parallel)."""
        if not isinstance(conn, SshConnection):
            return conn
        with self._lock:
            session = self._sessions.setdefault((*conn.session_key, tag), conn)
        return SharedConnection(session, conn.prefix, conn.timeout)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()


__all__ = ["CommandResult", "Connection", "LocalConnection", "SshConnection", "SharedConnection", "SessionPool", "format_prefix", "parse_host_key",
           "OutputCallback"]
