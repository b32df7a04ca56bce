"""Dynamo's module names inside an application: ``from dynamo import dataformat`` and ``from dynamo.core.executable import inventory``.

Dynamo's applications (SmartDataProjects/dynamo) start with those two imports. In the child that
runs an application, ``install()`` registers ``dynamo``, ``dynamo.dataformat`` (this project's
``workbench.inventory.dataformat``), ``dynamo.core`` and ``dynamo.core.executable`` (this
project's ``workbench.inventory.executable``, where ``inventory``, ``read_only`` and Dynamo's
``authorized`` are set before the script runs), so such a script runs without an edit.
Nothing is registered in the server's own process.
"""

from __future__ import annotations

import sys
import types

from workbench.inventory import dataformat, executable

#: Dynamo's dotted module names -> what they are here (packages are plain namespaces)
_ALIASES = {"dynamo.dataformat": dataformat, "dynamo.core.executable": executable}


def _package(name: str) -> types.ModuleType:
    """The package ``name`` in ``sys.modules``, made (with its parents) when absent."""
    package = sys.modules.get(name)
    if package is None:
        package = types.ModuleType(name, f"Dynamo's {name} package, as this project provides it")
        package.__path__ = []  # a package: its submodules are found in sys.modules
        sys.modules[name] = package
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(_package(parent), leaf, package)
    return package


def install() -> None:
    """Make Dynamo's module names importable in this process (a module of that name already imported stays)."""
    for dotted, module in _ALIASES.items():
        parent, _, leaf = dotted.rpartition(".")
        setattr(_package(parent), leaf, sys.modules.setdefault(dotted, module))


__all__ = ["install"]
