"""The HTTP clients of commits (RainerClient, HttpCommitStorage, CommitClient) against real servers."""

from __future__ import annotations

import pickle
import socket
import threading
from urllib.parse import unquote

import pytest

from workbench.commits import RAW, Commit, CommitConflict, InvalidCommit
from workbench.commits.client import (
    CommitBadRequest,
    CommitClient,
    CommitNotFound,
    CommitServerUnreachable,
    CommitsHttpError,
    CommitUnauthorized,
    HttpCommitConflict,
    HttpCommitStorage,
    RainerClient,
    commit_header_fields,
    header_text,
    unified_diff,
)
from workbench.commits.http_transport import ServerAddress, encode_key
from workbench.errors import CommitsError, ConfigurationError
from workbench.events import EventRecorder
from workbench.testing.commits_servers import PREFIX, rainer, start_rainer  # noqa: F401


@pytest.fixture
def client(rainer):
    with RainerClient(rainer.url) as made:
        yield made


def meta(key: str, version: int, author: str = "gian", comment: str = "rofl", **extra):
    return {"key": key, "version": version, "author": author, "comment": comment, **extra}


# -- pyrainer's API ------------------------------------------------------------------------------
def test_the_seed_python_session_runs_unchanged(tmp_path, capsys):
    # The seed's values are free text ("new value"), so this server stores raw bytes.
    server = start_rainer(tmp_path / "raw", serialization=RAW)
    try:
        client = RainerClient(server.url)
        client.post_commit({"key": "foo", "version": 1, "author": "gian", "comment": "rofl"}, '{"hey":"what"}')
        client.post_commit({"key": "hey", "version": 1, "author": "gian", "comment": "first"}, "old value")

        commits = client.list_full()
        for key in sorted(commits.keys()):
            version = commits[key].version
            print("%s [current version = %s]" % (key, str(version)))
        hey = client.get_commit("hey")
        print("Commit version %s = %s" % (hey.meta["version"], hey.value))
        client.post_commit({"key": "hey", "version": 2, "author": "sue", "comment": "rofl"}, "new value")

        out = capsys.readouterr().out.splitlines()
        assert out == ["foo [current version = 1]", "hey [current version = 1]",
                       "Commit version 1 = b'old value'"]
        assert client.get_value("hey") == b"new value"
        assert client.get_metadata("hey")["author"] == "sue"
        client.close()
    finally:
        server.stop()


def test_rainer_client_reads_match_the_seeds_curl_answers(client, rainer):
    stored = client.post_commit(meta("foo", 1), '{"hey":"what"}')
    # "empty" too, as Rainer's CommitMetadata.asMap (the seed's text predates it; it used to be absent)
    assert set(stored) == {"author", "comment", "key", "mtime", "version", "empty"} and stored["empty"] is False
    assert (stored["author"], stored["comment"], stored["key"], stored["version"]) == ("gian", "rofl", "foo", 1)
    assert client.get_value("foo") == b'{"hey":"what"}'
    assert client.get_value("foo", 1) == b'{"hey":"what"}'
    assert client.get_metadata("foo", 1) == stored
    assert list(client.get_metadata("foo")) == ["author", "key", "version", "mtime", "comment", "empty"]
    assert client.list() == {"foo": stored}
    assert client.commit_uri("foo", 1) == rainer.url + "/foo/1"
    assert client.base_uri == rainer.url and client.base_uri.endswith(PREFIX)


def test_list_full_has_payloads_and_all_includes_tombstones(client):
    client.post_commit(meta("alive", 1), "[1, 2]")
    client.post_commit(meta("gone", 1), '"x"')
    client.post_commit(meta("gone", 2, comment="delete", empty=True), "ignored")

    live = client.list_full()
    assert set(live) == {"alive"} and live["alive"].value == b"[1, 2]"
    assert "payload_base64" not in live["alive"].meta

    everything = client.list_full(all=True)
    assert set(everything) == {"alive", "gone"}
    assert everything["gone"].value is None and everything["gone"].empty
    assert everything["gone"].meta["version"] == 2 and everything["gone"].meta["comment"] == "delete"
    assert client.list(all=True)["gone"]["empty"] is True
    # get_commit of a tombstone: metadata, no value (and no request for the missing payload)
    gone = client.get_commit("gone")
    assert gone.value is None and gone.meta["empty"] is True
    assert client.get_commit("gone", 1).value == b'"x"'


@pytest.mark.parametrize("key", ["with space", "100%", "what?", "hash#tag", "plus+sign", "émoji ☃", "a&b=c"])
def test_keys_are_url_encoded_both_ways(client, key):
    stored = client.post_commit(meta(key, 1), '{"k": 1}')
    assert stored["key"] == key
    assert client.get_value(key) == b'{"k": 1}'
    assert client.get_metadata(key, 1)["key"] == key
    assert key in client.list() and client.list_full()[key].value == b'{"k": 1}'
    assert client.commit_uri(key, 1) == f"{client.base_uri}/{encode_key(key)}/1"
    assert not set(" ?#&+=/").intersection(encode_key(key)) and unquote(encode_key(key)) == key


def test_unicode_authors_and_multiline_comments_survive(client):
    comment = "line one\nline two: 100% ünïcode ☃"
    client.post_commit(meta("u", 1, author="Jürgen Ø", comment=comment), "1")
    assert client.get_metadata("u")["author"] == "Jürgen Ø"
    assert client.get_metadata("u")["comment"] == comment
    assert header_text("a%b é\n") == "a%25b %C3%A9%0A"


def test_header_text_travels_verbatim_as_rainer_reads_it(client, rainer):
    # no line break: plain headers, raw UTF-8, which any Rainer server stores as sent
    assert commit_header_fields("Jürgen", "raise 10%20 then 5%41") == \
        {"X-Rainer-Author": "Jürgen".encode().decode("latin-1"), "X-Rainer-Comment": "raise 10%20 then 5%41"}
    client.post_commit(meta("v", 1, author="Jürgen", comment="raise 10%20 then 5%41 ☃"), "1")
    assert rainer.storage.get("v").comment == "raise 10%20 then 5%41 ☃"
    # a line break cannot travel in a header: then percent-encoded, and said so
    assert commit_header_fields("me", "a\nb%")["X-Rainer-Header-Encoding"] == "percent"


def test_mtime_given_by_the_client_is_kept(client):
    client.post_commit(meta("t", 1, mtime="2014-02-11T14:01:28.839-08:00"), "1")
    assert client.get_metadata("t")["mtime"] == "2014-02-11T14:01:28.839-08:00"


# -- errors ----------------------------------------------------------------------------------------
def test_a_stale_version_is_a_conflict_with_fields_and_nothing_is_stored(client):
    client.post_commit(meta("foo", 1), "1")
    client.post_commit(meta("foo", 2), "2")
    with pytest.raises(HttpCommitConflict) as caught:
        client.post_commit(meta("foo", 2, author="late"), "3")
    error = caught.value
    assert isinstance(error, CommitConflict) and isinstance(error, CommitsHttpError)
    assert (error.key, error.expected_version, error.provided_version) == ("foo", 3, 2)
    assert error.status == 409 and '"expectedVersion":3' in error.body and error.method == "POST"
    assert "the next version is 3, not 2" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, HttpCommitConflict) and again.fields == error.fields
    assert client.get_value("foo") == b"2" and client.get_metadata("foo")["author"] == "gian"
    with pytest.raises(HttpCommitConflict) as skipped:
        client.post_commit(meta("foo", 5), "5")
    assert skipped.value.expected_version == 3


def test_missing_keys_and_versions_are_not_found(client):
    with pytest.raises(CommitNotFound) as caught:
        client.get_value("nope")
    assert caught.value.status == 404 and caught.value.body == "Key not found"
    assert str(caught.value).endswith(": Key not found")
    client.post_commit(meta("foo", 1), "1")
    with pytest.raises(CommitNotFound):
        client.get_metadata("foo", 2)
    with pytest.raises(CommitNotFound):
        client.get_commit("foo", 7)


def test_bad_input_is_a_bad_request_and_nothing_is_stored(client):
    with pytest.raises(CommitBadRequest) as caught:
        client.post_commit(meta("json", 1), "{not json")
    assert caught.value.status == 400 and "invalid JSON" in str(caught.value)
    with pytest.raises(CommitNotFound):
        client.get_value("json")
    with pytest.raises(InvalidCommit):
        client.post_commit({"key": "json", "version": 1}, "1")  # no author: refused before sending
    with pytest.raises(InvalidCommit) as version:
        client.post_commit(meta("json", "two"), "1")
    assert version.value.fields["reason"] == "version"
    with pytest.raises(ConfigurationError):
        client.get_value("")


def test_writes_with_a_token_server(tmp_path):
    server = start_rainer(tmp_path / "auth", auth="token:s3cret")
    try:
        anonymous = RainerClient(server.url)
        with pytest.raises(CommitUnauthorized) as caught:
            anonymous.post_commit(meta("foo", 1), "1")
        assert caught.value.status == 401
        with pytest.raises(CommitUnauthorized):
            RainerClient(server.url, token="wrong").post_commit(meta("foo", 1), "1")
        with RainerClient(server.url, token="s3cret") as writer:
            writer.post_commit(meta("foo", 1), "1")
        assert anonymous.get_value("foo") == b"1"  # reads need no credentials
    finally:
        server.stop()


def test_basic_auth_credentials_in_the_url(tmp_path):
    server = start_rainer(tmp_path / "basic", auth="basic:alice:pa:ss@word")
    try:
        host = server.url.split("//", 1)[1]
        with RainerClient(f"http://alice:pa%3Ass%40word@{host}") as client:
            client.post_commit(meta("foo", 1), "1")
            assert client.base_uri == server.url  # never shows the password
        with pytest.raises(CommitUnauthorized):
            RainerClient(f"http://alice:wrong@{host}").post_commit(meta("foo", 2), "2")
    finally:
        server.stop()


def test_an_unreachable_server_is_one_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RainerClient(f"http://127.0.0.1:{port}/diary", timeout=2.0)
    with pytest.raises(CommitServerUnreachable) as caught:
        client.list()
    assert caught.value.url == f"http://127.0.0.1:{port}/diary"
    assert "cannot reach the commits server" in str(caught.value) and caught.value.reason
    assert (caught.value.status, caught.value.body) == (None, "")


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # connections complete in the backlog; nothing ever reads or answers
        client = RainerClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        with pytest.raises(CommitServerUnreachable) as caught:
            client.get_value("foo")
        assert caught.value.reason == "no answer within 0.5s"


def test_bad_urls_are_configuration_errors():
    for url in ("ftp://host/x", "localhost:8080", "http:///nohost", "http://h/x?q=1"):
        with pytest.raises(ConfigurationError):
            RainerClient(url)
    address = ServerAddress.parse("http://u:p@example.org/diary/")
    assert (address.host, address.port, address.prefix, address.username) == ("example.org", 80, "/diary", "u")
    assert "p@" not in repr(address) and address.url == "http://example.org:80/diary"


def test_a_kept_alive_connection_the_server_dropped_is_replaced(tmp_path):
    first = start_rainer(tmp_path / "restart")
    port = first.server.port
    client = RainerClient(first.url)
    client.post_commit(meta("foo", 1), "1")
    first.stop()  # the client's idle connection now points at a closed server
    second = start_rainer(tmp_path / "restart", port=port)
    try:
        assert client.get_value("foo") == b"1"
        client.post_commit(meta("foo", 2), "2")
        assert client.get_metadata("foo")["version"] == 2
    finally:
        second.stop()


def test_one_client_shared_by_threads(client):
    for n in range(8):
        client.post_commit(meta(f"k{n}", 1), str(n))
    errors: list[BaseException] = []

    def read(n: int) -> None:
        try:
            for _ in range(25):
                assert client.get_value(f"k{n}") == str(n).encode()
                assert client.get_metadata(f"k{n}")["key"] == f"k{n}"
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert client.transport.open_connections == 9  # one kept-alive connection per thread, main included
    late = threading.Thread(target=read, args=(0,))
    late.start()
    late.join(30)
    assert errors == [] and client.transport.open_connections == 2  # the finished threads' were closed


def test_closed_client_refuses(client):
    client.close()
    with pytest.raises(CommitsError, match="closed"):
        client.list()


# -- HttpCommitStorage -----------------------------------------------------------------------------
def test_http_storage_behaves_like_the_servers_own_storage(rainer):
    storage = HttpCommitStorage(rainer.url)
    recorder = EventRecorder()
    storage.add_listener(recorder)
    try:
        first = storage.save(Commit.from_value("foo", 1, {"hey": "what"}, author="gian", comment="rofl"))
        storage.save(Commit.from_value("foo", 2, {"hey": "there"}, author="sue"))
        storage.save(Commit.from_value("bar", 1, [1, 2], author="gian"))
        storage.save(Commit.tombstone("bar", 2, author="gian", comment="drop"))

        assert storage.get("foo", 1) == first and storage.get("foo").value == {"hey": "there"}
        assert storage.get("nope") is None and storage.get("foo", 9) is None
        assert storage.history("foo") == rainer.underlying.history("foo")
        assert storage.history("bar") == rainer.underlying.history("bar")
        assert storage.history("nope") == []
        assert storage.heads() == rainer.underlying.heads()
        assert set(storage.heads_non_empty()) == {"foo"}
        assert storage.keys() == ["bar", "foo"]

        with pytest.raises(CommitConflict) as caught:
            storage.save(Commit.from_value("foo", 2, {"late": True}, author="x"))
        assert caught.value.fields["expected_version"] == 3
        assert recorder.wait_for("commit_saved", count=4).args[0].key == "bar"
        assert len([e for e in recorder.events if e.kind == "commit_saved"]) == 4
    finally:
        storage.close()


def test_http_storage_pre_save_hook_vetoes(rainer):
    storage = HttpCommitStorage(rainer.url)

    def no_friday(commit: Commit) -> None:
        if commit.comment == "friday":
            raise CommitsError("no deploys on friday", key=commit.key)

    storage.add_pre_save_hook(no_friday)
    with pytest.raises(CommitsError, match="friday"):
        storage.save(Commit.from_value("foo", 1, 1, author="me", comment="friday"))
    assert storage.get("foo") is None
    storage.close()


# -- CommitClient ------------------------------------------------------------------------------------
def test_commit_client_save_history_diff_revert(rainer):
    with CommitClient(rainer.url, author="me") as commits:
        commits.save("limits", {"max": 10}, comment="start")
        commits.save("limits", {"max": 20}, comment="more")
        assert commits["limits"] == {"max": 20} and "limits" in commits and "other" not in commits
        assert [c.version for c in commits.history("limits")] == [1, 2]
        assert commits.diff("limits") == ('--- limits 1\n+++ limits 2\n@@ -1 +1 @@\n'
                                          '-{"max":10}\n+{"max":20}\n')
        assert commits.diff("limits", 1, 1) == ""
        reverted = commits.revert("limits", 1)
        assert (reverted.version, reverted.comment, reverted.author) == (3, "Revert limits to version 1", "me")
        assert commits["limits"] == {"max": 10}
        assert commits.get("limits", 3).payload == commits.get("limits", 1).payload
        assert commits.keys() == ["limits"] and list(commits) == ["limits"]


def test_commit_client_keeps_edited_bytes_and_deletes_with_tombstones(rainer):
    with CommitClient(rainer.url, author="me") as commits:
        text = '{\n  "a": 1,   "b": [1,2]\n}\n'
        commits.save("conf", payload=text, comment="by hand")
        assert commits.get("conf").payload == text.encode() and commits["conf"] == {"a": 1, "b": [1, 2]}
        deleted = commits.delete("conf", comment="bye")
        assert deleted.empty and deleted.version == 2
        with pytest.raises(KeyError):
            commits["conf"]
        assert commits.value("conf", default="gone") == "gone"
        assert commits.keys() == [] and commits.keys(all=True) == ["conf"]
        assert commits.revert("conf", 1).version == 3 and commits["conf"] == {"a": 1, "b": [1, 2]}
        assert commits.revert("conf", 2).empty  # reverting to a deleted version deletes again
        with pytest.raises(CommitNotFound):
            commits.delete("never")
        with pytest.raises(CommitNotFound):
            commits.get("never")


def test_commit_client_never_overwrites_a_commit_made_in_between(rainer):
    with CommitClient(rainer.url, author="me") as mine, CommitClient(rainer.url, author="you") as yours:
        mine.save("shared", 1)
        version_i_read = mine.head_version("shared")
        yours.save("shared", 2)
        with pytest.raises(HttpCommitConflict):
            mine.save("shared", 3, version=version_i_read + 1)
        assert mine["shared"] == 2 and mine.get("shared").author == "you"


def test_heads_view_follows_own_saves_and_refreshes_for_others(rainer):
    with CommitClient(rainer.url, author="me") as mine, CommitClient(rainer.url, author="you") as yours:
        mine.save("a", 1)
        view = mine.heads_view()
        recorder = EventRecorder()
        view.add_listener(recorder)
        assert recorder.wait_for("commit_updated").args[0].key == "a"  # the current state first

        mine.save("b", 2)
        assert view["b"].value == 2  # applied before save() returned
        assert recorder.wait_for("commit_updated", lambda e: e.args[0].key == "b").args[0].version == 1

        yours.save("c", 3)
        yours.delete("a")
        assert "c" not in view and "a" in view  # no push channel: nothing until a refresh
        assert view.refresh() == 2
        assert set(view) == {"b", "c"}
        removed = recorder.wait_for("commit_removed")
        assert removed.args[0] == "a" and removed.args[1].version == 1
        assert view.refresh() == 0
        view.close()
        mine.save("d", 4)
        assert "d" not in view


def test_unified_diff_names_versions_and_ends_lines():
    old = Commit.from_bytes("k", 1, b"a\nb", "me", validate=False)
    new = Commit.from_bytes("k", 2, b"a\nc", "me", validate=False)
    assert unified_diff(old, new) == ["--- k 1\n", "+++ k 2\n", "@@ -1,2 +1,2 @@\n", " a\n", "-b\n", "+c\n"]
    assert unified_diff(None, old)[:2] == ["--- k 0\n", "+++ k 1\n"]
