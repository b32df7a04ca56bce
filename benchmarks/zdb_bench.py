"""zdb against its peers: round trips, concurrency, checkpoint cost and replica staleness.

Run ``python benchmarks/zdb_bench.py`` (about 1-2 minutes; ``--quick`` for ~30 s, ``--seconds N``
per throughput measurement). Everything runs on 127.0.0.1 and is started and stopped here: the
zdb storage manager and replica as ``python -m workbench.zdb serve|replica`` child processes, a
pyzmq echo server, and a redis-server on its own port with ``--save '' --appendonly no``.

What is measured, and against what:

1. **Single-client round trips** (small values): zdb ``db["k"]._run()`` (get) and
   ``db["k"] = v`` (set: applied, journaled with ``--fsync never``, acknowledged) per second.
   Peers:

   * a raw pyzmq REQ/REP echo of the same payload as a zdb get request, served by a Python process:
     the most a Python client can get out of one ZeroMQ round trip, i.e. zdb's own floor. The ratio
     zdb/echo is the share of that floor zdb keeps after its protocol and server logic.
   * (reference, not a target) the same echo with zdb's socket pattern: a DEALER client that sends
     without blocking and polls for the answer, and a ROUTER server that polls and drains its socket
     without blocking. It splits the gap to the REQ/REP echo into what the asynchronous socket
     pattern costs and what zdb's own request handling (JSON, dispatch, document) costs.
   * redis-py GET/SET against a local redis-server: a mature key-value store reached from the
     same Python client side, the usual yardstick for "a small database round trip".
     The ratio echo / redis-py is printed too: a ZeroMQ request that does no work at all keeps
     that share of redis-py's rate, so it is the ceiling of zdb get / redis get on the machine.

   * the same zdb get and set against a storage manager with the dba login (PLAIN checked in each
     connection's handshake), in the same rounds: the ratio login on / off is what the login costs
     per request (it should cost nothing after the handshake).

   Each measurement is split in rounds interleaved across the peers, so drift of a shared machine
   hits them alike; the printed figure is the mean of the rounds, with their spread.
2. **Eight concurrent clients**, each in its own process (so the client GIL does not decide):
   aggregate ops/s for zdb, the REQ/REP echo and redis, with the ratios of figure 1 and its
   targets. On a small machine the clients compete with the servers for cores; that is part of
   what the figure shows.
3. **Checkpoint cost**: ``conn.save()`` with a document holding 10^4 and 10^6 list elements.
   The request-path time (the client's round trip of save: the server forks a child to write the
   snapshot) should barely depend on size; the time until the snapshot is durable
   (``status()["snapshot_seq"]`` reaches the saved seq) grows with it. Target: request path at
   10^6 <= 3x that at 10^4.
4. **Replica staleness**: with a transaction engine following the storage manager, the time
   from an acknowledged write on the SM to the first read on the replica that returns it (a tight
   read loop on the replica). Reported as p50/p99 over a few hundred writes, with the replica
   read round trip, which bounds the resolution.

5. **Document stores** on one nested document (a team with a lead, 100 members and a log),
   one client: read a path, append to a nested list, iterate a list with a filter. Peers: TinyDB
   (JSON file, no fsync: paired with zdb ``--fsync never``) and ZODB over ZEO (FileStorage, which
   fsyncs each commit: paired with zdb's default ``--fsync batch``). ``pip install -e '.[bench]'``
   installs them; without them the figure prints n/a.

Figure 1 pairs zdb and redis at equal durability: ``--fsync never`` against redis without AOF
(get, cached get where the client cache exists, set, and a pipeline of 100 sets) and zdb's
default ``--fsync batch`` against redis ``appendfsync always`` (set, pipeline of 100 sets).
``--only round-trips`` or ``--only documents`` runs figures 1-2 or 5 alone.

Figures are printed one per line; ratios come from the same run. Targets are printed with PASS or
MISS. Nothing here is run by the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    ChildServer,
    Cleanup,
    ProcessClients,
    Report,
    echo_server,
    format_seconds,
    interleaved_rates,
    machine_facts,
    percentile,
)

VALUE = "v" * 32  # a small value: 32 characters
PIPELINE = 100  # ops per pipelined request
GET_KEY = "k"
#: the dba login of the storage manager that measures what the login costs
DBA_USER, DBA_PASSWORD = "dba", "bench-password"

Op = tuple[Callable[[], Any], Callable[[], None]]


# -- clients: module-level factories, also run inside spawned client processes ----------------------
def zdb_get_client(index: int, address: str, login: bool = False) -> Op:
    from workbench.zdb import client

    db, conn = client(address, **({"user": DBA_USER, "password": DBA_PASSWORD} if login else {}))
    proxy = db[GET_KEY]
    return proxy._run, conn.close


def zdb_set_client(index: int, address: str, login: bool = False) -> Op:
    from workbench.zdb import client

    db, conn = client(address, **({"user": DBA_USER, "password": DBA_PASSWORD} if login else {}))
    key = f"w{index}"

    def op() -> None:
        db[key] = VALUE

    return op, conn.close


def zdb_pipelined_set_client(index: int, address: str) -> Op:
    """PIPELINE sets of a small value in one request (one call of the op)."""
    from workbench.zdb import client

    db, conn = client(address)
    keys = [f"p{index}-{n}" for n in range(PIPELINE)]

    def op() -> None:
        with db.pipeline() as p:
            for key in keys:
                p[key] = VALUE

    return op, conn.close


def zdb_cached_get_client(index: int, address: str) -> Op | None:
    """A get served by the client cache (``client(..., cache=True)``), or None where there is none."""
    import importlib.util

    from workbench.zdb import client

    if importlib.util.find_spec("workbench.zdb.cache") is None:
        return None
    db, conn = client(address, cache=True)
    proxy = db[GET_KEY]
    proxy._run()  # the first read fills the cache
    return proxy._run, conn.close


def echo_client(index: int, address: str, payload: bytes) -> Op:
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(address)
    send, recv = sock.send, sock.recv

    def op() -> None:
        send(payload)
        recv()

    def close() -> None:
        sock.close()
        context.term()

    return op, close


def dealer_echo_client(index: int, address: str, payload: bytes) -> Op:
    """zdb's client socket pattern without zdb: DEALER, non-blocking send, poll, recv_multipart."""
    import zmq

    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)

    def op() -> None:
        sock.send_multipart([b"", payload], zmq.NOBLOCK)
        sock.poll(10_000)
        sock.recv_multipart()

    def close() -> None:
        sock.close()
        context.term()

    return op, close


def redis_get_client(index: int, url: str) -> Op:
    import redis

    r = redis.Redis.from_url(url)
    return (lambda: r.get(GET_KEY)), r.close


def redis_set_client(index: int, url: str) -> Op:
    import redis

    r = redis.Redis.from_url(url)
    key = f"w{index}"
    return (lambda: r.set(key, VALUE)), r.close


def redis_pipelined_set_client(index: int, url: str) -> Op:
    """redis-py's pipeline of PIPELINE SETs (transaction=False: like zdb's, not one MULTI/EXEC)."""
    import redis

    r = redis.Redis.from_url(url)
    keys = [f"p{index}-{n}" for n in range(PIPELINE)]

    def op() -> None:
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, VALUE)
        pipe.execute()

    return op, r.close


def zdb_get_payload() -> bytes:
    """The bytes of a real zdb get request, for the echo peer to carry."""
    from workbench.zdb.protocol import encode

    return encode({"kind": "op", "client": "c-" + "0" * 32, "ops": [[[GET_KEY], None, [], {}]], "id": 123456})


# -- servers --------------------------------------------------------------------------------------
def start_sm(workdir: Path, name: str, cleanup: Cleanup, login: bool = False, fsync: str = "never") -> ChildServer:
    from workbench.zdb.cli import DBA_PASSWORD_VARIABLE

    extra, env = [], None
    if login:  # the password through the environment, as the domain passes it
        extra, env = ["--dba-user", DBA_USER], {**os.environ, DBA_PASSWORD_VARIABLE: DBA_PASSWORD}
    server = ChildServer(name, [sys.executable, "-m", "workbench.zdb", "serve", str(workdir / name / "archive"),
                                "--bind", "tcp://127.0.0.1:0", "--fsync", fsync, *extra], workdir / name,
                         env=env)
    server.start()
    cleanup.add(server.stop)
    return server


def start_te(workdir: Path, name: str, primary: str, cleanup: Cleanup) -> ChildServer:
    server = ChildServer(name, [sys.executable, "-m", "workbench.zdb", "replica", "--primary", primary,
                                "--bind", "tcp://127.0.0.1:0"], workdir / name)
    server.start()
    cleanup.add(server.stop)
    return server


def start_redis(workdir: Path, cleanup: Cleanup, aof_always: bool = False) -> Any:
    """redis-server without persistence, or with ``appendfsync always`` (an fsync per write)."""
    from workbench.testing.services import RedisServer

    class AofRedisServer(RedisServer):
        def command(self) -> list[str]:
            argv = list(super().command())
            at = argv.index("--appendonly")
            argv[at + 1] = "yes"
            return [*argv, "--appendfsync", "always", "--appendfilename", "bench.aof"]

    server = (AofRedisServer if aof_always else RedisServer)(workdir / ("redis-aof" if aof_always else "redis"))
    server.start()
    cleanup.add(server.stop)
    return server


# -- figures 1 and 2 --------------------------------------------------------------------------------
def round_trips(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> None:
    sm = start_sm(workdir, "sm-roundtrip", cleanup)
    sm_durable = start_sm(workdir, "sm-roundtrip-batch", cleanup, fsync="batch")
    sm_login = start_sm(workdir, "sm-roundtrip-login", cleanup, login=True)
    echo = echo_server(workdir / "echo")
    cleanup.add(echo.stop)
    router_echo = echo_server(workdir / "echo", pattern="router")
    cleanup.add(router_echo.stop)
    redis_server = start_redis(workdir, cleanup)
    redis_aof = start_redis(workdir, cleanup, aof_always=True)
    payload = zdb_get_payload()

    from workbench.zdb import client
    import redis

    db, conn = client(sm.address)
    db[GET_KEY] = VALUE
    with client(sm_login.address, user=DBA_USER, password=DBA_PASSWORD)[1] as login_conn:
        login_conn.run((), "__setitem__", (GET_KEY, VALUE))
    r = redis.Redis.from_url(redis_server.url())
    r.set(GET_KEY, VALUE)
    r.close()
    conn.close()

    specs = {
        "zdb get": (zdb_get_client, (sm.address,)),
        "zdb set": (zdb_set_client, (sm.address,)),
        "echo": (echo_client, (echo.address, payload)),
        "router echo": (dealer_echo_client, (router_echo.address, payload)),
        "redis get": (redis_get_client, (redis_server.url(),)),
        "redis set": (redis_set_client, (redis_server.url(),)),
    }

    # 1. one client, in this process
    ops: dict[str, Callable[[], Any]] = {}
    closers = []
    one_client_specs = {
        "zdb get, dba login": (zdb_get_client, (sm_login.address, True)),
        "zdb set, dba login": (zdb_set_client, (sm_login.address, True)),
        "zdb set, fsync batch": (zdb_set_client, (sm_durable.address,)),
        "redis set, AOF always": (redis_set_client, (redis_aof.url(),)),
        "zdb pipelined set": (zdb_pipelined_set_client, (sm.address,)),
        "redis pipelined set": (redis_pipelined_set_client, (redis_server.url(),)),
        "zdb pipelined set, fsync batch": (zdb_pipelined_set_client, (sm_durable.address,)),
        "redis pipelined set, AOF always": (redis_pipelined_set_client, (redis_aof.url(),)),
    }
    cached = zdb_cached_get_client(0, sm.address)
    if cached is not None:
        ops["zdb cached get"], close = cached
        closers.append(close)
    for name, (factory, fargs) in {**specs, **one_client_specs}.items():
        ops[name], close = factory(0, *fargs)
        closers.append(close)
    try:
        rates = interleaved_rates(ops, args.seconds, args.rounds)
    finally:
        for close in closers:
            close()
    for name in rates:
        if "pipelined" in name:  # one call is PIPELINE sets: count sets
            rates[name] = [value * PIPELINE for value in rates[name]]
    fig = "1"
    labels = {"echo": f"echo/s REQ/REP, 1 client ({len(payload)} B payload)",
              "router echo": "echo/s DEALER/ROUTER+poll, 1 client (reference)"}
    mean = {name: report.rate(fig, labels.get(name, f"{name}/s, 1 client"), values) for name, values in rates.items()}
    print(f"[{fig}] pairings of equal durability (each ratio from the same run):")
    print(f"[{fig}]   page cache only: zdb --fsync never vs redis without AOF")
    if "zdb cached get" in mean:
        report.ratio(fig, "zdb cached get / redis get", mean["zdb cached get"] / mean["redis get"], at_least=3)
    else:
        report.line(fig, "zdb cached get / redis get", "n/a", "(no client cache in this build)")
    report.ratio(fig, "zdb get / redis get", mean["zdb get"] / mean["redis get"], at_least=0.8)
    report.ratio(fig, "zdb set / redis set", mean["zdb set"] / mean["redis set"], at_least=0.6)
    report.ratio(fig, f"zdb pipelined set / redis pipeline ({PIPELINE} sets)",
                 mean["zdb pipelined set"] / mean["redis pipelined set"], at_least=1.0)
    print(f"[{fig}]   on disk before the answer: zdb default (--fsync batch) vs redis appendfsync always")
    report.ratio(fig, "zdb set / redis set, fsync", mean["zdb set, fsync batch"] / mean["redis set, AOF always"],
                 at_least=0.6)
    report.ratio(fig, f"zdb pipelined set / redis pipeline, fsync ({PIPELINE})",
                 mean["zdb pipelined set, fsync batch"] / mean["redis pipelined set, AOF always"], at_least=1.0)
    report.ratio(fig, "zdb get / echo", mean["zdb get"] / mean["echo"], at_least=0.5)
    # A request that does nothing at all: how much of redis-py's rate any ZeroMQ request from
    # Python keeps, so the share of that zdb get / redis get can reach at most.
    report.ratio(fig, "echo / redis get (ceiling of zdb get / redis get)", mean["echo"] / mean["redis get"])
    report.seconds(fig, "zdb get round trip - echo round trip (zdb's own work)",
                   1 / mean["zdb get"] - 1 / mean["echo"], "protocol, dispatch and document, both ends")
    report.ratio(fig, "zdb get / DEALER-ROUTER echo (reference)", mean["zdb get"] / mean["router echo"])
    report.ratio(fig, "zdb set / zdb get (journal cost)", mean["zdb set"] / mean["zdb get"])
    report.ratio(fig, "zdb pipelined set / zdb set (sets per second)", mean["zdb pipelined set"] / mean["zdb set"])
    report.ratio(fig, "zdb get with the dba login / without (login cost)",
                 mean["zdb get, dba login"] / mean["zdb get"])
    report.ratio(fig, "zdb set with the dba login / without (login cost)",
                 mean["zdb set, dba login"] / mean["zdb set"])

    # 2. N clients, one process each
    fig = "2"
    clients = ProcessClients(args.clients)
    cleanup.add(clients.stop)
    del specs["router echo"]
    totals: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(args.rounds):
        for name, (factory, fargs) in specs.items():
            totals[name].append(sum(clients.measure(factory, fargs, args.seconds / args.rounds)))
    n = args.clients
    agg = {name: report.rate(fig, f"{name}/s, {n} client processes (aggregate)", values)
           for name, values in totals.items()}
    report.ratio(fig, f"zdb get / redis get, {n} clients", agg["zdb get"] / agg["redis get"], at_least=0.8)
    report.ratio(fig, f"zdb get / echo, {n} clients", agg["zdb get"] / agg["echo"], at_least=0.7)
    report.ratio(fig, f"zdb set / redis set, {n} clients", agg["zdb set"] / agg["redis set"], at_least=0.6)
    report.ratio(fig, f"echo / redis get, {n} clients (ceiling of zdb get / redis get)",
                 agg["echo"] / agg["redis get"])
    report.ratio(fig, f"zdb get {n} clients / 1 client (scaling)", agg["zdb get"] / mean["zdb get"])


# -- figure 3 -----------------------------------------------------------------------------------------
def wait_durable(conn: Any, seq: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = conn.status()
        if status["snapshot_seq"] >= seq and not status["checkpoint_running"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"snapshot of seq {seq} not durable after {timeout:.0f}s: {status}")
        time.sleep(0.002)


def measure_save(size: int, reps: int, workdir: Path, cleanup: Cleanup) -> dict[str, Any]:
    from workbench.zdb import client

    sm = start_sm(workdir, f"sm-save-{size}", cleanup)
    db, conn = client(sm.address, timeout=300)
    began = time.perf_counter()
    db["data"] = list(range(size))
    load = time.perf_counter() - began
    assert len(db["data"]) == size
    pings = []
    for _ in range(50):
        t0 = time.perf_counter()
        conn.ping()
        pings.append(time.perf_counter() - t0)
    request, durable = [], []
    for rep in range(reps):
        db["tick"] = rep  # each checkpoint covers a new seq
        t0 = time.perf_counter()
        result = conn.save()
        t1 = time.perf_counter()
        if not result["started"]:
            raise RuntimeError(f"save did not start a checkpoint: {result}")
        wait_durable(conn, result["seq"])
        t2 = time.perf_counter()
        request.append(t1 - t0)
        durable.append(t2 - t0)
    archive = workdir / f"sm-save-{size}" / "archive"
    snapshot_bytes = sum(p.stat().st_size for p in archive.glob("snapshot-*.json"))
    conn.close()
    sm.stop()
    return {"request": request, "durable": durable, "load": load, "ping": statistics.median(pings),
            "snapshot_bytes": snapshot_bytes}


def checkpoints(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> None:
    fig = "3"
    results = {}
    for size in (10**4, 10**6):
        results[size] = res = measure_save(size, args.save_reps, workdir, cleanup)
        label = f"10^{len(str(size)) - 1}"
        each = ", ".join(format_seconds(v) for v in res["request"])
        report.seconds(fig, f"save() request path, {label} elements (median)", statistics.median(res["request"]),
                       f"(each: {each}; ping {format_seconds(res['ping'])})")
        each = ", ".join(format_seconds(v) for v in res["durable"])
        report.seconds(fig, f"save() until snapshot durable, {label} (median)", statistics.median(res["durable"]),
                       f"(each: {each}; snapshot {format_bytes(res['snapshot_bytes'])}; "
                       f"loading took {format_seconds(res['load'])})")
    small, big = (statistics.median(results[s]["request"]) for s in (10**4, 10**6))
    report.ratio(fig, "save() request path 10^6 / 10^4", big / small, at_most=3)
    small, big = (statistics.median(results[s]["durable"]) for s in (10**4, 10**6))
    report.ratio(fig, "save() until durable 10^6 / 10^4", big / small)


# -- figure 4 -----------------------------------------------------------------------------------------
def staleness(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> None:
    from workbench.zdb import client

    fig = "4"
    sm = start_sm(workdir, "sm-replica", cleanup)
    writer_db, writer = client(sm.address)
    writer_db["s"] = -1
    te = start_te(workdir, "te", sm.address, cleanup)
    reader_db, reader = client(te.address)  # reads on the replica are served by the replica itself
    probe = reader_db["s"]
    deadline = time.monotonic() + 10
    while probe._run() != -1:
        if time.monotonic() > deadline:
            raise RuntimeError("replica never caught up with the first write")
        time.sleep(0.01)
    rtts = []
    for _ in range(200):
        t0 = time.perf_counter()
        probe._run()
        rtts.append(time.perf_counter() - t0)
    lags, reads, first_read = [], [], 0
    for i in range(args.writes):
        writer_db["s"] = i
        acked = time.perf_counter()
        count = 0
        while True:
            count += 1
            if probe._run() == i:
                seen = time.perf_counter()
                break
            if time.perf_counter() - acked > 10:
                raise RuntimeError(f"write {i} not visible on the replica after 10 s")
        lags.append(seen - acked)
        reads.append(count)
        first_read += count == 1
    writer.close()
    reader.close()
    report.seconds(fig, f"replica staleness p50 ({args.writes} writes)", percentile(lags, 50),
                   f"(ack on SM -> first replica read returning it)")
    report.seconds(fig, "replica staleness p99", percentile(lags, 99), f"(max {format_seconds(max(lags))})")
    report.seconds(fig, "replica read round trip p50 (resolution)", percentile(rtts, 50),
                   f"(visible at the first read: {100 * first_read / len(lags):.0f}% of writes; "
                   f"mean reads until visible {statistics.fmean(reads):.2f})")


# -- figure 5 -----------------------------------------------------------------------------------------
def nested_document() -> dict[str, Any]:
    """The document-store workload's document: a team with a lead, 100 members and a log."""
    return {"teams": {"a": {"lead": "ada", "members": [{"name": f"m{i}", "age": 20 + i % 40} for i in range(100)],
                            "log": []}}}


def adults(members: Any) -> list[Any]:
    return [m for m in members if m["age"] > 40]


def zdb_document_ops(address: str) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    from workbench.zdb import client

    db, conn = client(address)
    team = db["doc"]["teams"]["a"]
    lead, log, members = team["lead"], team["log"], team["members"]
    return {"read a path": lead._run, "append to a nested list": lambda: log.append(VALUE),
            "iterate a list with a filter": lambda: adults(members)}, conn.close


def tinydb_document_ops(path: Path) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    """TinyDB's default JSON file storage: every operation reads (and a write rewrites) the file."""
    from tinydb import TinyDB

    store = TinyDB(path)
    table = store.table("docs")
    doc_id = table.insert(nested_document())

    def append() -> None:
        def change(doc: dict[str, Any]) -> None:
            doc["teams"]["a"]["log"].append(VALUE)
        table.update(change, doc_ids=[doc_id])

    return {"read a path": lambda: table.get(doc_id=doc_id)["teams"]["a"]["lead"],
            "append to a nested list": append,
            "iterate a list with a filter": lambda: adults(table.get(doc_id=doc_id)["teams"]["a"]["members"])}, \
        store.close


def zeo_document_ops(port: int) -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    """ZODB over ZEO: each operation a transaction of its own (a read sees the latest commit,
    served by the ZEO client cache, which the server's invalidations keep true)."""
    import transaction
    import ZEO
    from persistent.list import PersistentList
    from persistent.mapping import PersistentMapping

    database = ZEO.DB(("127.0.0.1", port))
    manager = transaction.TransactionManager()
    connection = database.open(manager)
    document = nested_document()
    team = document["teams"]["a"]
    with manager:
        connection.root()["doc"] = PersistentMapping(teams=PersistentMapping(a=PersistentMapping(
            lead=team["lead"], members=PersistentList(team["members"]), log=PersistentList())))
    stored = connection.root()["doc"]["teams"]["a"]

    def read() -> Any:
        manager.begin()
        return stored["lead"]

    def append() -> None:
        with manager:
            stored["log"].append(VALUE)

    def iterate() -> list[Any]:
        manager.begin()
        return adults(stored["members"])

    def close() -> None:
        manager.abort()
        connection.close()
        database.close()

    return {"read a path": read, "append to a nested list": append, "iterate a list with a filter": iterate}, close


def start_zeo(workdir: Path, cleanup: Cleanup) -> int:
    import socket

    with socket.socket() as probe:  # a free port: runzeo does not report the one it got for port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runzeo = Path(sys.executable).with_name("runzeo")
    (workdir / "zeo").mkdir(parents=True, exist_ok=True)
    server = ChildServer("zeo", ["sh", "-c", f'exec "{runzeo}" -a 127.0.0.1:{port} -f "{workdir / "zeo" / "Data.fs"}" '
                                             "2>&1"], workdir / "zeo", ready_marker="listening on")
    server.start()
    cleanup.add(server.stop)
    return port


def document_stores(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> None:
    """zdb against TinyDB (no fsync: zdb --fsync never) and ZODB/ZEO (FileStorage fsyncs each commit:
    zdb's default, --fsync batch) on one nested document, one client."""
    import importlib.util

    fig = "5"
    peers = [name for name, module in (("TinyDB", "tinydb"), ("ZEO", "ZEO")) if importlib.util.find_spec(module)]
    if not peers:
        report.line(fig, "document stores", "n/a", "(pip install -e '.[bench]' for TinyDB and ZODB/ZEO)")
        return
    from workbench.zdb import client

    sm = start_sm(workdir, "sm-doc", cleanup)
    sm_durable = start_sm(workdir, "sm-doc-batch", cleanup, fsync="batch")
    sides: dict[str, tuple[dict[str, Callable[[], Any]], Callable[[], None]]] = {}
    for name, address in (("zdb", sm.address), ("zdb fsync batch", sm_durable.address)):
        with client(address)[1] as conn:
            conn.run((), "__setitem__", ("doc", nested_document()))
        sides[name] = zdb_document_ops(address)
    if "TinyDB" in peers:
        sides["TinyDB"] = tinydb_document_ops(workdir / "tinydb.json")
    if "ZEO" in peers:
        sides["ZEO"] = zeo_document_ops(start_zeo(workdir, cleanup))
    ops = {f"{side} {what}": op for side, (side_ops, _) in sides.items() for what, op in side_ops.items()}
    try:
        rates = interleaved_rates(ops, args.seconds, args.rounds)
    finally:
        for _, close in sides.values():
            close()
    mean = {name: report.rate(fig, f"{name}/s", values) for name, values in rates.items()}
    print(f"[{fig}] (TinyDB runs in the client's process: no round trip, the file read each time; ZEO's reads "
          "come from its client cache, kept true by invalidations: zdb's cached get is that peer)")
    for peer, zdb_side in (("TinyDB", "zdb"), ("ZEO", "zdb fsync batch")):
        if peer not in sides:
            report.line(fig, f"zdb / {peer}", "n/a", "(not installed)")
            continue
        for what in sides[peer][0]:
            report.ratio(fig, f"{zdb_side} / {peer}: {what}", mean[f"{zdb_side} {what}"] / mean[f"{peer} {what}"],
                         at_least=1.0)


def format_bytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


# -- main ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (~30 s)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per throughput measurement (default 2, quick 0.5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes (default 8)")
    parser.add_argument("--only", choices=("round-trips", "documents"), default=None,
                        help="run one part only (figures 1-2 or 5)")
    parser.add_argument("--writes", type=int, default=None, help="writes for replica staleness (default 300)")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 2.0
    if args.writes is None:
        args.writes = 100 if args.quick else 300
    args.rounds = 2 if args.quick else 4
    args.save_reps = 3 if args.quick else 9
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="zdb-bench-"))
    cleanup = Cleanup()
    report = Report()
    print(f"zdb benchmark ({'quick' if args.quick else 'full'}: {args.seconds:g} s per throughput "
          f"measurement in {args.rounds} interleaved rounds)")
    for line in machine_facts():
        print(line)
    print("zdb servers: python -m workbench.zdb serve/replica child processes, --fsync never", flush=True)
    try:
        if args.only in (None, "round-trips"):
            round_trips(report, args, workdir, cleanup)
        if args.only in (None, "documents"):
            document_stores(report, args, workdir, cleanup)
        if args.only is None:
            checkpoints(report, args, workdir, cleanup)
            staleness(report, args, workdir, cleanup)
    finally:
        cleanup.run()
        shutil.rmtree(workdir, ignore_errors=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"targets: {len(report.passes)} PASS, {len(report.misses)} MISS"
          + (f" ({'; '.join(report.misses)})" if report.misses else "")
          + f"; run took {time.monotonic() - began:.0f} s; load avg now {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
