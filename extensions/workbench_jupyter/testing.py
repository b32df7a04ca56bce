"""A testing shell for magics: ``run_cell`` raises what the cell raised, so tests cannot pass silently."""

from __future__ import annotations

from typing import Any

from IPython.core.interactiveshell import InteractiveShell


class TestingShell(InteractiveShell):
    """An InteractiveShell whose ``run_cell`` re-raises the cell's error instead of printing it."""

    __test__ = False  # not a pytest test class

    def run_cell(self, raw_cell: str, *args: Any, **kwargs: Any) -> Any:
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result

    def last_value(self) -> Any:
        """The value of the last expression run (``Out[-1]``)."""
        return self.user_ns["_"]
