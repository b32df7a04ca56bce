"""The Binder demo, rehearsed: a fresh virtualenv from ``binder/`` files, postBuild, start, the tour.

Binder installs ``binder/requirements.txt``, runs ``binder/postBuild`` in the checkout, then runs
JupyterLab through ``binder/start``. This test does the same in a new virtualenv (nothing from the
test environment leaks in) and, instead of JupyterLab, gives ``start`` an nbval run of the tour:
so the demo cannot rot. The stack ``start`` leaves running is stopped, and checked gone, after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from workbench.testing.process import processes_mentioning, wait_until_gone

ROOT = Path(__file__).resolve().parent.parent
ALL_PORTS_FREE = ("--domain-port 0 --commits-port 0 --inventory-socket state --inventory-web-port 0 "
                  "--clusters-port 0")


def run(argv: list[str], **options) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **options)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_binder_environment_starts_the_stack_and_runs_the_tour(tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    # What Binder does with requirements.txt, plus the rehearsal's own tools (pytest, nbval).
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(ROOT / "binder" / "requirements.txt"), "pytest>=7.4", "nbval>=0.11"], timeout=1200)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "WORKBENCH_UP_OPTIONS": ALL_PORTS_FREE, "JUPYTER_PLATFORM_DIRS": "1"}
    run(["bash", str(ROOT / "binder" / "postBuild")], cwd=ROOT, env=env, timeout=600)
    check = run([python, "-c", "import workbench, workbench_jupyter; print(workbench.__file__)"], env=env)
    assert check.stdout.strip().startswith(str(ROOT))
    overrides = run([python, "-c", "from workbench.lab import installed_app_settings_dir as d; "
                     "print((d() / 'overrides.json').read_text())"], env=env)
    assert json.loads(overrides.stdout)["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"

    state_dir = home / ".workbench"
    try:
        tour = subprocess.run(
            ["bash", str(ROOT / "binder" / "start"), python, "-m", "pytest", "--nbval", "--nbval-current-env",
             "--nbval-sanitize-with", "notebooks/sanitize.cfg", "-p", "no:cacheprovider", "-q",
             "notebooks/00-tour.ipynb"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert tour.returncode == 0, tour.stdout[-6000:] + tour.stderr[-3000:]
        assert " passed" in tour.stdout
        described = json.loads((state_dir / "stack.json").read_text())
        assert described["endpoints"]["zdb"]["database"] == "demo"
        stack_pid = described["pid"]
    finally:
        stack_file = state_dir / "stack.json"
        if stack_file.exists():
            os.kill(json.loads(stack_file.read_text())["pid"], signal.SIGINT)
    # The stack Binder's start left behind stops cleanly on SIGINT, with its children.
    assert wait_until_gone(str(state_dir), 60) == {}
    assert stack_pid not in processes_mentioning("workbench")
    assert not (state_dir / "stack.json").exists()

