"""Connections: local and SSH (real sshd, key auth, pinned host keys), quoting, prefix, timeouts, SFTP."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from workbench.clusters.connection import LocalConnection, SshConnection, format_prefix
from workbench.clusters.errors import CommandError, ConnectionFailed, UnknownHostKeyError
from workbench.clusters.models import Key
from workbench.ports import free_port

HOSTILE = ["it's", "a b", "$(touch {canary})", "`touch {canary}`", "; touch {canary}", "x && touch {canary}",
           "| touch {canary}", "\"quoted\"", "$HOME", "back\\slash", "new\nline", "*"]


def host_key_line(ssh_server) -> str:
    return " ".join(Path(f"{ssh_server.host_key_path}.pub").read_text().split()[:2])


@pytest.fixture
def ssh_connection(ssh_server, tmp_path):
    conn = SshConnection(ssh_server.host, ssh_server.port, ssh_server.username,
                         key_filename=str(ssh_server.client_key_path), known_hosts=tmp_path / "known_hosts",
                         trusted_host_key=host_key_line(ssh_server), timeout=30)
    yield conn
    conn.close()


@pytest.fixture(params=["local", "ssh"])
def connection(request, tmp_path):
    if request.param == "local":
        conn = LocalConnection(timeout=30)
    else:
        conn = request.getfixturevalue("ssh_connection")
    yield conn
    conn.close()


def test_arguments_are_quoted_so_names_cannot_inject(connection, tmp_path):
    canary = tmp_path / "injected"
    args = [arg.format(canary=canary) for arg in HOSTILE]
    result = connection.run(["printf", "%s\\0", *args])
    assert result.stdout.split("\0")[:-1] == args
    assert not canary.exists()
    with pytest.raises(TypeError):
        connection.run(f"echo {args[2]}")  # a plain string is never taken as a command line


def test_prefix_is_honoured_and_its_fields_are_quoted(connection, tmp_path):
    canary = tmp_path / "prefix-injected"
    connection.prefix = format_prefix("env WB_PREFIX=%(name)s ", {"name": f"db; touch {canary}"})
    assert connection.run(["sh", "-c", 'printf %s "$WB_PREFIX"']).stdout == f"db; touch {canary}"
    assert connection.run_shell('echo "prefixed: $WB_PREFIX"').stdout.startswith("prefixed: db;")
    assert not canary.exists()
    assert connection.command_line(["ls", "a b"]).startswith("env WB_PREFIX=")
    with pytest.raises(CommandError):
        format_prefix("sudo %(nosuch)s ", {"name": "x"})


def test_failures_timeouts_input_and_streamed_output(connection):
    with pytest.raises(CommandError) as info:
        connection.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert info.value.fields["exit_status"] == 3 and "oops" in info.value.fields["stderr"]
    assert not connection.run(["false"], check=False).ok
    with pytest.raises(CommandError) as info:
        connection.run(["sleep", "20"], timeout=0.5)
    assert "timed out" in info.value.message
    assert connection.run(["cat"], input="from stdin\n").stdout == "from stdin\n"
    lines: list[str] = []
    connection.run_shell("for i in 1 2 3; do echo line $i; done; printf tail", on_output=lines.append)
    assert lines == ["line 1", "line 2", "line 3", "tail"]


def test_upload_download_and_write_file(connection, tmp_path):
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 100)
    connection.upload(source, str(remote_dir / "copy.bin"), mode=0o600)
    assert (remote_dir / "copy.bin").read_bytes() == source.read_bytes()
    assert (remote_dir / "copy.bin").stat().st_mode & 0o777 == 0o600
    connection.download(str(remote_dir / "copy.bin"), tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    connection.write_file(str(remote_dir / "text"), "hello\n")
    assert connection.run(["cat", str(remote_dir / "text")]).stdout == "hello\n"


def test_vouched_host_key_is_pinned_in_known_hosts(ssh_server, tmp_path):
    known = tmp_path / "known_hosts"
    with SshConnection(ssh_server.host, ssh_server.port, ssh_server.username,
                       key_filename=str(ssh_server.client_key_path), known_hosts=known,
                       trusted_host_key=host_key_line(ssh_server)) as conn:
        assert conn.run(["echo", "ok"]).stdout == "ok\n"
    assert host_key_line(ssh_server).split()[1] in known.read_text()
    # later connections need nothing but the known_hosts file
    with SshConnection(ssh_server.host, ssh_server.port, ssh_server.username,
                       key_filename=str(ssh_server.client_key_path), known_hosts=known) as conn:
        assert conn.run(["true"]).ok


def test_unknown_or_changed_host_keys_are_refused(ssh_server, tmp_path):
    common = dict(key_filename=str(ssh_server.client_key_path), connect_attempts=1)
    with pytest.raises(UnknownHostKeyError):
        SshConnection(ssh_server.host, ssh_server.port, ssh_server.username, known_hosts=tmp_path / "empty",
                      **common).connect()
    other = paramiko.Ed25519Key.from_private_key_file(str(ssh_server.client_key_path))
    impostor = f"{other.get_name()} {other.get_base64()}"
    with pytest.raises(UnknownHostKeyError):
        SshConnection(ssh_server.host, ssh_server.port, ssh_server.username, known_hosts=tmp_path / "k2",
                      trusted_host_key=impostor, **common).connect()
    # a known_hosts entry that disagrees with the vouched key: refused, and the file is unchanged
    known = tmp_path / "k3"
    entries = paramiko.HostKeys()
    entries.add(f"[{ssh_server.host}]:{ssh_server.port}", other.get_name(), other)
    entries.save(str(known))
    before = known.read_text()
    with pytest.raises(UnknownHostKeyError):
        SshConnection(ssh_server.host, ssh_server.port, ssh_server.username, known_hosts=known,
                      trusted_host_key=host_key_line(ssh_server), **common).connect()
    with pytest.raises(UnknownHostKeyError):
        SshConnection(ssh_server.host, ssh_server.port, ssh_server.username, known_hosts=known, **common).connect()
    assert known.read_text() == before


def test_login_failures_are_clear(ssh_server, tmp_path):
    stranger = Key.create("stranger", passphrase="p")
    with pytest.raises(ConnectionFailed) as info:
        SshConnection(ssh_server.host, ssh_server.port, ssh_server.username, key=stranger.paramiko_key("p"),
                      known_hosts=tmp_path / "k", trusted_host_key=host_key_line(ssh_server),
                      connect_attempts=1).connect()
    assert info.value.fields["port"] == ssh_server.port
    closed = free_port()
    with pytest.raises(ConnectionFailed) as info:
        SshConnection("127.0.0.1", closed, "root", key=stranger.paramiko_key("p"), known_hosts=tmp_path / "k",
                      connect_attempts=2, connect_timeout=2).connect()
    assert info.value.fields["port"] == closed
    with pytest.raises(ConnectionFailed):
        SshConnection("127.0.0.1", 22, "root")  # no key: password logins are never tried


def test_stored_key_logs_in_and_a_dropped_session_reconnects(ssh_server, tmp_path):
    key = Key.create("cluster-key", passphrase="master")
    authorized = Path(ssh_server.authorized_keys_path)
    original = authorized.read_text()
    authorized.write_text(original + key.public + "\n")
    try:
        with SshConnection(ssh_server.host, ssh_server.port, ssh_server.username, key=key.paramiko_key("master"),
                           known_hosts=tmp_path / "k", trusted_host_key=host_key_line(ssh_server)) as conn:
            assert conn.run(["echo", "first"]).stdout == "first\n"
            conn._client.get_transport().close()  # the network drops the session
            assert conn.run(["echo", "second"]).stdout == "second\n"
    finally:
        authorized.write_text(original)


def remote_shell_pid(conn) -> str:
    """The pid of the shell that runs the command (the parent of the command's own shell)."""
    return conn.run(["sh", "-c", "ps -o ppid= -p $PPID"]).stdout.strip()


def test_ssh_commands_share_a_remote_shell_which_survives_what_they_do_to_it(ssh_connection):
    first = remote_shell_pid(ssh_connection)
    assert ssh_connection.run(["sh", "-c", "exit 7"], check=False).exit_status == 7
    ssh_connection.run_shell("cd /; export WB_LEAK=1; umask 077")
    assert ssh_connection.run_shell('printf %s "$PWD:${WB_LEAK-unset}"').stdout != "/:1"
    assert remote_shell_pid(ssh_connection) == first  # one login shell for all of them
    # no trailing newline, no newline at all, a line that looks like an end marker: exact output
    assert ssh_connection.run(["printf", "%s", "no newline"]).stdout == "no newline"
    assert ssh_connection.run(["printf", ""]).stdout == ""
    assert ssh_connection.run(["printf", "wb0 0\\nrest"]).stdout == "wb0 0\nrest"
    result = ssh_connection.run(["sh", "-c", "printf out; printf err >&2; exit 2"], check=False)
    assert (result.stdout, result.stderr, result.exit_status) == ("out", "err", 2)


def test_ssh_input_reaches_the_command_exactly(ssh_connection):
    tricky = "line one\nWB_INPUT_x\n'quotes' \"and\" $HOME `x`\n\\back\n"
    assert ssh_connection.run(["cat"], input=tricky).stdout == tricky
    # not a here-document's shape (no final newline, binary): an exec channel carries it as is
    assert ssh_connection.run(["cat"], input="no final newline").stdout == "no final newline"
    assert ssh_connection.run(["od", "-An", "-tx1"], input=b"\x00\xff").stdout.split() == ["00", "ff"]
    # a command that reads no input still ends, and the next one gets its own
    assert ssh_connection.run(["true"], input="ignored\n").ok
    assert ssh_connection.run(["cat"], input="second\n").stdout == "second\n"


def test_ssh_a_shell_killed_or_hung_by_a_command_is_replaced(ssh_connection):
    first = remote_shell_pid(ssh_connection)
    result = ssh_connection.run(["sh", "-c", "echo before; kill -KILL $(ps -o ppid= -p $PPID)"], check=False)
    assert result.exit_status == -1 and not result.ok and result.stdout == "before\n"
    second = remote_shell_pid(ssh_connection)
    assert second != first
    with pytest.raises(CommandError) as info:
        ssh_connection.run(["sleep", "20"], timeout=0.5)
    assert "timed out" in info.value.message
    assert ssh_connection.run(["echo", "after"]).stdout == "after\n"
    assert remote_shell_pid(ssh_connection) != second


def test_ssh_output_left_behind_never_reaches_a_later_command(ssh_connection):
    # a background process keeps writing to the shell after its command is over
    ssh_connection.run_shell("(sleep 0.3; echo stray; echo stray-err >&2) &")
    import time

    time.sleep(0.8)
    result = ssh_connection.run(["echo", "next"])
    assert (result.stdout, result.stderr) == ("next\n", "")


def test_ssh_commands_run_in_parallel_on_one_session(ssh_connection):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: ssh_connection.run(["sh", "-c", f"sleep 0.2; echo {n}"]).stdout,
                                range(8)))
    assert results == [f"{n}\n" for n in range(8)]
    assert len(ssh_connection._shells) <= ssh_connection.max_idle_shells


def test_ssh_without_persistent_shells_each_command_has_its_login_shell(ssh_server, tmp_path):
    with SshConnection(ssh_server.host, ssh_server.port, ssh_server.username,
                       key_filename=str(ssh_server.client_key_path), known_hosts=tmp_path / "known_hosts",
                       trusted_host_key=host_key_line(ssh_server), persistent_shell=False) as conn:
        # the command's shell is the login shell's exec, a child of sshd itself
        assert conn.run(["sh", "-c", "ps -o comm= -p $PPID"]).stdout.strip() == "sshd"
        assert conn.run(["cat"], input="x\n").stdout == "x\n"


def test_ssh_big_output_and_input_pass_whole(ssh_connection):
    big = ssh_connection.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"]).stdout
    assert big == "x" * 3_000_000
    text = "".join(f"line {n}\n" for n in range(20000))
    assert ssh_connection.run(["cat"], input=text).stdout == text
