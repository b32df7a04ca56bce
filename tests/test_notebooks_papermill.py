"""A notebook's ``parameters`` cell takes papermill's ``-p``: commits.ipynb against a server started here."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import papermill

from workbench.commits import CommitClient, create_rainer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_but_the_first_steps_has_a_parameters_cell():
    for path in NOTEBOOKS:
        if path.name == "00-getting-started.ipynb":  # no endpoint: it makes its own events
            continue
        tagged = [cell for cell in nbformat.read(str(path), as_version=4).cells
                  if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0].cell_type == "code", path.name


def test_papermill_runs_the_commits_notebook_against_the_server_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "extensions"),
                                                      os.environ.get("PYTHONPATH", "")]))
    rainer = create_rainer(f"sqlite:///{tmp_path / 'given.db'}", port=0, prefix="/given").start()
    try:
        output = tmp_path / "commits-run.ipynb"
        papermill.execute_notebook(str(ROOT / "notebooks" / "commits.ipynb"), str(output),
                                   parameters={"rainer_url": rainer.url}, kernel_name="python3",
                                   cwd=str(tmp_path), progress_bar=False)
        cells = nbformat.read(str(output), as_version=4).cells
        injected = next(cell for cell in cells if "injected-parameters" in cell.metadata.get("tags", []))
        assert repr(rainer.url) in injected.source or f'"{rainer.url}"' in injected.source
        printed = "".join(out.get("text", "") for cell in cells if cell.cell_type == "code" for out in cell.outputs)
        assert f"serving {rainer.url}\n" in printed
        # the notebook's commits are on the given server, which it left running
        with CommitClient(rainer.url) as client:
            assert sorted(client.keys()) == ["feature-flags", "limits", "retries"]
            assert {commit.author for commit in client.history("limits")} == {"notebook", "sue"}
    finally:
        rainer.stop()
