"""The inventory's web pages in headless Chromium: what a person sees on the site and dataset pages."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from workbench.inventory import Inventory
from workbench.inventory.web import WebServer
from workbench.inventory.web.modules.inventory import human_size
from workbench.testing.inventory_web import (HOSTILE_DATASET, HOSTILE_SITE, sample_inventory,  # noqa: F401
                                             web_server)
from workbench.testing.jupyter import save_screenshot


def test_site_and_dataset_pages(web_server: WebServer, sample_inventory: Inventory, lab_page,
                                artifacts_dir: Path) -> None:
    page = lab_page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # The sites list: one row per site, links to each site's page.
    page.goto(f"{web_server.url}/web/inventory/sites")
    assert page.locator("h1").inner_text() == "Sites"
    rows = page.locator("table.inventory tr")
    assert rows.count() == len(sample_inventory.sites) + 1
    shown = page.locator("table.inventory td:first-child a").all_inner_texts()
    assert shown == sorted(sample_inventory.sites)
    assert HOSTILE_SITE in shown  # the markup in its name is text on screen, not an image
    assert page.locator("table.inventory img").count() == 0
    save_screenshot(page, artifacts_dir / "test_inventory_sites.png")

    # Follow the link to one site: its partitions and the datasets it holds.
    page.get_by_role("link", name="T2_CH_CERN", exact=True).click()
    page.wait_for_url("**/web/inventory/site?name=T2_CH_CERN")
    assert page.locator("h1").inner_text() == "Site T2_CH_CERN"
    site = sample_inventory.sites["T2_CH_CERN"]
    assert page.get_by_role("cell", name=human_size(site.usage()), exact=True).count() >= 1
    held = page.locator("h2:has-text('Dataset replicas') + table td:first-child a").all_inner_texts()
    assert held == sorted(site.dataset_replicas)
    save_screenshot(page, artifacts_dir / "test_inventory_site.png")

    # And on to one of its datasets: blocks and the sites holding it.
    name = held[0]
    page.get_by_role("link", name=name, exact=True).click()
    page.wait_for_url(f"**/web/inventory/dataset?name={quote(name, safe='')}")
    dataset = sample_inventory.datasets[name]
    assert page.locator("h1").inner_text() == f"Dataset {name}"
    replica_sites = page.locator("h2:has-text('Replicas') + table td:first-child a").all_inner_texts()
    assert replica_sites == sorted(dataset.replicas)
    blocks = page.locator("h2:has-text('Blocks') + table td:first-child").all_inner_texts()
    assert blocks == sorted(dataset.blocks)
    assert page.get_by_role("cell", name=human_size(dataset.size), exact=True).count() >= 1
    save_screenshot(page, artifacts_dir / "test_inventory_dataset.png")

    # A dataset whose name is a script shows the name and runs nothing.
    page.goto(f"{web_server.url}/web/inventory/dataset?name={quote(HOSTILE_DATASET, safe='')}")
    assert page.locator("h1").inner_text() == f"Dataset {HOSTILE_DATASET}"
    page.goto(f"{web_server.url}/web/inventory/datasets")
    assert HOSTILE_DATASET in page.locator("table.inventory").inner_text()
    assert dialogs == []


def test_dashboard_renders_in_lab(jupyter_lab, lab_page, artifacts_dir: Path) -> None:
    from workbench.testing.jupyter import run_notebook_in_lab, write_notebook

    workdir = jupyter_lab.root_dir / "inventory-dashboard"
    workdir.mkdir(parents=True, exist_ok=True)
    write_notebook(workdir / "dashboard.ipynb", [
        ("markdown", "# Inventory dashboard probe"),
        "from workbench.inventory import Dataset, Inventory\n"
        "from workbench.inventory.store import Store\n"
        "from workbench.testing.inventory_web import build_sample_inventory\n"
        f"url = 'sqlite:///{workdir / 'inventory.db'}'\n"
        "changes = []\n"
        "builder = Inventory('builder')\n"
        "builder.add_sink(lambda change, writes: changes.append(change))\n"
        "build_sample_inventory(builder)\n"
        "Store(url).apply_and_write(Inventory('writer'), changes)",
        "%load_ext workbench\n%inventory connect --store {url}",
        "dash = %inventory\ndash",
        "inventory.update(Dataset('/Lab/Shown/AOD', status='valid'))\ndash.flush()",
    ])
    run = run_notebook_in_lab(lab_page, jupyter_lab.url, "inventory-dashboard/dashboard.ipynb", timeout=180)
    widget = run.panel.locator(".jupyter-widgets", has=lab_page.locator("table.inventory-usage")).first
    widget.wait_for(state="visible", timeout=30_000)
    changes = widget.locator("table.inventory-changes")
    changes.get_by_text("/Lab/Shown/AOD").wait_for(timeout=30_000)
    assert "update" in changes.inner_text()
    sites = widget.locator("table.inventory-usage td:first-child").all_inner_texts()
    assert sorted(sites) == sorted(build_sample_sites())
    assert widget.locator(".inventory-bar").count() == len(sites)
    assert widget.locator("table.inventory-usage img").count() == 0  # the hostile site's name is text
    assert "6 datasets" in widget.inner_text()  # five in the sample and the one added above
    shot = save_screenshot(lab_page, artifacts_dir / "test_inventory_dashboard.png")
    assert shot.stat().st_size > 10_000


def build_sample_sites() -> list[str]:
    from workbench.testing.inventory_web import build_sample_inventory

    sample = build_sample_inventory()
    try:
        return list(sample.sites)
    finally:
        sample.close()
