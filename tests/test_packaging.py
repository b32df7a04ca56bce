"""Packaging, the workbench command, the two README commands, CI and Binder files agree with each other."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import workbench
from workbench import cli
from workbench.testing.readme import parse

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_version_matches_pyproject():
    assert workbench.__version__ == PYPROJECT["project"]["version"]


def test_workbench_command_help_and_version():
    exe = shutil.which("workbench", path=str(Path(sys.executable).parent)) or shutil.which("workbench")
    assert exe, "the workbench console script is installed"
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "version" in help_text and "lab" in help_text
    out = subprocess.run([exe, "version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"workbench {workbench.__version__}"
    out = subprocess.run([sys.executable, "-m", "workbench", "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"workbench {workbench.__version__}"


def test_bare_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: workbench" in capsys.readouterr().out


def test_unknown_command_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_subsystem_groups_appear_exactly_when_their_cli_module_exists():
    groups = cli.available_groups()
    for name, (module, _) in cli.SUBSYSTEM_GROUPS.items():
        path = ROOT / Path(*module.split(".")).with_suffix(".py")
        assert (name in groups) == path.exists(), name
    parser_help = cli.build_parser().format_help()
    for name in groups:
        assert name in parser_help


def test_binder_requirements_match_pyproject_dependencies():
    declared = {requirement_name(d): d for d in PYPROJECT["project"]["dependencies"]}
    lines = [line.strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    binder = {requirement_name(line): line for line in lines if line and not line.startswith("#")}
    assert binder == declared


def test_binder_scripts_are_strict_and_install_this_package():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert re.search(r"^set -e", post_build, re.M)
    assert "pip install" in post_build and "-e ." in post_build
    assert PYPROJECT["project"]["name"] == "workbench"
    start = (ROOT / "binder" / "start").read_text().strip().splitlines()
    # Binder's command runs as a child (SIGINT given back to it), so the stack stops when it ends.
    assert '( trap - INT QUIT; exec "$@" ) &' in (ROOT / "binder" / "start").read_text()
    assert start[-1] == 'exit "$status"'
    apt = (ROOT / "binder" / "apt.txt").read_text()
    packages = [line.strip() for line in apt.splitlines() if line.strip() and not line.startswith("#")]
    assert "openssh-server" not in packages  # Binder cannot run sshd: demos must not need it


def test_notebooks_named_by_binder_and_readme_exist():
    texts = [(ROOT / "README.md").read_text(), (ROOT / "binder" / "start").read_text()]
    named = set()
    for text in texts:
        named |= set(re.findall(r"notebooks/[\w.-]+\.ipynb", text))
    assert "notebooks/00-tour.ipynb" in named  # what Binder opens and the README points to
    for path in named:
        assert (ROOT / path).is_file(), path


def test_pictures_the_readme_shows_exist():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert pictures, "the README shows the dashboard"
    for path in pictures:
        assert (ROOT / path).is_file(), path


def test_readme_shows_exactly_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in parse(section) if block.lang in ("bash", "sh") for line in block.lines()]
    assert commands == ["scripts/lab", "scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec scripts/test$", ci, re.M)
    for script in ("scripts/lab", "scripts/test", ".ci/run"):
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is executable"


def test_every_notebook_is_checked_by_the_test_command():
    test_cmd = (ROOT / "scripts" / "test").read_text()
    assert "--nbval " in test_cmd and "--nbval-lax" not in test_cmd  # strict mode
    assert "notebooks" in PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"]
    assert (ROOT / "notebooks" / "sanitize.cfg").is_file()
