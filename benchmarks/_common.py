"""Helpers shared by the benchmark scripts: machine facts, child servers, timed loops, reporting.

Everything here runs on loopback only. Servers are started as child processes (their own
interpreter, so they never share a GIL with the clients that measure them) and stopped by their
own pid; :class:`Cleanup` makes sure that happens even when a benchmark fails half-way.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

LOOPBACK = "127.0.0.1"


# -- machine facts ---------------------------------------------------------------------------------
def machine_facts(redis_server: str | None = "redis-server") -> list[str]:
    """Lines describing the machine and the versions that decide the figures."""
    import zmq

    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"machine: {platform.machine()} {platform.system()} {platform.release()}, "
             f"cores {cores} (usable {usable}), load avg {load}",
             f"python: {platform.python_implementation()} {platform.python_version()}",
             f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}"]
    try:
        import redis

        try:
            import hiredis  # noqa: F401
            parser = "hiredis parser"
        except ImportError:
            parser = "pure-Python parser"
        lines.append(f"redis-py {redis.__version__} ({parser})")
    except ImportError:
        lines.append("redis-py: not installed")
    if redis_server:
        binary = shutil.which(redis_server)
        if binary:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
            version = next((part[2:] for part in out.split() if part.startswith("v=")), out)
            lines.append(f"redis-server {version} ({binary})")
        else:
            lines.append("redis-server: not found")
    return lines


# -- reporting -------------------------------------------------------------------------------------
class Report:
    """Prints one aligned line per figure; ``check`` adds a target and PASS/MISS."""

    def __init__(self, width: int = 50) -> None:
        self.width = width
        self.misses: list[str] = []
        self.passes: list[str] = []

    def line(self, figure: str, label: str, value: str, note: str = "") -> None:
        text = f"[{figure}] {label:<{self.width}} {value:>14}"
        print(f"{text}   {note}" if note else text, flush=True)

    def rate(self, figure: str, label: str, rates: Sequence[float], unit: str = "ops/s") -> float:
        """A throughput line: the mean over rounds, with the spread of the rounds."""
        mean = statistics.fmean(rates)
        spread = f"(rounds {min(rates):,.0f}..{max(rates):,.0f})" if len(rates) > 1 else ""
        self.line(figure, label, f"{mean:,.0f} {unit}", spread)
        return mean

    def ratio(self, figure: str, label: str, value: float, at_least: float | None = None,
              at_most: float | None = None) -> None:
        note = ""
        if at_least is not None or at_most is not None:
            ok = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
            bound = f">= {at_least:g}" if at_least is not None else f"<= {at_most:g}"
            note = f"target {bound}  {'PASS' if ok else 'MISS'}"
            (self.passes if ok else self.misses).append(f"[{figure}] {label}")
        self.line(figure, label, f"{value:.2f}x", note)

    def seconds(self, figure: str, label: str, value: float, note: str = "") -> None:
        self.line(figure, label, format_seconds(value), note)


def format_seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- timed loops -----------------------------------------------------------------------------------
def rate(op: Callable[[], Any], seconds: float, chunk: int = 32) -> float:
    """Call ``op`` back to back for ``seconds``; returns calls per second."""
    count = 0
    began = time.perf_counter()
    end = began + seconds
    while True:
        for _ in range(chunk):
            op()
        count += chunk
        now = time.perf_counter()
        if now >= end:
            return count / (now - began)


def interleaved_rates(ops: dict[str, Callable[[], Any]], seconds: float, rounds: int,
                      warmup: float = 0.1) -> dict[str, list[float]]:
    """Measure each op ``rounds`` times, interleaved, so drift of a shared machine hits all alike."""
    for op in ops.values():
        rate(op, warmup, chunk=8)
    results: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, op in ops.items():
            results[name].append(rate(op, seconds / rounds))
    return results


# -- child processes -------------------------------------------------------------------------------
class ChildServer:
    """A server run as ``argv`` in its own session; ready when its stdout shows ``ready_marker``.

    The address is whatever follows the marker on that line (servers bound to port 0 print the
    port they got). Output goes to files under ``workdir``.
    """

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, ready_marker: str = "serving on",
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = Path(workdir)
        self.ready_marker = ready_marker
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 30.0) -> "ChildServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        out_path = self.workdir / f"{self.name}.out"
        err_path = self.workdir / f"{self.name}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=self.env)
        deadline = time.monotonic() + timeout
        while True:
            text = out_path.read_text(errors="replace")
            for line in text.splitlines():
                if self.ready_marker in line:
                    self.address = line.split(self.ready_marker, 1)[1].strip()
                    return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start (exit {self.process.returncode}):\n"
                                   f"{text}\n{err_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


ECHO_SERVER_CODE = r"""
import sys, zmq
endpoint, pattern = sys.argv[1], sys.argv[2]
context = zmq.Context()
sock = context.socket(zmq.REP if pattern == "rep" else zmq.ROUTER)
sock.bind(endpoint[:-2] + ":*" if endpoint.endswith(":0") else endpoint)
print("echo serving on", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
if pattern == "rep":
    recv, send = sock.recv, sock.send
    while True:
        send(recv(copy=True))
# "router": the shape of a zdb server loop (poll, drain without blocking, then answer the batch)
poller = zmq.Poller()
poller.register(sock, zmq.POLLIN)
while True:
    poller.poll(100)
    batch = []
    for _ in range(512):
        try:
            batch.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    for frames in batch:
        sock.send_multipart(frames, zmq.NOBLOCK)
"""


def echo_server(workdir: Path, pattern: str = "rep") -> ChildServer:
    """A pyzmq echo server in its own interpreter.

    ``rep``: a blocking REP socket, the floor for a Python ZeroMQ round trip. ``router``: a ROUTER
    polled and drained without blocking, the socket pattern an asynchronous server needs.
    """
    return ChildServer(f"echo-{pattern}", [sys.executable, "-c", ECHO_SERVER_CODE, f"tcp://{LOOPBACK}:0", pattern],
                       workdir).start()


class Cleanup:
    """Things to stop at the end, newest first (servers, pools)."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def add(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def run(self) -> None:
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"warning: cleanup step failed: {exc!r}", file=sys.stderr)


# -- concurrent clients in processes ---------------------------------------------------------------
def _worker_main(index: int, tasks: Any, results: Any, barrier: Any) -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        factory, args, seconds = task
        try:
            op, close = factory(index, *args)
        except Exception as exc:
            results.put((index, "error", f"setup: {exc!r}"))
            try:
                barrier.abort()
            except Exception:
                pass
            continue
        try:
            rate(op, 0.05, chunk=4)  # warm up: connections made, caches filled
            barrier.wait(60)
            results.put((index, "ok", rate(op, seconds, chunk=16)))
        except Exception as exc:
            results.put((index, "error", repr(exc)))
        finally:
            try:
                close()
            except Exception:
                pass


class ProcessClients:
    """``count`` client processes (spawned, not forked: they inherit no sockets or threads).

    ``measure(factory, args, seconds)`` runs ``factory(index, *args) -> (op, close)`` in every
    worker, lines them up on a barrier, calls ``op`` back to back for ``seconds`` and returns the
    per-worker rates; their sum is the aggregate throughput. ``factory`` must be a module-level
    function (it is pickled by name).
    """

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.count = count
        self.results = context.Queue()
        self.barrier = context.Barrier(count)
        self.queues = [context.Queue() for _ in range(count)]
        self.processes = [context.Process(target=_worker_main, args=(i, q, self.results, self.barrier),
                                          daemon=True, name=f"bench-client-{i}")
                          for i, q in enumerate(self.queues)]
        for process in self.processes:
            process.start()

    def measure(self, factory: Callable[..., tuple[Callable[[], Any], Callable[[], None]]],
                args: Iterable[Any], seconds: float) -> list[float]:
        self.barrier.reset()
        for queue in self.queues:
            queue.put((factory, tuple(args), seconds))
        rates: list[float] = []
        errors: list[str] = []
        for _ in range(self.count):
            index, status, value = self.results.get(timeout=seconds + 120)
            (rates if status == "ok" else errors).append(value)
        if errors:
            raise RuntimeError(f"client processes failed: {errors[:3]}")
        return rates

    def stop(self) -> None:
        for queue in self.queues:
            queue.put(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
