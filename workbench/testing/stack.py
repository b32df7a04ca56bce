"""Test support for the embedded stack: ``workbench up`` run as a user runs it, in a child process.

::

    stack = RunningStack(tmp_path / "stack", "--zookeeper", zookeeper_hosts)
    stack.endpoints["commits"]["url"]; stack.secrets["domain"]["password"]
    assert stack.stop() == 0          # SIGINT, as Ctrl-C; the exit code of `workbench up`
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKBENCH = [sys.executable, "-m", "workbench.cli"]
#: every port of the stack picked free, so stacks of several tests never collide
ALL_PORTS_FREE = ["--domain-port", "0", "--commits-port", "0", "--inventory-socket", "state",
                  "--inventory-web-port", "0", "--clusters-port", "0"]


def ignoring_sigint() -> None:
    """A ``preexec_fn``: the child starts with SIGINT ignored, as a shell's background job does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RunningStack:
    """``workbench up --state-dir STATE_DIR`` on free ports; returns once it printed ``ready``."""

    def __init__(self, state_dir: Path, *options: str, timeout: float = 120.0, until: str = "ready",
                 ignore_sigint: bool = False) -> None:
        """``until``: return once a line starts with it; ``ignore_sigint``: start it as a shell's
        ``workbench up &`` does, with SIGINT ignored."""
        self.state_dir = Path(state_dir)
        self.process = subprocess.Popen(
            WORKBENCH + ["up", "--state-dir", str(state_dir), *ALL_PORTS_FREE, *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=ignoring_sigint if ignore_sigint else None)
        self.output: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("workbench up ended early:\n" + "".join(self.output))
            self.output.append(line)
            if line.startswith(until):
                return
        self.process.kill()
        raise AssertionError("workbench up never became ready:\n" + "".join(self.output))

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def endpoints(self) -> dict[str, Any]:
        return json.loads(self.stack_file.read_text())["endpoints"]

    @property
    def secrets(self) -> dict[str, dict[str, str]]:
        return json.loads((self.state_dir / "credentials.json").read_text())

    def uri(self) -> str:
        """The zdb URI of the demo database, with its password filled in."""
        return self.endpoints["zdb"]["uri"].replace("PASSWORD", self.secrets["zdb"]["password"])

    def stop(self) -> int:
        """Stop it as Ctrl-C does; the exit code (the rest of its output goes to ``output``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=60)
        self.output.append(rest)
        return self.process.returncode
