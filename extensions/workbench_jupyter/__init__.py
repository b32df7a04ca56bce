"""The Jupyter side of workbench: the IPython extension (magics), dashboards and display helpers.

``%load_ext workbench`` forwards here. This package imports the library; the library never
imports this package, IPython or ipywidgets.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from workbench_jupyter.connections import Connection, connections
from workbench_jupyter.dashboard import Dashboard, EventFeedDashboard

__all__ = ["Connection", "connections", "Dashboard", "EventFeedDashboard",
           "load_ipython_extension", "unload_ipython_extension"]

# The shell we registered magics with, so loading twice is harmless and unloading is exact.
_loaded_into: dict[int, Any] = {}

#: Magics classes, as (module, class name); a subsystem's magics load when its module is present.
MAGICS: list[tuple[str, str]] = [
    ("workbench_jupyter.magics", "Workbench"),
    ("workbench_jupyter.zdb", "Zdb"),
    ("workbench_jupyter.domain", "DomainMagic"),
    ("workbench_jupyter.commits", "CommitsMagic"),
    ("workbench_jupyter.inventory", "InventoryMagic"),
    ("workbench_jupyter.clusters", "ClustersMagic"),
]


def _magics_classes() -> list[type]:
    classes = []
    for module_name, class_name in MAGICS:
        if importlib.util.find_spec(module_name) is None:
            continue
        classes.append(getattr(importlib.import_module(module_name), class_name))
    return classes


def load_ipython_extension(ipython: Any) -> None:
    """Register the workbench magics and their ``%config Workbench.*`` options (idempotent)."""
    if id(ipython) in _loaded_into:
        return
    # Magics that are also Configurables add themselves to shell.configurables, which is what
    # `%config Workbench.option = value` (and `%config Zdb.option`) reaches.
    registered = [magics_class(shell=ipython) for magics_class in _magics_classes()]
    for magics in registered:
        ipython.register_magics(magics)
    _loaded_into[id(ipython)] = registered


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics, close what they opened (dashboards, connections), forget the configurables."""
    registered = _loaded_into.pop(id(ipython), None)
    if registered is None:
        return
    for magics in registered:
        # Workbench closes its dashboards; the subsystem magics close their connections and dashboards.
        close = getattr(magics, "close_dashboards", None) or magics.close
        close()
        for kind, names in magics.magics.items():
            table = ipython.magics_manager.magics[kind]
            for name in names:
                table.pop(name, None)
        if magics in ipython.configurables:
            ipython.configurables.remove(magics)
