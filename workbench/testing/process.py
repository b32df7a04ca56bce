"""A service run as a child process on a free loopback port, with a temp dir and a log file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from workbench.errors import ServiceError

from workbench.ports import LOOPBACK, free_port, port_open  # noqa: F401 - re-exported for the harness
# Tests use it to prove that stopping something left no process behind.
from workbench.stack_watchdog import processes_mentioning  # noqa: F401 - re-exported for the harness


def running_as_root() -> bool:
    return os.geteuid() == 0


def require_binary(path_or_name: str, package: str) -> str:
    """Absolute path of an executable, or a ServiceError naming the package that provides it."""
    found = shutil.which(path_or_name) or (path_or_name if os.access(path_or_name, os.X_OK) else None)
    if not found:
        raise ServiceError(f"{path_or_name} not found; install it with: apt-get install -y {package}",
                           binary=path_or_name, package=package)
    return found


class ServiceProcess:
    """Base of every service the harness runs: subclass and fill in ``command`` and ``is_ready``.

    ``start()`` returns once the service answers (or raises ServiceError with the log tail);
    ``stop()`` terminates the process group. ``start_seconds`` records how long start took.
    """

    name = "service"
    #: run the child as this system user when we are root (MariaDB and PostgreSQL refuse root)
    run_as: str | None = None
    start_timeout = 60.0

    def __init__(self, workdir: Path, host: str = LOOPBACK, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.log_path = self.workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    # -- to fill in -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Write configuration, initialize data directories (runs before the command)."""

    def command(self) -> Sequence[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def is_ready(self) -> bool:
        return port_open(self.host, self.port)

    def extra_log_paths(self) -> list[Path]:
        return []

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_path, *self.extra_log_paths()]

    def give_to_run_as_user(self, *paths: Path) -> None:
        """chown paths to ``run_as`` when we are root, so the service can write there."""
        if self.run_as and running_as_root():
            for path in paths:
                shutil.chown(path, self.run_as, self.run_as)
                for root, dirs, files in os.walk(path):
                    for entry in dirs + files:
                        shutil.chown(os.path.join(root, entry), self.run_as, self.run_as)

    def wrap_command(self, command: Sequence[str]) -> list[str]:
        if self.run_as and running_as_root():
            return ["runuser", "-u", self.run_as, "--", *command]
        return list(command)

    def start(self) -> "ServiceProcess":
        began = time.monotonic()
        self.prepare()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.wrap_command(self.command()), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir, env=self.environment(),
                start_new_session=True)
        finally:
            log.close()
        deadline = began + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited with code {self.process.returncode} while starting",
                                   service=self.name, log=self.log_tail())
            if self.is_ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not become ready in {self.start_timeout:.0f}s",
                                   service=self.name, log=self.log_tail())
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of every log file of this service, each under a header."""
        parts = []
        for path in self.log_paths:
            try:
                text = Path(path).read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                text = [f"<unreadable: {exc}>"]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.address} {state}>"


def wait_until_gone(text: str, timeout: float = 30.0) -> dict[int, str]:
    """Wait until no process mentions ``text``; return those still there at the deadline."""
    deadline = time.monotonic() + timeout
    left = processes_mentioning(text)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(text)
    return left
