"""workbench: an interactive ops workbench library (domain, zdb, commits, clusters, inventory).

The library never imports IPython or ipywidgets; ``%load_ext workbench`` is forwarded lazily to
the ``workbench_jupyter`` extension package, which imports the library and not the reverse.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import WorkbenchError

__version__ = "0.1.0"

__all__ = ["__version__", "WorkbenchError", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Entry point of ``%load_ext workbench``: forwards to the Jupyter extension package."""
    import workbench_jupyter

    workbench_jupyter.load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Entry point of ``%unload_ext workbench``."""
    import workbench_jupyter

    workbench_jupyter.unload_ipython_extension(ipython)
