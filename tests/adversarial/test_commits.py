"""commits attacked over HTTP: fuzzed requests on every route and header, deep JSON, times out of
range, write-auth bypass attempts, and secrets kept off the server's command line.

Every attack runs against a real ``workbench commits serve`` process with a write token; each
test checks that no answer is a 5xx, that no traceback reaches the log, that the server still
answers a well-formed GET within 2 s, and that its memory and descriptors stay bounded.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from workbench.testing.adversarial import (ProcessBounds, answers_within, fuzz_messages, fuzz_random, mutate,
                                          send_until_refused)
from workbench.testing.commits import CommitServeProcess

TOKEN = "adversarial-write-token-1234"
PREFIX = "/diary"
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})", re.MULTILINE)


class TokenServeProcess(CommitServeProcess):
    """``commits serve`` whose write token comes from the environment (never its command line)."""

    def environment(self) -> dict[str, str]:
        return {**os.environ, "WORKBENCH_COMMITS_AUTH": f"token:{TOKEN}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TokenServeProcess]:
    process = TokenServeProcess(tmp_path / "serve", f"sqlite:///{tmp_path / 'commits.db'}", prefix=PREFIX)
    process.start()
    try:
        status, _ = request(process, "POST", "/seed/1", b'{"seed":true}', author="seeder", token=TOKEN)
        assert status == 200
        yield process
    finally:
        process.stop()


# -- talking to it ------------------------------------------------------------------------------------
def tally(outcome, shown: bytes, seen: Counter[str], server_errors: list[tuple[bytes, object]]) -> None:
    """Count each status ``exchange`` gave (or the word for what happened instead); keep the 5xx."""
    for status in ([outcome] if isinstance(outcome, str) else outcome):
        seen[str(status)] += 1
        if isinstance(status, int) and status >= 500:
            server_errors.append((shown, status))


def exchange(process: CommitServeProcess, raw: bytes, timeout: float = 10.0) -> list[int] | str:
    """Send raw bytes on a fresh connection and read the answer: the statuses answered (several when
    the bytes held several requests), or "closed" when the server answered nothing.

    Our side is closed only once the server had a moment to answer: tornado drops the answer of a
    request whose client half-closed while a storage call was running, which would hide it."""
    with socket.create_connection((process.host, process.port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the server may refuse and close before reading everything
        answer = bytearray()
        sock.settimeout(0.25)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            # an incomplete request (or one kept alive): end it, then read whatever comes
            sock.settimeout(timeout)
            try:
                sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(65536):
                    answer += chunk
            except OSError:
                pass
        except OSError:
            pass
    statuses = [int(code) for code in STATUS_LINE.findall(bytes(answer))]
    return statuses or "closed"


def request(process: CommitServeProcess, method: str, path: str, body: bytes | None = None, *,
            author: str | None = None, token: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One well-formed request through urllib: (status, body)."""
    all_headers = dict(headers or {})
    if author is not None:
        all_headers["X-Rainer-Author"] = author
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(process.url + path, data=body, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def raw_request(method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1", "replace"), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def log_text(process: CommitServeProcess) -> str:
    return process.log_path.read_text(errors="replace")


def assert_still_serving(process: CommitServeProcess, before: ProcessBounds) -> None:
    # version 1 exactly: the fuzz may have posted /seed/2
    status, body = answers_within(lambda: request(process, "GET", "/seed/1"))  # type: ignore[misc]
    assert (status, json.loads(body)) == (200, {"seed": True})
    assert process.process is not None and process.process.poll() is None, "the server died"
    ProcessBounds.of(process.process.pid).assert_within(before, rss_mib=64, fds=16)
    log = log_text(process)
    assert "Traceback" not in log, f"a traceback reached the log:\n{log[-3000:]}"


# -- the inputs ---------------------------------------------------------------------------------------
NASTY_TIMES = ["0001-01-01T00:00:00", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
               "9999-12-31T23:59:59.999999", "2020-02-30T00:00:00", "2020-01-01T25:00:00", "garbage", "-1",
               "1e9", "T", "+05:00", "2020-01-01T00:00:00+99:00", "99999-01-01", "%ff", "%00", "\u00e9t\u00e9"]
NASTY_WORDS = ["", " ", "yes", "no", "Yes", "0", "-1", "1e9", "NaN", "%ff", "%00", "%ed%a0%80", "%", "%%",
               "\u00e9", "\u2603", "a" * 9000, "[[[[", "\t", "null"]
NASTY_KEYS = ["k", "%2F", "..", ".", "%00", "a" * 256, "%C3%A9", "%ff", "%ed%a0%80", "k%20k", "%25", "meta",
              "%0A", "\u00e9", "seed"]
NASTY_VERSIONS = ["1", "2", "0", "-1", "1e9", "9" * 18, "9" * 19, "9" * 400, "1.0", "0x10", "%201", "\u0661",
                  "meta", ""]
NASTY_QUERIES = ["", "?all=yes", "?payload_utf8=yes&payload_base64=yes&all=1", "?all=%ff", "?all=" + "a" * 5000,
                 "?payload_base64=%ed%a0%80", "?=&&=", "?all"]
NASTY_BODIES = [b"{}", b'{"a":1}', b"[" * 60000 + b"]" * 60000, b"[" * 200000, b'{"a":' * 50000,
                b"\xff\xfe", b'"\xed\xa0\x80"', b'{"a": NaN}', b"1e999", b"-" * 100, b"\x00" * 32,
                b"a: [" * 2000, b"x" * 600_000, base64.b64encode(b"\xff" * 99)]
NASTY_AUTH = [f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode(), b"Bearer", b"Bearer \xff\xfe",
              b"Basic \xc3\xa9\xc3\xa9", b"Basic %%%", b"Basic " + base64.b64encode(b"u:" + TOKEN.encode()),
              b"Token " + TOKEN.encode(), b"\xff" * 40]
HEADER_NAMES = [b"X-Rainer-Author", b"X-Rainer-Comment", b"X-Rainer-Empty", b"X-Rainer-Modified-Time",
                b"X-Rainer-Token", b"Content-Type", b"Accept", b"X-Rainer-Key", b"X-Rainer-Version"]
METHODS = ["GET", "GET", "POST", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "G\u00c9T"]


def header_value(rng, name: bytes) -> bytes:
    pool = NASTY_TIMES if name == b"X-Rainer-Modified-Time" else NASTY_WORDS
    value = rng.choice(pool)
    encoded = value.encode("utf-8")
    return mutate(encoded, rng) if rng.random() < 0.2 else encoded


def structured_request(rng, serial: int) -> bytes:
    """A well-formed request on a random route with one or two of its parts replaced by nasty values
    (so most of them get past authentication and routing to the code that reads the part)."""
    parts = {"method": rng.choice(["GET", "POST", "POST"]), "key": f"s{serial}", "version": "1",
             "shape": rng.randrange(5), "query": "", "auth": f"Bearer {TOKEN}".encode(), "body": b'{"a":1}'}
    headers = {b"X-Rainer-Author": b"fuzz", b"X-Rainer-Comment": b"why",
               b"X-Rainer-Modified-Time": b"2014-02-11T14:01:28.839-08:00"}
    if parts["method"] == "POST":
        parts["shape"] = 1
    for _ in range(rng.randrange(1, 3)):
        what = rng.choice(["method", "key", "version", "query", "auth", "body", "header", "header", "header"])
        if what == "method":
            parts["method"] = rng.choice(METHODS)
        elif what == "key":
            parts["key"] = rng.choice(NASTY_KEYS)
        elif what == "version":
            parts["version"] = rng.choice(NASTY_VERSIONS)
        elif what == "query":
            parts["query"], parts["shape"] = rng.choice(NASTY_QUERIES), 4
        elif what == "auth":
            parts["auth"] = rng.choice(NASTY_AUTH)
        elif what == "body":
            parts["body"] = rng.choice(NASTY_BODIES)
        else:
            name = rng.choice(HEADER_NAMES)
            headers[name] = header_value(rng, name)
    key, version = parts["key"], parts["version"]
    path = [f"/{key}", f"/{key}/{version}", f"/{key}/meta", f"/{key}/{version}/meta", "/"][parts["shape"]]
    listed = [(b"Authorization", parts["auth"]), *headers.items()]
    body = parts["body"] if parts["method"] == "POST" else b""
    return raw_request(parts["method"], PREFIX + path + parts["query"], listed, body)


def valid_requests() -> list[bytes]:
    auth = [(b"Authorization", f"Bearer {TOKEN}".encode()), (b"X-Rainer-Author", b"fuzz"),
            (b"X-Rainer-Comment", b"caf%C3%A9"), (b"X-Rainer-Modified-Time", b"2014-02-11T14:01:28.839-08:00")]
    return [raw_request("GET", f"{PREFIX}/", []),
            raw_request("GET", f"{PREFIX}/?all=yes&payload_utf8=yes&payload_base64=yes", []),
            raw_request("GET", f"{PREFIX}/seed", []), raw_request("GET", f"{PREFIX}/seed/1", []),
            raw_request("GET", f"{PREFIX}/seed/meta", []), raw_request("GET", f"{PREFIX}/seed/1/meta", []),
            raw_request("POST", f"{PREFIX}/fz/1", auth, b'{"hey":"what"}'),
            raw_request("POST", f"{PREFIX}/fz/2", [*auth, (b"X-Rainer-Empty", b"yes")], b""),
            raw_request("POST", f"{PREFIX}/fz.yaml/1", auth, b"a: [1, 2]\n")]


# -- the tests ----------------------------------------------------------------------------------------
def test_fuzzed_requests_on_every_route_and_header_never_get_a_5xx(server):
    rng = fuzz_random()
    budget = fuzz_messages()
    bases = valid_requests()
    before = ProcessBounds.of(server.process.pid)
    seen: Counter[str] = Counter()
    server_errors: list[tuple[bytes, object]] = []
    for n in range(budget):
        raw = mutate(rng.choice(bases), rng) if n % 3 == 0 else structured_request(rng, n)
        tally(exchange(server, raw), raw[:300], seen, server_errors)
    print(f"commits HTTP: {budget} fuzzed requests (seed {rng.seed_value}): {dict(seen)}")
    assert not server_errors, f"{len(server_errors)} 5xx answers (seed {rng.seed_value}), e.g. {server_errors[:3]}"
    assert_still_serving(server, before)


def test_deep_json_is_a_400_with_one_log_line(server):
    before = ProcessBounds.of(server.process.pid)
    lines_before = len(log_text(server).splitlines())
    for number, body in enumerate([b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 80_000 + b"1" + b"}" * 80_000]):
        status, answer = request(server, "POST", f"/deep{number}/1", body, author="me", token=TOKEN)
        assert status == 400, answer
        assert "nested" in json.loads(answer)["error"]
    deadline = time.monotonic() + 5
    while len(log_text(server).splitlines()) < lines_before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    new_lines = log_text(server).splitlines()[lines_before:]
    assert len(new_lines) == 2 and all(" 400 " in line for line in new_lines), new_lines
    assert request(server, "GET", "/deep0")[0] == 404
    assert_still_serving(server, before)


@pytest.mark.parametrize("mtime", ["0001-01-01T00:00:00", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                                   "2020-02-30T00:00:00", "2020-01-01T00:00:00+99:00", "not a time"])
def test_a_modified_time_out_of_range_or_garbage_is_a_400(server, mtime):
    before = ProcessBounds.of(server.process.pid)
    status, answer = request(server, "POST", "/timed/1", b"{}", author="me", token=TOKEN,
                             headers={"X-Rainer-Modified-Time": mtime})
    assert status == 400, answer
    assert "X-Rainer-Modified-Time" in json.loads(answer)["error"]
    assert request(server, "GET", "/timed")[0] == 404
    assert_still_serving(server, before)


def test_the_rainer_contract_still_holds_for_good_times(server):
    status, answer = request(server, "POST", "/timed/1", b'{"hey":"what"}', author="gian", token=TOKEN,
                             headers={"X-Rainer-Modified-Time": "2014-02-11T14:01:28.839-08:00",
                                      "X-Rainer-Comment": "rofl"})
    assert status == 200
    # Rainer's metadata always says whether the commit is a tombstone ("empty")
    assert json.loads(answer) == {"author": "gian", "comment": "rofl", "key": "timed",
                                  "mtime": "2014-02-11T14:01:28.839-08:00", "version": 1, "empty": False}


BYPASS_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"Authorization": f"Token {TOKEN}"},
    {"Authorization": f"Basic {base64.b64encode(f'admin:{TOKEN}'.encode()).decode()}"},
    {"Authorization": f"Basic {base64.b64encode(TOKEN.encode()).decode()}"},
    {"Authorization": "Basic \u00e9\u00e9\u00e9"},
    {"Authorization": "Basic ###"},
    {"Authorization": "Bearer wrong", "X-Rainer-Token": TOKEN},
    {"X-Rainer-Token": ""},
    {"X-Rainer-Token": "wrong"},
    {"X-Rainer-Token": f"{TOKEN}\u0000"},
    {"X-Rainer-Token": TOKEN.encode().hex()},
    {"Authorization": f"Bearer {base64.b64encode(TOKEN.encode()).decode()}"},
    {"Authorization": f"Bearer%20{TOKEN}"},
]


def test_every_write_without_the_token_is_refused(server):
    before = ProcessBounds.of(server.process.pid)
    refused = 0
    for number, headers in enumerate(BYPASS_HEADERS):
        raw = raw_request("POST", f"{PREFIX}/bypass{number}/1",
                          [(b"X-Rainer-Author", b"mallory"),
                           *((k.encode(), v.encode("utf-8")) for k, v in headers.items())], b'{"pwned":1}')
        outcome = exchange(server, raw)
        assert outcome in ([401], [400], "closed"), (headers, outcome)
        refused += 1
        assert request(server, "GET", f"/bypass{number}")[0] == 404, headers
    # chunked bodies and other routes get no further
    chunked = (f"POST {PREFIX}/bypass-chunked/1 HTTP/1.1\r\nHost: x\r\nX-Rainer-Author: m\r\n"
               "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").encode()
    assert exchange(server, chunked) == [401]
    for method, path in (("PUT", "/bypass-put/1"), ("DELETE", "/seed"), ("POST", "/"), ("POST", "/seed/1/meta")):
        outcome = exchange(server, raw_request(method, PREFIX + path, [(b"X-Rainer-Author", b"m")], b"{}"))
        assert isinstance(outcome, list) and all(400 <= s < 500 for s in outcome), (method, path, outcome)
    assert request(server, "GET", "/bypass-chunked")[0] == 404
    assert json.loads(request(server, "GET", "/seed/meta")[1])["version"] == 1
    print(f"commits write auth: {refused + 5} bypass attempts, all refused")
    # the token itself still works, by either header
    assert request(server, "POST", "/allowed/1", b"{}", author="me", token=TOKEN)[0] == 200
    assert request(server, "POST", "/allowed/2", b"{}", author="me", headers={"X-Rainer-Token": TOKEN})[0] == 200
    assert_still_serving(server, before)


def test_basic_auth_bypass_attempts_are_refused():
    from workbench.commits.server import CommitServer, auth_from_spec
    from workbench.commits.storage import MemoryCommitStorage

    def basic(pair: bytes) -> str:
        return "Basic " + base64.b64encode(pair).decode()

    attempts = [{}, {"Authorization": basic(b"ops:wrong")}, {"Authorization": basic(b"ops:")},
                {"Authorization": basic(b"ops")}, {"Authorization": basic(b":pa:ss")},
                {"Authorization": basic(b"OPS:pa:ss")}, {"Authorization": basic(b"ops:pa:ss\x00")},
                {"Authorization": basic(b"\xff\xfe:pa:ss")}, {"Authorization": "Basic \u00e9t\u00e9"},
                {"Authorization": "Basic " + base64.b64encode(b"ops:pa:ss").decode()[:-2]},
                {"Authorization": "Bearer pa:ss"}, {"X-Rainer-Token": "pa:ss"}]
    with CommitServer(MemoryCommitStorage(), auth=auth_from_spec("basic:ops:pa:ss"), prefix=PREFIX) as http:
        class Address:
            host, port = "127.0.0.1", http.port
        for number, headers in enumerate(attempts):
            raw = raw_request("POST", f"{PREFIX}/b{number}/1",
                              [(b"X-Rainer-Author", b"m"),
                               *((k.encode(), v.encode("utf-8")) for k, v in headers.items())], b"{}")
            assert exchange(Address, raw) == [401], headers  # type: ignore[arg-type]
        good = raw_request("POST", f"{PREFIX}/ok/1", [(b"X-Rainer-Author", b"m"),
                                                     (b"Authorization", basic(b"ops:pa:ss").encode())], b"{}")
        assert exchange(Address, good) == [200]  # type: ignore[arg-type]


# -- secrets stay off command lines ------------------------------------------------------------------
class AuthFileServeProcess(CommitServeProcess):
    def __init__(self, workdir: Path, storage_url: str, auth_file: Path) -> None:
        super().__init__(workdir, storage_url, prefix=PREFIX, extra=["--auth-file", str(auth_file)])

    def environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k != "WORKBENCH_COMMITS_AUTH"}


def test_serve_reads_the_write_token_from_a_private_file(tmp_path):
    auth_file = tmp_path / "commits.auth"
    auth_file.write_text(f"token:{TOKEN}\n")
    auth_file.chmod(0o600)
    process = AuthFileServeProcess(tmp_path / "serve", f"sqlite:///{tmp_path / 'c.db'}", auth_file)
    process.start()
    try:
        cmdline = Path(f"/proc/{process.process.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
        assert request(process, "POST", "/k/1", b"{}", author="me")[0] == 401
        assert request(process, "POST", "/k/1", b"{}", author="me", token=TOKEN)[0] == 200
    finally:
        process.stop()


def test_serve_refuses_an_auth_file_others_can_read(tmp_path):
    auth_file = tmp_path / "commits.auth"
    auth_file.write_text(f"token:{TOKEN}\n")
    auth_file.chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "workbench.commits", "serve", "--storage", "sqlite://",
                             "--port", "0", "--auth-file", str(auth_file)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "0600" in result.stderr and TOKEN not in result.stderr


def test_a_secret_on_the_serve_command_line_is_warned_about(tmp_path):
    process = CommitServeProcess(tmp_path / "serve", "sqlite://", prefix=PREFIX, extra=["--auth", f"token:{TOKEN}"])
    process.start()
    try:
        deadline = time.monotonic() + 10
        while "commits serving" not in log_text(process) and time.monotonic() < deadline:
            time.sleep(0.05)
        log = log_text(process)
        assert "command line" in log and "WORKBENCH_COMMITS_AUTH" in log and TOKEN not in log
    finally:
        process.stop()


def test_the_client_commands_take_the_token_from_the_environment(tmp_path, server):
    env = {**os.environ, "WORKBENCH_COMMITS_URL": server.url, "WORKBENCH_COMMITS_TOKEN": TOKEN}
    result = subprocess.run([sys.executable, "-m", "workbench.commits", "commit-value", "fromenv", "-m", "hi",
                             "--author", "me"], input=b"{}", capture_output=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(request(server, "GET", "/fromenv/meta")[1])["author"] == "me"
    warned = subprocess.run([sys.executable, "-m", "workbench.commits", "--token", TOKEN, "list"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert warned.returncode == 0 and "command line" in warned.stderr and TOKEN not in warned.stderr


# -- the same over PostgreSQL and ZooKeeper, in process ----------------------------------------------
#: keys valid for the model whose characters ZooKeeper, PostgreSQL or MariaDB may see differently
STORE_KEYS = ["\ue000", "\uf8ff", "\ufff0", "\uffff", "\ufffe", "zookeeper", "\U0001f600", "a\u200bb", "\u00a0",
              "%", "k:1", "quota", "z" * 255, "\u00e9" * 255, "\U0001f600" * 255, "a b", "a\\b", "'", '"', "*"]


@pytest.fixture
def stored_rainer(tmp_path, postgres_url, zookeeper_chroot):
    from workbench.commits.builder import create_rainer

    rainer = create_rainer(postgres_url, prefix=PREFIX, zookeeper=zookeeper_chroot, zk_path="/rainer/adversarial",
                           auth=f"token:{TOKEN}").start()

    class Address:
        host, port = "127.0.0.1", rainer.server.port
        url = rainer.url
    try:
        status, _ = request(Address, "POST", "/seed/1", b'{"seed":true}', author="seeder", token=TOKEN)
        assert status == 200
        yield Address
    finally:
        rainer.stop()


def test_keys_and_fuzz_against_postgresql_and_zookeeper_never_get_a_5xx(stored_rainer, caplog):
    from urllib.parse import quote

    rng = fuzz_random()
    seen: Counter[str] = Counter()
    errors: list[tuple[bytes, object]] = []
    with caplog.at_level(logging.ERROR):
        for key in STORE_KEYS:
            path = "/" + quote(key, safe="")
            for raw in (raw_request("POST", PREFIX + path + "/1", [(b"Authorization", f"Bearer {TOKEN}".encode()),
                                                                   (b"X-Rainer-Author", quote(key).encode())], b"{}"),
                        raw_request("GET", PREFIX + path, []), raw_request("GET", PREFIX + path + "/meta", [])):
                tally(exchange(stored_rainer, raw), raw[:200], seen, errors)
        for n in range(max(50, fuzz_messages() // 4)):
            raw = structured_request(rng, n)
            tally(exchange(stored_rainer, raw), raw[:300], seen, errors)
    print(f"commits on PostgreSQL + ZooKeeper: {sum(seen.values())} answers (seed {rng.seed_value}): {dict(seen)}")
    assert not errors, f"{len(errors)} 5xx answers (seed {rng.seed_value}), e.g. {errors[:3]}"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records[0].getMessage()
    status, body = answers_within(lambda: request(stored_rainer, "GET", "/seed/1"))  # type: ignore[misc]
    assert (status, json.loads(body)) == (200, {"seed": True})


def test_rows_stored_before_the_checks_stay_readable(tmp_path):
    """A time without a UTC equivalent or an author with a tab, stored by an older server, still
    reads: the checks refuse new input, never data already kept."""
    from sqlalchemy import text

    from workbench.commits.server import CommitServer
    from workbench.commits.storage import SqlCommitStorage

    storage = SqlCommitStorage(f"sqlite:///{tmp_path / 'old.db'}").start()
    with storage.engine.begin() as connection:
        connection.execute(text(f"INSERT INTO {storage.table_name} (commit_key, version, author, comment, mtime, "
                                "is_empty, payload) VALUES ('old', 1, :a, '', :m, 0, :p)"),
                           {"a": "tab\there", "m": "9999-12-31T23:59:59.000-05:00", "p": b"{}"})
    with CommitServer(storage, prefix=PREFIX) as http:
        class Address:
            host, port, url = "127.0.0.1", http.port, http.url
        status, body = request(Address, "GET", "/old/meta")
        assert status == 200 and json.loads(body)["mtime"] == "9999-12-31T23:59:59.000-05:00"
        assert request(Address, "GET", "/?all=yes")[0] == 200
    storage.close()


@pytest.mark.parametrize("authorized", [False, True])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_oversized_body_is_refused_and_no_longer_read(server, authorized, framing):
    before = ProcessBounds.of(server.process.pid)
    head = [f"POST {PREFIX}/huge/1 HTTP/1.1", "Host: x", "X-Rainer-Author: m"]
    head.append(f"Content-Length: {64 << 20}" if framing == "length" else "Transfer-Encoding: chunked")
    if authorized:
        head.append(f"Authorization: Bearer {TOKEN}")
    chunk = b"x" * 65536
    piece = chunk if framing == "length" else b"10000\r\n" + chunk + b"\r\n"
    sent, answer = send_until_refused((server.host, server.port), ("\r\n".join(head) + "\r\n\r\n").encode(),
                                      piece, counted=len(chunk))
    assert sent < 40 << 20, "the server kept reading a body beyond its limit"
    assert answer.startswith(b"HTTP/1.1 413" if authorized else b"HTTP/1.1 401"), answer[:80]
    assert request(server, "GET", "/huge")[0] == 404
    assert_still_serving(server, before)
