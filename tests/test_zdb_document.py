"""The zdb document model: reads, writes, atomicity, and exact undo/redo of every mutation."""

from __future__ import annotations

import copy
import json

import pytest

from workbench.zdb.document import Document, Op
from workbench.zdb.protocol import BadRequest, File, OperationError, decode, encode


def doc_with(**root):
    return Document(copy.deepcopy(root))


MUTATIONS = [
    # (initial root, op) for every supported mutation, including the tricky shapes
    ({"d": {"a": 1}}, Op(("d",), "__setitem__", ("a", 2))),
    ({"d": {"a": 1}}, Op(("d",), "__setitem__", ("b", [1, 2]))),
    ({"d": {"a": 1, "b": 2}}, Op(("d",), "__delitem__", ("a",))),
    ({"d": {"a": 1, "b": 2}}, Op(("d",), "pop", ("a",))),
    ({"d": {"a": 1, "b": 2}}, Op(("d",), "pop", ("zz", 5))),
    ({"d": {"a": 1, "b": 2}}, Op(("d",), "popitem", ())),
    ({"d": {"a": 1}}, Op(("d",), "setdefault", ("b", [3]))),
    ({"d": {"a": 1}}, Op(("d",), "setdefault", ("a", 9))),
    ({"d": {"a": 1, "b": 2}}, Op(("d",), "update", ({"a": 10, "c": 3},))),
    ({"d": {"a": 1}}, Op(("d",), "update", ([["b", 2], ["a", 5]],), {"z": 0})),
    ({"d": {"a": 1, "b": {"c": 2}}}, Op(("d",), "clear", ())),
    ({"l": [1, 2, 3]}, Op(("l",), "__setitem__", (1, "x"))),
    ({"l": [1, 2, 3]}, Op(("l",), "__setitem__", (-1, "x"))),
    ({"l": list(range(10))}, Op(("l",), "__setitem__", (slice(2, 5), ["a"]))),
    ({"l": list(range(10))}, Op(("l",), "__setitem__", (slice(2, 3), ["a", "b", "c", "d"]))),
    ({"l": list(range(10))}, Op(("l",), "__setitem__", (slice(8, 2), ["a", "b"]))),
    ({"l": list(range(10))}, Op(("l",), "__setitem__", (slice(None, None, 2), list("abcde")))),
    ({"l": list(range(10))}, Op(("l",), "__setitem__", (slice(None, None, -3), list("abcd")))),
    ({"l": list(range(10))}, Op(("l",), "__delitem__", (3,))),
    ({"l": list(range(10))}, Op(("l",), "__delitem__", (-2,))),
    ({"l": list(range(10))}, Op(("l",), "__delitem__", (slice(2, 6),))),
    ({"l": list(range(10))}, Op(("l",), "__delitem__", (slice(1, None, 3),))),
    ({"l": list(range(10))}, Op(("l",), "__delitem__", (slice(None, None, -4),))),
    ({"l": [1]}, Op(("l",), "append", ({"k": [1]},))),
    ({"l": [1]}, Op(("l",), "extend", ([2, 3, [4]],))),
    ({"l": [1]}, Op(("l",), "extend", ([],))),
    ({"l": [1, 2, 3]}, Op(("l",), "insert", (1, "x"))),
    ({"l": [1, 2, 3]}, Op(("l",), "insert", (-1, "x"))),
    ({"l": [1, 2, 3]}, Op(("l",), "insert", (99, "x"))),
    ({"l": [1, 2, 3]}, Op(("l",), "insert", (-99, "x"))),
    ({"l": [1, 2, 3]}, Op(("l",), "pop", ())),
    ({"l": [1, 2, 3]}, Op(("l",), "pop", (0,))),
    ({"l": [1, 2, 3]}, Op(("l",), "pop", (-2,))),
    ({"l": [1, 2, 3, 2]}, Op(("l",), "remove", (2,))),
    ({"l": [1, 2, 3]}, Op(("l",), "reverse", ())),
    ({"l": [3, 1, 2, 1]}, Op(("l",), "sort", ())),
    ({"l": [3, 1, 2, 1]}, Op(("l",), "sort", (), {"reverse": True})),
    ({"l": [1, [2], 3]}, Op(("l",), "clear", ())),
    ({"n": {"deep": {"l": [1, 2]}}}, Op(("n", "deep", "l"), "append", (3,))),
]


def python_result(root, op):
    """What plain Python does with the same call on a copy: the reference for every mutation."""
    root = copy.deepcopy(root)
    node = root
    for key in op.path:
        node = node[key]
    args = [a for a in op.args]
    if op.method == "update" and args and isinstance(args[0], list):
        args[0] = [tuple(p) for p in args[0]]
    result = getattr(node, op.method)(*args, **op.kwargs)
    return root, (list(result) if isinstance(result, tuple) else result)


@pytest.mark.parametrize("root, op", MUTATIONS, ids=[f"{op.method}-{i}" for i, (_, op) in enumerate(MUTATIONS)])
def test_each_mutation_matches_python_and_undoes_exactly(root, op):
    doc = Document(copy.deepcopy(root))
    expected_root, expected_result = python_result(root, op)
    assert doc.write([op]) == [expected_result]
    assert doc.root == expected_root
    after = copy.deepcopy(doc.root)
    doc.undo()
    assert doc.root == root
    doc.redo()
    assert doc.root == after
    doc.undo()
    assert doc.root == root
    # and the history survives a JSON round trip (it is journaled and snapshotted)
    saved = decode(encode(doc.history_to_json()))
    reloaded = Document(decode(encode(doc.root)))
    reloaded.history_from_json(saved)
    reloaded.redo()
    assert reloaded.root == after


def test_one_request_with_several_ops_undoes_as_one_step():
    doc = Document({"a": 1})
    doc.write([Op((), "__setitem__", ("b", [])), Op(("b",), "append", (1,)), Op((), "__delitem__", ("a",))])
    assert doc.root == {"b": [1]}
    doc.undo()
    assert doc.root == {"a": 1}
    with pytest.raises(OperationError, match="nothing to undo"):
        doc.undo()


def test_failed_request_rolls_back_its_applied_ops():
    doc = Document({"a": 1, "l": [1]})
    with pytest.raises(OperationError) as info:
        doc.write([Op((), "__setitem__", ("a", 2)), Op(("l",), "append", (2,)), Op(("missing",), "append", (3,))])
    assert info.value.kind == "KeyError"
    assert doc.root == {"a": 1, "l": [1]}
    assert not doc.undo_stack


def test_new_write_clears_redo_and_history_is_bounded():
    doc = Document({}, history_limit=3)
    for n in range(5):
        doc.write([Op((), "__setitem__", (f"k{n}", n))])
    doc.undo()
    assert len(doc.redo_stack) == 1
    doc.write([Op((), "__setitem__", ("x", 0))])
    assert not doc.redo_stack
    assert len(doc.undo_stack) == 3
    for _ in range(3):
        doc.undo()
    with pytest.raises(OperationError):
        doc.undo()
    assert doc.root == {"k0": 0, "k1": 1}  # k0 and k1 fell out of the bounded history


def test_reads_return_like_python():
    doc = Document({"d": {"a": 1, "b": 2}, "l": list(range(10)), "s": "text"})
    assert doc.read(Op(("d",), "keys")) == ["a", "b"]
    assert doc.read(Op(("d",), "items")) == [["a", 1], ["b", 2]]
    assert doc.read(Op(("d",), "get", ("zz", 7))) == 7
    assert doc.read(Op(("d",), "__contains__", ("a",))) is True
    assert doc.read(Op(("l", slice(2, 8, 2)))) == [2, 4, 6]
    assert doc.read(Op(("l",), "__getitem__", (-1,))) == 9
    assert doc.read(Op(("l",), "index", (4,))) == 4
    assert doc.read(Op(("l",), "__iter__")) == list(range(10))
    assert doc.read(Op(("s",))) == "text"


@pytest.mark.parametrize("op, kind", [
    (Op(("nope",)), "KeyError"),
    (Op(("l", 99)), "IndexError"),
    (Op(("l", "x")), "TypeError"),
    (Op(("d", 1)), "TypeError"),
    (Op(("s",), "append", (1,)), "TypeError"),
    (Op(("s", 0)), "TypeError"),
    (Op(("d",), "__class__"), "AttributeError"),
    (Op(("d",), "fromkeys", (["a"],)), "AttributeError"),
    (Op(("l",), "sort", (), {"key": "len"}), "TypeError"),
    (Op(("l",), "remove", (42,)), "ValueError"),
    (Op(("l",), "pop", (42,)), "IndexError"),
    (Op(("l", slice(0, 2)), "append", (1,)), "TypeError"),
    (Op(("d",), "__setitem__", ("k", float("nan"))), "ValueError"),
    (Op(("d",), "__setitem__", ("k", {"$slice": [1, 2, 3]})), "ValueError"),
    (Op(("d",), "__setitem__", ("k", object())), "TypeError"),
])
def test_bad_operations_raise_python_like_errors_and_change_nothing(op, kind):
    doc = Document({"d": {"a": 1}, "l": [3, 1], "s": "text"})
    before = copy.deepcopy(doc.root)
    with pytest.raises(OperationError) as info:
        if doc.is_write(op):
            doc.write([op])
        else:
            doc.read(op)
    assert info.value.kind == kind
    assert doc.root == before


def test_server_decides_what_is_a_write():
    doc = Document({"d": {}, "l": []})
    assert not doc.is_write(Op(("d",), "keys"))
    assert doc.is_write(Op(("d",), "update", ({},)))
    assert doc.is_write(Op(("l",), "pop"))
    assert not doc.is_write(Op(("l",)))


def test_too_deep_values_are_refused():
    value: list = []
    for _ in range(100):
        value = [value]
    doc = Document()
    with pytest.raises(OperationError, match="deeper"):
        doc.write([Op((), "__setitem__", ("deep", value))])


def test_wire_format_round_trip_and_bad_input():
    message = {"ops": [[["l", slice(1, None, 2)], None, [], {}]], "f": File("ab" * 32, "x.bin", 3)}
    assert decode(encode(message)) == message
    for bad in (b"\xff\xfe", b"{", b"[NaN]", b'{"$slice": [1, "a", 2]}', b'{"$file": {"hash": 1}}',
                b"[" * 10_000 + b"]" * 10_000, b"x" * 100):
        with pytest.raises(BadRequest):
            decode(bad, limit=50_000 if len(bad) != 100 else 10)
    assert json.loads(encode({"s": "é"})) == {"s": "é"}


@pytest.mark.parametrize("root, op", MUTATIONS, ids=[f"{op.method}-{i}" for i, (_, op) in enumerate(MUTATIONS)])
def test_write_one_on_the_node_try_read_found_is_write(root, op):
    """The server's single-op path (try_read, then write_one on its node) equals write([op])."""
    reference, doc = Document(copy.deepcopy(root)), Document(copy.deepcopy(root))
    expected = reference.write([op])
    is_read, node = doc.try_read(op)
    assert not is_read
    assert [doc.write_one(op, node)] == expected
    assert doc.root == reference.root
    doc.undo()
    assert doc.root == root


def test_write_one_refuses_a_path_through_a_slice_like_write():
    doc = doc_with(l=[[1], [2]])
    op = Op(("l", slice(0, 1)), "append", (3,))
    is_read, node = doc.try_read(op)
    with pytest.raises(OperationError, match="cannot write through a slice") as single:
        doc.write_one(op, node)
    with pytest.raises(OperationError, match="cannot write through a slice") as batch:
        doc.write([op])
    assert single.value.fields == batch.value.fields
    assert doc.root == {"l": [[1], [2]]} and not doc.undo_stack


@pytest.mark.parametrize("path, expected", [
    (("d", "a"), 1), (("l", 0), "x"), (("l", -1), "z"), (("l", -3), "x"), (("l", slice(0, 2)), ["x", "y"]),
    (("n", "deep", "l", 1), 2),
])
def test_resolve_reads_like_python(path, expected):
    doc = doc_with(d={"a": 1}, l=["x", "y", "z"], n={"deep": {"l": [1, 2]}})
    assert doc.resolve(path) == expected


@pytest.mark.parametrize("path, kind", [
    (("nope",), "KeyError"), (("l", 3), "IndexError"), (("l", -4), "IndexError"), (("l", True), "TypeError"),
    (("l", "0"), "TypeError"), (("d", 0), "TypeError"), (("d", "a", "b"), "TypeError"),
])
def test_resolve_errors_name_the_path_up_to_the_bad_key(path, kind):
    doc = doc_with(d={"a": 1}, l=["x", "y", "z"])
    with pytest.raises(OperationError) as error:
        doc.resolve(path)
    assert error.value.kind == kind
    assert error.value.fields["path"] == list(path)


@pytest.mark.parametrize("value, kind, path, type_name", [
    ({1: 2}, "TypeError", ["d", "k", 1], "int"),
    ({"a": (1, 2)}, "TypeError", ["d", "k", "a"], "tuple"),
    ({1, 2}, "TypeError", ["d", "k"], "set"),
    (b"x", "TypeError", ["d", "k"], "bytes"),
    ([float("nan")], "ValueError", ["d", "k", 0], "float"),
])
def test_the_server_refuses_what_json_cannot_keep_naming_where_and_what(value, kind, path, type_name):
    # a client that does not check (or an in-process caller) meets the same refusal at the server
    doc = Document({"d": {}})
    with pytest.raises(OperationError) as refused:
        doc.write([Op(("d",), "__setitem__", ("k", value))])
    assert refused.value.kind == kind
    assert refused.value.fields == {"path": path, "type": type_name}
    assert doc.root == {"d": {}}
