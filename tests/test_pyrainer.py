"""The real pyrainer (PyPI ``pyrainer``) against workbench's commits server: every ``RainerClient``
method and every subcommand of ``python -m pyrainer.rainer``, as their users run them.

pyrainer is not ours: nothing of it is patched or wrapped, with one exception explained at
:func:`pyrainer_cli`: its ``os.getlogin()``, which cannot work without a login session.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.error

import pytest

from workbench.commits import Commit, payload_serialization
from workbench.testing.commits import CommitServeProcess
from workbench.testing.commits_servers import rainer, rainer_zk, start_rainer  # noqa: F401

pyrainer_http = pytest.importorskip("pyrainer.http", reason="the test extra installs pyrainer")
RainerClient = pyrainer_http.RainerClient

#: the login name the pyrainer CLI runs under (see pyrainer_cli)
LOGIN = "ci-author"
#: what a seeded commit's comment says: Rainer stores header values verbatim, so it stays as sent
PERCENT_COMMENT = "raise 10%20 then 5%41"

# pyrainer calls os.getlogin() for the author of commit-value, prepare, edit and uncommit.
# getlogin(3) answers only inside a login session: it reads /proc/self/loginuid, then utmp for the
# controlling terminal. CI has neither (loginuid is unset, there is no terminal), and `script`
# does not help, since it writes no utmp entry; LOGNAME is not read by os.getlogin at all. So,
# only where os.getlogin() fails, this stands in getpass.getuser(), which reads LOGNAME, as
# Python's documentation recommends; on a developer's terminal pyrainer runs untouched.
_LOGIN_SHIM = textwrap.dedent("""
    import getpass, os, runpy, sys
    try:
        os.getlogin()
    except OSError:
        os.getlogin = getpass.getuser
    sys.argv[0] = "pyrainer.rainer"
    runpy.run_module("pyrainer.rainer", run_name="__main__", alter_sys=True)
""")


def pyrainer_cli(url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None,
                 login: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m pyrainer.rainer --url URL ARGS`` as a user runs it (``login``: with the
    os.getlogin stand-in above, for the commands that name an author)."""
    command = [sys.executable, "-c", _LOGIN_SHIM] if login else [sys.executable, "-m", "pyrainer.rainer"]
    environment = {**os.environ, "LOGNAME": LOGIN, "USER": LOGIN, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([*command, "--url", url, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=environment)


def meta(key: str, version: int, comment: str = "rofl", **extra):
    return {"key": key, "version": version, "author": "gian", "comment": comment, **extra}


@pytest.fixture
def client(rainer):
    return RainerClient(rainer.url)


@pytest.fixture
def seeded(client):
    """hey at versions 1 and 2, foo at 1 then deleted (version 2), through pyrainer itself."""
    client.post_commit(meta("hey", 1, comment="first"), '{"hey":"what"}')
    client.post_commit(meta("hey", 2, comment=PERCENT_COMMENT), '{"hey":"whatsit"}')
    client.post_commit(meta("foo", 1), '{"a":1}')
    client.post_commit(meta("foo", 2, comment="gone", empty=True), "")
    return client


# -- RainerClient ---------------------------------------------------------------------------------
def test_the_seeds_python_session_on_a_served_bytes_server(tmp_path):
    """The seed's example verbatim (ported to print()), on `workbench commits serve --payload bytes`."""
    server = CommitServeProcess(tmp_path / "serve", f"sqlite:///{tmp_path / 'c.db'}",
                                extra=["--payload", "bytes"]).start()
    try:
        client = RainerClient(server.url)
        client.post_commit({"key": "hey", "version": 1, "author": "gian", "comment": "first"}, "old value")
        lines = []
        commits = client.list_full()
        for key in sorted(commits.keys()):
            version = commits[key].version
            lines.append("%s [current version = %s]" % (key, str(version)))
        hey = client.get_commit("hey")
        lines.append("Commit version %s = %s" % (hey.meta["version"], hey.value))
        client.post_commit({"key": "hey", "version": 2, "author": "sue", "comment": "rofl"}, "new value")
        assert lines == ["hey [current version = 1]", "Commit version 1 = b'old value'"]
        assert client.get_value("hey") == b"new value"
    finally:
        server.stop()


@pytest.mark.parametrize("payload, accepted", [("json", False), ("yaml", True), ("bytes", True),
                                               ("properties", True)])
def test_the_seeds_new_value_by_payload_type(tmp_path, payload, accepted):
    server = start_rainer(tmp_path / payload, serialization=payload_serialization(payload))
    try:
        client = RainerClient(server.url)
        if accepted:
            assert client.post_commit(meta("hey", 1), "new value")["version"] == 1
            assert client.get_value("hey") == b"new value"
        else:  # Rainer's stock server takes JSON, and so does ours by default
            with pytest.raises(urllib.error.HTTPError) as caught:
                client.post_commit(meta("hey", 1), "new value")
            assert caught.value.code == 400 and b"invalid JSON" in caught.value.read()
    finally:
        server.stop()


def test_reads_list_list_full_get_commit_get_value_get_metadata_commit_uri(rainer, seeded):
    client = seeded
    assert client.commit_uri("hey") == rainer.url + "/hey"
    assert client.commit_uri("hey", 2) == rainer.url + "/hey/2"

    listing = client.list()
    assert sorted(listing) == ["hey"]
    assert listing["hey"]["version"] == 2 and listing["hey"]["empty"] is False
    assert listing["hey"]["comment"] == PERCENT_COMMENT
    everything = client.list(all=True)
    assert sorted(everything) == ["foo", "hey"] and everything["foo"]["empty"] is True

    full = client.list_full()
    assert sorted(full) == ["hey"] and full["hey"].value == b'{"hey":"whatsit"}' and full["hey"].version == 2
    assert base64.b64decode(full["hey"].meta["payload_base64"]) == b'{"hey":"whatsit"}'
    # pyrainer's list_full(all=True) reads payload_base64 of every entry; Rainer's servlet (and
    # ours) leaves it out of a tombstone, which has no payload, so pyrainer cannot list one
    with pytest.raises(KeyError):
        client.list_full(all=True)

    hey = client.get_commit("hey")
    assert (hey.key, hey.version, hey.author, hey.comment, hey.empty) == ("hey", 2, "gian", PERCENT_COMMENT, False)
    assert hey.value == b'{"hey":"whatsit"}' and client.get_commit("hey", 1).value == b'{"hey":"what"}'
    assert client.get_value("hey") == b'{"hey":"whatsit"}' and client.get_value("hey", 1) == b'{"hey":"what"}'
    assert client.get_metadata("hey", 1) == {"author": "gian", "key": "hey", "version": 1, "comment": "first",
                                             "mtime": client.get_metadata("hey", 1)["mtime"], "empty": False}

    # a tombstone is a commit: its metadata, and an empty payload (not a 404)
    gone = client.get_commit("foo")
    assert gone.value is None and gone.empty is True and gone.comment == "gone"
    assert client.get_value("foo") == b"" and client.get_value("foo", 1) == b'{"a":1}'
    with pytest.raises(urllib.error.HTTPError) as caught:
        client.get_metadata("nothing")
    assert caught.value.code == 404


def test_post_commit_headers_arrive_as_sent(rainer, client):
    stored = client.post_commit(meta("k", 1, comment=PERCENT_COMMENT), '{"v":1}')
    assert stored["comment"] == PERCENT_COMMENT and stored["empty"] is False
    # http.client writes str headers as ISO-8859-1: read back as the text that was meant
    assert client.post_commit(meta("k", 2, comment="café bad %C3"), '{"v":2}')["comment"] == "café bad %C3"
    assert rainer.storage.get("k").comment == "café bad %C3"
    # a stale version: 409 with Rainer's conflict document
    with pytest.raises(urllib.error.HTTPError) as caught:
        client.post_commit(meta("k", 2), '{"v":3}')
    assert caught.value.code == 409
    assert json.loads(caught.value.read()) == {"conflict": {"key": "k", "expectedVersion": 3, "providedVersion": 2}}
    # a tombstone as pyrainer sends it (X-Rainer-Empty: True, an empty body)
    assert client.post_commit(meta("k", 3, empty=True), "")["empty"] is True
    assert client.get_value("k") == b"" and rainer.storage.get("k").empty


# -- the command line -------------------------------------------------------------------------------
def test_cli_list_reads_the_storage_even_when_the_mirror_lags(rainer_zk):
    client = RainerClient(rainer_zk.url)
    client.post_commit(meta("hey", 1), '{"hey":"what"}')
    # saved around the publishing storage: the mirror has not seen it (the publisher runs every 30 s)
    rainer_zk.underlying.save(Commit.from_value("quiet", 1, {"q": 1}, author="me"))
    client.post_commit(meta("gone", 1), "1")
    client.post_commit(meta("gone", 2, empty=True), "")
    result = pyrainer_cli(rainer_zk.url, "list")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["1", "hey", rainer_zk.url + "/hey/1"], ["1", "quiet", rainer_zk.url + "/quiet/1"]]
    rows = [line.split() for line in pyrainer_cli(rainer_zk.url, "list", "-A").stdout.splitlines()]
    assert [row[:2] for row in rows] == [["2", "gone"], ["1", "hey"], ["1", "quiet"]]


def test_cli_show(rainer, seeded):
    assert pyrainer_cli(rainer.url, "show", "hey").stdout == '{"hey":"whatsit"}\n'
    assert pyrainer_cli(rainer.url, "show", "hey", "1").stdout == '{"hey":"what"}\n'
    deleted = pyrainer_cli(rainer.url, "show", "foo")
    assert (deleted.returncode, deleted.stdout) == (0, "")
    missing = pyrainer_cli(rainer.url, "show", "nothing")
    assert missing.returncode == 1 and "404" in missing.stdout and "Key not found" in missing.stdout


def test_cli_prepare(rainer, seeded):
    result = pyrainer_cli(rainer.url, "prepare", "hey", login=True)
    assert result.returncode == 0, result.stderr
    # pyrainer 0.26 prints the prepared commit's bytes object (its repr): the content is all there
    assert f"author: {LOGIN}" in result.stdout and "version: 3" in result.stdout
    assert '{"hey":"whatsit"}' in result.stdout


def test_cli_commit_reads_a_prepared_commit(rainer, seeded):
    prepared = f"author: {LOGIN}\ncomment: {PERCENT_COMMENT}\nversion: 3\n---\n{{\"hey\": \"typed\"}}\n"
    result = pyrainer_cli(rainer.url, "commit", "hey", stdin=prepared)
    assert result.returncode == 0, result.stderr
    assert seeded.get_value("hey") == b'{"hey": "typed"}\n'
    assert seeded.get_metadata("hey")["comment"] == PERCENT_COMMENT
    assert seeded.get_metadata("hey")["author"] == LOGIN


def test_cli_commit_value(tmp_path):
    server = start_rainer(tmp_path / "yaml", serialization=payload_serialization("yaml"))
    try:
        result = pyrainer_cli(server.url, "commit-value", "motd", "-m", PERCENT_COMMENT, stdin="new value",
                              login=True)
        assert result.returncode == 0, result.stderr
        client = RainerClient(server.url)
        assert client.get_value("motd") == b"new value"
        assert client.get_metadata("motd")["author"] == LOGIN
        assert client.get_metadata("motd")["comment"] == PERCENT_COMMENT
        again = pyrainer_cli(server.url, "commit-value", "motd", "2", "-m", "second", stdin="newer", login=True)
        assert again.returncode == 0 and client.get_value("motd") == b"newer"
        # without a version pyrainer posts version 1: a conflict, printed as pyrainer prints errors
        stale = pyrainer_cli(server.url, "commit-value", "motd", "-m", "x", stdin="x", login=True)
        assert stale.returncode == 1 and "409" in stale.stdout and "expectedVersion" in stale.stdout
    finally:
        server.stop()


def test_cli_log(rainer, seeded):
    seeded.post_commit(meta("hey", 3, comment="delete it", empty=True), "")
    result = pyrainer_cli(rainer.url, "log", "hey")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("Commit 3") < out.index("Commit 2") < out.index("Commit 1") < out.index("End of Log")
    assert "  delete it\n" in out and f"  {PERCENT_COMMENT}\n" in out and "Author: gian" in out
    assert '-{"hey":"what"}\n+{"hey":"whatsit"}\n' in out
    assert '-{"hey":"whatsit"}\n+\n' in out  # the tombstone's diff: everything removed


def test_cli_uncommit(rainer, seeded):
    result = pyrainer_cli(rainer.url, "uncommit", "hey", stdin="yes\n", login=True)
    assert result.returncode == 0, result.stderr
    assert f"Commit to {rainer.url}/hey (yes/no)?" in result.stdout
    gone = seeded.get_metadata("hey")
    assert (gone["version"], gone["empty"], gone["author"]) == (3, True, LOGIN)
    assert seeded.get_value("hey") == b""
    # `uncommit -y` fails inside pyrainer 0.26 before any request (bytes("") in prepare_commit):
    # nothing any server could change
    seeded.post_commit(meta("hey", 4), '{"hey":"back"}')
    forced = pyrainer_cli(rainer.url, "uncommit", "hey", "-y", login=True)
    assert forced.returncode == 1 and "TypeError" in forced.stderr
    assert seeded.get_metadata("hey")["version"] == 4


def test_cli_edit(rainer, seeded, tmp_path):
    editor = tmp_path / "editor.py"
    editor.write_text(textwrap.dedent("""
        import sys
        path = sys.argv[-1]
        text = open(path).read()
        text = text.replace("comment: ''", "comment: edited 5%41")
        head, _, value = text.partition("---\\n")
        open(path, "w").write(head + "---\\n" + '{"hey":"edited"}')
    """))
    env = {"EDITOR": f"{sys.executable} {editor}"}
    result = pyrainer_cli(rainer.url, "edit", "hey", stdin="yes\n", env=env, login=True)
    assert result.returncode == 0, result.stdout + result.stderr
    edited = seeded.get_commit("hey")
    assert (edited.version, edited.author, edited.comment, edited.value) == \
        (3, LOGIN, "edited 5%41", b'{"hey":"edited"}')
    # a key that does not exist yet: pyrainer takes the 404 as "start from nothing"
    result = pyrainer_cli(rainer.url, "edit", "fresh", stdin="yes\n", env=env, login=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert seeded.get_commit("fresh").version == 1 and seeded.get_value("fresh") == b'{"hey":"edited"}'

