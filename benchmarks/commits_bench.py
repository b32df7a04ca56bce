"""commits against its limits: mirror latency through ZooKeeper, HTTP reads, and saves per second in SQL.

Run ``python benchmarks/commits_bench.py`` (about 2 minutes; ``--quick`` for well under one,
``--seconds N`` per throughput measurement). Everything runs on 127.0.0.1 and is started and
stopped here: a ZooKeeper, MariaDB and PostgreSQL (the harness classes of
``workbench.testing.services``, as the test fixtures use them), commits servers as
``python -m workbench.commits serve`` child processes, and a bare tornado server.

What is measured, and against what:

1. **Save -> mirror-visible latency on another client** (p50/p99 over a few hundred saves): a
   ``keeper_publishing`` storage saves (SQL first, then the keeper's version-guarded znode write),
   and a ``CommitMirror`` on a second kazoo client (a second ZooKeeper session) is timed until it
   shows the new version. The limit: a raw kazoo ``set`` on one client until the watch armed by
   the other fires and its read returns the new data (the watch-then-read a mirror must do too).
   Measured with the storage on SQLite (the system of record as deployed), in memory (the
   keeper and mirror path alone), and, as reference lines, on MariaDB and PostgreSQL servers
   that flush their log on every commit (``innodb_flush_log_at_trx_commit=1``; ``fsync=on``,
   ``synchronous_commit=on``) as deployed, unlike the test harness's servers.
   Target: SQLite mirror latency <= 1.5x the raw watch (p50).
   The ZooKeeper of this figure is the test harness's, which skips fsync (``forceSync=no``): its
   limit has no fsync in it while the SQLite save has one. So the figure also breaks the SQLite
   save down (the fsynced sqlite3 transaction alone, the same without the fsync: the fsync's
   cost, measured only), and is measured again, as reference lines without a target, against a
   second ZooKeeper that fsyncs its transaction log as a deployed one does (``forceSync=yes``).
2. **HTTP GET of a value, 8 concurrent clients** (each its own process, keep-alive connections):
   requests per second of ``GET /diary/KEY`` on a commits server, against a bare tornado handler
   in its own process returning the same bytes (the limit: tornado's own floor). Measured with
   reads served from the ZooKeeper mirror (``X-Rainer-Cached: Yes``, the builder's setup with
   ZooKeeper) and from SQLite directly. Target: mirror-served >= 0.7x the bare handler.
3. **Saves per second** on SQLite (a file, WAL, an fsync per commit), MariaDB and PostgreSQL (the
   harness's servers, which do not flush their log on commit): ``SqlCommitStorage.save``
   of successive versions of one key, one client, back to back (each save is a transaction: read
   the head, insert, commit); and 8 threads saving to 8 keys of their own.

Figures are printed one per line; ratios come from the same run. Targets are printed with PASS or
MISS. Nothing here is run by the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    ChildServer,
    Cleanup,
    ProcessClients,
    Report,
    percentile,
)

VALUE = b'{"max_connections":200,"timeout_seconds":30,"hosts":["db1","db2","db3"]}'
KEY = "limits"
ZK_PATH = "/bench/diary"

Op = tuple[Callable[[], Any], Callable[[], None]]

BARE_TORNADO_CODE = r"""
import asyncio, sys
import tornado.httpserver, tornado.netutil, tornado.web
body = bytes.fromhex(sys.argv[2])

class Value(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(body)

async def main():
    app = tornado.web.Application([(sys.argv[1], Value)])
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    tornado.httpserver.HTTPServer(app).add_sockets(sockets)
    print("bare tornado serving on", f"http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


# -- clients: module-level factories, also run inside spawned client processes ------------------------
def http_get_client(index: int, host: str, port: int, path: str, expected: bytes) -> Op:
    """One keep-alive connection doing ``GET path`` (the same client for every server measured)."""
    connection = http.client.HTTPConnection(host, port, timeout=10)

    def op() -> None:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or body != expected:
            raise RuntimeError(f"unexpected answer {response.status}: {body[:80]!r}")

    return op, connection.close


def rainer_get_client(index: int, url: str, key: str) -> Op:
    """``RainerClient.get_value`` (reference: what the project's own client adds)."""
    from workbench.commits.client import RainerClient

    client = RainerClient(url)
    return (lambda: client.get_value(key)), client.close


# -- services ------------------------------------------------------------------------------------------
def start_zookeeper(workdir: Path, cleanup: Cleanup) -> Any:
    from workbench.testing.services import ZooKeeperServer

    server = ZooKeeperServer(workdir / "zookeeper")
    server.start()
    cleanup.add(server.stop)
    return server


def start_sql_server(kind: str, cleanup: Cleanup, durable: bool = False) -> Any:
    """A MariaDB or PostgreSQL server in a world-traversable temp dir (their system users must reach it).

    The harness's servers do not flush their log on commit (throwaway test data); ``durable``
    turns that back on (the settings a deployment runs with), for the reference lines of figure 1.
    """
    from workbench.testing.services import MariaDBServer, PostgresServer, traversable_tempdir

    class DurableMariaDB(MariaDBServer):
        def command(self) -> Any:  # the last occurrence of an option wins
            return [*super().command(), "--innodb-flush-log-at-trx-commit=1"]

    class DurablePostgres(PostgresServer):
        def command(self) -> Any:  # the last -c of a setting wins
            return [*super().command(), "-c", "fsync=on", "-c", "synchronous_commit=on",
                    "-c", "full_page_writes=on"]

    workdir = traversable_tempdir(f"workbench-bench-{kind}-")
    cleanup.add(lambda: shutil.rmtree(workdir, ignore_errors=True))
    kinds = {"mariadb": DurableMariaDB if durable else MariaDBServer,
             "postgres": DurablePostgres if durable else PostgresServer}
    server = kinds[kind](workdir)
    server.start()
    cleanup.add(server.stop)
    if durable:
        check_durable(kind, server)
    return server


def check_durable(kind: str, server: Any) -> None:
    """Make sure the server really flushes its log on commit (or the lines would say otherwise)."""
    with server.admin_connection() as connection:
        cursor = connection.cursor()
        if kind == "mariadb":
            cursor.execute("SELECT @@innodb_flush_log_at_trx_commit")
            settings = {"innodb_flush_log_at_trx_commit": str(cursor.fetchone()[0])}
            wanted = {"innodb_flush_log_at_trx_commit": "1"}
        else:
            settings = {}
            for name in ("fsync", "synchronous_commit"):
                cursor.execute(f"SHOW {name}")
                settings[name] = cursor.fetchone()[0]
            wanted = {"fsync": "on", "synchronous_commit": "on"}
    if settings != wanted:
        raise RuntimeError(f"{kind} is not durable: {settings}")


def start_commits_server(workdir: Path, name: str, cleanup: Cleanup, *extra: str) -> ChildServer:
    server = ChildServer(name, [sys.executable, "-m", "workbench.commits", "serve", "--storage",
                                f"sqlite:///{workdir / name}.db", "--port", "0", "--prefix", "/diary", *extra],
                         workdir / name, ready_marker="commits serving on")
    server.start(timeout=60)
    cleanup.add(server.stop)
    return server


def kazoo_client(hosts: str, cleanup: Cleanup) -> Any:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=15)
    client.start(timeout=15)

    def close() -> None:
        client.stop()
        client.close()

    cleanup.add(close)
    return client


# -- figure 1 ------------------------------------------------------------------------------------------
def raw_watch_latencies(writer: Any, reader: Any, samples: int) -> list[float]:
    """kazoo ``set`` on ``writer`` -> the watch ``reader`` armed fires -> ``reader`` reads the new data.

    The least any watcher of another session can do to learn a new value: one notification and
    one read (which re-arms the watch), exactly what a mirror must do too.
    """
    path = "/bench/raw"
    writer.ensure_path(path)
    fired = threading.Event()

    def on_change(_event: Any) -> None:
        fired.set()

    latencies = []
    for n in range(samples + 10):
        data = VALUE + f" {n}".encode()
        fired.clear()
        reader.get(path, watch=on_change)
        began = time.perf_counter()
        writer.set(path, data)
        if not fired.wait(10):
            raise RuntimeError("the data watch never fired")
        seen, _stat = reader.get(path)
        if seen != data:
            raise RuntimeError("the watch fired but the data is not the new one")
        if n >= 10:  # the first ones warm up the sessions
            latencies.append(time.perf_counter() - began)
    return latencies


def mirror_latencies(storage: Any, mirror: Any, key: str, samples: int,
                     returned: list[float] | None = None) -> list[float]:
    """storage.save (publishing) -> the other client's mirror shows the version.

    ``returned`` collects how long each save took to return (SQL save plus znode write).
    """
    from workbench.commits.model import Commit

    latencies = []
    for n in range(samples + 10):
        version = n + 1
        commit = Commit.from_bytes(key, version, VALUE, "bench", validate=False)
        began = time.perf_counter()
        storage.save(commit)
        saved = time.perf_counter()
        mirror.wait_for(key, version, timeout=10)
        if n >= 10:
            latencies.append(time.perf_counter() - began)
            if returned is not None:
                returned.append(saved - began)
    return latencies


def sqlite3_transactions(path: Path, samples: int, synchronous: str) -> list[float]:
    """The SQL of one save straight on sqlite3 (WAL): BEGIN IMMEDIATE, version query, insert, COMMIT.

    With ``synchronous="FULL"`` (what the storage runs) COMMIT fsyncs the log; ``"OFF"`` is timed
    only to tell the fsync's share apart, never used to store anything.
    """
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        connection.execute("CREATE TABLE commits (commit_key VARCHAR(255), version INTEGER, author, comment, "
                           "mtime, is_empty, payload BLOB, PRIMARY KEY (commit_key, version))")
        latencies = []
        for version in range(1, samples + 11):
            began = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("SELECT max(version) FROM commits WHERE commit_key = ?", ("k",)).fetchone()
            connection.execute("INSERT INTO commits VALUES (?, ?, ?, ?, ?, ?, ?)",
                               ("k", version, "bench", "", "2026-01-01T00:00:00.000Z", False, VALUE))
            connection.execute("COMMIT")
            if version > 10:
                latencies.append(time.perf_counter() - began)
        return latencies
    finally:
        connection.close()


class DurableZooKeeper:
    """Builds the harness's ZooKeeper, but fsyncing its transaction log as a deployed one does."""

    @staticmethod
    def start(workdir: Path, cleanup: Cleanup) -> Any:
        from workbench.testing.services import ZooKeeperServer

        class Fsyncing(ZooKeeperServer):
            def prepare(self) -> None:
                super().prepare()
                config = self.conf_dir / "zoo.cfg"
                text = config.read_text()
                if "forceSync=no" not in text:
                    raise RuntimeError("the harness's zoo.cfg changed: cannot make it fsync")
                config.write_text(text.replace("forceSync=no", "forceSync=yes"))

        server = Fsyncing(workdir / "zookeeper-fsync")
        server.start()
        cleanup.add(server.stop)
        return server


def mirror_latency(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup,
                   zookeeper: Any, sql_servers: dict[str, Any]) -> None:
    from workbench.commits.keeper import CommitKeeper, keeper_publishing
    from workbench.commits.storage import MemoryCommitStorage, SqlCommitStorage

    writer = kazoo_client(zookeeper.hosts, cleanup)
    reader = kazoo_client(zookeeper.hosts, cleanup)
    fig = "1"
    raw = raw_watch_latencies(writer, reader, args.samples)
    report.seconds(fig, "raw kazoo set -> data watch p50 (limit)", percentile(raw, 50))
    report.seconds(fig, "raw kazoo set -> data watch p99", percentile(raw, 99))

    mirror = CommitKeeper(reader, ZK_PATH).mirror()
    cleanup.add(mirror.close)
    sqlite = SqlCommitStorage(f"sqlite:///{workdir / 'mirror.db'}").start()
    cleanup.add(sqlite.close)
    keeper = CommitKeeper(writer, ZK_PATH)
    returned: list[float] = []
    storages: list[tuple[str, Any, str]] = [("SQLite", sqlite, "on-sqlite"),
                                            ("memory", MemoryCommitStorage(), "in-memory")]
    for name, server in sql_servers.items():  # reference lines: the system of record on a server
        on_server = SqlCommitStorage(sql_database(server, cleanup)).start()
        cleanup.add(on_server.close)
        storages.append((name, on_server, f"on-{name.split()[-1].lower()}"))
    for label, underlying, key in storages:
        storage = keeper_publishing(underlying, keeper)
        latencies = mirror_latencies(storage, mirror, key, args.samples,
                                     returned if label == "SQLite" else None)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        report.seconds(fig, f"save ({label}) -> other client's mirror p50", p50)
        report.seconds(fig, f"save ({label}) -> other client's mirror p99", p99)
        target = {"at_most": 1.5} if label == "SQLite" else {}
        report.ratio(fig, f"mirror latency ({label}) / raw watch, p50", p50 / percentile(raw, 50), **target)
        report.ratio(fig, f"mirror latency ({label}) / raw watch, p99", p99 / percentile(raw, 99))
    sqlite_breakdown(report, args, workdir, returned)
    durable_zookeeper(report, args, workdir, cleanup)


def sqlite_breakdown(report: Report, args: argparse.Namespace, workdir: Path, returned: list[float]) -> None:
    """Where the SQLite figure's extra time goes, each step timed on its own."""
    from workbench.commits.storage import SqlCommitStorage

    fig = "1"
    report.seconds(fig, "  SQLite: publishing save returned p50 (SQL + znode)", percentile(returned, 50))
    sql_only = sql_save_latencies(SqlCommitStorage(f"sqlite:///{workdir / 'alone.db'}").start(), args.samples)
    report.seconds(fig, "  SQLite: SqlCommitStorage.save alone p50", percentile(sql_only, 50))
    full = sqlite3_transactions(workdir / "raw-full.db", args.samples, "FULL")
    report.seconds(fig, "  sqlite3 transaction, fsynced (synchronous=FULL) p50", percentile(full, 50))
    unsynced = sqlite3_transactions(workdir / "raw-off.db", args.samples, "OFF")
    report.seconds(fig, "  sqlite3 transaction, no fsync (measured only) p50", percentile(unsynced, 50))
    report.seconds(fig, "  SQLite's commit fsync (difference of the two)",
                   percentile(full, 50) - percentile(unsynced, 50))


def durable_zookeeper(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup) -> None:
    """Figure 1 again against a ZooKeeper that fsyncs its log (reference lines, no target)."""
    from workbench.commits.keeper import CommitKeeper, keeper_publishing
    from workbench.commits.storage import SqlCommitStorage

    fig = "1"
    zookeeper = DurableZooKeeper.start(workdir, cleanup)
    writer = kazoo_client(zookeeper.hosts, cleanup)
    reader = kazoo_client(zookeeper.hosts, cleanup)
    raw = raw_watch_latencies(writer, reader, args.samples)
    report.seconds(fig, "fsyncing ZooKeeper: raw set -> data watch p50", percentile(raw, 50))
    mirror = CommitKeeper(reader, ZK_PATH).mirror()
    cleanup.add(mirror.close)
    sqlite = SqlCommitStorage(f"sqlite:///{workdir / 'mirror-fsync.db'}").start()
    cleanup.add(sqlite.close)
    storage = keeper_publishing(sqlite, CommitKeeper(writer, ZK_PATH))
    latencies = mirror_latencies(storage, mirror, "on-sqlite", args.samples)
    report.seconds(fig, "fsyncing ZooKeeper: save (SQLite) -> mirror p50", percentile(latencies, 50))
    report.ratio(fig, "fsyncing ZooKeeper: mirror (SQLite) / raw watch, p50",
                 percentile(latencies, 50) / percentile(raw, 50))


def sql_save_latencies(storage: Any, samples: int) -> list[float]:
    from workbench.commits.model import Commit

    latencies = []
    try:
        for version in range(1, samples + 1):
            began = time.perf_counter()
            storage.save(Commit.from_bytes("alone", version, VALUE, "bench", validate=False))
            latencies.append(time.perf_counter() - began)
    finally:
        storage.close()
    return latencies


# -- figure 2 ------------------------------------------------------------------------------------------
def http_reads(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup, zookeeper: Any) -> None:
    from urllib.parse import urlsplit

    from workbench.commits.client import RainerClient

    cached = start_commits_server(workdir, "cached", cleanup, "--zookeeper", zookeeper.hosts,
                                  "--zk-path", ZK_PATH + "-http")
    direct = start_commits_server(workdir, "direct", cleanup)
    bare = ChildServer("bare-tornado", [sys.executable, "-c", BARE_TORNADO_CODE, f"/diary/{KEY}", VALUE.hex()],
                       workdir / "bare", ready_marker="bare tornado serving on").start()
    cleanup.add(bare.stop)
    for server in (cached, direct):
        with RainerClient(server.address) as client:
            client.post_commit({"key": KEY, "version": 1, "author": "bench", "comment": "value"}, VALUE)
    with RainerClient(cached.address) as client:  # wait until the value is served from the mirror
        deadline = time.monotonic() + 20
        while client.transport.request("GET", f"/{KEY}").headers.get("x-rainer-cached") != "Yes":
            if time.monotonic() > deadline:
                raise RuntimeError("the commits server never served the value from its mirror")
            time.sleep(0.05)

    targets = {"commits (mirror)": cached.address, "commits (SQLite)": direct.address, "bare tornado": bare.address}
    clients = ProcessClients(args.clients)
    cleanup.add(clients.stop)
    fig = "2"
    rates: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):  # interleaved rounds: drift of a shared machine hits all alike
        for name, url in targets.items():
            parts = urlsplit(url)
            path = f"/diary/{KEY}"  # every server serves the value at the same path
            per_client = clients.measure(http_get_client, (parts.hostname, parts.port, path, VALUE),
                                         args.seconds / args.rounds)
            rates[name].append(sum(per_client))
    means = {name: report.rate(fig, f"GET value, {args.clients} clients: {name}", values, "req/s")
             for name, values in rates.items()}
    rainer_rate = sum(clients.measure(rainer_get_client, (cached.address, KEY), args.seconds / args.rounds))
    report.line(fig, f"GET value, {args.clients} clients: RainerClient.get_value (mirror)",
                f"{rainer_rate:,.0f} req/s", "(reference: the project's client instead of bare http.client)")
    report.ratio(fig, "commits (mirror) / bare tornado", means["commits (mirror)"] / means["bare tornado"],
                 at_least=0.7)
    report.ratio(fig, "commits (SQLite) / bare tornado", means["commits (SQLite)"] / means["bare tornado"])


# -- figure 3 ------------------------------------------------------------------------------------------
def saves_per_second(report: Report, args: argparse.Namespace, workdir: Path, cleanup: Cleanup,
                     sql_servers: dict[str, Any]) -> None:
    from workbench.commits.storage import SqlCommitStorage

    fig = "3"
    urls: dict[str, Callable[[], Any]] = {"SQLite": lambda: f"sqlite:///{workdir / 'saves.db'}"}
    for name, server in sql_servers.items():
        urls[name] = lambda server=server: sql_database(server, cleanup)
    for name, make_url in urls.items():
        storage = SqlCommitStorage(make_url()).start()
        try:
            one = timed_saves(storage, ["solo"], args.seconds)
            report.line(fig, f"saves/s, 1 client: {name}", f"{one:,.0f} saves/s")
            many = timed_saves(storage, [f"key-{n}" for n in range(8)], args.seconds)
            report.line(fig, f"saves/s, 8 threads on 8 keys: {name}", f"{many:,.0f} saves/s")
        finally:
            storage.close()


def sql_database(server: Any, cleanup: Cleanup) -> str:
    context = server.temporary_database("bench_")
    url = context.__enter__()
    cleanup.add(lambda: context.__exit__(None, None, None))
    return url


def timed_saves(storage: Any, keys: list[str], seconds: float) -> float:
    """Saves per second of ``len(keys)`` threads, each committing successive versions of its key."""
    from workbench.commits.model import Commit

    counts = [0] * len(keys)
    stop = threading.Event()
    errors: list[BaseException] = []

    def saver(slot: int, key: str) -> None:
        version = (storage.get(key).version if storage.get(key) else 0)
        try:
            while not stop.is_set():
                version += 1
                storage.save(Commit.from_bytes(key, version, VALUE, "bench", validate=False))
                counts[slot] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(slot, key)) for slot, key in enumerate(keys)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"saves failed: {errors[0]!r}")
    return sum(counts) / elapsed


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (well under a minute)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per throughput measurement (default 4, quick 1)")
    parser.add_argument("--samples", type=int, default=None, help="saves timed for latency (default 400, quick 100)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP client processes (default 8)")
    parser.add_argument("--no-servers", action="store_true", help="skip MariaDB and PostgreSQL")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1.0 if args.quick else 4.0
    if args.samples is None:
        args.samples = 100 if args.quick else 400
    args.rounds = 2 if args.quick else 4
    return args


def machine_line() -> str:
    import platform
    from importlib.metadata import version

    import sqlalchemy
    import tornado

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {platform.machine()} {platform.system()} {platform.release()}, cores {os.cpu_count()}, "
            f"load avg {load}; python {platform.python_version()}, tornado {tornado.version}, "
            f"kazoo {version('kazoo')}, "
            f"SQLAlchemy {sqlalchemy.__version__}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="commits-bench-"))
    cleanup = Cleanup()
    report = Report(width=58)
    print(f"commits benchmark ({'quick' if args.quick else 'full'}: {args.samples} timed saves per latency "
          f"figure, {args.seconds:g} s per throughput figure)")
    print(machine_line(), flush=True)
    try:
        zookeeper = start_zookeeper(workdir, cleanup)
        sql_servers = {} if args.no_servers else {"MariaDB": start_sql_server("mariadb", cleanup),
                                                  "PostgreSQL": start_sql_server("postgres", cleanup)}
        durable_servers = {} if args.no_servers else {
            "durable MariaDB": start_sql_server("mariadb", cleanup, durable=True),
            "durable PostgreSQL": start_sql_server("postgres", cleanup, durable=True)}
        mirror_latency(report, args, workdir, cleanup, zookeeper, durable_servers)
        http_reads(report, args, workdir, cleanup, zookeeper)
        saves_per_second(report, args, workdir, cleanup, sql_servers)
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
