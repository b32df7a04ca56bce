"""What an application sees of the inventory: ``from workbench.inventory.executable import inventory, read_only``.

An application is any Python script run by ``workbench inventory exec SCRIPT``. The server runs it
in a child process forked from its own, where ``inventory`` is a copy of the server's RAM image
and ``read_only`` tells whether its changes will be kept::

    from workbench.inventory.executable import inventory, read_only
    from workbench.inventory.dataformat import Dataset

    for dataset in inventory.datasets.values():
        if dataset.status.value == "deprecated" and not read_only:
            inventory.delete(Dataset(dataset.name))

In a read-only run ``update`` / ``delete`` change only the child's copy and are thrown away. In a
read-write run they are recorded in call order and sent back when the script exits with 0; the
server applies them all atomically, or none of them if the script fails, exits non-zero, is
killed or times out. Outside an application ``inventory`` is None.

Dynamo's applications import the same module as ``dynamo.core.executable`` (and the data format
as ``dynamo.dataformat``): see ``workbench.inventory.dynamo``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.inventory.inventory import Inventory

#: the application's copy of the inventory (set in the child process before the script runs)
inventory: Inventory | None = None
#: True unless the script was started with --write and authorized
read_only: bool = True
#: Dynamo's name for the opposite: True when the run's changes are kept (``--write``, authorized)
authorized: bool = False

__all__ = ["authorized", "inventory", "read_only"]
