"""Commits and their serializations: values, human-edited bytes, tombstones, metadata and bad input."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone

import pytest

from workbench.commits.model import (
    JSON,
    RAW,
    TEXT,
    YAML,
    Commit,
    CommitConflict,
    CommitMetadata,
    InvalidCommit,
    check_key,
    format_mtime,
    parse_mtime,
    serialization_by_suffix,
)
from workbench.errors import CommitsError

PST = timezone(timedelta(hours=-8))


def test_from_value_serializes_compact_json_and_reads_back():
    commit = Commit.from_value("foo", 1, {"hey": "what", "n": [1, 2]}, author="gian", comment="rofl")
    assert commit.payload == b'{"hey":"what","n":[1,2]}'
    assert commit.value == {"hey": "what", "n": [1, 2]}
    assert (commit.key, commit.version, commit.author, commit.comment, commit.empty) == \
        ("foo", 1, "gian", "rofl", False)
    assert commit.mtime.tzinfo is not None


def test_from_bytes_keeps_what_a_person_typed():
    yaml_text = b"# the pool size, raised after the outage\npool:   12   # was 8\n\nname: diary\n"
    commit = Commit.from_bytes("db.yaml", 3, yaml_text, "sue", "bigger pool", serialization=YAML)
    assert commit.payload == yaml_text  # comments, blank line and spacing survive
    assert commit.value == {"pool": 12, "name": "diary"}
    spaced_json = b'{\n  "hey" :  "what"\n}\n'
    assert Commit.from_bytes("foo", 1, spaced_json, "gian").payload == spaced_json


@pytest.mark.parametrize("serialization, value, payload", [
    (JSON, {"ü": "ñ"}, '{"ü":"ñ"}'.encode()),
    (YAML, {"a": [1, 2]}, b"a:\n- 1\n- 2\n"),
    (TEXT, "plain words\n", b"plain words\n"),
    (RAW, b"\x00\xff\x10", b"\x00\xff\x10"),
])
def test_every_serialization_round_trips(serialization, value, payload):
    commit = Commit.from_value("k", 1, value, author="me", serialization=serialization)
    assert commit.payload == payload
    assert commit.value == value


@pytest.mark.parametrize("serialization, payload", [
    (JSON, b'{"hey":'), (JSON, b"\xff\xfe"), (YAML, b"a: [1,\n"), (TEXT, b"\xc3\x28")])
def test_unreadable_bytes_are_refused_with_the_reason(serialization, payload):
    with pytest.raises(InvalidCommit) as caught:
        Commit.from_bytes("k", 2, payload, "me", serialization=serialization)
    assert caught.value.fields["reason"] == "payload"
    assert caught.value.fields["key"] == "k" and caught.value.fields["version"] == 2
    # unvalidated, the bytes are kept and only reading the value fails
    kept = Commit.from_bytes("k", 2, payload, "me", serialization=serialization, validate=False)
    assert kept.payload == payload
    with pytest.raises(InvalidCommit):
        kept.value


def test_values_a_serialization_cannot_write_are_refused():
    with pytest.raises(InvalidCommit):
        Commit.from_value("k", 1, object(), author="me")
    with pytest.raises(InvalidCommit):
        Commit.from_value("k", 1, 12, author="me", serialization=TEXT)
    with pytest.raises(InvalidCommit):
        Commit.from_value("k", 1, "text", author="me", serialization=RAW)


def test_tombstones_have_no_payload_and_no_value():
    tombstone = Commit.tombstone("foo", 4, "gian", "retired")
    assert tombstone.empty and tombstone.payload is None and tombstone.value is None
    assert tombstone.meta.to_json()["empty"] is True
    with pytest.raises(InvalidCommit):
        Commit(CommitMetadata("foo", 4, "gian", empty=True), b"data")


@pytest.mark.parametrize("key", ["", "a/b", ".", "..", "tab\there", "x" * 256, 12, None])
def test_bad_keys_are_refused(key):
    with pytest.raises(InvalidCommit) as caught:
        check_key(key)
    assert "reason" in caught.value.fields


@pytest.mark.parametrize("key", ["foo", "ünïcödé-ключ", "with space", "dots.in.name", "%41", "x" * 255, "日本"])
def test_good_keys_pass(key):
    assert check_key(key) == key
    assert Commit.from_value(key, 1, 1, author="me").key == key


@pytest.mark.parametrize("version", [0, -1, True, 1.5, "2"])
def test_bad_versions_are_refused(version):
    with pytest.raises(InvalidCommit):
        Commit.from_value("k", version, 1, author="me")


@pytest.mark.parametrize("author", ["", "   ", None])
def test_an_author_is_required(author):
    with pytest.raises(InvalidCommit) as caught:
        Commit.from_value("k", 1, 1, author=author)
    assert caught.value.fields["reason"] == "author"


def test_mtime_prints_like_rainer_and_reads_back():
    moment = datetime(2014, 2, 11, 14, 1, 28, 839000, PST)
    assert format_mtime(moment) == "2014-02-11T14:01:28.839-08:00"
    assert parse_mtime("2014-02-11T14:01:28.839-08:00") == moment
    utc = datetime(2014, 2, 11, 22, 1, 28, 839000, timezone.utc)
    assert format_mtime(utc) == "2014-02-11T22:01:28.839Z"
    assert parse_mtime(format_mtime(utc)) == utc
    with pytest.raises(InvalidCommit) as caught:
        parse_mtime("yesterday")
    assert caught.value.fields["mtime"] == "yesterday"


def test_metadata_json_round_trip_and_rainer_field_names():
    meta = CommitMetadata("foo", 1, "gian", "rofl", datetime(2014, 2, 11, 14, 1, 28, 839000, PST))
    assert meta.to_json() == {"author": "gian", "comment": "rofl", "key": "foo",
                              "mtime": "2014-02-11T14:01:28.839-08:00", "version": 1}
    assert list(meta.to_json()) == ["author", "comment", "key", "mtime", "version"]
    assert CommitMetadata.from_json(meta.to_json()) == meta
    with pytest.raises(InvalidCommit):
        CommitMetadata.from_json({"key": "foo"})


def test_with_version_makes_a_revert_of_the_same_bytes():
    old = Commit.from_bytes("foo", 1, b'{"a" : 1}', "gian")
    revert = old.with_version(3, author="sue", comment="revert to 1")
    assert (revert.version, revert.author, revert.comment, revert.payload) == (3, "sue", "revert to 1", old.payload)


def test_equality_is_metadata_and_bytes():
    moment = datetime(2020, 1, 1, tzinfo=timezone.utc)
    a = Commit.from_bytes("k", 1, b"1", "me", mtime=moment)
    assert a == Commit.from_bytes("k", 1, b"1", "me", mtime=moment, serialization=TEXT)
    assert a != Commit.from_bytes("k", 1, b"2", "me", mtime=moment)
    assert len({a, Commit.from_bytes("k", 1, b"1", "me", mtime=moment)}) == 1


def test_conflict_carries_its_fields_and_survives_pickling():
    conflict = CommitConflict("foo", expected_version=3, provided_version=5)
    assert isinstance(conflict, CommitsError)
    assert (conflict.key, conflict.expected_version, conflict.provided_version) == ("foo", 3, 5)
    again = pickle.loads(pickle.dumps(conflict))
    assert again.fields == conflict.fields and str(again) == str(conflict)


def test_serialization_by_suffix():
    assert serialization_by_suffix("foo") is JSON
    assert serialization_by_suffix("db.yaml") is YAML and serialization_by_suffix("db.YML") is YAML
    assert serialization_by_suffix("notes.txt") is TEXT and serialization_by_suffix("blob.bin") is RAW
    assert serialization_by_suffix(".hidden") is JSON


# -- payload types (serve --payload) ------------------------------------------------------------------
def test_properties_read_as_java_util_properties_does():
    from workbench.commits.payloads import PROPERTIES

    text = ("# a comment\n! another\n\n  a = 1\nb:two\nc three\nd = con\\\n   tinued\n"
            "e=tab\\there \\u00e9\\\\\nf\\ g = spaced key\nempty=\nfirst=1\nfirst=2\r\nlast:  x  ")
    assert PROPERTIES.loads(text.encode()) == {
        "a": "1", "b": "two", "c": "three", "d": "continued", "e": "tab\there é\\", "f g": "spaced key",
        "empty": "", "first": "2", "last": "x  "}
    assert PROPERTIES.loads(b"") == {}
    value = {"k y": "v=1: #x", "plain": " lead\nnext", "ü": "ß"}
    assert PROPERTIES.loads(PROPERTIES.dumps(value)) == value


@pytest.mark.parametrize("payload", [b"a=\\u12", b"a=\\uZZZZ", b"\xff=1"])
def test_malformed_properties_are_invalid(payload):
    from workbench.commits.payloads import PROPERTIES

    with pytest.raises(ValueError, match="invalid properties"):
        PROPERTIES.loads(payload)
    with pytest.raises(InvalidCommit):
        Commit.from_bytes("conf", 1, payload, "me", serialization=PROPERTIES)


def test_payload_types_by_name():
    from workbench.commits.payloads import DEFAULT_PAYLOAD, PAYLOAD_CHOICES, PROPERTIES, payload_serialization
    from workbench.errors import ConfigurationError

    assert DEFAULT_PAYLOAD == "json" and payload_serialization("json") is JSON
    assert payload_serialization("bytes").loads(b"\xff") == b"\xff"
    assert payload_serialization("yaml").loads(b"new value") == "new value"
    assert payload_serialization("properties") is PROPERTIES
    by_key = payload_serialization("suffix")
    assert [by_key(key).name for key in ("a.properties", "b.yaml", "c.bin", "d")] == ["properties", "yaml", "raw", "json"]
    from workbench.commits.cli import PAYLOAD_NAMES

    assert tuple(PAYLOAD_NAMES) == tuple(PAYLOAD_CHOICES)
    with pytest.raises(ConfigurationError):
        payload_serialization("xml")
