"""Rainer's HTTP API: the seed's curl examples with real curl, every route, header and error,
write authentication, cached reads from a ZooKeeper mirror, and the builder."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from workbench.commits import RAW, Commit, CommitServer, MemoryCommitStorage, SqlCommitStorage, create_rainer
from workbench.commits.server import BasicAuth, ServiceBindError, TokenAuth, auth_from_spec, decode_header, \
    encode_header
from workbench.errors import ConfigurationError
from workbench.testing.commits import CommitServeProcess, commit_server, wait_until  # noqa: F401

MTIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)"


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-s", "--max-time", "20", *args], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request; 4xx/5xx answers are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def post(server, key: str, version, body: bytes, author: str | None = "gian", **headers):
    if author is not None:
        headers["X-Rainer-Author"] = author
    return http("POST", f"{server.url}/{quote(key, safe='')}/{version}", body,
                {k.replace("_", "-"): v for k, v in headers.items()})


# -- the seed's examples, with curl --------------------------------------------------------------------
def test_seed_curl_examples(commit_server):
    url = commit_server.url
    assert url.endswith("/diary")
    answer = curl("-XPOST", "-H", "Content-Type: application/octet-stream", "-H", "X-Rainer-Author: gian",
                  "-H", "X-Rainer-Comment: rofl", "--data-binary", '{"hey":"what"}', f"{url}/foo/1")
    # The seed's text predates tombstones; Rainer's CommitMetadata.asMap has "empty" since, so the
    # answers end in "empty":false (they used to match the seed's text without it).
    assert re.fullmatch(r'\{"author":"gian","comment":"rofl","key":"foo","mtime":"' + MTIME
                        + r'","version":1,"empty":false\}', answer), answer
    mtime = json.loads(answer)["mtime"]
    assert curl(f"{url}/foo") == '{"hey":"what"}'
    assert curl(f"{url}/foo/1") == '{"hey":"what"}'
    assert curl(f"{url}/foo/1/meta") == \
        '{"author":"gian","key":"foo","version":1,"mtime":"' + mtime + '","comment":"rofl","empty":false}'


def test_curl_sees_conflicts_and_missing_keys(commit_server):
    url = commit_server.url
    curl("-XPOST", "-H", "X-Rainer-Author: gian", "--data-binary", "[1]", f"{url}/foo/1")
    out = curl("-i", "-XPOST", "-H", "X-Rainer-Author: sue", "--data-binary", "[2]", f"{url}/foo/1")
    assert "409" in out.splitlines()[0]
    assert out.endswith('{"conflict":{"key":"foo","expectedVersion":2,"providedVersion":1}}')
    out = curl("-i", f"{url}/nothing")
    assert "404" in out.splitlines()[0] and out.endswith("\n\nKey not found")


# -- routes and headers ----------------------------------------------------------------------------------
def test_commit_headers_on_every_answer(commit_server):
    status, headers, body = post(commit_server, "foo", 1, b'{"a":1}', comment="first",
                                 X_Rainer_Modified_Time="2014-02-11T14:01:28.839-08:00")
    assert status == 200
    assert json.loads(body)["mtime"] == "2014-02-11T14:01:28.839-08:00"
    for path in ("/foo", "/foo/1", "/foo/meta", "/foo/1/meta"):
        status, headers, _ = http("GET", commit_server.url + path)
        assert status == 200
        assert (headers["X-Rainer-Key"], headers["X-Rainer-Version"], headers["X-Rainer-Author"],
                headers["X-Rainer-Empty"]) == ("foo", "1", "gian", "No")
        assert headers["X-Rainer-Modified-Time"] == "2014-02-11T14:01:28.839-08:00"
        assert "X-Rainer-Cached" not in headers
    # text/plain for a UTF-8 payload, as RainerServlet's textIfPossible (it used to be octet-stream)
    assert http("GET", commit_server.url + "/foo")[1]["Content-Type"] == "text/plain; charset=UTF-8"
    assert http("GET", commit_server.url + "/foo/meta")[1]["Content-Type"] == "application/json"


def test_versions_and_heads(commit_server):
    for version in (1, 2, 3):
        assert post(commit_server, "foo", version, json.dumps({"v": version}, separators=(",", ":")).encode())[0] == 200
    assert http("GET", commit_server.url + "/foo")[2] == b'{"v":3}'
    assert http("GET", commit_server.url + "/foo/2")[2] == b'{"v":2}'
    assert json.loads(http("GET", commit_server.url + "/foo/meta")[2])["version"] == 3
    assert http("GET", commit_server.url + "/foo/4")[0] == 404
    assert http("GET", commit_server.url + "/foo/4/meta")[0] == 404


def test_listing_with_all_and_payloads(commit_server):
    post(commit_server, "foo", 1, b'{"hey":"what"}')
    post(commit_server, "bin", 1, b"\"\\u00ff\"")
    post(commit_server, "gone", 1, b"1")
    post(commit_server, "gone", 2, b"", X_Rainer_Empty="yes", X_Rainer_Comment="retired")
    listing = json.loads(http("GET", commit_server.url + "/")[2])
    assert sorted(listing) == ["bin", "foo"]
    # "empty" in every entry, as Rainer's CommitMetadata.asMap (it used to be there only when true)
    assert listing["foo"] == {"author": "gian", "comment": "", "key": "foo", "mtime": listing["foo"]["mtime"],
                              "version": 1, "empty": False}
    assert json.loads(http("GET", commit_server.url)[2]) == listing  # with or without the slash
    full = json.loads(http("GET", commit_server.url + "/?all=yes&payload_utf8=yes&payload_base64=yes")[2])
    assert sorted(full) == ["bin", "foo", "gone"]
    assert full["foo"]["payload_utf8"] == '{"hey":"what"}'
    assert base64.b64decode(full["foo"]["payload_base64"]) == b'{"hey":"what"}'
    assert full["gone"]["empty"] is True and full["gone"]["comment"] == "retired"
    assert "payload_utf8" not in full["gone"] and "payload_base64" not in full["gone"]
    assert json.loads(http("GET", commit_server.url + "/?all=no")[2]) == listing


def test_tombstones_keep_their_metadata_and_read_as_empty_payloads(commit_server):
    post(commit_server, "foo", 1, b"1")
    # As RainerServlet: a tombstone with a body is refused (it used to be stored, the body dropped) ...
    status, _, body = post(commit_server, "foo", 2, b"ignored", X_Rainer_Empty="true")
    assert status == 400 and "Empty payload required" in json.loads(body)["error"]
    status, _, body = post(commit_server, "foo", 2, b"", X_Rainer_Empty="true")
    assert status == 200 and json.loads(body)["empty"] is True
    # ... and its payload is a 200 with an empty body (it used to be a 404, which JVM clients and
    # pyrainer read as "no such key")
    status, headers, body = http("GET", commit_server.url + "/foo")
    assert (status, body, headers["X-Rainer-Empty"], headers["X-Rainer-Version"]) == (200, b"", "Yes", "2")
    assert http("GET", commit_server.url + "/foo/2")[:3:2] == (200, b"")
    assert json.loads(http("GET", commit_server.url + "/foo/meta")[2])["empty"] is True
    assert http("GET", commit_server.url + "/foo/1")[2] == b"1"
    assert post(commit_server, "foo", 3, b"3")[0] == 200


def test_unicode_and_url_encoded_keys_and_headers(commit_server):
    key = "ключ 日本/?"[:-2] + "%"
    # raw UTF-8 in the headers, as Rainer takes them (they used to be percent-decoded), and an
    # answer's headers carry raw UTF-8 too (they used to be percent-encoded)
    status, headers, body = post(commit_server, key, 1, b'"v"', author="Søren 😀".encode(),
                                 X_Rainer_Comment="naïve line".encode())
    assert status == 200, body
    assert json.loads(body)["key"] == key and json.loads(body)["author"] == "Søren 😀"
    assert decode_header(headers["X-Rainer-Key"]) == key
    assert headers["X-Rainer-Key"].encode("latin-1") == key.encode("utf-8")
    status, headers, body = http("GET", f"{commit_server.url}/{quote(key, safe='')}/1/meta")
    assert status == 200 and json.loads(body)["comment"] == "naïve line"
    assert decode_header(headers["X-Rainer-Author"]) == "Søren 😀"
    assert encode_header("naïve\nline") == "naïve line".encode().decode("latin-1")
    assert list(json.loads(http("GET", commit_server.url + "/")[2])) == [key]
    # raw UTF-8 in a header (what curl sends when typed) works too
    out = curl("-XPOST", "-H", "X-Rainer-Author: Zoë", "--data-binary", "2",
               f"{commit_server.url}/{quote(key, safe='')}/2")
    assert json.loads(out)["author"] == "Zoë"


# -- RainerServlet's semantics ----------------------------------------------------------------------------
def test_header_values_are_stored_verbatim(commit_server):
    status, headers, body = post(commit_server, "foo", 1, b"1", author="ops 100%", X_Rainer_Comment="raise 10%20 then 5%41")
    assert status == 200, body
    assert (json.loads(body)["comment"], json.loads(body)["author"]) == ("raise 10%20 then 5%41", "ops 100%")
    assert post(commit_server, "foo", 2, b"2", X_Rainer_Comment="bad %C3")[0] == 200
    assert commit_server.storage.get("foo").comment == "bad %C3"
    assert http("GET", commit_server.url + "/foo/1")[1]["X-Rainer-Comment"] == "raise 10%20 then 5%41"
    # ISO-8859-1 bytes (what Python's http.client sends for a str) read as Jetty reads them
    assert post(commit_server, "foo", 3, b"3", author="Jürgen".encode("latin-1"))[0] == 200
    assert commit_server.storage.get("foo").author == "Jürgen"
    # the matching X-Rainer-Key / X-Rainer-Version the JVM HttpCommitStorage sends are fine
    assert post(commit_server, "foo", 4, b"4", X_Rainer_Key="foo", X_Rainer_Version="4", X_Rainer_Empty="No")[0] == 200


def test_percent_encoded_headers_when_the_client_says_so(commit_server):
    status, headers, body = post(commit_server, "foo", 1, b"1", author="S%C3%B8ren", X_Rainer_Comment="two%0Alines",
                                 X_Rainer_Header_Encoding="percent")
    assert status == 200, body
    assert commit_server.storage.get("foo").meta.comment == "two\nlines"
    assert commit_server.storage.get("foo").author == "Søren"
    # a header cannot carry the line break: the answer's header shows a space, the JSON the text
    status, headers, body = http("GET", commit_server.url + "/foo/meta")
    assert headers["X-Rainer-Comment"] == "two lines" and json.loads(body)["comment"] == "two\nlines"


def test_payload_content_types_as_rainer_chooses_them():
    with CommitServer(MemoryCommitStorage(serialization=RAW)) as server:
        assert post(server, "bin", 1, b"\xff\x00")[0] == 200
        assert post(server, "text", 1, "ünï".encode())[0] == 200
        status, headers, body = http("GET", server.url + "/bin")
        assert (status, headers["Content-Type"], body) == (200, "application/octet-stream", b"\xff\x00")
        status, headers, body = http("GET", server.url + "/text/1")
        assert (status, headers["Content-Type"], body) == (200, "text/plain; charset=UTF-8", "ünï".encode())


def test_the_listing_comes_from_the_storage_not_the_mirror(tmp_path, zookeeper_chroot):
    with create_rainer(f"sqlite:///{tmp_path / 'd.db'}", zookeeper=zookeeper_chroot, zk_path="/rainer/lag",
                       publish_period=3600, publish_fuzz=0) as rainer:
        # a commit the mirror cannot have seen yet: saved around the publishing storage
        rainer.underlying.save(Commit.from_value("foo", 1, {"a": 1}, author="me"))
        assert "foo" not in rainer.mirror
        status, headers, body = http("GET", rainer.url + "/")
        assert status == 200 and "X-Rainer-Cached" not in headers
        assert json.loads(body)["foo"]["version"] == 1
        assert json.loads(http("GET", rainer.url + "/?all=yes")[2])["foo"]["version"] == 1
        assert http("GET", rainer.url + "/foo")[2] == b'{"a":1}'


# -- bad input: clean 4xx, never 500 ---------------------------------------------------------------------
@pytest.mark.parametrize("path, body, headers, status, fragment", [
    ("/foo/1", b"{}", {}, 400, "X-Rainer-Author is required"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "  "}, 400, "X-Rainer-Author is required"),
    ("/foo/one", b"{}", {"X-Rainer-Author": "g"}, 400, "version must be a positive integer"),
    ("/foo/0", b"{}", {"X-Rainer-Author": "g"}, 400, "version must be a positive integer"),
    ("/foo/-1", b"{}", {"X-Rainer-Author": "g"}, 400, "version must be a positive integer"),
    ("/foo/99999999999999999999", b"{}", {"X-Rainer-Author": "g"}, 400, "positive integer"),
    ("/foo/1", b'{"hey":', {"X-Rainer-Author": "g"}, 400, "invalid JSON"),
    ("/foo/1", b"\xff\xfe", {"X-Rainer-Author": "g"}, 400, "invalid JSON"),
    ("/foo/1", b"", {"X-Rainer-Author": "g"}, 400, "invalid JSON"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "g", "X-Rainer-Modified-Time": "soon"}, 400, "ISO 8601"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "%ZZ%ff", "X-Rainer-Header-Encoding": "percent"}, 400, "percent-encoded"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "g", "X-Rainer-Key": "bar"}, 400, "X-Rainer-Key must match"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "g", "X-Rainer-Version": "2"}, 400, "X-Rainer-Version must match"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "g", "X-Rainer-Empty": "maybe"}, 400, "Malformed header: X-Rainer-Empty"),
    ("/foo/1", b"{}", {"X-Rainer-Author": "g", "X-Rainer-Empty": "Yes"}, 400, "Empty payload required"),
    ("/a%2Fb/1", b"{}", {"X-Rainer-Author": "g"}, 400, "must not contain '/'"),
    ("/%2E%2E/1", b"{}", {"X-Rainer-Author": "g"}, 400, "must not contain '/'"),
    ("/tab%09key/1", b"{}", {"X-Rainer-Author": "g"}, 400, "control characters"),
    ("/" + "k" * 300 + "/1", b"{}", {"X-Rainer-Author": "g"}, 400, "1 to 255 characters"),
    ("/%FF/1", b"{}", {"X-Rainer-Author": "g"}, 400, "Bad Request"),
    ("/foo", b"{}", {"X-Rainer-Author": "g"}, 400, "POST needs a version"),
])
def test_bad_posts_get_a_clear_4xx_and_store_nothing(commit_server, path, body, headers, status, fragment):
    got, _, answer = http("POST", commit_server.url + path, body, headers)
    assert got == status, answer
    assert fragment in json.loads(answer)["error"]
    assert commit_server.storage.heads() == {}


@pytest.mark.parametrize("path, status", [
    ("/foo/x", 400), ("/foo/x/meta", 400), ("/%FF", 400), ("/foo/1/2/3", 404), ("/nothing/meta", 404),
    # a flag of the listing that is not a boolean is a 400, as RainerServlet's (?all=%ZZ used to be a 200)
    ("/a%2Fb", 400), ("/?all=%ZZ", 400), ("/?all=", 400), ("/?all=maybe", 400), ("/?payload_utf8=2", 400),
    ("/?payload_base64=x", 400), ("/?all=No&payload_utf8=TRUE&payload_base64=0", 200),
])
def test_bad_reads_get_a_clear_4xx(commit_server, path, status):
    assert http("GET", commit_server.url + path)[0] == status


def test_paths_outside_the_prefix_are_404(commit_server):
    root = commit_server.url[: -len("/diary")]
    status, _, body = http("GET", root + "/other/foo")
    assert status == 404 and json.loads(body)["error"] == "no such route"


def test_oversized_bodies_are_refused_with_413(commit_server):
    commit_server.max_body = 1000
    status, _, body = post(commit_server, "foo", 1, b'"' + b"x" * 2000 + b'"')
    assert status == 413 and json.loads(body)["max_body"] == 1000
    # chunked, without a Content-Length: counted as it streams
    out = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST", "-H", "X-Rainer-Author: g",
               "-H", "Transfer-Encoding: chunked", "--data-binary", '"' + "y" * 5000 + '"',
               f"{commit_server.url}/foo/1")
    assert out == "413"
    assert post(commit_server, "foo", 1, b'"' + b"x" * 900 + b'"')[0] == 200
    assert commit_server.storage.get("foo").version == 1


def test_json_is_checked_per_key_serialization():
    from workbench.commits.model import serialization_by_suffix

    storage = MemoryCommitStorage(serialization=serialization_by_suffix)
    with CommitServer(storage) as server:
        assert post(server, "notes.txt", 1, b"plain words")[0] == 200
        assert post(server, "conf.yaml", 1, b"a: 1 # why\n")[0] == 200
        assert post(server, "conf.yaml", 2, b"a: [1,\n")[0] == 400
        assert post(server, "conf.json", 1, b"plain words")[0] == 400
        assert http("GET", server.url + "/conf.yaml")[2] == b"a: 1 # why\n"


@pytest.mark.parametrize("payload, good, bad", [
    ("json", b'{"hey":"what"}', b"new value"),
    ("yaml", b"new value", b"a: [1,\n"),
    ("properties", b"a = 1\n# why\n", b"a=\\u12"),
    ("bytes", b"\xff\x00", None),
])
def test_each_payload_type_validates_its_payloads(payload, good, bad):
    from workbench.commits import payload_serialization

    with create_rainer(MemoryCommitStorage(serialization=payload_serialization(payload))) as rainer:
        assert post(rainer, "k", 1, good)[0] == 200
        assert http("GET", rainer.url + "/k")[2] == good
        if bad is not None:
            status, _, body = post(rainer, "k", 2, bad)
            assert status == 400 and "invalid" in json.loads(body)["error"]
        assert rainer.storage.get("k").version == 1


def test_serve_payload_flag(tmp_path):
    server = CommitServeProcess(tmp_path / "serve", f"sqlite:///{tmp_path / 'p.db'}",
                                extra=["--payload", "properties"]).start()
    try:
        assert post(server, "app", 1, b"a=1\nb=2\n")[0] == 200
        assert post(server, "app", 2, b"a=\\uZZZZ")[0] == 400
        assert post(server, "app", 2, b'{"a":1}')[0] == 200  # a JSON object is a valid properties line
    finally:
        server.stop()
    refused = subprocess.run([sys.executable, "-m", "workbench.commits", "serve", "--storage", "sqlite://",
                              "--payload", "xml"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "invalid choice: 'xml'" in refused.stderr


# -- authentication ------------------------------------------------------------------------------------------
def test_token_auth_guards_writes_only():
    with CommitServer(MemoryCommitStorage(), auth=TokenAuth("s3cret")) as server:
        status, headers, _ = post(server, "foo", 1, b"1")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert post(server, "foo", 1, b"1", Authorization="Bearer wrong")[0] == 401
        assert post(server, "foo", 1, b"1", Authorization="Bearer s3cret")[0] == 200
        assert post(server, "foo", 2, b"2", X_Rainer_Token="s3cret")[0] == 200
        assert http("GET", server.url + "/foo")[2] == b"2"
        assert server.storage.get("foo").version == 2


def test_basic_auth_with_curl():
    with CommitServer(MemoryCommitStorage(), auth=auth_from_spec("basic:ops:pa:ss"), prefix="/diary") as server:
        code = curl("-o", "/dev/null", "-w", "%{http_code}", "-XPOST", "-H", "X-Rainer-Author: g",
                    "--data-binary", "1", f"{server.url}/foo/1")
        assert code == "401"
        code = curl("-o", "/dev/null", "-w", "%{http_code}", "-u", "ops:wrong", "-XPOST", "-H",
                    "X-Rainer-Author: g", "--data-binary", "1", f"{server.url}/foo/1")
        assert code == "401"
        out = curl("-u", "ops:pa:ss", "-XPOST", "-H", "X-Rainer-Author: g", "--data-binary", "1",
                   f"{server.url}/foo/1")
        assert json.loads(out)["version"] == 1
        assert post(server, "foo", 2, b"2", Authorization="Basic !!notbase64")[0] == 401


def test_auth_specs():
    assert isinstance(auth_from_spec("token:abc"), TokenAuth)
    assert isinstance(auth_from_spec("basic:u:p"), BasicAuth)
    assert auth_from_spec(None) is None
    for spec in ("token:", "basic:nopassword", "kerberos:x"):
        with pytest.raises(ConfigurationError):
            auth_from_spec(spec)


# -- lifecycle -------------------------------------------------------------------------------------------------
def test_start_binds_a_real_port_and_stop_frees_it():
    server = CommitServer(MemoryCommitStorage(), prefix="diary/").start()
    assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}/diary"
    with pytest.raises(ServiceBindError) as caught:
        CommitServer(MemoryCommitStorage(), port=server.port).start()
    assert caught.value.fields["port"] == server.port
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_sql_storage_served_off_the_event_loop(tmp_path):
    storage = SqlCommitStorage(f"sqlite:///{tmp_path / 'c.db'}").start()
    with CommitServer(storage) as server:
        for version in range(1, 6):
            assert post(server, "foo", version, str(version).encode())[0] == 200
        assert http("GET", server.url + "/foo/3")[2] == b"3"
    storage.close()


# -- the builder and cached reads -------------------------------------------------------------------------------
def test_builder_without_zookeeper(tmp_path):
    with create_rainer(f"sqlite:///{tmp_path / 'd.db'}", prefix="/diary", auth="token:t") as rainer:
        assert rainer.keeper is None and rainer.mirror is None and rainer.publisher is None
        assert post(rainer, "foo", 1, b"1", Authorization="Bearer t")[0] == 200
        assert rainer.storage.get("foo").value == 1
    with pytest.raises(ConfigurationError):
        create_rainer("sqlite://", zookeeper="127.0.0.1:1")


def test_builder_with_zookeeper_serves_cached_reads(tmp_path, zookeeper_chroot, zookeeper_client):
    rainer = create_rainer(f"sqlite:///{tmp_path / 'd.db'}", prefix="/diary", zookeeper=zookeeper_chroot,
                           zk_path="/rainer/diary", publish_period=0.5, publish_fuzz=0.1).start()
    try:
        status, _, body = post(rainer, "foo", 1, b'{"hey":"what"}', comment="rofl")
        assert status == 200
        # published to ZooKeeper by the save itself, so the mirror answers at once
        status, headers, body = http("GET", rainer.url + "/foo")
        assert (status, body, headers["X-Rainer-Cached"]) == (200, b'{"hey":"what"}', "Yes")
        assert http("GET", rainer.url + "/foo/1/meta")[1]["X-Rainer-Cached"] == "Yes"
        # the listing is read from the storage (it used to come from the mirror, which may lag)
        assert "X-Rainer-Cached" not in http("GET", rainer.url + "/")[1]
        assert zookeeper_client.exists("/rainer/diary/data/foo") is not None
        # a commit only the system of record has (saved around the publishing storage)
        rainer.underlying.save(Commit.from_value("quiet", 1, "q", author="me"))
        status, headers, body = http("GET", rainer.url + "/quiet")
        assert (status, body) == (200, b'"q"') and "X-Rainer-Cached" not in headers
        # ... until the auto-publisher pushes it
        rainer.mirror.wait_for("quiet", 1, timeout=10)
        assert http("GET", rainer.url + "/quiet")[1]["X-Rainer-Cached"] == "Yes"
        # read-your-writes through the mirror, and tombstones leave it
        post(rainer, "foo", 2, b'{"hey":"again"}')
        assert http("GET", rainer.url + "/foo")[2] == b'{"hey":"again"}'
        post(rainer, "foo", 3, b"", X_Rainer_Empty="yes")
        # a tombstone's payload: 200 and empty, as RainerServlet (it used to be a 404)
        status, headers, body = http("GET", rainer.url + "/foo")
        assert (status, body, headers["X-Rainer-Empty"]) == (200, b"", "Yes")
        assert "foo" not in json.loads(http("GET", rainer.url + "/")[2])
    finally:
        rainer.stop()
    assert rainer.server is None and rainer.mirror is None


# -- failures below the API ------------------------------------------------------------------------------------
def test_a_lost_database_is_a_503_not_a_500(mariadb_server):
    name = "t_commits_lost"
    mariadb_server.create_database(name)
    storage = SqlCommitStorage(mariadb_server.url(name)).start()
    try:
        with CommitServer(storage) as server:
            assert post(server, "foo", 1, b"1")[0] == 200
            mariadb_server.drop_database(name)
            status, _, body = http("GET", server.url + "/foo")
            assert (status, json.loads(body)) == (503, {"error": "storage unavailable"})
            assert post(server, "foo", 2, b"2")[0] == 503
            assert http("GET", server.url + "/")[0] == 503
    finally:
        storage.close()
        mariadb_server.drop_database(name)


@pytest.mark.parametrize("raw", [
    b"GET /diary/foo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /diary/foo/1 HTTP/1.1\r\nHost: x\r\nX-Rainer-Author: g\r\nContent-Length: -5\r\n\r\n",
    b"POST /diary/foo/1 HTTP/1.1\r\nHost: x\r\nX-Rainer-Author: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /diary/foo/1 HTTP/1.1\r\nHost: x\r\nX-Rainer-Author: g\r\nContent-Length: 5\r\n\r\n{}",
    b"GARBAGE\r\n\r\n",
    b"GET /diary/" + b"k" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_malformed_http_gets_a_4xx_or_a_closed_connection(commit_server, raw):
    with socket.create_connection(("127.0.0.1", commit_server.port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # a truncated body then ends, as when a client dies
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        except ConnectionResetError:
            pass
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    assert commit_server.storage.heads() == {}
    assert http("GET", commit_server.url + "/")[0] == 200  # and the server still serves


def test_acknowledged_commits_survive_a_kill_9_of_the_server(tmp_path):
    url = f"sqlite:///{tmp_path / 'diary.db'}"
    server = CommitServeProcess(tmp_path / "serve", url).start()
    try:
        acknowledged = []
        for version in range(1, 31):
            status, _, body = http("POST", f"{server.url}/foo/{version}", json.dumps([version]).encode(),
                                   {"X-Rainer-Author": "gian"})
            assert status == 200, body
            acknowledged.append(version)
        server.kill9()
        server.start()  # same storage, same port
        listing = json.loads(http("GET", server.url + "/")[2])
        assert listing["foo"]["version"] == acknowledged[-1]
        for version in (1, 15, 30):
            assert http("GET", f"{server.url}/foo/{version}")[2] == json.dumps([version]).encode()
        status, _, body = http("POST", f"{server.url}/foo/31", b"[31]", {"X-Rainer-Author": "gian"})
        assert status == 200
    finally:
        server.stop()


def test_two_servers_of_one_cluster_see_each_others_commits(tmp_path, zookeeper_chroot):
    common = dict(storage_url=f"sqlite:///{tmp_path / 'shared.db'}", prefix="/diary",
                  zookeeper=zookeeper_chroot, zk_path="/rainer/diary", publish_period=0.5, publish_fuzz=0.1)
    with create_rainer(**common) as a, create_rainer(**common) as b:
        assert post(a, "foo", 1, b'{"from":"a"}')[0] == 200
        b.mirror.wait_for("foo", 1)
        status, headers, body = http("GET", b.url + "/foo")
        assert (status, body, headers["X-Rainer-Cached"]) == (200, b'{"from":"a"}', "Yes")
        status, _, body = post(b, "foo", 1, b'{"from":"b"}')  # the same version through the other server
        assert status == 409 and json.loads(body)["conflict"]["expectedVersion"] == 2
        assert post(b, "foo", 2, b'{"from":"b"}')[0] == 200
        a.mirror.wait_for("foo", 2)
        assert http("GET", a.url + "/foo")[2] == b'{"from":"b"}'
        wait_until(lambda: a.publisher.is_leader or b.publisher.is_leader, what="a publisher leads")
        assert not (a.publisher.is_leader and b.publisher.is_leader)


# -- the served API on MariaDB and PostgreSQL --------------------------------------------------------
@pytest.fixture(params=["mariadb", "postgres"])
def server_sql_url(request):
    """A SQLAlchemy URL of an empty MariaDB or PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_url")


def test_serve_on_mariadb_and_postgres_answers_the_seeds_curl_examples(tmp_path, server_sql_url):
    server = CommitServeProcess(tmp_path / "serve", server_sql_url).start()
    try:
        url = server.url
        answer = curl("-XPOST", "-H", "Content-Type: application/octet-stream", "-H", "X-Rainer-Author: gian",
                      "-H", "X-Rainer-Comment: rofl", "--data-binary", '{"hey":"what"}', f"{url}/foo/1")
        # "empty":false as Rainer's CommitMetadata.asMap has it (the seed's text predates it)
        assert re.fullmatch(r'\{"author":"gian","comment":"rofl","key":"foo","mtime":"' + MTIME
                            + r'","version":1,"empty":false\}', answer), answer
        mtime = json.loads(answer)["mtime"]
        assert curl(f"{url}/foo") == '{"hey":"what"}'
        assert curl(f"{url}/foo/1") == '{"hey":"what"}'
        assert curl(f"{url}/foo/1/meta") == \
            '{"author":"gian","key":"foo","version":1,"mtime":"' + mtime + '","comment":"rofl","empty":false}'
        out = curl("-i", "-XPOST", "-H", "X-Rainer-Author: sue", "--data-binary", "[2]", f"{url}/foo/1")
        assert "409" in out.splitlines()[0]
        assert out.endswith('{"conflict":{"key":"foo","expectedVersion":2,"providedVersion":1}}')
        # keys that differ only by case or a trailing space are distinct, unicode keys round-trip
        for key in ("Foo", "foo ", "ключ 日本?%"):
            status, _, _ = post(server, key, 1, json.dumps(key).encode())
            assert status == 200, key
            assert http("GET", f"{url}/{quote(key, safe='')}")[2] == json.dumps(key).encode()
        assert post(server, "foo", 2, b"", X_Rainer_Empty="yes")[0] == 200
        assert http("GET", f"{url}/foo")[:3:2] == (200, b"")  # a tombstone (it used to be a 404)
        server.kill9()
        server.start()  # every acknowledged commit is in the database
        listing = json.loads(http("GET", url + "/?all=yes")[2])
        assert {key: meta["version"] for key, meta in listing.items()} == \
            {"foo": 2, "Foo": 1, "foo ": 1, "ключ 日本?%": 1}
        assert curl(f"{url}/foo/1") == '{"hey":"what"}'
    finally:
        server.stop()


def test_two_servers_on_one_mariadb_or_postgres_database_race_and_heal(server_sql_url, zookeeper_chroot,
                                                                      zookeeper_client):
    from concurrent.futures import ThreadPoolExecutor

    common = dict(storage_url=server_sql_url, prefix="/diary", zookeeper=zookeeper_chroot,
                  zk_path="/rainer/diary", publish_period=0.5, publish_fuzz=0.1)
    with create_rainer(**common) as a, create_rainer(**common) as b:
        # HTTP clients of both servers race for the same versions of one key
        def racer(server, name):
            won = []
            for _ in range(20):
                listing = json.loads(http("GET", server.url + "/")[2])
                version = listing.get("hot", {}).get("version", 0) + 1
                if post(server, "hot", version, json.dumps(name).encode(), author=name)[0] == 200:
                    won.append(version)
            return won

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(racer, server, f"{label}{n}") for n in range(2) for label, server in
                       (("a", a), ("b", b))]
            wins = sorted(v for future in futures for v in future.result(timeout=120))
        assert wins == list(range(1, len(wins) + 1))  # one winner per version, none lost
        head = wins[-1]
        a.mirror.wait_for("hot", head)
        b.mirror.wait_for("hot", head)
        history = a.underlying.history("hot")
        assert [c.version for c in history] == wins
        assert http("GET", b.url + "/hot")[1]["X-Rainer-Cached"] == "Yes"
        # an out-of-band deletion in ZooKeeper is healed from the database by the leading publisher
        node = "/rainer/diary/data/hot"
        deleted = zookeeper_client.exists(node).czxid
        zookeeper_client.delete(node)
        wait_until(lambda: getattr(zookeeper_client.exists(node), "czxid", deleted) != deleted, timeout=20,
                   what="the deleted znode recreated")
        assert zookeeper_client.exists(node).czxid != deleted
        assert b.mirror.wait_for("hot", head, timeout=20)["hot"].value == history[-1].value
