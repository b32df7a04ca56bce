"""Every example notebook runs twice in a row in one kernel, against one running stack, the same both times.

A reader who presses Run All a second time must not meet an error, and must see what the first run
showed: the same outputs once ``notebooks/sanitize.cfg`` replaced what changes from run to run
(ports, paths, pids, times). The tour runs against ``workbench up`` (``WORKBENCH_STACK`` in the
kernel's environment, as under ``workbench lab``); the other notebooks start their own servers and
must leave nothing behind that trips the next run. What may differ is what the stack keeps from the
first run, checked for what it must be: the tour's commits go on counting, its connections find the
first run's keys and datasets, its inventory update changes nothing the second time; and IPython
says so when a notebook that left the extension loaded loads it again.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import nbformat
import pytest
from nbclient import NotebookClient

from workbench.testing.notebooks import read_patterns, sanitize_text
from workbench.testing.stack import RunningStack

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: IPython's notice when a notebook that keeps the extension loaded (the tour: its dashboard stays live)
#: loads it again; the extension itself is left as the first run left it
ALREADY_LOADED = ("stdout: The workbench extension is already loaded. To reload it, use:\n"
                  "  %reload_ext workbench\n")
#: "committed limits version 3": the stack keeps every commit, so a second run goes on counting
COMMITTED = re.compile(r"^committed (\S+) version (\d+)$")


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = RunningStack(tmp_path_factory.mktemp("stack"))
    yield stack
    assert stack.stop() == 0, "".join(stack.output)


def kernel_environment(stack: RunningStack) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "extensions"), env.get("PYTHONPATH", "")])
    env["WORKBENCH_STACK"] = str(stack.stack_file)
    env["WORKBENCH_STATE_DIR"] = str(stack.state_dir)
    return env


def shown(outputs: list[dict[str, Any]], patterns: list[tuple[re.Pattern[str], str]]) -> list[str]:
    """What a cell showed, sanitized: streams joined per name (their chunking is timing), results, errors."""
    shown_: list[str] = []
    streams: dict[str, str] = {}
    for output in outputs:
        if output["output_type"] == "stream":
            streams[output["name"]] = streams.get(output["name"], "") + output["text"]
        elif output["output_type"] == "error":
            shown_.append(f"error {output['ename']}: {output['evalue']}")
        elif "text/plain" in output.get("data", {}):
            shown_.append(output["data"]["text/plain"])
    shown_ = [f"{name}: {text}" for name, text in sorted(streams.items())] + shown_
    return [sanitize_text(text, patterns) for text in shown_]


def run(client: NotebookClient, notebook: nbformat.NotebookNode) -> list[list[str]]:
    """Execute every code cell once; what each showed. A cell error fails, unless tagged raises-exception."""
    patterns = read_patterns()
    results = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        client.execute_cell(cell, index)
        errors = [output for output in cell.outputs if output["output_type"] == "error"]
        assert not errors or "raises-exception" in cell.metadata.get("tags", []), (
            f"cell {index} failed:\n{cell.source}\n" + "\n".join(errors[0]["traceback"]))
        results.append(shown(cell.outputs, patterns))
    return results


def counts_as_n(text: str) -> str:
    """``text`` with every count ``N`` and the noun after it singular ("0 keys", "1 key": "N key")."""
    return re.sub(r"\d+(?:( [a-z]+?)s?\b)?", r"N\1", text)


def assert_same_but_for_kept_state(first: list[list[str]], second: list[list[str]], sources: list[str],
                                   stays_loaded: bool) -> None:
    """The second run shows what the first did. ``stays_loaded``: the notebook leaves the extension
    loaded with its connections (the tour, whose dashboard stays live, and the first steps); where it
    works on a stack that keeps what the first run did (the tour), that shows, and only that."""
    for source, before, after in zip(sources, first, second):
        if not stays_loaded:
            assert after == before, f"second run differs in:\n{source}"
        elif "%load_ext workbench" in source:
            # the second `%workbench` lists the first run's connections too, under the same stack
            assert after[:1] == [ALREADY_LOADED] and len(after) == len(before) + 1, (before, after)
            for old, new in zip(before, after[1:]):
                assert set(old.splitlines()) - {"no connections"} <= set(new.splitlines()), (before, after)
        elif source.startswith("%%commits"):
            (key, old), = [COMMITTED.match(line).groups() for line in before[0].removeprefix("stdout: ").splitlines()]
            (key2, new), = [COMMITTED.match(line).groups() for line in after[0].removeprefix("stdout: ").splitlines()]
            assert key2 == key and int(new) > int(old), (source, before, after)
        elif "%commits history" in source:
            # the history keeps the first run's commits; its newest rows are this run's, alike
            newest = lambda text: [line.split(None, 1)[1] for line in text.splitlines()[-2:]]
            assert newest(after[-1]) == newest(before[-1]), (source, before, after)
        elif "%workbench dashboard" in source:
            # connecting reports what the stack holds: the first run's keys and datasets are there
            assert [counts_as_n(text) for text in after] == [counts_as_n(text) for text in before], (before, after)
        elif source.startswith("%%inventory exec --write"):
            # the same updates again change nothing
            assert [text.replace(" 0 changes applied", " N changes applied") for text in after] == [
                re.sub(r" \d+ changes applied", " N changes applied", text) for text in before], (before, after)
        else:
            assert after == before, f"second run differs in:\n{source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_a_notebook_runs_twice_in_one_kernel_with_the_same_outputs(path, running_stack):
    notebook = nbformat.read(str(path), as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel(env=kernel_environment(running_stack)):
        first = run(client, notebook)
        second = run(client, notebook)
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    stays_loaded = not any("%unload_ext workbench" in source for source in sources)
    assert_same_but_for_kept_state(first, second, sources, stays_loaded)
