"""JupyterLab in headless Chromium: a notebook's ipywidgets widget really renders in the page.

Also covers ``workbench lab``'s argv and default directory, and that the test server's settings
overrides reach Lab (they are what keeps dialogs from covering the page).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import workbench
from workbench import lab
from workbench.testing.jupyter import (IDLE_INDICATOR, WIDGET, JupyterLabServer, run_notebook_in_lab,
                                       save_screenshot, wait_for_lab_status, write_notebook)


# -- workbench lab -------------------------------------------------------------------------------

def test_lab_argv(tmp_path: Path) -> None:
    argv = lab.lab_argv(tmp_path, port=9999)
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert ("--allow-root" in argv) == (os.geteuid() == 0)
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in argv
    assert "--ServerApp.ip=127.0.0.1" in argv
    assert "--ServerApp.port=9999" in argv
    assert "--no-browser" in argv
    assert "--LabApp.news_url=None" in argv
    assert "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate" in argv
    assert not any("token" in arg for arg in argv)  # Jupyter's own default: a random token

    browsing = lab.lab_argv(tmp_path, open_browser=True, token="", extra=["--debug"])
    assert "--no-browser" not in browsing
    assert "--IdentityProvider.token=" in browsing
    assert not any(arg.startswith("--ServerApp.port") for arg in browsing)
    assert browsing[-1] == "--debug"  # extra flags come last, so they override ours


def test_default_notebook_dir() -> None:
    checkout = Path(workbench.__file__).resolve().parent.parent / "notebooks"
    expected = checkout if checkout.is_dir() else Path.cwd()
    assert lab.default_notebook_dir() == expected


def test_lab_arguments() -> None:
    parser = argparse.ArgumentParser()
    lab.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.notebook_dir, args.port, args.ip, args.browser) == (None, 8888, "127.0.0.1", False)
    args = parser.parse_args(["--notebook-dir", "/tmp", "--port", "0", "--browser"])
    assert (args.notebook_dir, args.port, args.browser) == (Path("/tmp"), 0, True)


def test_lab_library_does_not_import_jupyter() -> None:
    # The library must stay importable without the Jupyter stack: check in a clean interpreter.
    code = ("import sys, workbench.lab; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'IPython', 'ipywidgets', 'jupyterlab', 'jupyter_server'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_workbench_lab_serves(tmp_path: Path) -> None:
    """lab.main for real: prints a URL whose token opens the server it becomes (exec)."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    env = {**os.environ, **{name: str(tmp_path / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")}}
    code = ("import argparse, sys; from workbench import lab; "
            "sys.exit(lab.main(argparse.Namespace(notebook_dir=sys.argv[1], port=0, "
            "ip='127.0.0.1', browser=False)))")
    with open(tmp_path / "lab.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", code, str(notebooks)], env=env,
                                   stdout=subprocess.PIPE, stderr=log, text=True,
                                   start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"JupyterLab serving {notebooks.resolve()}"
        url = process.stdout.readline().strip()
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/lab\?token=([0-9a-f]{48})", url)
        assert match, url
        base, token = f"http://127.0.0.1:{match[1]}", match[2]
        assert "started" in wait_for_lab_status(base, token, process, timeout=60, log=tmp_path / "lab.log")
        with pytest.raises(urllib.error.HTTPError) as refused:  # the token is really required
            urllib.request.urlopen(f"{base}/api/status", timeout=2)
        assert refused.value.code == 403
        assert token not in " ".join(Path(f"/proc/{process.pid}/cmdline").read_text().split("\0"))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


# -- the server -----------------------------------------------------------------------------------

def test_overrides_reach_lab(jupyter_lab: JupyterLabServer) -> None:
    # Lab folds overrides.json into the schema defaults it serves: proof it read our file.
    tracker = jupyter_lab.get_json("/lab/api/settings/@jupyterlab/notebook-extension:tracker")
    assert tracker["schema"]["properties"]["autoStartDefaultKernel"]["default"] is True
    notification = jupyter_lab.get_json("/lab/api/settings/@jupyterlab/apputils-extension:notification")
    assert notification["schema"]["properties"]["fetchNews"]["default"] == "false"
    assert notification["schema"]["properties"]["checkForUpdates"]["default"] is False


def test_overrides_merge_with_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installation's own app settings are kept (copied, never written to): ours go on top.
    app_dir = tmp_path / "app"
    (app_dir / "settings").mkdir(parents=True)
    installed = {"@jupyterlab/notebook-extension:tracker": {"kernelShutdown": True},
                 "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}
    (app_dir / "settings" / "overrides.json").write_text(json.dumps(installed))
    (app_dir / "settings" / "page_config.json").write_text('{"disabledExtensions": {}}')
    monkeypatch.setenv("JUPYTERLAB_DIR", str(app_dir))  # where jupyterlab.commands.get_app_dir looks

    server = JupyterLabServer(tmp_path / "server", overrides={
        "@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Light"}})
    server.prepare()
    written = json.loads((server.app_settings_dir / "overrides.json").read_text())
    assert written["@jupyterlab/notebook-extension:tracker"] == {
        "kernelShutdown": True, "autoStartDefaultKernel": True}
    assert written["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Light"}
    assert written["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    assert (server.app_settings_dir / "page_config.json").exists()
    assert json.loads((app_dir / "settings" / "overrides.json").read_text()) == installed
    assert f"--LabApp.app_settings_dir={server.app_settings_dir}" in server.command()


def test_shutdown_sessions(jupyter_lab: JupyterLabServer) -> None:
    session = jupyter_lab.request("POST", "/api/sessions", {
        "path": "probe/api.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    assert session["kernel"]["id"]
    assert jupyter_lab.shutdown_sessions() >= 1
    assert jupyter_lab.get_json("/api/sessions") == []
    assert all(k["id"] != session["kernel"]["id"] for k in jupyter_lab.get_json("/api/kernels"))


# -- the browser ----------------------------------------------------------------------------------

def test_widget_renders_in_lab(jupyter_lab: JupyterLabServer, lab_page, artifacts_dir: Path) -> None:
    write_notebook(jupyter_lab.root_dir / "probe" / "widget.ipynb", [
        ("markdown", "# Widget probe"),
        "import ipywidgets as w\nslider = w.IntSlider(value=7, description='probe')\nslider",
    ])
    began = time.monotonic()
    run = run_notebook_in_lab(lab_page, jupyter_lab.url, "probe/widget.ipynb", timeout=120)

    assert run.panel.locator(IDLE_INDICATOR).count() == 1
    widget = run.panel.locator(f"{WIDGET}.widget-slider").first
    widget.wait_for(state="visible", timeout=30_000)
    # The description label and the readout are what a person sees; both come from the kernel's
    # widget state, so they prove the comm round trip worked, not just that a placeholder drew.
    assert widget.locator(".widget-label").inner_text().strip() == "probe"
    readout = widget.locator(".widget-readout")
    assert readout.is_visible()
    assert readout.inner_text().strip() == "7"
    # ipywidgets shows this text instead of the widget when the front end cannot render it.
    assert run.panel.get_by_text("Error displaying widget").count() == 0
    assert run.panel.get_by_text("Loading widget...").count() == 0

    shot = save_screenshot(lab_page, artifacts_dir / "test_widget_renders_in_lab.png")
    assert shot.stat().st_size > 10_000
    print(f"notebook run {run.seconds:.1f}s, test {time.monotonic() - began:.1f}s, screenshot {shot}")


def test_run_reports_cell_errors(jupyter_lab: JupyterLabServer, lab_page) -> None:
    # Every earlier lab_page shut its kernels down: this test starts from a clean server.
    assert jupyter_lab.get_json("/api/sessions") == []
    write_notebook(jupyter_lab.root_dir / "probe" / "error.ipynb", [
        "import sys\nprint('just a warning', file=sys.stderr)",
        "1 / 0",
        "print('never reached')",
    ])
    run = run_notebook_in_lab(lab_page, jupyter_lab.url, "probe/error.ipynb", timeout=120,
                              raise_on_error=False)
    assert len(run.errors) == 1 and "ZeroDivisionError" in run.errors[0]
    assert any("just a warning" in text for text in run.stderr)
    # Run All stops at the failing cell: the last cell's print never produced output.
    outputs = run.panel.locator(".jp-OutputArea-output").all_inner_texts()
    assert not any("never reached" in text for text in outputs)
