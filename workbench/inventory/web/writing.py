"""How a write-enabled web module changes the inventory: it records, the server applies.

A write module's ``run`` gets a ``ChangeRecorder`` in place of the inventory: reads go to the
real image, ``update(obj)`` / ``delete(obj)`` are recorded in call order as ``Change`` values
(the form applications' changes take). Only when ``run`` returns does the server hand the whole
list to its apply function, so a module that raises half way changes nothing, like an
application that exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.inventory.dataformat import InventoryObject
from workbench.inventory.inventory import Change

#: apply(changes, title=..., user=...) -> anything JSON-able describing what was applied
ApplyChanges = Callable[..., Any]


class ChangeRecorder:
    """The inventory as a write module sees it: live reads, recorded ``update`` / ``delete``."""

    def __init__(self, inventory: Any) -> None:
        self._inventory = inventory
        self.changes: list[Change] = []

    def update(self, obj: InventoryObject) -> None:
        """Record that ``obj`` is to be added, or copied onto the object with its identifier."""
        self.changes.append(Change("update", obj.to_dict()))

    def delete(self, obj: InventoryObject) -> None:
        """Record that the object with ``obj``'s identifier is to be deleted."""
        self.changes.append(Change("delete", {"kind": obj.KIND, **obj.key_dict()}))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inventory, name)


def apply_directly(inventory: Any) -> ApplyChanges:
    """An apply function for a web server without a store: apply to the RAM image in order.

    Without a store there is nothing to roll back to: a change the image refuses (an unknown
    reference) stops the batch with that error, and the changes before it stay. Inventory servers
    pass their own apply (``InventoryServer.apply_changes``: one transaction with the store, a
    reload on failure, so a batch is all or nothing; one writer across servers).
    """

    def apply(changes: list[Change], title: str = "", user: str = "") -> dict[str, Any]:
        return {"changes": len(changes), "changed": inventory.apply_all(changes)}

    return apply


__all__ = ["ApplyChanges", "ChangeRecorder", "apply_directly"]
