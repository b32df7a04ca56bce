"""Dashboards under load: a real IPython kernel floods a dashboard with events; what does the front end see?

The script is the front end. It starts a kernel through jupyter_client, displays an
``EventFeedDashboard`` there, and has a thread inside the kernel emit events at a steady rate
(1,000 a second for 30 s by default). Meanwhile it

- reads IOPub as a browser would and counts the widget ``update`` messages per second
  (target: at most 10 updates a second per widget of the dashboard);
- sends ``execute_request``s and times their round trip, against the same round trip measured
  on the idle kernel just before (target: flooded <= 2x idle, p50);
- checks, after the flood, that the last state the front end received is the final one.

    python benchmarks/dashboard_bench.py            # 1,000 events/s for 30 s
    python benchmarks/dashboard_bench.py --quick    # 1,000 events/s for 5 s
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import textwrap
import threading
import time

from jupyter_client.manager import start_new_kernel

SETUP = textwrap.dedent("""
    import json, threading, time
    from IPython.display import display
    from workbench.events import EventDispatcher, EventSource
    from workbench_jupyter import EventFeedDashboard

    class Feed(EventSource):
        def __init__(self):
            self._events = EventDispatcher("flood")

    feed = Feed()
    dash = EventFeedDashboard(feed, max_rate={max_rate})
    display(dash)
    print(json.dumps({{"ids": [dash.summary.model_id, dash.table.model_id]}}))
""")

FLOOD = textwrap.dedent("""
    def flood(rate={rate}, seconds={seconds}):
        began = time.monotonic()
        total = int(rate * seconds)
        for i in range(total):
            feed._events.emit("tick", i)
            if i % 10 == 9:  # pace in small batches: a steady stream, not bursts
                time.sleep(max(0.0, began + (i + 1) / rate - time.monotonic()))
        flood.elapsed = time.monotonic() - began

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
""")

REPORT = textwrap.dedent("""
    flooder.join()
    assert dash.flush(60)
    print(json.dumps({"elapsed": flood.elapsed, "renders": dash.render_count, "events": dash.event_count}))
""")


class FrontEnd:
    """Reads IOPub on its own thread, keeping the widget updates and the stdout text it sees."""

    def __init__(self, client) -> None:
        self.client = client
        self.updates: list[tuple[float, str, dict]] = []  # (arrival, comm id, state)
        self.stdout: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg" and content["data"].get("method") == "update":
                self.updates.append((time.monotonic(), content["comm_id"], content["data"]["state"]))
            elif kind == "stream" and content["name"] == "stdout":
                self.stdout.append(content["text"])
            elif kind == "error":
                print("\n".join(content["traceback"]), file=sys.stderr)

    def last_json(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = "".join(self.stdout).strip().splitlines()
            if lines and lines[-1].startswith("{"):
                self.stdout.clear()
                return json.loads(lines[-1])
            time.sleep(0.05)
        raise TimeoutError("the kernel printed no result")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def round_trips(client, count: int, pause: float) -> list[float]:
    """Execute ``pass`` ``count`` times; the seconds from request to execute_reply, each."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        reply = client.execute("pass", reply=True, timeout=60)
        times.append(time.perf_counter() - began)
        assert reply["content"]["status"] == "ok", reply
        time.sleep(pause)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="flood duration")
    parser.add_argument("--max-rate", type=float, default=10.0, help="dashboard renders per second")
    parser.add_argument("--quick", action="store_true", help="a 5 s flood")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 5.0

    manager, client = start_new_kernel(kernel_name="python3")
    front = FrontEnd(client)
    try:
        client.execute(SETUP.format(max_rate=args.max_rate), reply=True, timeout=60)
        ids = front.last_json()["ids"]
        idle = round_trips(client, 50, 0.02)

        client.execute(FLOOD.format(rate=args.rate, seconds=args.seconds), reply=True, timeout=60)
        flood_began = time.monotonic()
        flooded: list[float] = []
        while time.monotonic() - flood_began < args.seconds * 0.95:
            flooded.extend(round_trips(client, 1, 0.05))
        client.execute(REPORT, reply=True, timeout=120)
        result = front.last_json()
        time.sleep(2.0 / args.max_rate)  # let the last render's messages arrive
    finally:
        front.stop()
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    expected_events = int(args.rate * args.seconds)
    ours = [u for u in front.updates if u[1] in ids]
    during = [u for u in ours if u[0] >= flood_began]
    span = max(result["elapsed"], 1e-9)
    per_widget = {cid: sum(1 for u in during if u[1] == cid) / span for cid in ids}
    summary = [u[2] for u in ours if u[1] == ids[0] and "value" in u[2]]
    table = [u[2] for u in ours if u[1] == ids[1] and "value" in u[2]]
    final_ok = (result["events"] == expected_events and bool(summary) and bool(table)
                and f"{expected_events} events" in summary[-1]["value"]
                and f"<td>{expected_events - 1}</td>" in table[-1]["value"])

    idle_p50, flooded_p50 = statistics.median(idle), statistics.median(flooded)
    print(f"flood: {result['events']:,} events in {result['elapsed']:.1f} s "
          f"({result['events'] / span:,.0f}/s), {result['renders']} renders")
    worst = max(per_widget.values())
    print(f"widget updates per second per widget: {worst:.1f} (target <= {args.max_rate:g}) "
          f"{'ok' if worst <= args.max_rate + 1 else 'MISSED'}")
    print(f"execute round trip idle: p50 {idle_p50 * 1e3:.2f} ms, p99 {percentile(idle, 0.99) * 1e3:.2f} ms")
    print(f"execute round trip flooded: p50 {flooded_p50 * 1e3:.2f} ms, "
          f"p99 {percentile(flooded, 0.99) * 1e3:.2f} ms ({len(flooded)} requests)")
    ratio = flooded_p50 / idle_p50
    print(f"flooded / idle p50: {ratio:.2f}x (target <= 2x) {'ok' if ratio <= 2 else 'MISSED'}")
    print(f"final state correct: {'yes' if final_ok else 'NO'}")
    return 0 if final_ok else 1


if __name__ == "__main__":
    sys.exit(main())
