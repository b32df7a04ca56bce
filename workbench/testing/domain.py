"""Fixtures for domain tests: a ``Domain`` session with the conftest ``broker``, and agents as real processes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from workbench.domain.cli import DOMAIN_PASSWORD_VARIABLE
from workbench.testing.process import ServiceProcess


@pytest.fixture
def domain(broker):
    """A management session (user domain, password bird) with the in-process broker."""
    from workbench.domain import Domain

    session = Domain(broker.address, "domain", "bird")
    yield session
    session.disconnect()


class AgentProcess(ServiceProcess):
    """``python -m workbench domain agent`` as a real process (so tests can kill -9 it).

    ``broker=True`` runs a broker; ``peer`` is the broker it joins (or, for a broker, links to).
    The state dir is ``workdir/state``, so a stopped or killed agent started again finds it.
    """

    name = "domain-agent"

    def __init__(self, workdir: Path, peer: str | None, broker: bool = False,
                 tags: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.peer = peer
        self.broker = broker
        self.tags = dict(tags or {})

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def peer_id(self) -> str:
        """Its id in the domain (``localhost:PORT``)."""
        return f"localhost:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "workbench", "domain", "agent", "--port", str(self.port),
                   "--state-dir", str(self.state_dir)]
        command += ["--broker"] if self.broker else []
        command += ["--peer", self.peer] if self.peer else []
        for name, value in self.tags.items():
            command += ["--tag", f"{name}={value}"]
        return command

    def environment(self) -> dict[str, str]:
        # The password through the environment, as a deployment passes it: ps shows command lines to all.
        return {**os.environ, DOMAIN_PASSWORD_VARIABLE: "bird"}

    def kill(self) -> None:
        """kill -9 of the agent alone (its database processes run in sessions of their own)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
