"""ZdbMonitor: writes and status arrive as events through the shared listener model."""

from __future__ import annotations

from workbench.events import EventRecorder
from workbench.zdb.monitor import ZdbMonitor


def test_monitor_reports_writes_status_and_replica_lag(sm, te, connect):
    db, _ = connect(sm.address)
    db["before"] = 1
    recorder = EventRecorder()
    with ZdbMonitor(sm.address, timeout=5.0) as monitor:
        monitor.add_listener(recorder)
        first = recorder.wait_for("server_status")  # current state replayed first
        assert first.args[0]["keys"] == 1
        db["l"] = []
        db["l"].append(1)
        db.undo()
        applied = recorder.wait_for("record_applied", count=3)
        kinds = [e.args[0]["kind"] for e in recorder.events if e.kind == "record_applied"]
        assert kinds == ["write", "write", "undo"]
        assert applied.args[0]["seq"] == sm.seq
        final = sm.seq
        status = recorder.wait_for("server_status", lambda e: e.args[0]["seq"] == final
                                   and e.args[0]["replicas"].get(te.address, {}).get("seq") == final,
                                   timeout=10).args[0]
        assert status["replicas"][te.address]["lag"] == 0 and status["keys"] == 2
    assert recorder.kinds()[-1] == "closed"
