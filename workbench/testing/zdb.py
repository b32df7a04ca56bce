"""zdb servers run as real OS processes (``python -m workbench.zdb``) for tests that kill them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.testing.process import ServiceProcess


class ZdbServerProcess(ServiceProcess):
    """``python -m workbench.zdb serve ARCHIVE --bind tcp://127.0.0.1:PORT`` in its own process group."""

    name = "zdb-sm"
    start_timeout = 30.0

    def __init__(self, workdir: Path, archive: Path, fsync: str = "batch", extra: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self.archive = Path(archive)
        self.fsync = fsync
        self.extra = list(extra)

    @property
    def uri(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def command(self) -> Sequence[str]:
        return [sys.executable, "-m", "workbench.zdb", "serve", str(self.archive), "--bind", self.uri,
                "--fsync", self.fsync, *self.extra]

    def kill9(self) -> None:
        """SIGKILL the server: no shutdown code runs, exactly like a crash."""
        import os
        import signal

        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def kill9_while_writing(workdir: Path, fsync: str, write: Callable[[Any, int], None], writers: int,
                        acknowledged_before_kill: int, step: int | None = None) -> tuple[list[int], Any]:
    """Writers call ``write(db, n)`` until the server is killed -9; (acknowledged ``n``s, ``db["w"]`` after restart).

    Writer ``k`` writes ``n = k, k + step, ...`` (``step`` defaults to ``writers``); ``db["w"]``
    starts as ``[]``. A write cut by the kill (ZdbTimeout) is not acknowledged; any other error fails.
    """
    from workbench.zdb import ZdbTimeout, client

    step = step or writers
    server = ZdbServerProcess(workdir / "proc", workdir / "archive", fsync=fsync).start()
    acknowledged: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        db, connection = client(server.uri, timeout=2.0)
        try:
            n = offset
            while not stop.is_set():
                try:
                    write(db, n)
                except ZdbTimeout:
                    return  # the server died mid-request: that write was never acknowledged
                acknowledged.append(n)
                n += step
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    db, connection = client(server.uri, timeout=5.0)
    db["w"] = []
    connection.close()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < acknowledged_before_kill:
        threading.Event().wait(0.01)
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(10)
    if errors:
        raise AssertionError(f"writers failed: {errors}")
    restarted = ZdbServerProcess(workdir / "proc2", workdir / "archive", fsync=fsync)
    restarted.port = server.port
    restarted.start()
    try:
        db, connection = client(restarted.uri, timeout=5.0)
        stored = db["w"]._run()
        connection.close()
    finally:
        restarted.stop()
    return acknowledged, stored


class ZdbReplicaProcess(ServiceProcess):
    """``python -m workbench.zdb replica --primary URI --bind tcp://127.0.0.1:PORT``."""

    name = "zdb-te"
    start_timeout = 30.0

    def __init__(self, workdir: Path, primary: str) -> None:
        super().__init__(workdir)
        self.primary = primary

    @property
    def uri(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def command(self) -> Sequence[str]:
        return [sys.executable, "-m", "workbench.zdb", "replica", "--primary", self.primary, "--bind", self.uri]
