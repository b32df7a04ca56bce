"""zdb servers run as real OS processes (``python -m workbench.zdb``) for tests that kill them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

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
