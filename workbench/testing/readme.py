"""The code blocks of a Markdown file (the README), for tests that run them as a reader types them.

A block's marker is an HTML comment on the line just before its opening fence, invisible once
rendered: ``<!-- not run: REASON -->`` for a block no test runs (the reason says why), or
``<!-- run by: tests/test_X.py -->`` for a block a test of its own runs; an unmarked block is run by
``tests/test_readme.py``::

    >>> [(b.lang, b.text, b.line, b.marker) for b in parse("<!-- not run: slow -->\\n```bash\\nls\\n```\\n")]
    [('bash', 'ls\\n', 3, 'not run: slow')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: the repository's README
README = Path(__file__).resolve().parents[2] / "README.md"

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language (``""`` if none), its text, the line its code starts on
    (1-based) and the marker comment before its fence (``""`` if none)."""

    lang: str
    text: str
    line: int
    marker: str = ""

    @property
    def not_run(self) -> str | None:
        """The reason given by a ``not run:`` marker, else None."""
        return self.marker.split(":", 1)[1].strip() if self.marker.startswith("not run:") else None

    @property
    def run_by(self) -> str | None:
        """The test file named by a ``run by:`` marker (relative to the repository), else None."""
        return self.marker.split(":", 1)[1].strip() if self.marker.startswith("run by:") else None

    def lines(self) -> list[str]:
        """Its lines without blank ones and whole-line comments (what a reader types)."""
        return [line for line in self.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order."""
    blocks: list[Block] = []
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        marker = _MARKER.match(lines[index - 1]) if index else None
        end = next((j for j in range(index + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        if end is None:
            raise ValueError(f"line {index + 1}: a code block that is never closed")
        blocks.append(Block(opening.group(1), "".join(lines[index + 1:end]), index + 2,
                            marker.group(1) if marker else ""))
        index = end + 1
    return blocks


def code_blocks(path: Path = README) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    return parse(Path(path).read_text())


def run_by(test_file: str, path: Path = README) -> list[Block]:
    """The blocks marked ``run by:`` the given test file (pass ``__file__``)."""
    name = Path(test_file).resolve().relative_to(Path(path).resolve().parent).as_posix()
    return [block for block in code_blocks(path) if block.run_by == name]
