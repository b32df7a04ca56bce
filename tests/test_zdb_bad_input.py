"""zdb servers answer bad input with errors and stay up: malformed frames, bad JSON, fuzzing."""

from __future__ import annotations

import json
import random

import pytest
import zmq

from workbench.zdb.protocol import MAX_MESSAGE_BYTES


@pytest.fixture
def raw(sm):
    """A raw REQ-less DEALER socket on the server, for sending anything at all."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(sm.address)

    def send(*frames: bytes, expect_reply: bool = True, timeout: float = 5.0):
        sock.send_multipart([b"", *frames])
        if not sock.poll(int(timeout * 1000)):
            if expect_reply:
                raise AssertionError("no reply")
            return None
        reply = sock.recv_multipart()
        return json.loads(reply[1])

    yield send
    sock.close()
    context.term()


@pytest.mark.parametrize("body, message", [
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2, 3]", "JSON object"),
    (b'{"kind": "exec", "command": "import os"}', "unknown request kind"),
    (b'{"kind": "op"}', "ops must be a non-empty list"),
    (b'{"kind": "op", "ops": [1]}', "an op is"),
    (b'{"kind": "op", "ops": [[[], "__class__", [], {}]]}', "no operation"),
    (b'{"kind": "op", "ops": [[["x"], "append", [1], {}]]}', "not a container"),
    (b'{"kind": "op", "ops": [[[], "__setitem__", ["k", NaN], {}]]}', "NaN"),
    (b'{"kind": "op", "ops": [[[], "keys", [], {}], [[], "clear", [], {}]]}', "only writes"),
    (b'{"kind": "op", "client": 5, "ops": []}', "client must be a string"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
    (b'{"kind": "blob_put", "upload": "nope"}', "needs a data frame"),
    (b'{"kind": "blob_get", "hash": "../../etc/passwd"}', "SHA-256"),
    (b'{"kind": "lock", "client": "c", "lease": -1}', "lease"),
    (b'{"kind": "sync", "since": "x"}', "sequence number"),
    # plain reads of a value in odd shapes: the one-walk read path must fail as the general one
    (b'{"kind": "op", "ops": [[["nope"], null, [], {}]]}', "'nope'"),
    (b'{"kind": "op", "ops": [[["x", 0], null, [], {}]]}', "not a container"),
    (b'{"kind": "op", "ops": [[["x"], null, {}, {}]]}', "an op is"),
    (b'{"kind": "op", "ops": [[["x"], null, [], []]]}', "an op is"),
    (b'{"kind": "op", "ops": [["x", null, [], {}]]}', "an op is"),
    (b'{"kind": "op", "ops": [[["x"], null, []]]}', "an op is"),
])
def test_bad_requests_get_error_replies(raw, sm, body, message):
    raw(b'{"kind": "op", "ops": [[[], "__setitem__", ["x", 5], {}]]}')
    sm_before = dict(sm.document.root)
    reply = raw(body)
    assert reply["ok"] is False
    assert message in reply["error"]["message"], reply
    assert sm.document.root == sm_before
    assert raw(b'{"kind": "ping", "id": 1}')["result"] == "pong"


def test_plain_reads_and_single_writes_over_the_wire(raw, sm):
    assert raw(b'{"kind": "op", "id": 1, "ops": [[[], "__setitem__", ["d", {"l": [1, 2]}], {}]]}')["ok"]
    assert raw(b'{"kind": "op", "id": 2, "ops": [[["d", "l"], null, [], {}]]}')["result"] == [1, 2]
    assert raw(b'{"kind": "op", "id": 3, "ops": [[["d", "l", {"$slice": [0, 1, null]}], null, [], {}]]}')["result"] == [1]
    reply = raw(b'{"kind": "op", "id": 4, "ops": [[["d", "l", {"$slice": [0, 1, null]}], "append", [3], {}]]}')
    assert reply["ok"] is False and "cannot write through a slice" in reply["error"]["message"]
    assert raw(b'{"kind": "op", "id": 5, "ops": [[["d", "l"], "append", [3], {}]]}')["ok"]
    assert sm.document.root["d"] == {"l": [1, 2, 3]}


def test_too_deep_value_is_refused(raw, sm):
    value = "1"
    for _ in range(80):
        value = "[" + value + "]"
    reply = raw(b'{"kind": "op", "ops": [[[], "__setitem__", ["deep", ' + value.encode() + b'], {}]]}')
    assert reply["ok"] is False and "deeper" in reply["error"]["message"]


def test_oversized_message_is_dropped_and_the_server_stays_up(raw, sm):
    # libzmq closes the connection of a peer that exceeds MAXMSGSIZE: no reply, no crash.
    assert raw(b"x" * (MAX_MESSAGE_BYTES + 8192), expect_reply=False, timeout=1.0) is None
    from workbench.zdb import client

    db, connection = client(sm.address, timeout=5.0)
    try:
        assert db._run() == {}
    finally:
        connection.close()


def test_frames_without_a_body_get_an_error_reply(sm):
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(sm.address)
    sock.send(b"")  # a delimiter and nothing else
    assert sock.poll(5000)
    reply = json.loads(sock.recv_multipart()[-1])
    assert reply["ok"] is False and "not valid JSON" in reply["error"]["message"]
    sock.send_multipart([b"", b'{"kind": "ping", "id": 2}'])
    assert sock.poll(5000)
    assert json.loads(sock.recv_multipart()[-1])["result"] == "pong"
    sock.close()
    context.term()


def mutate(rng: random.Random, seed_messages: list[bytes]) -> list[bytes]:
    body = bytearray(rng.choice(seed_messages))
    for _ in range(rng.randint(1, 6)):
        action = rng.random()
        position = rng.randrange(len(body) + 1)
        if action < 0.4 and body:
            body[min(position, len(body) - 1)] = rng.randrange(256)
        elif action < 0.7:
            body[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif body:
            del body[position:position + rng.randint(1, 8)]
    frames = [bytes(body)]
    if rng.random() < 0.1:
        frames.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    return frames


def test_fuzz_thousands_of_random_and_mutated_messages(sm, connect):
    db, connection = connect(sm.address)
    db["data"] = {"l": list(range(20)), "d": {"a": [1, {"b": 2}]}}
    reference = db._run()
    seeds = [
        b'{"kind": "op", "id": 1, "ops": [[["data", "l"], null, [], {}]]}',
        b'{"kind": "op", "id": 2, "ops": [[["data", "d", "a", 1], "get", ["b"], {}]]}',
        b'{"kind": "op", "id": 3, "ops": [[["data", "l", {"$slice": [1, 5, 2]}], null, [], {}]]}',
        b'{"kind": "status", "id": 4}',
        b'{"kind": "blob_get", "id": 5, "hash": "' + b"0" * 64 + b'"}',
        b'{"kind": "sync", "id": 6, "since": 0}',
    ]
    writes_before = sm.stats.writes
    rng = random.Random(20261121)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(sm.address)
    replies = 0
    for n in range(3000):
        frames = mutate(rng, seeds) if n % 3 else [bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))]
        sock.send_multipart([b"", *frames])
        if n % 100 == 99:  # drain, so replies do not pile up
            while sock.poll(200):
                sock.recv_multipart()
                replies += 1
    while sock.poll(500):
        sock.recv_multipart()
        replies += 1
    sock.close()
    context.term()
    assert replies >= 2900  # (almost) every message got an answer; none crashed the server
    # Mutated writes may have changed the document: only through valid writes, which undo reverts.
    for _ in range(sm.stats.writes - writes_before):
        db.undo()
    assert db._run() == reference
    assert connection.ping()
