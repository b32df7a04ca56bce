"""A zdb workload run inside a fault-harness host: sets a domain database up, then writes and reads it.

Run with ``python -m workbench.testing.workload`` inside a namespace (the test process cannot reach the
hosts' subnet); it hands results back as JSON files::

    workload setup BROKER ARCHIVE --te-peer 10.231.7.2:48004 --te-peer 10.231.7.3:48004 --out setup.json
    workload run --write TE_ENDPOINT --read te-b=ENDPOINT --read te-c=ENDPOINT --seconds 30 --out history.json

``run`` has one writer appending 1, 2, 3... to the list at ``log`` (so the final list is the order
the writes were applied in) (one client, so a late write of its own is a
zombie), moving to the next ``--write`` TE when a write times out, and one reader per TE; after ``--seconds`` and ``--settle`` it reads each replica's final value.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from workbench.testing.history import History

__all__ = ["main"]

KEY = "log"
DBA = [("--dba-user", "dba"), ("--dba-password", "dba")]


def _setup(args: argparse.Namespace) -> None:
    from workbench.domain import Domain
    from workbench.errors import DomainError

    deadline = time.monotonic() + 60
    while True:  # the broker's agent was started together with this process
        try:
            domain = Domain(args.broker, "domain", os.environ.get("WORKBENCH_DOMAIN_PASSWORD", "bird"))
            break
        except DomainError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    with domain:
        peers = []
        for address in args.te_peer:
            while (peer := domain.find_peer(address)) is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"peer {address} did not join")
                time.sleep(0.2)
            peers.append(peer)
        sm = domain.entry_peer.start_storage_manager("faults", args.archive, True, wait_seconds=60)
        engines = {f"te-{i}": peer.start_transaction_engine("faults", options=DBA, wait_seconds=60)
                   for i, peer in enumerate(peers)}
        tes = {name: te.endpoint for name, te in engines.items()}
        pids = {"sm": sm.pid, **{name: te.pid for name, te in engines.items()}}
        from workbench.zdb import connect

        db = connect(next(iter(tes.values())), user="dba", password="dba", timeout=10.0)
        db[KEY] = []  # the writer appends to it
        db._client.close()
        Path(args.out).write_text(json.dumps({"sm": sm.endpoint, "tes": tes, "pids": pids}))


def _connect(endpoint: str, timeout: float):
    from workbench.zdb import connect

    return connect(endpoint, user="dba", password="dba", timeout=timeout, retries=0)


def _close(db) -> None:
    try:
        db._client.close()
    except Exception:  # noqa: BLE001 - closing a client whose server vanished
        pass


def _writer(history: History, endpoints: list[str], stop: threading.Event, timeout: float) -> None:
    from workbench.errors import ZdbError
    from workbench.zdb import ZdbTimeout

    db, value, turn = None, 0, 0
    while not stop.is_set():
        value += 1
        op = history.invoke("writer", "write", KEY, value)
        try:
            db = db or _connect(endpoints[turn % len(endpoints)], timeout)
            db[KEY] += [value]
            history.complete(op, "ok")
        except ZdbTimeout:
            history.complete(op, "timeout")
            _close(db)
            db = None  # a fresh client: the old socket may still deliver the late reply
            turn += 1  # and the next TE, as a client relocating through the broker would
        except (ZdbError, OSError) as error:
            history.complete(op, "fail", result=str(error))
            _close(db)
            db = None
            turn += 1
            time.sleep(0.1)
        time.sleep(0.02)
    if db is not None:
        _close(db)


def _reader(history: History, replica: str, endpoint: str, stop: threading.Event, timeout: float) -> None:
    from workbench.errors import ZdbError

    db = None
    while not stop.is_set():
        op = history.invoke(f"reader-{replica}", "read", KEY, replica=replica)
        try:
            db = db or _connect(endpoint, timeout)
            value = db[KEY][-1]._run() if KEY in db else None  # the last write this TE applied
            history.complete(op, "ok", result=value)
        except (ZdbError, OSError) as error:
            history.complete(op, "timeout", result=str(error))
            _close(db)
            db = None
            time.sleep(0.1)
        time.sleep(0.05)
    if db is not None:
        _close(db)


def _final(endpoint: str) -> dict[str, object]:
    """The replica's list (every write it applied, in order); retried, a healed host may be reconnecting."""
    from workbench.errors import ZdbError

    deadline = time.monotonic() + 20
    while True:
        db = None
        try:
            db = _connect(endpoint, 2.0)
            return {KEY: db[KEY]._run()} if KEY in db else {}
        except (ZdbError, OSError):
            if time.monotonic() > deadline:
                return {"error": "unreachable"}
            time.sleep(0.5)
        finally:
            if db is not None:
                _close(db)


def _run(args: argparse.Namespace) -> None:
    history, stop = History(), threading.Event()
    reads = dict(item.split("=", 1) for item in args.read)
    threads = [threading.Thread(target=_writer, args=(history, args.write, stop, args.timeout))]
    threads += [threading.Thread(target=_reader, args=(history, name, endpoint, stop, args.timeout))
                for name, endpoint in reads.items()]
    for thread in threads:
        thread.start()
    time.sleep(args.seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    time.sleep(args.settle)
    history.dump(Path(args.out))
    final = {name: _final(endpoint) for name, endpoint in reads.items()}
    Path(args.out).with_suffix(".final.json").write_text(json.dumps(final))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="workload")
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("setup")
    setup.add_argument("broker")
    setup.add_argument("archive")
    setup.add_argument("--te-peer", action="append", default=[])
    setup.add_argument("--out", required=True)
    run = commands.add_parser("run")
    run.add_argument("--write", action="append", required=True, help="a TE endpoint (repeat: the next on a timeout)")
    run.add_argument("--read", action="append", default=[])
    run.add_argument("--seconds", type=float, default=20.0)
    run.add_argument("--settle", type=float, default=5.0)
    run.add_argument("--timeout", type=float, default=1.0)
    run.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"setup": _setup, "run": _run}[args.command](args)


if __name__ == "__main__":
    main()
