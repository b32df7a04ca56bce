"""Committed notebooks carry no other machine's ports, temp paths, pids or times in their outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.testing.notebooks import SANITIZE_FILE, read_patterns, sanitize_file, sanitize_text

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_stored_outputs_are_sanitized(notebook):
    assert not sanitize_file(notebook, read_patterns(), write=False), (
        f"{notebook.name} stores run-specific values: run `python -m workbench.testing.notebooks {notebook}`")


def test_the_patterns_replace_what_changes_from_run_to_run():
    text = "SM on tcp://127.0.0.1:40123 in /tmp/zdb-notebook-x1y2/archive (pid 4242), took 12.5 ms"
    assert sanitize_text(text, read_patterns(SANITIZE_FILE)) == (
        "SM on tcp://ADDRESS:PORT in TMP_PATH (pid=PID), took DURATION")


def test_the_check_fails_on_a_notebook_with_a_port_and_fixes_it(tmp_path):
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "source": ["print(sm.address)"], "execution_count": 1,
                           "outputs": [{"output_type": "stream", "name": "stdout",
                                        "text": ["storage manager on tcp://127.0.0.1:38835\n"]}]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(notebook))
    command = [sys.executable, "-m", "workbench.testing.notebooks"]
    check = subprocess.run(command + ["--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 1 and "needs sanitizing" in check.stdout
    assert "38835" in path.read_text()
    assert subprocess.run(command + [str(path)], capture_output=True, text=True).returncode == 0
    stored = json.loads(path.read_text())["cells"][0]["outputs"][0]["text"]
    assert stored == ["storage manager on tcp://ADDRESS:PORT\n"]
    assert subprocess.run(command + ["--check", str(path)]).returncode == 0
