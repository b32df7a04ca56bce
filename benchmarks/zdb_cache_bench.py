"""zdb's client cache against redis-py GET, in one run: cached get, plain get, redis get.

Run ``python benchmarks/zdb_cache_bench.py`` (``--seconds N`` per measurement, default 6, split
in ``--rounds`` interleaved rounds). A storage manager (``--fsync never``) and a redis-server
(no persistence) run on 127.0.0.1 as child processes; the client runs here.

``zdb cached get`` is ``db["k"]._run()`` on a client made with ``cache=True``: after the first
read, the value comes from memory once the cache has checked that the change stream is at the
seq this process was told of (no request). ``zdb_cached_get_client`` is a client factory of the
same shape as those of ``zdb_bench.py``, so its tables can carry the line too. Target: cached
get >= 3x redis-py GET. Nothing here is run by the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import Cleanup, Report, interleaved_rates, machine_facts  # noqa: E402
from zdb_bench import GET_KEY, VALUE, Op, redis_get_client, start_redis, start_sm, zdb_get_client  # noqa: E402


def zdb_cached_get_client(index: int, address: str) -> Op:
    """``db[GET_KEY]._run()`` through the client cache (waits until the cache follows the stream)."""
    from workbench.zdb import client

    db, conn = client(address, cache=True)
    deadline = time.monotonic() + 10
    while not conn.cache.live:  # before its first heartbeat the cache sends every read
        if time.monotonic() > deadline:
            raise RuntimeError("the client cache did not follow the change stream")
        time.sleep(0.01)
    proxy = db[GET_KEY]
    proxy._run()
    return proxy._run, conn.close


def cached_get_figures(report: Report, address: str, redis_url: str, seconds: float, rounds: int,
                       figure: str = "c") -> dict[str, float]:
    """Print cached get, plain get and redis get rates and their ratios; returns the mean rates."""
    specs: dict[str, tuple[Callable[..., Op], tuple[Any, ...]]] = {
        "zdb cached get": (zdb_cached_get_client, (address,)),
        "zdb get": (zdb_get_client, (address,)),
        "redis get": (redis_get_client, (redis_url,)),
    }
    ops: dict[str, Callable[[], Any]] = {}
    closers = []
    try:
        for name, (factory, fargs) in specs.items():
            ops[name], close = factory(0, *fargs)
            closers.append(close)
        rates = interleaved_rates(ops, seconds, rounds)
    finally:
        for close in closers:
            close()
    mean = {name: report.rate(figure, f"{name}/s, 1 client", values) for name, values in rates.items()}
    report.ratio(figure, "zdb cached get / redis get", mean["zdb cached get"] / mean["redis get"], at_least=3.0)
    report.ratio(figure, "zdb cached get / zdb get", mean["zdb cached get"] / mean["zdb get"])
    report.ratio(figure, "zdb get / redis get", mean["zdb get"] / mean["redis get"], at_least=0.8)
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    for line in machine_facts():
        print(line)
    cleanup = Cleanup()
    with tempfile.TemporaryDirectory(prefix="zdb-cache-bench-") as tmp:
        try:
            workdir = Path(tmp)
            sm = start_sm(workdir, "sm-cache", cleanup)
            redis_server = start_redis(workdir, cleanup)
            from workbench.zdb import client
            import redis

            with client(sm.address)[1] as conn:
                conn.run((), "__setitem__", (GET_KEY, VALUE))
            r = redis.Redis.from_url(redis_server.url())
            r.set(GET_KEY, VALUE)
            r.close()
            report = Report()
            cached_get_figures(report, sm.address, redis_server.url(), args.seconds, args.rounds)
        finally:
            cleanup.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
