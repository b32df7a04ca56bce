"""The history checker on hand-made histories: ones that must pass and ones that must fail."""

from __future__ import annotations

import pytest

from workbench.testing.history import History, check


def write(history: History, client: str, key: str, value, start: float, end: float, outcome: str = "ok"):
    return history.complete(history.invoke(client, "write", key, value, at=start), outcome, at=end)


def read(history: History, client: str, key: str, result, start: float, end: float, replica: str = "te"):
    return history.complete(history.invoke(client, "read", key, replica=replica, at=start), "ok", result, at=end)


def test_a_sequential_history_with_fresh_reads_passes():
    h = History()
    for i in range(5):
        write(h, "w", "x", i, i, i + 0.5)
        read(h, "r", "x", i, i + 0.6, i + 0.7)
    report = check(h, {"sm": {"x": 4}, "te": {"x": 4}}, stale_bound=1.0)
    assert report.violations == [] and report.operations == 10


def test_concurrent_writes_may_end_in_either_order():
    h = History()
    write(h, "a", "x", "a1", 0, 2)
    write(h, "b", "x", "b1", 1, 3)  # overlaps a1: either may win
    assert check(h, {"sm": {"x": "a1"}}).violations == []
    assert check(h, {"sm": {"x": "b1"}}).violations == []


def test_an_older_final_value_is_a_lost_write():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 2, 3)
    report = check(h, {"sm": {"x": 1}})
    assert report.counts() == {"lost-write": 1}
    assert report.violations[0].fields["writes_lost"] == 1


def test_a_missing_key_after_an_acknowledged_write_is_lost_and_a_value_no_one_wrote_too():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    assert check(h, {"sm": {}}).counts() == {"lost-write": 1}
    assert check(h, {"sm": {"x": 99}}).counts() == {"lost-write": 1}


def test_a_failed_write_must_not_be_applied():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 2, 3, outcome="fail")
    assert check(h, {"sm": {"x": 1}}).violations == []
    assert check(h, {"sm": {"x": 2}}).counts() == {"failed-write-applied": 1}


def test_a_timed_out_write_may_apply_unless_its_client_moved_on():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 2, 5, outcome="timeout")
    assert check(h, {"sm": {"x": 2}}).violations == []  # nothing acknowledged after it: allowed
    write(h, "w", "x", 3, 6, 7)
    report = check(h, {"sm": {"x": 2}})
    assert report.counts() == {"zombie-write": 1}
    assert check(h, {"sm": {"x": 3}}).violations == []


def test_a_read_behind_by_more_than_the_bound_is_stale():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 2, 3)
    write(h, "w", "x", 3, 4, 5)
    read(h, "r", "x", 1, 3.5, 3.6)        # 0.5 s behind write 2: within 1 s
    assert check(h, {"sm": {"x": 3}}, stale_bound=1.0).violations == []
    read(h, "r", "x", 1, 10, 10.1, replica="te-b")     # 7 s and two writes behind
    report = check(h, {"sm": {"x": 3}}, stale_bound=1.0)
    [stale] = report.of_kind("stale-read")
    assert stale.fields["writes_behind"] == 2 and stale.fields["staleness"] == pytest.approx(7.0)
    assert stale.fields["replica"] == "te-b"
    assert check(h, {"sm": {"x": 3}}).violations == []  # no bound given: staleness not checked


def test_reads_of_the_future_and_of_nothing_written_fail():
    h = History()
    read(h, "r", "x", None, 0, 0.5)   # before any write: empty is fine
    write(h, "w", "x", 1, 1, 2)
    assert check(h, {"sm": {"x": 1}}).violations == []
    read(h, "r", "x", 7, 3, 4)
    assert check(h, {"sm": {"x": 1}}).counts() == {"phantom-read": 1}
    h2 = History()
    read(h2, "r", "x", 1, 0, 0.5)
    write(h2, "w", "x", 1, 1, 2)
    assert check(h2, {"sm": {"x": 1}}).counts() == {"future-read": 1}


def test_replicas_that_differ_do_not_converge():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 0.5, 1.5)
    report = check(h, {"sm": {"x": 1}, "te-b": {"x": 2}})
    assert report.counts() == {"divergence": 1}
    assert report.violations[0].fields["values"] == {"sm": 1, "te-b": 2}


def test_outcomes_and_kinds_are_checked_when_recorded():
    h = History()
    with pytest.raises(ValueError):
        h.invoke("c", "delete", "x")
    op = h.invoke("c", "write", "x", 1)
    with pytest.raises(ValueError):
        h.complete(op, "maybe")
    h.complete(op, "ok")
    assert h.counts() == {"write:ok": 1} and op.completed >= op.invoked


def test_a_history_survives_its_json_form(tmp_path):
    h = History()
    write(h, "w", "x", [1, "a"], 0, 1)
    read(h, "r", "x", [1, "a"], 2, 3)
    h.dump(tmp_path / "h.json")
    loaded = History.load(tmp_path / "h.json")
    assert loaded.operations == h.operations
    assert check(loaded, {"sm": {"x": [1, "a"]}}, stale_bound=0.1).violations == []


def test_a_replica_going_back_is_a_regression_or_a_zombie():
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 2, 3)
    read(h, "r", "x", 2, 4, 4.1)
    read(h, "r", "x", 1, 5, 5.1)
    assert check(h, {"sm": {"x": 2}}).counts() == {"regressed-read": 1}
    h = History()
    write(h, "w", "x", 1, 0, 1, outcome="timeout")
    write(h, "w", "x", 2, 2, 3)
    read(h, "r", "x", 2, 4, 4.1)
    read(h, "r", "x", 1, 5, 5.1)   # the timed-out write landed after the later one
    assert check(h, {"sm": {"x": 2}}).counts() == {"zombie-write": 1}
    h = History()
    write(h, "w", "x", 1, 0, 1)
    write(h, "w", "x", 2, 2, 3)
    read(h, "r", "x", 1, 4, 4.1, replica="te-b")   # another replica may lag: no regression
    read(h, "r", "x", 2, 3.5, 3.6, replica="te-c")
    read(h, "r", "x", 2, 5, 5.1, replica="te-b")
    assert check(h, {"sm": {"x": 2}}).violations == []


def test_appended_writes_are_checked_in_the_order_they_were_applied():
    h = History()
    write(h, "w", "log", 1, 0, 1)
    write(h, "w", "log", 2, 2, 5, outcome="timeout")
    write(h, "w", "log", 3, 6, 7)
    write(h, "w", "log", 4, 8, 9, outcome="fail")
    final = {"sm": {"log": 3}}
    assert check(h, final, applied={"sm": {"log": [1, 3]}}).violations == []  # the timed-out one never landed
    assert check(h, final, applied={"sm": {"log": [1, 2, 3]}}).violations == []  # or landed in its place
    zombie = check(h, {"sm": {"log": 2}}, applied={"sm": {"log": [1, 3, 2]}})
    assert set(zombie.counts()) == {"zombie-write"}
    assert [v.fields.get("overtaken") for v in zombie.of_kind("zombie-write")] == [None, 1]  # final, order
    assert check(h, final, applied={"sm": {"log": [1]}}).counts() == {"lost-write": 1}
    assert check(h, final, applied={"sm": {"log": [3, 1]}}).counts() == {"reordered-write": 1}
    assert check(h, final, applied={"sm": {"log": [1, 3, 3]}}).counts() == {"duplicate-write": 1}
    assert check(h, final, applied={"sm": {"log": [1, 3, 4]}}).counts() == {"failed-write-applied": 1}
