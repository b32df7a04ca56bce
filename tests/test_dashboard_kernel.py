"""A dashboard in a real IPython kernel, flooded with events: widget syncs stay bounded, state is right.

The test is the front end: it reads the kernel's IOPub channel through jupyter_client and counts
the widget ``update`` messages a browser would receive.
"""

from __future__ import annotations

import json
import queue
import textwrap

import pytest
from jupyter_client.manager import start_new_kernel

FLOOD = textwrap.dedent("""
    import json, time
    from IPython.display import display
    from workbench.events import EventDispatcher, EventSource
    from workbench_jupyter import EventFeedDashboard

    class Feed(EventSource):
        def __init__(self):
            self._events = EventDispatcher("flood")

    feed = Feed()
    dash = EventFeedDashboard(feed, max_rate=10)
    display(dash)
    began = time.monotonic()
    for i in range(10_000):
        feed._events.emit("tick", i)
        if i % 100 == 99:  # spread the 10,000 events over one second
            time.sleep(max(0.0, began + (i + 1) / 10_000 - time.monotonic()))
    assert dash.flush(30)
    elapsed = time.monotonic() - began
    print(json.dumps({"ids": [dash.summary.model_id, dash.table.model_id], "elapsed": elapsed,
                      "renders": dash.render_count, "events": dash.event_count}))
""")


@pytest.fixture
def kernel():
    manager, client = start_new_kernel(kernel_name="python3")
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def run_and_collect(client, code: str, timeout: float = 60) -> tuple[list[dict], str]:
    msg_id = client.execute(code)
    messages, stdout, idle = [], "", False
    while True:
        try:
            msg = client.get_iopub_msg(timeout=timeout if not idle else 1.0)
        except queue.Empty:
            if idle:
                return messages, stdout  # nothing more after idle: the render thread is done
            raise
        if msg["parent_header"].get("msg_id") != msg_id and msg["msg_type"] != "comm_msg":
            continue
        messages.append(msg)
        kind = msg["msg_type"]
        if kind == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if kind == "stream" and msg["content"]["name"] == "stdout":
            stdout += msg["content"]["text"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True


def test_ten_thousand_events_in_a_second_make_a_bounded_number_of_syncs(kernel):
    messages, stdout = run_and_collect(kernel, FLOOD)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["events"] == 10_000
    ids = set(result["ids"])
    updates = [m for m in messages if m["msg_type"] == "comm_msg"
               and m["content"]["comm_id"] in ids and m["content"]["data"].get("method") == "update"]
    # Two widgets, one message each per render, at most 10 renders a second (+1 for the first).
    bound = 2 * (10 * result["elapsed"] + 2)
    assert 0 < len(updates) <= bound, (len(updates), result)
    assert len(updates) == 2 * result["renders"]
    # The last state the front end saw is the final one: all 10,000 events, newest first.
    summary_id = result["ids"][0]
    last_summary = [m for m in updates if m["content"]["comm_id"] == summary_id][-1]
    assert "10000 events" in last_summary["content"]["data"]["state"]["value"]
    table_id = result["ids"][1]
    last_table = [m for m in updates if m["content"]["comm_id"] == table_id][-1]
    assert "<td>9999</td>" in last_table["content"]["data"]["state"]["value"]
