"""Conventions of every ``workbench`` group: its options also work after the subcommand, and no help
shows ``==SUPPRESS==``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Iterator

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
