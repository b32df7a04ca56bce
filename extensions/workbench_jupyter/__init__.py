"""The Jupyter side of workbench: the IPython extension (magics), dashboards and display helpers.

``%load_ext workbench`` forwards here. This package imports the library; the library never
imports this package, IPython or ipywidgets.
"""

from __future__ import annotations

from typing import Any

from workbench_jupyter.connections import Connection, connections
from workbench_jupyter.dashboard import Dashboard, EventFeedDashboard

__all__ = ["Connection", "connections", "Dashboard", "EventFeedDashboard",
           "load_ipython_extension", "unload_ipython_extension"]

# The shell we registered magics with, so loading twice is harmless and unloading is exact.
_loaded_into: dict[int, Any] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register the workbench magics and their ``%config Workbench.*`` options (idempotent)."""
    from workbench_jupyter.magics import Workbench
    from workbench_jupyter.zdb import Zdb

    if id(ipython) in _loaded_into:
        return
    # Magics that are also Configurables add themselves to shell.configurables, which is what
    # `%config Workbench.option = value` (and `%config Zdb.option`) reaches.
    registered = [Workbench(shell=ipython), Zdb(shell=ipython)]
    for magics in registered:
        ipython.register_magics(magics)
    _loaded_into[id(ipython)] = registered


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics, close what they opened (dashboards, connections), forget the configurables."""
    registered = _loaded_into.pop(id(ipython), None)
    if registered is None:
        return
    for magics in registered:
        # Workbench closes its dashboards; Zdb closes its connections and their dashboards.
        close = getattr(magics, "close_dashboards", None) or magics.close
        close()
        for kind, names in magics.magics.items():
            table = ipython.magics_manager.magics[kind]
            for name in names:
                table.pop(name, None)
        if magics in ipython.configurables:
            ipython.configurables.remove(magics)
