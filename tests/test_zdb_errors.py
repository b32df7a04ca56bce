"""zdb errors arrive as their declared classes: what the server raised is what a client catches."""

from __future__ import annotations

import pytest

import workbench.zdb as zdb
from workbench.errors import ZdbError
from workbench.zdb.errors import ZDB_ERRORS
from workbench.zdb.protocol import OperationError, error_reply


def test_a_lock_conflict_is_the_exported_lock_error(sm, connect):
    holder, _ = connect(sm.address)
    other, _ = connect(sm.address)
    holder.lock()
    try:
        with pytest.raises(zdb.LockError, match="timed out waiting") as caught:
            other.lock(wait=0.3)
        assert type(caught.value) is zdb.LockError and isinstance(caught.value, zdb.ZdbRemoteError)
    finally:
        holder.unlock()


def test_python_errors_of_a_path_are_declared_and_builtin_alike(sm, connect):
    db, _ = connect(sm.address)
    db["tea"] = {"kinds": ["green"]}
    with pytest.raises(KeyError) as missing:
        db["tea"]["nope"]._run()
    assert type(missing.value) is zdb.ZdbKeyError and isinstance(missing.value, ZdbError)
    assert missing.value.fields["path"] == ["tea", "nope"]
    with pytest.raises(zdb.ZdbIndexError):
        db["tea"]["kinds"][7]._run()
    with pytest.raises(zdb.UndoError):
        for _ in range(100):  # more undos than the one write made
            db.undo()


def test_the_reply_names_the_declared_kind_in_the_envelope():
    reply = error_reply(3, zdb.QuiescedError("quiesced", database="teas"))
    assert reply == {"id": 3, "ok": False,
                     "error": {"kind": "QuiescedError", "message": "quiesced", "fields": {"database": "teas"}}}
    assert error_reply(4, OperationError("KeyError", "'x'", path=["x"]))["error"]["kind"] == "KeyError"
    assert type(ZDB_ERRORS.error(reply["error"])) is zdb.QuiescedError


def test_an_unknown_kind_falls_back_with_its_kind_kept():
    error = ZDB_ERRORS.error({"kind": "FromTheFuture", "message": "new", "fields": {"n": 1}})
    assert type(error) is zdb.ZdbRemoteError and error.fields == {"n": 1, "kind": "FromTheFuture"}
