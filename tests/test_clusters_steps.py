"""Step scripts of the managers: one shell script per step, every value quoted into it, missing
binaries installed and the step run again, a server that never answers reported with its log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.clusters.connection import LocalConnection
from workbench.clusters.errors import CommandError, ManagerError
from workbench.clusters.managers.base import BaseManager
from workbench.clusters.managers.redis import RedisManager
from workbench.clusters.models import Datastore, Instance
from workbench.testing.clusters import LocalRuntime


HOSTILE = "it's \"$(touch pwned)\" `touch pwned` ; touch pwned \\ $HOME"


def instance(directory: Path, role: str = "primary") -> Instance:
    return Instance(name="inst-1", index=0, role=role, addr="127.0.0.1", port=7000, directory=str(directory))


def test_values_in_a_step_script_stay_literal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / HOSTILE
    directory.mkdir()
    manager = RedisManager(Datastore(manager="redis", version="7"), LocalRuntime())
    target = str(directory / "file")
    text = f"first line\n{HOSTILE}\n'\n"
    with LocalConnection() as conn:
        result = manager.run_step(conn, instance(directory), manager.sh_make_directories(instance(directory))
                                  + manager.sh_write_file(target, text, mode=0o600) + "echo done\n")
    assert result.stdout.splitlines()[-1] == "done"
    assert Path(target).read_text() == text and (Path(target).stat().st_mode & 0o777) == 0o600
    assert (directory / "data").is_dir() and (directory / "server.log").is_file()
    assert not list(tmp_path.rglob("pwned"))  # nothing in a value was run
    # what the script learned about the host is remembered, not asked again per command
    assert manager.host_facts(conn)["uid"] == str(os.getuid())


class ToolManager(BaseManager):
    """Needs a binary that only its 'package manager' (a shell one-liner) can provide."""

    required_binaries = ("wb-step-tool",)

    @property
    def name(self) -> str:
        return "tool"


def test_missing_binaries_are_installed_and_the_step_runs_again(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    installer = ["sh", "-c", 'printf "#!/bin/sh\\necho tool:\\$1\\n" > "$0/wb-step-tool" && chmod +x "$0/wb-step-tool"',
                 str(bin_dir)]
    manager = ToolManager(Datastore(manager="tool", version="1", packages="wb-step-tool-package"), LocalRuntime())
    manager.package_managers = {"sh": installer}
    lines: list[str] = []
    with LocalConnection() as conn:
        result = manager.run_step(conn, instance(tmp_path), "wb-step-tool ran\n", log=lines.append)
    assert result.stdout.splitlines()[-1] == "tool:ran"
    assert any("installing wb-step-tool-package" in line for line in lines)


def test_a_failed_command_stops_the_step_with_its_output(tmp_path):
    manager = RedisManager(Datastore(manager="redis", version="7"), LocalRuntime())
    with LocalConnection() as conn, pytest.raises(CommandError) as info:
        manager.run_step(conn, instance(tmp_path), "step first\ntrue\nstep second\necho broken >&2; false\n"
                                                   "touch never\n")
    assert "step: second" in info.value.message and "broken" in info.value.message
    assert not (tmp_path / "never").exists()


class SilentManager(BaseManager):
    """A server that never answers its ping."""

    def ping_command(self, conn, instance):
        return ["false"]

    @property
    def name(self) -> str:
        return "silent"


def test_a_server_that_never_answers_is_reported_with_its_log(tmp_path):
    manager = SilentManager(Datastore(manager="silent", version="1"), LocalRuntime())
    (tmp_path / "server.log").write_text("starting\ncannot bind: address in use\n")
    with LocalConnection() as conn, pytest.raises(ManagerError) as info:
        manager.run_step(conn, instance(tmp_path), manager.sh_wait_until_ready(instance(tmp_path), timeout=0.3),
                         ready_timeout=0.3)
    assert "did not answer" in info.value.message and "address in use" in info.value.message
