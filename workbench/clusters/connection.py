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

sshd runs every exec request through the login user's shell, which may read start-up files
costing far more than the command (a version manager's init in ~/.bashrc: ~90 ms of CPU, and
a lock that serializes parallel shells). So an ``SshConnection`` keeps long-lived ``sh``
processes on the host (:class:`RemoteShell`), one per command running at a time, and feeds each
command to one of them: the login shell is paid once per remote shell, not once per command.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
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
                  input: str | bytes | None = None, on_output: OutputCallback | None = None,
                  env: Mapping[str, str] | None = None) -> CommandResult:
        """Run a shell script on purpose (``perform``): ``sh -c <script>`` after the prefix.

        ``env`` is set for the script on the host (``env NAME=VALUE ... sh -c <script>``, each
        word quoted), so the script reads ``$NAME`` whatever the host's shell.
        """
        assignments = [f"{name}={value}" for name, value in (env or {}).items()]
        argv = ["env", *assignments, "sh", "-c", script] if assignments else ["sh", "-c", script]
        return self.run(argv, check=check, timeout=timeout, input=input, on_output=on_output)

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


class RemoteShell:
    """One long-lived ``sh`` on a host, reading commands from its stdin (an SSH exec channel).

    Each command runs as ``( eval COMMAND )`` in a subshell, so what it does to its shell (``cd``,
    ``exit``, variables) stays in it; its stdin is ``/dev/null`` or a quoted here-document holding
    the input (never part of a command line); after it the shell prints a fresh random token and
    the exit status on stdout, and the token on stderr. Output before the tokens is the command's.

    A shell is used for one command at a time. It is given up (closed) when a command times out,
    when it died under a command (that command then fails with exit status -1, as a killed login
    shell does), and when output arrives while no command runs (a process the last command left
    in the background still writes to it), so stray output is never taken as a later command's.
    """

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        #: set when this shell must not run another command (closed, or output left over)
        self.dirty = False

    @classmethod
    def open(cls, transport: paramiko.Transport, timeout: float) -> RemoteShell:
        channel = transport.open_session(timeout=timeout)
        # the login shell starts sh and is gone: exec, so no login shell stays between the two
        channel.exec_command("exec sh -s")
        return cls(channel)

    @property
    def usable(self) -> bool:
        channel = self.channel
        return (not self.dirty and not channel.closed and not channel.exit_status_ready() and not channel.eof_received
                and not channel.recv_ready() and not channel.recv_stderr_ready())

    @staticmethod
    def accepts(input: str | bytes | None) -> bool:
        """Whether ``input`` can be a here-document exactly: text, ending with a newline, no NUL.

        Other input (binary, no final newline) goes over an exec channel of its own."""
        if input is None:
            return True
        if isinstance(input, bytes):
            try:
                input = input.decode()
            except UnicodeDecodeError:
                return False
        return input.endswith("\n") and "\x00" not in input

    def script(self, command: str, input: str | bytes | None, token: str) -> bytes:
        text = input.decode() if isinstance(input, bytes) else input
        mark = f"; printf '%s %d\\n' {token} $?; printf '%s\\n' {token} >&2\n"
        if text is None:
            return f"( eval {shlex.quote(command)} ) </dev/null{mark}".encode()
        # a delimiter that no line of the input is: the token makes a clash practically impossible
        delimiter = f"WB_INPUT_{token}"
        while f"\n{delimiter}\n" in "\n" + text:
            delimiter += "_"
        return f"( eval {shlex.quote(command)} ) <<'{delimiter}'{mark}{text}{delimiter}\n".encode()

    def _take(self, ready: Callable[[], bool], receive: Callable[[int], bytes], buffer: bytearray,
              ended: bool) -> bool:
        """Read what one stream has waiting into ``buffer``; whether anything came. Bytes after the
        command's end marker (``ended``) are neither this command's nor the next one's: they make the
        shell dirty."""
        progressed = False
        while ready():
            chunk = receive(65536)
            if ended:
                self.dirty = True
            else:
                buffer.extend(chunk)
            progressed = True
        return progressed

    def run(self, command: str, timeout: float, input: str | bytes | None, on_output: OutputCallback | None,
            host: str) -> CommandResult:
        """Run ``command``; after a timeout or a dead shell the caller must not reuse this shell."""
        token = "wb" + secrets.token_hex(12)
        marker, err_marker = token.encode() + b" ", token.encode() + b"\n"
        status_line = re.compile(re.escape(marker) + rb"(-?\d+)\n")
        channel = self.channel
        channel.sendall(self.script(command, input, token))
        out, err, pending = bytearray(), bytearray(), bytearray()
        fed = 0  # how much of ``out`` went to on_output: never a byte that may begin the marker
        scanned = err_scanned = 0  # how far the markers were looked for
        status: int | None = None
        err_end: int | None = None
        deadline = time.monotonic() + timeout
        while status is None or err_end is None:
            if time.monotonic() > deadline:
                self.close()
                raise CommandError(f"command timed out after {timeout:.0f}s on {host}", command=command,
                                   exit_status=-1, stderr=err.decode(errors="replace")[-2000:], host=host)
            progressed = self._take(channel.recv_ready, channel.recv, out, ended=status is not None)
            progressed = self._take(channel.recv_stderr_ready, channel.recv_stderr, err,
                                    ended=err_end is not None) or progressed
            # only the new bytes (and a marker's length before them) are searched: big outputs stay linear
            if status is None and (found := status_line.search(out, max(0, scanned - len(marker) - 24))):
                status, end = int(found.group(1)), found.start()
                if found.end() != len(out):
                    self.dirty = True
                del out[end:]
            scanned = len(out)
            safe = len(out) if status is not None else max(fed, len(out) - len(marker) + 1)
            if safe > fed:
                _feed_lines(pending, bytes(out[fed:safe]), on_output)
                fed = safe
            if err_end is None and (at := err.find(err_marker, max(0, err_scanned - len(err_marker)))) >= 0:
                if at + len(err_marker) != len(err):
                    self.dirty = True
                err_end = at
                del err[at:]
            err_scanned = len(err)
            if status is not None and err_end is not None:
                break
            if not progressed:
                if channel.exit_status_ready() or channel.closed or channel.eof_received:
                    if channel.recv_ready() or channel.recv_stderr_ready():
                        continue
                    # the shell died under the command (killed, or the session went): it failed
                    self.close()
                    if status is None:
                        if fed < len(out):
                            _feed_lines(pending, bytes(out[fed:]), on_output)
                        status = -1
                    break
                select.select([channel], [], [], 0.5)
        _feed_lines(pending, b"", on_output, final=True)
        return CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"), host)

    def close(self) -> None:
        self.dirty = True
        try:
            self.channel.close()
        except Exception:  # closing a broken channel is best effort
            pass


class SshConnection(Connection):
    """Commands and SFTP over one SSH session (paramiko), key authentication only.

    ``key`` is a paramiko ``PKey`` (a cluster ``Key`` decrypts to one) or ``key_filename`` a key
    file. The host key must be in ``known_hosts`` or be ``trusted_host_key`` (what the provider
    vouches for; it is then saved to ``known_hosts``); anything else raises ``UnknownHostKeyError``.
    A dropped session is reopened on the next command. With ``persistent_shell`` (the default)
    commands go to long-lived remote shells (:class:`RemoteShell`, up to ``max_idle_shells`` kept
    between commands); off, or for input a here-document cannot carry exactly, each command has
    an exec channel (and a login shell) of its own.
    """

    max_idle_shells = 4

    def __init__(self, host: str, port: int = 22, user: str = "root", *, key: paramiko.PKey | None = None,
                 key_filename: str | None = None, known_hosts: str | os.PathLike[str] | None = None,
                 trusted_host_key: str | None = None, prefix: str = "", timeout: float = 600.0,
                 connect_timeout: float = 15.0, connect_attempts: int = 3, persistent_shell: bool = True) -> None:
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
        self.persistent_shell = persistent_shell
        #: idle remote shells of the current session (each is taken by one command at a time)
        self._shells: list[RemoteShell] = []
        self._shells_lock = threading.Lock()

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
        with self._shells_lock:
            shells, self._shells = self._shells, []
        for shell in shells:
            shell.close()
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
        if not self.persistent_shell or not RemoteShell.accepts(input):
            return self._execute_channel(command, timeout, input, on_output)
        shell = self._take_shell()
        try:
            result = shell.run(command, timeout, input, on_output, self.host)
        except BaseException:
            shell.close()  # mid-command: what the shell would print next is unknown
            raise
        self._give_back(shell)
        return result

    def _take_shell(self) -> RemoteShell:
        """An idle remote shell of the current session, or a new one."""
        client = self._ensure_client()
        with self._shells_lock:
            while self._shells:
                shell = self._shells.pop()
                if shell.usable and shell.channel.get_transport() is client.get_transport():
                    return shell
                shell.close()
        import paramiko

        try:
            return RemoteShell.open(self._open_transport(), self.connect_timeout)
        except (paramiko.SSHException, OSError, AttributeError):
            # the session died between the check and the command: reopen once
            with self._lock:
                self._drop()
            return RemoteShell.open(self._open_transport(), self.connect_timeout)

    def _give_back(self, shell: RemoteShell) -> None:
        with self._shells_lock:
            if shell.usable and len(self._shells) < self.max_idle_shells:
                self._shells.append(shell)
                return
        shell.close()

    def _open_transport(self) -> paramiko.Transport:
        """The live transport, after one reconnect if the session died since it was checked."""
        import paramiko

        client = self._ensure_client()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            with self._lock:
                self._drop()
            transport = self._ensure_client().get_transport()
        return transport

    def _execute_channel(self, command: str, timeout: float, input: str | bytes | None,
                         on_output: OutputCallback | None) -> CommandResult:
        """``command`` on an exec channel of its own (the host's login shell runs it)."""
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


__all__ = ["CommandResult", "Connection", "LocalConnection", "RemoteShell", "SshConnection", "SharedConnection", "SessionPool", "format_prefix", "parse_host_key",
           "OutputCallback"]
