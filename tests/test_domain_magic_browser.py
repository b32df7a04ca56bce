"""The domain dashboard in JupyterLab in headless Chromium: its tables render and its buttons act.

A notebook starts an embedded broker and agent in its kernel, starts database ``teas`` with
``%domain`` and shows the dashboard; the test, as a person would, picks the TE in the dashboard's
process list and presses Stop, then picks the database and presses Shut down, and reads the
tables change in the page.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from workbench.testing.jupyter import WIDGET, JupyterLabServer, run_notebook_in_lab, save_screenshot, write_notebook

SETUP = """
import os
from workbench.domain import Agent

home = {home!r}
os.environ["WORKBENCH_KNOWN_BROKERS"] = os.path.join(home, "known_brokers")
broker = Agent(port=0, state_dir=os.path.join(home, "broker"), domain_user="domain",
               domain_password="bird", broker=True).start()
agent = Agent(port=0, state_dir=os.path.join(home, "agent"), domain_user="domain",
              domain_password="bird", peer=broker.address).start()
password = "bird"
"""


def wait_until(condition, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_dashboard_renders_and_its_buttons_stop_a_te_and_shut_down(jupyter_lab: JupyterLabServer, lab_page,
                                                                    artifacts_dir: Path, tmp_path: Path) -> None:
    write_notebook(jupyter_lab.root_dir / "probe" / "domain.ipynb", [
        SETUP.format(home=str(tmp_path)),
        "%load_ext workbench\n%domain connect {broker.address} domain:{password}",
        f"%domain start sm teas --archive {tmp_path / 'teas'} --init\n%domain te << start te teas",
        "dash = %domain\ndash",
    ])
    run = run_notebook_in_lab(lab_page, jupyter_lab.url, "probe/domain.ipynb", timeout=180)
    # The outermost widget holding the process table: the whole dashboard (its tables, pickers, buttons).
    dashboard = run.panel.locator(WIDGET).filter(has=lab_page.locator("table.domain-processes")).first
    processes = dashboard.locator("table.domain-processes")
    pids: set[int] = set()
    try:
        processes.wait_for(state="visible", timeout=60_000)
        wait_until(lambda: processes.inner_text().count("RUNNING") == 2, what="SM and TE running on the page")
        text = processes.inner_text()
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", text)}
        assert len(pids) == 2 and "(SM)" in text and "(TE)" in text
        assert "teas" in dashboard.locator("table.domain-databases").inner_text()
        peers = dashboard.locator("table.domain-peers").inner_text()
        assert "broker" in peers and "agent" in peers
        assert "process_joined" in dashboard.locator(".domain-log").inner_text()

        te_label = next(line for line in text.splitlines() if "(TE)" in line).split("\t")[0].strip()
        dashboard.locator("select").nth(0).select_option(label=te_label)
        dashboard.get_by_role("button", name="Stop", exact=True).click()
        wait_until(lambda: "(TE)" not in processes.inner_text(), what="the TE to leave the table")
        wait_until(lambda: f"action stop {te_label}: done" in dashboard.locator(".domain-log").inner_text(),
                   what="the stop action's outcome in the log")
        assert processes.inner_text().count("RUNNING") == 1

        dashboard.locator("select").nth(1).select_option(label="teas")
        dashboard.get_by_role("button", name="Shut down", exact=True).click()
        wait_until(lambda: "no processes" in processes.inner_text(), what="the database to shut down")
        assert "no databases" in dashboard.locator("table.domain-databases").inner_text()
        save_screenshot(lab_page, artifacts_dir / "test_domain_dashboard_in_lab.png")
    finally:
        for pid in pids:  # the kernel goes with the page; its zdb processes must not outlive the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
