"""Conventions of every ``workbench`` group: its options also work after the subcommand, no help shows
``==SUPPRESS==``, and the install scripts show how far they are."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from workbench.cli import available_groups, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("workbench",)
            ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the command tree, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


def test_no_help_shows_suppress():
    seen = 0
    for path, parser in parsers(build_parser()):
        seen += 1
        assert "SUPPRESS" not in parser.format_help(), " ".join(path)
    assert seen > 30  # the walk did reach the subcommands


def test_a_hidden_subcommand_still_parses():
    args = build_parser().parse_args(["clusters", "--state-dir", "s", "build-worker", "web"])
    assert (args.clusters_command, args.name, args.state_dir) == ("build-worker", "web", "s")


def test_every_group_option_is_accepted_after_every_subcommand():
    tree = dict(parsers(build_parser()))
    checked = 0
    for group in available_groups():
        group_parser = tree[("workbench", group)]
        options = [action.option_strings[-1] for action in group_parser._actions
                   if action.option_strings and not isinstance(action, argparse._HelpAction)]
        for path, sub in tree.items():
            if len(path) == 3 and path[1] == group:
                for flag in options:
                    assert flag in sub._option_string_actions, (" ".join(path), flag)
                    checked += 1
    assert checked > 20  # clusters' --db, --state-dir, --config and commits' --url ... were checked


def test_a_group_option_after_the_subcommand_wins_and_works(tmp_path, capsys):
    before, after = tmp_path / "before", tmp_path / "after"
    assert main(["clusters", "--state-dir", str(before), "list", "--state-dir", str(after)]) == 0
    assert capsys.readouterr().out.split() == ["NAME", "DATASTORE", "SIZE", "PROVIDER", "STATUS", "MESSAGE"]
    assert (after / "clusters.db").exists() and not before.exists()
    database = tmp_path / "given.db"
    assert main(["clusters", "list", "--db", f"sqlite:///{database}", "--state-dir", str(after)]) == 0
    assert database.exists()
    # not given after the subcommand, the value given before it stays
    args = build_parser().parse_args(["clusters", "--db", "sqlite:///x.db", "create", "x", "--datastore", "redis"])
    assert args.db == "sqlite:///x.db" and args.state_dir is None


def test_a_group_option_after_the_subcommand_through_the_real_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "workbench", "clusters", "create", "x", "--datastore", "mongodb",
                             "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    # the flag is taken (no "unrecognized arguments"): the command gets as far as the datastore
    assert result.returncode == 1 and "unknown datastore 'mongodb'" in result.stderr, result.stderr
    assert (tmp_path / "clusters.db").exists()



@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_output_into_a_closed_pipe_exits_quietly_with_141(unbuffered):
    # The reader is gone before the command writes: with buffered output the failure comes at the
    # last flush, unbuffered at the first print; either way no traceback and status 141.
    reader, writer = os.pipe()
    os.close(reader)
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered:
        environment["PYTHONUNBUFFERED"] = unbuffered
    try:
        result = subprocess.run([sys.executable, "-m", "workbench", "version"], stdout=writer,
                                stderr=subprocess.PIPE, env=environment, timeout=60)
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, b"")

# -- install progress --------------------------------------------------------------------------------
PIP_OUTPUT = """\
Obtaining file:///src/workbench
  Installing build dependencies: started
Collecting jupyterlab>=4.0 (from workbench==0.1.0)
  Downloading jupyterlab-4.2.0-py3-none-any.whl (11.6 MB)
Collecting pyzmq[extra]>=25 (from workbench==0.1.0)
Requirement already satisfied: pyyaml in ./.venv/lib/python3.11/site-packages (6.0.1)
Installing collected packages: pyzmq, jupyterlab, workbench
Successfully installed jupyterlab-4.2.0 pyzmq-26.0.0 workbench-0.1.0
"""


def bash(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/progress.bash; {script}"], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_pip_progress_names_each_package_and_counts_them():
    result = bash("pip_progress", PIP_OUTPUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["      collecting jupyterlab (1)", "      collecting pyzmq (2)",
                                          "      installing 3 package(s), 1 already there ...", "      installed"]


def test_pip_install_reports_and_fails_as_pip_does():
    ok = bash(f"pip_install {sys.executable} --dry-run --no-index --no-deps pyyaml")
    assert ok.returncode == 0 and ok.stdout.strip() == "nothing new: 1 requirement(s) already there", ok
    failed = bash(f"pip_install {sys.executable} --dry-run --no-index --no-deps no-such-package-anywhere; "
                  "echo never reached")
    assert failed.returncode == 1 and "never reached" not in failed.stdout
    assert "pip install failed (exit status 1)" in failed.stderr and "no-such-package-anywhere" in failed.stderr


@pytest.mark.parametrize("script, steps", [("scripts/lab", 3), ("scripts/test", 4)])
def test_install_scripts_number_their_steps_and_show_pip_progress(script, steps):
    text = (ROOT / script).read_text()
    assert "source scripts/progress.bash" in text
    assert [line.split('"')[0] for line in text.splitlines() if line.startswith("step ")] == \
        [f"step {n} {steps} " for n in range(1, steps + 1)]
    assert "pip install -q" not in text and "pip_install .venv/bin/python -e " in text
    if script == "scripts/lab":  # the URL is the last thing it prints: `workbench lab` prints it
        assert text.rstrip().splitlines()[-1] == 'exec .venv/bin/workbench lab "$@"'
    assert os.access(ROOT / script, os.X_OK)
