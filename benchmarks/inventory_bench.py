"""The inventory against its limits and peers: RAM per file, full loads, change propagation, /data queries.

Run ``python benchmarks/inventory_bench.py`` (10^4 datasets, 10^5 blocks, 10^6 files: several
minutes) or ``--quick`` (a tenth of that). Everything runs on 127.0.0.1 and is started and
stopped here: a MariaDB server (``workbench.testing.services.MariaDBServer``, as the test fixtures
start it), SQLite files in a temp dir, inventory servers as ``python -m workbench.inventory serve``
child processes, and the web server.

1. **Bytes per File object**: ``tracemalloc`` over N ``File`` objects of one block (lfns of a
   realistic shape), against a plain Python class with ``__dict__`` holding the same attributes
   (lfn, block, size, adler32, md5). Target: <= 200 bytes per File.
2. **Full load** of the image (every file loaded) from SQLite and from MariaDB, each in a fresh
   interpreter: seconds and resident memory growth (VmRSS), against the peer of fetching the same
   rows with the same driver and nothing else (``SELECT`` of every table, rows discarded): the ratio
   load/fetch is what building the linked image costs on top of reading it.
3. **Change propagation**: an application (``workbench inventory exec --write``) makes 10^4
   changes on the primary; the time from the application's exit to the moment they are visible on
   a secondary server (its ``/data/inventory/stats``). Target: within 2 s.
4. **/data queries per second**: ``/data/inventory/dataset?name=...`` from 4 client processes
   against the web server over the loaded image, against a bare tornado handler answering a fixed
   JSON body in the same setup (the HTTP floor).
5. **Application round trip**: a trivial read-only application (``pass``) through
   ``InventoryClient.exec_script`` over the authenticated application socket (peer credentials
   checked, a child forked and reaped), against spawning ``python -c pass`` (the physical floor of
   running any Python application in a new process) in the same run: median seconds of each and
   their ratio.

Figures are printed one per line with targets and PASS/MISS; nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Cleanup, ProcessClients, Report, machine_facts  # noqa: E402

Op = tuple[Callable[[], Any], Callable[[], None]]


def lfn(dataset: int, block: int, file: int) -> str:
    """A file name of the usual shape: a dataset directory, then a 36-character unique name."""
    return (f"/store/data/Run2024A/Sample{dataset:05d}/AOD/PromptReco-v1/000/{block:03d}/"
            f"{dataset:08x}-{block:04x}-{file:04x}-0000-{dataset * 7919 + file:012x}.root")


# -- figure 1: bytes per File -------------------------------------------------------------------------

class PlainFile:
    """The peer: the same attributes in an ordinary ``__dict__``."""

    def __init__(self, lfn: str, block: Any, size: int, adler32: str | None, md5: str | None) -> None:
        self.lfn = lfn
        self.block = block
        self.size = size
        self.adler32 = adler32
        self.md5 = md5


def measure_bytes(make: Callable[[int], Any], count: int) -> float:
    """Traced bytes per object of ``count`` objects made by ``make(i)`` and kept in a list."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make(i) for i in range(count)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == count
    return (after - before) / count


def file_bytes(report: Report, count: int) -> None:
    from workbench.inventory import Block, Dataset, File

    dataset = Dataset("/Sample00001/Run2024A-PromptReco-v1/AOD")
    block = Block("b0001", dataset)
    # Each file's own strings are made inside the measurement, as a load makes them.
    ours = measure_bytes(lambda i: File(lfn(1, 1, i), block, size=2_500_000_000 + i, adler32=f"{i:08x}"), count)
    plain = measure_bytes(lambda i: PlainFile(lfn(1, 1, i), block, 2_500_000_000 + i, f"{i:08x}", None), count)
    report.line("1", f"File object, {count:,} in one block", f"{ours:.0f} B", "")
    report.line("1", "plain __dict__ object, same attributes", f"{plain:.0f} B", "")
    report.ratio("1", "File bytes vs the 200-byte limit", ours / 200, at_most=1.0)
    report.ratio("1", "plain object / File (memory saved)", plain / ours)


# -- figure 2: full loads -----------------------------------------------------------------------------

def _chunks(rows: Any, size: int = 20_000) -> Any:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


FILE_SIZE = 2_500_000_000
SITES = ["T1_US_FNAL_Disk", "T2_CH_CERN", "T2_DE_DESY", "T2_US_MIT"]


def populate(url: str, datasets: int, blocks_per: int, files_per: int) -> None:
    """Write an inventory straight into the store's tables with bulk inserts (parents before children)."""
    from sqlalchemy import insert

    from workbench.inventory.store import (Store, block_replicas_table, blocks_table, dataset_replicas_table,
                                           datasets_table, files_table, groups_table, sites_table)

    store = Store(url)
    block_bytes = FILE_SIZE * files_per
    blocks = ((d, b, d * blocks_per + b + 1) for d in range(datasets) for b in range(blocks_per))
    with store.engine.begin() as conn:
        conn.execute(insert(groups_table), [{"id": 1, "name": "AnalysisOps", "olevel": "block"}])
        conn.execute(insert(sites_table), [
            {"id": i + 1, "name": name, "host": f"{name.lower()}.example.org", "storage_type": "disk",
             "backend": "", "status": "ready", "filename_mapping": "{}"} for i, name in enumerate(SITES)])
        for chunk in _chunks({"id": d + 1, "name": f"/Sample{d:05d}/Run2024A-PromptReco-v1/AOD", "status": "valid",
                              "data_type": "data", "software_version": "CMSSW_14_0_1", "last_update": 0,
                              "is_open": False} for d in range(datasets)):
            conn.execute(insert(datasets_table), chunk)
        for chunk in _chunks({"id": i, "dataset_id": d + 1, "name": f"b{b:04d}", "size": block_bytes,
                              "num_files": files_per, "is_open": False, "last_update": 0} for d, b, i in blocks):
            conn.execute(insert(blocks_table), chunk)
        files = ({"block_id": d * blocks_per + b + 1, "lfn": lfn(d, b, f), "size": FILE_SIZE,
                  "adler32": f"{(d * blocks_per + b) * files_per + f:08x}", "md5": None}
                 for d in range(datasets) for b in range(blocks_per) for f in range(files_per))
        for chunk in _chunks(files):
            conn.execute(insert(files_table), chunk)
        for chunk in _chunks({"dataset_id": d + 1, "site_id": d % len(SITES) + 1, "growing": False, "group_id": 1}
                             for d in range(datasets)):
            conn.execute(insert(dataset_replicas_table), chunk)
        for chunk in _chunks({"block_id": d * blocks_per + b + 1, "site_id": d % len(SITES) + 1, "group_id": 1,
                              "is_custodial": False, "size": block_bytes, "last_update": 0}
                             for d in range(datasets) for b in range(blocks_per)):
            conn.execute(insert(block_replicas_table), chunk)
    store.close()


LOAD_CODE = r"""
import gc, json, sys, time
from sqlalchemy import select

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

from workbench.inventory import Inventory
from workbench.inventory.store import OBJECT_TABLES, Store

url, mode = sys.argv[1], sys.argv[2]
store = Store(url, create=False)
with store.engine.connect() as conn:  # the driver and the pool warmed up before measuring
    conn.execute(select(1))
gc.collect()
base = rss()
began = time.perf_counter()
if mode == "load":
    inventory = Inventory("bench")
    inventory.emit_events = False
    store.load(inventory)
    counts = inventory.summary()
else:
    counts = {}
    with store.engine.connect() as conn:
        for table in OBJECT_TABLES:
            counts[table.name] = sum(1 for _ in conn.execution_options(yield_per=20000).execute(select(table)))
seconds = time.perf_counter() - began
gc.collect()
print(json.dumps({"seconds": seconds, "rss_growth": rss() - base, "counts": counts}))
"""


def measure_load(url: str, mode: str) -> dict[str, Any]:
    """Load (or fetch) in a fresh interpreter: seconds, RSS growth, counts."""
    out = subprocess.run([sys.executable, "-c", LOAD_CODE, url, mode], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} of {url.split('@')[-1]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def full_loads(report: Report, stores: dict[str, str], scale: tuple[int, int, int]) -> None:
    datasets, blocks_per, files_per = scale
    files = datasets * blocks_per * files_per
    for name, url in stores.items():
        began = time.perf_counter()
        populate(url, *scale)
        report.seconds("2", f"{name}: bulk insert of the test inventory", time.perf_counter() - began)
        fetch = measure_load(url, "fetch")
        load = measure_load(url, "load")
        assert load["counts"]["files"] == files, load["counts"]
        report.seconds("2", f"{name}: fetch every row (peer)", fetch["seconds"])
        report.seconds("2", f"{name}: full load {datasets:,}/{datasets * blocks_per:,}/{files:,}", load["seconds"])
        report.ratio("2", f"{name}: load / fetch", load["seconds"] / fetch["seconds"])
        report.line("2", f"{name}: resident memory growth of the load", f"{load['rss_growth'] / 2**20:,.0f} MiB",
                    f"{load['rss_growth'] / files:.0f} B per file, all objects included")


# -- figure 3: change propagation --------------------------------------------------------------------------

#: 100 datasets of 99 blocks: 10^4 updates; the last line is the wall clock of the script's end
PROPAGATION_APP = """
import time
from workbench.inventory.executable import inventory
from workbench.inventory import Block, Dataset
for d in range(100):
    dataset = Dataset(f"/Propagation{d:03d}/Run2025-v1/AOD", status="valid")
    inventory.update(dataset)
    for b in range(99):
        inventory.update(Block(f"b{b:04d}", dataset, size=10**9, num_files=1))
print(repr(time.time()))
"""
PROPAGATION_CHANGES = 10_000


def start_inventory_server(name: str, url: str, workdir: Path, cleanup: Cleanup,
                           master: bool = False) -> dict[str, Any]:
    """``workbench inventory serve`` as a child process; returns the JSON line it prints once online."""
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "workbench.inventory", "serve", "--store", url, "--socket",
            str(directory / "app.sock"), "--web-port", "0"]
    if master:
        argv += ["--master", url]
    out_path = directory / "out"
    with open(out_path, "wb") as out, open(directory / "err", "wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    cleanup.add(stop)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for line in out_path.read_text().splitlines():
            if line.startswith("{"):
                return json.loads(line)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not come online:\n{(directory / 'err').read_text()[-3000:]}")


def propagation(report: Report, stores: dict[str, str], workdir: Path, cleanup: Cleanup) -> None:
    from workbench.inventory.client import InventoryClient

    for name, url in stores.items():
        primary = start_inventory_server(f"primary-{name}", url, workdir, cleanup)
        secondary = start_inventory_server(f"secondary-{name}", url, workdir, cleanup, master=True)
        with InventoryClient(primary["address"], timeout=600) as client, \
                InventoryClient(secondary["address"], timeout=60) as follower:
            client.authorize(PROPAGATION_APP, title="propagation", user="bench")
            began = time.time()
            result = client.exec_script(PROPAGATION_APP, name="propagation.py", write=True, title="propagation",
                                        user="bench")
            applied_at = time.time()
            applied = result.get("applied") or {}
            if result["status"] != "done" or applied.get("changes") != PROPAGATION_CHANGES:
                raise RuntimeError(f"the propagation application failed: {result}")
            # The measuring side asks the secondary for its position as fast as it answers; the
            # secondary itself follows the change log at its configured poll interval.
            deadline = time.monotonic() + 600
            while follower.status()["applied_seq"] < applied["seq"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the secondary never caught up")
                time.sleep(0.005)
            visible_at = time.time()
        exited_at = float(result["stdout"].strip().splitlines()[-1])
        report.seconds("3", f"{name}: application run (10^4 updates, in the child)", exited_at - began)
        report.seconds("3", f"{name}: exit -> applied on the primary", applied_at - exited_at)
        report.seconds("3", f"{name}: exit -> visible on a secondary", visible_at - exited_at)
        report.seconds("3", f"{name}: primary's commit -> visible on a secondary", visible_at - applied_at)
        report.ratio("3", f"{name}: secondary delay vs the 2 s target", (visible_at - exited_at) / 2.0, at_most=1.0)


# -- figure 4: /data queries per second -----------------------------------------------------------------

WEB_SERVER_CODE = r"""
import sys, signal, threading
from workbench.inventory import Inventory
from workbench.inventory.store import Store
from workbench.inventory.web import WebServer
inventory = Inventory("bench")
Store(sys.argv[1], create=False).load(inventory)
server = WebServer(inventory, port=0).start()
print("web serving on", server.url, flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
server.stop()
"""

BARE_SERVER_CODE = r"""
import asyncio, json, sys
import tornado.web
BODY = json.dumps({"result": "OK", "message": "", "data": {"name": "/Sample00001/Run2024A-PromptReco-v1/AOD",
                   "status": "valid", "blocks": [{"name": "b%04d" % i, "size": 25000000000} for i in range(10)]}})
class Fixed(tornado.web.RequestHandler):
    def get(self, *args):
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(BODY)
async def main():
    app = tornado.web.Application([(r"/data/(.*)", Fixed)])
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    print("bare serving on", f"http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def http_client(index: int, url: str, datasets: int) -> Op:
    """Keep-alive GETs of /data/inventory/dataset for dataset after dataset."""
    import http.client
    from urllib.parse import quote, urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    counter = [index * 7919]

    def op() -> None:
        counter[0] += 1
        name = quote(f"/Sample{counter[0] % datasets:05d}/Run2024A-PromptReco-v1/AOD", safe="")
        connection.request("GET", f"/data/inventory/dataset?name={name}")
        reply = connection.getresponse()
        body = reply.read()
        if reply.status != 200 or not body:
            raise RuntimeError(f"HTTP {reply.status}")

    return op, connection.close


def queries(report: Report, url: str, datasets: int, seconds: float, workdir: Path, cleanup: Cleanup) -> None:
    from _common import ChildServer

    web = ChildServer("web", [sys.executable, "-c", WEB_SERVER_CODE, url], workdir / "web").start(timeout=600)
    cleanup.add(web.stop)
    bare = ChildServer("bare", [sys.executable, "-c", BARE_SERVER_CODE], workdir / "bare").start()
    cleanup.add(bare.stop)
    clients = ProcessClients(4)
    cleanup.add(clients.stop)
    ours = sum(clients.measure(http_client, (web.address, datasets), seconds))
    floor = sum(clients.measure(http_client, (bare.address, datasets), seconds))
    report.line("4", "/data/inventory/dataset, 4 clients", f"{ours:,.0f} q/s")
    report.line("4", "bare tornado, fixed JSON body, 4 clients (peer)", f"{floor:,.0f} q/s")
    report.ratio("4", "/data queries / bare tornado", ours / floor)


# -- figure 5: the application round trip --------------------------------------------------------------

def exec_round_trip(report: Report, workdir: Path, cleanup: Cleanup, runs: int) -> None:
    """Median seconds of a trivial read-only application over the socket, and of spawning ``python -c pass``."""
    import statistics

    from workbench.inventory.client import InventoryClient

    server = start_inventory_server("exec", f"sqlite:///{workdir / 'exec.db'}", workdir, cleanup)
    with InventoryClient(server["address"], timeout=60) as client:
        client.exec_script("pass")  # the first fork pays for imports of the server's own
        ours = []
        for _ in range(runs):
            began = time.perf_counter()
            result = client.exec_script("pass", name="noop.py")
            ours.append(time.perf_counter() - began)
            if result["status"] != "done":
                raise RuntimeError(f"the trivial application failed: {result}")
    spawn = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        spawn.append(time.perf_counter() - began)
    mine, floor = statistics.median(ours), statistics.median(spawn)
    report.seconds("5", "exec round trip (read-only `pass`, median)", mine)
    report.seconds("5", "peer: spawn `python -c pass` (median)", floor)
    report.ratio("5", "exec round trip / python spawn", mine / floor)


# -- main -------------------------------------------------------------------------------------------------

#: the parts of the benchmark, in the order they run (figures 1 to 5)
PARTS = ("bytes", "loads", "propagation", "queries", "exec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the scale (10^3/10^4/10^5)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per throughput measurement")
    parser.add_argument("--no-mariadb", action="store_true", help="SQLite only")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable): " + ", ".join(PARTS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or PARTS)
    scale = (1_000, 10, 10) if args.quick else (10_000, 10, 10)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    report = Report(width=56)
    for line in machine_facts(redis_server=None):
        print(line)
    print(f"scale: {scale[0]:,} datasets, {scale[0] * scale[1]:,} blocks, {scale[0] * scale[1] * scale[2]:,} files")
    workdir = Path(tempfile.mkdtemp(prefix="inventory-bench-"))
    cleanup = Cleanup()
    try:
        if "bytes" in parts:
            file_bytes(report, 100_000 if args.quick else 1_000_000)
        stores = {"SQLite": f"sqlite:///{workdir / 'inventory.db'}"}
        # Propagation runs on databases of its own: two servers loading 10^6 files would only add waiting.
        small = {"SQLite": f"sqlite:///{workdir / 'propagation.db'}"}
        if not args.no_mariadb:
            from workbench.testing.services import MariaDBServer, traversable_tempdir

            mariadb_dir = traversable_tempdir("inventory-bench-mariadb-")
            cleanup.add(lambda: shutil.rmtree(mariadb_dir, ignore_errors=True))
            mariadb = MariaDBServer(mariadb_dir)
            mariadb.start()
            cleanup.add(mariadb.stop)
            mariadb.create_database("inventory_bench")
            mariadb.create_database("inventory_propagation")
            stores["MariaDB"] = mariadb.url("inventory_bench")
            small["MariaDB"] = mariadb.url("inventory_propagation")
        if "loads" in parts or "queries" in parts:
            full_loads(report, stores, scale)  # the queries run over the image it writes
        if "propagation" in parts:
            propagation(report, small, workdir, cleanup)
        if "queries" in parts:
            queries(report, stores["SQLite"], scale[0], seconds, workdir, cleanup)
        if "exec" in parts:
            exec_round_trip(report, workdir, cleanup, 50 if args.quick else 200)
    finally:
        cleanup.run()
        shutil.rmtree(workdir, ignore_errors=True)
    if report.misses:
        print("targets missed: " + "; ".join(report.misses))
    print(f"done: {len(report.passes)} targets met, {len(report.misses)} missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
