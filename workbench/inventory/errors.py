"""Errors of workbench.inventory, declared once: what a server raises is what its clients catch.

::

    InventoryError                 (workbench.errors) root of this package's errors
    +-- InventoryRemoteError       reported by a server; the fallback for a kind this client does not know
    +-- DataFormatError            an object or its serialized form is malformed (fields: kind, field, value)
    +-- UnknownReferenceError      an object refers to what the inventory does not hold (fields: kind, name)
    +-- AccessDenied               the caller may not do this on the application port (fields: uid, reason)
    +-- ApplicationRefused         a write application is not authorized, or its script changed
    +-- ProtocolError              a frame or message is malformed (fields: reason)
    +-- TransportError             a connection failed: refused, closed or timed out (fields: address, reason)
    +-- StoreError                 the SQL store failed or disagrees with the RAM image
    |   +-- NotPrimaryError        a write reached a secondary (fields: server, primary, primary_address)
    +-- WriterBusyError            another writer holds the one write slot (fields: writer, waited)

The application port carries errors in the envelope of ``workbench.errors`` (``{"ok": false,
"error": {"kind", "message", "fields"}}``): the server encodes with ``INVENTORY_ERRORS.envelope``,
the client raises ``INVENTORY_ERRORS.error``. The web server's errors (``web.errors``) answer
HTTP statuses instead. This module imports nothing of the package, so the data format (imported by
every application run) stays cheap to import.
"""

from __future__ import annotations

from workbench.errors import ErrorRegistry, InventoryError


class InventoryRemoteError(InventoryError):
    """The server failed a request with an error this library has no class for (fields: kind, ...)."""


INVENTORY_ERRORS = ErrorRegistry("inventory", fallback=InventoryRemoteError)


@INVENTORY_ERRORS.declare
class DataFormatError(InventoryError):
    """An object or its serialized form is malformed (fields: kind, field, value)."""


@INVENTORY_ERRORS.declare
class UnknownReferenceError(InventoryError):
    """An object refers to something the inventory does not hold (fields: kind, name, needed_by)."""


@INVENTORY_ERRORS.declare
class AccessDenied(InventoryError):
    """The caller may not do this on the application port (fields: uid, user, operation, reason)."""


@INVENTORY_ERRORS.declare
class ApplicationRefused(InventoryError):
    """A write application is not authorized, or its script changed since (fields: title, user, checksum, reason)."""


@INVENTORY_ERRORS.declare
class ProtocolError(InventoryError):
    """A frame or message is malformed (fields: reason)."""


@INVENTORY_ERRORS.declare
class TransportError(InventoryError):
    """A connection failed: refused, closed or timed out (fields: address, reason)."""


@INVENTORY_ERRORS.declare
class StoreError(InventoryError):
    """The SQL store failed or disagrees with the RAM image (fields: url, operation, ...)."""


@INVENTORY_ERRORS.declare
class NotPrimaryError(StoreError):
    """A server tried to write while another server is the primary (fields: server, primary)."""


@INVENTORY_ERRORS.declare
class WriterBusyError(InventoryError):
    """Another writer holds the one write slot (fields: writer, server, waited)."""


__all__ = ["AccessDenied", "ApplicationRefused", "DataFormatError", "INVENTORY_ERRORS", "InventoryRemoteError",
           "NotPrimaryError", "ProtocolError", "StoreError", "TransportError", "UnknownReferenceError",
           "WriterBusyError"]
