"""The tour in JupyterLab under headless Chromium, against a running stack, checked as a person sees it.

``workbench up`` runs the embedded stack in a child process (commits published through a real
ZooKeeper, as ``--zookeeper`` configures it); a JupyterLab of this test has ``WORKBENCH_STACK``
pointing at it, as ``workbench lab`` does. The browser opens ``notebooks/00-tour.ipynb`` and runs
it through the Run menu: every section but the last (the end of the day, which stops the second
transaction engine), and one more cell that leaves a Redis cluster holding data running to act
on. Then, with no
cell run again, the test reads the combined dashboard on the page while things happen outside the
notebook:

* a TE started through another ``Domain`` client appears in the domain tab, and leaves it when
  the test kills it with SIGKILL;
* a commit posted with ``curl`` appears in the commits tab;
* pressing the clusters tab's "Add node" makes the new instance's progress bar move to full.

Screenshots of each tab go to the test artifacts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import nbformat
import pytest

from workbench.testing.clusters import processes_below
from workbench.testing.jupyter import WIDGET, JupyterLabServer, run_notebook_in_lab, save_screenshot
from workbench.testing.process import processes_mentioning
from workbench.testing.stack import RunningStack

TOUR = Path(__file__).resolve().parents[1] / "notebooks" / "00-tour.ipynb"
TABS = ["domain", "zdb", "commits", "inventory", "clusters"]
#: label and width ("40%") of every progress bar under an element
BARS_JS = """(root) => Array.from(root.querySelectorAll('.widget-hprogress')).map(bar => [
    (bar.querySelector('.widget-label') || {}).textContent || '',
    (bar.querySelector('.progress-bar') || {style: {}}).style.width || ''])"""


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def tour_until_evening(target: Path) -> Path:
    """The tour up to its last section, without stored outputs, plus a cluster left running."""
    notebook = nbformat.read(str(TOUR), as_version=4)
    end = next(index for index, cell in enumerate(notebook.cells)
               if cell.cell_type == "markdown" and cell.source.startswith("## End of the day"))
    notebook.cells = notebook.cells[:end]
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    # A primary holding data: a replica's first sync takes long enough to watch its bar on the page.
    notebook.cells.append(nbformat.v4.new_code_cell(
        "%clusters create night --datastore redis-7 --size 1 --wait\n"
        "%clusters night << show night\n"
        "import redis\n"
        "primary = redis.Redis(port=night.primary.port)\n"
        # In batches, not one Lua script: a long script makes Redis answer BUSY to every other
        # command (a retried one included) once it runs past lua-time-limit on a loaded machine.
        "for start in range(0, 1_000_000, 20_000):\n"
        "    primary.mset({f'k{i}': i for i in range(start, start + 20_000)})"))
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(target))
    return target


@pytest.fixture
def stack_and_lab(tmp_path: Path, zookeeper_chroot: str, known_brokers):
    state_dir = tmp_path / "stack"
    stack = RunningStack(state_dir, "--zookeeper", zookeeper_chroot)
    lab = JupyterLabServer(tmp_path / "lab", env={
        "WORKBENCH_STACK": str(stack.stack_file),
        "WORKBENCH_KNOWN_BROKERS": str(state_dir / "known_brokers")})
    try:
        lab.start()
        tour_until_evening(lab.root_dir / "00-tour.ipynb")
        yield stack, lab
    finally:
        if lab.running:
            lab.shutdown_sessions()
            lab.stop()
        instances_dir = stack.endpoints["clusters"]["instances_dir"]
        stack.stop()
        # The kernel's clusters runner started Redis servers in the stack's instance directories,
        # and a TE may be left from a failure: nothing of this test may outlive it.
        leftover = {pid for pid, _ in processes_below(instances_dir)} | set(processes_mentioning(str(tmp_path)))
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(instances_dir, ignore_errors=True)


def test_the_tour_runs_in_lab_and_its_dashboard_follows_the_stack_live(stack_and_lab, lab_page,
                                                                       artifacts_dir: Path) -> None:
    from workbench.domain import Domain

    stack, lab = stack_and_lab
    run = run_notebook_in_lab(lab_page, lab.url, "00-tour.ipynb", timeout=300)
    tabs = run.panel.locator(f"{WIDGET}.widget-tab").first
    tabs.wait_for(state="attached", timeout=60_000)
    tabs.scroll_into_view_if_needed()  # the run ends at the bottom of the notebook
    titles = [text.strip() for text in tabs.locator(".lm-TabBar-tab").all_text_contents()]
    assert titles == TABS

    def show(title: str) -> None:
        tabs.scroll_into_view_if_needed()
        tabs.locator(".lm-TabBar-tab", has_text=re.compile(f"^{title}$")).click()

    # -- what the tour did shows in the zdb and inventory tabs ---------------------------------------
    show("zdb")
    wait_until(lambda: "shift" in tabs.inner_text(), what="the tour's zdb key in the zdb tab")
    show("inventory")
    wait_until(lambda: "T2_LOCAL" in tabs.inner_text(), what="the tour's site in the inventory tab")

    # -- domain: a TE started and killed outside the notebook comes and goes on the page ---------
    show("domain")
    processes = tabs.locator("table.domain-processes")
    processes.wait_for(state="visible", timeout=30_000)
    # the demo database's SM and TE, and the TE the tour started
    wait_until(lambda: processes.inner_text().count("RUNNING") == 3, what="the tour's three processes")
    secrets, endpoints = stack.secrets, stack.endpoints
    outside = Domain(endpoints["domain"]["broker"], secrets["domain"]["user"], secrets["domain"]["password"])
    te_pid = None
    try:
        agent = outside.get_peer(endpoints["domain"]["agent"])
        te = agent.start_transaction_engine("demo", options=[
            ("--dba-user", "dba"), ("--dba-password", secrets["zdb"]["password"])], wait_seconds=60)
        te_pid = te.pid
        wait_until(lambda: f"pid={te_pid}" in processes.inner_text(), what="the outside TE on the page")
        # its row may come before its RUNNING does (two events, rendered as they land)
        wait_until(lambda: processes.inner_text().count("RUNNING") == 4, what="the outside TE RUNNING on the page")
        save_screenshot(lab_page, artifacts_dir / "test_tour_domain_te_started.png")
        lab_page.set_viewport_size({"width": 1400, "height": 1800})  # the whole tab on screen at once
        tabs.scroll_into_view_if_needed()
        save_screenshot(lab_page, artifacts_dir / "test_tour_dashboard.png", target=tabs)  # README's picture
        lab_page.set_viewport_size({"width": 1400, "height": 900})
        os.kill(te_pid, signal.SIGKILL)
        wait_until(lambda: f"pid={te_pid}" not in processes.inner_text(), what="the killed TE to leave the page")
        assert processes.inner_text().count("RUNNING") == 3
        # the log is the render's last widget: it may reach the page a moment after the table
        wait_until(lambda: "process_left" in tabs.locator(".domain-log").inner_text(), what="process_left logged")
    finally:
        outside.disconnect()

    # -- commits: a commit posted by curl lands in the live table ---------------------------------
    show("commits")
    table = tabs.locator("table.commits-keys")
    row = table.locator("tr", has_text="limits")
    row.wait_for(state="visible", timeout=30_000)
    assert row.locator("td").all_inner_texts()[:4] == ["limits", "2", "ops", "evening limits"]
    posted = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/octet-stream",
         "-H", "X-Rainer-Author: curl", "-H", "X-Rainer-Comment: night limits",
         "-H", "@-",  # the stack's write token, on standard input: not on curl's command line
         "--data-binary", json.dumps({"max_connections": 50, "timeout_seconds": 30}),
         f"{endpoints['commits']['url']}/limits/3"],
        input=f"Authorization: Bearer {secrets['commits']['token']}\n", capture_output=True, text=True, timeout=30)
    assert posted.returncode == 0, posted.stderr
    assert json.loads(posted.stdout)["version"] == 3
    wait_until(lambda: row.locator("td").all_inner_texts()[:4] == ["limits", "3", "curl", "night limits"],
               what="curl's commit in the commits table")
    save_screenshot(lab_page, artifacts_dir / "test_tour_commits_from_curl.png")

    # -- clusters: "Add node" and the new instance's bar moves to full ----------------------------
    show("clusters")
    panel = tabs.locator(f"{WIDGET}.widget-vbox", has_text="night").filter(
        has=lab_page.get_by_role("button", name="Add node")).last
    wait_until(lambda: dict(panel.evaluate(BARS_JS)).get("night-1") == "100%", what="night-1 built")
    panel.get_by_role("button", name="Add node").click()
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        width = dict(panel.evaluate(BARS_JS)).get("night-2")
        if width is not None and (not seen or seen[-1] != width):
            seen.append(width)
        if width == "100%" and "active" in panel.inner_text():
            break
        time.sleep(0.02)
    assert seen and seen[-1] == "100%", f"night-2's bar ended at {seen}"
    percents = [float(width.rstrip("%")) for width in seen]
    assert percents == sorted(percents) and any(0 < p < 100 for p in percents), f"the bar should move up: {seen}"
    save_screenshot(lab_page, artifacts_dir / "test_tour_clusters_add_node.png")

    shown = tabs.inner_text()
    for values in secrets.values():
        for kind, secret in values.items():
            if kind in ("password", "token"):
                assert secret not in shown
