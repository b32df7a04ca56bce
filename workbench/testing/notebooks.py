"""Stored notebook outputs without another machine's ports, paths, pids or times.

nbval compares a notebook's stored outputs with a fresh run after replacing what changes from
run to run (the patterns of ``notebooks/sanitize.cfg``). The stored outputs get the same
replacements before they are committed, so a notebook shows ``ADDRESS:PORT`` and ``TMP_PATH``
rather than the ports and temp dirs of whoever last ran it::

    python -m workbench.testing.notebooks notebooks/*.ipynb           # rewrite them
    python -m workbench.testing.notebooks --check notebooks/*.ipynb   # exit 1 if one needs it
"""

from __future__ import annotations

import argparse
import configparser
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

#: the sanitize file next to the example notebooks
SANITIZE_FILE = Path(__file__).resolve().parents[2] / "notebooks" / "sanitize.cfg"


def read_patterns(path: Path = SANITIZE_FILE) -> list[tuple[re.Pattern[str], str]]:
    """The (regex, replacement) pairs of an nbval sanitize file, in its order (nbval's order)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(path.read_text())
    return [(re.compile(parser[section]["regex"]), parser[section]["replace"]) for section in parser.sections()]


def sanitize_text(text: str, patterns: list[tuple[re.Pattern[str], str]]) -> str:
    for regex, replacement in patterns:
        text = regex.sub(replacement, text)
    return text


def _sanitize_value(value: Any, patterns: list[tuple[re.Pattern[str], str]]) -> Any:
    if isinstance(value, str):
        return sanitize_text(value, patterns)
    if isinstance(value, list):  # nbformat stores multi-line text as a list of lines
        return [_sanitize_value(item, patterns) for item in value]
    return value


def sanitize_notebook(notebook: dict[str, Any], patterns: list[tuple[re.Pattern[str], str]]) -> dict[str, Any]:
    """``notebook`` (nbformat JSON) with every stored text output sanitized, in place; returns it."""
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _sanitize_value(output["text"], patterns)
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/"):
                    output["data"][mime] = _sanitize_value(value, patterns)
            if "traceback" in output:
                output["traceback"] = _sanitize_value(output["traceback"], patterns)
    return notebook


def sanitize_file(path: Path, patterns: list[tuple[re.Pattern[str], str]], write: bool = True) -> bool:
    """Sanitize one notebook file; True when its outputs needed it (rewritten unless ``write`` is False)."""
    original = path.read_text()
    notebook = sanitize_notebook(json.loads(original), patterns)
    # The layout nbformat and JupyterLab write (indent 1, non-ASCII kept), so diffs stay small.
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if json.loads(text) == json.loads(original):
        return False
    if write:
        path.write_text(text)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.testing.notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs sanitizing")
    parser.add_argument("--sanitize-file", type=Path, default=SANITIZE_FILE)
    args = parser.parse_args(argv)
    patterns = read_patterns(args.sanitize_file)
    dirty = [path for path in args.notebooks if sanitize_file(path, patterns, write=not args.check)]
    for path in dirty:
        print(f"{path}: {'needs sanitizing' if args.check else 'sanitized'}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
