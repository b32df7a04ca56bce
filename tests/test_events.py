"""The shared listener model: order, failures, removal during dispatch, shutdown, waiting."""

from __future__ import annotations

import logging
import threading

import pytest

from workbench.errors import EventsError
from workbench.events import Event, EventDispatcher, EventRecorder, EventSource


class MethodListener:
    """A seed-style listener: only some event methods, recorded with the thread they ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.threads: set[str] = set()

    def process_joined(self, process) -> None:
        self.calls.append(("process_joined", (process,)))
        self.threads.add(threading.current_thread().name)

    def closed(self) -> None:
        self.calls.append(("closed", ()))


@pytest.fixture
def dispatcher():
    d = EventDispatcher("test")
    yield d
    d.close()


def test_events_arrive_in_emit_order_on_one_thread(dispatcher):
    listener = MethodListener()
    dispatcher.add_listener(listener)
    for n in range(1000):
        dispatcher.emit("process_joined", n)
    assert dispatcher.flush()
    assert [args[0] for _, args in listener.calls] == list(range(1000))
    assert len(listener.threads) == 1
    assert listener.threads != {threading.current_thread().name}


def test_object_listener_gets_only_its_methods_and_callable_gets_everything(dispatcher):
    listener, recorder = MethodListener(), EventRecorder()
    dispatcher.add_listener(listener)
    dispatcher.add_listener(recorder)
    dispatcher.emit("peer_joined", "p1")  # MethodListener has no peer_joined: not an error
    dispatcher.emit("process_joined", "te1")
    dispatcher.flush()
    assert listener.calls == [("process_joined", ("te1",))]
    assert recorder.kinds() == ["peer_joined", "process_joined"]
    assert all(isinstance(e, Event) and e.source == "test" for e in recorder.events)
    assert [e.seq for e in recorder.events] == sorted(e.seq for e in recorder.events)


def test_raising_listener_is_logged_and_delivery_goes_on(dispatcher, caplog):
    def broken(event):
        raise RuntimeError("listener bug")

    recorder = EventRecorder()
    dispatcher.add_listener(broken)
    dispatcher.add_listener(recorder)
    with caplog.at_level(logging.ERROR, logger="workbench.events"):
        dispatcher.emit("a")
        dispatcher.emit("b")
        dispatcher.flush()
    assert recorder.kinds() == ["a", "b"]
    assert sum("listener bug" in (r.exc_text or "") for r in caplog.records) == 2


def test_listener_removed_during_dispatch_gets_nothing_more(dispatcher):
    second = EventRecorder()

    def remover(event):
        # Removing a listener later in the list from inside dispatch: it must miss this event too.
        if event.kind == "stop-second":
            dispatcher.remove_listener(second)

    dispatcher.add_listener(remover)
    dispatcher.add_listener(second)
    dispatcher.emit("before")
    dispatcher.emit("stop-second")
    dispatcher.emit("after")
    dispatcher.flush()
    assert second.kinds() == ["before"]


def test_listener_removing_itself(dispatcher):
    seen = []

    def once(event):
        seen.append(event.kind)
        dispatcher.remove_listener(once)

    dispatcher.add_listener(once)
    for kind in ("x", "y", "z"):
        dispatcher.emit(kind)
    dispatcher.flush()
    assert seen == ["x"]
    assert dispatcher.listeners == []


def test_add_listener_twice_delivers_once(dispatcher):
    recorder = EventRecorder()
    dispatcher.add_listener(recorder)
    dispatcher.add_listener(recorder)
    dispatcher.emit("only")
    dispatcher.flush()
    assert recorder.kinds() == ["only"]


def test_initial_events_go_to_the_new_listener_only_and_first(dispatcher):
    old, new = EventRecorder(), EventRecorder()
    dispatcher.add_listener(old)
    dispatcher.add_listener(new, initial=[("process_joined", ("te1",)), ("process_joined", ("sm1",))])
    dispatcher.emit("process_left", "te1")
    dispatcher.flush()
    assert new.kinds() == ["process_joined", "process_joined", "process_left"]
    assert [e.args for e in new.events[:2]] == [("te1",), ("sm1",)]
    assert old.kinds() == ["process_left"]


def test_close_drains_then_sends_closed_exactly_once():
    d = EventDispatcher("closing")
    listener = MethodListener()
    d.add_listener(listener)
    for n in range(100):
        d.emit("process_joined", n)
    d.close()
    d.close()  # idempotent
    assert len(listener.calls) == 101
    assert listener.calls[-1] == ("closed", ())
    assert d.emit("process_joined", 999) is None  # after close: dropped, not delivered
    assert len(listener.calls) == 101
    with pytest.raises(EventsError):
        d.add_listener(MethodListener())


def test_close_from_inside_a_listener_does_not_deadlock():
    d = EventDispatcher("self-closing")
    recorder = EventRecorder()

    def closer(event):
        if event.kind == "shutdown":
            d.close()

    d.add_listener(closer)
    d.add_listener(recorder)
    d.emit("shutdown")
    recorder.wait_for("closed", timeout=5)
    assert recorder.kinds() == ["shutdown", "closed"]


def test_slow_listener_does_not_block_the_emitter():
    d = EventDispatcher("slow")
    gate = threading.Event()
    d.add_listener(lambda event: gate.wait(5))
    recorder = EventRecorder()
    d.add_listener(recorder)
    for n in range(50):  # returns at once although the first listener is stuck
        d.emit("tick", n)
    assert recorder.events == []
    gate.set()
    recorder.wait_for("tick", count=50)
    d.close()


def test_recorder_wait_for_with_predicate_and_timeout(dispatcher):
    recorder = EventRecorder()
    dispatcher.add_listener(recorder)
    threading.Timer(0.05, dispatcher.emit, args=("process_joined", 7)).start()
    event = recorder.wait_for("process_joined", lambda e: e.args[0] == 7)
    assert event.args == (7,)
    with pytest.raises(TimeoutError, match="process_left.*process_joined"):
        recorder.wait_for("process_left", timeout=0.1)


def test_flush_from_listener_is_refused(dispatcher):
    errors = []

    def flusher(event):
        try:
            dispatcher.flush()
        except EventsError as exc:
            errors.append(exc)

    dispatcher.add_listener(flusher)
    dispatcher.emit("x")
    dispatcher.flush()
    assert len(errors) == 1 and errors[0].source == "test"


def test_event_source_mixin_replays_state_to_new_listeners():
    class Processes(EventSource):
        def __init__(self) -> None:
            self._events = EventDispatcher("processes")
            self.running = ["sm1", "te1"]

        def initial_events(self):
            return [("process_joined", (name,)) for name in self.running]

    source = Processes()
    listener = MethodListener()
    source.add_listener(listener)
    source._events.emit("process_joined", "te2")
    source._events.flush()
    assert [args[0] for _, args in listener.calls] == ["sm1", "te1", "te2"]
    source.remove_listener(listener)
    source._events.emit("process_joined", "te3")
    source._events.close()
    assert len(listener.calls) == 3


def test_a_new_listener_does_not_also_get_events_queued_before_it_joined():
    d = EventDispatcher("queued")
    gate = threading.Event()
    d.add_listener(lambda event: gate.wait(5))  # holds the queue so events stay pending
    for n in range(3):
        d.emit("item_added", n)
    late = EventRecorder()
    d.add_listener(late, initial=[("item_added", (n,)) for n in range(3)])  # the state replayed
    d.emit("item_added", 3)
    gate.set()
    late.wait_for("item_added", count=4)
    d.flush()
    assert [e.args[0] for e in late.events] == [0, 1, 2, 3]
    d.close()
